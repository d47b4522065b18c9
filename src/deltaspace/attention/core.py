"""The attention computation with the module's deltas, shared by the transformers hook and the timm-style swap.

Written out by hand (rather than calling a model's own ``eager_attention_forward``) because the attention-level
deltas sit *inside* it: prefix keys/values go in front of the keys before the softmax, and Coeff-Tuning mixes
the post-softmax maps across heads, which no fused kernel (SDPA, FlashAttention, Flex) exposes.

Order of operations: prefix K/V (always visible) -> Q·Kᵀ·scaling (-> softcap) (+ position bias) (+ mask)
-> softmax -> mix heads with C -> attention dropout -> · V, grouped-query attention without copying K/V
on the blocked path. Two interchangeable paths compute it: :mod:`~deltaspace.attention.explicit` (whole
maps; the reference, faster for short sequences) and the blocked one (query panels recomputed in backward;
memory O(N)): :mod:`~deltaspace.attention.fused`'s C++ kernel where it builds, else
:mod:`~deltaspace.attention.blocked`'s torch ops. The Coeff hook's ``attention_path`` ("auto", "explicit", "blocked")
chooses. The hooks on the module (:mod:`~deltaspace.attention.hooks`) supply the prefixes and the head mix.
"""

from __future__ import annotations

import torch
from torch import nn

from deltaspace.attention import fused
from deltaspace.attention.blocked import BlockedPlan, blocked_attention
from deltaspace.attention.explicit import explicit_attention
from deltaspace.attention.hooks import apply_hooks
from deltaspace.attention.layout import KeyLayout

ATTENTION_PATHS = ("auto", "explicit", "blocked")
# "auto" keeps the explicit path while the maps of one layer (B·H·Lq·Lk floats) stay below this: there it
# is as fast and its kept map is small next to the rest of a training step (see bench/coeff_long.py).
AUTO_EXPLICIT_MAX_ELEMENTS = 1 << 21


def choose_path(requested: str, map_elements: int, *, trainable_bias: bool) -> str:
    """The path for one call: the requested one, or for "auto" explicit below the size threshold."""
    if requested not in ATTENTION_PATHS:
        raise ValueError(f"attention_path must be one of {', '.join(ATTENTION_PATHS)}, got {requested!r}")
    if requested != "auto":
        return requested
    if trainable_bias or map_elements <= AUTO_EXPLICIT_MAX_ELEMENTS:
        return "explicit"
    return "blocked"


def attend(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    position_bias: torch.Tensor | None = None,
    is_causal: bool | None = None,
    sliding_window: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention of (B, H, Lq, D) queries over (B, H_kv, Lk, D) keys/values, with the module's deltas.

    Returns ``(output, weights)``: output (B, Lq, H, D) (already transposed, as transformers expects) and
    the mixed, post-dropout maps (B, H, Lq, P + Lk) on the explicit path, None on the blocked path.
    """
    batch, heads, q_len = query.shape[:3]
    kv_len = key.shape[-2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", False)

    hooked = apply_hooks(module, key, value)
    key, value, num_prefix = hooked.key, hooked.value, hooked.num_prefix
    if heads % key.shape[1] != 0:
        raise ValueError(f"{heads} query heads cannot be grouped over {key.shape[1]} key/value heads")

    layout = KeyLayout.build(
        attention_mask,
        q_len=q_len,
        kv_len=kv_len,
        num_prefix=num_prefix,
        causal=causal is True,
        sliding_window=sliding_window,
        bias=position_bias,
    )
    coefficients = hooked.coefficients
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    dropout = dropout if module.training else 0.0
    path = choose_path(
        hooked.attention_path,
        batch * heads * q_len * layout.total_keys,
        trainable_bias=position_bias is not None and position_bias.requires_grad,
    )
    if path == "explicit":
        output, weights = explicit_attention(
            query, key, value, coefficients, layout, scaling=scaling, softcap=softcap, dropout=dropout
        )
    else:
        # The seed comes from torch's RNG, so runs under torch.manual_seed reproduce their dropout masks.
        seed = int(torch.randint(0, 1 << 62, ()).item()) if dropout > 0.0 else 0
        plan = BlockedPlan(layout, float(scaling), softcap, float(dropout), seed)
        blocked = (
            fused.fused_attention if fused.supports(query, plan) and fused.kernel() else blocked_attention
        )
        output, weights = blocked(query, key, value, coefficients, plan), None
    return output.to(query.dtype).transpose(1, 2).contiguous(), weights
