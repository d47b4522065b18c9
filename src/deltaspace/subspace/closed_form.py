"""The exact closed-form start of stage 1: shared task codes and per-DET decoders that reproduce every
source solution exactly.

The paper starts stage 1 from random encoders and decoders and relies on the reconstruction loss to pull
the decoders onto the solutions; on a CPU budget that leaves relative reconstruction errors above 100 %
(worse than predicting θ0). But with d >= T source tasks a linear decoder can reproduce them exactly, and
the optimum of the paper's interpolation objective is known: every DET gives a task the *same* code, so
any mixture of a task's DET codes decodes, through every DET, to that DET's own solution.

Construction, per DET m with source deltas Δ_m (T × D_m) and rms delta norm s_m:

1. normalised Gram matrices ``G_m = Δ_m Δ_mᵀ / s_m²`` and their mean ``G = mean_m G_m`` (T × T);
2. shared codes ``Z = V_k diag(√λ_k)`` from the top k = min(T, d) eigenpairs of G (rows: tasks), so the
   codes' inner products are the DETs' average geometry of the source solutions;
3. decoders ``B_m = Δ_mᵀ Z (ZᵀZ)⁻¹ = Δ_mᵀ V_k diag(1/√λ_k)``: then ``B_m Z_t = Δ_m^t`` exactly when
   k = T, and ``B_mᵀB_m / s_m² = diag(λ)^{-1/2} Vᵀ G_m V diag(λ)^{-1/2} ≈ I`` when the DETs agree on the
   geometry (well-conditioned columns of norm ≈ s_m, the scale of the solutions themselves).

The remaining d − k directions are random (see :class:`~deltaspace.subspace.projections.BasisUp`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class SharedCodes:
    """``codes`` (T, k): one code per source task, shared by every DET; ``eigenvalues`` (k,) of G."""

    tasks: list[str]
    codes: Tensor
    eigenvalues: Tensor

    @property
    def rank(self) -> int:
        return self.codes.shape[1]


# Columns per float64 block: full fine-tuning's T × 22.7M solutions would need 2.7 GB per float64 copy
# (15 source tasks), and a study's workers run side by side on one machine.
_BLOCK = 1 << 20


def _gram64(deltas: Tensor) -> Tensor:
    """``Δ Δᵀ`` accumulated in float64 over column blocks: no float64 copy of the whole (T, D) matrix."""
    gram = torch.zeros(deltas.shape[0], deltas.shape[0], dtype=torch.float64)
    for start in range(0, deltas.shape[1], _BLOCK):
        block = deltas[:, start : start + _BLOCK].double()
        gram += block @ block.t()
    return gram


def rms_norm(deltas: Tensor) -> float:
    """Root-mean-square of the rows' norms: the typical size of one DET's solutions."""
    return float(_gram64(deltas).diagonal().mean().sqrt())


def normalised_gram(deltas: Tensor) -> Tensor:
    """``Δ Δᵀ / s²`` in float64 (T × T): the geometry of one DET's source solutions, scale-free."""
    gram = _gram64(deltas)
    scale2 = float(gram.diagonal().mean())
    if scale2 == 0.0:
        raise ValueError("every source delta of a DET is zero; store trained solutions")
    return gram / scale2


def shared_codes(
    deltas: Mapping[str, Tensor], tasks: list[str], dim: int, *, rtol: float = 1e-6
) -> SharedCodes:
    """Shared task codes from the DETs' mean normalised Gram matrix (``deltas``: DET -> (T, D_m)).

    Eigenvalues below ``rtol`` × the largest are dropped (tasks whose solutions are linear combinations
    of others' in every DET add no direction), so k = min(T, d, rank).
    """
    if not deltas:
        raise ValueError("shared_codes needs the source deltas of at least one DET")
    grams = [normalised_gram(d) for d in deltas.values()]
    if any(g.shape != (len(tasks), len(tasks)) for g in grams):
        raise ValueError(f"every DET needs one delta per source task ({len(tasks)})")
    gram = torch.stack(grams).mean(0)
    values, vectors = torch.linalg.eigh(gram)  # ascending
    values, vectors = values.flip(0), vectors.flip(1)
    keep = int(min(dim, len(tasks), int((values > rtol * values[0]).sum())))
    values, vectors = values[:keep], vectors[:, :keep]
    return SharedCodes(list(tasks), (vectors * values.sqrt()).float(), values.float())


def closed_form_basis(deltas: Tensor, codes: SharedCodes) -> Tensor:
    """``B = Δᵀ Z (ZᵀZ)⁻¹`` (D, k): the least-squares decoder of ``deltas`` (T, D) from the shared codes."""
    z = codes.codes.double()
    solve = torch.linalg.solve(z.t() @ z, z.t())  # (k, T)
    return (solve.float() @ deltas.float()).t().contiguous()  # float32: D may be 22.7M (full fine-tuning)


def span_basis(deltas: Tensor, dim: int) -> Tensor:
    """An orthonormal basis (D, k) of the span of ``deltas`` (T, D) (thin QR), k = min(T, dim), scaled by
    the solutions' rms norm: the span control's directions."""
    # Q = Δᵀ L⁻ᵀ with Δ Δᵀ = L Lᵀ (Cholesky of the small Gram matrix): no float64 copy of a D × T matrix
    gram = normalised_gram(deltas)
    values, vectors = torch.linalg.eigh(gram)
    keep = values > 1e-9 * values.max()
    # an eigen-basis (ordered by variance) instead of Cholesky, so near-duplicate solutions are dropped
    values, vectors = values[keep].flip(0)[:dim], vectors[:, keep].flip(1)[:, :dim]
    # Q = (Δ / s)ᵀ V Λ^{-1/2} is orthonormal; Q · s = Δᵀ V Λ^{-1/2}: one (D, k) product, no scaled copy of Δ
    return deltas.float().t() @ (vectors / values.sqrt()).float()


def complement_directions(
    bases: Mapping[str, Tensor], vectors: Mapping[str, Tensor], names: list[str], dim: int
) -> dict[str, Tensor]:
    """Up to ``dim`` further directions per DET from ``vectors`` (DET -> (T, D_m), e.g. the source tasks'
    descent directions at θ0), taken outside each DET's ``bases`` (D_m, k) so the source solutions keep
    their exact codes: the vectors' residuals after least-squares projection on the basis, given shared
    codes like the solutions (:func:`shared_codes`) and decoded per DET (:func:`closed_form_basis`).
    Columns are scaled like the basis (rms norm of the residuals)."""
    if dim < 1:
        return {name: basis.new_zeros(basis.shape[0], 0) for name, basis in bases.items()}
    residuals = {}
    for name, basis in bases.items():
        x = vectors[name].float()
        coef = torch.linalg.lstsq(basis.t() @ basis, basis.t() @ x.t()).solution  # (k, T)
        residuals[name] = x - (basis @ coef).t()
    codes = shared_codes(residuals, names, dim)
    return {name: closed_form_basis(r, codes) for name, r in residuals.items()}
