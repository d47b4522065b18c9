"""The explicit attention computation shared by the transformers hook and the timm-style swap.

Written out by hand (rather than calling a model's own ``eager_attention_forward``) because the attention-level
deltas sit *inside* it: prefix keys/values go in front of the keys before the softmax, and Coeff-Tuning mixes
the post-softmax maps across heads, which no fused kernel (SDPA, FlashAttention, Flex) exposes.

Order of operations: prefix K/V (+ zero mask/bias columns) -> repeat K/V for GQA -> Q·Kᵀ·scaling
(-> softcap) (+ position bias) -> + additive mask -> softmax (fp32) -> mix heads with C -> attention dropout
-> · V. With no mask, a causal module (``is_causal``) still gets a causal mask, as transformers' SDPA path does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deltaspace.attention.mixing import mix_heads


def repeat_kv(states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, H_kv, L, D) -> (B, H_kv·n_rep, L, D), each KV head repeated for its group of query heads."""
    if n_rep == 1:
        return states
    batch, kv_heads, length, dim = states.shape
    expanded = states[:, :, None].expand(batch, kv_heads, n_rep, length, dim)
    return expanded.reshape(batch, kv_heads * n_rep, length, dim)


def additive_mask(mask: torch.Tensor | None, kv_len: int, dtype: torch.dtype) -> torch.Tensor | None:
    """Normalise a mask to additive float form of width ``kv_len`` (boolean masks: True means attend)."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        mask = torch.where(mask, torch.zeros((), dtype=dtype, device=mask.device), torch.finfo(dtype).min)
    if mask.shape[-1] > kv_len:
        # Some callers hand over a mask sized for the whole cache; only the first kv_len columns apply.
        mask = mask[..., :kv_len]
    return mask


def causal_mask(q_len: int, kv_len: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(1, 1, Lq, Lk) additive mask: query i (the last Lq of Lk positions) sees keys up to its own position."""
    rows = torch.arange(q_len, device=device)[:, None] + (kv_len - q_len)
    allowed = torch.arange(kv_len, device=device)[None, :] <= rows
    return additive_mask(allowed[None, None], kv_len, dtype)


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of (B, H, Lq, D) queries over (B, H_kv, Lk, D) keys/values, with the module's deltas.

    Returns ``(output, weights)``: output (B, Lq, H, D) (already transposed, as transformers expects) and
    the mixed, post-dropout maps (B, H, Lq, Lk + P).
    """
    batch, heads, q_len = query.shape[:3]
    kv_len = key.shape[-2]
    mask = additive_mask(attention_mask, kv_len, query.dtype)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", False)
    if mask is None and causal is True and q_len > 1:
        mask = causal_mask(q_len, kv_len, query.dtype, query.device)

    prefix = getattr(module, "ds_prefix", None)
    if prefix is not None:
        key_prefix, value_prefix = prefix(batch)
        key = torch.cat([key_prefix.to(key.dtype), key], dim=2)
        value = torch.cat([value_prefix.to(value.dtype), value], dim=2)
        # Prefix positions are always visible: zero additive mask/bias in front of every row.
        if mask is not None:
            mask = F.pad(mask, (key_prefix.shape[2], 0), value=0.0)
        if position_bias is not None:
            position_bias = F.pad(position_bias, (key_prefix.shape[2], 0), value=0.0)

    kv_heads = key.shape[1]
    if heads % kv_heads != 0:
        raise ValueError(f"{heads} query heads cannot be grouped over {kv_heads} key/value heads")
    key = repeat_kv(key, heads // kv_heads)
    value = repeat_kv(value, heads // kv_heads)

    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if position_bias is not None:
        scores = scores + position_bias
    if mask is not None:
        scores = scores + mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)

    coeff = getattr(module, "ds_coeff", None)
    if coeff is not None:
        weights = mix_heads(weights, coeff.coefficients().to(weights.dtype))

    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights
