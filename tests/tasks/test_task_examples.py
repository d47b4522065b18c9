import pandas as pd
import pytest

from deltaspace.tasks.examples import dedupe, label_vocabulary, prepare


def _frame(rows, pair=False):
    columns = ["text", "text_pair", "label"] if pair else ["text", "label"]
    return pd.DataFrame(rows, columns=columns)


def test_dedupe_keeps_first_copy_and_drops_conflicts():
    frame = _frame([("a", "x"), ("a", "x"), ("b", "x"), ("b", "y"), ("c", "y")])
    out, duplicates, conflicting = dedupe(frame)
    assert out["text"].tolist() == ["a", "c"] and duplicates == 1 and conflicting == 2


def test_pairs_are_deduplicated_on_both_texts():
    frame = _frame([("q", "c1", "yes"), ("q", "c2", "no"), ("q", "c1", "yes")], pair=True)
    out, duplicates, conflicting = dedupe(frame)
    assert len(out) == 2 and duplicates == 1 and conflicting == 0


def test_prepare_cleans_encodes_and_counts():
    rows = [(f" text {i} ", "pos" if i % 2 else "neg") for i in range(12)]
    rows += [("   ", "pos"), (None, "neg"), ("text 1", "pos"), ("no label", None)]
    prepared = prepare(_frame(rows), ["neg", "pos"])
    assert prepared.label_names == ["neg", "pos"]
    assert prepared.frame["text"].tolist()[:2] == ["text 0", "text 1"]
    assert prepared.frame["label"].tolist()[:2] == [0, 1]
    assert prepared.stats == {
        "n_raw": 16,
        "n_examples": 12,
        "n_duplicates_removed": 1,
        "n_conflicting_removed": 0,
        "n_empty_removed": 3,
    }


def test_label_vocabulary_sorts_numbers_numerically():
    assert label_vocabulary(pd.Series([10, 2, 1, 2])) == ["1", "2", "10"]
    assert label_vocabulary(pd.Series([1.0, 3.0])) == ["1", "3"]
    assert label_vocabulary(pd.Series(["b", "a"])) == ["a", "b"]
    assert label_vocabulary(pd.Series([True, False])) == ["False", "True"]
    prepared = prepare(_frame([(f"t{i}", [5, 1, 10][i % 3]) for i in range(12)]))
    assert prepared.label_names == ["1", "5", "10"]
    assert prepared.frame["label"].tolist()[:3] == [1, 0, 2]


def test_single_class_unknown_label_and_too_few_examples():
    with pytest.raises(ValueError, match="single class \\('pos'\\)"):
        prepare(_frame([(f"t{i}", "pos") for i in range(20)]), name="mine")
    with pytest.raises(ValueError, match="labels \\['maybe'\\] are not in the label names"):
        prepare(_frame([("a", "yes"), ("b", "maybe")]), ["no", "yes"])
    with pytest.raises(ValueError, match="only 4 usable examples"):
        prepare(_frame([("a", "x"), ("b", "y"), ("c", "x"), ("d", "y")]))
