"""The real suite tasks from the fetched packages (skipped when they are not in the cache).

Suite v2's 20 tasks (and the extra boolq) need the core packages (`deltaspace fetch`); suite v1's six BIG-bench tasks need the
optional ``bigbench`` package and are skipped on their own when it is absent.
"""

import numpy as np
import pytest

from deltaspace.assets.cache import cache_dir, is_complete
from deltaspace.assets.manifest import get_package
from deltaspace.tasks import SUITE, SUITE_TASKS, load_task
from deltaspace.tasks.registry import BIGBENCH_TASKS, EXTRA_TASKS
from deltaspace.tasks.suite import suite_examples


def _missing(names):
    packages = {SUITE[name].package for name in names}
    return [p for p in sorted(packages) if not is_complete(cache_dir() / "packages" / get_package(p).key)]


_MISSING = _missing(SUITE_TASKS + EXTRA_TASKS)
_MISSING_BIGBENCH = _missing(BIGBENCH_TASKS)

pytestmark = pytest.mark.integration
needs_suite = pytest.mark.skipif(
    bool(_MISSING), reason=f"task packages not in the cache ({_MISSING}); run `deltaspace fetch`"
)
needs_bigbench = pytest.mark.skipif(
    bool(_MISSING_BIGBENCH),
    reason="the optional bigbench package is not in the cache (`deltaspace fetch --with bigbench --packages-dir DIR`)",
)

# Examples after cleaning and de-duplication of the pinned packages: (n_examples, classes).
EXPECTED = {
    "rt_sentiment": (12752, 2),
    "bbc_topic": (2127, 5),
    "privacyqa": (10923, 2),
    "amazon_sentiment": (3696, 5),
    "tweet_sentiment": (4200, 5),
    "editorial_sentiment": (5110, 3),
    "movie_sentiment": (10603, 5),
    "trec_fine": (4348, 16),
    "trec_coarse": (5381, 6),
    "news_outlet": (3786, 9),
    "healthtweet_outlet": (60158, 16),
    "stereoset_relation": (12669, 3),
    "boolq": (12697, 2),
    "rt_subjectivity": (2166, 2),
    "medmcqa_subject": (8676, 12),
    "crows_bias_type": (1017, 9),
    "request_risk": (938, 5),
    "disaster_tweets": (7485, 2),
    "spam_email": (5916, 3),
    "convention_party": (1946, 2),
    "sotu_party": (17154, 2),
}
# Split by source document (whole groups per split) rather than stratified.
GROUPED = {"stereoset_relation", "boolq", "convention_party", "sotu_party"}
EXPECTED_BIGBENCH = {
    "multiemo_hotels": (24794, 4),
    "question_type": (6500, 13),
    "epistemic_nli": (2000, 2),
    "multiemo_medicine": (22610, 4),
    "intent": (693, 7),
    "fever_claims": (6525, 2),
}


def _split_keys(task):
    keys = {}
    for split in ("train", "validation", "test"):
        dataset = task.split(split)
        texts = list(dataset["text"])
        pairs = list(dataset["text_pair"]) if task.is_pair else [""] * len(texts)
        keys[split] = set(zip(texts, pairs, strict=True))
        assert len(keys[split]) == len(dataset)
    assert not keys["train"] & keys["test"] and not keys["validation"] & keys["test"]
    assert not keys["train"] & keys["validation"]
    return keys


def _check_task(name, n, k):
    task = load_task(name)
    assert task.metadata["n_examples"] == n and task.num_labels == k
    assert task.label_names == list(SUITE[name].label_names)
    assert len(task.test) == min(1000, int(0.3 * n))
    assert len(task.validation) == min(500, int(0.15 * n))
    train_quota = min(2000, n - len(task.test) - len(task.validation))
    assert set(task.train["label"]) == set(range(k))  # every class is trained on
    keys = _split_keys(task)
    frame = suite_examples(name, cache_dir()).frame
    assert ("group" in frame.columns) == (name in GROUPED)
    if name in GROUPED:
        # Cut documents lose their remainder, so train may fall a little short of its quota.
        assert 0.9 * train_quota <= len(task.train) <= train_quota
        pairs = frame["text_pair"] if task.is_pair else [""] * len(frame)
        group_of = dict(zip(zip(frame["text"], pairs, strict=True), frame["group"], strict=True))
        groups = {split: {group_of[key] for key in found} for split, found in keys.items()}
        assert not groups["train"] & groups["test"] and not groups["validation"] & groups["test"]
        assert not groups["train"] & groups["validation"]
        return
    assert len(task.train) == train_quota
    # Stratified: the test split's class shares follow the whole task's.
    counts = np.bincount(task.test["label"], minlength=k) / len(task.test)
    train_counts = np.bincount(task.train["label"], minlength=k) / len(task.train)
    assert np.abs(counts - train_counts).max() < 0.02


def test_expected_covers_the_suite():
    assert set(EXPECTED) == set(SUITE_TASKS + EXTRA_TASKS) and set(EXPECTED_BIGBENCH) == set(BIGBENCH_TASKS)
    assert set(SUITE_TASKS + EXTRA_TASKS) >= GROUPED


@needs_suite
@pytest.mark.parametrize("name", SUITE_TASKS + EXTRA_TASKS)
def test_suite_task_sizes_classes_and_disjoint_splits(name):
    _check_task(name, *EXPECTED[name])


@needs_bigbench
@pytest.mark.parametrize("name", BIGBENCH_TASKS)
def test_bigbench_task_sizes_classes_and_disjoint_splits(name):
    _check_task(name, *EXPECTED_BIGBENCH[name])


@needs_suite
def test_pair_tasks_are_pairs():
    pairs = {name for name in SUITE_TASKS + EXTRA_TASKS if SUITE[name].is_pair}
    assert pairs == {"privacyqa", "stereoset_relation", "boolq"}
    for name in sorted(pairs):
        task = load_task(name)
        assert task.is_pair and task.train[0].keys() == {"text", "text_pair", "label"}
        assert all(pair for pair in task.train["text_pair"])
    stereoset = load_task("stereoset_relation")
    assert stereoset.label_names == ["stereotype", "anti-stereotype", "unrelated"]
    row = stereoset.train[0]
    assert row["text"] != row["text_pair"]
    boolq = load_task("boolq")
    assert boolq.label_names == ["no", "yes"]
    assert sum(len(p) for p in boolq.train["text_pair"]) > sum(len(q) for q in boolq.train["text"])
    assert not load_task("trec_coarse").is_pair


@needs_suite
def test_readable_label_names():
    assert load_task("bbc_topic").label_names == ["business", "entertainment", "politics", "sport", "tech"]
    assert "Gynaecology Obstetrics" in load_task("medmcqa_subject").label_names
    assert "malicious uses" in load_task("request_risk").label_names
    assert load_task("trec_coarse").label_names == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    assert load_task("spam_email").label_names == ["easy ham", "hard ham", "spam"]
    assert load_task("sotu_party").label_names == ["democratic", "republican"]
    assert "Al Jazeera" in load_task("news_outlet").label_names
    assert load_task("tweet_sentiment").label_names[0] == "very negative"


@needs_suite
def test_cleaned_texts_hide_their_labels():
    spam = load_task("spam_email")
    assert all(t.startswith("Subject:") for t in spam.train["text"])
    assert not any(t.startswith("Received:") or "\nReceived:" in t for t in spam.train["text"])
    health = load_task("healthtweet_outlet")
    assert not any("http://" in t or "https://" in t for t in health.train["text"])
    crows = load_task("crows_bias_type")
    assert not any("[MASK]" in t for t in crows.train["text"])


@needs_bigbench
def test_bigbench_pairs_and_label_names():
    nli = load_task("epistemic_nli")
    assert nli.is_pair and all(" Hypothesis:" not in t for t in nli.train["text"])
    assert nli.label_names == ["entailment", "non-entailment"]
    assert load_task("multiemo_hotels").label_names == ["negative", "positive", "neutral", "ambivalent"]
    assert "search creative work" in load_task("intent").label_names
