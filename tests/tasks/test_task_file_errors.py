"""Broken task files raise the library's own error types, naming the file (and line) and the fix; rows
dropped by cleaning are counted in one logged line."""

from __future__ import annotations

import gzip
import json
import logging

import pytest

from deltaspace.errors import BrokenFileError, MissingFileError, UserInputError
from deltaspace.tasks import load_task


def _rows(n: int = 30) -> list[dict]:
    return [{"text": f"example number {i} {'good' if i % 2 else 'bad'}", "label": i % 2} for i in range(n)]


@pytest.mark.parametrize(
    ("name", "content", "error", "message"),
    [
        ("empty.csv", b"", BrokenFileError, "empty.csv is empty"),
        ("header.csv", b"text,label\n", BrokenFileError, "has no examples"),
        ("binary.csv", b"\x00\x01\x02" * 50, BrokenFileError, "is binary"),
        ("latin.csv", b"text,label\ncaf\xe9,1\n", BrokenFileError, "not UTF-8"),
        ("quotes.csv", b'text,label\n"a,1\nb,0\n', BrokenFileError, "not a valid CSV"),
        ("bad.jsonl", b'{"text": "a", "label": 1}\n{"text": \n', BrokenFileError, "bad.jsonl line 2"),
        ("list.jsonl", b"[1, 2]\n", BrokenFileError, "line 1: expected a JSON object"),
        ("bad.json", b'[{"text": "a"},\n oops]', BrokenFileError, "bad.json line 2"),
        ("blank.csv", b"text,label\n,1\n  ,0\n", UserInputError, "all 2 rows have an empty text"),
        ("notes.txt", b"text,label\n", UserInputError, "expected a .csv"),
    ],
)
def test_broken_files(tmp_path, name, content, error, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(error, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_task(str(path))


def test_error_types_stay_compatible(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_task(str(tmp_path / "missing.csv"))
    with pytest.raises(MissingFileError):
        load_task(str(tmp_path / "missing.csv"))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError):  # BrokenFileError is a ValueError, as before
        load_task(str(tmp_path / "empty.csv"))


def test_compressed_jsonl_is_read_and_its_errors_have_lines(tmp_path):
    good = tmp_path / "data.jsonl.gz"
    with gzip.open(good, "wt") as handle:
        handle.write("".join(json.dumps(row) + "\n" for row in _rows()))
    assert len(load_task(str(good)).train) > 0
    bad = tmp_path / "bad.jsonl.gz"
    with gzip.open(bad, "wt") as handle:
        handle.write(json.dumps(_rows()[0]) + "\n{oops\n")
    with pytest.raises(BrokenFileError, match="line 2"):
        load_task(str(bad))


def test_dropped_rows_are_counted_in_one_line(tmp_path, caplog):
    rows = _rows()
    lines = [
        "text,label",
        *(f"{r['text']},{r['label']}" for r in rows),
        ",1",
        "   ,0",
        f"{rows[0]['text']},1",
    ]
    lines.append(f"{rows[1]['text']},{rows[1]['label']}")
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="deltaspace"):
        task = load_task(str(tmp_path / "d.csv"))
    notes = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert notes == [
        "d.csv: kept 29 of 34 rows (dropped 2 with an empty text or label, 1 duplicate, 2 with conflicting labels)"
    ]
    assert task.metadata["n_empty_removed"] == 2
    caplog.clear()
    (tmp_path / "clean.csv").write_text("\n".join(lines[: len(rows) + 1]) + "\n")
    with caplog.at_level(logging.WARNING, logger="deltaspace"):
        load_task(str(tmp_path / "clean.csv"))
    assert not caplog.records
