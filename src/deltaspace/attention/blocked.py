"""The blocked attention path: exact Coeff-Tuning mixing without keeping any N×N map for backward.

Coeff mixes *post-softmax* maps across heads, so a query row needs every head's normalised probabilities
over all keys before anything can be mixed. The sequence is cut into panels of query rows; a panel holds
the scores of all heads over the panel's visible keys (the full rows, so the softmax is exact without a
separate log-sum-exp pass), mixes them with one (H, H) product, applies dropout and multiplies V. Backward
(a custom ``autograd.Function``) recomputes each panel from Q, K, V and C: autograd keeps O(B·H·N·d), never
a map, and the working set is one panel (about ``PANEL_ELEMENTS`` floats). Because a panel has whole rows,
the softmax backward term rowsum(dP ⊙ P) per source head is exact within the panel too, with no extra pass.

Everything inside runs in float32 (float64 for float64 inputs) whatever the inputs' dtype. Attention
dropout draws each panel's mask from a generator seeded with (seed, panel index), so backward regenerates
the very masks forward used.
Written by hand (no fused kernel exposes post-softmax maps to mix); docs/coeff_attention_triton.md
describes the GPU (tiled) version of the same algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deltaspace.attention.layout import KeyLayout

# Floats per panel of scores (B·H·rows·keys): 2^21 = 8 MiB in float32. Smaller panels make the products
# that accumulate over a panel's rows (dV, dK) inefficient, larger ones fall out of cache; 2^20 to 2^21
# measured best for a MiniLM training step on CPU (bench/coeff_long.py). One panel and a few temporaries
# are the whole working set.
PANEL_ELEMENTS = 1 << 21
# Floats per chunk of the head mix (see _mix).
MIX_ELEMENTS = 1 << 19


@dataclass(frozen=True)
class BlockedPlan:
    """Everything but the differentiable tensors: key visibility, scale, softcap, dropout and its seed."""

    layout: KeyLayout
    scaling: float
    softcap: float | None = None
    dropout: float = 0.0
    seed: int = 0
    panel_elements: int | None = None  # None: PANEL_ELEMENTS at call time


def _panels(plan: BlockedPlan, batch: int, heads: int) -> list[tuple[int, int]]:
    budget = plan.panel_elements or PANEL_ELEMENTS
    rows = max(1, budget // max(1, batch * heads * plan.layout.total_keys))
    return [(start, min(start + rows, plan.layout.q_len)) for start in range(0, plan.layout.q_len, rows)]


def full_precision(tensor: torch.Tensor) -> torch.autocast:
    """A context that turns autocast off on ``tensor``'s device.

    The attention maths here runs in float32 on purpose (C = I + ΔC rounded to bf16 swallows a small ΔC);
    under ``torch.autocast`` the products inside a custom ``autograd.Function`` would otherwise drop to
    bf16 in forward only (backward runs outside the autocast region), and forward and backward would
    disagree in dtype.
    """
    return torch.autocast(device_type=tensor.device.type, enabled=False)


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """float32, or float64 for float64 inputs: half precision never holds scores, maps or the mix."""
    return torch.promote_types(tensor.dtype, torch.float32)


def _grouped(states: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """(B, H, R, X) -> (B, H_kv, g·R, X): the query heads of one KV group side by side (GQA without repeat)."""
    batch, heads, rows, last = states.shape
    return states.reshape(batch, kv_heads, (heads // kv_heads) * rows, last)


def _dropped(plan: BlockedPlan, panel: int, like: torch.Tensor) -> torch.Tensor:
    """Boolean dropout mask (True = dropped) of one panel, the same in forward and backward.

    Drawn as 16-bit uniforms cut out of 64-bit random words (``random_`` over the full int64 range), about
    6x cheaper on CPU than ``bernoulli_``; the drop probability is p rounded to a multiple of 2⁻¹⁶.
    """
    generator = torch.Generator(device=like.device)
    generator.manual_seed((plan.seed + 1_000_003 * panel) % (1 << 63))
    count = like.numel()
    words = torch.empty(-(-count // 4), dtype=torch.int64, device=like.device)
    words.random_(-(1 << 63), (1 << 63) - 1, generator=generator)
    uniform16 = words.view(torch.int16)[:count].view(like.shape)
    return uniform16 < _drop_threshold(plan.dropout)


def _drop_threshold(p: float) -> int:
    return -(1 << 15) + round(p * (1 << 16))


def _keep_scale(p: float) -> float:
    """1 / (1 - p) for the p the 16-bit mask actually uses (inverted dropout stays unbiased)."""
    return 1.0 / (1.0 - (_drop_threshold(p) + (1 << 15)) / (1 << 16))


def _scores(
    query: torch.Tensor, key_t: torch.Tensor, plan: BlockedPlan, rows: tuple[int, int], cols: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Masked scores (B, H, rows, cols) of a panel from pre-scaled float32 queries and transposed keys
    (B, H_kv, D, P + Lk); also tanh(·) of the softcap."""
    batch, heads = query.shape[:2]
    q = _grouped(query[:, :, rows[0] : rows[1]], key_t.shape[1])
    scores = torch.matmul(q, key_t[..., cols[0] : cols[1]])
    scores = scores.view(batch, heads, rows[1] - rows[0], cols[1] - cols[0])
    capped = None
    if plan.softcap is not None:
        capped = torch.tanh(scores.div_(plan.softcap))
        scores = capped * plan.softcap
    return plan.layout.apply(scores, rows[0], cols[0]), capped


def _mix(probs: torch.Tensor, coefficients: torch.Tensor | None) -> torch.Tensor:
    """Â[b, h] = Σ_k C[h, k] P[b, k] over a panel, in row chunks of about ``MIX_ELEMENTS``.

    An (H, H) @ (H, M) product has a tiny inner dimension, so it runs at memory speed; on chunks that stay
    in cache it measured about 3x faster on CPU than on a whole 8 MiB panel.
    """
    if coefficients is None:
        return probs
    batch, heads, rows, cols = probs.shape
    weights = coefficients.expand(batch, heads, heads)
    step = max(1, MIX_ELEMENTS // (batch * heads * cols))
    if step >= rows:
        return torch.bmm(weights, probs.view(batch, heads, -1)).view_as(probs)
    mixed = torch.empty_like(probs)
    for start in range(0, rows, step):
        chunk = probs[:, :, start : start + step].reshape(batch, heads, -1)
        mixed[:, :, start : start + step] = torch.bmm(weights, chunk).view(batch, heads, -1, cols)
    return mixed


class _BlockedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query, key, value, coefficients, plan):  # type: ignore[override]
        with full_precision(query):
            return _BlockedAttention._forward(ctx, query, key, value, coefficients, plan)

    @staticmethod
    def _forward(ctx, query, key, value, coefficients, plan):
        batch, heads, q_len = query.shape[:3]
        kv_heads = key.shape[1]
        dtype = compute_dtype(query)
        q32 = query.to(dtype) * plan.scaling
        k32, v32 = key.to(dtype), value.to(dtype)
        c32 = None if coefficients is None else coefficients.to(dtype)
        k32_t = k32.transpose(-1, -2).contiguous()  # products with Kᵀ run ~10% faster on a contiguous copy
        output = torch.empty(batch, heads, q_len, value.shape[-1], dtype=dtype, device=query.device)
        for index, rows in enumerate(_panels(plan, batch, heads)):
            cols = plan.layout.columns(*rows)
            scores, _ = _scores(q32, k32_t, plan, rows, cols)
            mixed = _mix(torch.softmax(scores, dim=-1), c32)
            del scores
            if plan.dropout > 0.0:  # (the 1/(1-p) scale is applied to the small product below)
                mixed.masked_fill_(_dropped(plan, index, mixed), 0.0)
            out = torch.matmul(_grouped(mixed, kv_heads), v32[:, :, cols[0] : cols[1]])
            if plan.dropout > 0.0:
                out.mul_(_keep_scale(plan.dropout))
            output[:, :, rows[0] : rows[1]] = out.view(batch, heads, rows[1] - rows[0], -1)
        ctx.save_for_backward(query, key, value, coefficients)
        ctx.plan = plan
        return output.to(query.dtype)

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        with full_precision(grad_output):
            return _BlockedAttention._backward(ctx, grad_output)

    @staticmethod
    def _backward(ctx, grad_output):
        query, key, value, coefficients = ctx.saved_tensors
        plan: BlockedPlan = ctx.plan
        need_q, need_k, need_v, need_c = ctx.needs_input_grad[:4]
        batch, heads = query.shape[:2]
        kv_heads = key.shape[1]
        dtype = compute_dtype(query)
        q32 = query.to(dtype) * plan.scaling
        k32, v32 = key.to(dtype), value.to(dtype)
        c32 = None if coefficients is None else coefficients.to(dtype)
        grad_out = grad_output.to(dtype)
        if plan.dropout > 0.0:  # inverted dropout's 1/(1-p), applied once to the small gradient
            grad_out = grad_out * _keep_scale(plan.dropout)
        k32_t, v32_t = k32.transpose(-1, -2).contiguous(), v32.transpose(-1, -2).contiguous()
        # dK and dV accumulate transposed, (B, H_kv, D, keys): Xᵀ @ panel runs ~35% faster on CPU than
        # panelᵀ @ X (the panel is the large operand and stays untransposed).
        grad_q = torch.zeros_like(q32) if need_q else None
        grad_k_t = torch.zeros_like(k32_t) if need_k else None
        grad_v_t = torch.zeros_like(v32_t) if need_v else None
        grad_c = torch.zeros_like(c32) if need_c and c32 is not None else None
        for index, rows in enumerate(_panels(plan, batch, heads)):
            cols = plan.layout.columns(*rows)
            n_rows, n_cols = rows[1] - rows[0], cols[1] - cols[0]
            scores, capped = _scores(q32, k32_t, plan, rows, cols)
            probs = torch.softmax(scores, dim=-1)
            del scores
            dropped = _dropped(plan, index, probs) if plan.dropout > 0.0 else None
            go = _grouped(grad_out[:, :, rows[0] : rows[1]], kv_heads)
            if grad_v_t is not None:
                mixed = _mix(probs, c32)
                if dropped is not None:  # out of place when nothing was mixed: probs is still needed
                    mixed = (
                        mixed.masked_fill(dropped, 0.0) if c32 is None else mixed.masked_fill_(dropped, 0.0)
                    )
                grad_v_t[..., cols[0] : cols[1]] += torch.matmul(
                    go.transpose(-1, -2), _grouped(mixed, kv_heads)
                )
                del mixed
            if not (need_q or need_k or grad_c is not None):
                continue
            grad_mixed = torch.matmul(go, v32_t[..., cols[0] : cols[1]]).view(batch, heads, n_rows, n_cols)
            if dropped is not None:
                grad_mixed.masked_fill_(dropped, 0.0)
            if c32 is None:
                grad_probs = grad_mixed
            else:
                flat = grad_mixed.view(batch, heads, -1)
                if grad_c is not None:
                    grad_c += torch.bmm(flat, probs.view(batch, heads, -1).transpose(1, 2)).sum(0)
                grad_probs = _mix(grad_mixed, c32.t())
            del grad_mixed
            if not (need_q or need_k):
                continue
            # Fused softmax backward: P ⊙ (dP − rowsum(dP ⊙ P)), exact because the panel holds whole rows.
            grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, dtype)
            del grad_probs, probs
            if capped is not None:
                grad_scores.mul_(1.0 - capped.square())
            grad_scores = _grouped(grad_scores, kv_heads)
            if grad_q is not None:
                grad_q[:, :, rows[0] : rows[1]] = torch.matmul(
                    grad_scores, k32[:, :, cols[0] : cols[1]]
                ).view(batch, heads, n_rows, -1)
            if grad_k_t is not None:
                q_t = _grouped(q32[:, :, rows[0] : rows[1]], kv_heads).transpose(-1, -2)
                grad_k_t[..., cols[0] : cols[1]] += torch.matmul(q_t, grad_scores)
        return (
            None if grad_q is None else (grad_q * plan.scaling).to(query.dtype),
            None if grad_k_t is None else grad_k_t.transpose(-1, -2).to(key.dtype).contiguous(),
            None if grad_v_t is None else grad_v_t.transpose(-1, -2).to(value.dtype).contiguous(),
            None if grad_c is None else grad_c.to(coefficients.dtype),
            None,
        )


def blocked_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    coefficients: torch.Tensor | None,
    plan: BlockedPlan,
) -> torch.Tensor:
    """(B, H, Lq, D) queries over (B, H_kv, P + Lk, D) keys/values (prefix first), heads mixed by
    ``coefficients`` (H, H) or not mixed (None) -> output (B, H, Lq, D) in the query dtype.

    Exact (same maths as :func:`deltaspace.attention.explicit.explicit_attention`); memory kept for backward
    O(B·H·N·D); ``plan.dropout`` > 0 applies attention dropout (pass 0 outside training).
    """
    if plan.layout.bias is not None and plan.layout.bias.requires_grad:
        raise ValueError(
            "the blocked Coeff attention does not differentiate a trainable position bias; "
            "set CoeffTuningConfig(attention_path='explicit')"
        )
    return _BlockedAttention.apply(query, key, value, coefficients, plan)
