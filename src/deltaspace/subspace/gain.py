"""Gain recovered over θ0, pooled over tasks, with a paired bootstrap interval.

Relative performance (subspace / original × 100) flatters a strong θ0: our label-prototype head scores
0.3–0.7 before any training, so a subspace that changes nothing already scores 60–85 %. The honest
figure is the share of training's gain over θ0 that the subspace recovers. Per-task ratios are unstable
where training gained little (a 0.03 denominator swings by 10–15 points per example), so the gains are
pooled: ``100 · Σ_cells (subspace − θ0) / Σ_cells (original − θ0)`` over (task, DET) cells.

The interval resamples each task's test examples with replacement (the same draw for every DET and for
the subspace, θ0 and original predictions of that task, which are paired on those examples) and takes
percentiles of the pooled ratio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class GainCell:
    """One (task, DET) pair: per-example correctness (0/1) on the same test examples."""

    task: str
    member: str
    subspace: np.ndarray
    initial: np.ndarray
    original: np.ndarray

    def __post_init__(self) -> None:
        self.subspace, self.initial, self.original = (
            np.asarray(x, dtype=float) for x in (self.subspace, self.initial, self.original)
        )
        sizes = {len(self.subspace), len(self.initial), len(self.original)}
        if len(sizes) != 1 or 0 in sizes:
            raise ValueError(
                f"cell ({self.task}, {self.member}): subspace, initial and original need the same non-zero "
                f"number of examples, got {sorted(sizes)}"
            )


def pooled_gain(cells: Sequence[GainCell]) -> float | None:
    """``100 · Σ (subspace − θ0) / Σ (original − θ0)`` over cells; ``None`` when training gained nothing."""
    if not cells:
        return None
    num = sum(c.subspace.mean() - c.initial.mean() for c in cells)
    den = sum(c.original.mean() - c.initial.mean() for c in cells)
    return float(100.0 * num / den) if den > 0 else None


def _by_task(cells: Sequence[GainCell]) -> dict[str, tuple[list[GainCell], int]]:
    """Cells grouped by task, with the task's example count (every DET scored on the same examples)."""
    groups: dict[str, list[GainCell]] = {}
    for cell in cells:
        groups.setdefault(cell.task, []).append(cell)
    out = {}
    for task, group in groups.items():
        sizes = {len(c.subspace) for c in group}
        if len(sizes) != 1:
            raise ValueError(f"task {task}: every DET must be scored on the same examples, got sizes {sizes}")
        out[task] = (group, sizes.pop())
    return out


def _resampled_gains(
    groups: dict[str, tuple[list[GainCell], int]], indices: dict[str, np.ndarray]
) -> np.ndarray:
    """Pooled gain at each resample of the examples (``indices``: task -> resamples × examples; NaN where
    training gained nothing)."""
    num, den = 0.0, 0.0
    for task, (group, _) in groups.items():
        index = indices[task]
        for cell in group:
            base = cell.initial[index].mean(1)
            num = num + cell.subspace[index].mean(1) - base
            den = den + cell.original[index].mean(1) - base
    return np.where(den > 0, 100.0 * num / np.where(den > 0, den, 1.0), np.nan)


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float] | None:
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    tail = 100.0 * (1.0 - level) / 2.0
    return float(np.percentile(values, tail)), float(np.percentile(values, 100.0 - tail))


def bootstrap_interval(
    cells: Sequence[GainCell], *, resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile interval of :func:`pooled_gain`, resampling each task's examples (paired across cells)."""
    if not cells or resamples < 1:
        return None
    rng = np.random.default_rng(seed)
    groups = _by_task(cells)
    indices = {task: rng.integers(0, n, size=(resamples, n)) for task, (_, n) in groups.items()}
    return _percentiles(_resampled_gains(groups, indices), level)


def bootstrap_difference(
    first: Sequence[GainCell],
    second: Sequence[GainCell],
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile interval of ``pooled_gain(second) − pooled_gain(first)``, paired: both sets of cells are
    scored on the same test examples of the same tasks, so one resample of a task's examples serves both
    (two studies sharing their held-out tasks' test examples, e.g. two stage-1 variants)."""
    if not first or not second or resamples < 1:
        return None
    groups = [_by_task(first), _by_task(second)]
    if set(groups[0]) != set(groups[1]):
        raise ValueError(f"paired cells need the same tasks, got {sorted(groups[0])} and {sorted(groups[1])}")
    for task, (_, n) in groups[0].items():
        if groups[1][task][1] != n:
            raise ValueError(
                f"task {task}: paired cells need the same examples, got {n} and {groups[1][task][1]}"
            )
    rng = np.random.default_rng(seed)
    indices = {task: rng.integers(0, n, size=(resamples, n)) for task, (_, n) in groups[0].items()}
    a, b = (_resampled_gains(g, indices) for g in groups)
    return _percentiles(b - a, level)
