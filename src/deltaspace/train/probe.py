"""The same-budget linear probe: logistic regression on the frozen model's sentence embeddings.

The baseline every delta method must beat to show that training the model matters. Unlike
``bench/linear_probe.py`` (full train split, C fixed at 10) it sees exactly what a sweep's runs see: the
same capped training subset (``max_train_examples``, ``data_seed``), the same token limit, the same
validation / test examples; and its one hyper-parameter, the inverse regularisation strength C, is chosen
on validation from a grid like the runs' learning rates. A probe run directory holds ``config.json``,
``predictions.json`` and ``result.json`` (written last), so sweeps, resume and reports treat it as a run.

The fit is multinomial logistic regression with an L2 penalty on the weights (not the bias), scaled as
scikit-learn's ``LogisticRegression(C=...)``: minimise ``Σ_i CE_i + ||W||² / (2 C)``, by full-batch L-BFGS in
float64 on the CPU (deterministic, and no scikit-learn needed on a GPU machine).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from deltaspace.errors import RunDirectoryError, UserInputError
from deltaspace.tasks.task import Task
from deltaspace.train.config import TrainConfig
from deltaspace.train.result import (
    CONFIG_FILE,
    PREDICTIONS_FILE,
    RESULT_FILE,
    RunResult,
    peak_rss_mb,
    save_predictions,
)

PROBE = "probe"
DEFAULT_C_GRID = (0.1, 1.0, 10.0, 100.0)
_PROBE_FILES = {CONFIG_FILE, PREDICTIONS_FILE, RESULT_FILE, "error.txt"}


def probe_c_grid(config: TrainConfig) -> list[float]:
    """The C values to try: ``method_options: {C: [...]}``, else :data:`DEFAULT_C_GRID`."""
    unknown = sorted(set(config.method_options) - {"C"})
    if unknown:
        raise UserInputError(f"the probe takes one option, C (a list of values); got {unknown}")
    grid = config.method_options.get("C", list(DEFAULT_C_GRID))
    if (
        not isinstance(grid, list)
        or not grid
        or not all(
            isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) and c > 0
            for c in grid
        )
    ):
        raise UserInputError(f"probe option C must be a non-empty list of positive numbers, got {grid!r}")
    return [float(c) for c in grid]


def fit_logistic(
    features: np.ndarray, labels: np.ndarray, num_labels: int, C: float, *, max_iter: int = 500
) -> tuple[np.ndarray, np.ndarray]:
    """``(W (K, D), b (K,))`` minimising ``Σ_i CE(x_i W^T + b, y_i) + ||W||² / (2 C)``."""
    x = torch.as_tensor(features, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    weight = torch.zeros(num_labels, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_labels, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        max_iter=max_iter,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    n = len(y)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        # Divided by n (a better-scaled objective with the same minimiser).
        loss = F.cross_entropy(x @ weight.T + bias, y, reduction="sum") / n + (weight**2).sum() / (2 * C * n)
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach().numpy(), bias.detach().numpy()


def _logits(features: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    return features.astype(np.float64) @ weight.T + bias


def run_probe(config: TrainConfig, *, task: Task | None = None) -> RunResult:
    """Fit the probe for ``config`` (its model, task, data seed, example caps, token limit) and write its
    run directory ``config.output_dir``. A finished probe (``result.json``) is returned as it is."""
    from deltaspace.assets import load_model
    from deltaspace.assets.embed import encode
    from deltaspace.train.data import cap_examples
    from deltaspace.train.evaluate import metrics_from_logits
    from deltaspace.train.preflight import check_model
    from deltaspace.train.result import is_finished, load_result

    start = time.perf_counter()
    run_dir = Path(config.output_dir)
    grid = probe_c_grid(config)
    if is_finished(run_dir):
        return load_result(run_dir)
    if run_dir.exists():
        foreign = sorted(
            p.name for p in run_dir.iterdir() if p.name not in _PROBE_FILES and not p.name.endswith(".tmp")
        )
        if foreign or not run_dir.is_dir():
            raise RunDirectoryError(
                f"{run_dir} holds files a probe does not write ({foreign[:3]}); choose another output directory"
            )
    check_model(config.model)
    if task is None:
        from deltaspace.tasks import load_task

        task = load_task(config.task, seed=config.data_seed)
    max_length = config.max_length or task.max_length
    config = config.replace(max_length=max_length)
    device = "cuda" if torch.cuda.is_available() and not config.cpu else "cpu"
    model, tokenizer = load_model(config.model, kind="encoder")
    model.to(device)

    def split(name: str) -> tuple[np.ndarray, np.ndarray]:
        dataset = task.split(name)
        limit = config.max_train_examples if name == "train" else config.max_eval_examples
        dataset = cap_examples(dataset, limit, config.data_seed)
        if len(dataset) == 0:
            raise UserInputError(f"task {task.name!r} has an empty {name} split; every split needs examples")
        pairs = list(dataset["text_pair"]) if task.is_pair else None
        features = encode(
            model,
            tokenizer,
            list(dataset["text"]),
            pairs,
            batch_size=config.eval_batch_size,
            max_length=max_length,
        ).numpy()
        return features, np.asarray(dataset["label"], dtype=np.int64)

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = (split(s) for s in ("train", "validation", "test"))
    encoded = time.perf_counter()
    best: tuple[tuple[float, float], float, np.ndarray, np.ndarray] | None = None
    tried: dict[str, float] = {}
    for C in grid:
        weight, bias = fit_logistic(train_x, train_y, task.num_labels, C)
        metrics = metrics_from_logits(_logits(val_x, weight, bias), val_y, task.num_labels)
        tried[f"{C:g}"] = metrics["accuracy"]
        score = (metrics["accuracy"], -metrics["loss"])  # ties: the better-calibrated fit
        if best is None or score > best[0]:
            best = (score, C, weight, bias)
    assert best is not None
    _, chosen, weight, bias = best
    val_logits, test_logits = _logits(val_x, weight, bias), _logits(test_x, weight, bias)
    validation = metrics_from_logits(val_logits, val_y, task.num_labels)
    test = metrics_from_logits(test_logits, test_y, task.num_labels)
    total_params = sum(p.numel() for p in model.parameters())
    result = RunResult(
        task=task.name,
        method=config.method,
        seed=config.seed,
        model=config.model,
        head="logistic",
        trainable_params=int(weight.size + bias.size),
        total_params=int(total_params),
        best_step=0,
        steps=0,
        epochs=0.0,
        stopped_early=False,
        validation=validation,
        test=test,
        train_time_s=round(time.perf_counter() - encoded, 3),
        total_time_s=round(time.perf_counter() - start, 3),
        peak_rss_mb=round(peak_rss_mb(), 1),
        data_seed=config.data_seed,
        method_options={"C": chosen, "validation_accuracy_by_C": tried},
        best_validation_during_training=validation,
        run_dir=str(run_dir),
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    config.to_json(run_dir / CONFIG_FILE)
    save_predictions(
        run_dir,
        {"validation": (val_logits.argmax(-1), val_y), "test": (test_logits.argmax(-1), test_y)},
    )
    result.save(run_dir)  # last: its presence marks a finished probe
    return result
