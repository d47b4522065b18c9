"""Training: the config and its defaults, the Accelerate loop, evaluation of saved runs, resumable sharded
sweeps, the tuned sweep (learning rate chosen per task on validation, then seeds), ``tune`` (the same for one
task), and the baselines every run is read against (majority, the same-budget linear probe).

The names are imported lazily, so the CLI can read ``TrainConfig`` (its options) without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RunResult": "deltaspace.train.result",
    "SweepConfig": "deltaspace.train.sweep",
    "TunedSweepConfig": "deltaspace.train.tuned",
    "TrainConfig": "deltaspace.train.config",
    "build_classifier": "deltaspace.train.build",
    "collect_results": "deltaspace.train.result",
    "evaluate_model": "deltaspace.train.evaluate",
    "evaluate_run": "deltaspace.train.evaluate",
    "is_finished": "deltaspace.train.result",
    "load_predictions": "deltaspace.train.result",
    "load_result": "deltaspace.train.result",
    "run_probe": "deltaspace.train.probe",
    "run_sweep": "deltaspace.train.sweep",
    "run_tuned": "deltaspace.train.tuned",
    "shard_runs": "deltaspace.train.sweep",
    "train": "deltaspace.train.loop",
    "tune": "deltaspace.train.tune_task",
    "TuneResult": "deltaspace.train.tune_task",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'deltaspace.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
