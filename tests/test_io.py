import hashlib
import json
import math
import os
import stat

import pytest
import torch
from safetensors.torch import load_file

from deltaspace.io import (
    append_jsonl,
    atomic_write,
    read_json,
    read_jsonl,
    sha256_file,
    to_jsonable,
    write_json_atomic,
    write_safetensors_atomic,
    write_text_atomic,
)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "result.json"
    write_text_atomic(path, "old\n")

    def broken(tmp):
        with open(tmp, "w") as handle:
            handle.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["result.json"]


def test_interrupt_also_removes_the_temporary(tmp_path):
    def interrupted(tmp):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "a.txt", interrupted)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("umask", [0o077, 0o002])
def test_written_files_are_mode_0644_whatever_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
        write_json_atomic(tmp_path / "b.json", {"x": 1})
        write_safetensors_atomic(tmp_path / "c.safetensors", {"w": torch.zeros(2)})
    finally:
        os.umask(old)
    for name in ("a.txt", "b.json", "c.safetensors"):
        assert _mode(tmp_path / name) == 0o644, name


def test_replaces_an_existing_file_and_creates_parents(tmp_path):
    path = tmp_path / "deep" / "er" / "x.txt"
    write_text_atomic(path, "one")
    write_text_atomic(path, "two")
    assert path.read_text() == "two"
    assert os.listdir(path.parent) == ["x.txt"]


def test_json_round_trip(tmp_path):
    data = {"a": [1, 2.5, "s", None, True], "b": {"c": (3, 4)}, 5: "int key"}
    path = write_json_atomic(tmp_path / "d.json", data)
    assert read_json(path) == {"a": [1, 2.5, "s", None, True], "b": {"c": [3, 4]}, "5": "int key"}
    assert path.read_text().endswith("}\n")


def test_json_is_standard_json(tmp_path):
    data = {"nan": float("nan"), "inf": -math.inf, "t": torch.tensor(0.5), "p": tmp_path}
    write_json_atomic(tmp_path / "d.json", data)
    text = (tmp_path / "d.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"nan": None, "inf": None, "t": 0.5, "p": str(tmp_path)}
    assert to_jsonable([torch.tensor(2)]) == [2]


def test_read_json_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        read_json(tmp_path / "missing.json")


def test_jsonl_appends_and_skips_a_truncated_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"step": 1, "loss": 0.5})
    append_jsonl(path, {"step": 2, "loss": float("nan")})
    with open(path, "a") as handle:
        handle.write('{"step": 3, "lo')  # a kill mid-line
    assert read_jsonl(path) == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": None}]


def test_safetensors_round_trip(tmp_path):
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    tensors = {"t": base.t(), "row": base[1], "whole": base, "half": torch.ones(2, dtype=torch.float16)}
    path = write_safetensors_atomic(tmp_path / "w.safetensors", tensors, metadata={"format": "pt"})
    loaded = load_file(str(path))
    assert loaded.keys() == tensors.keys()
    for key, value in tensors.items():
        assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value), key
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_sha256_matches_hashlib_across_blocks(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)
    path = tmp_path / "blob"
    path.write_bytes(data)
    seen = []
    assert (
        sha256_file(path, lambda done, total: seen.append((done, total))) == hashlib.sha256(data).hexdigest()
    )
    assert seen[-1] == (len(data), len(data)) and len(seen) == 4
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()
