"""The whole subspace study from one config: sweep -> fit -> optimise + transfer -> landscape -> report.

Every stage writes its result atomically under ``<out>/`` and is skipped when that result exists, so a
killed study resumes where it stopped (the sweep itself resumes run by run).

Layout of ``<out>``::

    config.json                 the resolved study config
    runs/<task>/<det>/seed<k>/  original-space runs (deltaspace sweep; ``runs:`` in the config moves them)
    subspace/                   the stage-1 bundle (projections, θ0, codes) + fit.json + fit_log.jsonl
    stage2/<task>.json          stage 2 (optimise z per DET) and stage 3 (transfer matrix) for one task
    intrinsic/<task>--<det>.json   stage 6: the solutions found in the subspace, as d numbers
    landscape.json, landscape.png  stage 4
    timings.json                seconds per stage
    report.md                   tables and plots
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from deltaspace.io import write_json_atomic
from deltaspace.study.config import StudyConfig
from deltaspace.study.report import write_report
from deltaspace.train.sweep import slug

STAGES = ("sweep", "fit", "optimise", "landscape", "report")


def _log(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold cyan]study[/] {message}")


def run_study(config: StudyConfig, *, stages: tuple[str, ...] = STAGES) -> Path:
    """Run (or resume) the study; returns the path of report.md."""
    config.validate()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "config.json", config.to_dict())
    timings_path = out / "timings.json"
    timings: dict[str, float] = json.loads(timings_path.read_text()) if timings_path.exists() else {}

    def timed(name: str, work: Callable[[], Any]) -> Any:
        _log(f"stage [bold]{name}[/]")
        start = time.perf_counter()
        result = work()
        timings[name] = timings.get(name, 0.0) + (time.perf_counter() - start)
        write_json_atomic(timings_path, timings)
        return result

    if "sweep" in stages:
        timed("sweep", lambda: run_sweep(config))
    context: StudyContext | None = None
    if any(stage in stages for stage in ("fit", "optimise", "landscape")):
        context = timed("prepare", lambda: StudyContext(config))
    if "fit" in stages:
        timed("fit", context.fit)
    if "optimise" in stages:
        timed("optimise", context.optimise_all)
    if "landscape" in stages:
        timed("landscape", context.landscape)
    return timed("report", lambda: write_report(out))


# ---------------------------------------------------------------- stage 0: original-space solutions


def sweep_config(config: StudyConfig):
    from deltaspace.train.sweep import SweepConfig

    return SweepConfig(
        out=str(config.runs_dir),
        tasks=config.tasks,
        methods=list(config.methods),
        seeds=[config.seed],
        train={"model": config.model, "head": "prototype", **config.train},
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
        self._originals: dict[str, dict[str, float]] = {}

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
        return DeltaModelMember(method, delta_model)

    def run_dir(self, task: str, method: str) -> Path:
        return self.config.runs_dir / slug(task) / slug(method) / f"seed{self.config.seed}"

    def _trained_vector(self, member, task: str) -> torch.Tensor:
        path = self.run_dir(task, member.name) / "delta" / "delta_model.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; run the study's sweep stage first")
        tensors = load_file(str(path))
        names = list(member.model.parameter_shapes())
        missing = [name for name in names if name not in tensors]
        if missing:
            raise ValueError(
                f"{path} lacks {missing[:3]}...; it was trained with another {member.name} config"
            )
        return torch.cat([tensors[name].reshape(-1).float() for name in names])

    # -- batches

    def _batches(self, name: str, split: str, limit: int, *, shuffle: bool = False) -> list[dict[str, Any]]:
        from deltaspace.train.data import cap_examples, make_loader, tokenize_split

        task = self.tasks[name]
        dataset = cap_examples(task.split(split), limit, seed=0)
        # The same cut as the original-space runs, so their solutions are scored on the inputs they saw.
        max_length = self.config.train.get("max_length") or task.max_length
        encoded = tokenize_split(dataset, self.tokenizer, is_pair=task.is_pair, max_length=max_length)
        loader = make_loader(
            encoded, self.tokenizer, batch_size=self.config.batch_size, shuffle=shuffle, seed=self.config.seed
        )
        return [{**dict(batch), "prototypes": self.prototypes[name]} for batch in loader]

    def _task_batches(self, name: str):
        from deltaspace.subspace import TaskBatches

        train = self._batches(name, "train", self.config.fit_train_examples, shuffle=True)
        return TaskBatches(
            name=name,
            train_batches=lambda: train,
            eval_batches=self._batches(name, "validation", self.config.eval_examples),
            test_batches=self._batches(name, "test", self.config.eval_examples),
            num_labels=self.tasks[name].num_labels,
        )

    def initial(self, task: str) -> dict[str, float]:
        """Each DET's test accuracy at θ0 (before any training): the floor relative numbers must beat."""
        from deltaspace.subspace import evaluate

        batches = self.batches[task]
        return {
            m.name: evaluate(m, m.theta0, batches.report_batches, num_labels=batches.num_labels)["accuracy"]
            for m in self.members
        }

    def originals(self, task: str) -> dict[str, float]:
        """Each DET's original-space test accuracy, re-scored on the subspace stages' test examples."""
        from deltaspace.subspace import evaluate

        if task not in self._originals:
            batches = self.batches[task]
            self._originals[task] = {
                m.name: evaluate(
                    m,
                    m.theta0 + self.store.delta(m.name, task),
                    batches.report_batches,
                    num_labels=batches.num_labels,
                )["accuracy"]
                for m in self.members
            }
        return self._originals[task]

    # -- stage 1

    @property
    def bundle_dir(self) -> Path:
        return self.out / "subspace"

    def fit(self) -> None:
        from deltaspace.subspace import FitConfig, SubspaceBundle, fit

        if (self.bundle_dir / "fit.json").is_file():
            _log("stage 1 done before; reusing the saved subspace")
            return
        fit_config = FitConfig(**{"seed": self.config.seed, **self.config.fit})
        source = [self.batches[name] for name in self.config.source_tasks]
        self.bundle_dir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        fit(
            self.members,
            self.store,
            source,
            fit_config,
            output_dir=self.bundle_dir,
            log_path=self.bundle_dir / "fit_log.jsonl",
        )
        bundle = SubspaceBundle.load(self.bundle_dir)
        summary = {
            "config": fit_config.to_dict(),
            "seconds": time.perf_counter() - start,
            "dims": {m.name: int(m.theta0.numel()) for m in self.members},
            "projection_memory_bytes": bundle.memory_bytes(),
            "projection_kinds": bundle.metadata.get("members", {}),
            "reconstruction_error": bundle.reconstruction_errors(self.store),
            "source_tasks": self.config.source_tasks,
        }
        write_json_atomic(self.bundle_dir / "fit.json", summary)

    def bundle(self):
        from deltaspace.subspace import SubspaceBundle

        return SubspaceBundle.load(self.bundle_dir)

    # -- stages 2, 3, 6

    def optimise_all(self) -> None:
        from deltaspace.subspace import IntrinsicDelta, OptimiseConfig, optimise_and_transfer

        bundle = self.bundle()
        optimise_config = OptimiseConfig(**{"seed": self.config.seed, **self.config.optimise})
        for task in self.config.stage2_tasks:
            path = self.out / "stage2" / f"{slug(task)}.json"
            if path.is_file():
                continue
            originals = self.originals(task)
            start = time.perf_counter()
            matrix, results = optimise_and_transfer(
                self.members, bundle, self.batches[task], optimise_config, original_metrics=originals
            )
            for name, result in results.items():
                IntrinsicDelta.from_bundle(
                    self.bundle_dir, name, result.z, task=task, metrics=result.metrics
                ).save(self.out / "intrinsic" / f"{slug(task)}--{name}.json")
            write_json_atomic(
                path,
                {
                    "task": slug(task),
                    "heldout": task in self.config.heldout_tasks,
                    "seconds": time.perf_counter() - start,
                    "original": originals,
                    "initial": self.initial(task),
                    "optimise": {
                        name: {k: v for k, v in r.to_dict().items() if k != "history"}
                        for name, r in results.items()
                    },
                    "transfer": matrix.to_dict(),
                },
            )

    # -- stage 4

    def landscape(self) -> None:
        from deltaspace.subspace import default_plane, landscape
        from deltaspace.subspace.plots import plot_landscape

        if (self.out / "landscape.json").is_file():
            return
        options = {"resolution": 9, "margin": 0.5, "threshold": 90.0, **self.config.landscape}
        task = options.get("task", self.config.source_tasks[0])
        bundle = self.bundle()
        result = landscape(
            self.members,
            bundle,
            self.batches[task],
            default_plane(bundle, task),
            resolution=int(options["resolution"]),
            margin=float(options["margin"]),
            original_metrics=self.originals(task),
        )
        plot_landscape(
            result,
            self.out / "landscape.png",
            threshold=float(options["threshold"]),
            title=f"{task}: the plane through the DETs' codes",
        )
        data = result.to_dict()
        data["task"] = slug(task)
        data["threshold"] = float(options["threshold"])
        data["shared_fraction"] = result.shared_fraction(float(options["threshold"]))
        write_json_atomic(self.out / "landscape.json", data)
