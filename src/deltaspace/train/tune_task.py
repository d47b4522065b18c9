"""Tuning for one task in one command: ``deltaspace tune --task mine.csv --method lora,coeff+lora``.

For each method, the protocol of the tuned comparison (:mod:`deltaspace.train.tuned`) at the size of one task:

    grid    the method at its preset rate times each of ``grid`` (×0.316, ×1, ×3.16), seed ``seeds[0]``, with
            each of ``heads`` (the label-prototype head and a trained linear head); in a combination every
            rate of the method moves together (Coeff's own rate beside LoRA's), so the grid keeps their ratio
    choice  the (head, multiple) with the best validation accuracy (ties: lower validation loss, then the
            multiple nearer ×1, then the earlier head)
    seeds   the other seeds at the chosen point (the grid run is ``seeds[0]``)

The head is in the grid because neither wins everywhere: the prototype head starts from the label names'
embeddings and helps where they mean something (sentiment, topic); a trained linear head wins where they do
not (e.g. speaker names: ``bench/user_tasks``, friends_speaker).

Each run trains with ``train``'s defaults unless ``train`` says otherwise: the step budget sized by the data,
early-stopped, best validation checkpoint (:mod:`deltaspace.train.defaults`), and records majority and the
frozen probe on the same split (:mod:`deltaspace.train.baselines`). The result is a table of each method's
test accuracy over the seeds beside those two, written to ``<out>/results.md`` and ``<out>/tune.json``::

    <out>/grid/<method>/<head>/x<multiple>/seed<s0>/    grid runs (run folders of ``deltaspace train``)
    <out>/seeds/<method>/<head>/x<multiple>/seed<k>/    the other seeds at the chosen point

Rerunning the same command resumes: finished runs are kept, a killed one resumes from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from pathlib import Path
from typing import Any

from deltaspace.errors import UserInputError
from deltaspace.io import write_json_atomic, write_text_atomic
from deltaspace.train.config import TrainConfig
from deltaspace.train.defaults import resolve_rates
from deltaspace.train.result import RunResult, slug
from deltaspace.train.sweep import RunSpec

DEFAULT_GRID = (0.316, 1.0, 3.16)
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_HEADS = ("prototype", "linear")
_RESERVED = ("task", "method", "seed", "output_dir")

GridPoint = tuple[str, float]  # (head, multiple of the preset rate)


@dataclasses.dataclass
class MethodTuning:
    """One method's tuning: every grid point's validation score, the choice, and the seeds' results."""

    method: str
    head: str
    multiple: float
    lr: float
    lr_overrides: dict[str, float]
    grid: dict[GridPoint, float]  # (head, multiple) -> validation accuracy (seed 0)
    results: list[RunResult]  # one per seed, at the chosen point

    @property
    def at_edge(self) -> bool:
        """The choice is its head's smallest or largest multiple: the best rate may lie outside the grid."""
        multiples = [m for head, m in self.grid if head == self.head]
        return len(multiples) > 1 and self.multiple in (min(multiples), max(multiples))

    def validation(self) -> dict[str, dict[str, float]]:
        """head -> multiple -> validation accuracy, for people and JSON."""
        table: dict[str, dict[str, float]] = {}
        for (head, multiple), value in sorted(self.grid.items()):
            table.setdefault(head, {})[f"{multiple:g}"] = value
        return table

    def test(self, metric: str = "accuracy") -> list[float]:
        return [result.test[metric] for result in self.results]

    def summary(self) -> dict[str, Any]:
        accuracies = self.test()
        return {
            "method": self.method,
            "head": self.head,
            "lr": self.lr,
            "lr_overrides": self.lr_overrides,
            "multiple": self.multiple,
            "at_grid_edge": self.at_edge,
            "validation_by_multiple": self.validation()[self.head],
            "validation_by_head": self.validation(),
            "seeds": [result.seed for result in self.results],
            "test_accuracy": accuracies,
            "test_accuracy_mean": statistics.fmean(accuracies),
            "test_accuracy_sd": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
            "test_macro_f1_mean": statistics.fmean(self.test("macro_f1")),
            "train_time_s": [result.train_time_s for result in self.results],
            "steps": [result.steps for result in self.results],
        }


@dataclasses.dataclass
class TuneResult:
    """What :func:`tune` returns (and ``<out>/tune.json`` holds)."""

    task: str
    out: str
    methods: list[MethodTuning]
    baselines: dict[str, Any]
    failed: list[str]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "methods": [m.summary() for m in self.methods],
            "baselines": self.baselines,
            "failed": self.failed,
            "seconds": round(self.seconds, 1),
        }

    def rows(self) -> list[dict[str, str]]:
        """The result table: each method over its seeds, then majority, the frozen probe and (verbalizer head)
        the frozen LM's zero-shot score."""
        probe = self.baselines.get("probe", {}).get("test", {}).get("accuracy")
        majority = self.baselines.get("majority", {}).get("test", {}).get("accuracy")
        rows = []
        for tuning in self.methods:
            summary = tuning.summary()
            mean = summary["test_accuracy_mean"]
            rows.append(
                {
                    "method": tuning.method,
                    "head": tuning.head,
                    "lr (×preset)": _rates(tuning),
                    "seeds": _seeds(tuning, majority),
                    "test accuracy": f"{100 * mean:.1f} ± {100 * summary['test_accuracy_sd']:.1f}",
                    "macro-F1": f"{100 * summary['test_macro_f1_mean']:.1f}",
                    "vs probe": f"{100 * (mean - probe):+.1f}" if probe is not None else "-",
                }
            )
        if "majority" in self.baselines:
            majority = self.baselines["majority"]
            rows.append(_baseline_row(f"majority ({majority['label']})", majority["test"], probe))
        if "probe" in self.baselines:
            rows.append(
                _baseline_row(
                    f"frozen probe (C={self.baselines['probe']['C']:g})",
                    self.baselines["probe"]["test"],
                    probe,
                )
            )
        if "zero_shot" in self.baselines:  # the verbalizer head: the frozen LM's own label-word scores
            rows.append(_baseline_row("zero-shot (frozen LM)", self.baselines["zero_shot"]["test"], probe))
        return rows

    def markdown(self) -> str:
        rows = self.rows()
        header = list(rows[0]) if rows else []
        lines = [
            f"# deltaspace tune: {self.task}",
            "",
            "Test accuracy (%) over the seeds at each method's chosen head and rate (mean ± sd), beside the "
            "training split's majority class and the frozen-embedding probe on the same split; head and rate chosen "
            "on validation.",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
            *("| " + " | ".join(row.values()) + " |" for row in rows),
            "",
            f"{self.seconds / 60:.1f} min in all (this invocation).",
        ]
        if self.failed:
            lines += ["", f"Failed runs: {', '.join(self.failed)} (their error.txt says why)."]
        return "\n".join(lines) + "\n"


def _seeds(tuning: MethodTuning, majority: float | None) -> str:
    """``3``, or ``3 (1 at majority)`` when seeds collapsed to predicting one class: a rate on the edge."""
    collapsed = sum(1 for value in tuning.test() if majority is not None and value <= majority + 0.005)
    return f"{len(tuning.results)}" + (f" ({collapsed} at majority)" if collapsed else "")


def _rates(tuning: MethodTuning) -> str:
    """``3.16e-3, ds_coeff 0.01 (×1)``: the chosen rate(s) and the multiple of the preset."""
    own = "".join(f", {key} {value:.3g}" for key, value in tuning.lr_overrides.items())
    edge = ", grid edge" if tuning.at_edge else ""
    return f"{tuning.lr:.3g}{own} (×{tuning.multiple:g}{edge})"


def _baseline_row(label: str, metrics: dict[str, float], probe: float | None) -> dict[str, str]:
    accuracy = metrics["accuracy"]
    return {
        "method": label,
        "head": "-",
        "lr (×preset)": "-",
        "seeds": "-",
        "test accuracy": f"{100 * accuracy:.1f}",
        "macro-F1": f"{100 * metrics['macro_f1']:.1f}" if "macro_f1" in metrics else "-",
        "vs probe": f"{100 * (accuracy - probe):+.1f}" if probe is not None else "-",
    }


def _scaled(config: TrainConfig, multiple: float) -> TrainConfig:
    """``config`` with its rate and its own-rate overrides (the preset's when unset) times ``multiple``."""
    base = resolve_rates(config)
    return base.replace(
        lr=float(f"{base.lr * multiple:.3g}"),
        lr_overrides={key: float(f"{value * multiple:.3g}") for key, value in base.lr_overrides.items()},
    )


def resolve_heads(heads: tuple[str, ...] | list[str] | None, train: dict[str, Any]) -> list[str]:
    """The heads to try: ``heads`` as given; else the head ``train`` sets; else :data:`DEFAULT_HEADS`."""
    from deltaspace.train.config import HEADS

    if heads is not None and "head" in train:
        raise UserInputError("give the head once: --head (tried as a grid) or --set head=..., not both")
    if heads is None:
        heads = [train["head"]] if "head" in train else list(DEFAULT_HEADS)
    heads = list(heads)
    unknown = [head for head in heads if head not in HEADS]
    if not heads or unknown or len(set(heads)) != len(heads):
        raise UserInputError(f"--head takes distinct heads among {', '.join(HEADS)}; got {heads}")
    return heads


def plan(
    task: str,
    methods: list[str],
    *,
    out: str | Path,
    grid: tuple[float, ...] | list[float] = DEFAULT_GRID,
    seeds: tuple[int, ...] | list[int] = DEFAULT_SEEDS,
    heads: tuple[str, ...] | list[str] | None = None,
    train: dict[str, Any] | None = None,
) -> tuple[list[RunSpec], dict[str, dict[GridPoint, TrainConfig]]]:
    """The grid's run specs, and each method's config per (head, multiple) to build the seeds' runs from."""
    train = dict(train or {})
    reserved = sorted(set(train) & set(_RESERVED))
    if reserved:
        raise UserInputError(f"tune sets {reserved} itself; use --task / --method / --seed / --out")
    if not methods or len(set(methods)) != len(methods):
        raise UserInputError(f"give one or more distinct methods, got {methods}")
    if not grid or any(not (isinstance(m, (int, float)) and math.isfinite(m) and m > 0) for m in grid):
        raise UserInputError(f"the grid holds positive multiples of the preset rate, got {list(grid)}")
    if not seeds or len(set(seeds)) != len(seeds) or any(not isinstance(s, int) or s < 0 for s in seeds):
        raise UserInputError(f"seeds must be distinct integers >= 0, got {list(seeds)}")
    heads = resolve_heads(heads, train)
    train.pop("head", None)
    specs, configs = [], {}
    for method in methods:
        configs[method] = {}
        for head in heads:
            for multiple in sorted(set(grid)):
                name = f"grid/{slug(method)}/{head}/x{multiple:g}"
                run_dir = Path(out) / name / f"seed{seeds[0]}"
                fields = {**train, "task": task, "method": method, "seed": seeds[0], "head": head}
                config = _scaled(TrainConfig.from_dict(fields), multiple).replace(output_dir=str(run_dir))
                configs[method][head, multiple] = config
                specs.append(RunSpec(task, method, seeds[0], config, name=name))
    return specs, configs


def choose(
    method: str, grid_results: dict[GridPoint, RunResult], heads: list[str] | None = None
) -> GridPoint:
    """The (head, multiple) with the best validation accuracy; ties: lower validation loss, then the multiple
    nearer ×1, then the head earlier in ``heads`` (the prototype head first: it trains nothing extra)."""
    from deltaspace.train.tuned import rank_rate

    order = heads or sorted({head for head, _ in grid_results})

    def score(point: GridPoint) -> tuple[float, ...]:
        head, multiple = point
        validation = grid_results[point].validation
        rank = rank_rate(
            (validation.get("accuracy", math.nan), validation.get("loss", math.inf)),
            multiple,
            1.0,
            "accuracy",
        )
        return (*rank, -order.index(head))

    if not grid_results:
        raise UserInputError(f"no grid run of {method!r} finished; see the error.txt files of its runs")
    return max(grid_results, key=score)


def tune(
    task: str,
    methods: str | list[str],
    *,
    out: str | Path | None = None,
    grid: tuple[float, ...] | list[float] = DEFAULT_GRID,
    seeds: tuple[int, ...] | list[int] = DEFAULT_SEEDS,
    heads: tuple[str, ...] | list[str] | None = None,
    train: dict[str, Any] | None = None,
    show: bool = True,
) -> TuneResult:
    """Tune ``methods`` ("lora" or ["lora", "coeff+lora"]) on ``task`` (a suite name or a data file): the
    head × rate grid, the choice on validation, the seeds at the choice (see the module docstring).
    ``heads``: the heads to try (default: prototype and linear, or the one ``train`` sets); ``train``: any
    :class:`TrainConfig` fields for every run (e.g. ``{"max_train_examples": 2000}``). Resumable."""
    from deltaspace.tasks import load_task
    from deltaspace.train.preflight import check_method, check_model
    from deltaspace.train.sweep import run_specs

    start = time.perf_counter()
    methods = [methods] if isinstance(methods, str) else list(methods)
    out = Path(out) if out is not None else Path("runs") / "tune" / slug(task)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"tune output {out} is a file; choose another --out")
    specs, configs = plan(task, methods, out=out, grid=grid, seeds=seeds, heads=heads, train=train)
    heads = list(dict.fromkeys(head for head, _ in configs[methods[0]]))  # as plan resolved them
    check_model(specs[0].config.model)
    for method in methods:
        check_method(method, specs[0].config.method_options)
    data_seed = specs[0].config.data_seed
    loaded = load_task(task, seed=data_seed)  # fails in one line before any run starts

    def loader(name: str, seed: int):
        return loaded if (name, seed) == (task, data_seed) else load_task(name, seed=seed)

    outcomes = run_specs(specs, task_loader=loader, progress=f"{slug(task)}: head and rate grid")
    chosen: dict[str, GridPoint] = {}
    failed = [o.spec.key for o in outcomes if o.status == "failed"]
    grid_results: dict[str, dict[GridPoint, RunResult]] = {m: {} for m in methods}
    points = {c.output_dir: p for by_point in configs.values() for p, c in by_point.items()}
    for outcome in outcomes:
        if outcome.result is not None:
            grid_results[outcome.spec.method][points[outcome.spec.config.output_dir]] = outcome.result
    seed_specs = []
    for method in methods:
        if not grid_results[method]:
            continue
        chosen[method] = head, multiple = choose(method, grid_results[method], heads)
        config = configs[method][chosen[method]]
        for seed in seeds[1:]:
            name = f"seeds/{slug(method)}/{head}/x{multiple:g}/seed{seed}"
            run = config.replace(seed=seed, output_dir=str(out / name))
            seed_specs.append(RunSpec(task, method, seed, run, name=name))
    seed_outcomes = run_specs(
        seed_specs, task_loader=loader, progress=f"{slug(task)}: seeds at the chosen points"
    )
    failed += [o.spec.key for o in seed_outcomes if o.status == "failed"]
    tunings = []
    baselines: dict[str, Any] = {}
    for method in methods:
        if method not in chosen:
            continue
        head, multiple = chosen[method]
        first = grid_results[method][chosen[method]]
        results = [first] + [
            o.result for o in seed_outcomes if o.spec.method == method and o.result is not None
        ]
        baselines = baselines or first.baselines
        config = configs[method][chosen[method]]
        tunings.append(
            MethodTuning(
                method=method,
                head=head,
                multiple=multiple,
                lr=config.lr,
                lr_overrides=dict(config.lr_overrides),
                grid={p: r.validation["accuracy"] for p, r in grid_results[method].items()},
                results=results,
            )
        )
    result = TuneResult(
        task=loaded.name,
        out=str(out),
        methods=tunings,
        baselines=baselines,
        failed=failed,
        seconds=time.perf_counter() - start,
    )
    write_json_atomic(out / "tune.json", result.to_dict())
    write_text_atomic(out / "results.md", result.markdown())
    if show:
        _print(result)
    return result


def _print(result: TuneResult) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = result.rows()
    table = Table(title=f"tune: {result.task} ({result.out})")
    for column in rows[0] if rows else []:
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in rows:
        table.add_row(*row.values())
    Console().print(table)
