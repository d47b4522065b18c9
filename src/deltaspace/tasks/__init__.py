"""Tasks: suite v2 (20 tasks) and the optional BIG-bench tasks of suite v1, user CSV / JSONL / ``datasets``
loaders, seeded (grouped) splits, metrics."""

from deltaspace.tasks.load import load_task
from deltaspace.tasks.metrics import compute_metrics, majority_baseline
from deltaspace.tasks.registry import (
    BIGBENCH_TASKS,
    HELDOUT_TASKS,
    SOURCE_TASKS,
    SUITE,
    SUITE_TASKS,
    V1_TASKS,
    SuiteTask,
)
from deltaspace.tasks.task import Task

__all__ = [
    "BIGBENCH_TASKS",
    "HELDOUT_TASKS",
    "SOURCE_TASKS",
    "SUITE",
    "SUITE_TASKS",
    "V1_TASKS",
    "SuiteTask",
    "Task",
    "compute_metrics",
    "load_task",
    "majority_baseline",
]
