"""Stage 2, subspace optimisation: solve a task by training only the d-dimensional code z.

The member's parameters are ``θ = U_m(z)`` through its frozen up-projection; nothing but ``z`` receives
gradients or optimiser updates (the projection's parameters are switched to ``requires_grad=False`` for
the duration and restored afterwards). The best z is chosen on the task's eval batches and reported on
its test batches (eval batches when there are none). Relative performance = subspace metric /
original-space metric × 100, the original-space metric being supplied by the caller.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from deltaspace.best import BestCheckpoint
from deltaspace.subspace._optim import check_step_options, frozen, make_optimizer, make_schedule, seeded
from deltaspace.subspace.batches import TaskBatches
from deltaspace.subspace.bundle import SubspaceBundle
from deltaspace.subspace.evaluate import evaluate, predictions, relative, score
from deltaspace.subspace.member import SubspaceMember, check_member

logger = logging.getLogger(__name__)

INITS = ("normal", "zeros", "source_mean")
REGIONS = ("free", "hull")
# region: hull starts with this much of its mixture on θ0 (the rest spread over the source codes), near the
# free code's start at θ0 but with every vertex's weight trainable.
HULL_START_THETA0 = 0.9


@dataclass
class OptimiseConfig:
    """Stage-2 settings (paper: Adafactor, constant lr in {1e-2, 5e-2}, 5000 steps, z ~ N(0, 0.02)).

    Attributes:
        init: ``normal`` (z ~ N(0, init_std²), the paper's), ``zeros`` (start at θ0) or ``source_mean``
            (the mean of the member's source-task codes; not the paper's, report it separately).
        region: ``free`` (any code, the paper's) or ``hull``: codes restricted to mixtures of θ0 and the
            member's source-task codes (``z = Σ_t w_t c_t``, ``w = softmax`` of trained weights over θ0 and
            the k source codes; ``init`` is then unused, the start puts 0.9 on θ0). The hull is where the
            joint fit is trained on (the source codes and, the decoders being linear, the same mixtures of source
            solutions in every DET between them), so it measures what stage 2
            and transfer do where the fit made codes mean the same to every DET (not in the paper).
        eval_every: validate on the eval batches every this many steps (and at step 0 and the end).
    """

    steps: int = 500
    lr: float = 1e-2
    optimizer: str = "adafactor"
    schedule: str = "constant"
    grad_clip: float | None = None
    init: str = "normal"
    init_std: float = 0.02
    region: str = "free"
    eval_every: int = 100
    metric: str = "accuracy"
    seed: int = 0
    log_every: int = 50
    progress: bool = True

    def validate(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        check_step_options(self.optimizer, self.schedule, self.eval_every, self.metric)
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; use {' or '.join(INITS)}")
        if self.region not in REGIONS:
            raise ValueError(f"unknown region {self.region!r}; use {' or '.join(REGIONS)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class OptimiseResult:
    """The best code found for ``task`` through ``member``'s up-projection, and its scores.

    ``metric`` is on the report (test) batches; ``selection_metric`` the eval-batch score that chose it;
    ``initial_metric`` the eval-batch score at the starting code (step 0), to set beside
    ``selection_metric`` (a chosen step of 0 means stage 2 found nothing better than its start);
    ``predictions`` the chosen code's report-batch predictions (for paired statistics);
    ``relative`` is ``metric / original_metric × 100`` when the original-space metric was given.
    """

    member: str
    task: str
    z: Tensor
    metric: float
    metrics: dict[str, float]
    selection_metric: float
    best_step: int
    initial_metric: float | None = None
    predictions: list[int] | None = None
    original_metric: float | None = None
    relative: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["z"] = self.z.tolist()
        return data


def initial_code(
    dim: int, config: OptimiseConfig, bundle: SubspaceBundle | None = None, member: str = ""
) -> Tensor:
    if config.init == "zeros":
        return torch.zeros(dim)
    if config.init == "source_mean":
        codes = bundle.codes.get(member, {}) if bundle is not None else {}
        if not codes:
            raise ValueError(f"init=source_mean needs the bundle's source codes of {member!r}; it has none")
        return torch.stack(list(codes.values())).mean(0)
    generator = torch.Generator().manual_seed(config.seed)
    return torch.randn(dim, generator=generator) * config.init_std


def hull_vertices(bundle: SubspaceBundle, member: str) -> Tensor:
    """The vertices of ``region: hull`` for ``member``: θ0 (the zero code) and its k source-task codes,
    ``(k + 1, d)``."""
    codes = bundle.codes.get(member, {})
    if not codes:
        raise ValueError(f"region: hull needs the bundle's source codes of {member!r}; it has none")
    stacked = torch.stack([z.detach().float().reshape(-1) for z in codes.values()])
    return torch.cat([torch.zeros(1, stacked.shape[1]), stacked])


def hull_start(vertices: int) -> Tensor:
    """Mixture logits with :data:`HULL_START_THETA0` on θ0 (the first vertex) and the rest spread evenly."""
    rest = vertices - 1
    logits = torch.zeros(vertices)
    logits[0] = float(np.log(HULL_START_THETA0 * rest / (1 - HULL_START_THETA0)))
    return logits


def optimise(
    member: SubspaceMember,
    bundle: SubspaceBundle,
    task: TaskBatches,
    config: OptimiseConfig | None = None,
    *,
    original_metric: float | None = None,
    z_init: Tensor | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> OptimiseResult:
    """Train only ``z ∈ R^d`` on ``task`` with θ = U_member(z); return the best z and its metrics.

    Args:
        member: the DET whose up-projection in ``bundle`` is used (matched by ``member.name``).
        bundle: the stage-1 subspace (its projections stay bit-identical).
        task: training batches, eval batches (selection) and optional test batches (report).
        config: :class:`OptimiseConfig`.
        original_metric: the member's original-space score on this task (for ``relative``).
        z_init: explicit starting code (overrides ``config.init``).
    """
    config = config or OptimiseConfig()
    config.validate()
    check_member(member)
    up = bundle.up(member.name)
    if up.out_features != member.theta0.numel():
        raise ValueError(
            f"member {member.name!r} has {member.theta0.numel()} parameters but its up-projection maps to "
            f"{up.out_features}; use the bundle fitted for this DET configuration"
        )
    if not task.eval_batches:
        raise ValueError(f"task {task.name!r} has no eval batches; stage 2 selects the best z on them")
    device = member.theta0.device
    up.to(device)
    if config.region == "hull":
        if z_init is not None:
            raise ValueError("region: hull trains mixture weights from its own start; drop z_init")
        vertices = hull_vertices(bundle, member.name).to(device)

        def code(weights: Tensor) -> Tensor:
            return torch.softmax(weights, dim=0) @ vertices

        start = hull_start(vertices.shape[0]).to(device)
    else:

        def code(weights: Tensor) -> Tensor:
            return weights

        start = (
            z_init.detach().clone().float().reshape(-1)
            if z_init is not None
            else initial_code(bundle.dim, config, bundle, member.name)
        ).to(device)
        if start.numel() != bundle.dim:
            raise ValueError(f"z_init has size {start.numel()}, the subspace has d = {bundle.dim}")

    def validate_at(weights: Tensor) -> float:
        with torch.no_grad():
            theta = up(code(weights))
            return evaluate(member, theta, task.eval_batches, num_labels=task.num_labels)[config.metric]

    with frozen(up):
        best, history = train_code(
            lambda weights, batch: member.loss(up(code(weights)), batch),
            validate_at,
            start,
            task,
            config,
            desc=f"z {member.name}/{task.name}",
            on_step=on_step,
        )
    with torch.no_grad():
        best_z = code(best.state)  # kept at step 0 at the latest
        pred, gold = predictions(member, up(best_z), task.report_batches)
    metrics = score(pred, gold, task.num_labels)
    value = metrics[config.metric]
    if not np.isfinite(value):
        raise ValueError(f"stage 2 produced a non-finite {config.metric} for {member.name}/{task.name}")
    return OptimiseResult(
        member=member.name,
        task=task.name,
        z=best_z.cpu(),
        metric=value,
        metrics=metrics,
        selection_metric=best.value,
        best_step=best.step,
        initial_metric=history[0]["eval"],
        predictions=pred.tolist(),
        original_metric=original_metric,
        relative=relative(value, original_metric),
        history=history,
    )


def train_code(
    loss_at: Callable[[Tensor, Any], Tensor],
    validate_at: Callable[[Tensor], float],
    z0: Tensor,
    task: TaskBatches,
    config: OptimiseConfig,
    *,
    desc: str,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[BestCheckpoint[Tensor], list[dict[str, Any]]]:
    """Stage 2's loop: train only the code, starting at ``z0``, on ``task``'s training stream with
    ``loss_at(z, batch)``; validate with ``validate_at(z)`` at step 0, every ``eval_every`` steps and at the
    end. Returns the best validated code (the start is a candidate) and the step history."""
    history: list[dict[str, Any]] = []
    with seeded(config.seed):
        z = torch.nn.Parameter(z0.clone())  # a copy: z0 is reported at the end
        optimizer = make_optimizer([z], config.optimizer, config.lr)
        schedule = make_schedule(optimizer, config.schedule, config.steps)
        stream = task.stream()
        best: BestCheckpoint[Tensor] = BestCheckpoint()
        best.keep(0, validate_at(z), z.detach().clone())
        history.append({"step": 0, "eval": best.value})
        bar = tqdm(total=config.steps, desc=desc, disable=not config.progress, dynamic_ncols=True)
        try:
            for step in range(1, config.steps + 1):
                loss = loss_at(z, next(stream))
                loss.backward()
                if config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_([z], config.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                schedule.step()
                record: dict[str, Any] = {"step": step, "loss": float(loss.detach())}
                if (config.eval_every and step % config.eval_every == 0) or step == config.steps:
                    record["eval"] = validate_at(z)
                    best.offer(step, record["eval"], lambda: z.detach().clone())
                history.append(record)
                if on_step is not None:
                    on_step(record)
                if step % config.log_every == 0:
                    logger.info("stage 2 %s step %d loss %.4f", desc, step, record["loss"])
                bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
                bar.update(1)
        finally:
            bar.close()
    return best, history
