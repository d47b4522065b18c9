"""A study's reference points for its original-space runs: each task's majority class and the same-budget
frozen-embedding probe, scored on the examples the runs were scored on.

Issue 19 asks that every original be shown beside that probe: an original below it is a solution a user
would not accept, and a subspace built from it says little. Both baselines are cheap (the probe fits a
logistic regression on frozen embeddings, once per task and budget, then comes from the cache).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deltaspace.io import write_json_atomic
from deltaspace.train.result import slug

BASELINES_FILE = "baselines.json"


def write_baselines(out: str | Path, tasks: Sequence[str], train: dict[str, Any], model: str) -> Path:
    """``<out>/baselines.json``: ``{task slug: {"majority": ..., "probe": ...}}`` at the budget of ``train``
    (the study's original-space training settings). Tasks already in the file are kept as they are (a
    study's budget is fixed by its folder's config), so a resumed study rewrites nothing."""
    from deltaspace.tasks.load import load_task
    from deltaspace.train.baselines import majority_baseline, probe_baseline
    from deltaspace.train.config import TrainConfig

    path = Path(out) / BASELINES_FILE
    baselines = json.loads(path.read_text()) if path.is_file() else {}
    missing = [task for task in tasks if slug(task) not in baselines]
    if not missing:
        return path
    for task in missing:
        config = TrainConfig.from_dict({**train, "task": task, "model": model, "head": "prototype"})
        loaded = load_task(task, seed=config.data_seed)
        baselines[slug(task)] = {
            "majority": majority_baseline(config, loaded),
            "probe": probe_baseline(config, loaded),
        }
    write_json_atomic(path, baselines)
    return path


def read_baselines(out: str | Path) -> dict[str, dict[str, float | None]]:
    """``{task slug: {"majority": test accuracy, "probe": test accuracy}}``; empty before they are written."""
    path = Path(out) / BASELINES_FILE
    if not path.is_file():
        return {}
    return {
        task: {kind: known.get(kind, {}).get("test", {}).get("accuracy") for kind in ("majority", "probe")}
        for task, known in json.loads(path.read_text()).items()
    }
