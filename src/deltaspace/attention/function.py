"""The "deltaspace" attention implementation in transformers' registry, and routing single modules to it.

Only the attention modules that carry an attention-level delta (``ds_coeff``, ``ds_prefix``) are routed; every
other module keeps the implementation the model was loaded with (SDPA, FlashAttention-2, eager). transformers
modules pick their attention function from ``self.config._attn_implementation`` at each call, so a routed
module gets its own shallow copy of its config naming "deltaspace"; :func:`disable` puts the original config
object back. The mask stays the one the model builds for its own implementation, which
:class:`deltaspace.attention.layout.KeyLayout` reads in every format. timm-style modules are swapped instead
(:mod:`deltaspace.attention.timm_swap`).

A mask function is registered under the same name too (``eager_mask``), for models switched to "deltaspace"
as a whole with ``set_attn_implementation``; an unregistered name would silently get ``attention_mask=None``.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from deltaspace.attention import timm_swap
from deltaspace.attention.core import attend
from deltaspace.attention.discovery import DELTA_ATTRS, find_attention_modules, is_hf_attention

ATTENTION_NAME = "deltaspace"


# The keyword arguments of transformers' attention functions that attend() implements.
_ATTEND_OPTIONS = ("scaling", "dropout", "softcap", "position_bias", "is_causal", "sliding_window")


def deltaspace_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """transformers attention-function contract: returns ((B, Lq, H, D) output, (B, H, Lq, Lk) weights or None).

    Handles the extras transformers' own attention functions take (``softcap``, T5-style ``position_bias``,
    ``is_causal`` and ``sliding_window`` where the mask does not encode them); the rest (position ids, cache
    info, ...) needs no handling. Attention sinks are refused.
    """
    if kwargs.get("s_aux") is not None or kwargs.get("sinks") is not None:
        raise ValueError(
            f"{type(module).__name__} uses attention sinks, which the deltaspace attention does not implement"
        )
    options = {name: kwargs[name] for name in _ATTEND_OPTIONS if name in kwargs}
    return attend(module, query, key, value, attention_mask, **options)


AttentionInterface.register(ATTENTION_NAME, deltaspace_attention_forward)
AttentionMaskInterface.register(ATTENTION_NAME, eager_mask)

# Routed transformers module -> the config object it had before (restored by unroute).
_ROUTED: weakref.WeakKeyDictionary[nn.Module, Any] = weakref.WeakKeyDictionary()
# Modules routed because a delta was attached (released when the last delta leaves), not by the user.
_FOR_DELTAS: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def is_routed(module: nn.Module) -> bool:
    return module in _ROUTED or timm_swap.is_swapped(module)


def carries_delta(module: nn.Module) -> bool:
    return any(hasattr(module, attr) for attr in DELTA_ATTRS)


def route(module: nn.Module) -> bool:
    """Send ``module`` through the deltaspace attention; False if it already was (then nothing changes)."""
    if is_routed(module):
        return False
    if not is_hf_attention(module):
        timm_swap.swap(module)
        return True
    config = getattr(module, "config", None)
    if config is None or not hasattr(config, "_attn_implementation_internal"):
        raise ValueError(
            f"{type(module).__name__} has no transformers config to read its attention implementation from, "
            "so it cannot be routed to the deltaspace attention"
        )
    own = copy.copy(config)  # shallow: everything shared but the implementation name
    own._attn_implementation_internal = ATTENTION_NAME
    _ROUTED[module] = config
    module.config = own
    return True


def unroute(module: nn.Module) -> None:
    """Undo :func:`route` (no-op for a module that is not routed)."""
    if module in _ROUTED:
        module.config = _ROUTED.pop(module)
    _FOR_DELTAS.discard(module)
    timm_swap.restore(module)


def is_enabled(model: nn.Module) -> bool:
    """Whether any attention module of ``model`` is routed through the deltaspace attention."""
    return any(is_routed(m) for m in model.modules())


def enable(
    model: nn.Module, modules: Iterable[nn.Module] | None = None, *, for_deltas: bool = False
) -> list[nn.Module]:
    """Route ``modules`` (default: the attention modules of ``model`` that carry an attention-level delta);
    returns those newly routed. All-or-nothing: on error, nothing stays routed. ``for_deltas``: routed on
    behalf of attached deltas, so :func:`release` unroutes them once no delta is left on them."""
    if modules is None:
        modules = [m for _, m in find_attention_modules(model) if carries_delta(m)]
    routed: list[nn.Module] = []
    try:
        for module in modules:
            if route(module):
                routed.append(module)
                if for_deltas:
                    _FOR_DELTAS.add(module)
    except ValueError:
        for module in routed:
            unroute(module)
        raise
    return routed


def disable(model: nn.Module, modules: Iterable[nn.Module] | None = None) -> None:
    """Unroute ``modules`` (default: every routed module of ``model``), restoring each one's own attention."""
    for module in list(model.modules()) if modules is None else modules:
        unroute(module)


def release(model: nn.Module, modules: Iterable[nn.Module]) -> None:
    """After a delta left ``modules``: unroute those routed for deltas that carry no attention-level delta any
    more (modules the user routed with :func:`enable` stay routed)."""
    disable(model, [m for m in modules if m in _FOR_DELTAS and not carries_delta(m)])
