"""The one best-checkpoint tracker (training loop, subspace fit, z-optimisation)."""

from __future__ import annotations

import math

from deltaspace.best import BestCheckpoint


def offer_all(best: BestCheckpoint, values: list[float]) -> list[bool]:
    return [best.offer(step, value, lambda step=step: f"state@{step}") for step, value in enumerate(values)]


def test_higher_is_better_keeps_the_first_of_equal_values():
    best = BestCheckpoint()
    assert offer_all(best, [0.5, 0.7, 0.7, 0.6]) == [True, True, False, False]
    assert (best.step, best.value, best.state) == (1, 0.7, "state@1")
    assert best.evals_without_improvement == 2


def test_lower_is_better_for_a_loss():
    best = BestCheckpoint(higher_is_better=False)
    assert offer_all(best, [0.9, 1.2, 0.4, 0.4]) == [True, False, True, False]
    assert (best.step, best.value, best.state) == (2, 0.4, "state@2")


def test_the_first_candidate_is_kept_even_when_it_is_nan():
    best = BestCheckpoint()
    assert best.empty and best.value == -math.inf
    assert best.offer(3, math.nan, lambda: "first", {"accuracy": math.nan}) is False
    assert (best.step, best.state, best.evals_without_improvement) == (3, "first", 0)
    assert math.isnan(best.metrics["accuracy"])


def test_a_state_is_captured_only_when_it_is_kept():
    captured = []
    best = BestCheckpoint()

    def capture(step: int):
        return lambda: captured.append(step) or step

    for step, value in enumerate([1.0, 0.5, 2.0, 2.0]):
        best.offer(step, value, capture(step))
    assert captured == [0, 2]


def test_keep_replaces_unconditionally_and_resets_the_patience_count():
    best = BestCheckpoint()
    offer_all(best, [0.9, 0.1, 0.1])
    assert best.evals_without_improvement == 2
    best.keep(7, 0.2, "last", {"accuracy": 0.2})
    assert (best.step, best.value, best.state, best.metrics) == (7, 0.2, "last", {"accuracy": 0.2})
    assert best.evals_without_improvement == 0
