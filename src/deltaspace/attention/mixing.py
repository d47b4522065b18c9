"""Coeff-Tuning's head mixing: Â[b, h] = Σ_k C[h, k] · A[b, k].

Index convention (fixed library-wide): row ``h`` of ``C`` holds the weights with which the post-softmax maps
of all source heads ``k`` are combined into the new map of head ``h``; that new map then multiplies head
``h``'s own values. With ``C = I`` the maps are returned unchanged.
"""

from __future__ import annotations

import torch


def _check(attn: torch.Tensor, coefficients: torch.Tensor) -> None:
    if attn.dim() != 4:
        raise ValueError(
            f"attention maps must have shape (batch, heads, q_len, kv_len), got {tuple(attn.shape)}"
        )
    heads = attn.shape[1]
    if tuple(coefficients.shape) != (heads, heads):
        raise ValueError(
            f"coefficients have shape {tuple(coefficients.shape)} but the maps have {heads} heads; "
            f"expected ({heads}, {heads})"
        )


def mix_heads_reference(attn: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """Plain, loop-based mixing: the definition, used to check :func:`mix_heads`."""
    _check(attn, coefficients)
    heads = attn.shape[1]
    mixed = []
    for h in range(heads):
        acc = torch.zeros_like(attn[:, 0])
        for k in range(heads):
            acc = acc + coefficients[h, k] * attn[:, k]
        mixed.append(acc)
    return torch.stack(mixed, dim=1)


def mix_heads(attn: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """Runtime mixing: one batched (H, H) @ (H, Lq·Lk) product per example over the flattened maps.

    ``bmm`` with the coefficients broadcast over the batch, rather than ``matmul``: ``matmul`` picks a
    different reduction order when autograd is recording, so outputs would differ in the last bit between
    training and ``no_grad`` inference (and saved -> loaded logits would not reproduce exactly).
    """
    _check(attn, coefficients)
    batch, heads, q_len, kv_len = attn.shape
    flat = attn.reshape(batch, heads, q_len * kv_len)
    return torch.bmm(coefficients.expand(batch, heads, heads), flat).view(batch, heads, q_len, kv_len)
