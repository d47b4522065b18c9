"""The training loop: one run of one delta method on one task, on 1 or N processes through Accelerate.

Run directory (``config.output_dir``)::

    config.json     the resolved TrainConfig (max_length filled in)        written first, atomically
    metrics.jsonl   one JSON object per log / evaluation                   appended as training goes
    tb/             TensorBoard events (Accelerate's tensorboard tracker)
    delta/          DeltaModel.save_pretrained of the best checkpoint      written at the end
    result.json     RunResult: final validation / test metrics, sizes, timings, written LAST and atomically

so ``result.json`` existing means the run finished. Several processes: ``accelerate launch --multi_gpu
--num_processes N $(which deltaspace) train ...`` (on CPU add ``--cpu`` to ``train``, not to ``launch``,
whose ``--cpu`` starts a single process; ``torchrun --nproc_per_node N`` works too). Batches are split
across processes (``split_batches``), so a run optimises the same thing whatever the process count.
"""

from __future__ import annotations

import math
import shutil
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

from deltaspace.io import append_jsonl
from deltaspace.tasks.task import Task
from deltaspace.train.config import TrainConfig
from deltaspace.train.data import cap_examples, make_loader, tokenize_split
from deltaspace.train.evaluate import evaluate_model
from deltaspace.train.result import (
    CONFIG_FILE,
    DELTA_DIR,
    METRICS_FILE,
    RESULT_FILE,
    TB_DIR,
    RunResult,
    peak_rss_mb,
)

_SCHEDULER_NAMES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}
# Files a run directory may hold; anything else means output_dir is not ours to wipe.
_RUN_ENTRIES = {CONFIG_FILE, METRICS_FILE, RESULT_FILE, DELTA_DIR, TB_DIR, "error.txt"}


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
    config's model / head / method / seed build, or ``evaluate_run`` will not rebuild it). An unfinished run
    directory is wiped and restarted; a finished one raises unless ``overwrite``.
    """
    from deltaspace.deltas.presets import resolve_method
    from deltaspace.model import get_delta_model
    from deltaspace.train.build import build_classifier

    config.validate()
    start = time.perf_counter()
    if config.mixed_precision != "no" and (config.cpu or not torch.cuda.is_available()):
        raise ValueError(
            f"mixed_precision={config.mixed_precision!r} needs a GPU; use mixed_precision='no' on CPU"
        )
    accelerator = _make_accelerator(config)
    run_dir = Path(config.output_dir)
    if accelerator.is_main_process:
        _prepare_run_dir(run_dir, overwrite)
    accelerator.wait_for_everyone()

    set_seed(config.seed)
    if task is None:
        from deltaspace.tasks import load_task

        with accelerator.main_process_first():
            task = load_task(config.task, seed=config.data_seed)
    max_length = config.max_length or task.max_length
    config = config.replace(max_length=max_length)
    if config.batch_size % accelerator.num_processes or config.eval_batch_size % accelerator.num_processes:
        raise ValueError(
            f"batch_size {config.batch_size} and eval_batch_size {config.eval_batch_size} must be divisible by "
            f"the {accelerator.num_processes} processes (batches are split across processes)"
        )

    if prebuilt is None:
        with accelerator.main_process_first():
            classifier, tokenizer = build_classifier(
                config.model, task, config.head, config.seed, temperature=config.temperature
            )
        delta_configs = resolve_method(config.method, classifier, **config.method_options)
        delta_model = get_delta_model(classifier, *delta_configs, seed=config.seed)
    else:
        delta_model, tokenizer = prebuilt
    trainable_params, total_params = delta_model.get_nb_trainable_parameters()
    if trainable_params == 0:
        raise ValueError(f"method {config.method!r} left no trainable parameters; check its options")

    def loader(split: str, shuffle: bool) -> Any:
        dataset = task.split(split)
        limit = config.max_train_examples if split == "train" else config.max_eval_examples
        dataset = cap_examples(dataset, limit, config.data_seed)
        if len(dataset) == 0:
            raise ValueError(f"task {task.name!r} has an empty {split} split; every split needs examples")
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

    if accelerator.is_main_process:
        config.to_json(run_dir / CONFIG_FILE)
    accelerator.init_trackers(TB_DIR, config=_hparams(config))
    metrics_path = run_dir / METRICS_FILE

    def log(record: dict[str, Any], step: int) -> None:
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

    def validate(step: int, epoch: float) -> None:
        nonlocal best_value, best_metrics, best_solution, best_step, evals_without_improvement, stopped_early
        metrics = evaluate_model(model, val_loader, task.num_labels, accelerator)
        value = metrics[config.metric_for_best]
        improved = value > best_value if higher_is_better else value < best_value
        if improved or best_solution is None:
            best_value, best_metrics, best_step = value, metrics, step
            best_solution = {
                name: tensor.cpu() for name, tensor in accelerator.unwrap_model(model).solution().items()
            }
            evals_without_improvement = 0
        else:
            evals_without_improvement += 1
            patience = config.early_stopping_patience
            stopped_early = patience is not None and evals_without_improvement >= patience
        log({"split": "validation", "epoch": round(epoch, 4), **metrics, "best": bool(improved)}, step)
        progress.set_postfix_str(
            f"val {config.metric_for_best} {value:.4f} (best {best_value:.4f} @ {best_step})"
        )

    progress = tqdm(
        total=total_updates,
        desc=f"{task.name} {config.method} seed{config.seed}",
        disable=not accelerator.is_local_main_process,
        dynamic_ncols=True,
    )
    train_start = time.perf_counter()
    step, last_eval_step = 0, -1
    running_loss = torch.zeros((), device=accelerator.device)
    running_batches = 0
    model.train()
    for _epoch in range(num_epochs):
        for batch in train_loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
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
    train_time = time.perf_counter() - train_start

    # The best checkpoint is the run's answer: restore it, score it, save it.
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.load_solution(best_solution)
    validation = evaluate_model(model, val_loader, task.num_labels, accelerator)
    test = evaluate_model(model, test_loader, task.num_labels, accelerator)
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
        unwrapped.save_pretrained(run_dir / DELTA_DIR)
        result.save(run_dir)  # last: its presence marks a finished run
    accelerator.wait_for_everyone()
    return result


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


def _prepare_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Start from an empty run directory; refuse to clobber a finished run or a directory that is not a run."""
    if run_dir.exists():
        if (run_dir / RESULT_FILE).exists() and not overwrite:
            raise FileExistsError(
                f"{run_dir} holds a finished run; pass overwrite=True (--overwrite) or another output_dir"
            )
        foreign = sorted(
            entry.name
            for entry in run_dir.iterdir()
            if entry.name not in _RUN_ENTRIES
            and not (entry.name.startswith(".") and entry.name.endswith(".tmp"))
        )
        if foreign:
            raise FileExistsError(
                f"{run_dir} is not empty and not a run directory ({foreign[:3]}); choose another output_dir"
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


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
        raise ValueError(
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
