"""The "deltaspace" attention implementation in transformers' registry.

Modules are sent to it one by one (:mod:`deltaspace.attention.routing`); it computes the attention with the
hooks the module carries (:func:`deltaspace.attention.core.attend`).

A mask function is registered under the same name too (``eager_mask``), for models switched to "deltaspace"
as a whole with ``set_attn_implementation``; an unregistered name would silently get ``attention_mask=None``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from deltaspace.attention.core import attend
from deltaspace.attention.routing import ATTENTION_NAME

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
