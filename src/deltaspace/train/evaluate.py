"""Evaluation: metrics of a model on a data loader, and of a saved run on any split of its task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from deltaspace.errors import BrokenFileError, MissingFileError, UserInputError
from deltaspace.tasks.metrics import compute_metrics
from deltaspace.tasks.task import SPLITS, Task
from deltaspace.train.config import TrainConfig
from deltaspace.train.data import cap_examples, make_loader, tokenize_split
from deltaspace.train.result import CONFIG_FILE, DELTA_DIR


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, accelerator: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """``(logits, labels)`` over the whole loader; with an Accelerator, gathered from every process
    (``gather_for_metrics`` drops the padding samples of the last batch)."""
    was_training = model.training
    model.eval()
    device = None if accelerator is not None else _device_of(model)
    all_logits, all_labels = [], []
    for batch in loader:
        labels = batch.pop("labels")
        if device is not None:
            batch = {key: value.to(device) for key, value in batch.items()}
        logits = model(**batch).logits.float()
        if accelerator is not None:
            logits, labels = accelerator.gather_for_metrics((logits, labels.to(logits.device)))
        all_logits.append(logits.cpu())
        all_labels.append(labels.cpu())
    model.train(was_training)
    return torch.cat(all_logits).numpy(), torch.cat(all_labels).numpy()


def metrics_from_logits(logits: np.ndarray, labels: np.ndarray, num_labels: int) -> dict[str, float]:
    """Accuracy, macro-F1 and mean cross-entropy."""
    metrics = compute_metrics(logits.argmax(axis=-1), labels, num_labels)
    metrics["loss"] = float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels).long()))
    return metrics


def evaluate_model(
    model: nn.Module, loader: DataLoader, num_labels: int, accelerator: Any = None
) -> dict[str, float]:
    logits, labels = predict(model, loader, accelerator)
    return metrics_from_logits(logits, labels, num_labels)


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    *,
    task: Task | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Rebuild base + head from ``run_dir/config.json``, load ``run_dir/delta`` and score ``split``.

    ``task`` overrides loading the task from the config's spec (for tasks built in code).
    """
    from deltaspace.model import DeltaModel
    from deltaspace.train.build import build_run_classifier

    run_dir = Path(run_dir)
    if split not in SPLITS:
        raise UserInputError(f"unknown split {split!r}; use {', '.join(SPLITS)}")
    if not (run_dir / CONFIG_FILE).is_file():
        raise MissingFileError(
            f"{run_dir} is not a run directory (no {CONFIG_FILE}); pass a folder written by `deltaspace train`"
        )
    config = TrainConfig.from_json(run_dir / CONFIG_FILE)
    if not (run_dir / DELTA_DIR).is_dir() and not config.save_delta:
        raise MissingFileError(
            f"{run_dir} was trained with save_delta=false and kept no weights to evaluate; its scores are in "
            "result.json and predictions.json (retrain with save_delta: true to evaluate again)"
        )
    if not (run_dir / DELTA_DIR).is_dir():
        raise MissingFileError(
            f"{run_dir / DELTA_DIR} not found: the run has not finished (rerun it to complete it)"
        )
    if task is None:
        from deltaspace.tasks import load_task

        task = load_task(config.task, seed=config.data_seed)
    dataset = task.split(split)
    if split != "train":
        dataset = cap_examples(dataset, config.max_eval_examples, config.data_seed)
    classifier, tokenizer = build_run_classifier(config, task)
    try:
        model = DeltaModel.from_pretrained(classifier, run_dir / DELTA_DIR)
    except Exception as error:  # a truncated or foreign file: say which, not where in safetensors it broke
        raise BrokenFileError(
            f"the delta in {run_dir / DELTA_DIR} cannot be loaded ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); rerun the training with --overwrite"
        ) from error
    device = (
        torch.device(device)
        if device is not None
        else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    model.to(device)
    loader = make_loader(
        tokenize_split(
            dataset, tokenizer, is_pair=task.is_pair, max_length=config.max_length or task.max_length
        ),
        tokenizer,
        batch_size=batch_size or config.eval_batch_size,
        shuffle=False,
    )
    return evaluate_model(model, loader, task.num_labels)


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")
