"""Training: the config, the Accelerate loop, evaluation of saved runs, resumable sharded sweeps, the tuned
sweep (learning rate chosen per task on validation, then seeds) and the same-budget linear probe."""

from deltaspace.train.build import build_classifier
from deltaspace.train.config import TrainConfig
from deltaspace.train.evaluate import evaluate_model, evaluate_run
from deltaspace.train.loop import train
from deltaspace.train.probe import run_probe
from deltaspace.train.result import RunResult, collect_results, is_finished, load_predictions, load_result
from deltaspace.train.sweep import SweepConfig, run_sweep, shard_runs
from deltaspace.train.tuned import TunedSweepConfig, run_tuned

__all__ = [
    "RunResult",
    "SweepConfig",
    "TrainConfig",
    "TunedSweepConfig",
    "build_classifier",
    "collect_results",
    "evaluate_model",
    "evaluate_run",
    "is_finished",
    "load_predictions",
    "load_result",
    "run_probe",
    "run_sweep",
    "run_tuned",
    "shard_runs",
    "train",
]
