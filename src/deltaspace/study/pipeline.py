"""The whole subspace study from one config: sweep -> fit -> optimise + transfer -> landscape -> report.

Every stage writes its result atomically under ``<out>/`` and is skipped when that result exists, so a
killed study resumes where it stopped (the sweep itself resumes run by run).

Layout of ``<out>``::

    config.json                 the resolved study config
    runs/<task>/<det>/seed<k>/  original-space runs (deltaspace sweep; ``runs:`` in the config moves them)
    subspace/                   the stage-1 bundle (projections, θ0, codes) + fit.json + fit_log.jsonl
    subspace-loo/<task>/        leave-one-out mode: one bundle per held-out task, fitted without it
    stage2/<task>.json          stage 2 (learned subspace and controls, per DET) and stage 3 (transfer)
    stage2/parts/               finished (task, subspace) parts of an unfinished task, for resuming
    intrinsic/<task>--<det>.json   stage 6: the solutions found in the subspace, as d numbers
    landscape.json, landscape.png  stage 4
    timings.json                seconds per stage
    report.md                   tables and plots
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deltaspace.errors import UserInputError
from deltaspace.io import atomic_write, write_json_atomic
from deltaspace.study.config import StudyConfig
from deltaspace.study.records import LEARNED, SHARED, Stage2Record, SubspaceRun, bundle_path
from deltaspace.study.report import WORKER_KEYS, write_report
from deltaspace.train.result import DELTA_DIR, run_path, slug

STAGES = ("sweep", "fit", "optimise", "landscape", "report")


def _log(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold cyan]study[/] {message}")


def run_study(config: StudyConfig, *, stages: tuple[str, ...] = STAGES, workers: int | None = None) -> Path:
    """Run (or resume) the study; returns the path of report.md. ``workers``: processes for the
    independent jobs of each stage (default: one per core on a CPU machine; see :mod:`.workers`)."""
    config.validate()
    run_studies([config], stages=stages, workers=workers)
    out = Path(config.out)
    start = time.perf_counter()
    report = report_study(config) if "report" in stages else write_report(out)
    _add_timing(out, "report", time.perf_counter() - start)
    return report


def run_study_set(
    out: Path,
    config: dict[str, Any],
    studies: list[StudyConfig],
    stages: tuple[str, ...],
    workers: int | None,
) -> None:
    """A setting made of several studies (single-task pairs, source-curve points): ``<out>/config.json``,
    every study's ``stages`` (the setting's own choice: e.g. no landscape) through :func:`run_studies`,
    ``<out>/timings.json`` (each stage's wall seconds summed over resumed calls; the worker counts are the
    last call's) and, with ``report``, each study's baselines and report."""
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "config.json", config)
    walls = run_studies(studies, stages=stages, workers=workers)
    path = out / "timings.json"
    timings = json.loads(path.read_text()) if path.is_file() else {}
    for stage, seconds in walls.items():
        timings[stage] = seconds if stage in WORKER_KEYS else timings.get(stage, 0) + seconds
    write_json_atomic(path, timings)
    if "report" in stages:
        for study in studies:
            report_study(study)


def report_study(config: StudyConfig) -> Path:
    """The study's baselines (majority and same-budget probe per task, cached) and its report.md."""
    from deltaspace.study.baselines import write_baselines

    write_baselines(config.out, config.tasks, config.train, config.model)
    return write_report(Path(config.out))


def run_studies(
    configs: list[StudyConfig], *, stages: tuple[str, ...] = STAGES, workers: int | None = None
) -> dict[str, float]:
    """Run (or resume) the stages of several studies (e.g. a single-task study's pairs), stage by stage,
    each stage's independent jobs spread over ``workers`` processes; returns each stage's wall seconds.

    Each study's ``timings.json`` gets, per stage, the stage's wall time when it is the only study, and its
    own jobs' seconds when several share the stage."""
    from deltaspace.study.workers import resolve_workers, run_jobs, usable_cores

    workers = resolve_workers(workers)
    for config in configs:
        config.validate()
        out = Path(config.out)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "config.json", config.to_dict())
    log_dir = Path(configs[0].out) / "logs"
    walls: dict[str, float] = {}
    try:
        for stage in ("sweep", "fit", "optimise", "landscape"):
            if stage not in stages:
                continue
            _log(f"stage [bold]{stage}[/]")
            start = time.perf_counter()
            if stage == "sweep" and workers == 1:
                seconds: dict[str, float] = {}
                for config in configs:  # as a plain sweep: its own summary of the runs trained now
                    began = time.perf_counter()
                    run_sweep(config)
                    seconds[f"{config.name}: sweep"] = time.perf_counter() - began
            else:
                seconds = {}
                for step in ("optimise", "shared", "transfer") if stage == "optimise" else (stage,):
                    jobs = _unique([job for config in configs for job in _jobs(step, config)])
                    if min(workers, len(jobs)) > 1:
                        _CONTEXTS.clear()  # the workers build their own
                    # a fit runs in a process of its own: what it leaves behind must not crowd out stage 2's workers
                    isolate = stage == "fit"
                    seconds |= run_jobs(
                        jobs, workers=workers, log_dir=log_dir, desc=f"study {step}", isolate=isolate
                    )
                if stage == "sweep":
                    for config in configs:  # every run is finished now: checked, and summarised
                        run_sweep(config)
            walls[stage] = time.perf_counter() - start
            for config in configs:
                own = sum(s for label, s in seconds.items() if label.startswith(f"{config.name}: "))
                _add_timing(Path(config.out), stage, walls[stage] if len(configs) == 1 else own)
        if not walls:  # nothing ran (e.g. only the report): the last run's worker counts stand
            return walls
        walls["workers"] = float(workers)
        walls["threads_per_worker"] = float(max(1, usable_cores() // workers))
        for config in configs:  # the last call's, not summed
            path = Path(config.out) / "timings.json"
            timings = json.loads(path.read_text()) if path.exists() else {}
            write_json_atomic(path, {**timings, **{k: walls[k] for k in WORKER_KEYS}})
    finally:
        _CONTEXTS.clear()
    return walls


def plan_studies(configs: list[StudyConfig], stages: tuple[str, ...] = STAGES) -> dict[str, int]:
    """The jobs each stage has left across ``configs`` (original-space runs, fits, stage-2 parts, shared
    codes, stage-3 tasks, landscapes), counted from the files finished jobs leave; a stage that needs an earlier one's
    output counts every job it will have."""
    left: dict[str, int] = {}
    for stage in ("sweep", "fit", "optimise", "shared", "transfer", "landscape"):
        if stage == "shared" and not any(config.shared_code for config in configs):
            continue
        if stage in stages or (stage in ("shared", "transfer") and "optimise" in stages):
            left[stage] = len(_unique([job for config in configs for job in _jobs(stage, config)]))
    return left


def _unique(jobs: list) -> list:
    """Each original-space run once: studies that share a runs folder and a task (two single-task pairs
    with the same target) would otherwise train it twice at the same time."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for job in jobs:
        if job.run is train_run:
            study, key = job.args
            where = (study["runs"] or str(Path(study["out"]) / "runs"), key)  # StudyConfig.runs_dir
            if where in seen:
                continue
            seen.add(where)
        kept.append(job)
    return kept


def _add_timing(out: Path, stage: str, seconds: float) -> None:
    path = out / "timings.json"
    timings: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}
    timings[stage] = timings.get(stage, 0.0) + seconds
    write_json_atomic(path, timings)


# ---------------------------------------------------------------- where each stage's results go


def bundle_dir(config: StudyConfig, task: str | None = None) -> Path:
    """The subspace that solves ``task``: the shared one, or (leaving one out) the one fitted without it."""
    return bundle_path(config.out, config.heldout_mode, task)


def _continue_fit(source: Path, directory: Path) -> None:
    """Copy ``source``'s fit checkpoint and step log into ``directory`` (once: a checkpoint already there is
    this study's own, further along), so the fit continues that one."""
    from deltaspace.subspace._fit_checkpoint import CHECKPOINT_FILE

    if (directory / CHECKPOINT_FILE).is_file():
        return
    if not (source / CHECKPOINT_FILE).is_file():
        raise UserInputError(
            f"fit_from: {source} holds no fit checkpoint to continue (fits finished before checkpoints were "
            "kept beside the bundle delete theirs); run that study's fit, or drop fit_from"
        )
    for name in ("fit_log.jsonl", CHECKPOINT_FILE):  # the checkpoint last: it marks a complete copy
        if (source / name).is_file():
            atomic_write(directory / name, lambda tmp, name=name: shutil.copyfile(source / name, tmp))
    _log(f"stage 1 continues the fit of {source}")


def part_path(config: StudyConfig, task: str, kind: str, det: str | None = None) -> Path:
    """Stage 2 of ``task`` in one subspace (``learned`` or a control) through one DET, kept until the task's
    record is written; ``det`` None: the part of every DET that earlier versions of the study wrote."""
    return Path(config.out) / "stage2" / "parts" / f"{slug(task)}--{kind}{f'--{det}' if det else ''}.json"


# ---------------------------------------------------------------- the jobs of each stage

# One StudyContext per study and process (a worker that gets several of a study's jobs loads it once).
_CONTEXTS: dict[str, StudyContext] = {}


def _context(study: dict[str, Any]) -> StudyContext:
    if study["out"] not in _CONTEXTS:
        _CONTEXTS[study["out"]] = StudyContext(StudyConfig.from_dict(study))
    return _CONTEXTS[study["out"]]


def _jobs(stage: str, config: StudyConfig) -> list:
    """The unfinished jobs of ``stage`` (finished ones leave their result file and are not listed)."""
    from deltaspace.study.workers import Job
    from deltaspace.train.sweep import is_finished

    study, out, name = config.to_dict(), Path(config.out), config.name
    if stage == "sweep":
        return [
            Job(f"{name}: run {spec.key}", train_run, (study, spec.key))
            for spec in sweep_config(config).runs()
            if not is_finished(spec.run_dir)
        ]
    if stage == "fit":
        loo = config.heldout_mode == "leave_one_out"
        targets = config.stage2_tasks if loo else [None]
        return [
            Job(f"{name}: fit" + (f" without {slug(task)}" if task else ""), fit_subspace, (study, task))
            for task in targets
            if not (bundle_dir(config, task) / "fit.json").is_file()
        ]
    todo = [task for task in config.stage2_tasks if not (out / "stage2" / f"{slug(task)}.json").is_file()]
    if stage == "shared":  # one code through every DET at once, per task; added to finished records too
        return [
            Job(f"{name}: one code for every DET, {slug(task)}", shared_part, (study, task))
            for task in config.stage2_tasks
            if config.shared_code
            and not part_path(config, task, SHARED).is_file()
            and not _has_shared(out / "stage2" / f"{slug(task)}.json")
        ]
    if stage == "optimise":  # each task in each subspace (the learned one, every control) through each DET
        return [
            Job(f"{name}: stage 2 {slug(task)} {kind} {det}", optimise_part, (study, task, kind, det))
            for task in todo
            for kind in (LEARNED, *config.controls)
            if not part_path(config, task, kind).is_file()
            for det in config.methods
            if not part_path(config, task, kind, det).is_file()
        ]
    if stage == "transfer":  # then per task: transfer from the learned subspace, and the task's record
        return [Job(f"{name}: stage 3 {slug(task)}", transfer_task, (study, task)) for task in todo]
    if stage == "landscape" and not (out / "landscape.json").is_file():
        return [Job(f"{name}: landscape", draw_landscape, (study,))]
    return []


def _has_shared(record: Path) -> bool:
    return record.is_file() and json.loads(record.read_text()).get("shared") is not None


def train_run(study: dict[str, Any], key: str) -> None:
    """One original-space run of the study's sweep (by run key)."""
    from deltaspace.train.sweep import run_specs

    (spec,) = [s for s in sweep_config(StudyConfig.from_dict(study)).runs() if s.key == key]
    run_specs([spec], fail_fast=True)


def fit_subspace(study: dict[str, Any], task: str | None) -> None:
    """Stage 1: the shared subspace (``task`` None) or, leaving one out, the one fitted without ``task``."""
    context = _context(study)
    context.fit_one(context.bundle_dir(task), context.config.fit_sources(task))


def optimise_part(study: dict[str, Any], task: str, kind: str, det: str) -> None:
    """Stage 2 on one task in one subspace (the learned one or a control) through one DET."""
    _context(study).optimise_part(task, kind, det)


def shared_part(study: dict[str, Any], task: str) -> None:
    """One code for ``task`` trained through every DET at once in the learned subspace."""
    _context(study).shared_part(task)


def transfer_task(study: dict[str, Any], task: str) -> None:
    """Stage 3 on one task (and any stage-2 part not done yet), then the task's record."""
    context = _context(study)
    path = context.out / "stage2" / f"{slug(task)}.json"
    if not path.is_file():
        context.optimise_task(task, path)


def draw_landscape(study: dict[str, Any]) -> None:
    """Stage 4."""
    _context(study).landscape()


# ---------------------------------------------------------------- stage 0: original-space solutions


def sweep_config(config: StudyConfig):
    from deltaspace.train.sweep import SweepConfig

    return SweepConfig(
        out=str(config.runs_dir),
        tasks=config.tasks,
        methods=list(config.methods),
        seeds=[config.seed],
        # No majority / probe per run: the study reads its runs against θ0 and its own controls.
        train={
            "model": config.model,
            "head": "prototype",
            "baselines": False,
            **config.train,
            **({"mixed_precision": config.mixed_precision} if config.mixed_precision != "no" else {}),
        },
        method_overrides=dict(config.method_overrides),
    )


def run_sweep(config: StudyConfig) -> None:
    from deltaspace.train.sweep import run_sweep as sweep

    sweep(sweep_config(config), fail_fast=True)


# ---------------------------------------------------------------- stages 1-4 share one context


class StudyContext:
    """Members (one DeltaModel per DET, serving every task), task batches and the original solutions."""

    def __init__(self, config: StudyConfig) -> None:
        from deltaspace.assets import load_model
        from deltaspace.heads import label_prototypes
        from deltaspace.subspace import SolutionStore
        from deltaspace.tasks.load import load_task

        self.config = config
        self.out = Path(config.out)
        self.tasks = {name: load_task(name, seed=0) for name in config.tasks}
        encoder, self.tokenizer = load_model(config.model, kind="encoder")
        # Prototypes from the frozen base, before any delta exists (prompt/prefix change outputs at init).
        self.prototypes = {
            name: label_prototypes(encoder, self.tokenizer, task.label_names)
            for name, task in self.tasks.items()
        }
        del encoder
        self.members = [self._member(method) for method in config.methods]
        self.store = SolutionStore()
        for member in self.members:
            for task in config.tasks:
                self.store.add_solution(member.name, task, self._trained_vector(member, task), member.theta0)
        self.batches = {name: self._task_batches(name) for name in config.tasks}
        self._references: dict[str, tuple[list[int], dict[str, list[int]], dict[str, list[int]]]] = {}
        self._last_subspace: tuple[tuple[str, str], Any] | None = None

    # -- members and solutions

    def _member(self, method: str):
        from deltaspace.deltas.presets import resolve_method
        from deltaspace.model import get_delta_model
        from deltaspace.subspace import DeltaModelMember
        from deltaspace.train.build import build_classifier

        first = self.tasks[self.config.source_tasks[0]]
        classifier, _ = build_classifier(self.config.model, first, "prototype", self.config.seed)
        options = self.config.method_overrides.get(method, {}).get("method_options", {})
        configs = resolve_method(method, classifier, **options)
        delta_model = get_delta_model(classifier, *configs, seed=self.config.seed)
        autocast = torch.bfloat16 if self.config.mixed_precision == "bf16" else None
        return DeltaModelMember(method, delta_model, autocast=autocast)

    def run_dir(self, task: str, method: str) -> Path:
        return run_path(self.config.runs_dir, task, method, self.config.seed)

    def _trained_vector(self, member, task: str) -> torch.Tensor:
        path = self.run_dir(task, member.name) / DELTA_DIR
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is missing; run the study's sweep stage first")
        tensors = member.model.read_solution(path)  # checked like DeltaModel.from_pretrained
        return torch.cat([tensor.reshape(-1).float() for tensor in tensors.values()])

    # -- batches

    def _batches(
        self, name: str, split: str, limit: int, batch_size: int, *, shuffle: bool = False
    ) -> list[dict[str, Any]]:
        from deltaspace.train.data import cap_examples, make_loader, tokenize_split

        task = self.tasks[name]
        dataset = cap_examples(task.split(split), limit, seed=0)
        # The same cut as the original-space runs, so their solutions are scored on the inputs they saw.
        max_length = self.config.train.get("max_length") or task.max_length
        encoded = tokenize_split(dataset, self.tokenizer, is_pair=task.is_pair, max_length=max_length)
        if not shuffle:
            # Evaluation batches hold examples of similar length, so each pads to little more than its own
            # texts: evaluation is most of stages 2-4's time. The order is fixed and every evaluation of a
            # task (θ0, originals, stage 2, transfer) reads the same batches, so predictions stay paired.
            lengths = np.array([len(ids) for ids in encoded["input_ids"]])
            encoded = encoded.select(np.argsort(lengths, kind="stable"))
        loader = make_loader(
            encoded, self.tokenizer, batch_size=batch_size, shuffle=shuffle, seed=self.config.seed
        )
        return [{**dict(batch), "prototypes": self.prototypes[name]} for batch in loader]

    def _task_batches(self, name: str):
        from transformers import DataCollatorWithPadding

        from deltaspace.subspace import TaskBatches
        from deltaspace.subspace.batches import shuffled_batches
        from deltaspace.train.data import cap_examples, tokenize_split

        config = self.config
        task = self.tasks[name]
        # Training batches are dealt afresh every epoch (a long stage-1 fit must not replay one order) from
        # torch's global RNG, which the stages seed and fit() checkpoints: the same seed, the same orders.
        encoded = tokenize_split(
            cap_examples(task.split("train"), config.fit_train_examples, seed=0),
            self.tokenizer,
            is_pair=task.is_pair,
            max_length=config.train.get("max_length") or task.max_length,  # the original runs' cut
        )
        collate, prototypes = DataCollatorWithPadding(self.tokenizer), self.prototypes[name]

        def train_batch(index: torch.Tensor) -> dict[str, Any]:
            return {**dict(collate([encoded[i] for i in index.tolist()])), "prototypes": prototypes}

        return TaskBatches(
            name=name,
            train_batches=shuffled_batches(len(encoded), config.batch_size, train_batch),
            eval_batches=self._batches(name, "validation", config.eval_examples, config.eval_batch_size),
            test_batches=self._batches(name, "test", config.test_examples, config.eval_batch_size),
            num_labels=self.tasks[name].num_labels,
        )

    def reference_predictions(
        self, task: str
    ) -> tuple[list[int], dict[str, list[int]], dict[str, list[int]]]:
        """Gold test labels, and each DET's test predictions at θ0 (untrained) and at its original-space
        solution, on the subspace stages' test examples (so every comparison is paired)."""
        from deltaspace.subspace.evaluate import predictions

        if task not in self._references:
            batches = self.batches[task].report_batches
            initial, original, gold = {}, {}, None
            for m in self.members:
                pred, gold = predictions(m, m.theta0, batches)
                initial[m.name] = pred.tolist()
                pred, _ = predictions(m, m.theta0 + self.store.delta(m.name, task), batches)
                original[m.name] = pred.tolist()
            self._references[task] = (gold.tolist(), initial, original)
        return self._references[task]

    def originals(self, task: str) -> dict[str, float]:
        """Each DET's original-space test accuracy, re-scored on the subspace stages' test examples."""
        gold, _, original = self.reference_predictions(task)
        return {
            name: float((torch.tensor(p) == torch.tensor(gold)).float().mean())
            for name, p in original.items()
        }

    def _validation_originals(self, task: str) -> dict[str, float]:
        from deltaspace.subspace import evaluate

        batches = self.batches[task]
        return {
            m.name: evaluate(
                m,
                m.theta0 + self.store.delta(m.name, task),
                batches.eval_batches,
                num_labels=batches.num_labels,
            )["accuracy"]
            for m in self.members
        }

    # -- stage 1

    def bundle_dir(self, task: str | None = None) -> Path:
        return bundle_dir(self.config, task)

    def fit_one(self, directory: Path, sources: list[str]) -> None:
        from deltaspace.subspace import SubspaceBundle, fit

        if (directory / "fit.json").is_file():
            _log(f"stage 1 done before; reusing {directory}")
            return
        fit_config = dataclasses.replace(self.config.fit)
        directory.mkdir(parents=True, exist_ok=True)
        if self.config.fit_from:
            _continue_fit(Path(self.config.fit_from) / directory.relative_to(self.config.out), directory)
        start = time.perf_counter()
        steps: list[float] = []
        last = [time.perf_counter()]

        def on_step(record: dict[str, Any]) -> None:
            now = time.perf_counter()
            steps.append(now - last[0])
            last[0] = now

        fit(
            self.members,
            self.store,
            [self.batches[name] for name in sources],
            fit_config,
            output_dir=directory,
            log_path=directory / "fit_log.jsonl",
            on_step=on_step,
        )
        bundle = SubspaceBundle.load(directory)
        summary = {
            "config": dataclasses.asdict(fit_config),
            "seconds": time.perf_counter() - start,
            "seconds_per_step": sum(steps) / len(steps) if steps else None,
            "dims": {m.name: int(m.theta0.numel()) for m in self.members},
            "projection_memory_bytes": bundle.memory_bytes(),
            "projection_kinds": bundle.metadata.get("members", {}),
            "closed_form": bundle.metadata.get("closed_form"),
            "reconstruction_error": bundle.reconstruction_errors(self.store),
            "source_tasks": sources,
            # the joint fit's course: steps taken, the validation it kept, whether patience stopped it
            "wall_seconds": bundle.metadata.get("wall_seconds"),  # a resumed fit's earlier calls too
            "steps_run": bundle.metadata.get("steps_run"),
            "stopped_early": bundle.metadata.get("stopped_early"),
            "best_step": bundle.metadata.get("best_step"),
            "best_score": bundle.metadata.get("best_score"),
            "validation": [
                {key: check.get(key) for key in ("step", "score", "accuracy", "loss", "relative")}
                for check in bundle.metadata.get("validation", [])
            ],
        }
        write_json_atomic(directory / "fit.json", summary)

    def bundle(self, task: str | None = None):
        from deltaspace.subspace import SubspaceBundle

        return SubspaceBundle.load(self.bundle_dir(task))

    # -- stages 2, 3, 6

    def subspace(self, task: str, kind: str):
        """The subspace ``kind`` (``learned``, or a control built from the same source tasks) that solves
        ``task``."""
        from deltaspace.subspace.controls import control_subspace

        # Kept for the next call only: a worker runs a task's DETs in one subspace one after another, and a
        # control (or a span basis of k·D floats) is not worth building or holding more than once.
        if self._last_subspace is not None and self._last_subspace[0] == (task, kind):
            return self._last_subspace[1]
        if kind == LEARNED:
            subspace = self.bundle(task)
        else:
            subspace = control_subspace(
                kind,
                self.members,
                self.store,
                self.config.fit_sources(task),
                self.config.fit.dim,
                seed=self.config.seed,
                max_dense_elements=self.config.fit.max_dense_elements,
            )
        self._last_subspace = ((task, kind), subspace)
        return subspace

    def part_path(self, task: str, kind: str, det: str | None = None) -> Path:
        return part_path(self.config, task, kind, det)

    def optimise_part(self, task: str, kind: str, det: str) -> None:
        """Stage 2 of ``task`` in the subspace ``kind`` through the DET ``det``: ``part_path``, unless it
        exists (or a part of every DET from an earlier version of the study holds it)."""
        from deltaspace.subspace import IntrinsicDelta, optimise

        part = self.part_path(task, kind, det)
        if part.is_file() or self.part_path(task, kind).is_file():  # finished before a stop
            return
        (member,) = [m for m in self.members if m.name == det]
        # built only when needed: resuming skips the finished ones (a span basis is k·D floats)
        bundle = self.subspace(task, kind)
        start = time.perf_counter()
        result = optimise(
            member,
            bundle,
            self.batches[task],
            self.config.optimise,
            original_metric=self.originals(task)[det],
        )
        run = SubspaceRun(
            metric=result.metric,
            initial_metric=result.initial_metric,
            selection_metric=result.selection_metric,
            best_step=result.best_step,
            predictions=result.predictions,
            z=result.z.tolist(),
            relative=result.relative,
        )
        if kind == LEARNED:
            IntrinsicDelta.from_bundle(
                self.bundle_dir(task), det, result.z, task=task, metrics=result.metrics
            ).save(self.out / "intrinsic" / f"{slug(task)}--{det}.json")
        write_json_atomic(part, {"run": dataclasses.asdict(run), "seconds": time.perf_counter() - start})

    def _part(self, task: str, kind: str) -> tuple[dict[str, SubspaceRun], float]:
        """Every DET's stage 2 of ``task`` in ``kind`` (the missing ones run here) and their seconds."""
        legacy = self.part_path(task, kind)
        if legacy.is_file():
            data = json.loads(legacy.read_text())
            return {det: SubspaceRun(**run) for det, run in data["runs"].items()}, data["seconds"]
        runs, seconds = {}, 0.0
        for member in self.members:
            self.optimise_part(task, kind, member.name)
            data = json.loads(self.part_path(task, kind, member.name).read_text())
            runs[member.name] = SubspaceRun(**data["run"])
            seconds += data["seconds"]
        return runs, seconds

    def shared_part(self, task: str) -> dict[str, Any]:
        """One code for ``task`` trained through every DET at once (the part file, made unless it exists)."""
        from deltaspace.subspace.shared_code import optimise_shared, shared_summary

        part = self.part_path(task, SHARED)
        if not part.is_file():
            start = time.perf_counter()
            results = optimise_shared(
                self.members, self.subspace(task, LEARNED), self.batches[task], self.config.optimise
            )
            write_json_atomic(part, {**shared_summary(results), "seconds": time.perf_counter() - start})
        data = json.loads(part.read_text())
        record_path = self.out / "stage2" / f"{slug(task)}.json"
        if record_path.is_file():  # a finished task (shared_code asked for later): the record takes it now
            record = Stage2Record.from_dict(json.loads(record_path.read_text()))
            record.seconds["shared_code"] = data.pop("seconds")
            record.shared = data
            write_json_atomic(record_path, record.to_dict())
            part.unlink()
        return data

    def optimise_task(self, task: str, path: Path) -> None:
        """Stages 2-3 of ``task``: every subspace's part (those not done yet, here), then transfer across
        DETs from the learned one; writes the task's record to ``path`` and drops the parts."""
        from deltaspace.subspace import transfer

        gold, initial, original = self.reference_predictions(task)
        kinds = [LEARNED, *self.config.controls]
        runs: dict[str, dict[str, SubspaceRun]] = {}
        seconds: dict[str, float] = {}
        for kind in kinds:
            runs[kind], seconds[kind] = self._part(task, kind)
        start = time.perf_counter()
        learned = runs[LEARNED]
        matrix = transfer(
            self.members,
            self.subspace(task, LEARNED),
            {name: torch.tensor(run.z) for name, run in learned.items()},
            self.batches[task],
            original_metrics=self.originals(task),
            known={name: run.predictions for name, run in learned.items()},
        )
        seconds["transfer"] = time.perf_counter() - start
        start = time.perf_counter()
        shared = self._shared_transfer(task, {name: run.z for name, run in learned.items()})
        if shared is not None:
            seconds["transfer_shared"] = time.perf_counter() - start
        one_code = None
        if self.config.shared_code:
            one_code = self.shared_part(task)
            seconds["shared_code"] = one_code.pop("seconds")
        record = Stage2Record(
            task=slug(task),
            heldout=task in self.config.heldout_tasks or self.config.heldout_mode == "leave_one_out",
            source_tasks=[slug(t) for t in self.config.fit_sources(task)],
            gold=gold,
            initial=initial,
            original=original,
            runs=runs,
            transfer=matrix.to_dict(),
            seconds=seconds,
            transfer_shared=shared,
            shared=one_code,
        )
        write_json_atomic(path, record.to_dict())
        self.part_path(task, SHARED).unlink(missing_ok=True)
        for kind in kinds:
            self.part_path(task, kind).unlink(missing_ok=True)
            for member in self.members:
                self.part_path(task, kind, member.name).unlink(missing_ok=True)

    def _shared_transfer(self, task: str, codes: dict[str, list[float]]) -> dict[str, Any] | None:
        """The transfer matrix of the codes cut to the k source-solution coordinates that every DET shares
        in a closed-form subspace (None where there is no such split: a random start, or k = d)."""
        from deltaspace.subspace import transfer

        bundle = self.subspace(task, LEARNED)
        layout = bundle.metadata.get("closed_form") or {}
        shared = layout.get("basis_dim", 0)
        if not 0 < shared < self.config.fit.dim:
            return None
        cut = {name: torch.tensor(z[:shared] + [0.0] * (len(z) - shared)) for name, z in codes.items()}
        matrix = transfer(
            self.members, bundle, cut, self.batches[task], original_metrics=self.originals(task)
        )
        return {**matrix.to_dict(), "coordinates": shared}

    # -- stage 4

    def landscape(self) -> None:
        from deltaspace.subspace import default_plane, landscape
        from deltaspace.subspace.plots import plot_landscape

        if (self.out / "landscape.json").is_file():
            return
        options = self.config.landscape
        task = options.task or self.config.source_tasks[0]
        # leaving one out, the landscape is drawn in the subspace that was fitted without the last task
        bundle = self.bundle(
            self.config.stage2_tasks[-1] if self.config.heldout_mode == "leave_one_out" else None
        )
        plane = default_plane(bundle, slug(task) if slug(task) in bundle.tasks() else task)
        # a map, not a selection: drawn on the validation examples, which are fewer than the test ones
        batches = self.batches[task]
        on_validation = dataclasses.replace(batches, test_batches=batches.eval_batches)
        result = landscape(
            self.members,
            bundle,
            on_validation,
            plane,
            resolution=options.resolution,
            margin=options.margin,
            original_metrics=self._validation_originals(task),
        )
        plot_landscape(
            result,
            self.out / "landscape.png",
            threshold=options.threshold,
            title=f"{slug(task)}: {plane.kind} plane",
        )
        data = result.to_dict()
        data["task"] = slug(task)
        data["threshold"] = options.threshold
        data["shared_fraction"] = result.shared_fraction(options.threshold)
        write_json_atomic(self.out / "landscape.json", data)
