"""Finding the attention modules an attention-level delta can live on.

Two kinds are supported:

* transformers modules whose class's ``forward`` dispatches through ``ALL_ATTENTION_FUNCTIONS`` (detected from
  the source, cached per class, so a model family moved onto the registry is picked up without a list of
  names to maintain);
* timm-style modules (duck typed, timm is never imported): a fused ``qkv`` projection, ``num_heads`` and a
  ``proj`` output projection.
"""

from __future__ import annotations

import inspect
import re

from torch import nn

_ROUTES: dict[type, bool] = {}
_CROSS_NAMES = frozenset(
    {"crossattention", "cross_attn", "cross_attention", "encoder_attn", "encdecattention"}
)
_HEAD_ATTRS = ("num_attention_heads", "num_heads", "n_heads", "n_head")
_LAYER_INDEX = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")


def routes_through_registry(cls: type) -> bool:
    """Whether ``cls.forward`` calls transformers' attention registry (read once per class from its source)."""
    if cls not in _ROUTES:
        forward = getattr(cls, "forward", None)
        try:
            source = inspect.getsource(inspect.unwrap(forward)) if forward is not None else ""
        except (OSError, TypeError):
            source = ""
        _ROUTES[cls] = "ALL_ATTENTION_FUNCTIONS" in source
    return _ROUTES[cls]


def is_timm_style(module: nn.Module) -> bool:
    """A timm-style attention module: fused ``qkv`` projection to 3·H·d, integer ``num_heads``, ``proj``."""
    qkv = getattr(module, "qkv", None)
    heads = getattr(module, "num_heads", None)
    out_features = getattr(qkv, "out_features", None)
    return (
        isinstance(qkv, nn.Module)
        and isinstance(heads, int)
        and heads > 0
        and isinstance(out_features, int)
        and out_features % (3 * heads) == 0
        and isinstance(getattr(module, "proj", None), nn.Module)
        and not routes_through_registry(type(module))
    )


def is_hf_attention(module: nn.Module) -> bool:
    return routes_through_registry(type(module))


def find_attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """All (name, module) pairs of supported attention modules, in ``named_modules`` order."""
    return [(name, m) for name, m in model.named_modules() if is_hf_attention(m) or is_timm_style(m)]


def is_cross_attention(name: str, module: nn.Module) -> bool:
    """Cross-attention by the conventions transformers uses (class name, attribute, or module name)."""
    if getattr(module, "is_cross_attention", False) is True or "cross" in type(module).__name__.lower():
        return True
    return any(part.lower() in _CROSS_NAMES for part in name.split("."))


def num_query_heads(module: nn.Module) -> int:
    """Number of query heads of an attention module (the full count, not the KV count under GQA)."""
    for attr in _HEAD_ATTRS:
        value = getattr(module, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    config = getattr(module, "config", None)
    value = getattr(config, "num_attention_heads", None)
    if isinstance(value, int) and value > 0:
        return value
    raise ValueError(
        f"cannot tell the number of attention heads of {type(module).__name__}: it has none of "
        f"{', '.join(_HEAD_ATTRS)} and no config.num_attention_heads"
    )


def layer_index(name: str) -> int | None:
    """The layer number in a module name (the first all-digit path component), e.g. 3 for ``layers.3.attn``."""
    match = _LAYER_INDEX.search(name)
    return int(match.group(1)) if match else None


def model_type(model: nn.Module) -> str:
    """A short name for error messages: ``config.model_type`` when there is one, else the class name."""
    return getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__
