"""Functional alignment of a subspace's extra directions across DETs (not in the paper).

The closed-form start gives every DET the source tasks' descent directions at θ0 under one shared code,
so a code's coordinate names "the first step on source batch j" in every DET. That is not the same *change
of the model's function* in every DET: each DET's first-order output change along its own direction is
``J_m g_m = K_m r`` (its tangent kernel applied to the output-space gradient), so a code optimised through
one DET (stage 2) can decode to something else through another (stage 3, transfer).

Alignment re-expresses each DET's extra columns ``E_m`` (D_m × n) as ``E_m M_m`` (M_m: n × n) such that the
output changes they cause on probe inputs (the source batches the directions came from) agree across DETs
in least squares: ``F_m M_m ≈ F`` with ``F_m = J_m E_m`` measured by central differences. ``M_m`` is a change
of coordinates inside each DET's span, so what stage 2 can reach in a DET is unchanged; only what the same
code means across DETs moves closer (to first order, on the probe inputs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from deltaspace.subspace.member import SubspaceMember


def _outputs(member: SubspaceMember):
    outputs = getattr(member, "outputs", None)
    if not callable(outputs):
        raise ValueError(
            f"member {member.name!r} has no outputs(theta, batch); use gradient_scale unit / no alignment"
        )
    return outputs


def output_change(member: SubspaceMember, direction: Tensor, batch: Any, step: float = 1e-2) -> Tensor:
    """The member's output change on ``batch`` per unit step along ``direction`` (flattened, float64): a
    central difference over a parameter move of norm ``step`` (custom attention kernels need not support
    forward-mode AD)."""
    outputs = _outputs(member)
    theta0 = member.theta0.detach()
    size = float(direction.norm())
    if size == 0.0:
        return torch.zeros_like(outputs(theta0, batch), dtype=torch.float64).reshape(-1)
    move = (direction * (step / size)).to(device=theta0.device, dtype=theta0.dtype)
    change = outputs(theta0 + move, batch).double() - outputs(theta0 - move, batch).double()
    return (change * (size / (2 * step))).reshape(-1).cpu()


def output_changes(member: SubspaceMember, columns: Tensor, batches: Sequence[Any]) -> Tensor:
    """``F = J E`` (N_out × n): each column's output change over all ``batches``, concatenated."""
    return torch.stack(
        [
            torch.cat([output_change(member, columns[:, j], b) for b in batches])
            for j in range(columns.shape[1])
        ],
        dim=1,
    )


def embedding_batch(batch: Mapping[str, Any]) -> dict[str, Any]:
    """``batch`` with its label prototypes replaced by the identity, so a prototype head's "logits" are the
    (temperature-scaled) unit sentence embedding itself: output changes then cover every direction a task's
    labels could read, not only the source task's."""
    prototypes = batch.get("prototypes") if isinstance(batch, Mapping) else None
    if not isinstance(prototypes, Tensor) or prototypes.dim() != 2:
        raise ValueError(
            "gradient_align_space: embedding needs batches with a (labels, hidden) 'prototypes' tensor "
            "(a prototype head); use gradient_align_space: logits"
        )
    return {**batch, "prototypes": torch.eye(prototypes.shape[1], dtype=prototypes.dtype)}


def alignment_maps(
    changes: Mapping[str, Tensor],
    *,
    columns: int | None = None,
    iterations: int = 5,
    ridge: float = 1e-3,
) -> dict[str, Tensor]:
    """Per DET the P × n map ``M_m`` minimising ``Σ_m ||F_m M_m − F||²`` over a consensus ``F`` (alternating:
    ridge least squares for each ``M_m``, then ``F`` = the mean of the ``F_m M_m``, kept at the mean
    column norm of the unaligned ones so it cannot shrink to zero). ``columns`` (n, default P): fewer
    aligned directions than candidates; the consensus starts from the mean of the first n candidates."""
    if not changes:
        raise ValueError("alignment needs the output changes of at least one member")
    shapes = {tuple(f.shape) for f in changes.values()}
    if len(shapes) != 1:
        raise ValueError(f"every member's output changes must have one shape, got {sorted(shapes)}")
    n = next(iter(shapes))[1] if columns is None else columns
    if not 1 <= n <= next(iter(shapes))[1]:
        raise ValueError(f"columns must be between 1 and the {next(iter(shapes))[1]} candidates, got {n}")
    consensus = torch.stack([f[:, :n] for f in changes.values()]).mean(0)
    target_norm = torch.stack([f[:, :n].norm(dim=0) for f in changes.values()]).mean(0)
    maps: dict[str, Tensor] = {}
    for _ in range(iterations):
        for name, f in changes.items():
            gram = f.t() @ f
            damp = ridge * gram.diagonal().mean().clamp_min(1e-30)
            maps[name] = torch.linalg.solve(
                gram + damp * torch.eye(gram.shape[0], dtype=f.dtype), f.t() @ consensus
            )
        consensus = torch.stack([f @ maps[name] for name, f in changes.items()]).mean(0)
        consensus = consensus * (target_norm / consensus.norm(dim=0).clamp_min(1e-30))
    return maps


def misalignment(changes: Mapping[str, Tensor], maps: Mapping[str, Tensor] | None = None) -> float:
    """Mean over DET pairs of ``||F_a M_a − F_b M_b|| / mean(||F_a M_a||, ||F_b M_b||)`` (0: the same code
    changes every DET's outputs alike; ~1.4: unrelated)."""
    mapped = [f @ maps[name] if maps is not None else f for name, f in changes.items()]
    values = [
        float((a - b).norm() / (0.5 * (a.norm() + b.norm())).clamp_min(1e-30))
        for i, a in enumerate(mapped)
        for b in mapped[i + 1 :]
    ]
    return sum(values) / len(values) if values else 0.0
