"""Resumable training in-process: a run that crashes after a checkpoint and is rerun ends exactly as an
uninterrupted run (same result.json metrics, same metrics.jsonl records). The crash is a BaseException
raised at a pause point; tests/train/test_kill.py does the same with SIGKILL on real subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import deltaspace.train.checkpoint as checkpoint_module
import deltaspace.train.loop as loop_module
from deltaspace.errors import BrokenFileError, RunMismatchError
from deltaspace.io import read_jsonl
from deltaspace.train import TrainConfig, train
from deltaspace.train.checkpoint import CHECKPOINTS_DIR, latest_checkpoint


class Crash(BaseException):
    """Stands in for a kill: nothing in train() catches a BaseException."""


def _config(model_dir, out: Path, **changes) -> TrainConfig:
    fields = dict(
        task="tiny",
        model=str(model_dir),
        method="coeff+lora",
        method_options={"coeff_dropout": 0.3},  # dropout: the torch RNG must be restored too
        lr=5e-2,
        batch_size=16,  # 64 train examples: 4 steps per epoch
        epochs=3,
        log_every=3,
        output_dir=str(out),
        cpu=True,
        checkpoint_every=2,
        checkpoint_minutes=None,
    )
    return TrainConfig(**{**fields, **changes})


def crash_at(monkeypatch, wanted: str) -> None:
    def pause_point(point: str, step: int, run_dir="") -> None:
        if f"{point}:{step}" == wanted:
            raise Crash(wanted)

    monkeypatch.setattr(loop_module, "pause_point", pause_point)
    monkeypatch.setattr(checkpoint_module, "pause_point", pause_point)


def records(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time_s"} for r in read_jsonl(run_dir / "metrics.jsonl")]


def assert_same_run(resumed: Path, reference: Path) -> None:
    a, b = (json.loads((d / "result.json").read_text()) for d in (resumed, reference))
    for key in (
        "validation",
        "test",
        "best_step",
        "steps",
        "stopped_early",
        "best_validation_during_training",
    ):
        assert a[key] == b[key], key
    assert records(resumed) == records(reference)
    assert not (resumed / CHECKPOINTS_DIR).exists()  # a finished run keeps no checkpoint


SCENARIOS = {
    # crash point, config changes
    "mid-epoch-step": ("step:7", {"eval_every": 3}),
    "during-eval-at-epoch-end": ("eval:8", {}),  # checkpoint at the epoch's last step, before its eval
    "during-checkpoint-write": ("checkpoint-write:6", {"eval_every": 5}),
    "grad-accum": ("step:5", {"grad_accum": 2, "batch_size": 8, "eval_every": 2}),
    "early-stopping": ("step:5", {"eval_every": 1, "early_stopping_patience": 3, "metric_for_best": "loss"}),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_crash_then_rerun_matches_uninterrupted(
    scenario, tiny_model_dir, make_tiny_task, tmp_path, monkeypatch
):
    point, changes = SCENARIOS[scenario]
    train(_config(tiny_model_dir, tmp_path / "reference", **changes), task=make_tiny_task())
    config = _config(tiny_model_dir, tmp_path / "run", **changes)
    crash_at(monkeypatch, point)
    with pytest.raises(Crash):
        train(config, task=make_tiny_task())
    assert latest_checkpoint(tmp_path / "run") is not None
    if point.startswith("checkpoint-write"):
        assert list((tmp_path / "run" / CHECKPOINTS_DIR).glob(".step-*.tmp"))  # the half-written one
    monkeypatch.undo()
    train(config, task=make_tiny_task())
    assert_same_run(tmp_path / "run", tmp_path / "reference")
    assert not list((tmp_path / "run").rglob("*.tmp"))  # strays cleaned


def test_resume_refuses_other_settings_and_overwrite_replaces(
    tiny_model_dir, make_tiny_task, tmp_path, monkeypatch
):
    config = _config(tiny_model_dir, tmp_path / "run")
    crash_at(monkeypatch, "step:5")
    with pytest.raises(Crash):
        train(config, task=make_tiny_task())
    monkeypatch.undo()
    with pytest.raises(RunMismatchError, match=r"lr=0\.05 but this run asks for lr=0\.01"):
        train(config.replace(lr=0.01), task=make_tiny_task())
    assert latest_checkpoint(tmp_path / "run") is not None  # the refused command changed nothing
    # Bookkeeping fields (how often to checkpoint or log) may change between the kill and the rerun.
    result = train(config.replace(checkpoint_every=3), task=make_tiny_task())
    assert result.steps == 12
    train(config.replace(lr=0.01), task=make_tiny_task(), overwrite=True)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["lr"] == 0.01


def test_broken_checkpoint_is_a_clear_error(tiny_model_dir, make_tiny_task, tmp_path, monkeypatch):
    config = _config(tiny_model_dir, tmp_path / "run")
    crash_at(monkeypatch, "step:5")
    with pytest.raises(Crash):
        train(config, task=make_tiny_task())
    monkeypatch.undo()
    checkpoint = latest_checkpoint(tmp_path / "run")
    (checkpoint / "tensors.safetensors").write_bytes(b"garbage")
    with pytest.raises(BrokenFileError, match="delete that folder"):
        train(config, task=make_tiny_task())


def test_time_based_checkpoints(tiny_model_dir, make_tiny_task, tmp_path, monkeypatch):
    # A tiny checkpoint_minutes makes every step due; with both policies off there is none to resume.
    config = _config(tiny_model_dir, tmp_path / "run", checkpoint_every=None, checkpoint_minutes=1e-9)
    crash_at(monkeypatch, "step:4")
    with pytest.raises(Crash):
        train(config, task=make_tiny_task())
    assert latest_checkpoint(tmp_path / "run").name == "step-00000003"
    off = _config(tiny_model_dir, tmp_path / "off", checkpoint_every=None, checkpoint_minutes=None)
    with pytest.raises(Crash):
        train(off, task=make_tiny_task())
    assert latest_checkpoint(tmp_path / "off") is None


def test_an_interrupted_overwrite_resumes_beside_the_old_run(
    tiny_model_dir, make_tiny_task, tmp_path, monkeypatch
):
    train(_config(tiny_model_dir, tmp_path / "reference", lr=0.01), task=make_tiny_task())
    old = train(_config(tiny_model_dir, tmp_path / "run"), task=make_tiny_task())
    crash_at(monkeypatch, "step:7")
    new = _config(tiny_model_dir, tmp_path / "run", lr=0.01)
    with pytest.raises(Crash):
        train(new, task=make_tiny_task(), overwrite=True)
    monkeypatch.undo()
    assert json.loads((tmp_path / "run" / "result.json").read_text())["test"] == old.test  # still the old run
    assert latest_checkpoint(tmp_path / ".run.new") is not None
    train(new, task=make_tiny_task(), overwrite=True)  # the same command again: resumes the replacement
    assert_same_run(tmp_path / "run", tmp_path / "reference")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reference", "run"]
