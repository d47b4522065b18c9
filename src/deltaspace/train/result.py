"""The record of a finished run (``result.json``) and the run-directory layout."""

from __future__ import annotations

import dataclasses
import json
import resource
import sys
from pathlib import Path
from typing import Any

from deltaspace.io import write_json_atomic

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "result.json"
DELTA_DIR = "delta"
TB_DIR = "tb"


@dataclasses.dataclass
class RunResult:
    """What ``result.json`` holds. ``validation`` / ``test`` map metric -> value (accuracy, macro_f1, loss)."""

    task: str
    method: str
    seed: int
    model: str
    head: str
    trainable_params: int
    total_params: int
    best_step: int
    steps: int
    epochs: float
    stopped_early: bool
    validation: dict[str, float]
    test: dict[str, float]
    train_time_s: float
    total_time_s: float
    peak_rss_mb: float
    num_processes: int = 1
    data_seed: int = 0
    method_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    best_validation_during_training: dict[str, float] = dataclasses.field(default_factory=dict)
    peak_gpu_memory_mb: float | None = None
    run_dir: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})

    def save(self, run_dir: str | Path) -> None:
        write_json_atomic(Path(run_dir) / RESULT_FILE, self.to_dict())


def is_finished(run_dir: str | Path) -> bool:
    return (Path(run_dir) / RESULT_FILE).is_file()


def load_result(run_dir: str | Path) -> RunResult:
    path = Path(run_dir) / RESULT_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the run in {run_dir} has not finished (rerun it to complete it)"
        )
    result = RunResult.from_dict(json.loads(path.read_text()))
    result.run_dir = str(run_dir)
    return result


def peak_rss_mb() -> float:
    """This process's resident-memory high-water mark in MiB (since the process started)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
