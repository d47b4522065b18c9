"""Sweep config files (plain and tuned sweeps read them alike)."""

from __future__ import annotations

import pytest

from deltaspace.errors import BrokenFileError, MissingFileError, UserInputError
from deltaspace.train.config_file import read_config_file

KEYS = ("out", "tasks", "train")


def test_overrides_replace_keys_and_merge_into_train(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("out: a\ntasks: [x, y]\ntrain: {lr: 0.1, epochs: 2}\n")
    data = read_config_file(path, "sweep config", KEYS, {"out": "b", "tasks": None, "train": {"lr": 0.2}})
    assert data == {"out": "b", "tasks": ["x", "y"], "train": {"lr": 0.2, "epochs": 2}}


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        (b"tasks: [a, b\nout: x\n", BrokenFileError, r"not valid YAML \(line 2, column"),
        (b"out: caf\xe9\n", BrokenFileError, "not UTF-8"),
        (b"- a\n- b\n", UserInputError, "must be a mapping with keys out, tasks, train"),
        (b"out: a\nfitt: 1\n", UserInputError, r"unknown key\(s\) \['fitt'\]"),
    ],
)
def test_broken_files_are_named_in_one_line(tmp_path, content, error, message):
    path = tmp_path / "sweep.yaml"
    path.write_bytes(content)
    with pytest.raises(error, match=f"tuned sweep config {path} .*{message}"):
        read_config_file(path, "tuned sweep config", KEYS, {})


def test_a_missing_file(tmp_path):
    with pytest.raises(MissingFileError, match=r"sweep config .* not found"):
        read_config_file(tmp_path / "nope.yaml", "sweep config", KEYS, {})
