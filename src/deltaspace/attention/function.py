"""The "deltaspace" attention implementation in transformers' registry, and switching a model to it.

transformers (>= 4.53) builds attention masks through ``AttentionMaskInterface`` keyed by the implementation
name; an unregistered name silently gets ``attention_mask=None``. So the function is registered together with
``eager_mask`` (4D additive float masks, which is what :func:`deltaspace.attention.core.attend` consumes).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from deltaspace.attention import timm_swap
from deltaspace.attention.core import attend
from deltaspace.attention.discovery import find_attention_modules, is_hf_attention, model_type

ATTENTION_NAME = "deltaspace"


def deltaspace_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    position_bias: torch.Tensor | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers attention-function contract: returns ((B, Lq, H, D) output, (B, H, Lq, Lk) weights).

    Handles the extras transformers' own eager functions take (``softcap``, T5-style ``position_bias``) and
    ``is_causal`` when no mask is given; the rest (position ids, cache info, ``sliding_window``, ...) needs no
    handling, windows and causality being encoded in the additive mask. Attention sinks are refused.
    """
    if kwargs.get("s_aux") is not None or kwargs.get("sinks") is not None:
        raise ValueError(
            f"{type(module).__name__} uses attention sinks, which the deltaspace attention does not implement"
        )
    return attend(
        module,
        query,
        key,
        value,
        attention_mask,
        scaling=scaling,
        dropout=dropout,
        softcap=softcap,
        position_bias=position_bias,
        is_causal=is_causal,
    )


AttentionInterface.register(ATTENTION_NAME, deltaspace_attention_forward)
AttentionMaskInterface.register(ATTENTION_NAME, eager_mask)


@dataclass
class _Switch:
    """What :func:`enable` changed, so :func:`disable` can put it back exactly."""

    configs: list[tuple[Any, Any]] = field(default_factory=list)
    swapped: list[nn.Module] = field(default_factory=list)


_ENABLED: weakref.WeakKeyDictionary[nn.Module, _Switch] = weakref.WeakKeyDictionary()


def _configs(model: nn.Module, attention: list[nn.Module]) -> list[Any]:
    """Every config whose attention implementation ``set_attn_implementation`` may touch (unique)."""
    found: dict[int, Any] = {}
    pending = [getattr(m, "config", None) for m in (*model.modules(), *attention)]
    while pending:
        config = pending.pop()
        if config is None or id(config) in found or not hasattr(config, "_attn_implementation_internal"):
            continue
        found[id(config)] = config
        pending.extend(getattr(config, key, None) for key in getattr(config, "sub_configs", {}))
    return list(found.values())


def is_enabled(model: nn.Module) -> bool:
    return model in _ENABLED


def enable(model: nn.Module) -> None:
    """Route every supported attention module of ``model`` through the deltaspace attention (idempotent)."""
    if model in _ENABLED:
        return
    modules = [m for _, m in find_attention_modules(model)]
    hf_modules = [m for m in modules if is_hf_attention(m)]
    switch = _Switch()
    if hf_modules:
        if not hasattr(model, "set_attn_implementation"):
            raise ValueError(
                f"{type(model).__name__} is not a transformers PreTrainedModel, so its attention implementation "
                "cannot be switched; pass the full transformers model"
            )
        configs = _configs(model, hf_modules)
        switch.configs = [(c, c._attn_implementation_internal) for c in configs]
        model.set_attn_implementation(ATTENTION_NAME)
        stuck = [
            m
            for m in hf_modules
            if hasattr(m, "config") and getattr(m.config, "_attn_implementation", None) != ATTENTION_NAME
        ]
        if stuck:
            for config, original in switch.configs:
                config._attn_implementation_internal = original
            raise ValueError(
                f"could not switch model type {model_type(model)!r} to the {ATTENTION_NAME!r} attention: "
                f"{type(stuck[0]).__name__} does not support setting its attention implementation at runtime"
            )
    for module in modules:
        if not is_hf_attention(module):
            timm_swap.swap(module)
            switch.swapped.append(module)
    _ENABLED[model] = switch


def disable(model: nn.Module) -> None:
    """Undo :func:`enable`: original attention implementation(s) and module classes (no-op if not enabled)."""
    switch = _ENABLED.pop(model, None)
    if switch is None:
        return
    for config, original in switch.configs:
        config._attn_implementation_internal = original
    for module in switch.swapped:
        timm_swap.restore(module)
