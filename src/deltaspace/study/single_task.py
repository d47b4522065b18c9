"""The paper's single-task setting (Tables 1–2 of Yi et al.): one source task's DET solutions define a
d = 4 subspace, which then solves a related target task through each DET (optimisation) and hands the
code one DET found to the others (transfer).

One study per source task, ``<out>/<source>/``: the pipeline of :mod:`deltaspace.study.pipeline` with
``source_tasks: [source]`` and the source's targets held out, all sharing one folder of original-space runs
(``<out>/runs``, or ``runs``: a variant of the study, e.g. with a trained joint fit, reuses another's
original-space runs). No landscape: with one source task there is no plane of task codes to draw. Then
``<out>/report.md`` sets every pair's optimisation and its six transfer directions beside the paper's
Tables 1 and 2, as relative performance (the paper's figure) and gain recovered over θ0 (the comparable
one here: our θ0 is a zero-shot head, the paper's scores about zero).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from deltaspace.errors import UserInputError
from deltaspace.io import write_text_atomic
from deltaspace.study.config import StudyConfig, _build
from deltaspace.study.records import LEARNED, Stage2Record
from deltaspace.study.report import (
    _mean,
    _pct,
    _precision,
    _shared_part,
    _table,
    originals_beside_baselines,
    pooled,
    run_results,
    time_section,
)
from deltaspace.study.report import _with_interval as _ci
from deltaspace.subspace.gain import GainCell
from deltaspace.train.result import slug

STAGES = ("sweep", "fit", "optimise", "report")
# Set per pair from ``pairs``; a single-task study names none of them itself.
_PER_PAIR = ("name", "out", "runs", "source_tasks", "heldout_tasks", "heldout_mode", "optimise_tasks")
SHORT = {"adapter": "A", "lora": "L", "prefix": "P"}
# Averages of the paper's Table 1 (optimisation: adapter, LoRA, prefix, all) and Table 2 (transfer, six
# directions, all), relative performance (%) on T5-base, d = 4 (../shared/reference/unified_subspace.md).
PAPER_OPTIMISATION = {"adapter": 88.5, "lora": 80.9, "prefix": 85.3, "all": 84.9}
PAPER_TRANSFER = {"A→L": 81.7, "A→P": 80.2, "L→A": 85.0, "L→P": 81.0, "P→A": 85.3, "P→L": 82.6, "all": 82.6}


@dataclasses.dataclass
class SingleTaskConfig:
    """``pairs``: source task -> its target tasks; ``study``: every other :class:`StudyConfig` field, shared
    by the pairs' studies (model, methods, train, fit, optimise, controls, budgets); ``runs``: the folder of
    original-space runs (default ``<out>/runs``), which a variant of the study may share with another (runs
    are reused only when trained with exactly the same settings)."""

    name: str = "single_task"
    out: str = "studies/single_task"
    runs: str | None = None
    pairs: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    study: dict[str, Any] = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        if not self.pairs:
            raise UserInputError("a single-task study needs pairs: {source_task: [target, ...], ...}")
        for source, targets in self.pairs.items():
            if not targets or source in targets:
                raise UserInputError(
                    f"pairs.{source} must list one or more target tasks other than {source!r}, got {targets}"
                )
        named = sorted(set(self.study) & set(_PER_PAIR))
        if named:
            raise UserInputError(f"study.{named[0]} is set per pair in a single-task study; remove it")
        for study in self.studies():
            study.validate()

    @property
    def runs_dir(self) -> Path:
        return Path(self.runs) if self.runs else Path(self.out) / "runs"

    def studies(self) -> list[StudyConfig]:
        """One study per source task: its own subspace, its targets held out; one shared runs folder."""
        return [
            StudyConfig.from_dict(
                {
                    **self.study,
                    "name": f"{self.name}: {slug(source)}",
                    "out": str(Path(self.out) / slug(source)),
                    "runs": str(self.runs_dir),
                    "source_tasks": [source],
                    "heldout_tasks": list(targets),
                }
            )
            for source, targets in self.pairs.items()
        ]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SingleTaskConfig:
        data = {key: value for key, value in data.items() if key != "setting"}
        config = _build(cls, data, "single-task study")
        config.validate()
        return config


def run_single_task(
    config: SingleTaskConfig, *, stages: tuple[str, ...] = STAGES, workers: int | None = None
) -> Path:
    """Run (or resume) every pair's study, stage by stage with the pairs' jobs spread over ``workers``
    processes (see :func:`deltaspace.study.pipeline.run_studies`), then write ``<out>/report.md``;
    returns its path. ``<out>/timings.json``: each stage's wall seconds over all pairs."""
    from deltaspace.study.pipeline import run_study_set

    config.validate()
    out = Path(config.out)
    run_study_set(out, config.to_dict(), config.studies(), tuple(s for s in stages if s in STAGES), workers)
    if "report" in stages:
        write_baselines(config)
    return write_single_task_report(out)


def _tasks(pairs: dict[str, list[str]]) -> list[str]:
    """Every task of the pairs once, each source before its targets."""
    return list(dict.fromkeys(task for source, targets in pairs.items() for task in (source, *targets)))


def write_baselines(config: SingleTaskConfig) -> Path:
    """``<out>/baselines.json`` for every task of the pairs (see :mod:`deltaspace.study.baselines`)."""
    from deltaspace.study.baselines import write_baselines as write

    study = config.studies()[0]
    return write(config.out, _tasks(config.pairs), study.train, study.model)


# ---------------------------------------------------------------- the report


def _records(out: Path, config: dict[str, Any]) -> list[tuple[str, Stage2Record]]:
    """(source, record) for every target whose stage 2 has finished, in the config's order."""
    found = []
    for source, targets in config["pairs"].items():
        for target in targets:
            path = out / slug(source) / "stage2" / f"{slug(target)}.json"
            if path.is_file():
                found.append((source, Stage2Record.from_dict(json.loads(path.read_text()))))
    return found


def _relative(metric: float, original: float) -> float | None:
    return 100.0 * metric / original if original > 0 else None


def _directions(methods: list[str]) -> list[tuple[str, str]]:
    return [(s, t) for s in methods for t in methods if s != t]


def _arrow(source: str, target: str) -> str:
    return f"{SHORT.get(source, source)}→{SHORT.get(target, target)}"


def _transfer_cell(record: Stage2Record, source: str, target: str) -> tuple[float | None, GainCell]:
    matrix = record.transfer or {}
    i, j = matrix["sources"].index(source), matrix["targets"].index(target)
    predictions = matrix["predictions"][i][j]
    relative = _relative(record.accuracy(predictions), record.accuracy(record.original[target]))
    cell = GainCell(
        record.task,
        f"{source}->{target}",
        record.correct(predictions),
        record.correct(record.initial[target]),
        record.correct(record.original[target]),
    )
    return relative, cell


def write_single_task_report(out: str | Path) -> Path:
    """``<out>/report.md`` from the pairs' stage-2 records present (partial while the study runs)."""
    out = Path(out)
    config = json.loads((out / "config.json").read_text())
    study = config["study"]
    methods = list(study.get("methods", []))
    records = _records(out, config)
    fit = study.get("fit", {})
    optimise = study.get("optimise", {})
    train = study.get("train", {})
    pairs = "; ".join(f"{slug(s)} → {', '.join(map(slug, t))}" for s, t in config["pairs"].items())
    lines = [
        f"# deltaspace single-task study `{config['name']}`",
        "",
        "The paper's single-task setting: one source task's DET solutions define the subspace (d = "
        f"{fit.get('dim', '?')}), used on related target tasks. Model **{Path(study.get('model', '?')).name}**; "
        f"DETs {', '.join(methods)}; pairs {pairs}{_precision(study)}. Original-space runs: {_budget(train)}. Stage 1: "
        f"{_stage1(fit)}. Stage 2: {optimise.get('steps', '?')} steps of {optimise.get('optimizer', '?')} "
        f"(lr {optimise.get('lr', '?')}) on the target's training batches, best validation code; only the "
        f"d numbers train. Test examples per target: up to {study.get('test_examples', '?')}. Regenerate with "
        f"`deltaspace study {out / 'config.json'}`; each pair's own report is `<source>/report.md`.",
        "",
    ]
    if not records:
        lines.append("No target has finished stage 2 yet.")
        return _write(out, lines)
    lines += _sweep_runs(out, config, methods)
    lines += _joint_fit(out, config)
    lines += _originals(records, methods)
    lines += _optimisation(records, methods, controls=[k for k in records[0][1].runs if k != LEARNED])
    lines += _transfer(records, methods)
    lines += _shared_part([record for _, record in records])
    lines += time_section(out, note="report and baselines not counted")
    return _write(out, lines)


def _write(out: Path, lines: list[str]) -> Path:
    path = out / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def _budget(train: dict[str, Any]) -> str:
    parts = [
        f"{train['max_train_examples']} training examples" if "max_train_examples" in train else None,
        f"{train['epochs']} epochs" if "epochs" in train else None,
        f"{train['max_length']} tokens" if "max_length" in train else None,
        "each DET's preset (tuned) rate unless the config overrides it",
        "best validation checkpoint",
    ]
    return ", ".join(p for p in parts if p)


def _stage1(fit: dict[str, Any]) -> str:
    start = "the closed-form start (the source solution's direction, shared code)"
    if fit.get("init") == "random":
        start = "random projections (the paper's start)"
    extra = (
        "the source task's descent directions at θ0 for the other d − 1"
        if fit.get("gradient_directions")
        else "random directions for the other d − 1"
    )
    steps = fit.get("steps", 0)
    joint = "no joint fit"
    if steps:
        joint = (
            f"then the joint fit (task loss at random mixtures of the DETs' codes decoded by every DET, plus "
            f"reconstruction; {fit.get('optimizer', '?')}, lr {fit.get('lr', '?')}) for at most {steps} steps"
        )
        if fit.get("eval_every"):
            joint += f", validated on the source task every {fit['eval_every']} steps ({fit.get('metric')})"
            if fit.get("patience"):
                joint += f", stopped after {fit['patience']} validations without improvement"
            joint += ", the best validated state kept"
    return f"{start}, {extra}, {joint}"


def _joint_fit(out: Path, config: dict[str, Any]) -> list[str]:
    """Each pair's stage-1 fit: how long it ran, where source validation stopped improving, its cost."""
    if not config["study"].get("fit", {}).get("steps"):
        return []
    rows = []
    for source in config["pairs"]:
        path = out / slug(source) / "subspace" / "fit.json"
        if not path.is_file():
            rows.append([slug(source), "running or not started", *["–"] * 5])
            continue
        fit = json.loads(path.read_text())
        checks = fit.get("validation") or []
        start = next((c for c in checks if c["step"] == 0), None)
        best = next((c for c in checks if c["step"] == fit.get("best_step")), None)

        def course(key: str, digits: int, start=start, best=best) -> str:
            if start is None or best is None or start.get(key) is None:
                return "–"
            return f"{start[key]:.{digits}f} → {best[key]:.{digits}f}"

        per_step = fit.get("seconds_per_step")
        wall = fit.get("wall_seconds") or fit.get("seconds")
        stopped = "patience" if fit.get("stopped_early") else "max steps"
        rows.append(
            [
                slug(source),
                f"{fit.get('steps_run')} ({stopped})",
                f"{fit.get('best_step')}",
                course("loss", 4),
                course("accuracy", 3),
                f"{per_step:.2f}" if per_step else "–",
                f"{wall / 60:.1f}" if wall else "–",
            ]
        )
    return [
        "## Stage 1: the joint fit",
        "",
        "Per source task: the steps the fit ran (and what ended it), the step whose source validation was "
        "best (the state kept; 0 is the closed-form start), the source validation loss and accuracy (mean "
        "over the DETs at the validation points) at the start and at that step, seconds per step "
        "(validation included) and the fit's wall time.",
        "",
        *_table(["source", "steps run", "best step", "val loss", "val accuracy", "s/step", "minutes"], rows),
        "",
    ]


def _sweep_runs(out: Path, config: dict[str, Any], methods: list[str]) -> list[str]:
    """Each task's original-space runs (their own test examples) beside majority and the same-budget probe."""
    runs = Path(config["runs"]) if config.get("runs") else out / "runs"
    tasks = [
        (t, f"{slug(t)} ({'source' if t in config['pairs'] else 'target'})") for t in _tasks(config["pairs"])
    ]
    seed = config["study"].get("seed", 0)
    return [
        "## Original space: each DET trained alone",
        "",
        *originals_beside_baselines(
            out, run_results(runs, [t for t, _ in tasks], methods, seed), tasks, methods
        ),
        "",
    ]


def _originals(records: list[tuple[str, Stage2Record]], methods: list[str]) -> list[str]:
    rows = []
    for source, record in records:
        theta0 = [record.accuracy(record.initial[m]) for m in methods]
        trained = [record.accuracy(record.original[m]) for m in methods]
        rows.append(
            [
                f"{slug(source)} → {record.task}",
                *(f"{o:.3f} ({t:.3f})" for o, t in zip(trained, theta0, strict=True)),
                f"{len(record.gold)}",
            ]
        )
    return [
        "## The targets' references",
        "",
        "Each DET's original-space solution re-scored on the subspace stages' test examples (θ0, the "
        "untrained start, in parentheses): the denominators of everything below.",
        "",
        *_table(["pair", *methods, "test examples"], rows),
        "",
    ]


def _average_rows(
    columns: dict[Any, list[float]], paper: list[float | None], paper_all: float, table: int
) -> list[list[str]]:
    """Each column's mean and the mean of every cell, then the paper's averages (its Table ``table``)."""
    everything = [v for values in columns.values() for v in values]
    return [
        [
            "**average**",
            *(_pct(_mean(values)) for values in columns.values()),
            f"**{_pct(_mean(everything))}**",
        ],
        [f"paper, Table {table} average", *map(_pct, paper), _pct(paper_all)],
    ]


def _optimisation(
    records: list[tuple[str, Stage2Record]], methods: list[str], controls: list[str]
) -> list[str]:
    rows, by_method = [], {m: [] for m in methods}
    for source, record in records:
        values = []
        for method in methods:
            run = record.runs[LEARNED][method]
            values.append(_relative(run.metric, record.accuracy(record.original[method])))
            by_method[method].append(values[-1])
        rows.append([f"{slug(source)} → {record.task}", *map(_pct, values), _pct(_mean(values))])
    rows += _average_rows(
        by_method, [PAPER_OPTIMISATION.get(m) for m in methods], PAPER_OPTIMISATION["all"], 1
    )
    gain_rows = []
    for kind in [LEARNED, *controls]:
        cells = [_ci(*pooled([r.gain_cell(kind, m) for _, r in records])) for m in methods]
        every = _ci(*pooled([r.gain_cell(kind, m) for _, r in records for m in methods]))
        gain_rows.append([kind, *cells, every])
    return [
        "## Optimisation inside the subspace (the paper's Table 1)",
        "",
        "Relative performance (%) = accuracy of the code found in the subspace, decoded by the same DET, / "
        "the DET's original-space accuracy × 100, on the same test examples.",
        "",
        *_table(["pair", *methods, "avg"], rows),
        "",
        "Gain recovered (%) = Σ (subspace − θ0) / Σ (original − θ0) × 100, pooled over the targets, with a "
        "paired bootstrap 95 % interval; the controls run through the same optimiser, steps and d.",
        "",
        *_table(["subspace", *methods, "all DETs"], gain_rows),
        "",
    ]


def _transfer(records: list[tuple[str, Stage2Record]], methods: list[str]) -> list[str]:
    directions = _directions(methods)
    if not all(r.transfer and r.transfer.get("predictions") for _, r in records):
        return ["## Transfer across DETs", "", "Stage 3 has not run for every target yet."]
    rows, columns, cells = [], {d: [] for d in directions}, {d: [] for d in directions}
    for source, record in records:
        row = []
        for direction in directions:
            relative, cell = _transfer_cell(record, *direction)
            columns[direction].append(relative)
            cells[direction].append(cell)
            row.append(relative)
        rows.append([f"{slug(source)} → {record.task}", *map(_pct, row), _pct(_mean(row))])
    paper = [PAPER_TRANSFER.get(_arrow(*d)) for d in directions]
    rows += _average_rows(columns, paper, PAPER_TRANSFER["all"], 2)
    gain = [_ci(*pooled(cells[d])) for d in directions]
    pooled_all = pooled([c for d in directions for c in cells[d]])
    return [
        "## Transfer across DETs (the paper's Table 2)",
        "",
        "Zero-shot transfer: the code found through the first DET (stage 2), decoded by the second, with no "
        "training through it. Relative performance (%) against the second DET's original-space accuracy.",
        "",
        *_table(["pair", *(_arrow(*d) for d in directions), "avg"], rows),
        "",
        "Gain recovered (%) per direction, pooled over the targets (95 % interval):",
        "",
        *_table([_arrow(*d) for d in directions] + ["all"], [[*gain, _ci(*pooled_all)]]),
        "",
    ]
