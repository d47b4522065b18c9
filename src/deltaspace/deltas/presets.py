"""Named delta-method presets for the CLI and sweeps: ``resolve_method("coeff+lora", model, r=4)``.

A preset turns a method name into a config for one model, resolving target module names from the model's
``named_modules()`` (BERT: query/value, LLaMA and ViT: q_proj/v_proj, ...) rather than from a per-architecture
table of checkpoint names, which transformers 5 renamed for some families. ``"a+b"`` combines presets in order.

Overrides go to the config field of that name (every component that has it, in a combination), or to one
component as ``"<method>.<option>"`` / ``<method>__<option>`` (e.g. ``lora__r=4``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from peft import IA3Config, LoraConfig, PeftConfig
from torch import nn
from transformers.pytorch_utils import Conv1D

from deltaspace.deltas.adapter import AdapterConfig, sublayer_output_modules
from deltaspace.deltas.base import DeltaConfig, matches_target
from deltaspace.deltas.bitfit import BitFitConfig
from deltaspace.deltas.full import FullFineTuningConfig
from deltaspace.deltas.prefix import PrefixTuningConfig
from deltaspace.deltas.prompt import PromptTuningConfig

AnyConfig = DeltaConfig | PeftConfig

# Query/value and key/value projection names by family, tried in order (module-name suffixes).
QUERY_VALUE_NAMES = (("query", "value"), ("q_proj", "v_proj"), ("q_lin", "v_lin"), ("c_attn",), ("q", "v"))
KEY_VALUE_NAMES = (("key", "value"), ("k_proj", "v_proj"), ("k_lin", "v_lin"), ("c_attn",), ("k", "v"))


def _projection_targets(model: nn.Module, families: tuple[tuple[str, ...], ...], what: str) -> list[str]:
    linear = [n for n, m in model.named_modules() if n and isinstance(m, nn.Linear | Conv1D)]
    for family in families:
        if all(any(matches_target(n, [suffix]) for n in linear) for suffix in family):
            return list(family)
    raise ValueError(
        f"cannot find the {what} projections of {type(model).__name__} (tried {[list(f) for f in families]}); "
        "build the config yourself with explicit target_modules"
    )


def _lora(model: nn.Module) -> LoraConfig:
    targets = _projection_targets(model, QUERY_VALUE_NAMES, "query/value")
    return LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets)


def _ia3(model: nn.Module) -> IA3Config:
    key_value = _projection_targets(model, KEY_VALUE_NAMES, "key/value")
    ffn = sublayer_output_modules(model, "ffn")
    if not ffn:
        raise ValueError(f"cannot find the feed-forward output projections of {type(model).__name__} for IA3")
    return IA3Config(target_modules=key_value + ffn, feedforward_modules=ffn)


def _coeff(model: nn.Module) -> DeltaConfig:
    from deltaspace.deltas.coeff import CoeffTuningConfig

    return CoeffTuningConfig()


PRESETS: dict[str, tuple[str, Callable[[nn.Module], AnyConfig]]] = {
    "coeff": ("Coeff-Tuning: per-layer head-mixing coefficients", _coeff),
    "lora": ("LoRA r=8, alpha=16 on the query and value projections (PEFT)", _lora),
    "ia3": ("IA3 on keys, values and the feed-forward output (PEFT)", _ia3),
    "adapter": (
        "Houlsby adapters after attention and feed-forward, bottleneck 16",
        lambda m: AdapterConfig(),
    ),
    "adapter-ffn": (
        "Pfeiffer adapters after the feed-forward only, bottleneck 16",
        lambda m: AdapterConfig(placement="ffn"),
    ),
    "prefix": (
        "prefix tuning, 10 virtual tokens, tanh-MLP reparameterisation r=64",
        lambda m: PrefixTuningConfig(),
    ),
    "prompt": (
        "prompt tuning, 20 soft tokens from random vocabulary embeddings",
        lambda m: PromptTuningConfig(),
    ),
    "bitfit": ("BitFit: all bias terms of the base model", lambda m: BitFitConfig()),
    "full": ("full fine-tuning of every base parameter", lambda m: FullFineTuningConfig()),
}


def available_methods() -> list[str]:
    """Preset names; combine any of them with '+' (e.g. 'coeff+lora')."""
    return list(PRESETS)


def _apply_overrides(config: AnyConfig, overrides: dict[str, Any]) -> AnyConfig:
    names = {f.name for f in dataclasses.fields(config) if f.init}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"{type(config).__name__} has no option(s) {unknown}")
    return dataclasses.replace(config, **overrides)


def resolve_method(name: str, model: nn.Module, **overrides: Any) -> list[AnyConfig]:
    """Configs for ``model`` of the preset ``name`` (or ``"a+b"``), with ``overrides`` applied."""
    parts = [p.strip() for p in name.split("+")]
    unknown = [p for p in parts if p not in PRESETS]
    if unknown:
        raise ValueError(f"unknown delta method(s) {unknown}; available: {', '.join(available_methods())}")
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
        config = PRESETS[part][1](model)
        fields = {f.name for f in dataclasses.fields(config) if f.init}
        mine = {k: v for k, v in shared.items() if k in fields}
        claimed.update(mine)
        configs.append(_apply_overrides(config, {**mine, **scoped[part]}))
    unclaimed = sorted(set(shared) - claimed)
    if unclaimed:
        raise ValueError(f"option(s) {unclaimed} match no field of the configs for {name!r}")
    return configs
