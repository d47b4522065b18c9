"""How many source tasks a shared subspace needs: the multi-task study at k source tasks and d dimensions.

The held-out tasks stay fixed; the source tasks are the first k of a random order of the pool (one order
per draw, so the k = 4 subsets are inside the k = 8 ones and a curve compares nested task sets), for every
k in ``ks`` and d in ``dims``. Each (k, d, draw) is one study of :mod:`deltaspace.study.pipeline` under
``<out>/k<k>-d<d>-draw<j>/``, all sharing one folder of original-space runs, so the sweep trains each
(task, DET) once. The span control (each DET's own k source solutions, filled with random directions)
runs in every study; the random control depends on d only and runs once per d, at the largest k.
No landscape: the curve is the point.

``<out>/report.md`` gives, per (k, d), gain recovered over θ0 for optimisation inside the learned subspace,
for the controls and for zero-shot transfer across DETs, pooled over the held-out tasks and the draws with a
paired bootstrap 95 % interval (the draws share the held-out tasks' test examples, so they are resampled
together); ``<out>/source_curve.png`` draws it.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import numpy as np

from deltaspace.errors import UserInputError
from deltaspace.io import atomic_write, write_json_atomic, write_text_atomic
from deltaspace.study.config import StudyConfig, _build
from deltaspace.study.records import LEARNED, Stage2Record
from deltaspace.study.report import _table, _with_interval, paired_difference, pooled, time_section
from deltaspace.subspace.gain import GainCell
from deltaspace.train.result import slug

STAGES = ("sweep", "fit", "optimise", "report")
# Set per (k, d, draw) from the curve's own fields; the shared ``study`` section names none of them.
_PER_POINT = ("name", "out", "runs", "source_tasks", "heldout_tasks", "heldout_mode", "optimise_tasks")
KINDS = (LEARNED, "span", "random", "transfer", "shared_own", "shared_transfer")
LABELS = {
    LEARNED: "optimisation, learned",
    "span": "span control",
    "random": "random control",
    "transfer": "transfer across DETs",
    "shared_own": "shared coordinates only: own DET",
    "shared_transfer": "shared coordinates only: transfer",
}


@dataclasses.dataclass(frozen=True)
class CurvePoint:
    """One study of the curve: ``k`` source tasks (draw ``draw``), ``dim`` dimensions."""

    k: int
    dim: int
    draw: int
    sources: tuple[str, ...]

    @property
    def folder(self) -> str:
        return f"k{self.k}-d{self.dim}-draw{self.draw}"


@dataclasses.dataclass
class SourceCurveConfig:
    """``source_tasks``: the pool the k sources are drawn from; ``heldout_tasks``: fixed, never a source;
    ``ks``: source-task counts (each ≤ the pool; the pool's size is "all", drawn once); ``dims``: the
    intrinsic dimensions d; ``draws``: random orders of the pool (subsets per k < all); ``seed``: of the
    orders; ``study``: every other :class:`StudyConfig` field (model, methods, train, fit, optimise,
    controls, budgets), shared by all points; ``runs``: the shared original-space runs (default
    ``<out>/runs``)."""

    name: str = "source_curve"
    out: str = "studies/source_curve"
    runs: str | None = None
    source_tasks: list[str] = dataclasses.field(default_factory=list)
    heldout_tasks: list[str] = dataclasses.field(default_factory=list)
    ks: list[int] = dataclasses.field(default_factory=lambda: [4, 8, 16])
    dims: list[int] = dataclasses.field(default_factory=lambda: [16, 64])
    draws: int = 2
    seed: int = 0
    study: dict[str, Any] = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        pool, heldout = list(self.source_tasks), list(self.heldout_tasks)
        if not pool or not heldout:
            raise UserInputError("a source curve needs source_tasks (the pool) and heldout_tasks")
        shared = sorted(set(pool) & set(heldout))
        if shared:
            raise UserInputError(f"{shared[0]!r} is both a source and a held-out task; list it once")
        bad = [k for k in self.ks if not isinstance(k, int) or not 1 <= k <= len(pool)]
        if not self.ks or bad:
            raise UserInputError(
                f"ks must be source-task counts from 1 to the pool's {len(pool)}, got {bad or self.ks}; "
                "add tasks to source_tasks for a larger k"
            )
        if not self.dims or any(not isinstance(d, int) or d < 1 for d in self.dims):
            raise UserInputError(f"dims must be positive integers, got {self.dims}")
        if not isinstance(self.draws, int) or self.draws < 1:
            raise UserInputError(f"draws must be a positive integer, got {self.draws!r}")
        named = sorted(set(self.study) & set(_PER_POINT))
        if named:
            raise UserInputError(f"study.{named[0]} is set per point of a source curve; remove it")
        for study in self.studies():
            study.validate()

    @property
    def runs_dir(self) -> Path:
        return Path(self.runs) if self.runs else Path(self.out) / "runs"

    def points(self) -> list[CurvePoint]:
        """Every (k, d, draw), k ascending; the pool's full size is drawn once (every order gives it)."""
        pool = list(self.source_tasks)
        orders = []
        for draw in range(self.draws):
            order = list(pool)
            random.Random(f"{self.seed}-{draw}").shuffle(order)
            orders.append(order)
        points = []
        for k in sorted(set(self.ks)):
            for dim in self.dims:
                for draw in range(1 if k == len(pool) else self.draws):
                    chosen = set(orders[draw][:k])
                    points.append(CurvePoint(k, dim, draw, tuple(t for t in pool if t in chosen)))
        return points

    def studies(self) -> list[StudyConfig]:
        largest = max(self.ks)
        controls = list(self.study.get("controls", ["random", "span"]))
        fit = dict(self.study.get("fit") or {})
        return [
            StudyConfig.from_dict(
                {
                    **self.study,
                    "name": f"{self.name}: {point.folder}",
                    "out": str(Path(self.out) / point.folder),
                    "runs": str(self.runs_dir),
                    "source_tasks": list(point.sources),
                    "heldout_tasks": list(self.heldout_tasks),
                    "fit": {**fit, "dim": point.dim},
                    # random directions do not depend on the sources: once per d, at the largest k
                    "controls": [c for c in controls if c != "random" or point.k == largest],
                }
            )
            for point in self.points()
        ]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SourceCurveConfig:
        config = _build(cls, {key: value for key, value in data.items() if key != "setting"}, "source curve")
        config.validate()
        return config


def run_source_curve(
    config: SourceCurveConfig, *, stages: tuple[str, ...] = STAGES, workers: int | None = None
) -> Path:
    """Run (or resume) the curve: every point's original-space runs in one sweep, then each point's stage 1
    and stages 2-3 in :func:`finishing_order`, its jobs spread over ``workers`` processes
    (:func:`deltaspace.study.pipeline.run_studies`), ``<out>/report.md`` and the plot rewritten after each
    point. A curve takes hours on a CPU: stopped part way, it has reported every finished point (the whole
    grid of one draw first), not only stage-1 fits and unpaired stage-2 parts."""
    from deltaspace.study.pipeline import run_study_set

    config.validate()
    out = Path(config.out)
    stages = tuple(s for s in stages if s in STAGES)
    studies = dict(zip(config.points(), config.studies(), strict=True))
    if "sweep" in stages:
        run_study_set(out, config.to_dict(), list(studies.values()), ("sweep",), workers)
    per_point = tuple(s for s in stages if s in ("fit", "optimise", "report"))
    report = None
    for point in finishing_order(list(studies)) if per_point else []:
        run_study_set(out, config.to_dict(), [studies[point]], per_point, workers)
        report = write_source_curve_report(out)
    return report or write_source_curve_report(out)


def finishing_order(points: list[CurvePoint]) -> list[CurvePoint]:
    """The order points are finished in: by draw, then d, then k, so the whole (k, d) grid of one draw comes
    first (the full pool, drawn once, with draw 0) and each later draw tightens it."""
    return sorted(points, key=lambda p: (p.draw, p.dim, p.k))


# ---------------------------------------------------------------- the report


def curve_cells(
    records: dict[CurvePoint, list[Stage2Record]],
) -> dict[tuple[int, int], dict[str, list[GainCell]]]:
    """``{(k, d): {kind: cells}}`` over the finished points' held-out records (:func:`finished_records`);
    kind: learned, a control, ``transfer`` (every off-diagonal DET pair), ``shared_own`` / ``shared_transfer``
    (the codes cut to the shared coordinates, on and off the diagonal)."""
    found: dict[tuple[int, int], dict[str, list[GainCell]]] = {}
    for point, point_records in records.items():
        by_kind = found.setdefault((point.k, point.dim), {})
        for record in point_records:
            for kind, by_det in record.runs.items():
                by_kind.setdefault(kind, []).extend(record.gain_cell(kind, det) for det in by_det)
            by_kind.setdefault("transfer", []).extend(record.transfer_cells())
            shared = record.transfer_shared
            by_kind.setdefault("shared_own", []).extend(record.matrix_cells(shared, diagonal=True))
            by_kind.setdefault("shared_transfer", []).extend(record.matrix_cells(shared, diagonal=False))
    return found


def curve_summary(
    out: Path,
    config: SourceCurveConfig,
    records: dict[CurvePoint, list[Stage2Record]],
    cells: dict[tuple[int, int], dict[str, list[GainCell]]],
) -> list[dict[str, Any]]:
    """One row per (k, d) of ``cells`` (:func:`curve_cells` of ``records``): each kind's pooled gain recovered
    and interval, and how many cells it pools."""
    rows = []
    geometry = curve_geometry(out, records)
    for (k, dim), by_kind in sorted(cells.items()):
        row: dict[str, Any] = {
            "k": k,
            "d": dim,
            "draws": _draws_done(out, config, k, dim),
            "directions": _directions(out, k, dim),
            "code_geometry": geometry.get((k, dim)),
        }
        for kind in KINDS:
            cells = by_kind.get(kind, [])
            value, interval = pooled(cells) if cells else (None, None)
            row[kind] = {"gain": value, "interval": interval, "cells": len(cells)}
        rows.append(row)
    return rows


def finished_records(out: Path, config: SourceCurveConfig) -> dict[CurvePoint, list[Stage2Record]]:
    """Each point's held-out records; none for a point while any is missing (it enters whole or not at all)."""
    return {
        point: [
            Stage2Record.from_dict(
                json.loads((out / point.folder / "stage2" / f"{slug(t)}.json").read_text())
            )
            for t in config.heldout_tasks
        ]
        if _finished(out, config, point)
        else []
        for point in config.points()
    }


def curve_geometry(
    out: Path, records: dict[CurvePoint, list[Stage2Record]]
) -> dict[tuple[int, int], dict[str, float]]:
    """``{(k, d): mean geometry}`` of the learned held-out codes of every DET and finished draw against
    their point's source codes (:func:`deltaspace.study.report.code_places`): does a held-out code sit
    more inside the source codes' span, as a mixture of them, when there are more of them?"""
    from deltaspace.study.report import code_places, mean_geometry

    found: dict[tuple[int, int], list] = {}
    for point, point_records in records.items():
        if point_records:
            places, _ = code_places(out / point.folder, point_records)
            found.setdefault((point.k, point.dim), []).extend(g for by_det in places.values() for g in by_det)
    return {key: mean_geometry(geometries) for key, geometries in found.items() if geometries}


def _finished(out: Path, config: SourceCurveConfig, point: CurvePoint) -> bool:
    """Every held-out record of the point written: a curve stopped part way pools only finished points."""
    return all(
        (out / point.folder / "stage2" / f"{slug(task)}.json").is_file() for task in config.heldout_tasks
    )


def _draws_done(out: Path, config: SourceCurveConfig, k: int, dim: int) -> int:
    return sum(_finished(out, config, p) for p in config.points() if (p.k, p.dim) == (k, dim))


def _directions(out: Path, k: int, dim: int) -> dict[str, int] | None:
    """The learned subspace's make-up at (k, d), from a finished fit: k shared solution directions, the
    sources' descent directions, random ones for the rest. At a fixed d more sources leave fewer descent
    directions, so the curve shows both effects at once; this column says how they trade."""
    path = next(iter(sorted(out.glob(f"k{k}-d{dim}-draw*/subspace/fit.json"))), None)
    if path is None:
        return None
    layout = json.loads(path.read_text()).get("closed_form") or {}
    if "basis_dim" not in layout:
        return None
    solution, descent = layout["basis_dim"], layout.get("gradient_dim", 0)
    return {"solution": solution, "descent": descent, "random": dim - solution - descent}


def write_source_curve_report(out: str | Path) -> Path:
    """``<out>/report.md``, ``<out>/curve.json`` and ``<out>/source_curve.png`` from the records present."""
    out = Path(out)
    config = SourceCurveConfig.from_dict(json.loads((out / "config.json").read_text()))
    records = finished_records(out, config)
    cells_at = curve_cells(records)
    rows = curve_summary(out, config, records, cells_at)
    write_json_atomic(out / "curve.json", rows)
    study = config.study
    methods = study.get("methods", [])
    optimise = study.get("optimise", {})
    fit = study.get("fit", {})
    lines = [
        f"# deltaspace source curve `{config.name}`",
        "",
        f"How many source tasks a shared subspace needs. Held-out tasks (fixed): "
        f"{', '.join(map(slug, config.heldout_tasks))}. Source pool ({len(config.source_tasks)}): "
        f"{', '.join(map(slug, config.source_tasks))}; k ∈ {sorted(set(config.ks))} drawn as the first k of "
        f"{config.draws} random orders of the pool (nested subsets), d ∈ {config.dims}. Model "
        f"**{Path(study.get('model', 'minilm-l6')).name}**; DETs {', '.join(methods)}. Stage 1: "
        f"{fit.get('init', 'closed_form')} start, {fit.get('steps', 0)} joint-fit steps; stage 2: "
        f"{optimise.get('steps', '?')} steps of {study.get('batch_size', '?')} (lr {optimise.get('lr', '?')}). "
        f"Regenerate with `deltaspace study {out / 'config.json'}`; each point's own report is "
        "`k<k>-d<d>-draw<j>/report.md`.",
        "",
        "Gain recovered (%) = Σ (subspace − θ0 accuracy) / Σ (original − θ0 accuracy) × 100, pooled over the "
        "held-out tasks, the DETs and the draws, with a paired bootstrap 95 % interval. The random control "
        "runs once per d (it does not depend on the sources), at the largest k. Transfer: a code found through "
        "one DET decoded by another, every off-diagonal pair. Shared coordinates only: the same codes cut to "
        "the k source-solution coordinates, which mean the same to every DET by construction (the descent and "
        "random ones set to 0), decoded by their own DET and by the others: how much of the gain sits in the "
        "part that can transfer.",
        "",
    ]
    if not any(row[LEARNED]["cells"] for row in rows):
        lines.append("No point of the curve has finished stage 3 yet.")
        return _write(out, lines)
    points = config.points()
    done = sum(_finished(out, config, point) for point in points)
    if done < len(points):
        lines += [
            f"**Part way: {done} of {len(points)} points finished** (the draws column counts each row's); "
            f"rerun `deltaspace study {out / 'config.json'}` to resume.",
            "",
        ]
    table = []
    for row in rows:
        cells = [_with_interval(row[kind]["gain"], row[kind]["interval"]) for kind in KINDS]
        point = cells_at[(row["k"], row["d"])]
        above_span = paired_difference(point["span"], point[LEARNED]) if point.get("span") else "–"
        made = row["directions"]
        make_up = f"{made['solution']} / {made['descent']} / {made['random']}" if made else "–"
        table.append([str(row["k"]), str(row["d"]), str(row["draws"]), make_up, *cells, above_span])
    header = ["k", "d", "draws", "directions: solution / descent / random", *(LABELS[kind] for kind in KINDS)]
    lines += [
        "Learned − span: the learned subspace's gain minus the span control's, in points, paired on the same "
        "test examples (the issue's target: above the span control by more than this interval; bold where it "
        "excludes 0).",
        "",
        *_table([*header, "learned − span"], table),
    ]
    plot = plot_source_curve(rows, out / "source_curve.png", title=config.name)
    lines += [
        "",
        f"![source curve]({plot.name})",
        *_trend_section(cells_at),
        *_geometry_section(rows),
    ]
    lines += _sources(config)
    lines += time_section(out)
    return _write(out, lines)


TREND_KINDS = (LEARNED, "span", "transfer", "shared_own", "shared_transfer")


def _trend_section(cells: dict[tuple[int, int], dict[str, list[GainCell]]]) -> list[str]:
    """Each larger k's gain minus the smallest finished k's at the same d, paired on the held-out tasks' test
    examples (every point scores the same ones), so "does it grow with k?" gets its own interval."""
    table = []
    for dim in sorted({d for _, d in cells}):
        finished = sorted(k for k, d in cells if d == dim and cells[(k, d)].get(LEARNED))
        base = finished[0] if finished else None
        for k in finished[1:]:
            row = [f"{k} − {base}", str(dim)]
            for kind in TREND_KINDS:
                first, second = cells[(base, dim)].get(kind), cells[(k, dim)].get(kind)
                row.append(paired_difference(first, second) if first and second else "–")
            table.append(row)
    if not table:
        return []
    return [
        "",
        "## Does it grow with k?",
        "",
        "Each k's gain recovered minus the smallest k's at the same d, in points, with a paired bootstrap 95 % "
        "interval (every point scores the same test examples of the same held-out tasks); bold where the "
        "interval excludes 0.",
        "",
        *_table(["k", "d", *(LABELS[kind] for kind in TREND_KINDS)], table),
    ]


def _geometry_section(rows: list[dict[str, Any]]) -> list[str]:
    from deltaspace.study.report import GEOMETRY_HEADER, geometry_cells

    table = [
        [str(row["k"]), str(row["d"]), *geometry_cells(row["code_geometry"]), _with_interval(
            row["transfer"]["gain"], row["transfer"]["interval"]
        )]
        for row in rows
        if row["code_geometry"]
    ]  # fmt: skip
    if not table:
        return []
    return [
        "",
        "## Where the held-out codes lie",
        "",
        "The learned subspace's stage-2 codes of the held-out tasks (every DET and finished draw) against the "
        "k source codes they were fitted on: the share of a code's length outside the source codes' span, and "
        "the weights that combine the source codes into its part inside it. The fit makes a code mean the "
        "same to every DET only at mixtures of the source codes (0 % outside, negative weight 0); more "
        "source tasks widen that region. Beside it, transfer's gain recovered.",
        "",
        *_table(["k", "d", *GEOMETRY_HEADER, "transfer across DETs"], table),
    ]


def _sources(config: SourceCurveConfig) -> list[str]:
    rows = [
        [str(p.k), str(p.draw), ", ".join(map(slug, p.sources))]
        for p in config.points()
        if p.dim == config.dims[0]
    ]
    return ["", "## The source tasks of each point", "", *_table(["k", "draw", "source tasks"], rows)]


def _write(out: Path, lines: list[str]) -> Path:
    path = out / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def plot_source_curve(rows: list[dict[str, Any]], path: Path, *, title: str = "") -> Path:
    """One panel per d: gain recovered against k for each kind, with its interval as error bars (the random
    control, run at one k, as a horizontal band)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dims = sorted({row["d"] for row in rows})
    fig = Figure(figsize=(5.2 * len(dims), 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(dims), sharey=True, squeeze=False)[0]
    colours = {
        LEARNED: "tab:blue",
        "span": "tab:green",
        "random": "tab:grey",
        "transfer": "tab:red",
        "shared_own": "tab:cyan",
        "shared_transfer": "tab:orange",
    }
    for ax, dim in zip(axes, dims, strict=True):
        mine = [row for row in rows if row["d"] == dim]
        for kind in KINDS:
            points = [(row["k"], row[kind]) for row in mine if row[kind]["gain"] is not None]
            if not points:
                continue
            ks = np.array([k for k, _ in points], dtype=float)
            gains = np.array([p["gain"] for _, p in points])
            low = np.array([p["gain"] - (p["interval"] or (p["gain"], p["gain"]))[0] for _, p in points])
            high = np.array([(p["interval"] or (p["gain"], p["gain"]))[1] - p["gain"] for _, p in points])
            if kind == "random" and len(points) == 1:
                ax.axhspan(gains[0] - low[0], gains[0] + high[0], color=colours[kind], alpha=0.15)
                ax.axhline(gains[0], color=colours[kind], linestyle="--", label=LABELS[kind])
                continue
            ax.errorbar(
                ks, gains, yerr=[low, high], marker="o", capsize=3, color=colours[kind], label=LABELS[kind]
            )
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xscale("log", base=2)
        ks_all = sorted({row["k"] for row in mine})
        ax.set_xticks(ks_all, [str(k) for k in ks_all])
        ax.set_xlabel("source tasks k")
        ax.set_title(f"d = {dim}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("gain recovered over θ0 (%)")
    # one legend for every panel, under them: a panel of a curve stopped part way may have no line at all
    handles = {
        label: handle for ax in axes for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)
    }
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=3, fontsize=8)
    if title:
        fig.suptitle(title)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
