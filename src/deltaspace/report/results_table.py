"""The results table: methods x tasks, mean ± std over seeds, with the average and trainable parameters."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from deltaspace.io import write_text_atomic
from deltaspace.report.numbers import human


def results_table(
    results: pd.DataFrame,
    metric: str = "test_accuracy",
    *,
    scale: float = 100.0,
    digits: int = 1,
    methods: list[str] | None = None,
    tasks: list[str] | None = None,
) -> str:
    """A markdown table from :func:`deltaspace.train.result.collect_results` rows.

    Rows are methods (``methods`` order, else first appearance), columns the tasks (``tasks`` order, else
    sorted), then ``Avg`` and ``Params``. A cell is the mean ± sample std over seeds of ``metric`` × ``scale``
    (no ± with one seed). ``Avg`` is the mean over tasks of the per-task means, ± the std over seeds of the
    per-seed task average (only seeds run on every task count); a method missing a task gets ``Avg*``,
    averaged over the tasks it has. ``Params`` is the trainable parameter count and its share of the model.
    """
    needed = {"task", "method", "seed", metric, "trainable_params", "total_params"}
    missing = sorted(needed - set(results.columns))
    if missing:
        raise ValueError(f"results lack column(s) {missing}; pass the frame collect_results() returns")
    if results.empty:
        raise ValueError("no finished runs to tabulate")
    methods = methods or list(dict.fromkeys(results["method"]))
    tasks = tasks or sorted(results["task"].unique())

    header = ["Method", *tasks, "Avg", "Params"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---", *["---:"] * (len(header) - 1)]) + "|"]
    incomplete = False
    for method in methods:
        rows = results[results["method"] == method]
        cells, task_means = [], []
        for task in tasks:
            values = rows.loc[rows["task"] == task, metric].dropna().to_numpy(dtype=float) * scale
            cells.append(_mean_std(values, digits))
            if len(values):
                task_means.append(values.mean())
        if not task_means:
            average = "–"
        else:
            average = f"{sum(task_means) / len(task_means):.{digits}f}"
            per_seed = rows[rows["task"].isin(tasks)].pivot_table(index="seed", columns="task", values=metric)
            per_seed = per_seed.dropna() * scale
            if len(task_means) == len(tasks) and len(per_seed) > 1 and per_seed.shape[1] == len(tasks):
                average += f" ± {per_seed.mean(axis=1).std(ddof=1):.{digits}f}"
            if len(task_means) < len(tasks):
                average += "*"
                incomplete = True
        cells.append(average)
        cells.append(_params(rows))
        lines.append("| " + " | ".join([method, *cells]) + " |")
    if incomplete:
        lines.append("")
        lines.append("\\* averaged over the tasks this method has results for.")
    return "\n".join(lines) + "\n"


def write_results_table(
    results: pd.DataFrame | str | Path, path: str | Path, metric: str = "test_accuracy"
) -> str:
    """Write :func:`results_table` of ``results`` (a frame or a sweep directory) to ``path`` atomically."""
    if not isinstance(results, pd.DataFrame):
        from deltaspace.train.result import collect_results

        results = collect_results(results)
    table = results_table(results, metric)
    title = f"# Results: {metric.replace('_', ' ')} (× 100, mean ± std over seeds)\n\n"
    write_text_atomic(path, title + table)
    return table


def _mean_std(values, digits: int) -> str:
    if len(values) == 0:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def _params(rows: pd.DataFrame) -> str:
    trainable = rows["trainable_params"].dropna()
    if trainable.empty:
        return "–"
    count = float(trainable.median())
    text = human(count)
    total = rows["total_params"].dropna()
    if not total.empty and float(total.median()) > 0:
        share = 100 * count / float(total.median())
        text += f" ({share:.0f}%)" if share >= 10 else f" ({share:.2g}%)"
    return text
