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
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch import nn
from tqdm.auto import tqdm
from transformers import get_scheduler

from deltaspace.errors import DeltaspaceError, UserInputError
from deltaspace.io import append_jsonl, read_jsonl, write_text_atomic
from deltaspace.tasks.task import Task
from deltaspace.train.checkpoint import CHECKPOINTS_DIR, load_checkpoint, save_checkpoint
from deltaspace.train.config import TrainConfig
from deltaspace.train.data import cap_examples, make_loader, tokenize_split
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
from deltaspace.train.rundir import plan_run_dir, recover_interrupted_swap

_SCHEDULER_NAMES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


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
    from deltaspace.train.build import build_classifier

    config.validate()
    start = time.perf_counter()
    if config.mixed_precision != "no" and (config.cpu or not torch.cuda.is_available()):
        raise UserInputError(
            f"mixed_precision={config.mixed_precision!r} needs a GPU; use mixed_precision='no' on CPU"
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
    max_length = config.max_length or task.max_length
    config = config.replace(max_length=max_length)
    if config.batch_size % accelerator.num_processes or config.eval_batch_size % accelerator.num_processes:
        raise UserInputError(
            f"batch_size {config.batch_size} and eval_batch_size {config.eval_batch_size} must be divisible by "
            f"the {accelerator.num_processes} processes (batches are split across processes)"
        )
    if accelerator.is_main_process:
        recover_interrupted_swap(run_dir)
    accelerator.wait_for_everyone()
    plan = plan_run_dir(run_dir, config.to_dict(), overwrite=overwrite)

    if prebuilt is None:
        with accelerator.main_process_first():
            classifier, tokenizer = build_classifier(
                config.model,
                task,
                config.head,
                config.seed,
                temperature=config.temperature,
                head_only=config.method == HEAD_ONLY,
            )
        delta_model = _build_delta_model(classifier, config)
    else:
        delta_model, tokenizer = prebuilt
    trainable_params, total_params = delta_model.get_nb_trainable_parameters()
    if trainable_params == 0:
        raise UserInputError(f"method {config.method!r} left no trainable parameters; check its options")

    def loader(split: str, shuffle: bool) -> Any:
        dataset = task.split(split)
        limit = config.max_train_examples if split == "train" else config.max_eval_examples
        dataset = cap_examples(dataset, limit, config.data_seed)
        if len(dataset) == 0:
            raise UserInputError(f"task {task.name!r} has an empty {split} split; every split needs examples")
        tokenized = tokenize_split(dataset, tokenizer, is_pair=task.is_pair, max_length=max_length)
        return make_loader(
            tokenized,
            tokenizer,
            batch_size=config.batch_size if shuffle else config.eval_batch_size,
            shuffle=shuffle,
            seed=config.seed,
            num_workers=config.num_workers,
        )

    with accelerator.main_process_first():
        train_loader = loader("train", shuffle=True)
        val_loader = loader("validation", shuffle=False)
        test_loader = loader("test", shuffle=False)

    updates_per_epoch = math.ceil(len(train_loader) / config.grad_accum)
    total_updates = config.max_steps or max(1, math.ceil(config.epochs * updates_per_epoch))
    num_epochs = math.ceil(total_updates / updates_per_epoch)
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
    unwrapped = accelerator.unwrap_model(model)
    # Checkpoints hold the solution (saved by us, as safetensors), not the frozen base's full state dict.
    accelerator.register_save_state_pre_hook(lambda models, weights, output_dir: weights.clear())
    accelerator.register_load_state_pre_hook(lambda models, input_dir: models.clear())

    # Everything is validated and built: only now is the run directory touched.
    if accelerator.is_main_process:
        plan.apply()
    accelerator.wait_for_everyone()
    work_dir = plan.work_dir
    # TensorBoard writes under the work directory (the staging folder when replacing a finished run).
    accelerator.project_configuration.project_dir = str(work_dir)
    accelerator.project_configuration.logging_dir = str(work_dir)
    if accelerator.is_main_process:
        config.to_json(work_dir / CONFIG_FILE)
    accelerator.init_trackers(TB_DIR, config=_hparams(config))
    metrics_path = work_dir / METRICS_FILE
    records_written = 0

    def log(record: dict[str, Any], step: int) -> None:
        nonlocal records_written
        records_written += 1
        if accelerator.is_main_process:
            append_jsonl(
                metrics_path, {**record, "step": step, "time_s": round(time.perf_counter() - start, 3)}
            )
        kind = record.get("split", "train")
        scalars = {f"{kind}/{key}": value for key, value in record.items() if isinstance(value, (int, float))}
        accelerator.log(
            {key: value for key, value in scalars.items() if not isinstance(value, bool)}, step=step
        )

    higher_is_better = config.metric_for_best != "loss"
    best_value = -math.inf if higher_is_better else math.inf
    best_metrics: dict[str, float] = {}
    best_solution: dict[str, torch.Tensor] | None = None
    best_step = 0
    evals_without_improvement = 0
    stopped_early = False
    step, last_eval_step = 0, -1
    start_epoch, skip_batches = 0, 0
    trained_before = 0.0  # seconds of training before a resume
    running_loss = torch.zeros((), device=accelerator.device)
    running_batches = 0
    generator = getattr(train_loader, "generator", None)  # the data order's RNG (shared with the sampler)
    epoch_generator_state = None

    if plan.action == "resume":
        state, tensors = load_checkpoint(accelerator, plan.checkpoint)
        unwrapped.load_solution(_section(tensors, "current."))
        best = _section(tensors, "best.")
        best_solution = best or None
        torch.set_rng_state(tensors["rng.torch"])
        epoch_generator_state = tensors.get("data.generator")
        step, last_eval_step = state["step"], state["last_eval_step"]
        start_epoch, skip_batches = state["epoch"], state["batches_done"]
        best_value = state["best_value"] if state["best_value"] is not None else best_value
        best_metrics, best_step = state["best_metrics"], state["best_step"]
        evals_without_improvement, stopped_early = state["evals_without_improvement"], state["stopped_early"]
        running_loss.fill_(state["running_loss"])
        running_batches, trained_before = state["running_batches"], state["train_time_s"]
        records_written = state["metrics_records"]
        if accelerator.is_main_process:
            _truncate_jsonl(metrics_path, records_written)
            print(f"resuming {run_dir} from step {step} ({plan.checkpoint.name})", file=sys.stderr)

    def validate(step: int, epoch: float) -> None:
        nonlocal best_value, best_metrics, best_solution, best_step, evals_without_improvement, stopped_early
        metrics = evaluate_model(model, val_loader, task.num_labels, accelerator)
        pause_point("eval", step, run_dir)
        value = metrics[config.metric_for_best]
        improved = value > best_value if higher_is_better else value < best_value
        if improved or best_solution is None:
            best_value, best_metrics, best_step = value, metrics, step
            best_solution = {name: tensor.cpu() for name, tensor in unwrapped.solution().items()}
            evals_without_improvement = 0
        else:
            evals_without_improvement += 1
            patience = config.early_stopping_patience
            stopped_early = patience is not None and evals_without_improvement >= patience
        log({"split": "validation", "epoch": round(epoch, 4), **metrics, "best": bool(improved)}, step)
        progress.set_postfix_str(
            f"val {config.metric_for_best} {value:.4f} (best {best_value:.4f} @ {best_step})"
        )

    def checkpoint_due(step: int) -> bool:
        if step >= total_updates or stopped_early:
            return False  # the run is about to finish
        due = config.checkpoint_every is not None and step % config.checkpoint_every == 0
        if not due and config.checkpoint_minutes is not None:
            due = time.perf_counter() - last_checkpoint >= 60 * config.checkpoint_minutes
            if accelerator.num_processes > 1:  # every process must agree, or save_state deadlocks
                flag = torch.tensor(float(due), device=accelerator.device)
                due = bool(accelerator.reduce(flag, reduction="sum").item() > 0)
        return due

    def checkpoint(step: int, epoch: int, batches_done: int) -> None:
        tensors = {f"current.{name}": tensor for name, tensor in unwrapped.solution().items()}
        tensors.update({f"best.{name}": tensor for name, tensor in (best_solution or {}).items()})
        tensors["rng.torch"] = torch.get_rng_state()
        if epoch_generator_state is not None:
            tensors["data.generator"] = epoch_generator_state
        state = {
            "epoch": epoch,
            "batches_done": batches_done,
            "last_eval_step": last_eval_step,
            "best_value": best_value if best_solution is not None else None,
            "best_metrics": best_metrics,
            "best_step": best_step,
            "evals_without_improvement": evals_without_improvement,
            "stopped_early": stopped_early,
            "running_loss": float(running_loss.item()),
            "running_batches": running_batches,
            "train_time_s": trained_before + time.perf_counter() - train_start,
            "metrics_records": records_written,
        }
        save_checkpoint(accelerator, work_dir, step, state, tensors)

    progress = tqdm(
        total=total_updates,
        initial=step,
        desc=f"{task.name} {config.method} seed{config.seed}",
        disable=not accelerator.is_local_main_process,
        dynamic_ncols=True,
    )
    train_start = last_checkpoint = time.perf_counter()
    model.train()
    for epoch in range(start_epoch, num_epochs):
        batches = train_loader
        batches_done = 0
        if epoch == start_epoch and plan.action == "resume":
            # Replay this epoch's data order from its start, skipping the batches already trained on.
            if generator is not None and epoch_generator_state is not None:
                generator.set_state(epoch_generator_state)
            if skip_batches:
                batches = accelerator.skip_first_batches(train_loader, skip_batches)
            batches_done = skip_batches
        elif generator is not None:
            epoch_generator_state = generator.get_state()
        for batch in batches:
            batches_done += 1
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                pause_point("step", step + 1, run_dir)
                if accelerator.sync_gradients and config.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            running_loss += loss.detach().float()
            running_batches += 1
            if not accelerator.sync_gradients:
                continue
            step += 1
            progress.update(1)
            if step % config.log_every == 0 or step == total_updates:
                mean_loss = accelerator.reduce(running_loss / running_batches, reduction="mean").item()
                lr = scheduler.get_last_lr()[0]
                log({"loss": mean_loss, "lr": lr, "epoch": round(step / updates_per_epoch, 4)}, step)
                running_loss.zero_()
                running_batches = 0
            if config.eval_every is not None and step % config.eval_every == 0:
                validate(step, step / updates_per_epoch)
                last_eval_step = step
            if checkpoint_due(step):
                checkpoint(step, epoch, batches_done)
                last_checkpoint = time.perf_counter()
            if step >= total_updates or stopped_early:
                break
        if config.eval_every is None and last_eval_step != step:
            validate(step, step / updates_per_epoch)
            last_eval_step = step
        if step >= total_updates or stopped_early:
            break
    if last_eval_step != step:
        validate(step, step / updates_per_epoch)
    progress.close()
    train_time = trained_before + time.perf_counter() - train_start

    # The best checkpoint is the run's answer: restore it, score it, save it.
    unwrapped.load_solution(best_solution)
    val_logits, val_labels = predict(model, val_loader, accelerator)
    test_logits, test_labels = predict(model, test_loader, accelerator)
    validation = metrics_from_logits(val_logits, val_labels, task.num_labels)
    test = metrics_from_logits(test_logits, test_labels, task.num_labels)
    result = RunResult(
        task=task.name,
        method=config.method,
        seed=config.seed,
        model=config.model,
        head=config.head,
        trainable_params=int(trainable_params),
        total_params=int(total_params),
        best_step=best_step,
        steps=step,
        epochs=round(step / updates_per_epoch, 4),
        stopped_early=stopped_early,
        validation=validation,
        test=test,
        train_time_s=round(train_time, 3),
        total_time_s=round(time.perf_counter() - start, 3),
        peak_rss_mb=round(peak_rss_mb(), 1),
        num_processes=accelerator.num_processes,
        data_seed=config.data_seed,
        method_options=dict(config.method_options),
        best_validation_during_training=best_metrics,
        peak_gpu_memory_mb=(
            round(torch.cuda.max_memory_allocated() / 2**20, 1) if accelerator.device.type == "cuda" else None
        ),
        run_dir=str(run_dir),
    )
    log({"split": "final_validation", **validation}, step)
    log({"split": "final_test", **test}, step)
    # Not accelerator.end_training(): it also destroys the process group, which the next run of a sweep needs.
    for tracker in accelerator.trackers:
        tracker.finish()
    if accelerator.is_main_process:
        if config.save_delta:
            unwrapped.save_pretrained(work_dir / DELTA_DIR)
        save_predictions(
            work_dir,
            {
                "validation": (val_logits.argmax(axis=-1), val_labels),
                "test": (test_logits.argmax(axis=-1), test_labels),
            },
        )
        result.save(work_dir)  # last: its presence marks a finished run
        shutil.rmtree(work_dir / CHECKPOINTS_DIR, ignore_errors=True)  # a finished run needs none
        plan.finish()
    accelerator.wait_for_everyone()
    return result


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
