"""Tasks: the ten-task suite, user CSV / JSONL / ``datasets`` loaders, seeded splits, metrics."""

from deltaspace.tasks.load import load_task
from deltaspace.tasks.metrics import compute_metrics, majority_baseline
from deltaspace.tasks.registry import HELDOUT_TASKS, SOURCE_TASKS, SUITE, SUITE_TASKS, SuiteTask
from deltaspace.tasks.task import Task

__all__ = [
    "HELDOUT_TASKS",
    "SOURCE_TASKS",
    "SUITE",
    "SUITE_TASKS",
    "SuiteTask",
    "Task",
    "compute_metrics",
    "load_task",
    "majority_baseline",
]
