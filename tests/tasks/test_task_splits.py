import numpy as np
import pytest

from deltaspace.tasks.splits import allocate, split_sizes, stratified_split


def _labels(counts):
    return np.concatenate([np.full(n, k) for k, n in enumerate(counts)])


def test_sizes_follow_the_caps_and_fractions():
    small = split_sizes(693, max_train=2000, max_validation=500, max_test=1000)
    assert (small.test, small.validation, small.train) == (207, 103, 383)
    large = split_sizes(24794, max_train=2000, max_validation=500, max_test=1000)
    assert (large.test, large.validation, large.train) == (1000, 500, 2000)
    with pytest.raises(ValueError):
        split_sizes(10, max_train=-1, max_validation=1, max_test=1)


def test_allocate_is_proportional_and_exact():
    take = allocate(np.array([600, 300, 100]), 100)
    assert take.tolist() == [60, 30, 10]
    take = allocate(np.array([5, 3, 1]), 4, capacity=np.array([4, 2, 0]))
    assert take.sum() == 4 and take[2] == 0 and (take <= [4, 2, 0]).all()


def test_same_seed_same_split_and_different_seed_different_split():
    labels = _labels([300, 200, 50])
    a = stratified_split(labels, seed=3, max_train=200, max_validation=50, max_test=100)
    b = stratified_split(labels, seed=3, max_train=200, max_validation=50, max_test=100)
    c = stratified_split(labels, seed=4, max_train=200, max_validation=50, max_test=100)
    for split in ("train", "validation", "test"):
        np.testing.assert_array_equal(a[split], b[split])
    assert not np.array_equal(np.sort(a["test"]), np.sort(c["test"]))


def test_splits_are_disjoint_stratified_and_sized():
    counts = [700, 250, 50]
    labels = _labels(counts)
    splits = stratified_split(labels, seed=0, max_train=400, max_validation=100, max_test=200)
    sets = {k: set(v.tolist()) for k, v in splits.items()}
    assert not sets["train"] & sets["test"] and not sets["train"] & sets["validation"]
    assert not sets["validation"] & sets["test"]
    assert {k: len(v) for k, v in splits.items()} == {"train": 400, "validation": 100, "test": 200}
    for split, size in (("train", 400), ("validation", 100), ("test", 200)):
        got = np.bincount(labels[splits[split]], minlength=3)
        expected = np.array(counts) / sum(counts) * size
        assert np.all(np.abs(got - expected) <= 1), (split, got, expected)


def test_every_class_keeps_a_training_example():
    labels = _labels([60, 2, 1])
    splits = stratified_split(labels, seed=0, max_train=100, max_validation=100, max_test=100)
    assert set(labels[splits["train"]].tolist()) == {0, 1, 2}
    assert len(np.concatenate(list(splits.values()))) == len(labels)
