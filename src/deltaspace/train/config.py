"""The training configuration: one dataclass, validated, round-tripping through JSON."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from deltaspace.errors import BrokenFileError, MissingFileError, UserInputError
from deltaspace.io import write_json_atomic

HEADS = ("prototype", "linear", "verbalizer")
SCHEDULES = ("linear", "cosine", "constant")
MIXED_PRECISION = ("no", "bf16", "fp16")
METRICS = ("accuracy", "macro_f1", "loss")


def _cli(help: str, *flags: str) -> dict[str, Any]:
    """A field's help text, which is the command line's too (``deltaspace train`` derives its options from
    the fields); ``flags`` name the option when it is not ``--<field-name>``."""
    return {"help": help, "flags": flags}


def _option(default: Any = dataclasses.MISSING, *, help: str) -> Any:
    return dataclasses.field(default=default, metadata=_cli(help))


@dataclasses.dataclass
class TrainConfig:
    """Everything one training run depends on; ``config.json`` in the run directory is this, resolved.

    Batch sizes are global: with several processes each one gets ``batch_size / num_processes`` examples of
    the same batch, so a run's optimisation does not depend on how many processes run it. The effective
    batch per optimizer step is ``batch_size * grad_accum``. ``eval_every`` counts optimizer steps; ``None``
    evaluates at the end of every epoch. ``early_stopping_patience`` counts evaluations without improvement.
    Left unset, ``lr`` is the method's preset rate and the length is a step budget sized by the data, evaluated
    10 times and early-stopped (:mod:`deltaspace.train.defaults`); the run's ``config.json`` holds the
    resolved values.
    ``seed`` draws the delta's θ0 (and a linear head), dropout and the data order; ``data_seed`` the task's
    splits and the fixed random subsets kept by ``max_train_examples`` (train) and ``max_eval_examples``
    (validation and test), so every seed of a sweep sees the same data. A resumable checkpoint is written
    every ``checkpoint_every`` optimizer steps and whenever ``checkpoint_minutes`` have passed since the
    last one (either may be ``None``; with both ``None`` a killed run restarts from step 0). ``lr_overrides`` maps a substring
    of trainable parameter names to its own peak learning rate (first match wins), e.g.
    ``{ds_coeff: 1.0e-2}`` trains Coeff-Tuning's ΔC faster than the LoRA factors beside it.
    ``save_delta=False`` keeps no trained weights (no ``delta/``; ``predictions.json`` and ``result.json``
    still hold everything a report needs): a sweep of full fine-tuning runs then costs kilobytes, not 90 MB
    a run. ``method="head"`` attaches no delta and trains the task head only (the head-only baseline).
    """

    task: str = _option(help="Suite task name or data file (CSV/JSONL).")
    model: str = _option("minilm-l6", help="minilm-l6, minilm-l3, smollm2-135m or a checkpoint directory.")
    method: str = _option("coeff+lora", help="Delta method preset, e.g. coeff+lora, lora, adapter.")
    method_options: dict[str, Any] = dataclasses.field(
        default_factory=dict, metadata=_cli("Preset option key=value (repeatable).", "--method-option", "-O")
    )
    seed: int = _option(0, help="Seed of the delta init (θ0), the head, data order.")
    data_seed: int = _option(0, help="Seed of the task's splits and subsampling.")
    head: str = _option(
        "prototype",
        help="prototype (no trainable head), linear, or verbalizer (a causal LM scores each label's word).",
    )
    temperature: float = _option(20.0, help="Prototype head temperature τ.")
    label_words: str | None = _option(
        None,
        help="Verbalizer head: one word a class, comma-separated, in label order (default: the label names).",
    )
    verbalizer_prompt: str | None = _option(
        None,
        help="Verbalizer head: the text after each example; {labels} stands for the comma-joined label words "
        "(default: '\\nOptions: {labels}.\\nAnswer:').",
    )
    lr: float | None = _option(None, help="Peak learning rate (default: the method's preset rate).")
    lr_overrides: dict[str, float] = dataclasses.field(
        default_factory=dict,
        metadata=_cli(
            "Own peak learning rate for parameters whose name contains a substring: substring=lr (repeatable; "
            "default with no --lr: Coeff keeps its own rate in a combination).",
            "--lr-override",
        ),
    )
    weight_decay: float = _option(0.0, help="AdamW weight decay.")
    batch_size: int = _option(32, help="Global batch size (split across processes).")
    eval_batch_size: int = _option(64, help="Batch size of evaluation.")
    grad_accum: int = _option(1, help="Gradient accumulation steps.")
    epochs: float | None = _option(
        None, help="Passes over the training split (default: a step budget sized by the data, early-stopped)."
    )
    max_steps: int | None = _option(None, help="Optimizer steps; overrides --epochs.")
    warmup_ratio: float = _option(0.06, help="Share of the steps spent warming the learning rate up.")
    schedule: str = _option("linear", help="linear, cosine or constant (after warmup).")
    max_grad_norm: float | None = _option(1.0, help="Gradient clipping norm (null: no clipping).")
    max_length: int | None = _option(None, help="Token limit (default: the task's).")
    eval_every: int | None = _option(
        None, help="Evaluate every N steps (default: 10 times a run with the step budget, else every epoch)."
    )
    log_every: int = _option(10, help="Log the training loss every N steps.")
    early_stopping_patience: int | None = _option(
        None,
        help="Stop after N evaluations in which neither the metric nor the validation loss improved "
        "(default: 3 with the step budget, else off).",
    )
    metric_for_best: str = _option("accuracy", help="accuracy, macro_f1 or loss.")
    mixed_precision: str = _option("no", help="no, bf16 (GPU or CPU) or fp16 (GPU only).")
    max_train_examples: int | None = _option(None, help="Keep a fixed random subset of the training split.")
    max_eval_examples: int | None = _option(None, help="Keep fixed random subsets of validation and test.")
    output_dir: str = dataclasses.field(default="runs/run", metadata=_cli("Run directory.", "--out", "-o"))
    num_workers: int = _option(0, help="Data-loader worker processes.")
    cpu: bool = _option(False, help="Force the CPU.")
    checkpoint_every: int | None = _option(None, help="Write a resumable checkpoint every N optimizer steps.")
    checkpoint_minutes: float | None = _option(
        5.0, help="Write a resumable checkpoint when M minutes have passed since the last (default 5)."
    )
    save_delta: bool = _option(
        True, help="Keep the trained delta weights (false: results and predictions only)."
    )
    baselines: bool = _option(
        True, help="Score majority and the frozen probe on the same split (the probe is cached per task)."
    )

    def __post_init__(self) -> None:
        if isinstance(self.task, str) and self.task:
            from deltaspace.tasks.files import absolute_spec

            self.task = absolute_spec(self.task)  # a run folder then evaluates from any directory
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` with a one-line message naming the bad field and a valid choice."""
        if not isinstance(self.task, str) or not self.task:
            raise UserInputError(
                "task must be a task name or a path to a data file (e.g. --task rt_sentiment)"
            )
        for name in ("model", "method", "output_dir"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise UserInputError(f"{name} must be a non-empty string")
        if not isinstance(self.method_options, dict):
            raise UserInputError(
                f"method_options must be a mapping of option -> value, got {self.method_options!r}"
            )
        _choice("head", self.head, HEADS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        _choice("metric_for_best", self.metric_for_best, METRICS)
        for name in ("seed", "data_seed"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise UserInputError(f"{name} must be an integer >= 0, got {getattr(self, name)!r}")
        for name in ("batch_size", "eval_batch_size", "grad_accum", "log_every"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise UserInputError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        for name in (
            "max_steps",
            "max_length",
            "eval_every",
            "max_train_examples",
            "max_eval_examples",
            "checkpoint_every",
        ):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise UserInputError(f"{name} must be an integer >= 1 or null, got {value!r}")
        if self.early_stopping_patience is not None and (
            not _is_int(self.early_stopping_patience) or self.early_stopping_patience < 1
        ):
            raise UserInputError(
                f"early_stopping_patience must be an integer >= 1 or null (off), got {self.early_stopping_patience!r}"
            )
        if not _is_int(self.num_workers) or self.num_workers < 0:
            raise UserInputError(f"num_workers must be an integer >= 0, got {self.num_workers!r}")
        if self.lr is not None and (not _is_number(self.lr) or not self.lr > 0):
            raise UserInputError(f"lr must be a positive number (or null: the preset's), got {self.lr!r}")
        if not isinstance(self.lr_overrides, dict) or not all(
            isinstance(key, str) and key and _is_number(value) and value > 0
            for key, value in self.lr_overrides.items()
        ):
            raise UserInputError(
                "lr_overrides must map parameter-name substrings to positive learning rates, "
                f"e.g. {{ds_coeff: 1.0e-2}}; got {self.lr_overrides!r}"
            )
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            raise UserInputError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        if not _is_number(self.temperature) or not self.temperature > 0:
            raise UserInputError(f"temperature must be a positive number, got {self.temperature!r}")
        self._validate_verbalizer()
        if not _is_number(self.warmup_ratio) or not 0 <= self.warmup_ratio < 1:
            raise UserInputError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if self.max_grad_norm is not None and (
            not _is_number(self.max_grad_norm) or not self.max_grad_norm > 0
        ):
            raise UserInputError(
                f"max_grad_norm must be a positive number or null (no clipping), got {self.max_grad_norm!r}"
            )
        if (
            self.max_steps is None
            and self.epochs is not None
            and (not _is_number(self.epochs) or not self.epochs > 0)
        ):
            raise UserInputError(
                f"epochs must be a positive number (or null: a step budget sized by the data), got {self.epochs!r}"
            )
        if self.checkpoint_minutes is not None and (
            not _is_number(self.checkpoint_minutes) or not self.checkpoint_minutes > 0
        ):
            raise UserInputError(
                f"checkpoint_minutes must be a positive number or null (off), got {self.checkpoint_minutes!r}"
            )
        for name in ("cpu", "save_delta", "baselines"):
            if not isinstance(getattr(self, name), bool):
                raise UserInputError(f"{name} must be true or false, got {getattr(self, name)!r}")

    def _validate_verbalizer(self) -> None:
        for name in ("label_words", "verbalizer_prompt"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise UserInputError(f"{name} must be text (or null), got {value!r}")
            if value is not None and self.head != "verbalizer":
                raise UserInputError(
                    f"{name} is for head 'verbalizer', and this run's head is {self.head!r}; "
                    "drop it or pass --head verbalizer"
                )
        words = self.label_word_list
        if words is not None and (len(words) < 2 or not all(words)):
            raise UserInputError(
                "label_words must be two or more comma-separated words, none empty, e.g. 'negative,positive'; "
                f"got {self.label_words!r}"
            )
        if self.verbalizer_prompt == "":
            raise UserInputError("verbalizer_prompt is empty; give a prompt such as '\\nAnswer:' (or null)")
        if self.head == "verbalizer":
            from deltaspace.assets.registry import PACKAGED_MODELS

            packaged = PACKAGED_MODELS.get(self.model)
            if packaged is not None and packaged.kind != "causal-lm":
                causal = [name for name, model in PACKAGED_MODELS.items() if model.kind == "causal-lm"]
                raise UserInputError(
                    f"head 'verbalizer' needs a causal LM and {self.model!r} is an encoder; pass --model "
                    f"{' or '.join(causal)} or a causal-LM checkpoint directory"
                )

    @property
    def label_word_list(self) -> list[str] | None:
        """``label_words`` split at the commas (``None`` when unset: the task's label names)."""
        return None if self.label_words is None else [word.strip() for word in self.label_words.split(",")]

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        if not isinstance(data, dict):
            raise UserInputError(f"a train config must be a JSON object, got {type(data).__name__}")
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserInputError(f"unknown train config field(s) {unknown}; valid fields: {sorted(names)}")
        if "task" not in data:
            raise UserInputError("train config is missing the required field 'task'")
        return cls(**data)

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with ``changes`` applied (unknown fields raise a one-line error)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    def to_json(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(
                f"train config {path} not found; pass a config.json written by `deltaspace train`"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise BrokenFileError(f"train config {path} is not UTF-8 text; pass a config.json") from None
        except json.JSONDecodeError as error:
            raise BrokenFileError(
                f"train config {path} is not valid JSON (line {error.lineno}, column {error.colno}: "
                f"{error.msg}); fix it or pass a config.json written by `deltaspace train`"
            ) from None
        return cls.from_dict(data)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserInputError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
