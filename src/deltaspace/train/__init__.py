"""Training: the config, the Accelerate loop, evaluation of saved runs, and resumable sharded sweeps."""

from deltaspace.train.build import build_classifier
from deltaspace.train.config import TrainConfig
from deltaspace.train.evaluate import evaluate_model, evaluate_run
from deltaspace.train.loop import train
from deltaspace.train.result import RunResult, collect_results, is_finished, load_result
from deltaspace.train.sweep import SweepConfig, run_sweep, shard_runs

__all__ = [
    "RunResult",
    "SweepConfig",
    "TrainConfig",
    "build_classifier",
    "collect_results",
    "evaluate_model",
    "evaluate_run",
    "is_finished",
    "load_result",
    "run_sweep",
    "shard_runs",
    "train",
]
