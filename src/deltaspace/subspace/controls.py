"""Control subspaces: what a d-dimensional subspace reaches without stage 1's learning.

A learned subspace earns its name only if stage 2 does better in it than in these, run through the same
optimiser, steps and d:

- :func:`random_subspace`: d random directions per DET, scaled like its source solutions (the paper's
  decoder at initialisation: dense Gaussian, or Fastfood for DETs too large for a dense matrix).
- :func:`span_subspace`: an orthonormal basis of each DET's source solutions (scaled to their rms norm)
  filled up to d with random directions: what linear algebra alone gets from the source tasks.

Neither has source codes: stage 2 starts at (or near) z = 0, θ0, as for the learned subspace.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from deltaspace.subspace.bundle import SubspaceBundle
from deltaspace.subspace.closed_form import rms_norm, span_basis
from deltaspace.subspace.member import SubspaceMember
from deltaspace.subspace.projections import BasisUp, UpProjection, make_up, resolve_kinds
from deltaspace.subspace.store import SolutionStore

CONTROLS = ("random", "span")


def _stacked(store: SolutionStore, member: str, tasks: Sequence[str]) -> torch.Tensor:
    missing = [t for t in tasks if not store.has(member, t)]
    if missing:
        raise ValueError(f"the store has no solution of {member!r} on {missing}; a control needs them")
    return torch.stack([store.delta(member, t) for t in tasks])


def _random_up(
    kind: str, theta0: torch.Tensor | int, size: int, dim: int, ref: float, seed: int
) -> UpProjection:
    return make_up(kind, theta0, dim, scale=ref / size**0.5, seed=seed)


def control_subspace(
    kind: str,
    members: Sequence[SubspaceMember],
    store: SolutionStore,
    source_tasks: Sequence[str],
    dim: int,
    *,
    seed: int = 0,
    max_dense_elements: int = 1 << 27,
) -> SubspaceBundle:
    """The control named ``kind``: ``random`` (d random directions per DET, each of about the norm of
    its source solutions) or ``span`` (an orthonormal basis of its source solutions, scaled to their rms
    norm, plus random directions up to d)."""
    if kind not in CONTROLS:
        raise ValueError(f"unknown control {kind!r}; use one of {', '.join(CONTROLS)}")
    ups = {}
    for i, member in enumerate(members):
        size = member.theta0.numel()
        deltas = _stacked(store, member.name, source_tasks)
        ref = rms_norm(deltas)
        up_kind, _ = resolve_kinds("auto", "auto", size, dim, max_dense_elements)
        member_seed = seed * 1000 + 2 * i + 7919
        if kind == "random":
            ups[member.name] = _random_up(up_kind, member.theta0, size, dim, ref, member_seed)
            continue
        basis = span_basis(deltas, dim)
        extra = None
        if dim > basis.shape[1]:
            extra = _random_up(up_kind, size, size, dim - basis.shape[1], ref, member_seed)
        ups[member.name] = BasisUp(
            member.theta0, dim, scale=ref / size**0.5, basis=basis, extra=extra, train_basis=False
        )
    return SubspaceBundle(ups, metadata={"stage": "control", "control": kind})
