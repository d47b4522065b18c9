import json

import pytest

from deltaspace.tasks.parsers import bigbench_label, read_bbc, read_bigbench, split_pair


@pytest.mark.parametrize(
    "text,first,second",
    [
        ("Premise: A dog runs. Hypothesis: An animal moves.", "A dog runs.", "An animal moves."),
        ("Evidence: Paris is in France.\nClaim: Paris is French.", "Paris is in France.", "Paris is French."),
        ("Sentence 1: It rains.\nSentence 2: It is wet.", "It rains.", "It is wet."),
    ],
)
def test_split_pair_handles_each_separator(text, first, second):
    assert split_pair(text) == (first, second)


def test_split_pair_errors():
    with pytest.raises(ValueError, match="no pair separator"):
        split_pair("just one sentence")
    with pytest.raises(ValueError, match="occurs 2 times"):
        split_pair("Premise: a Hypothesis: b Hypothesis: c")


def test_bigbench_label():
    assert bigbench_label({"target_scores": {"a": 0, "b": 1}}) == "b"
    assert bigbench_label({"target": ["Date.", "Time."]}) == "Date."
    with pytest.raises(ValueError, match="no single correct choice"):
        bigbench_label({"target_scores": {"a": 1, "b": 1}})


def test_read_bigbench_maps_labels_and_rejects_surprises(tmp_path):
    path = tmp_path / "task.json"
    examples = [{"input": "Utterance: play jazz", "target_scores": {"play_music": 1, "rate_book": 0}}]
    path.write_text(json.dumps({"examples": examples}))
    frame = read_bigbench(
        path, label_map={"play_music": "play music", "rate_book": "rate book"}, text_prefixes=("Utterance:",)
    )
    assert frame.to_dict("records") == [{"label": "play music", "text": "play jazz"}]
    with pytest.raises(ValueError, match="unexpected label 'play_music'"):
        read_bigbench(path, label_map={"rate_book": "rate book"})
    with pytest.raises(ValueError, match="does not match the expected template"):
        read_bigbench(path, text_pattern=r"Claim: (?P<text>.*)")


def test_read_bbc_reads_utf8_and_latin1(tmp_path):
    (tmp_path / "tech").mkdir()
    (tmp_path / "tech" / "001.txt").write_bytes("Price \u00a3 5\n".encode())
    (tmp_path / "tech" / "002.txt").write_bytes("Caf\xe9 \xa3 5".encode("latin-1"))
    frame = read_bbc(tmp_path, {"tech": "tech"})
    assert frame["text"].tolist() == ["Price \u00a3 5", "Caf\u00e9 \u00a3 5"]
    (tmp_path / "weather").mkdir()
    with pytest.raises(ValueError, match="unexpected class folder 'weather'"):
        read_bbc(tmp_path, {"tech": "tech"})
