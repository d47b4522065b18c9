"""Finding the attention modules an attention-level delta can live on.

Two kinds are supported:

* transformers attention modules, found from transformers' own flags: every model class inside the model that
  lets the attention implementation be chosen (``_supports_sdpa``, ``_supports_flash_attn``,
  ``_supports_flex_attn`` or ``_supports_attention_backend``) and records its outputs names its attention
  layers' classes in ``_can_record_outputs`` ("attentions", "cross_attentions"); the attention module is such
  a layer, or, where the layer wraps it (T5's ``T5LayerSelfAttention``), the descendant holding the Q/K/V
  projections (names from :data:`deltaspace.architectures.FAMILIES`). The few registry users that record no
  outputs are listed by class name in the table (``routed_without_flag``);
* timm-style modules (duck typed, timm is never imported): a fused ``qkv`` projection, ``num_heads`` and a
  ``proj`` output projection, and no transformers config.
"""

from __future__ import annotations

import re

from torch import nn

from deltaspace.architectures import (
    CROSS_ATTENTION_NAMES,
    FAMILIES,
    HEAD_COUNT_ATTRS,
    HEAD_DIM_ATTRS,
    ROUTED_WITHOUT_FLAG,
)

_PROJECTION_NAMES = frozenset(
    n for f in FAMILIES for n in (f.query, f.key, f.value, f.fused_qkv) if n is not None
)
# transformers' class flags saying that the attention implementation is picked from the config at run time.
_IMPLEMENTATION_FLAGS = (
    "_supports_attention_backend",
    "_supports_sdpa",
    "_supports_flash_attn",
    "_supports_flex_attn",
)
_LAYER_INDEX = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")
# Attention classes found to call transformers' attention registry: a fact about the class, learnt from the
# flags of the models searched, so routing can tell a module's kind without its model.
_REGISTRY_CLASSES: set[type] = set()


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
        and not is_hf_attention(module)
    )


def _flagged_layer_classes(model: nn.Module) -> set[type]:
    """The attention-layer classes that registry-routed transformers models inside ``model`` name."""
    classes: set[type] = set()
    for module in model.modules():
        cls = type(module)
        recorded = getattr(cls, "_can_record_outputs", None)
        if not isinstance(recorded, dict) or not any(
            getattr(cls, flag, False) for flag in _IMPLEMENTATION_FLAGS
        ):
            continue
        for key in ("attentions", "cross_attentions"):
            target = getattr(recorded.get(key), "target_class", recorded.get(key))
            if isinstance(target, type):
                classes.add(target)
    return classes


def _holds_projections(module: nn.Module) -> bool:
    return any(name in _PROJECTION_NAMES for name in module._modules)


def learn_attention_classes(model: nn.Module) -> None:
    """Record the classes of ``model``'s modules that call transformers' attention registry."""
    layers = _flagged_layer_classes(model)
    for module in model.modules():
        if type(module).__name__ in ROUTED_WITHOUT_FLAG:
            _REGISTRY_CLASSES.add(type(module))
        elif type(module) in layers:
            inner = [module] if _holds_projections(module) else list(module.modules())[1:]
            _REGISTRY_CLASSES.update(type(m) for m in inner if _holds_projections(m))


def is_hf_attention(module: nn.Module) -> bool:
    """Whether ``module``'s class calls transformers' attention registry (known once a model holding such a
    class went through :func:`learn_attention_classes`, as :func:`find_attention_modules` does)."""
    return type(module) in _REGISTRY_CLASSES


def find_attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """All (name, module) pairs of supported attention modules, in ``named_modules`` order."""
    learn_attention_classes(model)
    return [(name, m) for name, m in model.named_modules() if is_hf_attention(m) or is_timm_style(m)]


def is_cross_attention(name: str, module: nn.Module) -> bool:
    """Cross-attention by the conventions transformers uses (class name, attribute, or module name)."""
    if getattr(module, "is_cross_attention", False) is True or "cross" in type(module).__name__.lower():
        return True
    return any(part.lower() in CROSS_ATTENTION_NAMES for part in name.split("."))


def num_query_heads(module: nn.Module) -> int:
    """Number of query heads of an attention module (the full count, not the KV count under GQA)."""
    for attr in HEAD_COUNT_ATTRS:
        value = getattr(module, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    config = getattr(module, "config", None)
    value = getattr(config, "num_attention_heads", None)
    if isinstance(value, int) and value > 0:
        return value
    raise ValueError(
        f"cannot tell the number of attention heads of {type(module).__name__}: it has none of "
        f"{', '.join(HEAD_COUNT_ATTRS)} and no config.num_attention_heads"
    )


def kv_shape(module: nn.Module) -> tuple[int, int]:
    """(number of key/value heads, head dimension) of an attention module."""
    config = getattr(module, "config", None)
    head_dim = next((getattr(module, a) for a in HEAD_DIM_ATTRS if getattr(module, a, None)), None)
    head_dim = head_dim or getattr(config, "head_dim", None)
    heads = num_query_heads(module)
    kv_heads = getattr(module, "num_key_value_heads", None) or getattr(config, "num_key_value_heads", None)
    kv_heads = kv_heads or heads
    if head_dim is None and heads is not None and getattr(config, "hidden_size", None):
        head_dim = config.hidden_size // heads
    if not kv_heads or not head_dim:
        raise ValueError(
            f"cannot tell the key/value head count and head size of {type(module).__name__}; attention-level "
            "deltas need a transformers attention module with a config"
        )
    return int(kv_heads), int(head_dim)


def layer_index(name: str) -> int | None:
    """The layer number in a module name (the first all-digit path component), e.g. 3 for ``layers.3.attn``."""
    match = _LAYER_INDEX.search(name)
    return int(match.group(1)) if match else None


def model_type(model: nn.Module) -> str:
    """A short name for error messages: ``config.model_type`` when there is one, else the class name."""
    return getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__
