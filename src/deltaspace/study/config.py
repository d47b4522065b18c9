"""The study config: which model, tasks and delta methods (DETs), and the budget of every stage."""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

SHIPPED = ("default", "full_suite")


@dataclasses.dataclass
class StudyConfig:
    """One subspace study, end to end (see :func:`deltaspace.study.run_study`).

    Attributes:
        name, out: the study's name and output directory (subspace, report.md, plots).
        runs: directory of the original-space runs (default ``<out>/runs``). Point it at an existing
            sweep (e.g. ``runs/suite``) to reuse its runs: they are reused only if they were trained with
            exactly the study's settings, otherwise the sweep stage stops with an error naming the field.
        model: base model for every DET (``minilm-l6`` is the embedded default).
        source_tasks: tasks whose DET solutions define the subspace (stage 1).
        heldout_tasks: tasks never seen by stage 1; stage 2 solves them inside the subspace.
        methods: the DETs (preset names, see ``deltaspace.available_methods()``).
        seed: seed of every DET's initial point θ0 (shared across tasks, as the paper requires).
        train: TrainConfig fields for the original-space runs (the sweep).
        method_overrides: per-DET TrainConfig fields (learning rates differ a lot between DETs).
        fit: FitConfig fields (stage 1); optimise: OptimiseConfig fields (stage 2).
        fit_train_examples: training examples per source task used by stage 1.
        eval_examples: examples per task for every subspace evaluation (stage 2 selection uses the
            validation split, reports use the test split; the original-space solutions are re-scored on
            the same examples, so relative performance compares like with like).
        batch_size: batch size of the subspace stages.
        optimise_tasks: tasks for stages 2-3 (default: the held-out tasks, then the source tasks).
        landscape: ``task`` (default: the first source task), ``resolution``, ``margin``, ``threshold``.
    """

    name: str = "default"
    out: str = "studies/default"
    runs: str | None = None
    model: str = "minilm-l6"
    source_tasks: list[str] = dataclasses.field(default_factory=lambda: ["rt_sentiment", "multiemo_hotels"])
    heldout_tasks: list[str] = dataclasses.field(default_factory=lambda: ["rt_subjectivity"])
    methods: list[str] = dataclasses.field(default_factory=lambda: ["lora", "adapter", "coeff"])
    seed: int = 0
    train: dict[str, Any] = dataclasses.field(default_factory=dict)
    method_overrides: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    fit: dict[str, Any] = dataclasses.field(default_factory=dict)
    optimise: dict[str, Any] = dataclasses.field(default_factory=dict)
    fit_train_examples: int = 256
    eval_examples: int = 200
    batch_size: int = 16
    optimise_tasks: list[str] | None = None
    landscape: dict[str, Any] = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        if not self.source_tasks:
            raise ValueError("a study needs at least one source task (source_tasks: [...])")
        if len(self.methods) < 2:
            raise ValueError(f"a unified subspace needs at least 2 DETs, got methods={self.methods}")
        overlap = sorted(set(self.source_tasks) & set(self.heldout_tasks))
        if overlap:
            raise ValueError(f"tasks {overlap} are both source and held-out; a held-out task must be unseen")
        for key in ("fit_train_examples", "eval_examples", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        unknown = sorted(set(self.method_overrides) - set(self.methods))
        if unknown:
            raise ValueError(f"method_overrides for {unknown}, which are not in methods={self.methods}")

    @property
    def runs_dir(self) -> Path:
        return Path(self.runs) if self.runs else Path(self.out) / "runs"

    @property
    def tasks(self) -> list[str]:
        return [*self.source_tasks, *self.heldout_tasks]

    @property
    def stage2_tasks(self) -> list[str]:
        return list(self.optimise_tasks) if self.optimise_tasks is not None else self.tasks

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudyConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown study option(s) {unknown}; valid options: {sorted(names)}")
        config = cls(**data)
        config.validate()
        return config


def load_study_config(spec: str | Path | None = None) -> StudyConfig:
    """A shipped config by name (``default``, ``full_suite``) or a YAML/JSON file; ``None`` = default."""
    spec = "default" if spec is None else str(spec)
    if spec in SHIPPED:
        text = resources.files("deltaspace.configs").joinpath(f"{spec}.yaml").read_text()
    else:
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"study config {spec!r} not found; give a YAML file or one of {SHIPPED}")
        text = path.read_text()
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError(f"study config {spec!r} must be a mapping of options, got {type(data).__name__}")
    return StudyConfig.from_dict(data)
