"""SIGKILL real training subprocesses (``python -m deltaspace.cli train`` / ``sweep``) during a step,
during evaluation and during a checkpoint write; rerunning the same command must finish with exactly the
metrics of an uninterrupted run.

The run is held at a named point (``DELTASPACE_PAUSE_AT``, see ``deltaspace.train.faults``), announces it
in a marker file, and this test kills it there with SIGKILL, so each kill lands where it is meant to.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli import _write_jsonl
from typer.testing import CliRunner

import deltaspace.cli.train  # noqa: F401  (registers the commands)
from deltaspace.cli.app import app
from deltaspace.io import read_jsonl
from deltaspace.train.checkpoint import CHECKPOINTS_DIR, latest_checkpoint

TRAIN = ["--method", "coeff+lora", "-O", "coeff_dropout=0.3", "--cpu", "--batch-size", "8", "--lr", "0.01"]
TRAIN += ["--max-steps", "14", "--eval-every", "5", "--log-every", "2", "--checkpoint-every", "3"]


def launch(args: list[str], tmp_path: Path, pause: str | None = None, run: str = "") -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for name in ("DELTASPACE_PAUSE_AT", "DELTASPACE_PAUSE_FILE", "DELTASPACE_PAUSE_RUN"):
        env.pop(name, None)
    if pause:
        marker = tmp_path / "paused"
        marker.unlink(missing_ok=True)
        env.update(DELTASPACE_PAUSE_AT=pause, DELTASPACE_PAUSE_FILE=str(marker), DELTASPACE_PAUSE_RUN=run)
    command = [
        sys.executable,
        "-c",
        "import torch; torch.set_num_threads(1); from deltaspace.cli import main; main()",
    ]
    return subprocess.Popen(
        [*command, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def kill_when_paused(process: subprocess.Popen, tmp_path: Path, timeout: float = 120) -> None:
    marker, deadline = tmp_path / "paused", time.monotonic() + timeout
    while not marker.exists():
        if process.poll() is not None:
            pytest.fail(f"the run ended before its pause point:\n{process.stdout.read()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the run never reached its pause point")
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    marker.unlink()


def finish(process: subprocess.Popen) -> str:
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 0, output
    return output


def run_in_process(args: list[str]) -> None:
    """The uninterrupted reference, in this process (one torch thread, like the subprocesses)."""
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output


def records(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time_s"} for r in read_jsonl(run_dir / "metrics.jsonl")]


def assert_same_run(run_dir: Path, reference: Path) -> None:
    a, b = (json.loads((d / "result.json").read_text()) for d in (run_dir, reference))
    for key in ("validation", "test", "best_step", "steps", "best_validation_during_training"):
        assert a[key] == b[key], key
    assert records(run_dir) == records(reference)
    assert not (run_dir / CHECKPOINTS_DIR).exists() and not list(run_dir.rglob("*.tmp"))


@pytest.fixture
def data(tmp_path) -> Path:
    return _write_jsonl(tmp_path / "reviews.jsonl")


def test_kill_during_step_eval_and_checkpoint_write_then_resume(tiny_model_dir, data, tmp_path):
    args = ["train", "--task", str(data), "--model", str(tiny_model_dir), *TRAIN]
    run = tmp_path / "run"
    # 1. killed during step 5 (last checkpoint: step 3)
    kill_when_paused(launch([*args, "--out", str(run)], tmp_path, pause="step:5"), tmp_path)
    assert latest_checkpoint(run).name == "step-00000003"
    # 2. resumed, killed during the evaluation at step 10 (last checkpoint: step 9)
    kill_when_paused(launch([*args, "--out", str(run)], tmp_path, pause="eval:10"), tmp_path)
    assert latest_checkpoint(run).name == "step-00000009"
    # 3. resumed, killed while writing the checkpoint of step 12: step 9's stays the one to load
    kill_when_paused(launch([*args, "--out", str(run)], tmp_path, pause="checkpoint-write:12"), tmp_path)
    assert latest_checkpoint(run).name == "step-00000009"
    assert (run / CHECKPOINTS_DIR / ".step-00000012.tmp").is_dir()
    # 4. resumed to the end
    output = finish(launch([*args, "--out", str(run)], tmp_path))
    assert "resuming" in output and "from step 9" in output
    run_in_process([*args, "--out", str(tmp_path / "reference")])
    assert_same_run(run, tmp_path / "reference")


def test_kill_a_two_run_sweep_then_resume(tiny_model_dir, data, tmp_path):
    settings = [
        "--set",
        "max_steps=8",
        "--set",
        "eval_every=4",
        "--set",
        "checkpoint_every=2",
        "--set",
        "cpu=true",
    ]
    settings += ["--set", "batch_size=8", "--set", "lr=0.01", "--set", "method_options={coeff_dropout: 0.3}"]
    common = ["sweep", "--task", str(data), "--methods", "coeff,coeff+lora", "--model", str(tiny_model_dir)]
    out = tmp_path / "sweep"
    second = out / "reviews" / "coeff" / "seed0"  # runs go in key order: coeff+lora/ sorts before coeff/
    # Killed in the second run's evaluation at step 4: the first run has finished, the second has a checkpoint.
    process = launch([*common, *settings, "--out", str(out)], tmp_path, pause="eval:4", run="coeff/seed0")
    kill_when_paused(process, tmp_path)
    assert (out / "reviews" / "coeff+lora" / "seed0" / "result.json").is_file()
    assert latest_checkpoint(second).name == "step-00000002"
    output = finish(launch([*common, *settings, "--out", str(out)], tmp_path))
    assert "1 run, 1 skipped" in output
    run_in_process([*common, *settings, "--out", str(tmp_path / "reference")])
    for method in ("coeff", "coeff+lora"):
        assert_same_run(
            out / "reviews" / method / "seed0", tmp_path / "reference" / "reviews" / method / "seed0"
        )
