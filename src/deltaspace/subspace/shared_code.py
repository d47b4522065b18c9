"""One code for every DET: stage 2 trained through all DETs at once, the ceiling of zero-shot transfer.

Stage 2 trains a code through one DET, and transfer decodes that code by another. When transfer fails there
are two explanations, and they call for different fixes: either no code of the subspace serves several
DETs on the task (the DETs' directions mean different things), or such codes exist and single-DET training
lands elsewhere (many codes serve one DET equally well, and only some of them serve the others).
:func:`optimise_shared` tells them apart: it trains one code on the mean of every DET's task loss (the same
batches, steps, optimiser and start as stage 2) and selects it on the DETs' mean validation score. Each
DET's score at that code, beside its score at its own stage-2 code, measures what a shared solution costs
it. Not in the paper, which reports only single-DET stage 2 and its transfer.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import numpy as np
import torch
from torch import Tensor

from deltaspace.subspace._optim import frozen
from deltaspace.subspace.batches import TaskBatches
from deltaspace.subspace.bundle import SubspaceBundle
from deltaspace.subspace.evaluate import evaluate, predictions, score
from deltaspace.subspace.member import SubspaceMember, check_member
from deltaspace.subspace.optimise import OptimiseConfig, OptimiseResult, initial_code, train_code


def optimise_shared(
    members: Sequence[SubspaceMember],
    bundle: SubspaceBundle,
    task: TaskBatches,
    config: OptimiseConfig | None = None,
    *,
    z_init: Tensor | None = None,
) -> dict[str, OptimiseResult]:
    """Train one code ``z`` on the mean task loss of every member (θ_m = U_m(z)); the best code by the
    members' mean validation score, scored through each member on the report batches.

    Returns one :class:`OptimiseResult` per member, all with the same ``z``, ``best_step`` and
    ``selection_metric`` (the mean); ``initial_metric`` is that member's own score at the start.
    """
    config = config or OptimiseConfig()
    config.validate()
    if len(members) < 2:
        raise ValueError("a shared code needs at least 2 DETs; stage 2 (optimise) trains through one")
    if config.region != "free":
        raise ValueError(
            f"one code for every DET trains a free code; region {config.region!r} is not supported"
        )
    if not task.eval_batches:
        raise ValueError(f"task {task.name!r} has no eval batches; the shared code is selected on them")
    ups = {}
    for member in members:
        check_member(member)
        ups[member.name] = bundle.up(member.name).to(member.theta0.device)
    if z_init is not None:
        start = z_init.detach().clone().float().reshape(-1)
    else:  # stage 2's start; with init=source_mean, the mean over the DETs of each one's source-code mean
        start = torch.stack([initial_code(bundle.dim, config, bundle, m.name) for m in members]).mean(0)
    starts: dict[str, float] = {}

    def validate_at(z: Tensor) -> float:
        with torch.no_grad():
            scores = {
                m.name: evaluate(
                    m, ups[m.name](z.to(m.theta0.device)), task.eval_batches, num_labels=task.num_labels
                )[config.metric]
                for m in members
            }
        if not starts:  # the first validation is the start's
            starts.update(scores)
        return float(np.mean(list(scores.values())))

    def loss_at(z: Tensor, batch: Any) -> Tensor:
        losses = [m.loss(ups[m.name](z.to(m.theta0.device)), batch).to(z.device) for m in members]
        return torch.stack(losses).mean()

    with ExitStack() as stack:
        for up in ups.values():
            stack.enter_context(frozen(up))
        best, history = train_code(loss_at, validate_at, start, task, config, desc=f"shared z/{task.name}")
    best_z = best.state.cpu()
    results = {}
    for member in members:
        with torch.no_grad():
            pred, gold = predictions(
                member, ups[member.name](best_z.to(member.theta0.device)), task.report_batches
            )
        metrics = score(pred, gold, task.num_labels)
        results[member.name] = OptimiseResult(
            member=member.name,
            task=task.name,
            z=best_z,
            metric=metrics[config.metric],
            metrics=metrics,
            selection_metric=best.value,
            best_step=best.step,
            initial_metric=starts.get(member.name),
            predictions=pred.tolist(),
            history=history,
        )
    return results


def shared_summary(results: dict[str, OptimiseResult]) -> dict[str, Any]:
    """What a study keeps of :func:`optimise_shared`'s results (JSON): the code, the step and validation
    score that chose it, and each DET's report-batch predictions at it."""
    first = next(iter(results.values()))
    return {
        "z": first.z.tolist(),
        "best_step": first.best_step,
        "selection_metric": first.selection_metric,
        "predictions": {name: result.predictions for name, result in results.items()},
    }
