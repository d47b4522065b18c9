"""The study config: which model, tasks and delta methods (DETs), and the budget of every stage.

Every section is a dataclass checked when the config is loaded (names, types, ranges, task and method
names), so a typo fails in a second, before the sweep runs for minutes.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from deltaspace.errors import BrokenFileError, MissingFileError, UserInputError
from deltaspace.subspace.controls import CONTROLS
from deltaspace.subspace.fit import FitConfig
from deltaspace.subspace.optimise import OptimiseConfig

SHIPPED = (
    "default",
    "full_suite",
    "full_suite_loo",
    "full_suite_fit",
    "full_suite_fit_random",
    "full_suite_fit_hull",
    "full_suite_fit_agree",
    "single_task",
    "single_task_fit",
    "single_task_fit_random",
    "source_curve",
    "source_curve_hull",
    "full_suite_v1",
    "full_suite_loo_v1",
)
HELDOUT_MODES = ("fixed", "leave_one_out")


@dataclasses.dataclass
class LandscapeConfig:
    """Stage 4: ``task`` (default: the first source task), a ``resolution`` × ``resolution`` grid over the
    plane's anchors widened by ``margin``, and the ``threshold`` (% of the original-space accuracy) that
    defines the shared region."""

    task: str | None = None
    resolution: int = 9
    margin: float = 0.5
    threshold: float = 90.0

    def validate(self) -> None:
        if self.resolution < 2:
            raise UserInputError(f"landscape.resolution must be >= 2, got {self.resolution}")
        if self.margin < 0 or not 0 < self.threshold <= 200:
            raise UserInputError(
                f"landscape.margin must be >= 0 and threshold in (0, 200], got {self.margin}, {self.threshold}"
            )


@dataclasses.dataclass
class StudyConfig:
    """One subspace study, end to end (see :func:`deltaspace.study.run_study`).

    Attributes:
        name, out: the study's name and output directory (subspace, report.md, plots).
        runs: directory of the original-space runs (default ``<out>/runs``); runs are reused only if they
            were trained with exactly the study's settings.
        model: base model for every DET (``minilm-l6`` is the embedded default).
        source_tasks: tasks whose DET solutions define the subspace (stage 1).
        heldout_tasks: tasks never seen by stage 1; stage 2 solves them inside the subspace.
        heldout_mode: ``fixed`` (one subspace from ``source_tasks``) or ``leave_one_out`` (every task
            of source + held-out is held out in turn and solved in a subspace fitted on all the others).
        methods: the DETs (preset names, see ``deltaspace.available_methods()``).
        seed: seed of every DET's initial point θ0 (shared across tasks, as the paper requires).
        train: TrainConfig fields for the original-space runs (the sweep).
        method_overrides: per-DET TrainConfig fields (learning rates differ a lot between DETs).
        fit: stage 1 (:class:`~deltaspace.subspace.FitConfig`); optimise: stage 2
            (:class:`~deltaspace.subspace.OptimiseConfig`); landscape: stage 4 (:class:`LandscapeConfig`).
        controls: control subspaces run through stage 2 beside the learned one (``random``, ``span``).
        fit_train_examples: training examples per task used by stages 1 and 2.
        eval_examples: validation examples per task (stage-2 selection).
        test_examples: test examples per task for every reported number (the original-space solutions and
            θ0 are re-scored on the same examples, so every comparison is paired).
        batch_size: training batch size of the subspace stages; eval_batch_size: of their evaluations.
        optimise_tasks: tasks for stages 2-3 (default: the held-out tasks; every task when leaving one out).
        mixed_precision: ``no`` or ``bf16``: bfloat16 autocast for every stage, the original-space runs
            included (1.4-1.6x a training step on CPUs with AVX512-BF16: bench/cpu_bf16_step.py).
        shared_code: stage 3 also trains one code per stage-2 task through every DET at once (the mean of
            their losses, stage 2's settings otherwise), the ceiling that zero-shot transfer is read against
            (:mod:`deltaspace.subspace.shared_code`); costs about a stage 2 of every DET again.
        fit_from: another study's folder whose stage-1 fit this one continues: its fit checkpoint (and step
            log) is copied into this study's subspace folder before the fit starts, so ``fit.steps`` beyond
            that fit's extend it instead of starting afresh (a constant schedule; the fit refuses a
            checkpoint of another fit: other source tasks, DETs or fit settings).
    """

    name: str = "default"
    out: str = "studies/default"
    runs: str | None = None
    model: str = "minilm-l6"
    source_tasks: list[str] = dataclasses.field(default_factory=lambda: ["rt_sentiment", "multiemo_hotels"])
    heldout_tasks: list[str] = dataclasses.field(default_factory=lambda: ["rt_subjectivity"])
    heldout_mode: str = "fixed"
    methods: list[str] = dataclasses.field(default_factory=lambda: ["lora", "adapter", "coeff"])
    seed: int = 0
    train: dict[str, Any] = dataclasses.field(default_factory=dict)
    method_overrides: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    fit: FitConfig | dict[str, Any] = dataclasses.field(default_factory=dict)
    optimise: OptimiseConfig | dict[str, Any] = dataclasses.field(default_factory=dict)
    controls: list[str] = dataclasses.field(default_factory=lambda: list(CONTROLS))
    fit_train_examples: int = 256
    eval_examples: int = 200
    test_examples: int = 500
    batch_size: int = 16
    eval_batch_size: int = 64
    optimise_tasks: list[str] | None = None
    landscape: LandscapeConfig | dict[str, Any] = dataclasses.field(default_factory=dict)
    mixed_precision: str = "no"
    shared_code: bool = False
    fit_from: str | None = None

    def __post_init__(self) -> None:
        # sections given as mappings (YAML, or Python callers) become their dataclasses; a section's own
        # seed defaults to the study's
        sections = {"fit": FitConfig, "optimise": OptimiseConfig, "landscape": LandscapeConfig}
        for key, section_cls in sections.items():
            value = getattr(self, key)
            if isinstance(value, dict) or value is None:
                given = _mapping(value, key)
                base = dataclasses.asdict(getattr(_DEFAULT_SECTIONS, key))
                if "seed" in base:
                    base["seed"] = self.seed
                setattr(self, key, _build(section_cls, {**base, **given}, key))

    def validate(self) -> None:
        if not self.source_tasks:
            raise UserInputError("a study needs at least one source task (source_tasks: [...])")
        if len(self.methods) < 2:
            raise UserInputError(f"a unified subspace needs at least 2 DETs, got methods={self.methods}")
        for key in ("source_tasks", "heldout_tasks", "methods", "controls"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise UserInputError(f"{key} lists a value twice: {values}")
        overlap = sorted(set(self.source_tasks) & set(self.heldout_tasks))
        if overlap:
            raise UserInputError(
                f"tasks {overlap} are both source and held-out; a held-out task must be unseen"
            )
        if self.heldout_mode not in HELDOUT_MODES:
            raise UserInputError(f"heldout_mode must be one of {HELDOUT_MODES}, got {self.heldout_mode!r}")
        if self.heldout_mode == "leave_one_out" and len(self.tasks) < 3:
            raise UserInputError("leave_one_out needs at least 3 tasks (2 to fit a subspace on)")
        for key in ("fit_train_examples", "eval_examples", "test_examples", "batch_size", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise UserInputError(f"{key} must be >= 1, got {getattr(self, key)}")
        unknown = sorted(set(self.method_overrides) - set(self.methods))
        if unknown:
            raise UserInputError(f"method_overrides for {unknown}, which are not in methods={self.methods}")
        bad_controls = sorted(set(self.controls) - set(CONTROLS))
        if bad_controls:
            raise UserInputError(f"unknown control(s) {bad_controls}; choose from {', '.join(CONTROLS)}")
        strays = sorted(set(self.optimise_tasks or []) - set(self.tasks))
        if strays:
            raise UserInputError(f"optimise_tasks {strays} are not among the study's tasks {self.tasks}")
        if self.fit_from is not None and Path(self.fit_from).resolve() == Path(self.out).resolve():
            raise UserInputError(
                "fit_from names this study's own folder; give the study whose fit to continue"
            )
        if self.mixed_precision not in ("no", "bf16"):
            raise UserInputError(f"mixed_precision must be no or bf16, got {self.mixed_precision!r}")
        if "mixed_precision" in self.train:
            raise UserInputError(
                "train.mixed_precision: set mixed_precision at the study level (it covers every stage)"
            )
        if self.landscape.task is not None and self.landscape.task not in self.source_tasks:
            raise UserInputError(f"landscape.task {self.landscape.task!r} must be one of the source tasks")
        self._check_names()
        if self.shared_code and self.optimise.region != "free":
            raise UserInputError(
                f"shared_code trains one free code for every DET; drop it or set optimise.region: free "
                f"(got {self.optimise.region!r})"
            )
        for section in (self.fit, self.optimise):
            try:
                section.validate()
            except ValueError as error:
                raise UserInputError(f"{type(section).__name__}: {error}") from None
        self.landscape.validate()

    def _check_names(self) -> None:
        """Method presets and suite tasks exist (task files given by path are checked when loaded)."""
        from deltaspace.deltas.presets import available_methods
        from deltaspace.tasks import SUITE, SUITE_TASKS
        from deltaspace.train.config import TrainConfig

        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        sections = [
            ("train", self.train),
            *((f"method_overrides.{m}", o) for m, o in self.method_overrides.items()),
        ]
        for where, options in sections:
            unknown = sorted(set(_mapping(options, where)) - fields)
            if unknown:
                raise UserInputError(
                    f"unknown {where} option(s) {unknown}; valid options: {', '.join(sorted(fields))}"
                )

        presets = set(available_methods())
        for method in self.methods:
            parts = method.split("+")
            if not all(part in presets for part in parts):
                raise UserInputError(
                    f"unknown method {method!r}; use presets ({', '.join(sorted(presets))}) joined with '+'"
                )
        for task in self.tasks:
            if task not in SUITE and not Path(task.split("?")[0]).exists():
                raise UserInputError(
                    f"unknown task {task!r}: not a suite task ({', '.join(SUITE_TASKS)}) nor an existing file"
                )

    @property
    def runs_dir(self) -> Path:
        return Path(self.runs) if self.runs else Path(self.out) / "runs"

    @property
    def tasks(self) -> list[str]:
        return [*self.source_tasks, *self.heldout_tasks]

    @property
    def stage2_tasks(self) -> list[str]:
        if self.optimise_tasks is not None:
            return list(self.optimise_tasks)
        return self.tasks if self.heldout_mode == "leave_one_out" else list(self.heldout_tasks)

    def fit_sources(self, task: str | None = None) -> list[str]:
        """Source tasks of the subspace that solves ``task``: all other tasks when leaving one out."""
        if self.heldout_mode == "leave_one_out" and task is not None:
            return [t for t in self.tasks if t != task]
        return list(self.source_tasks)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudyConfig:
        config = _build(cls, data, "study")
        config.validate()
        return config


@dataclasses.dataclass
class _Sections:
    """The defaults of the study's typed sections (what a section given as a partial mapping fills in)."""

    fit: FitConfig = dataclasses.field(default_factory=FitConfig)
    optimise: OptimiseConfig = dataclasses.field(
        default_factory=lambda: OptimiseConfig(steps=200, lr=5e-2, optimizer="adamw", eval_every=100)
    )
    landscape: LandscapeConfig = dataclasses.field(default_factory=LandscapeConfig)


_DEFAULT_SECTIONS = _Sections()


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserInputError(f"{where} must be a mapping of options, got {type(value).__name__}: {value!r}")
    return value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    """``cls(**data)`` after checking names and types against the dataclass's annotations."""
    data = _mapping(data, where)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise UserInputError(f"unknown {where} option(s) {unknown}; valid options: {', '.join(names)}")
    for key, value in data.items():
        if not _matches(value, hints[key]):
            raise UserInputError(
                f"{where}.{key} must be {_describe(hints[key])}, got {type(value).__name__}: {value!r}"
            )
    return cls(**data)


def _matches(value: Any, hint: Any) -> bool:
    """A small structural type check for config values (YAML gives ints for floats, never the reverse)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint in (int, str):
        return isinstance(value, hint) and not isinstance(value, bool)
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_matches(v, args[1]) for v in value.values())
    return isinstance(value, hint) if isinstance(hint, type) else True


def _describe(hint: Any) -> str:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if typing.get_origin(hint) is list:
        return f"a list of {_describe(args[0])}"
    if typing.get_origin(hint) is dict:
        return "a mapping"
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def load_study_config(spec: str | Path | None = None):
    """A shipped config by name (:data:`SHIPPED`: ``default``, ``full_suite``, ``single_task``, ...) or a
    YAML/JSON file; ``None`` = default. A :class:`StudyConfig`; a :class:`~deltaspace.study.single_task.SingleTaskConfig` for a
    config with ``pairs`` (the paper's single-task setting: one study per source task); a
    :class:`~deltaspace.study.source_curve.SourceCurveConfig` for one with ``ks`` (one study per k, d, draw)."""
    spec = "default" if spec is None else str(spec)
    if spec in SHIPPED:
        text = resources.files("deltaspace.configs").joinpath(f"{spec}.yaml").read_text()
    else:
        path = Path(spec)
        if not path.is_file():
            raise MissingFileError(f"study config {spec!r} not found; give a YAML file or one of {SHIPPED}")
        text = path.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise BrokenFileError(
            f"study config {spec!r}{where}: not valid YAML ({getattr(error, 'problem', error)})"
        ) from None
    if not isinstance(data, dict):
        raise UserInputError(f"study config {spec!r} must be a mapping of options, got {type(data).__name__}")
    if "pairs" in data:
        from deltaspace.study.single_task import SingleTaskConfig

        return SingleTaskConfig.from_dict(data)
    if "ks" in data:
        from deltaspace.study.source_curve import SourceCurveConfig

        return SourceCurveConfig.from_dict(data)
    return StudyConfig.from_dict(data)
