"""Seeded, stratified train / validation / test splits with size caps.

Written here rather than with ``sklearn.model_selection.train_test_split`` because we need three
disjoint splits with exact sizes, classes with a single example (sklearn refuses them), and the
guarantee that every class keeps at least one training example.

Sizes for N examples: test = min(max_test, 30% of N); validation = min(max_validation, 15% of N),
both drawn first; train = min(max_train, what remains). Each split draws from every class in
proportion to the class sizes (largest-remainder rounding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TEST_FRACTION = 0.3
VALIDATION_FRACTION = 0.15


@dataclass(frozen=True)
class SplitSizes:
    train: int
    validation: int
    test: int


def split_sizes(n: int, *, max_train: int, max_validation: int, max_test: int) -> SplitSizes:
    if min(max_train, max_validation, max_test) < 0:
        raise ValueError("max_train, max_validation and max_test must be >= 0")
    test = min(max_test, int(TEST_FRACTION * n))
    validation = min(max_validation, int(VALIDATION_FRACTION * n))
    train = min(max_train, n - test - validation)
    return SplitSizes(train, validation, test)


def allocate(counts: np.ndarray, n: int, capacity: np.ndarray | None = None) -> np.ndarray:
    """Split ``n`` draws over classes in proportion to ``counts``, at most ``capacity`` per class."""
    counts = np.asarray(counts, dtype=np.int64)
    capacity = counts.copy() if capacity is None else np.minimum(np.asarray(capacity, dtype=np.int64), counts)
    n = min(int(n), int(capacity.sum()))
    if n <= 0 or counts.sum() == 0:
        return np.zeros_like(counts)
    quota = counts * (n / counts.sum())
    take = np.minimum(np.floor(quota).astype(np.int64), capacity)
    remainder = quota - take
    while take.sum() < n:
        # Hand the remaining draws to the classes with the largest unmet share (ties: lower index).
        open_classes = np.flatnonzero(take < capacity)
        best = open_classes[np.argmax(remainder[open_classes])]
        take[best] += 1
        remainder[best] -= 1.0
    return take


def stratified_split(
    labels: np.ndarray,
    *,
    seed: int,
    max_train: int = 2000,
    max_validation: int = 500,
    max_test: int = 1000,
) -> dict[str, np.ndarray]:
    """Indices of disjoint ``train`` / ``validation`` / ``test`` splits, each in a seeded random order.

    The same ``labels`` and ``seed`` always give the same splits.
    """
    labels = np.asarray(labels)
    sizes = split_sizes(len(labels), max_train=max_train, max_validation=max_validation, max_test=max_test)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    remaining = np.array([len(p) for p in pools], dtype=np.int64)
    used = np.zeros(len(classes), dtype=np.int64)
    chosen: dict[str, list[np.ndarray]] = {}
    for split, size in (("test", sizes.test), ("validation", sizes.validation), ("train", sizes.train)):
        # Held-out splits leave at least one example of each class for training.
        capacity = remaining if split == "train" else np.maximum(remaining - 1, 0)
        take = allocate(remaining, size, capacity)
        chosen[split] = [pools[k][used[k] : used[k] + take[k]] for k in range(len(classes))]
        used += take
        remaining -= take
    return {split: rng.permutation(np.concatenate(parts)) for split, parts in chosen.items()}


def grouped_split(
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    seed: int,
    max_train: int = 2000,
    max_validation: int = 500,
    max_test: int = 1000,
) -> dict[str, np.ndarray]:
    """Like :func:`stratified_split`, but every group (a source document) lies in one split only.

    Passages of one speech share its speaker, topic and phrasing: split by passage, a test passage's
    neighbours would sit in training. Stratified by group: each group counts for its most frequent label
    (a speech has one party), each split's examples are allocated over those labels in proportion, and
    each label's quota is filled with whole groups drawn in a seeded order. The group that crosses a
    quota is cut and its other examples are left out of every split, so test and validation have the
    sizes of :func:`split_sizes` and train gets what remains, up to ``max_train``.
    """
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    if len(groups) != len(labels):
        raise ValueError(f"{len(labels)} labels but {len(groups)} groups")
    sizes = split_sizes(len(labels), max_train=max_train, max_validation=max_validation, max_test=max_test)
    rng = np.random.default_rng(seed)
    _, inverse = np.unique(groups, return_inverse=True)
    members = [rng.permutation(np.flatnonzero(inverse == g)) for g in range(inverse.max() + 1)]
    classes = np.unique(labels)
    group_class = np.array([np.searchsorted(classes, _most_frequent(labels[m])) for m in members])
    pools = [list(rng.permutation(np.flatnonzero(group_class == c))) for c in range(len(classes))]
    remaining = np.array([sum(len(members[g]) for g in pool) for pool in pools], dtype=np.int64)
    chosen: dict[str, list[np.ndarray]] = {"test": [], "validation": [], "train": []}
    for split, size in (("test", sizes.test), ("validation", sizes.validation), ("train", sizes.train)):
        for c, quota in enumerate(allocate(remaining, size)):
            filled = 0
            while filled < quota and pools[c]:
                group = members[pools[c].pop(0)]
                take = group[: quota - filled]
                chosen[split].append(take)
                filled += len(take)
                remaining[c] -= len(group)
    return {
        split: rng.permutation(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
        for split, parts in chosen.items()
    }


def _most_frequent(values: np.ndarray):
    found, counts = np.unique(values, return_counts=True)
    return found[np.argmax(counts)]
