"""The explicit attention path: the whole (B, H, Lq, Lk) map at once. The reference the blocked path is
checked against, and the faster choice for short sequences.

Scores in the inputs' dtype (as transformers' eager attention), softmax, head mixing, dropout and the
product with V in float32: in bf16/fp16, C = I + ΔC rounded to the maps' dtype would swallow small ΔC
updates (1 + 3e-3 is 1 in bf16). Autograd keeps one map per layer (see :mod:`deltaspace.attention.mixing`).
"""

from __future__ import annotations

import torch

from deltaspace.attention.blocked import compute_dtype
from deltaspace.attention.layout import KeyLayout
from deltaspace.attention.mixing import mixed_values


def repeat_kv(states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, H_kv, L, D) -> (B, H_kv·n_rep, L, D), each KV head repeated for its group of query heads."""
    if n_rep == 1:
        return states
    batch, kv_heads, length, dim = states.shape
    expanded = states[:, :, None].expand(batch, kv_heads, n_rep, length, dim)
    return expanded.reshape(batch, kv_heads * n_rep, length, dim)


def explicit_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    coefficients: torch.Tensor | None,
    layout: KeyLayout,
    *,
    scaling: float,
    softcap: float | None = None,
    dropout: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, H, Lq, D) queries over (B, H_kv, P + Lk, D) keys/values (prefix first) -> (output (B, H, Lq, D)
    in float32 (float64 for float64 inputs), mixed post-dropout maps (B, H, Lq, P + Lk) in the query dtype)."""
    n_rep = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, n_rep), repeat_kv(value, n_rep)
    dtype = compute_dtype(query)
    scores = torch.matmul(query, key.transpose(-1, -2)).to(dtype) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = layout.apply(scores, 0, 0)  # in place: nothing autograd saved is modified
    probs = torch.softmax(scores, dim=-1)
    coefficients = None if coefficients is None else coefficients.to(dtype)
    output, weights = mixed_values(probs, coefficients, value.to(dtype), dropout=dropout)
    return output, weights.to(query.dtype)
