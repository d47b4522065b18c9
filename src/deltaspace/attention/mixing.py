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


class _MixedValues(torch.autograd.Function):
    """``out = dropout(mix(A, C)) @ V`` keeping only A (and the dropout mask) for backward.

    Plain autograd would keep both A (for the softmax and the mix) and Â = mix(A, C) (for Â @ V): two maps
    of size B·H·Lq·Lk per layer. Â is one (H, H) product away from A, so backward recomputes it instead.
    Also returns Â after dropout (the attention weights transformers reports); it is not differentiable.
    """

    @staticmethod
    def forward(ctx, probs, coefficients, value, keep, keep_scale):  # type: ignore[override]
        # autocast off: the products stay in the inputs' dtype, as in backward (which autocast never reaches)
        with torch.autocast(device_type=probs.device.type, enabled=False):
            return _MixedValues._forward(ctx, probs, coefficients, value, keep, keep_scale)

    @staticmethod
    def _forward(ctx, probs, coefficients, value, keep, keep_scale):
        mixed = probs if coefficients is None else mix_heads(probs, coefficients)
        if keep is not None:
            mixed = mixed * keep * keep_scale
        ctx.save_for_backward(probs, coefficients, value, keep)
        ctx.keep_scale = keep_scale
        ctx.mark_non_differentiable(mixed)
        return torch.matmul(mixed, value), mixed

    @staticmethod
    def backward(ctx, grad_out, _grad_weights):  # type: ignore[override]
        with torch.autocast(device_type=grad_out.device.type, enabled=False):
            return _MixedValues._backward(ctx, grad_out.to(ctx.saved_tensors[2].dtype))

    @staticmethod
    def _backward(ctx, grad_out):
        probs, coefficients, value, keep = ctx.saved_tensors
        mixed = probs if coefficients is None else mix_heads(probs, coefficients)
        if keep is not None:
            mixed = mixed * keep * ctx.keep_scale
        grad_value = torch.matmul(mixed.transpose(-1, -2), grad_out)
        grad_mixed = torch.matmul(grad_out, value.transpose(-1, -2))
        if keep is not None:
            grad_mixed = grad_mixed * keep * ctx.keep_scale
        grad_coefficients = None
        if coefficients is None:
            grad_probs = grad_mixed
        else:
            batch, heads = probs.shape[:2]
            flat_grad = grad_mixed.reshape(batch, heads, -1)
            if ctx.needs_input_grad[1]:
                grad_coefficients = torch.bmm(flat_grad, probs.reshape(batch, heads, -1).transpose(1, 2)).sum(
                    0
                )
            grad_probs = mix_heads(grad_mixed, coefficients.t())
        return grad_probs, grad_coefficients, grad_value, None, None


def mixed_values(
    probs: torch.Tensor,
    coefficients: torch.Tensor | None,
    value: torch.Tensor,
    *,
    dropout: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(dropout(mix(A, C)) @ V, dropout(mix(A, C))) for maps ``probs`` (B, H, Lq, Lk) and values (B, H, Lk, D).

    ``coefficients`` None means no mixing. Dropout (inverted, probability ``dropout``) acts on the mixed
    maps; pass 0 outside training. Autograd keeps one map (A), see :class:`_MixedValues`.
    """
    keep = None
    if dropout > 0.0:
        keep = torch.empty(probs.shape, dtype=torch.bool, device=probs.device).bernoulli_(1.0 - dropout)
    return _MixedValues.apply(probs, coefficients, value, keep, 1.0 / (1.0 - dropout))
