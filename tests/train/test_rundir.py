"""Run directories: never clear what a run did not write; --overwrite builds beside the old run and swaps."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import deltaspace.train.loop as loop_module
from deltaspace.errors import RunDirectoryError, UserInputError
from deltaspace.train import TrainConfig, train
from deltaspace.train.rundir import (
    foreign_entries,
    plan_run_dir,
    recover_interrupted_swap,
    remove_strays,
    staging_dir,
)


def _config(model_dir, out: Path, **changes) -> TrainConfig:
    fields = dict(task="tiny", model=str(model_dir), method="lora", lr=5e-2, batch_size=16, max_steps=2)
    return TrainConfig(**{**fields, "output_dir": str(out), "cpu": True, **changes})


@pytest.fixture
def finished_run(tiny_model_dir, make_tiny_task, tmp_path) -> Path:
    train(_config(tiny_model_dir, tmp_path / "run"), task=make_tiny_task())
    return tmp_path / "run"


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_finished_run_holds_only_run_files(finished_run):
    assert foreign_entries(finished_run) == []
    (finished_run / "tb" / "notes.txt").write_text("mine")
    os.symlink(finished_run / "config.json", finished_run / "delta" / "link.json")
    found = {str(p.relative_to(finished_run)) for p in foreign_entries(finished_run)}
    assert found == {"tb/notes.txt", "delta/link.json"}


def test_a_folder_with_a_users_file_inside_delta_is_never_cleared(tiny_model_dir, make_tiny_task, tmp_path):
    # The issue's case: top-level names look like a run, delta/ holds someone's file; a valid method too.
    folder = tmp_path / "P"
    (folder / "delta").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "delta" / "README").write_text("notes")
    before = _snapshot(folder)
    with pytest.raises(RunDirectoryError, match=r"delta/README"):
        train(_config(tiny_model_dir, folder), task=make_tiny_task())
    (folder / "delta" / "README").unlink()  # only config.json left, and it is not a train config
    with pytest.raises(RunDirectoryError, match="not a deltaspace train config"):
        train(_config(tiny_model_dir, folder), task=make_tiny_task())
    assert _snapshot(folder) == {k: v for k, v in before.items() if k != "delta/README"}


def test_overwrite_with_a_typo_keeps_the_finished_run(finished_run, tiny_model_dir, make_tiny_task):
    before = _snapshot(finished_run)
    with pytest.raises(UserInputError, match="unknown delta method"):
        train(_config(tiny_model_dir, finished_run, method="lorra"), task=make_tiny_task(), overwrite=True)
    assert _snapshot(finished_run) == before
    assert not staging_dir(finished_run).exists()


def test_overwrite_keeps_the_old_run_until_the_new_one_has_finished(
    finished_run, tiny_model_dir, make_tiny_task, monkeypatch
):
    before = _snapshot(finished_run)
    calls = []

    def failing_evaluation(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("out of memory")  # the new run dies half-way

    monkeypatch.setattr(loop_module, "evaluate_model", failing_evaluation)
    with pytest.raises(RuntimeError):
        train(_config(tiny_model_dir, finished_run, lr=0.01), task=make_tiny_task(), overwrite=True)
    assert calls and _snapshot(finished_run) == before  # untouched
    assert staging_dir(finished_run).is_dir()  # the half-built replacement, beside it
    monkeypatch.undo()
    result = train(_config(tiny_model_dir, finished_run, lr=0.01), task=make_tiny_task(), overwrite=True)
    assert result.run_dir == str(finished_run)
    assert json.loads((finished_run / "config.json").read_text())["lr"] == 0.01
    assert json.loads((finished_run / "config.json").read_text())["output_dir"] == str(finished_run)
    assert sorted(p.name for p in finished_run.parent.iterdir()) == ["run"]  # no staging or old copy left


def test_an_interrupted_swap_is_finished_or_undone(finished_run, tmp_path):
    old = tmp_path / ".run.old"
    os.replace(finished_run, old)  # killed between the two renames, nothing staged: undo
    recover_interrupted_swap(finished_run)
    assert (finished_run / "result.json").is_file() and not old.exists()
    staged = staging_dir(finished_run)
    os.replace(finished_run, staged)
    (tmp_path / ".run.old").mkdir()
    recover_interrupted_swap(finished_run)  # the new run was complete: finish the swap
    assert (finished_run / "result.json").is_file() and not staged.exists() and not old.exists()


def test_unfinished_run_without_checkpoint_restarts_and_strays_are_removed(finished_run):
    (finished_run / "result.json").unlink()
    plan = plan_run_dir(finished_run, {"task": "tiny"})
    assert plan.action == "restart" and plan.work_dir == finished_run
    (finished_run / ".metrics.jsonl.abc.tmp").write_text("half")
    (finished_run / "checkpoints" / ".step-00000004.tmp").mkdir(parents=True)
    (finished_run / "checkpoints" / ".step-00000004.tmp" / "optimizer.bin").write_bytes(b"x")
    assert foreign_entries(finished_run) == []  # temporary files are a run's own
    remove_strays(finished_run)
    assert not list(finished_run.rglob("*.tmp"))


def test_output_path_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunDirectoryError, match="is a file"):
        plan_run_dir(tmp_path / "f", {"task": "tiny"})
