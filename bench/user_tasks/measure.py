"""Defaults and `tune` on user-style data files (issue 23): does a user who brings a CSV beat the frozen probe?

For each file built by ``bench/user_tasks/build.py``, exactly what a user would type:

    deltaspace tune  --task FILE --method lora          # head (prototype, linear) x rate (x0.316/x1/x3.16) grid,
                                                        # choice on validation, seeds 0-2
    deltaspace train --task FILE --method coeff+lora    # the defaults

(through the Python API, one process; runs under ``--runs``, resumable). ``train --method lora`` with the
defaults is the tune grid's prototype x1 seed-0 run: the same TrainConfig apart from its output folder. Every
run records majority and the same-budget frozen probe on its own split. Writes
``bench/results/user_tasks.json`` and ``.md``. The results file is the record: a task already in it is kept
unless ``--only`` names it (or ``--remeasure``), so one file can be measured again without the others.

    python bench/user_tasks/build.py && python bench/user_tasks/measure.py      # ~1 h a task on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from deltaspace.io import write_json_atomic, write_text_atomic

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results"
FILES = {
    "election_tweets": "election_tweets.jsonl",
    "friends_speaker": "friends_speaker.csv",
    "review_sentiment": "review_sentiment.csv",
}


def measure(name: str, spec: str, runs: Path) -> dict:
    from deltaspace.train import TrainConfig, is_finished, load_result, train, tune

    start = time.perf_counter()
    tuned = tune(spec, ["lora"], out=runs / name / "tune", show=False)
    tune_seconds = time.perf_counter() - start
    grid_x1 = runs / name / "tune" / "grid" / "lora" / "prototype" / "x1" / "seed0"
    lora_default = load_result(grid_x1)
    coeff_dir = runs / name / "coeff+lora"
    if not is_finished(coeff_dir):
        train(TrainConfig(task=spec, method="coeff+lora", output_dir=str(coeff_dir)))
    coeff_default = load_result(coeff_dir)
    baselines = lora_default.baselines
    summary = tuned.to_dict()["methods"][0]
    from deltaspace.tasks import load_task

    return {
        "task": name,
        "file": spec,
        "classes": load_task(spec).num_labels,
        "majority": baselines["majority"]["test"]["accuracy"],
        "probe": baselines["probe"]["test"]["accuracy"],
        "probe_C": baselines["probe"]["C"],
        "train_lora_default": _run(lora_default),
        "train_coeff_lora_default": _run(coeff_default),
        "tune_lora": {
            "head": summary["head"],
            "validation_by_head": summary["validation_by_head"],
            "lr": summary["lr"],
            "multiple": summary["multiple"],
            "at_grid_edge": summary["at_grid_edge"],
            "validation_by_multiple": summary["validation_by_multiple"],
            "test_accuracy": summary["test_accuracy"],
            "test_accuracy_mean": summary["test_accuracy_mean"],
            "test_accuracy_sd": summary["test_accuracy_sd"],
            "seconds_this_invocation": round(tune_seconds, 1),
            "seconds_of_runs": round(
                sum(_seconds(p) for p in (runs / name / "tune").rglob("result.json")), 1
            ),
        },
    }


def _run(result) -> dict:
    return {
        "test_accuracy": result.test["accuracy"],
        "test_macro_f1": result.test["macro_f1"],
        "steps": result.steps,
        "best_step": result.best_step,
        "stopped_early": result.stopped_early,
        "total_time_s": result.total_time_s,
    }


def _seconds(path: Path) -> float:
    return float(json.loads(path.read_text())["total_time_s"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=HERE / "data", help="where build.py wrote the files")
    parser.add_argument(
        "--runs", type=Path, default=Path("runs") / "user_tasks", help="run folders (resumable)"
    )
    parser.add_argument("--only", nargs="*", default=None, help="measure only these tasks (again)")
    parser.add_argument("--remeasure", action="store_true", help="measure every task again")
    args = parser.parse_args()
    saved = RESULTS / "user_tasks.json"
    kept = json.loads(saved.read_text())["tasks"] if saved.exists() and not args.remeasure else []
    recorded = {row["task"]: row for row in kept}
    rows = []
    for name, file in FILES.items():
        if name in recorded and not (args.only and name in args.only):
            rows.append(recorded[name])
            continue
        if args.only and name not in args.only:
            continue
        path = args.data / file
        if not path.is_file():
            raise SystemExit(f"{path} not found; run `python bench/user_tasks/build.py` first")
        rows.append(measure(name, f"{path}?text=text&label=label", args.runs))
        _write(rows)
    _write(rows)  # the rows kept from the record after the last measured one too


def _write(rows: list[dict]) -> None:
    """bench/results/user_tasks.{json,md}, and the "Your own task" section of docs/results.md."""
    from deltaspace.report.user_tasks import replace_section, user_task_section

    threads = os.environ.get("OMP_NUM_THREADS", "all")
    meta = {
        "command": "python bench/user_tasks/measure.py",
        "machine": f"{os.cpu_count()} CPU cores ({platform.machine()}), {threads} torch thread(s)",
    }
    write_json_atomic(RESULTS / "user_tasks.json", {**meta, "tasks": rows})
    section = user_task_section(RESULTS / "user_tasks.json")
    write_text_atomic(RESULTS / "user_tasks.md", "\n".join(["# Your own task", *section[1:]]) + "\n")
    docs = HERE.parent.parent / "docs" / "results.md"
    write_text_atomic(docs, replace_section(docs.read_text(encoding="utf-8"), section))


if __name__ == "__main__":
    main()
