import numpy as np
import pytest

from deltaspace.subspace.gain import GainCell, bootstrap_interval, pooled_gain


def _cell(task, member, sub, init, orig):
    return GainCell(task, member, np.array(sub), np.array(init), np.array(orig))


def test_pooled_gain_is_the_sum_of_gains_over_the_sum_of_gains():
    # task a: θ0 0.25, original 0.75, subspace 0.5 -> gain 0.25 of 0.5
    # task b: θ0 0.5, original 0.75, subspace 0.75 -> gain 0.25 of 0.25
    a = _cell("a", "lora", [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0])
    b = _cell("b", "lora", [1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 0, 1])
    assert pooled_gain([a, b]) == pytest.approx(100 * (0.25 + 0.25) / (0.5 + 0.25))
    # per-task average would be (50 + 100) / 2 = 75: pooling weighs the tasks by how much training gained
    assert pooled_gain([a, b]) != pytest.approx(75.0)
    assert pooled_gain([_cell("c", "x", [1, 0], [1, 0], [1, 0])]) is None  # no gain to recover
    assert pooled_gain([]) is None


def test_bootstrap_interval_brackets_the_estimate_and_narrows_with_more_examples():
    rng = np.random.default_rng(0)

    def cells(n):
        init = (rng.random(n) < 0.4).astype(float)
        orig = np.maximum(init, rng.random(n) < 0.5)  # original fixes some of θ0's errors
        sub = np.where(rng.random(n) < 0.6, orig, init)  # the subspace keeps about 60 % of the fixes
        return [GainCell("t", "m", sub, init, orig)]

    small, large = cells(100), cells(4000)
    lo_s, hi_s = bootstrap_interval(small, seed=1)
    lo_l, hi_l = bootstrap_interval(large, seed=1)
    assert lo_s <= pooled_gain(small) <= hi_s
    assert lo_l <= pooled_gain(large) <= hi_l
    assert 45 < pooled_gain(large) < 75
    assert hi_l - lo_l < (hi_s - lo_s) / 3
    assert bootstrap_interval(small, seed=1) == (lo_s, hi_s)  # deterministic for a seed


def test_cells_must_be_paired():
    with pytest.raises(ValueError, match="same non-zero number"):
        GainCell("t", "m", np.ones(3), np.ones(2), np.ones(3))
    a = _cell("t", "x", [1, 0], [0, 0], [1, 1])
    b = _cell("t", "y", [1, 0, 1], [0, 0, 0], [1, 1, 1])
    with pytest.raises(ValueError, match="same examples"):
        bootstrap_interval([a, b])


def test_bootstrap_difference_is_paired_on_the_shared_examples():
    from deltaspace.subspace.gain import bootstrap_difference

    rng = np.random.default_rng(0)
    n = 600
    init = (rng.random(n) < 0.4).astype(float)
    orig = np.maximum(init, rng.random(n) < 0.5)
    weak = np.where(rng.random(n) < 0.3, orig, init)
    strong = np.maximum(weak, np.where(rng.random(n) < 0.2, orig, init))  # keeps weak's fixes, adds a few
    first, second = [GainCell("t", "m", weak, init, orig)], [GainCell("t", "m", strong, init, orig)]

    assert bootstrap_difference(first, first) == (0.0, 0.0)  # the same cells differ by nothing at every draw
    lo, hi = bootstrap_difference(first, second, seed=3)
    delta = pooled_gain(second) - pooled_gain(first)
    assert 0 < lo <= delta <= hi
    # pairing removes the noise the two share (the same examples): far narrower than an unpaired
    # difference's interval, whose width would be about the two widths added in quadrature
    lo_a, hi_a = bootstrap_interval(first, seed=3)
    lo_b, hi_b = bootstrap_interval(second, seed=3)
    assert hi - lo < 0.6 * np.hypot(hi_a - lo_a, hi_b - lo_b)
    assert bootstrap_difference(first, second, seed=3) == (lo, hi)


def test_bootstrap_difference_refuses_unpaired_cells():
    from deltaspace.subspace.gain import bootstrap_difference

    a = _cell("t", "x", [1, 0], [0, 0], [1, 1])
    with pytest.raises(ValueError, match="same tasks"):
        bootstrap_difference([a], [_cell("u", "x", [1, 0], [0, 0], [1, 1])])
    with pytest.raises(ValueError, match="same examples"):
        bootstrap_difference([a], [_cell("t", "x", [1, 0, 1], [0, 0, 0], [1, 1, 1])])
