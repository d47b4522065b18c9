"""Two CPU processes (gloo) through `accelerate launch` reproduce the single-process run.

Batches are split across processes (``split_batches``), DDP averages the two half-batch gradients into the
full-batch gradient, and evaluation gathers both halves, so the metrics and the trained delta match the
single-process run up to float reduction order. `accelerate launch --cpu` alone starts a single process;
the torchrun launcher (`--multi_gpu`) with `cpu=True` in the config gives Accelerate's MULTI_CPU mode.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from deltaspace.train import TrainConfig, train

SCRIPT = """
import sys
sys.path.insert(0, {tests_dir!r})
from conftest import make_task
from deltaspace.train import TrainConfig, train

config = TrainConfig.from_json(sys.argv[1])
train(config, task=make_task(n_train=64, n_val=30, n_test=30))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(tiny_model_dir, make_tiny_task, tmp_path):
    base = TrainConfig(
        task="tiny",
        model=str(tiny_model_dir),
        method="lora",
        lr=5e-2,
        batch_size=16,
        eval_batch_size=8,  # 30 validation examples: the last batch is uneven, gather_for_metrics trims it
        epochs=3,
        cpu=True,
        output_dir=str(tmp_path / "one"),
    )
    one = train(base, task=make_tiny_task(n_train=64, n_val=30, n_test=30))

    two_dir = tmp_path / "two"
    config_path = tmp_path / "two.json"
    # Checkpoints at every step (time-based: the processes must agree when one is due) change nothing.
    base.replace(output_dir=str(two_dir), checkpoint_minutes=1e-9).to_json(config_path)
    script = tmp_path / "run_two.py"
    script.write_text(textwrap.dedent(SCRIPT.format(tests_dir=str(Path(__file__).parent))))
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()),
        str(script), str(config_path),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=540)
    assert completed.returncode == 0, completed.stderr[-3000:]

    two = json.loads((two_dir / "result.json").read_text())
    assert two["num_processes"] == 2 and one.num_processes == 1
    assert two["best_step"] == one.best_step and two["steps"] == one.steps
    for split in ("validation", "test"):
        assert two[split]["accuracy"] == getattr(one, split)["accuracy"]
        assert two[split]["macro_f1"] == pytest.approx(getattr(one, split)["macro_f1"], abs=1e-9)
        assert two[split]["loss"] == pytest.approx(getattr(one, split)["loss"], abs=1e-4)
    weights_one = load_file(str(tmp_path / "one" / "delta" / "delta_model.safetensors"))
    weights_two = load_file(str(two_dir / "delta" / "delta_model.safetensors"))
    assert weights_one.keys() == weights_two.keys()
    for name in weights_one:
        torch.testing.assert_close(weights_two[name], weights_one[name], rtol=1e-4, atol=1e-5)
