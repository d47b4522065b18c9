"""The record of a finished run (``result.json``), the run-directory layout, and the table of finished runs."""

from __future__ import annotations

import dataclasses
import json
import re
import resource
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from deltaspace.io import write_json_atomic

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "result.json"
PREDICTIONS_FILE = "predictions.json"
DELTA_DIR = "delta"
TB_DIR = "tb"


def slug(name: str) -> str:
    """A directory name for a task spec or method: a path becomes its file stem (options after '?' dropped);
    odd characters become '_'."""
    name = name.split("?", 1)[0]
    if "/" in name or "\\" in name or Path(name).suffix in (".csv", ".jsonl", ".json", ".tsv"):
        name = Path(name).stem if Path(name).suffix else Path(name).name
    return re.sub(r"[^A-Za-z0-9._+=-]", "_", name).strip(".") or "_"


def run_path(root: str | Path, task: str, method: str, seed: int) -> Path:
    """Where a sweep puts the run of ``method`` on ``task`` with ``seed`` (and a study finds it):
    ``<root>/<task>/<method>/seed<seed>``; the trained deltas are in its ``delta/`` (``DeltaModel`` format)."""
    return Path(root) / slug(task) / slug(method) / f"seed{seed}"


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
    baselines: dict[str, Any] = dataclasses.field(default_factory=dict)  # train.baselines
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


def save_predictions(run_dir: str | Path, splits: dict[str, tuple[Any, Any]]) -> None:
    """``predictions.json``: per split, the predicted and gold label of every scored example, in the order
    the split was scored (the same for every run of a task with the same data seed and example cap), so a
    report can pair runs example by example (paired bootstrap)."""
    write_json_atomic(
        Path(run_dir) / PREDICTIONS_FILE,
        {
            split: {"predictions": [int(p) for p in predictions], "labels": [int(y) for y in labels]}
            for split, (predictions, labels) in splits.items()
        },
    )


def load_predictions(run_dir: str | Path, split: str = "test") -> tuple[list[int], list[int]]:
    """``(predictions, labels)`` of ``split`` from a run's ``predictions.json``."""
    from deltaspace.errors import BrokenFileError, MissingFileError

    path = Path(run_dir) / PREDICTIONS_FILE
    if not path.is_file():
        raise MissingFileError(
            f"{path} not found: the run predates per-example predictions; rerun it (delete {run_dir})"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entry = data[split]
        predictions, labels = list(entry["predictions"]), list(entry["labels"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise BrokenFileError(
            f"{path} is damaged or lacks split {split!r} ({error}); rerun the run"
        ) from None
    if len(predictions) != len(labels):
        raise BrokenFileError(f"{path}: {split} has {len(predictions)} predictions for {len(labels)} labels")
    return predictions, labels


def peak_rss_mb() -> float:
    """This process's resident-memory high-water mark in MiB (since the process started)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def collect_results(out_dir: str | Path) -> pd.DataFrame:
    """One row per finished run under ``out_dir`` (any depth): the grid keys, sizes, metrics, timings."""
    rows = []
    for path in sorted(Path(out_dir).rglob(RESULT_FILE)):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # result.json is written atomically; anything unreadable is not ours
        row = {key: value for key, value in data.items() if not isinstance(value, dict)}
        for split, prefix in (("validation", "val"), ("test", "test")):
            for metric, value in (data.get(split) or {}).items():
                row[f"{prefix}_{metric}"] = value
        row["method_options"] = json.dumps(data.get("method_options", {}), sort_keys=True)
        row["run_dir"] = str(path.parent)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = frame.sort_values(["task", "method", "seed"], kind="stable").reset_index(drop=True)
    return frame
