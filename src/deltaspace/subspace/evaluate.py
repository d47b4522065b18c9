"""Evaluate a member at a flat parameter vector θ on a list of batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from deltaspace.subspace.batches import batch_labels
from deltaspace.subspace.member import SubspaceMember
from deltaspace.tasks.metrics import compute_metrics

METRICS = ("accuracy", "macro_f1")


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")


@torch.no_grad()
def predictions(member: SubspaceMember, theta: Tensor, batches: Sequence[Any]) -> tuple[Tensor, Tensor]:
    """Predicted and gold labels of ``member`` with parameters ``theta`` over ``batches`` (1-D, long)."""
    if not batches:
        raise ValueError(
            f"member {member.name!r}: no evaluation batches given; supply eval batches for the task"
        )
    theta = theta.detach()
    predicted, labels = [], []
    for batch in batches:
        predicted.append(member.predict(theta, batch).reshape(-1).cpu())
        labels.append(batch_labels(batch).reshape(-1).cpu())
    return torch.cat(predicted).long(), torch.cat(labels).long()


def score(pred: Tensor, gold: Tensor, num_labels: int | None = None) -> dict[str, float]:
    """Accuracy and macro-F1 of predictions against gold labels (0..1)."""
    if num_labels is None:
        num_labels = int(max(pred.max().item(), gold.max().item())) + 1
    return compute_metrics(pred.numpy(), gold.numpy(), num_labels)


@torch.no_grad()
def evaluate(
    member: SubspaceMember, theta: Tensor, batches: Sequence[Any], *, num_labels: int | None = None
) -> dict[str, float]:
    """Accuracy and macro-F1 of ``member`` with parameters ``theta`` over ``batches`` (percent-free, 0..1)."""
    return score(*predictions(member, theta, batches), num_labels)


@torch.no_grad()
def evaluate_with_loss(
    member: SubspaceMember, theta: Tensor, batches: Sequence[Any], *, num_labels: int | None = None
) -> dict[str, float]:
    """:func:`evaluate` plus ``loss``, the mean cross-entropy per example. A member with ``outputs(theta,
    batch)`` (logits in eval mode, as :class:`~deltaspace.subspace.DeltaModelMember` has) is run once per
    batch for both; any other member's ``loss`` is called beside ``predict`` (with whatever dropout it uses)."""
    if not batches:
        raise ValueError(
            f"member {member.name!r}: no evaluation batches given; supply eval batches for the task"
        )
    theta = theta.detach()
    outputs = getattr(member, "outputs", None)
    predicted, labels, total, count = [], [], 0.0, 0
    for batch in batches:
        gold = batch_labels(batch).reshape(-1)
        if callable(outputs):
            logits = outputs(theta, batch)
            pred = logits.argmax(-1)
            loss = F.cross_entropy(logits.float(), gold.to(logits.device).long())
        else:
            pred, loss = member.predict(theta, batch), member.loss(theta, batch)
        predicted.append(pred.reshape(-1).cpu())
        labels.append(gold.cpu())
        total += float(loss) * gold.numel()
        count += gold.numel()
    scores = score(torch.cat(predicted).long(), torch.cat(labels).long(), num_labels)
    return {**scores, "loss": total / count}


def relative(metric: float, original: float | None) -> float | None:
    """Relative performance in percent: subspace metric / original-space metric × 100."""
    if original is None:
        return None
    if original <= 0:
        raise ValueError(f"original-space metric must be > 0 to compute relative performance, got {original}")
    return 100.0 * metric / original
