"""One registration per DET: its config class, its presets (each with a description) and the facts its tests need.

A DET's file decorates its config class with ``@register_delta(Preset(...), ...)``. Everything that lists
methods derives from this registry: the presets (``resolve_method``, ``available_methods``: the CLI, sweeps and
studies), the class a saved run's ``method`` names (``DeltaConfig.from_dict``), the package's public exports
(``deltaspace.CoeffTuningConfig``), the option checks before a run (``train/preflight.py``) and the contract
test matrix (tests/deltas/test_zoo.py). ``deltaspace.deltas`` imports every module of its folder, so a new DET
is one new file (docs/architecture.md shows one).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from torch import nn

    from deltaspace.deltas.base import DeltaConfig

C = TypeVar("C", bound=type)  # the decorated config class, returned as is


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named, ready-made config of one DET, built for a given model.

    ``build(model)`` makes the config; without it the preset is the registered config class with ``options``.
    ``config_class`` is what ``build`` returns when that is not the registered class (PEFT's ``LoraConfig``).
    The rest are the facts the contract tests need.
    """

    name: str
    description: str
    build: Callable[[nn.Module], Any] | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    config_class: type | None = None
    changes_output_at_init: bool = False  # extra inputs or positions move outputs before training (prompt)
    seeded_init: bool = True  # θ0 depends on the seed (False: it starts at identity / pretrained values)
    needs_bias: bool = False  # only for base models that have bias parameters (BitFit)
    # Default peak learning rate alone (``train`` without ``--lr``); ``combined_lr``: its rate beside another
    # method in "a+b" (default ``lr``), kept through ``lr_key``, a substring of its parameters' names.
    lr: float | None = None
    combined_lr: float | None = None
    lr_key: str | None = None

    def __post_init__(self) -> None:
        if not self.name or "+" in self.name or "." in self.name or "__" in self.name:
            raise ValueError(f"preset name {self.name!r} must be non-empty without '+', '.' or '__'")
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        for name in ("lr", "combined_lr"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, float) and value > 0):
                raise ValueError(f"preset {self.name!r}: {name} must be a positive float, got {value!r}")

    def config_for(self, model: nn.Module) -> Any:
        """The config of this preset for ``model``."""
        if self.build is not None:
            return self.build(model)
        return self.config_class(**self.options)


_CONFIGS: dict[str, type[DeltaConfig]] = {}  # method name -> config class (what saved configs name)
_PRESETS: dict[str, Preset] = {}  # preset name -> preset


def _register(cls: C, presets: tuple[Preset, ...]) -> C:
    if not getattr(cls, "method", ""):
        raise TypeError(f"{cls.__name__} must set the class attribute `method`")
    owner = _CONFIGS.get(cls.method)
    if owner is not None and owner is not cls:
        raise ValueError(f"delta method {cls.method!r} is already registered by {owner.__name__}")
    for preset in presets:
        taken = _PRESETS.get(preset.name)
        if taken is not None and taken.config_class is not (preset.config_class or cls):
            raise ValueError(
                f"preset {preset.name!r} is already registered for {taken.config_class.__name__}"
            )
    _CONFIGS[cls.method] = cls
    for preset in presets:
        _PRESETS[preset.name] = dataclasses.replace(preset, config_class=preset.config_class or cls)
    return cls


def register_delta(*presets: Any) -> Any:
    """Class decorator registering a DET's config (loadable by its ``method``) and its presets.

    ``@register_delta`` alone registers the config; ``@register_delta(Preset("name", "what it is"), ...)``
    also offers presets under those names.
    """
    if len(presets) == 1 and isinstance(presets[0], type):
        return _register(presets[0], ())
    wrong = [p for p in presets if not isinstance(p, Preset)]
    if wrong:
        raise TypeError(f"register_delta takes Preset(...) arguments, got {wrong[0]!r}")
    return lambda cls: _register(cls, presets)


def registered_methods() -> dict[str, type[DeltaConfig]]:
    """Method name -> config class, for every registered DET."""
    return dict(_CONFIGS)


def config_class(method: Any) -> type[DeltaConfig]:
    if method not in _CONFIGS:
        raise ValueError(
            f"unknown delta method {method!r} in saved config; known methods: {', '.join(sorted(_CONFIGS))}"
        )
    return _CONFIGS[method]


def presets() -> dict[str, Preset]:
    """Preset name -> preset, sorted by name (registration order follows imports, so it is not shown)."""
    return dict(sorted(_PRESETS.items()))


def exported_configs() -> dict[str, type[DeltaConfig]]:
    """Class name -> class of every registered config: what ``deltaspace`` exports."""
    return {cls.__name__: cls for cls in _CONFIGS.values()}
