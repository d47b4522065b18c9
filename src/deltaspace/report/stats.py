"""Bootstrap intervals for averages over tasks and seeds of per-example scores, paired across methods.

A comparison's estimate is the mean over tasks of each task's mean over seeds and test examples of a
per-example value: correctness (0/1) for a method's average accuracy, or the difference of two methods'
correctness on the same example and seed for a paired gain. The interval resamples, independently per
task and replicate, the task's test examples (with replacement, the same draw for every seed, so the
pairing on examples is kept) and its seeds (with replacement), and takes percentiles of the replicated
estimate: it covers both the test-set sampling noise and the seed-to-seed noise of training.

(``deltaspace.subspace.gain.bootstrap_interval`` resamples examples for a pooled ratio of gains; this is a
different statistic, a mean of differences with seeds resampled too, so it is not reused here.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np


@dataclasses.dataclass(frozen=True)
class Interval:
    """An estimate with its bootstrap interval (same units as the values, e.g. a share in [0, 1])."""

    estimate: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def format(self, scale: float = 100.0, digits: int = 1, signed: bool = False) -> str:
        sign = "+" if signed else ""
        return (
            f"{self.estimate * scale:{sign}.{digits}f} "
            f"[{self.low * scale:{sign}.{digits}f}, {self.high * scale:{sign}.{digits}f}]"
        )


def bootstrap_average(
    cells: Mapping[str, np.ndarray], *, resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> Interval:
    """Mean over tasks of the mean of ``cells[task]`` (shape (seeds, examples)), with its interval."""
    if not cells:
        raise ValueError("no tasks to average over")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"need resamples >= 1 and 0 < level < 1, got {resamples} and {level}")
    rng = np.random.default_rng(seed)
    replicates = np.zeros(resamples)
    estimate = 0.0
    for task in sorted(cells):
        values = np.asarray(cells[task], dtype=float)
        if values.ndim != 2 or 0 in values.shape:
            raise ValueError(
                f"task {task}: values must be (seeds, examples) and non-empty, got {values.shape}"
            )
        seeds, n = values.shape
        estimate += values.mean()
        # Each replicate's example draw (the same for every seed), then its seed draw.
        index = rng.integers(0, n, size=(resamples, n))
        per_seed = values[:, index].mean(axis=2).T  # (resamples, seeds)
        drawn = rng.integers(0, seeds, size=(resamples, seeds))
        replicates += np.take_along_axis(per_seed, drawn, axis=1).mean(axis=1)
    tasks = len(cells)
    replicates /= tasks
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(replicates, [tail, 100.0 - tail])
    return Interval(float(estimate / tasks), float(low), float(high))


def paired_differences(
    a: Mapping[str, Mapping[int, np.ndarray]], b: Mapping[str, Mapping[int, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Per task, the (seeds, examples) differences ``a − b`` over the seeds both have; a ``b`` with one
    seed only (a deterministic baseline such as the probe) is paired with every seed of ``a``. Tasks
    without a common seed are left out."""
    differences = {}
    for task in sorted(set(a) & set(b)):
        if len(b[task]) == 1:
            (only,) = b[task].values()
            pairs = [(a[task][s], only) for s in sorted(a[task])]
        else:
            pairs = [(a[task][s], b[task][s]) for s in sorted(set(a[task]) & set(b[task]))]
        if not pairs:
            continue
        for left, right in pairs:
            if len(left) != len(right):
                raise ValueError(
                    f"task {task}: the two methods were scored on different numbers of examples "
                    f"({len(left)} and {len(right)}); they must share the test examples"
                )
        differences[task] = np.stack([np.asarray(x, float) - np.asarray(y, float) for x, y in pairs])
    return differences


def paired_gain(
    a: Mapping[str, Mapping[int, np.ndarray]],
    b: Mapping[str, Mapping[int, np.ndarray]],
    *,
    resamples: int = 2000,
) -> tuple[Interval, dict[str, Interval]] | None:
    """The gain ``a − b`` averaged over tasks with its interval, and each task's own (for 'helps on k
    tasks'), paired as :func:`paired_differences`; None when no task has a seed both have."""
    differences = paired_differences(a, b)
    if not differences:
        return None
    pooled = bootstrap_average(differences, resamples=resamples)
    per_task = {t: bootstrap_average({t: d}, resamples=resamples, seed=1) for t, d in differences.items()}
    return pooled, per_task
