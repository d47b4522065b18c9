"""Sweeps: tasks x methods x seeds, one run directory each, resumable and shardable.

Layout: ``<out>/<task>/<method>/seed<k>/`` (a run directory, see :mod:`deltaspace.train.loop`).

* Resumable: a run with ``result.json`` is skipped; any other existing run directory is a run that was
  killed, and resumes from its last checkpoint (or restarts, without one). Every file is written
  atomically, so a kill at any moment leaves nothing corrupt, and rerunning the same command finishes
  the sweep with the results an uninterrupted one would have had.
* Shardable: ``shard=(i, n)`` takes every n-th run of the sorted run list starting at i, so n machines
  running the same sweep with ``--shard 0/n`` ... ``--shard n-1/n`` cover it exactly once between them
  (the assignment depends only on the set of runs, not on the order tasks or methods were listed in).

A sweep config (YAML or JSON)::

    out: runs/sweep
    tasks: [rt_sentiment, sst2]
    methods: [coeff+lora, lora]
    seeds: [0, 1, 2]
    train: {model: minilm-l6, epochs: 3, batch_size: 32}      # TrainConfig fields for every run
    method_overrides: {lora: {lr: 5.0e-4, method_options: {r: 8}}}
    task_overrides: {sst2: {max_train_examples: 2000}}

Under ``accelerate launch`` every process walks the same run list and trains each run together; a run that
fails on one process only (e.g. out of memory) can leave the others waiting, so prefer ``isolate`` there.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deltaspace.errors import (
    DeltaspaceError,
    RunDirectoryError,
    RunMismatchError,
    UserInputError,
)
from deltaspace.io import read_json, write_text_atomic
from deltaspace.tasks.task import Task
from deltaspace.train.config import TrainConfig
from deltaspace.train.config_file import read_config_file
from deltaspace.train.result import CONFIG_FILE, RunResult, is_finished, load_result, run_path, slug
from deltaspace.train.rundir import BOOKKEEPING_FIELDS

_RESERVED = ("task", "method", "seed", "output_dir")
_SWEEP_KEYS = ("out", "tasks", "methods", "seeds", "train", "method_overrides", "task_overrides")


@dataclasses.dataclass
class RunSpec:
    """One run of a sweep: where it goes and its full config."""

    task: str
    method: str
    seed: int
    config: TrainConfig
    kind: str = "train"  # "train": deltaspace.train.loop.train; "probe": deltaspace.train.probe.run_probe
    name: str | None = None  # the run's key, when not <task>/<method>/seed<k> (e.g. a grid point)

    @property
    def run_dir(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def key(self) -> str:
        return self.name or f"{slug(self.task)}/{slug(self.method)}/seed{self.seed}"


@dataclasses.dataclass
class SweepConfig:
    """The grid and the shared settings. ``train`` holds TrainConfig fields applied to every run;
    ``method_overrides`` / ``task_overrides`` apply on top per method / task (task wins over method)."""

    out: str
    tasks: list[str]
    methods: list[str]
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    train: dict[str, Any] = dataclasses.field(default_factory=dict)
    method_overrides: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    task_overrides: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("tasks", "methods", "seeds"):
            values = getattr(self, name)
            if not isinstance(values, list) or not values:
                raise UserInputError(
                    f"sweep {name} must be a non-empty list (e.g. {name}: [a, b] or --{name[:-1]} a,b), "
                    f"got {values!r}"
                )
            if name != "seeds" and not all(isinstance(value, str) and value.strip() for value in values):
                raise UserInputError(f"sweep {name} must be a list of names, got {values!r}")
            if len(set(values)) != len(values):
                raise UserInputError(f"sweep {name} lists a value twice: {values}")
        if any(not isinstance(seed, int) or isinstance(seed, bool) or seed < 0 for seed in self.seeds):
            raise UserInputError(f"sweep seeds must be integers >= 0, got {self.seeds}")
        for name in ("train", "method_overrides", "task_overrides"):
            if not isinstance(getattr(self, name), dict):
                raise UserInputError(f"sweep {name} must be a mapping, got {getattr(self, name)!r}")
        reserved = sorted(set(self.train) & set(_RESERVED))
        if reserved:
            raise UserInputError(
                f"sweep train settings may not set {reserved}; the grid sets them (tasks/methods/seeds/out)"
            )
        for label, overrides, names in (
            ("method_overrides", self.method_overrides, self.methods),
            ("task_overrides", self.task_overrides, self.tasks),
        ):
            stray = sorted(set(overrides) - set(names))
            if stray:
                raise UserInputError(f"sweep {label} name {stray} that the sweep does not run; runs: {names}")
        slugs = [slug(task) for task in self.tasks]
        if len(set(slugs)) != len(slugs):
            raise UserInputError(
                f"two tasks map to the same directory name ({slugs}); rename one of the files"
            )
        # Build every config now, so a bad setting fails before the first run starts.
        self.runs()

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> SweepConfig:
        """Read a YAML/JSON sweep config; non-None ``overrides`` (out, tasks, ..., train) replace its keys,
        ``train`` overrides being merged into the file's ``train`` mapping."""
        path = Path(path)
        data = read_config_file(path, "sweep config", _SWEEP_KEYS, overrides)
        # Narrowing the grid (e.g. --methods) keeps the file's per-method / per-task settings for what is
        # still in it; the others belong to the full grid and are not typos.
        for key, overrides_key in (("methods", "method_overrides"), ("tasks", "task_overrides")):
            if overrides.get(key) is not None and isinstance(data.get(overrides_key), dict):
                data[overrides_key] = {k: v for k, v in data[overrides_key].items() if k in overrides[key]}
        if not isinstance(data.get("train", {}), dict):
            raise UserInputError(f"sweep config {path}: train must be a mapping of TrainConfig fields")
        if "out" not in data:
            raise UserInputError(f"sweep config {path} needs an output directory: set `out:` or pass --out")
        return cls(**data)

    def check(self) -> None:
        """Check what running the sweep needs, before any run starts: every task spec (user files are read
        and parsed), every method and its options, the model, and that ``out`` can be a directory."""
        from deltaspace.train.preflight import check_method, check_model

        out = Path(self.out)
        if out.exists() and not out.is_dir():
            raise RunDirectoryError(f"sweep output {out} is a file; choose another --out")
        specs = self.runs()
        for model in sorted({spec.config.model for spec in specs}):
            check_model(model)
        for spec in specs:
            check_method(spec.method, spec.config.method_options)
        from deltaspace.tasks import load_task

        for task, data_seed in sorted({(spec.task, spec.config.data_seed) for spec in specs}):
            load_task(task, seed=data_seed)

    def runs(self) -> list[RunSpec]:
        """Every run of the grid, sorted by run key (the order shards are cut from)."""
        specs = []
        for task in self.tasks:
            for method in self.methods:
                for seed in self.seeds:
                    fields = {**self.train}
                    for overrides in (
                        self.method_overrides.get(method, {}),
                        self.task_overrides.get(task, {}),
                    ):
                        overrides = dict(overrides)
                        options = overrides.pop("method_options", None)
                        if options is not None:
                            fields["method_options"] = {**fields.get("method_options", {}), **options}
                        fields.update(overrides)
                    run_dir = run_path(self.out, task, method, seed)
                    config = TrainConfig.from_dict(
                        {**fields, "task": task, "method": method, "seed": seed, "output_dir": str(run_dir)}
                    )
                    specs.append(RunSpec(task, method, seed, config))
        return sorted(specs, key=lambda spec: spec.key)


@dataclasses.dataclass
class RunOutcome:
    spec: RunSpec
    status: str  # "done" (ran now), "skipped" (already finished), "failed"
    result: RunResult | None = None
    error: str | None = None
    seconds: float = 0.0


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise UserInputError(f"shard must look like i/n (e.g. 0/4), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 0 <= index < count:
        raise UserInputError(
            f"shard {text!r} is out of range: use i/n with 0 <= i < n (shards are numbered from 0)"
        )
    return index, count


def shard_runs(runs: list[RunSpec], index: int, count: int) -> list[RunSpec]:
    """The runs of shard ``index`` of ``count``: every ``count``-th run of the list sorted by key."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {index}/{count} is out of range: use 0 <= index < count")
    ordered = sorted(runs, key=lambda spec: spec.key)
    return ordered[index::count]


def run_sweep(
    sweep: SweepConfig,
    *,
    shard: tuple[int, int] = (0, 1),
    isolate: bool = False,
    fail_fast: bool = False,
    task_loader: Callable[[str, int], Task] | None = None,
    show: bool = True,
) -> list[RunOutcome]:
    """Run (or skip, if finished) every run of this shard, then print a summary.

    ``isolate=True`` trains each run in a fresh Python process (``deltaspace train --config``), so each
    run's peak memory is its own and a crash cannot take the sweep down. ``task_loader(spec, data_seed)``
    replaces ``load_task`` for in-process runs (tasks built in code). A failed run leaves ``error.txt`` in its
    directory and the sweep goes on, unless ``fail_fast``.
    """
    outcomes = run_specs(
        shard_runs(sweep.runs(), *shard), isolate=isolate, fail_fast=fail_fast, task_loader=task_loader
    )
    if show:
        print_summary(outcomes, shard)
    return outcomes


def run_specs(
    specs: list[RunSpec],
    *,
    isolate: bool = False,
    fail_fast: bool = False,
    task_loader: Callable[[str, int], Task] | None = None,
    progress: str | None = None,
) -> list[RunOutcome]:
    """Run (or skip, if finished) each of ``specs`` in order; the options are :func:`run_sweep`'s.
    ``progress``: the title of a bar over the runs (its ETA counts trained runs only)."""
    from deltaspace.train.loop import train
    from deltaspace.train.probe import run_probe

    if isolate and task_loader is not None:
        raise ValueError(
            "task_loader works for in-process runs only; drop isolate=True or load tasks by spec"
        )
    tasks: dict[tuple[str, int], Task] = {}
    outcomes = []
    finished_before = [spec for spec in specs if is_finished(spec.run_dir)]
    bar = None
    if progress is not None and specs:
        from tqdm.auto import tqdm

        # Finished runs are counted up front (initial), so the rate and the ETA come from runs trained now.
        bar = tqdm(total=len(specs), initial=len(finished_before), desc=progress, unit="run", position=0)
    for spec in specs:
        if is_finished(spec.run_dir):
            check_same_settings(spec)
            outcomes.append(RunOutcome(spec, "skipped", result=load_result(spec.run_dir)))
            continue
        started = time.perf_counter()
        try:
            # A run directory without result.json was killed earlier: train() resumes (or restarts) it.
            if isolate and spec.kind == "train":
                _train_in_subprocess(spec)
                result = load_result(spec.run_dir)
            else:
                task = None
                if task_loader is not None:
                    cache_key = (spec.task, spec.config.data_seed)
                    if cache_key not in tasks:
                        tasks[cache_key] = task_loader(spec.task, spec.config.data_seed)
                    task = tasks[cache_key]
                result = (
                    run_probe(spec.config, task=task)
                    if spec.kind == "probe"
                    else train(spec.config, task=task)
                )
            outcomes.append(RunOutcome(spec, "done", result=result, seconds=time.perf_counter() - started))
        except Exception as error:
            if fail_fast:
                raise
            message = str(error) if isinstance(error, DeltaspaceError) else f"{type(error).__name__}: {error}"
            if not isinstance(error, RunDirectoryError):  # never write into a folder that is not ours
                spec.run_dir.mkdir(parents=True, exist_ok=True)
                write_text_atomic(spec.run_dir / "error.txt", traceback.format_exc())
            outcomes.append(RunOutcome(spec, "failed", error=message, seconds=time.perf_counter() - started))
        finally:
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return outcomes


class SettingsMismatchError(RunMismatchError):
    """A finished run in the sweep directory was trained with other settings than the sweep asks for."""


_BOOKKEEPING = BOOKKEEPING_FIELDS  # fields that do not change what a run learns or how it is scored


def check_same_settings(spec: RunSpec) -> None:
    """Refuse to reuse a finished run trained with other settings than the sweep now asks for.

    Without this, changing (say) the learning rate in a sweep config and rerunning it would silently
    report the old runs. Fields missing from an older config.json, and fields the sweep leaves to be
    resolved at run time (``None``, e.g. ``max_length`` from the task), are not compared.
    """
    path = spec.run_dir / CONFIG_FILE
    if not path.is_file():
        return
    saved = read_json(path)
    wanted = json.loads(json.dumps(spec.config.to_dict()))  # tuples -> lists, as saved
    for key, value in wanted.items():
        if key in _BOOKKEEPING or value is None or key not in saved or saved[key] == value:
            continue
        raise SettingsMismatchError(
            f"{spec.run_dir} was trained with {key}={saved[key]!r} but this sweep asks for {key}={value!r}; "
            "use another output directory or delete that run"
        )


def _train_in_subprocess(spec: RunSpec) -> None:
    # The config goes through a temporary file, so a run directory is only ever touched by train() itself
    # (which resumes a killed run and refuses a folder that is not a run).
    with tempfile.TemporaryDirectory(prefix="deltaspace-run-") as scratch:
        config_path = Path(scratch) / CONFIG_FILE
        spec.config.to_json(config_path)
        command = [
            sys.executable,
            "-c",
            "from deltaspace.cli import main; main()",
            "train",
            "--config",
            str(config_path),
        ]
        completed = subprocess.run(command, check=False)
    if completed.returncode != 0 or not is_finished(spec.run_dir):
        raise RuntimeError(f"run {spec.key} failed in its subprocess (exit code {completed.returncode})")


def is_main_process() -> bool:
    """False on every process but the first under ``accelerate launch`` (so summaries print once)."""
    from accelerate import PartialState

    return PartialState().is_main_process


def print_summary(outcomes: list[RunOutcome], shard: tuple[int, int] = (0, 1), what: str = "sweep") -> None:
    """A rich table of this shard's runs: status, validation / test accuracy, time."""
    from rich.console import Console
    from rich.table import Table

    if not is_main_process():
        return
    title = f"{what} shard {shard[0]}/{shard[1]}" if shard[1] > 1 else what
    counts = {status: sum(o.status == status for o in outcomes) for status in ("done", "skipped", "failed")}
    table = Table(
        title=f"{title}: {counts['done']} run, {counts['skipped']} skipped, {counts['failed']} failed"
    )
    for column in ("task", "method", "seed", "status", "val acc", "test acc", "trainable", "time (s)"):
        table.add_column(
            column,
            justify="right" if column in ("seed", "val acc", "test acc", "trainable", "time (s)") else "left",
        )
    styles = {"done": "green", "skipped": "dim", "failed": "red"}
    for outcome in outcomes:
        result = outcome.result
        table.add_row(
            slug(outcome.spec.task),
            # Runs named apart from <task>/<method>/seed<k> (a tuned sweep's) differ in their rate.
            outcome.spec.method
            + (
                f" lr {outcome.spec.config.lr:.3g}"
                if outcome.spec.name and outcome.spec.kind == "train" and outcome.spec.config.lr is not None
                else ""
            ),
            str(outcome.spec.seed),
            f"[{styles[outcome.status]}]{outcome.status}[/]",
            f"{result.validation['accuracy']:.4f}" if result else "-",
            f"{result.test['accuracy']:.4f}" if result else "-",
            f"{result.trainable_params:,}" if result else "-",
            f"{result.train_time_s:.1f}" if result else f"{outcome.seconds:.1f}",
        )
    console = Console()
    console.print(table)
    for outcome in outcomes:
        if outcome.status == "failed":
            console.print(
                f"[red]{outcome.spec.key}[/]: {outcome.error} (see {outcome.spec.run_dir / 'error.txt'})"
            )
