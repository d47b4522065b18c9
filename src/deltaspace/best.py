"""The best checkpoint seen so far: one tracker for the training loop, the subspace fit and z-optimisation.

A candidate replaces the kept one only when its value is strictly better (a tie keeps the earlier, so the
choice does not move between equal scores); the first candidate is always kept, even a NaN, so there is an
answer whatever the scores. It imports nothing of the package: every layer that selects a checkpoint uses it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

State = TypeVar("State")


@dataclass
class BestCheckpoint(Generic[State]):
    """The best ``state`` by ``value`` (higher is better unless ``higher_is_better=False``, as for a loss).

    ``metrics`` are what was measured with it (kept for reports), ``step`` where it was seen, and
    ``evals_without_improvement`` counts candidates since the last one kept (for early stopping).
    """

    higher_is_better: bool = True
    value: float | None = None  # None: the worst value, so that any first candidate improves
    step: int = 0
    state: State | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    evals_without_improvement: int = 0

    def __post_init__(self) -> None:
        if self.value is None:
            self.value = -math.inf if self.higher_is_better else math.inf

    @property
    def empty(self) -> bool:
        return self.state is None

    def improves(self, value: float) -> bool:
        return value > self.value if self.higher_is_better else value < self.value

    def offer(
        self, step: int, value: float, capture: Callable[[], State], metrics: dict[str, Any] | None = None
    ) -> bool:
        """Keep ``capture()`` if ``value`` improves on the best (or nothing is kept yet); ``capture`` runs
        only then, so a state is copied only when it is kept. Returns whether ``value`` improved."""
        improved = self.improves(value)
        if improved or self.empty:
            self.keep(step, value, capture(), metrics)
        else:
            self.evals_without_improvement += 1
        return improved

    def keep(self, step: int, value: float, state: State, metrics: dict[str, Any] | None = None) -> None:
        """Keep ``state`` unconditionally (a resume, or a run that returns its last state)."""
        self.step, self.value, self.state = step, value, state
        self.metrics = dict(metrics or {})
        self.evals_without_improvement = 0
