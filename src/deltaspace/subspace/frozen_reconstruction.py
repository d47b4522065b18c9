"""The reconstruction error of an up-projection the joint fit does not train, from its Gram statistics.

For a linear decoder ``P`` (D, d) that stays fixed (full fine-tuning's basis: D = 22.7M, too large to
train), the relative error of source task t is

    |Δ_t − P z|² / |Δ_t|² = (|Δ_t|² − 2 zᵀ PᵀΔ_t + zᵀ PᵀP z) / |Δ_t|²,

so ``PᵀP`` (d, d) and ``PᵀΔ_t`` (d,) computed once (in float64) give the error and its gradient in the
code at O(d²) per task. Computing it directly decodes every source task and reads T × D floats twice per
step: 4.9 s of a 7.5-s joint-fit step at full fine-tuning's size on 2 cores (15 source tasks, d = 32).
"""

from __future__ import annotations

import torch
from torch import Tensor

from deltaspace.subspace.closed_form import _BLOCK
from deltaspace.subspace.projections import UpProjection

# Decoded columns per pass: 8 columns of full fine-tuning's 22.7M are 0.7 GB of float32.
_COLUMNS = 8


def is_frozen(up: UpProjection) -> bool:
    """Whether the joint fit leaves ``up`` unchanged (no trainable parameter): its Gram statistics hold."""
    return not any(p.requires_grad for p in up.parameters())


def _cross64(a: Tensor, b: Tensor) -> Tensor:
    """``a bᵀ`` (rows of a × rows of b) accumulated in float64 over column blocks of the shared D."""
    out = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64)
    for start in range(0, a.shape[1], _BLOCK):
        out += a[:, start : start + _BLOCK].double() @ b[:, start : start + _BLOCK].double().t()
    return out


class FrozenReconstruction:
    """``PᵀP``, ``PᵀΔ_t`` and ``|Δ_t|²`` of one frozen linear up-projection and its source deltas.

    ``error(z)`` equals :func:`~deltaspace.subspace.projections.relative_reconstruction_error` of
    ``(Δ, P z)`` (to float rounding; tested) and is differentiable in ``z``.
    """

    def __init__(self, up: UpProjection, deltas: dict[str, Tensor]) -> None:
        if not is_frozen(up):
            raise ValueError("Gram statistics need an up-projection without trainable parameters")
        self.tasks = list(deltas)
        targets = torch.stack([deltas[t].detach() for t in self.tasks])  # (T, D), views of the store
        d = up.dim
        eye = torch.eye(d, device=up.out_device)
        with torch.no_grad():
            # P's columns relative to θ0 (delta(0) = 0 for a linear decoder), a few at a time
            blocks = [(s, min(s + _COLUMNS, d)) for s in range(0, d, _COLUMNS)]
            gram = torch.zeros(d, d, dtype=torch.float64)
            cross = torch.zeros(len(self.tasks), d, dtype=torch.float64)
            for i, (a0, a1) in enumerate(blocks):
                cols_a = up.delta(eye[a0:a1]).float().cpu()
                cross[:, a0:a1] = _cross64(targets.cpu(), cols_a)
                gram[a0:a1, a0:a1] = _cross64(cols_a, cols_a)
                for b0, b1 in blocks[i + 1 :]:
                    block = _cross64(cols_a, up.delta(eye[b0:b1]).float().cpu())
                    gram[a0:a1, b0:b1] = block
                    gram[b0:b1, a0:a1] = block.t()
                del cols_a
            norms = _cross64(targets.cpu(), targets.cpu()).diagonal().clone()
        self.gram = gram
        self.cross = cross
        self.norms = norms.clamp_min(torch.finfo(torch.float64).tiny)

    def error(self, z: Tensor, tasks: list[str] | None = None) -> Tensor:
        """Relative errors (float32, one per task) of codes ``z`` (T', d) for ``tasks`` (default: all)."""
        index = [self.tasks.index(t) for t in (tasks or self.tasks)]
        zz = z.double().cpu()
        cross, norms = self.cross[index], self.norms[index]
        squared = norms - 2 * (zz * cross).sum(-1) + ((zz @ self.gram) * zz).sum(-1)
        # rounding can take an exact reconstruction a hair below zero
        return (squared.clamp_min(0.0) / norms).float().to(z.device)
