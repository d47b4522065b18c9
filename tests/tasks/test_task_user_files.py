"""User data: CSV / TSV / JSONL / JSON files and local datasets directories, through the same split code."""

import json

import pandas as pd
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from deltaspace.tasks import load_task


def _reviews(n=60):
    return pd.DataFrame(
        {
            "review": [f"review number {i}" for i in range(n)],
            "stars": [1 + i % 3 for i in range(n)],
            "id": range(n),
        }
    )


def test_csv_with_kwargs(tmp_path):
    path = tmp_path / "reviews.csv"
    _reviews().to_csv(path, index=False)
    task = load_task(path, text_column="review", label_column="stars", max_test=10)
    assert task.name == "reviews" and task.label_names == ["1", "2", "3"] and not task.is_pair
    assert len(task.test) == 10 and len(task.validation) == 9 and len(task.train) == 41
    assert task.train.features["label"].names == ["1", "2", "3"]
    assert set(list(task.train["text"])).isdisjoint(list(task.test["text"]))


def test_spec_syntax_equals_kwargs(tmp_path):
    path = tmp_path / "reviews.csv"
    _reviews().to_csv(path, index=False)
    a = load_task(f"{path}?text=review&label=stars&name=mine", seed=5)
    b = load_task(path, text_column="review", label_column="stars", seed=5)
    assert (
        a.name == "mine"
        and list(a.train["text"]) == list(b.train["text"])
        and list(a.test["label"]) == list(b.test["label"])
    )
    with pytest.raises(ValueError, match="unknown option 'txt'"):
        load_task(f"{path}?txt=review")


def test_tsv_and_texts_that_look_missing(tmp_path):
    frame = pd.DataFrame({"text": ["NA", "null", *[f"t{i}" for i in range(18)]], "label": ["a", "b"] * 10})
    path = tmp_path / "data.tsv"
    frame.to_csv(path, sep="\t", index=False)
    task = load_task(path)
    texts = list(task.train["text"]) + list(task.validation["text"]) + list(task.test["text"])
    assert "NA" in texts and "null" in texts and len(texts) == 20


def test_jsonl_pair_task(tmp_path):
    path = tmp_path / "nli.jsonl"
    rows = [{"premise": f"p{i}", "hypothesis": f"h{i % 5}", "gold": ["yes", "no"][i % 2]} for i in range(40)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    task = load_task(path, label_column="gold")  # premise/hypothesis are found as a pair by default
    assert task.is_pair and task.label_names == ["no", "yes"]
    assert task.train.column_names == ["text", "text_pair", "label"]
    explicit = load_task(path, text_column="hypothesis", text_pair_column="premise", label_column="gold")
    assert explicit.train[0]["text"].startswith("h")


def test_json_array_and_several_files(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps([{"text": f"a{i}", "label": i % 2} for i in range(10)]))
    second.write_text(json.dumps({"data": [{"text": f"b{i}", "label": i % 2} for i in range(10)]}))
    task = load_task([first, second])
    assert task.metadata["n_examples"] == 20 and task.label_names == ["0", "1"]


def test_datasets_directory_with_classlabel_and_unlabelled_rows(tmp_path):
    features = Features({"sentence": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    train = Dataset.from_dict(
        {"sentence": [f"s{i}" for i in range(30)], "label": [i % 2 for i in range(30)]}, features=features
    )
    test = Dataset.from_dict(
        {"sentence": [f"t{i}" for i in range(10)], "label": [-1] * 10}, features=features
    )
    DatasetDict({"train": train, "test": test}).save_to_disk(tmp_path / "glue_like")
    task = load_task(tmp_path / "glue_like")
    assert task.label_names == ["neg", "pos"] and task.metadata["n_examples"] == 30
    assert task.metadata["columns"] == {
        "text": "sentence",
        "text_pair": None,
        "label": "label",
        "group": None,
    }
    train.save_to_disk(tmp_path / "single")
    assert load_task(tmp_path / "single").metadata["n_examples"] == 30


def test_missing_column_lists_available_columns(tmp_path):
    path = tmp_path / "reviews.csv"
    _reviews().to_csv(path, index=False)
    with pytest.raises(
        ValueError,
        match=r"label column 'rating' is not in reviews\.csv; available columns: review, stars, id",
    ):
        load_task(path, text_column="review", label_column="rating")
    with pytest.raises(
        ValueError, match=r"no text column in reviews\.csv.*available columns: review, stars, id"
    ):
        load_task(path)


def test_single_class_and_other_errors(tmp_path):
    path = tmp_path / "one.csv"
    pd.DataFrame({"text": [f"t{i}" for i in range(20)], "label": ["same"] * 20}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="single class \\('same'\\)"):
        load_task(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_task(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="unknown task 'rt_sentimnet'"):
        load_task("rt_sentimnet")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"expected a \.csv, \.tsv, \.jsonl"):
        load_task(tmp_path / "notes.txt")
    (tmp_path / "plain_dir").mkdir()
    with pytest.raises(ValueError, match="not a dataset saved with datasets' save_to_disk"):
        load_task(tmp_path / "plain_dir")


def test_label_names_fix_the_order(tmp_path):
    path = tmp_path / "r.csv"
    pd.DataFrame({"text": [f"t{i}" for i in range(20)], "label": ["pos", "neg"] * 10}).to_csv(
        path, index=False
    )
    task = load_task(path, label_names=["pos", "neg"])
    assert task.label_names == ["pos", "neg"]
    for row in task.train:
        assert row["label"] == int(row["text"][1:]) % 2  # even rows are "pos" = 0


def test_a_group_column_keeps_each_document_in_one_split(tmp_path):
    frame = _reviews(120).assign(product=[f"p{i // 6}" for i in range(120)])  # 20 products, 6 reviews each
    frame.loc[0, "product"] = None  # a row without a document is its own group
    path = tmp_path / "reviews.csv"
    frame.to_csv(path, index=False)
    task = load_task(f"{path}?text=review&label=stars&group=product")
    assert task.train.column_names == ["text", "label"]  # the group column stays behind
    product = dict(zip(frame["review"], frame["product"].fillna("none"), strict=True))
    owners = {
        split: {product[t] for t in task.split(split)["text"]} for split in ("train", "validation", "test")
    }
    assert not owners["train"] & owners["test"] and not owners["train"] & owners["validation"]
    assert not owners["validation"] & owners["test"]
    assert len(task.test) == 36 and len(task.validation) == 18  # as split_sizes: quotas are exact
    with pytest.raises(ValueError, match="group column 'shop' is not in"):
        load_task(f"{path}?text=review&label=stars&group=shop")


def test_a_relative_data_path_is_recorded_absolute(tmp_path, monkeypatch):
    from deltaspace.tasks.files import absolute_spec
    from deltaspace.train.config import TrainConfig

    (tmp_path / "mine.csv").write_text("text,label\na,x\n")
    monkeypatch.chdir(tmp_path)
    wanted = f"{tmp_path / 'mine.csv'}?text=text&label=label"
    assert absolute_spec("mine.csv?text=text&label=label") == wanted
    assert TrainConfig(task="mine.csv?text=text&label=label").task == wanted  # run folders evaluate anywhere
    for unchanged in ("rt_sentiment", "missing.csv?text=t", wanted):
        assert absolute_spec(unchanged) == unchanged
