"""Optimiser, schedule and RNG helpers shared by stage 1 (fit) and stage 2 (optimise)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from deltaspace.rng import seeded as seeded  # re-exported: fit and optimise import it from here
from deltaspace.subspace.evaluate import check_metric

OPTIMIZERS = ("adafactor", "adamw")
SCHEDULES = ("constant", "cosine")


def check_step_options(
    optimizer: str, schedule: str, eval_every: int, metric: str, *, loss_allowed: bool = False
) -> None:
    """The options stage 1 and stage 2 share: a known optimiser and schedule, ``eval_every >= 0`` (0: never
    validate) and a known validation metric (``loss_allowed``: the validation loss too, lower is better)."""
    if optimizer not in OPTIMIZERS or schedule not in SCHEDULES:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS} and schedule one of {SCHEDULES}")
    if eval_every < 0:
        raise ValueError(f"eval_every must be >= 0, got {eval_every}")
    if not (loss_allowed and metric == "loss"):
        check_metric(metric)


def make_optimizer(
    params: Iterable[nn.Parameter], name: str, lr: float, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """``adafactor``: transformers' Adafactor with a constant external lr, as in the paper
    (``scale_parameter=False, relative_step=False, warmup_init=False``); ``adamw``: torch's AdamW."""
    params = list(params)
    if lr <= 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    if name == "adafactor":
        # imported lazily: transformers takes seconds to import
        from transformers.optimization import Adafactor

        return Adafactor(
            params,
            lr=lr,
            scale_parameter=False,
            relative_step=False,
            warmup_init=False,
            weight_decay=weight_decay,
        )
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; use {' or '.join(OPTIMIZERS)}")


def make_schedule(
    optimizer: torch.optim.Optimizer, name: str, steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if name == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
        )
    raise ValueError(f"unknown lr schedule {name!r}; use {' or '.join(SCHEDULES)}")


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Set ``requires_grad=False`` on every parameter of ``modules`` for the block, then restore the flags."""
    params = [p for module in modules for p in module.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
