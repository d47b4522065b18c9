"""The training loop: one run of one delta method on one task, on 1 or N processes through Accelerate.

Run directory (``config.output_dir``)::

    config.json     the resolved TrainConfig (max_length filled in)        written first, atomically
    metrics.jsonl   one JSON object per log / evaluation                   appended as training goes
    tb/             TensorBoard events (Accelerate's tensorboard tracker)
    checkpoints/    the latest resumable checkpoint (see train.checkpoint)  removed once the run finishes
    delta/          DeltaModel.save_pretrained of the best checkpoint      written at the end
    result.json     RunResult: final validation / test metrics, sizes, timings, written LAST and atomically

so ``result.json`` existing means the run finished; rerunning a killed run resumes it from its checkpoint
(``checkpoint_every`` steps / ``checkpoint_minutes``). Several processes: ``accelerate launch --multi_gpu
--num_processes N $(which deltaspace) train ...`` (on CPU add ``--cpu`` to ``train``, not to ``launch``,
whose ``--cpu`` starts a single process; ``torchrun --nproc_per_node N`` works too). Batches are split
across processes (``split_batches``), so a run optimises the same thing whatever the process count.

:func:`train` is the recipe: :func:`setup` builds a :class:`Run` (what stays fixed), :class:`LoopState`
holds everything that changes (and is what a checkpoint saves), and the steps (:func:`train_step`,
:func:`validate`, :func:`checkpoint`, :func:`finish`, ...) each take the two.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch import nn
from tqdm.auto import tqdm
from transformers import get_scheduler

from deltaspace.best import BestCheckpoint
from deltaspace.errors import DeltaspaceError, UserInputError
from deltaspace.io import append_jsonl, read_jsonl, write_text_atomic
from deltaspace.tasks.task import Task
from deltaspace.train.baselines import task_baselines
from deltaspace.train.checkpoint import CHECKPOINTS_DIR, load_checkpoint, save_checkpoint
from deltaspace.train.config import TrainConfig
from deltaspace.train.data import cap_examples, make_loader, tokenize_split
from deltaspace.train.defaults import resolve_defaults
from deltaspace.train.evaluate import evaluate_model, metrics_from_logits, predict
from deltaspace.train.faults import pause_point
from deltaspace.train.preflight import HEAD_ONLY, check_method, check_model
from deltaspace.train.result import (
    CONFIG_FILE,
    DELTA_DIR,
    METRICS_FILE,
    TB_DIR,
    RunResult,
    peak_rss_mb,
    save_predictions,
)
from deltaspace.train.rundir import RunDirPlan, plan_run_dir, recover_interrupted_swap

_SCHEDULER_NAMES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}

Solution = dict[str, torch.Tensor]


def train(
    config: TrainConfig,
    *,
    task: Task | None = None,
    prebuilt: tuple[nn.Module, Any] | None = None,
    overwrite: bool = False,
) -> RunResult:
    """Train ``config.method`` on ``config.task`` and write the run directory (see the module docstring).

    ``task`` overrides loading ``config.task`` (for tasks built in code). ``prebuilt=(delta_model,
    tokenizer)`` trains that DeltaModel in place instead of building one from ``config`` (it must be what
    config's model / head / method / seed build, or ``evaluate_run`` will not rebuild it).

    Everything is validated and built before the run directory is touched (see
    :mod:`deltaspace.train.rundir`): an unfinished run with a checkpoint and the same settings is resumed
    and ends exactly as an uninterrupted run would; a finished one raises unless ``overwrite``, which
    trains the new run beside it and swaps it in when it has finished.
    """
    run = setup(config, task, prebuilt, overwrite)
    config = run.config  # max_length filled in
    resuming = run.plan.action == "resume"
    state = resume(run) if resuming else LoopState.fresh(run)
    first_epoch = state.epoch
    state.progress = tqdm(
        total=run.total_updates,
        initial=state.step,
        desc=f"{run.task.name} {config.method} seed{config.seed}",
        disable=not run.accelerator.is_local_main_process,
        dynamic_ncols=True,
    )
    state.train_start = state.last_checkpoint = time.perf_counter()
    run.model.train()
    for epoch in range(first_epoch, run.num_epochs):
        for batch in epoch_batches(run, state, epoch, resumed=resuming and epoch == first_epoch):
            if not train_step(run, state, batch):
                continue  # gradients are still accumulating
            if state.step % config.log_every == 0 or state.step == run.total_updates:
                log_training(run, state)
            if config.eval_every is not None and state.step % config.eval_every == 0:
                validate(run, state)
            if checkpoint_due(run, state):
                checkpoint(run, state)
            if finished(run, state):
                break
        if config.eval_every is None and state.last_eval_step != state.step:
            validate(run, state)  # no step interval: once an epoch
        if finished(run, state):
            break
    if state.last_eval_step != state.step:
        validate(run, state)
    return finish(run, state)


@dataclass
class Run:
    """What :func:`setup` builds: fixed for the whole run."""

    config: TrainConfig
    task: Task
    accelerator: Accelerator
    plan: RunDirPlan
    model: nn.Module  # as Accelerate prepared it
    unwrapped: Any  # the DeltaModel itself
    trainable: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_loader: Any
    val_loader: Any
    test_loader: Any
    updates_per_epoch: int
    total_updates: int
    num_epochs: int
    trainable_params: int
    total_params: int
    start: float  # perf_counter when train() was called
    baselines: dict[str, Any]  # majority and the frozen probe on this split (train.baselines)

    @property
    def run_dir(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def work_dir(self) -> Path:
        """Where files are written (a staging folder while a finished run is being replaced)."""
        return self.plan.work_dir

    def epochs_at(self, step: int) -> float:
        return round(step / self.updates_per_epoch, 4)


# The relative fall in validation loss that counts as progress for early stopping (noise below it does not).
LOSS_PROGRESS = 1e-3


@dataclass
class LoopState:
    """Everything the loop changes as it runs. A checkpoint saves it (:meth:`saved`) and a resume restores
    it (:meth:`restored`), so a resumed run continues exactly where the killed one stopped."""

    best: BestCheckpoint[Solution]
    running_loss: torch.Tensor  # summed over the batches since the last training log
    step: int = 0  # optimiser updates
    last_eval_step: int = -1
    epoch: int = 0
    batches_done: int = 0  # batches of this epoch trained on
    stopped_early: bool = False
    # Early stopping's patience: evaluations since the metric or the validation loss last improved. A run
    # still lowering its loss is still learning even when accuracy, a coarse signal on a few hundred
    # examples, is flat (a slow starter on friends_speaker stopped at step 180 of 300 with its loss falling).
    lowest_loss: float = math.inf
    stale_evals: int = 0
    running_batches: int = 0
    trained_before: float = 0.0  # seconds of training before a resume
    records_written: int = 0  # metrics.jsonl records (a resume truncates the file to these)
    epoch_generator_state: torch.Tensor | None = None  # the data order's RNG at this epoch's start
    # This process's clock and progress bar: not saved.
    train_start: float = 0.0
    last_checkpoint: float = 0.0
    progress: Any = field(default=None, repr=False)

    @classmethod
    def fresh(cls, run: Run) -> LoopState:
        return cls(
            best=BestCheckpoint(higher_is_better=run.config.metric_for_best != "loss"),
            running_loss=torch.zeros((), device=run.accelerator.device),
        )

    def train_time(self) -> float:
        return self.trained_before + time.perf_counter() - self.train_start

    def saved(self) -> tuple[dict[str, Any], Solution]:
        """The checkpoint's ``train_state.json`` and its tensors (without the current solution)."""
        tensors = {f"best.{name}": tensor for name, tensor in (self.best.state or {}).items()}
        tensors["rng.torch"] = torch.get_rng_state()
        if self.epoch_generator_state is not None:
            tensors["data.generator"] = self.epoch_generator_state
        state = {
            "epoch": self.epoch,
            "batches_done": self.batches_done,
            "last_eval_step": self.last_eval_step,
            "best_value": self.best.value if not self.best.empty else None,
            "best_metrics": self.best.metrics,
            "best_step": self.best.step,
            "evals_without_improvement": self.best.evals_without_improvement,
            "stopped_early": self.stopped_early,
            "lowest_loss": self.lowest_loss,
            "stale_evals": self.stale_evals,
            "running_loss": float(self.running_loss.item()),
            "running_batches": self.running_batches,
            "train_time_s": self.train_time(),
            "metrics_records": self.records_written,
        }
        return state, tensors

    def count_patience(self, improved: bool, loss: float, patience: int | None) -> None:
        """After an evaluation: reset the count if the metric improved or the loss fell, else add one; stop
        once it reaches ``patience`` (>= 1, so an improving evaluation never stops the run)."""
        lower_loss = loss < self.lowest_loss * (1 - LOSS_PROGRESS)
        self.lowest_loss = min(self.lowest_loss, loss)
        self.stale_evals = 0 if improved or lower_loss else self.stale_evals + 1
        self.stopped_early = patience is not None and self.stale_evals >= patience

    @classmethod
    def restored(cls, run: Run, saved: dict[str, Any], tensors: Solution) -> LoopState:
        """The state :meth:`saved` wrote (also restores torch's RNG, which the checkpoint holds)."""
        state = cls.fresh(run)
        best = _section(tensors, "best.")
        if best:
            state.best.keep(saved["best_step"], saved["best_value"], best, saved["best_metrics"])
        else:
            state.best.metrics, state.best.step = saved["best_metrics"], saved["best_step"]
        state.best.evals_without_improvement = saved["evals_without_improvement"]
        torch.set_rng_state(tensors["rng.torch"])
        state.epoch_generator_state = tensors.get("data.generator")
        state.step, state.last_eval_step = saved["step"], saved["last_eval_step"]
        state.epoch, state.batches_done = saved["epoch"], saved["batches_done"]
        state.stopped_early = saved["stopped_early"]
        # Checkpoints written before the loss counted resume with the metric's count alone.
        lowest = saved.get("lowest_loss")  # inf is saved as null
        state.lowest_loss = math.inf if lowest is None else lowest
        state.stale_evals = saved.get("stale_evals", saved["evals_without_improvement"])
        state.running_loss.fill_(saved["running_loss"])
        state.running_batches, state.trained_before = saved["running_batches"], saved["train_time_s"]
        state.records_written = saved["metrics_records"]
        return state


# ----------------------------------------------------------------------------------------------- setup


def setup(
    config: TrainConfig, task: Task | None, prebuilt: tuple[nn.Module, Any] | None, overwrite: bool
) -> Run:
    """Validate, build the model, data and optimiser, then (only then) open the run directory (the
    arguments are :func:`train`'s)."""
    config.validate()
    start = time.perf_counter()
    # bf16 autocast also runs on CPU (1.4-1.6x a step where the CPU has AVX512-BF16 or AMX:
    # bench/cpu_bf16_step.py); fp16 autocast is a GPU feature.
    if config.mixed_precision == "fp16" and (config.cpu or not torch.cuda.is_available()):
        raise UserInputError(
            "mixed_precision='fp16' needs a GPU; on CPU use mixed_precision='bf16' (or 'no')"
        )
    if prebuilt is None:
        check_method(config.method, config.method_options)
        check_model(config.model)
    accelerator = _make_accelerator(config)
    run_dir = Path(config.output_dir)

    set_seed(config.seed)
    if task is None:
        from deltaspace.tasks import load_task

        with accelerator.main_process_first():
            task = load_task(config.task, seed=config.data_seed)
    config = config.replace(max_length=config.max_length or task.max_length)
    train_examples = len(task.split("train"))
    if config.max_train_examples is not None:
        train_examples = min(train_examples, config.max_train_examples)
    config = resolve_defaults(config, train_examples)  # the preset's rate, a step budget sized by the data
    if config.batch_size % accelerator.num_processes or config.eval_batch_size % accelerator.num_processes:
        raise UserInputError(
            f"batch_size {config.batch_size} and eval_batch_size {config.eval_batch_size} must be divisible by "
            f"the {accelerator.num_processes} processes (batches are split across processes)"
        )
    if accelerator.is_main_process:
        recover_interrupted_swap(run_dir)
    accelerator.wait_for_everyone()
    plan = plan_run_dir(run_dir, config.to_dict(), overwrite=overwrite)

    delta_model, tokenizer = _build_model(config, task, accelerator) if prebuilt is None else prebuilt
    trainable_params, total_params = delta_model.get_nb_trainable_parameters()
    if trainable_params == 0:
        raise UserInputError(f"method {config.method!r} left no trainable parameters; check its options")
    with accelerator.main_process_first():
        baselines = task_baselines(config, task) if config.baselines else {}  # the main process caches it
        train_loader = _loader(config, task, tokenizer, "train", shuffle=True)
        val_loader = _loader(config, task, tokenizer, "validation", shuffle=False)
        test_loader = _loader(config, task, tokenizer, "test", shuffle=False)

    updates_per_epoch = math.ceil(len(train_loader) / config.grad_accum)
    total_updates = config.max_steps or max(
        1, math.ceil(config.epochs * updates_per_epoch)
    )  # resolve_defaults set one
    trainable = [parameter for parameter in delta_model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(
        param_groups(delta_model, config.lr, config.weight_decay, config.lr_overrides), lr=config.lr
    )
    scheduler = get_scheduler(
        _SCHEDULER_NAMES[config.schedule],
        optimizer,
        num_warmup_steps=round(config.warmup_ratio * total_updates),
        num_training_steps=total_updates,
    )
    model, optimizer, train_loader, val_loader, test_loader, scheduler = accelerator.prepare(
        delta_model, optimizer, train_loader, val_loader, test_loader, scheduler
    )
    # Checkpoints hold the solution (saved by us, as safetensors), not the frozen base's full state dict.
    accelerator.register_save_state_pre_hook(lambda models, weights, output_dir: weights.clear())
    accelerator.register_load_state_pre_hook(lambda models, input_dir: models.clear())
    run = Run(
        config=config,
        task=task,
        accelerator=accelerator,
        plan=plan,
        model=model,
        unwrapped=accelerator.unwrap_model(model),
        trainable=trainable,
        optimizer=optimizer,
        scheduler=scheduler,
        train_loader=train_loader,
        val_loader=val_loader,
        test_loader=test_loader,
        updates_per_epoch=updates_per_epoch,
        total_updates=total_updates,
        num_epochs=math.ceil(total_updates / updates_per_epoch),
        trainable_params=int(trainable_params),
        total_params=int(total_params),
        start=start,
        baselines=baselines,
    )
    _open_run_dir(run)
    return run


def _build_model(config: TrainConfig, task: Task, accelerator: Accelerator) -> tuple[nn.Module, Any]:
    from deltaspace.train.build import build_run_classifier

    with accelerator.main_process_first():
        classifier, tokenizer = build_run_classifier(config, task)
    return _build_delta_model(classifier, config), tokenizer


def _loader(config: TrainConfig, task: Task, tokenizer: Any, split: str, *, shuffle: bool) -> Any:
    """One split's DataLoader: capped, tokenized; the training split shuffled with the run's seed."""
    dataset = task.split(split)
    limit = config.max_train_examples if split == "train" else config.max_eval_examples
    dataset = cap_examples(dataset, limit, config.data_seed)
    if len(dataset) == 0:
        raise UserInputError(f"task {task.name!r} has an empty {split} split; every split needs examples")
    tokenized = tokenize_split(dataset, tokenizer, is_pair=task.is_pair, max_length=config.max_length)
    return make_loader(
        tokenized,
        tokenizer,
        batch_size=config.batch_size if shuffle else config.eval_batch_size,
        shuffle=shuffle,
        seed=config.seed,
        num_workers=config.num_workers,
    )


def _open_run_dir(run: Run) -> None:
    """Everything is validated and built: only now is the run directory touched."""
    accelerator = run.accelerator
    if accelerator.is_main_process:
        run.plan.apply()
    accelerator.wait_for_everyone()
    # TensorBoard writes under the work directory (the staging folder when replacing a finished run).
    accelerator.project_configuration.project_dir = str(run.work_dir)
    accelerator.project_configuration.logging_dir = str(run.work_dir)
    if accelerator.is_main_process:
        run.config.to_json(run.work_dir / CONFIG_FILE)
    accelerator.init_trackers(TB_DIR, config=_hparams(run.config))


def resume(run: Run) -> LoopState:
    """The state of the checkpoint ``run.plan`` resumes from, the solution and optimiser restored with it."""
    saved, tensors = load_checkpoint(run.accelerator, run.plan.checkpoint)
    run.unwrapped.load_solution(_section(tensors, "current."))
    state = LoopState.restored(run, saved, tensors)
    if run.accelerator.is_main_process:
        _truncate_jsonl(run.work_dir / METRICS_FILE, state.records_written)
        print(f"resuming {run.run_dir} from step {state.step} ({run.plan.checkpoint.name})", file=sys.stderr)
    return state


# ------------------------------------------------------------------------------------------------ steps


def epoch_batches(run: Run, state: LoopState, epoch: int, *, resumed: bool) -> Iterable[Any]:
    """This epoch's batches. The epoch a run resumes in replays its data order from the epoch's start and
    skips the batches already trained on; any other epoch records where its data order starts."""
    state.epoch = epoch
    generator = getattr(run.train_loader, "generator", None)  # the data order's RNG (shared with the sampler)
    if resumed:
        if generator is not None and state.epoch_generator_state is not None:
            generator.set_state(state.epoch_generator_state)
        if state.batches_done:
            return run.accelerator.skip_first_batches(run.train_loader, state.batches_done)
        return run.train_loader
    state.batches_done = 0
    if generator is not None:
        state.epoch_generator_state = generator.get_state()
    return run.train_loader


def train_step(run: Run, state: LoopState, batch: dict[str, Any]) -> bool:
    """Forward and backward one batch; returns whether this completed an optimiser update."""
    accelerator = run.accelerator
    state.batches_done += 1
    with accelerator.accumulate(run.model):
        loss = run.model(**batch).loss
        accelerator.backward(loss)
        pause_point("step", state.step + 1, run.run_dir)
        if accelerator.sync_gradients and run.config.max_grad_norm is not None:
            accelerator.clip_grad_norm_(run.trainable, run.config.max_grad_norm)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad()
    state.running_loss += loss.detach().float()
    state.running_batches += 1
    if not accelerator.sync_gradients:
        return False
    state.step += 1
    state.progress.update(1)
    return True


def log(run: Run, state: LoopState, record: dict[str, Any]) -> None:
    """One record at the current step: a line of metrics.jsonl (main process) and TensorBoard scalars."""
    state.records_written += 1
    if run.accelerator.is_main_process:
        elapsed = round(time.perf_counter() - run.start, 3)
        append_jsonl(run.work_dir / METRICS_FILE, {**record, "step": state.step, "time_s": elapsed})
    kind = record.get("split", "train")
    scalars = {f"{kind}/{key}": value for key, value in record.items() if isinstance(value, (int, float))}
    run.accelerator.log(
        {key: value for key, value in scalars.items() if not isinstance(value, bool)}, step=state.step
    )


def log_training(run: Run, state: LoopState) -> None:
    """The mean training loss since the last log (over every process) and the learning rate."""
    mean_loss = run.accelerator.reduce(state.running_loss / state.running_batches, reduction="mean").item()
    lr = run.scheduler.get_last_lr()[0]
    log(run, state, {"loss": mean_loss, "lr": lr, "epoch": run.epochs_at(state.step)})
    state.running_loss.zero_()
    state.running_batches = 0


def validate(run: Run, state: LoopState) -> None:
    """Score the current solution on the validation split; keep it if it is the best; count patience (see
    :attr:`LoopState.stale_evals`)."""
    config = run.config
    metrics = evaluate_model(run.model, run.val_loader, run.task.num_labels, run.accelerator)
    pause_point("eval", state.step, run.run_dir)
    value = metrics[config.metric_for_best]
    solution = run.unwrapped.solution
    improved = state.best.offer(
        state.step, value, lambda: {name: tensor.cpu() for name, tensor in solution().items()}, metrics
    )
    state.count_patience(improved, metrics["loss"], config.early_stopping_patience)
    state.last_eval_step = state.step
    record = {"split": "validation", "epoch": run.epochs_at(state.step), **metrics, "best": bool(improved)}
    log(run, state, record)
    state.progress.set_postfix_str(
        f"val {config.metric_for_best} {value:.4f} (best {state.best.value:.4f} @ {state.best.step})"
    )


def finished(run: Run, state: LoopState) -> bool:
    return state.step >= run.total_updates or state.stopped_early


def checkpoint_due(run: Run, state: LoopState) -> bool:
    """Every ``checkpoint_every`` updates or ``checkpoint_minutes``; never just before the run finishes."""
    config, accelerator = run.config, run.accelerator
    if finished(run, state):
        return False
    due = config.checkpoint_every is not None and state.step % config.checkpoint_every == 0
    if not due and config.checkpoint_minutes is not None:
        due = time.perf_counter() - state.last_checkpoint >= 60 * config.checkpoint_minutes
        if accelerator.num_processes > 1:  # every process must agree, or save_state deadlocks
            flag = torch.tensor(float(due), device=accelerator.device)
            due = bool(accelerator.reduce(flag, reduction="sum").item() > 0)
    return due


def checkpoint(run: Run, state: LoopState) -> None:
    """A resumable checkpoint of the current solution, the best one and the loop state."""
    tensors = {f"current.{name}": tensor for name, tensor in run.unwrapped.solution().items()}
    saved, state_tensors = state.saved()
    tensors.update(state_tensors)
    save_checkpoint(run.accelerator, run.work_dir, state.step, saved, tensors)
    state.last_checkpoint = time.perf_counter()


def finish(run: Run, state: LoopState) -> RunResult:
    """The best checkpoint is the run's answer: restore it, score it, save it; the run is then complete."""
    state.progress.close()
    train_time = state.train_time()
    config, accelerator, task, unwrapped = run.config, run.accelerator, run.task, run.unwrapped
    unwrapped.load_solution(state.best.state)
    val_logits, val_labels = predict(run.model, run.val_loader, accelerator)
    test_logits, test_labels = predict(run.model, run.test_loader, accelerator)
    validation = metrics_from_logits(val_logits, val_labels, task.num_labels)
    test = metrics_from_logits(test_logits, test_labels, task.num_labels)
    result = RunResult(
        task=task.name,
        method=config.method,
        seed=config.seed,
        model=config.model,
        head=config.head,
        trainable_params=run.trainable_params,
        total_params=run.total_params,
        best_step=state.best.step,
        steps=state.step,
        epochs=run.epochs_at(state.step),
        stopped_early=state.stopped_early,
        validation=validation,
        test=test,
        train_time_s=round(train_time, 3),
        total_time_s=round(time.perf_counter() - run.start, 3),
        peak_rss_mb=round(peak_rss_mb(), 1),
        num_processes=accelerator.num_processes,
        data_seed=config.data_seed,
        method_options=dict(config.method_options),
        best_validation_during_training=state.best.metrics,
        peak_gpu_memory_mb=(
            round(torch.cuda.max_memory_allocated() / 2**20, 1) if accelerator.device.type == "cuda" else None
        ),
        baselines=run.baselines,
        run_dir=str(run.run_dir),
    )
    log(run, state, {"split": "final_validation", **validation})
    log(run, state, {"split": "final_test", **test})
    # Not accelerator.end_training(): it also destroys the process group, which the next run of a sweep needs.
    for tracker in accelerator.trackers:
        tracker.finish()
    if accelerator.is_main_process:
        if config.save_delta:
            unwrapped.save_pretrained(run.work_dir / DELTA_DIR)
        save_predictions(
            run.work_dir,
            {
                "validation": (val_logits.argmax(axis=-1), val_labels),
                "test": (test_logits.argmax(axis=-1), test_labels),
            },
        )
        result.save(run.work_dir)  # last: its presence marks a finished run
        shutil.rmtree(run.work_dir / CHECKPOINTS_DIR, ignore_errors=True)  # a finished run needs none
        run.plan.finish()
    accelerator.wait_for_everyone()
    return result


# ---------------------------------------------------------------------------------------------- helpers


def _build_delta_model(classifier: nn.Module, config: TrainConfig) -> nn.Module:
    """The DeltaModel of ``config``; errors the method's options cause become one-line user errors."""
    from deltaspace.deltas.presets import resolve_method
    from deltaspace.model import get_delta_model

    if config.method == HEAD_ONLY:  # no delta: get_delta_model freezes the base and trains the head alone
        return get_delta_model(classifier, seed=config.seed)
    try:
        delta_configs = resolve_method(config.method, classifier, **config.method_options)
    except ValueError as error:
        if isinstance(error, DeltaspaceError):
            raise
        raise UserInputError(f"method {config.method!r} on model {config.model!r}: {error}") from error
    try:
        return get_delta_model(classifier, *delta_configs, seed=config.seed)
    except (TypeError, ValueError) as error:
        if isinstance(error, DeltaspaceError) or not config.method_options:
            raise
        raise UserInputError(
            f"method {config.method!r} rejected its options {config.method_options}: {error}"
        ) from error


def _section(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {name[len(prefix) :]: tensor for name, tensor in tensors.items() if name.startswith(prefix)}


def _truncate_jsonl(path: Path, count: int) -> None:
    """Keep the first ``count`` records (those logged before the checkpoint a run resumes from)."""
    if path.is_file():
        records = read_jsonl(path)[:count]
        write_text_atomic(path, "".join(json.dumps(record) + "\n" for record in records))


def _make_accelerator(config: TrainConfig) -> Accelerator:
    state = AcceleratorState._shared_state
    if state.get("_mixed_precision") not in (None, config.mixed_precision):
        # One process running several runs (a sweep) with different precisions: Accelerate keeps a global
        # state that refuses a change; reset that part of it (the process group stays).
        AcceleratorState._reset_state()
    return Accelerator(
        gradient_accumulation_steps=config.grad_accum,
        mixed_precision=config.mixed_precision,
        # Each global batch is split across processes (Accelerate ignores the old `split_batches=` argument).
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        cpu=config.cpu,
        log_with="tensorboard",
        project_dir=config.output_dir,
    )


def param_groups(
    model: nn.Module, lr: float, weight_decay: float, lr_overrides: dict[str, float] | None = None
) -> list[dict[str, Any]]:
    """AdamW groups by (learning rate, decay). Weight decay on matrices only: biases and norm scales (1-D)
    are not decayed, as is standard. ``lr_overrides``: name substring -> lr, first match wins."""
    lr_overrides = lr_overrides or {}
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    used, names = set(), []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        names.append(name)
        pattern = next((key for key in lr_overrides if key in name), None)
        used.add(pattern)
        key = (lr_overrides[pattern] if pattern else lr, parameter.ndim >= 2)
        groups.setdefault(key, []).append(parameter)
    unused = [key for key in lr_overrides if key not in used]
    if unused:
        raise UserInputError(
            f"lr_overrides {unused} match no trainable parameter; use a substring of a trainable name "
            f"such as {names[0]!r}"
            if names
            else "lr_overrides given but nothing is trainable"
        )
    return [
        {"params": params, "lr": group_lr, "weight_decay": weight_decay if decayed else 0.0}
        for (group_lr, decayed), params in groups.items()
    ]


def _hparams(config: TrainConfig) -> dict[str, Any]:
    """TensorBoard's hparams accept scalars and strings only."""
    values = {}
    for key, value in config.to_dict().items():
        values[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return values
