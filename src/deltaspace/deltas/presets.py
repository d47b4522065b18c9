"""Resolving preset names into configs for one model: ``resolve_method("coeff+lora", model, r=4)``.

The presets themselves are registered by each DET's file (:mod:`deltaspace.deltas.registry`); a preset turns
a method name into a config for one model, resolving target module names from the model's ``named_modules()``
and the family table (:mod:`deltaspace.architectures`). ``"a+b"`` combines presets in order.

Overrides go to the config field of that name (every component that has it, in a combination), or to one
component as ``"<method>.<option>"`` / ``<method>__<option>`` (e.g. ``lora__r=4``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from peft import PeftConfig
from torch import nn

from deltaspace.deltas.base import DeltaConfig
from deltaspace.deltas.registry import presets
from deltaspace.errors import UserInputError

AnyConfig = DeltaConfig | PeftConfig


def available_methods() -> list[str]:
    """Preset names; combine any of them with '+' (e.g. 'coeff+lora')."""
    return list(presets())


def _apply_overrides(config: AnyConfig, overrides: dict[str, Any]) -> AnyConfig:
    names = {f.name for f in dataclasses.fields(config) if f.init}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise UserInputError(f"{type(config).__name__} has no option(s) {unknown}")
    try:
        return dataclasses.replace(config, **overrides)
    except (ValueError, TypeError) as error:
        # The config's own check (PEFT's __post_init__ included) as one line naming the options given.
        lines = str(error).strip().splitlines()
        given = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
        raise UserInputError(
            f"{type(config).__name__}({given}) is refused: {lines[0] if lines else type(error).__name__}"
        ) from error


def resolve_method(name: str, model: nn.Module, **overrides: Any) -> list[AnyConfig]:
    """Configs for ``model`` of the preset ``name`` (or ``"a+b"``), with ``overrides`` applied."""
    known = presets()
    parts = [p.strip() for p in name.split("+")]
    unknown = [p for p in parts if p not in known]
    if unknown:
        raise ValueError(f"unknown delta method(s) {unknown}; available: {', '.join(known)}")
    if len(set(parts)) != len(parts):
        raise ValueError(f"delta method {name!r} names a method twice; list each once")

    scoped: dict[str, dict[str, Any]] = {p: {} for p in parts}
    shared: dict[str, Any] = {}
    for key, value in overrides.items():
        scope, sep, option = key.replace("__", ".", 1).partition(".")
        if sep:
            if scope not in scoped:
                raise ValueError(f"override {key!r} names method {scope!r}, which is not in {name!r}")
            scoped[scope][option] = value
        else:
            shared[key] = value

    configs = []
    claimed: set[str] = set()
    for part in parts:
        config = known[part].config_for(model)
        fields = {f.name for f in dataclasses.fields(config) if f.init}
        mine = {k: v for k, v in shared.items() if k in fields}
        claimed.update(mine)
        configs.append(_apply_overrides(config, {**mine, **scoped[part]}))
    unclaimed = sorted(set(shared) - claimed)
    if unclaimed:
        raise ValueError(f"option(s) {unclaimed} match no field of the configs for {name!r}")
    return configs


def default_rates(name: str) -> tuple[float, dict[str, float]]:
    """The default peak learning rate of preset ``name`` (or ``"a+b"``) and its ``lr_overrides``.

    Alone, a preset's own ``lr``. In a combination, every part that has an ``lr_key`` keeps its
    ``combined_lr`` for its own parameters (an override); the rest share the smallest of their rates (the safe
    side: a rate too high for one part diverges, one too low only trains it more slowly).
    """
    known = presets()
    parts = [p.strip() for p in name.split("+")]
    unknown = [p for p in parts if p not in known]
    if unknown:
        raise ValueError(f"unknown delta method(s) {unknown}; available: {', '.join(known)}")
    missing = [p for p in parts if known[p].lr is None]
    if missing:
        raise ValueError(f"preset(s) {missing} carry no default learning rate; pass --lr")
    if len(parts) == 1:
        return known[parts[0]].lr, {}
    keyed = [known[p] for p in parts if known[p].lr_key is not None]
    shared = [known[p].lr for p in parts if known[p].lr_key is None]
    overrides = {p.lr_key: p.combined_lr or p.lr for p in keyed}
    if not shared:  # every part keeps its own rate; the base rate then reaches nothing else
        return min(overrides.values()), overrides
    return min(shared), overrides
