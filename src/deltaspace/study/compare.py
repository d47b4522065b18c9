"""Finished studies side by side on the held-out tasks they share: each figure with its interval, and each
study's difference from the first, paired on the test examples the studies share.

Stage-1 variants of one study (full_suite, full_suite_fit, full_suite_fit_random) share their held-out tasks,
originals and test examples, so a difference between them is measured on the same examples: the paired
bootstrap (:func:`deltaspace.subspace.gain.bootstrap_difference`) resamples each task's examples once for
every study, which removes the noise they share and gives an interval for "did the variant change this?".
Only tasks every study scored on the same examples (the same gold labels) are compared; the others are named.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltaspace.errors import UserInputError
from deltaspace.io import atomic_write, write_text_atomic
from deltaspace.study.records import LEARNED, SHARED, Stage2Record
from deltaspace.study.report import _table, _with_interval, load_records, paired_difference, pooled
from deltaspace.subspace.gain import GainCell

# What each column measures, in the order a reader follows: optimisation, its controls, then across DETs.
FIGURES = {
    LEARNED: "own code",
    "span": "span control",
    "random": "random control",
    SHARED: "one code for all",
    "transfer": "transfer across DETs",
}


@dataclass
class StudyView:
    """One finished study as the comparison reads it: its held-out records by task."""

    name: str
    config: dict[str, Any]
    records: dict[str, Stage2Record]

    @property
    def methods(self) -> list[str]:
        return list(self.config["methods"])

    def stage1(self) -> str:
        """Stage 1 in a few words: how the subspace was built."""
        fit = self.config.get("fit", {})
        steps = int(fit.get("steps", 0))
        trained = (
            f"{steps:,} joint-fit steps ({fit.get('keep', 'best')} state kept)" if steps else "no joint fit"
        )
        directions = "descent" if fit.get("gradient_directions", True) else "random"
        return (
            f"{fit.get('init', '?')} start, {trained}, {directions} extra directions, d = {fit.get('dim', '?')}, "
            f"{len(self.config.get('source_tasks', []))} source tasks"
        )

    def stage2(self) -> str:
        """Stage 2 in a few words: its budget, and where its codes may go."""
        optimise = self.config.get("optimise", {})
        region = (
            "mixtures of θ0 and the source codes" if optimise.get("region", "free") == "hull" else "any code"
        )
        return f"{optimise.get('steps', '?')} steps of {optimise.get('optimizer', '?')} at {optimise.get('lr', '?')}, {region}"


def load_study_view(out: str | Path) -> StudyView:
    """A finished study folder's held-out stage-2 records (the report's own reading of them)."""
    out = Path(out)
    path = out / "config.json"
    if not path.is_file():
        raise UserInputError(f"{out}: no config.json; give the folder a study wrote (deltaspace study --out)")
    config = json.loads(path.read_text())
    if "methods" not in config or "heldout_tasks" not in config:
        raise UserInputError(
            f"{path} is not one study's config (a single-task or source-curve folder holds one study per "
            "pair or point: give those folders)"
        )
    records = {r.task: r for r in load_records(out, config) if r.heldout}
    if not records:
        raise UserInputError(
            f"{out}: no held-out stage-2 records yet; run its optimise stage first "
            f"(deltaspace study {path} --stages optimise)"
        )
    return StudyView(config.get("name", out.name), config, records)


def figure_cells(record: Stage2Record, figure: str, methods: Sequence[str]) -> list[GainCell] | None:
    """``figure``'s gain cells of one task over ``methods`` (``None`` where the record lacks it)."""
    if figure == "transfer":
        cells = [c for c in record.transfer_cells() if set(c.member.split("->")) <= set(methods)]
        return cells or None
    if figure == SHARED:
        cells = [c for c in record.shared_cells() if c.member in methods]
        return cells if len(cells) == len(methods) else None
    runs = record.runs.get(figure, {})
    if any(m not in runs for m in methods):
        return None
    return [record.gain_cell(figure, m) for m in methods]


@dataclass
class Comparison:
    """The studies, the tasks and DETs they are compared on, and the tasks left out (not shared, or scored
    on other examples)."""

    views: list[StudyView]
    tasks: list[str]
    methods: list[str]
    left_out: list[str]

    def cells(self, view: StudyView, figure: str, det: str | None = None) -> list[GainCell] | None:
        """``figure``'s cells in ``view`` over the compared tasks (one DET's: for transfer, into it)."""
        chosen: list[GainCell] = []
        for task in self.tasks:
            cells = figure_cells(view.records[task], figure, self.methods)
            if cells is None:
                return None
            chosen += [c for c in cells if det is None or c.member.split("->")[-1] == det]
        return chosen


def compare(views: Sequence[StudyView], dets: Sequence[str] | None = None) -> Comparison:
    """The held-out tasks every study scored on the same test examples, and the DETs they all trained (only
    ``dets`` of them when given: transfer then counts pairs among those, a shared code is still the one
    trained through every DET of its study)."""
    if len(views) < 2:
        raise UserInputError("give at least two study folders to compare")
    first = views[0]
    shared = [t for t in first.records if all(t in v.records for v in views[1:])]
    tasks = [t for t in shared if all(v.records[t].gold == first.records[t].gold for v in views[1:])]
    methods = [m for m in first.methods if all(m in v.methods for v in views[1:])]
    if dets:
        missing = sorted(set(dets) - set(methods))
        if missing:
            raise UserInputError(
                f"--dets {missing} not trained in every study; choose from {', '.join(methods)}"
            )
        methods = [m for m in methods if m in dets]
    if not tasks:
        raise UserInputError(
            "the studies share no held-out task scored on the same test examples; compare variants of one "
            "study (same suite, split and held-out tasks)"
        )
    if not methods:
        raise UserInputError("the studies share no DET; compare studies with at least one method in common")
    left_out = [t for v in views for t in v.records if t not in tasks]
    return Comparison(list(views), tasks, methods, sorted(set(left_out)))


def _difference(comparison: Comparison, view: StudyView, figure: str, resamples: int) -> str:
    base, other = comparison.cells(comparison.views[0], figure), comparison.cells(view, figure)
    if base is None or other is None:
        return "–"
    return paired_difference(base, other, resamples=resamples)


def comparison_markdown(comparison: Comparison, *, resamples: int = 2000, command: str = "") -> str:
    views = comparison.views
    figures = [f for f in FIGURES if any(comparison.cells(v, f) is not None for v in views)]
    lines = [
        "# Studies compared",
        "",
        f"Gain recovered over θ0 (%), pooled over the {len(comparison.tasks)} held-out task(s) the studies "
        f"share ({', '.join(comparison.tasks)}) and the DETs they all trained ({', '.join(comparison.methods)}), "
        "with paired bootstrap 95 % intervals (– where a study did not run that part).",
    ]
    if comparison.left_out:
        lines += [
            "",
            f"Left out (not in every study, or scored on other test examples): {', '.join(comparison.left_out)}.",
        ]
    if command:
        lines += ["", f"Regenerate with `{command}`."]
    lines += [
        "",
        *_table(["study", "stage 1", "stage 2"], [[f"`{v.name}`", v.stage1(), v.stage2()] for v in views]),
        "",
    ]

    def row(view: StudyView, cell: Callable[[str], str]) -> list[str]:
        return [f"`{view.name}`", *(cell(f) for f in figures)]

    lines += _table(
        ["study", *(FIGURES[f] for f in figures)],
        [row(v, lambda f, v=v: _figure(comparison, v, f)) for v in views],
    )
    lines += [
        "",
        f"Difference from `{views[0].name}` (points of gain recovered; paired on the same test examples, one "
        "resample of each task's examples for both studies; bold where the interval excludes 0):",
        "",
        *_table(
            ["study", *(FIGURES[f] for f in figures)],
            [row(v, lambda f, v=v: _difference(comparison, v, f, resamples)) for v in views[1:]],
        ),
    ]
    for figure in figures:
        rows = [[det, *(_figure(comparison, v, figure, det) for v in views)] for det in comparison.methods]
        into = " (into each DET: the other DETs' codes decoded by it)" if figure == "transfer" else ""
        lines += [
            "",
            f"**{FIGURES[figure]}** per DET{into}:",
            "",
            *_table(["DET", *(f"`{v.name}`" for v in views)], rows),
        ]
    return "\n".join(lines) + "\n"


def _figure(comparison: Comparison, view: StudyView, figure: str, det: str | None = None) -> str:
    cells = comparison.cells(view, figure, det)
    return "–" if not cells else _with_interval(*pooled(cells))


def plot_comparison(comparison: Comparison, path: Path) -> Path:
    """Grouped bars: one group per figure, one bar per study, the interval as an error bar."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    views = comparison.views
    figures = [f for f in FIGURES if any(comparison.cells(v, f) is not None for v in views)]
    fig = Figure(figsize=(1.9 * len(figures) + 2.5, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / len(views)
    for i, view in enumerate(views):
        xs, gains, errors = [], [], [[], []]
        for j, figure in enumerate(figures):
            cells = comparison.cells(view, figure)
            gain, interval = pooled(cells) if cells else (None, None)
            if gain is None:
                continue
            low, high = interval or (gain, gain)
            xs.append(j + (i - (len(views) - 1) / 2) * width)
            gains.append(gain)
            errors[0].append(gain - low)
            errors[1].append(high - gain)
        ax.bar(xs, gains, width, yerr=np.array(errors), capsize=3, label=view.name)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(range(len(figures)), [FIGURES[f] for f in figures])
    ax.set_ylabel("gain recovered over θ0 (%)")
    ax.set_title(f"{len(comparison.tasks)} held-out tasks, {', '.join(comparison.methods)}", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def write_comparison(
    outs: Sequence[str | Path],
    output: Path | None = None,
    *,
    plot: Path | None = None,
    dets: Sequence[str] | None = None,
    resamples: int = 2000,
    command: str = "",
) -> str:
    """The comparison's markdown (written to ``output`` when given), and its plot when ``plot`` is given."""
    comparison = compare([load_study_view(out) for out in outs], dets)
    text = comparison_markdown(comparison, resamples=resamples, command=command)
    if output is not None:
        write_text_atomic(output, text)
    if plot is not None:
        plot_comparison(comparison, plot)
    return text
