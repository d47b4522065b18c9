import numpy as np
import pytest

from deltaspace.tasks.splits import allocate, grouped_split, split_sizes, stratified_split


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


def _grouped(sizes):
    """Labels and group ids for groups of the given sizes; a group's label is its index % 2."""
    groups = np.concatenate([np.full(n, g) for g, n in enumerate(sizes)])
    return groups % 2, groups


def _check_grouped(splits, groups):
    everything = np.concatenate(list(splits.values()))
    assert len(np.unique(everything)) == len(everything)  # every index at most once
    owners = {name: set(groups[idx].tolist()) for name, idx in splits.items()}
    assert not owners["train"] & owners["test"] and not owners["train"] & owners["validation"]
    assert not owners["validation"] & owners["test"]


def test_grouped_split_is_seeded():
    labels, groups = _grouped([4, 7, 3, 9, 5] * 20)
    caps = dict(max_train=60, max_validation=30, max_test=50)
    a = grouped_split(labels, groups, seed=3, **caps)
    b = grouped_split(labels, groups, seed=3, **caps)
    c = grouped_split(labels, groups, seed=4, **caps)
    for split in ("train", "validation", "test"):
        np.testing.assert_array_equal(a[split], b[split])
    assert set(groups[a["test"]].tolist()) != set(groups[c["test"]].tolist())


def test_grouped_split_has_exact_sizes_and_no_shared_group():
    labels, groups = _grouped([4, 7, 3, 9, 5] * 40)  # 1120 examples in 200 groups
    for seed in range(5):
        splits = grouped_split(labels, groups, seed=seed, max_train=300, max_validation=100, max_test=200)
        assert {k: len(v) for k, v in splits.items()} == {"train": 300, "validation": 100, "test": 200}
        _check_grouped(splits, groups)
        assert set(labels[splits["train"]].tolist()) == {0, 1}
    sizes = split_sizes(1120, max_train=300, max_validation=100, max_test=200)
    assert (sizes.train, sizes.validation, sizes.test) == (300, 100, 200)
    labels, groups = _grouped([1] * 50)  # one example per group: exactly split_sizes, nothing dropped
    splits = grouped_split(labels, groups, seed=0, max_train=2000, max_validation=500, max_test=1000)
    assert {k: len(v) for k, v in splits.items()} == {"train": 28, "validation": 7, "test": 15}


def test_grouped_split_cuts_the_group_crossing_a_quota_and_drops_its_rest():
    labels, groups = _grouped([7] * 10)  # 70 examples, 5 groups per class: test 21, validation 10
    splits = grouped_split(labels, groups, seed=0, max_train=2000, max_validation=500, max_test=1000)
    assert len(splits["test"]) == 21 and len(splits["validation"]) == 10
    _check_grouped(splits, groups)
    per_group = {name: np.bincount(groups[idx], minlength=10) for name, idx in splits.items()}
    used = sum(per_group.values())
    for name in ("test", "validation"):
        cut = [g for g in np.flatnonzero(per_group[name]) if per_group[name][g] < 7]
        assert len(cut) <= 2  # at most one cut group per class
        assert all(used[g] == per_group[name][g] for g in cut)  # its rest is in no split
    assert set(per_group["train"][per_group["train"] > 0].tolist()) == {7}  # train: whole groups left
    assert len(splits["train"]) < split_sizes(70, max_train=2000, max_validation=500, max_test=1000).train


def test_grouped_split_is_stratified_by_the_groups_label():
    labels, groups = _grouped([5, 6, 4, 8, 7, 5] * 30)  # single-label groups, classes 0 / 1 alternate
    labels = np.where(groups % 3 == 0, 0, 1)  # one third of the groups in class 0
    totals = np.bincount(labels)
    for seed in range(4):
        splits = grouped_split(labels, groups, seed=seed, max_train=300, max_validation=100, max_test=200)
        for name, size in (("test", 200), ("validation", 100)):
            counts = np.bincount(labels[splits[name]], minlength=2)
            assert counts.sum() == size
            assert np.abs(counts / size - totals / totals.sum()).max() < 0.01


def test_grouped_split_with_fewer_examples_or_groups_than_quotas():
    labels, groups = _grouped([3, 2])  # 5 examples: test 1, validation 0, train 4 (as split_sizes)
    splits = grouped_split(labels, groups, seed=1)
    assert len(splits["test"]) == 1 and len(splits["validation"]) == 0
    assert splits["validation"].dtype.kind == "i"
    _check_grouped(splits, groups)
    assert len(splits["train"]) <= 4
    labels, groups = np.array([0, 1] * 10), np.zeros(20, dtype=int)  # a single document
    splits = grouped_split(labels, groups, seed=0)
    assert len(splits["test"]) == 6 and len(splits["validation"]) == len(splits["train"]) == 0
    with pytest.raises(ValueError, match="3 labels but 2 groups"):
        grouped_split(np.array([0, 1, 0]), np.array(["a", "b"]), seed=0)
