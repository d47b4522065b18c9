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

    # Switching off (DeltaModel.disable_adapter): a method that can be set aside and put back exactly overrides both.
    def disable_refusal(self, model: nn.Module) -> str | None:
        """Why this delta cannot be switched off now, or None when :meth:`set_enabled` can."""
        return "it does not say how to switch itself off (AttachedDelta.set_enabled)"

    def set_enabled(self, model: nn.Module, enabled: bool) -> None:
        """Switch the delta off (the model then computes what it computed before ``attach``) or back on, exactly
        as it was: same parameter objects, values and module order. Called only when ``disable_refusal`` is None,
        off and on in turn."""
        raise UserInputError(
            f"{type(self).__name__} cannot be switched off: {self.disable_refusal(model)}; use unload() instead"
        )


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
        # While switched off: name -> the trained Parameter set aside (the frozen originals stand in for it).
        self._parked: dict[str, nn.Parameter] | None = None

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

    def disable_refusal(self, model: nn.Module) -> str | None:
        if self._originals is None:
            return (
                f"{self.config.method} keeps no copy of the pretrained values (restore_on_detach=False); "
                "attach it with restore_on_detach=True"
            )
        return None

    def set_enabled(self, model: nn.Module, enabled: bool) -> None:
        # Swap Parameter objects rather than copying values: nothing is copied, the trained Parameters (which an
        # optimiser holds) are never written, and a graph built while switched off keeps the pretrained values.
        if enabled:
            if self._parked is not None:
                stand_ins = dict(model.named_parameters())
                _swap_parameters(model, {id(stand_ins[n]): p for n, p in self._parked.items()})
                self._parked = None
            return
        if self._parked is not None or self._originals is None:
            return
        params = dict(model.named_parameters())
        self._parked = {name: params[name] for name in self._originals}
        _swap_parameters(
            model,
            {
                id(self._parked[name]): nn.Parameter(value, requires_grad=False)
                for name, value in self._originals.items()
            },
        )


def _swap_parameters(model: nn.Module, replacements: dict[int, nn.Parameter]) -> None:
    """Replace parameters (keyed by ``id`` of the one to replace) in every module holding them (tied ones too)."""
    for module in model.modules():
        for key, param in module._parameters.items():
            if param is not None and id(param) in replacements:
                module._parameters[key] = replacements[id(param)]


def matches_target(name: str, target_modules: str | list[str]) -> bool:
    """PEFT's rule: a string is a regex that must match the whole name; a list matches by name suffix."""
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    return any(name == t or name.endswith("." + t) for t in target_modules)
