"""The contract every delta method follows.

A delta method is a config dataclass (what the user writes) whose ``attach`` inserts the method into a
frozen model in place and returns an :class:`AttachedDelta` (what the method owns inside that model).
Composition over inheritance: ``DeltaModel`` only ever talks to these two small interfaces, so a new
method is one file in ``deltaspace/deltas`` that registers its config and presets with
:func:`~deltaspace.deltas.registry.register_delta`.

A delta's *solution* is the ordered mapping ``parameter name -> tensor`` of the parameters it owns, the
names being fully qualified inside the base model. Everything downstream (saving, the subspace study)
treats a solution as plain named tensors.
"""

from __future__ import annotations

import dataclasses
import re
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from deltaspace.deltas.registry import config_class, register_delta, registered_methods
from deltaspace.errors import UserInputError

__all__ = [
    "AttachedDelta",
    "DeltaConfig",
    "InPlaceAttached",
    "matches_target",
    "register_delta",  # re-exported: registration lives in deltas/registry.py
    "registered_methods",
]


@dataclasses.dataclass
class DeltaConfig(ABC):
    """Base class of delta-method configs. Subclasses are dataclasses with JSON-friendly fields."""

    method: ClassVar[str] = ""

    @abstractmethod
    def attach(self, model: nn.Module) -> AttachedDelta:
        """Insert the method into ``model`` in place (called under a seeded RNG) and return its handle."""

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **dataclasses.asdict(self)}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> DeltaConfig:
        data = dict(data)
        return config_class(data.pop("method", None)).from_fields(data)

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> DeltaConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - names)
        if unknown:
            raise ValueError(
                f"{cls.__name__} got unknown option(s) {unknown}; valid options: {sorted(names)}"
            )
        return cls(**fields)


class AttachedDelta(ABC):
    """One delta method living inside one model."""

    config: DeltaConfig

    @abstractmethod
    def parameter_names(self) -> list[str]:
        """Fully qualified names (inside the base model) of the parameters this delta trains, in a fixed order."""

    @abstractmethod
    def detach(self, model: nn.Module) -> None:
        """Remove the delta, leaving ``model`` exactly as it was before ``attach``."""

    def prepare_inputs(self, inputs: dict[str, Any], model: nn.Module) -> dict[str, Any]:
        """Rewrite forward keyword arguments before the base model sees them (prompt tuning). Default: as is."""
        return inputs

    # Merging (DeltaModel.merge_and_unload): a method that can fold itself into the base weights overrides both.
    def merge_refusal(self, model: nn.Module) -> str | None:
        """Why this delta cannot be folded into the base weights now, or None when :meth:`merge` can."""
        return "it is not a weight of the base model"

    def merge(self, model: nn.Module) -> None:
        """Fold the delta into the base weights and remove its modules (only when ``merge_refusal`` is None).

        Afterwards the model holds no trace of the delta and :meth:`detach` must not be called.
        """
        # merge_and_unload checks merge_refusal first; this guards direct callers
        raise UserInputError(f"{type(self).__name__} cannot be merged: {self.merge_refusal(model)}")


class InPlaceAttached(AttachedDelta):
    """A delta that trains existing base parameters in place (BitFit, full fine-tuning): no module is added.

    ``originals`` holds their pretrained values, which ``detach`` writes back (``None``: keep the trained
    values). Merging is keeping the trained values.
    """

    def __init__(
        self, config: DeltaConfig, names: list[str], originals: dict[str, torch.Tensor] | None
    ) -> None:
        self.config = config
        self._names = list(names)
        self._originals = originals

    @classmethod
    def capture(
        cls, config: DeltaConfig, model: nn.Module, names: list[str], *, keep_originals: bool = True
    ) -> InPlaceAttached:
        """The delta training ``names``; their current (pretrained) values are kept for ``detach``."""
        params = dict(model.named_parameters())
        originals = {name: params[name].detach().clone() for name in names} if keep_originals else None
        return cls(config, names, originals)

    def parameter_names(self) -> list[str]:
        return list(self._names)

    def detach(self, model: nn.Module) -> None:
        if self._originals is None:
            return
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self._originals.items():
                params[name].copy_(value)

    def merge_refusal(self, model: nn.Module) -> str | None:
        return None

    def merge(self, model: nn.Module) -> None:
        return None  # the trained values already are the base parameters


def matches_target(name: str, target_modules: str | list[str]) -> bool:
    """PEFT's rule: a string is a regex that must match the whole name; a list matches by name suffix."""
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    return any(name == t or name.endswith("." + t) for t in target_modules)
