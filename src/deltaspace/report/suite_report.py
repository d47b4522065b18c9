"""docs/results.md: every DET on the suite, from a finished sweep directory.

python -m deltaspace.report.suite_report runs/suite docs/results.md [CONTROL_DIR=NAME ...]

Run from the repository root: the linear-probe reference row is read from ``bench/results/linear_probe.json``
there, when it exists. Control sweeps join the tables under their NAME. Every Coeff + LoRA variant (``coeff+lora``, or a name
starting ``coeff+lora@``) is compared seed by seed with every LoRA variant (``lora``, ``lora@...``).
Hand-written notes below the NOTES_MARKER line of an existing output file are kept on regeneration.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from deltaspace.io import write_text_atomic
from deltaspace.report.results_table import results_table

COEFF_WITH, COEFF_WITHOUT = "coeff+lora", "lora"
# The linear-probe reference, relative to the working directory (run from the repository root).
PROBE_RESULTS = Path("bench") / "results" / "linear_probe.json"
NOTES_MARKER = "<!-- notes: written by hand, kept when this file is regenerated -->"


def _variants(methods: list[str], base: str) -> list[str]:
    return [m for m in methods if m == base or m.startswith(base + "@")]


def _paired_gain(frame: pd.DataFrame, with_coeff: str, without: str, tasks: list[str]) -> list[str]:
    """Per task: mean test accuracy of ``with_coeff`` minus ``without`` over the seeds both have."""
    rows, gains = [], []
    for task in tasks:
        a = frame[(frame.task == task) & (frame.method == with_coeff)].set_index("seed").test_accuracy
        b = frame[(frame.task == task) & (frame.method == without)].set_index("seed").test_accuracy
        seeds = sorted(set(a.index) & set(b.index))
        if not seeds:
            continue
        diff = 100 * (a[seeds] - b[seeds])
        gains.append(float(diff.mean()))
        wins = int((diff > 0).sum())
        spread = f" ± {diff.std(ddof=1):.1f}" if len(seeds) > 1 else ""
        rows.append(f"| {task} | {diff.mean():+.1f}{spread} | {wins}/{len(seeds)} |")
    if not rows:
        return []
    header = [
        f"| task | {with_coeff} − {without} (accuracy points, mean ± std over seeds) | seeds where it helps |",
        "|---|---|---|",
    ]
    footer = [f"| **mean over tasks** | **{np.mean(gains):+.1f}** | |"]
    return header + rows + footer


def _reference_rows(tasks: list[str], path: Path | None) -> list[str]:
    """Majority baseline and the frozen linear probe (bench/linear_probe.py), when its results are given."""
    from deltaspace.report.tuned_report import probe_rows

    by_task = probe_rows(path)
    if by_task is None:
        return []
    cells = {
        key: [f"{100 * by_task[t][key]:.1f}" if t in by_task else "–" for t in tasks]
        for key in ("majority", "probe_accuracy")
    }
    return [
        "## Reference points",
        "",
        "From `python bench/linear_probe.py` (full train split up to 2,000 examples and full test split, so "
        "not the runs' budget): the majority class and a logistic-regression probe on frozen mean-pooled "
        "MiniLM-L6 embeddings.",
        "",
        "| reference | " + " | ".join(tasks) + " |",
        "|---|" + "---:|" * len(tasks),
        "| majority class | " + " | ".join(cells["majority"]) + " |",
        "| linear probe (frozen) | " + " | ".join(cells["probe_accuracy"]) + " |",
        "",
    ]


def suite_report(
    sweep_dir: str | Path,
    command: str,
    controls: dict[str, str | Path] | None = None,
    probe_results: str | Path | None = None,
) -> str:
    from deltaspace.tasks import SUITE_TASKS, V1_TASKS
    from deltaspace.train.result import collect_results

    frame = collect_results(sweep_dir)
    if frame.empty:
        raise ValueError(f"no finished runs under {sweep_dir}; run the sweep first")
    for name, directory in (controls or {}).items():
        control = collect_results(directory)
        if control.empty:
            raise ValueError(f"no finished runs under control sweep {directory}")
        frame = pd.concat([frame, control.assign(method=name)], ignore_index=True)
    present = set(frame.task)
    # suite order (v1's for a v1 sweep), then any user tasks in the order they were run
    order = V1_TASKS if present <= set(V1_TASKS) else SUITE_TASKS
    tasks = [t for t in order if t in present] + [t for t in dict.fromkeys(frame.task) if t not in order]
    methods = list(dict.fromkeys(frame.sort_values("trainable_params").method))
    seeds = frame.groupby("method").seed.nunique().to_dict()
    lines = [
        "# Every delta-tuning method on the suite (MiniLM-L6)",
        "",
        f"Produced by: `{command}`. Budget per run (2 CPU cores): see `configs/sweep_suite.yaml` (400 training "
        "examples, 2 epochs, batch 32, inputs cut at 64 tokens, best validation checkpoint, 250 test "
        "examples). Head: label prototypes (cosine to the frozen model's embedding of each label name), so "
        "every method trains only its own parameters. Cells: test accuracy (%), mean ± std over seeds.",
        "",
        "Seeds per method: " + ", ".join(f"{m} {seeds[m]}" for m in methods) + ".",
        "",
        "## Test accuracy",
        "",
        results_table(frame, "test_accuracy", methods=methods, tasks=tasks),
        "",
        "## Test macro-F1",
        "",
        results_table(frame, "test_macro_f1", methods=methods, tasks=tasks),
        "",
    ]
    lines += _reference_rows(tasks, Path(probe_results) if probe_results is not None else None)
    for with_coeff in _variants(methods, COEFF_WITH):
        for without in _variants(methods, COEFF_WITHOUT):
            gain = _paired_gain(frame, with_coeff, without, tasks)
            if gain:
                lines += [f"## {with_coeff} against {without}", "", *gain, ""]
    return "\n".join(lines) + "\n"


def _kept_notes(path: Path) -> str:
    if not path.is_file():
        return ""
    text = path.read_text()
    return text[text.index(NOTES_MARKER) :] if NOTES_MARKER in text else ""


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or any("=" not in a for a in argv[2:]):
        raise SystemExit(
            "usage: python -m deltaspace.report.suite_report SWEEP_DIR OUTPUT.md [CONTROL_DIR=NAME ...]"
        )
    sweep_dir, output = argv[:2]
    controls = {name: directory for directory, name in (a.split("=", 1) for a in argv[2:])}
    command = "python -m deltaspace.report.suite_report " + " ".join(argv)
    report = suite_report(sweep_dir, command, controls, PROBE_RESULTS)
    notes = _kept_notes(Path(output))
    write_text_atomic(output, report + ("\n" + notes if notes else ""))
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
