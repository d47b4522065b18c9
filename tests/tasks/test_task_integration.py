"""The ten real suite tasks from the fetched packages (skipped when they are not in the cache)."""

import numpy as np
import pytest

from deltaspace.assets.cache import cache_dir, is_complete
from deltaspace.assets.manifest import get_package
from deltaspace.tasks import SUITE, SUITE_TASKS, load_task

_PACKAGES = {SUITE[name].package for name in SUITE_TASKS}
_MISSING = [p for p in sorted(_PACKAGES) if not is_complete(cache_dir() / "packages" / get_package(p).key)]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        bool(_MISSING), reason=f"task packages not in the cache ({_MISSING}); run `deltaspace fetch`"
    ),
]

# Examples after cleaning and de-duplication of the pinned packages.
EXPECTED = {
    "rt_sentiment": (12752, 2),
    "multiemo_hotels": (24794, 4),
    "bbc_topic": (2127, 5),
    "question_type": (6500, 13),
    "privacyqa": (10923, 2),
    "epistemic_nli": (2000, 2),
    "multiemo_medicine": (22610, 4),
    "rt_subjectivity": (2166, 2),
    "intent": (693, 7),
    "fever_claims": (6525, 2),
}


@pytest.mark.parametrize("name", SUITE_TASKS)
def test_suite_task_sizes_classes_and_disjoint_splits(name):
    task = load_task(name)
    n, k = EXPECTED[name]
    assert task.metadata["n_examples"] == n and task.num_labels == k
    assert len(task.test) == min(1000, int(0.3 * n))
    assert len(task.validation) == min(500, int(0.15 * n))
    assert len(task.train) == min(2000, n - len(task.test) - len(task.validation))
    assert set(task.train["label"]) == set(range(k))  # every class is trained on
    keys = {}
    for split in ("train", "validation", "test"):
        dataset = task.split(split)
        texts = list(dataset["text"])
        pairs = list(dataset["text_pair"]) if task.is_pair else [""] * len(texts)
        keys[split] = set(zip(texts, pairs, strict=True))
        assert len(keys[split]) == len(dataset)
    assert not keys["train"] & keys["test"] and not keys["validation"] & keys["test"]
    assert not keys["train"] & keys["validation"]
    # Stratified: the test split's class shares follow the whole task's.
    counts = np.bincount(task.test["label"], minlength=k) / len(task.test)
    train_counts = np.bincount(task.train["label"], minlength=k) / len(task.train)
    assert np.abs(counts - train_counts).max() < 0.02


def test_pair_tasks_are_pairs():
    assert load_task("privacyqa").train[0].keys() == {"text", "text_pair", "label"}
    nli = load_task("epistemic_nli")
    assert nli.is_pair and all(" Hypothesis:" not in t for t in nli.train["text"])
    assert nli.label_names == ["entailment", "non-entailment"]


def test_readable_label_names():
    assert load_task("multiemo_hotels").label_names == ["negative", "positive", "neutral", "ambivalent"]
    assert "search creative work" in load_task("intent").label_names
    assert load_task("bbc_topic").label_names == ["business", "entertainment", "politics", "sport", "tech"]
