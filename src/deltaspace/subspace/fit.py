"""Stage 1, subspace approximation: learn every member's projections jointly in one shared code space.

For a step on source task t (a batch of its examples):

1. encode each member's solution delta: ``z_m = E_m(Δ_m^t)``;
2. draw interpolation weights ``w ~ Dirichlet(α, ..., α)`` over the members and mix ``z_mix = Σ w_m z_m``;
3. ``loss = Σ_m [ task_weight · CE_m(U_m(z_mix)) + λ · |Δ_m^t − P_m z_m|² / |Δ_m^t|² ]``.

Differences from the paper's code (each a deliberate improvement):

- Interpolation weights come from Dirichlet(1, ..., 1), uniform on the simplex, for any number of
  members. The paper's ``a ~ U(0,1), b ~ U(0, 1−a)`` has mean weights (0.5, 0.25, 0.25) and so favours
  the first DET; it is available as ``mixing="paper"`` (stick breaking, generalised to M members).
- The reconstruction term is the relative squared error per member (scale-free), not the raw L2 norm
  whose size depends on D_m and forced λ to change 100× between the paper's two settings.
- Batched: a step takes a whole batch of one task and runs each member once on it, with one draw of the
  weights per step (the paper runs batch-size-1 forward passes, one draw per example). Tasks are visited
  round-robin (or at random).
- Memory: each member's backward runs right after its forward (the mixed code enters every member as a
  detached leaf and its gradient is routed back into the encoders at the end), so only one member's
  activations are alive at a time.
- Validation is deterministic: every member is evaluated at the fixed vertices (each member's code) and
  the centroid of each task's codes, instead of at a random interpolation point; the best checkpoint by
  that score is kept (and written to ``output_dir`` when given).
- Encoders are not returned: stages 2–6 need only the up-projections and the source codes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from deltaspace.subspace._optim import OPTIMIZERS, SCHEDULES, make_optimizer, make_schedule, seeded
from deltaspace.subspace.batches import TaskBatches
from deltaspace.subspace.bundle import SubspaceBundle
from deltaspace.subspace.evaluate import check_metric, evaluate, relative
from deltaspace.subspace.member import SubspaceMember, check_member
from deltaspace.subspace.projections import (
    DownProjection,
    UpProjection,
    make_down,
    make_up,
    relative_reconstruction_error,
    resolve_kinds,
)
from deltaspace.subspace.store import SolutionStore

logger = logging.getLogger(__name__)

MIXINGS = ("dirichlet", "paper", "none")
TASK_ORDERS = ("round_robin", "random")


@dataclass
class FitConfig:
    """Stage-1 settings.

    Attributes:
        dim: intrinsic dimension d shared by all members (paper: 4 single-task, 100 multi-task).
        steps: optimisation steps (one task batch each).
        lr, optimizer, schedule, weight_decay, grad_clip: optimisation (paper: Adafactor, constant lr
            1e-4 on raw N(0, 0.02) weights; here weights are O(1) by construction, see projections.py, and
            1e-2 to 3e-2 works on the toy studies).
        recon_weight: λ on the relative reconstruction error (per member).
        task_weight: weight of the task losses; 0 fits by reconstruction only (no batches needed; every
            step then reconstructs all source tasks, i.e. full-batch).
        mixing: ``dirichlet`` (default), ``paper`` (the paper's stick breaking) or ``none`` (each member
            decodes its own code: no interpolation).
        dirichlet_alpha: concentration of the Dirichlet (1 = uniform on the simplex).
        task_order: ``round_robin`` or ``random`` choice of the source task per step.
        up, down: projection kinds (``auto`` picks dense / mlp when D·d <= max_dense_elements, else the
            structured fastfood / sketch ones).
        encoder_hidden, sketch_dim, fastfood_width: projection sizes (defaults: d, max(d, 256), max(d, 64)).
        eval_every: validate every this many steps (0: only at the end); needs the tasks' eval batches.
        metric: validation metric (``accuracy`` or ``macro_f1``).
        seed: seeds projection init, weights / task order and the members' own randomness (dropout).
        log_every: steps between log lines; progress: show a tqdm bar.
    """

    dim: int = 4
    steps: int = 1000
    lr: float = 1e-2
    optimizer: str = "adafactor"
    schedule: str = "constant"
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    recon_weight: float = 1.0
    task_weight: float = 1.0
    mixing: str = "dirichlet"
    dirichlet_alpha: float = 1.0
    task_order: str = "round_robin"
    up: str = "auto"
    down: str = "auto"
    max_dense_elements: int = 1 << 27
    encoder_hidden: int | None = None
    sketch_dim: int | None = None
    fastfood_width: int | None = None
    eval_every: int = 0
    metric: str = "accuracy"
    seed: int = 0
    log_every: int = 50
    progress: bool = True

    def validate(self) -> None:
        if self.dim < 1 or self.steps < 1:
            raise ValueError(f"dim and steps must be >= 1, got dim={self.dim}, steps={self.steps}")
        if self.optimizer not in OPTIMIZERS or self.schedule not in SCHEDULES:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS} and schedule one of {SCHEDULES}")
        if self.mixing not in MIXINGS:
            raise ValueError(f"unknown mixing {self.mixing!r}; use {', '.join(MIXINGS)}")
        if self.task_order not in TASK_ORDERS:
            raise ValueError(f"unknown task_order {self.task_order!r}; use {', '.join(TASK_ORDERS)}")
        if self.recon_weight < 0 or self.task_weight < 0 or self.recon_weight + self.task_weight == 0:
            raise ValueError("recon_weight and task_weight must be >= 0 and not both 0")
        if self.dirichlet_alpha <= 0:
            raise ValueError(f"dirichlet_alpha must be > 0, got {self.dirichlet_alpha}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0, got {self.eval_every}")
        check_metric(self.metric)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def sample_weights(rng: np.random.Generator, members: int, mixing: str, alpha: float = 1.0) -> np.ndarray:
    """Interpolation weights over ``members`` codes (rows: the weights each member decodes with).

    ``dirichlet``: one draw shared by all members; ``paper``: stick breaking w1 ~ U(0,1),
    w2 ~ U(0, 1 − w1), ..., last = remainder (the paper's (a, b, 1−a−b) for 3 members);
    ``none``: the identity (each member its own code).
    """
    if mixing == "none":
        return np.eye(members)
    if mixing == "dirichlet":
        w = rng.dirichlet(np.full(members, alpha))
    elif mixing == "paper":
        w, left = np.zeros(members), 1.0
        for i in range(members - 1):
            w[i] = rng.uniform(0.0, left)
            left -= w[i]
        w[-1] = left
    else:
        raise ValueError(f"unknown mixing {mixing!r}; use {', '.join(MIXINGS)}")
    return np.tile(w, (members, 1))


def fixed_points(codes: dict[str, Tensor]) -> dict[str, Tensor]:
    """The deterministic validation points: each member's code (a vertex) and their centroid."""
    points = {f"vertex:{name}": z for name, z in codes.items()}
    points["centroid"] = torch.stack(list(codes.values())).mean(0)
    return points


def validate_points(
    members: Sequence[SubspaceMember],
    ups: dict[str, UpProjection],
    codes: dict[str, dict[str, Tensor]],
    tasks: Sequence[TaskBatches],
    store: SolutionStore,
    metric: str,
) -> tuple[float, dict[str, Any]]:
    """Evaluate every member at every fixed point of every task; score = mean (relative when possible)."""
    details: dict[str, Any] = {}
    raw, rel = [], []
    for task in tasks:
        points = fixed_points({m.name: codes[m.name][task.name] for m in members})
        for label, z in points.items():
            for member in members:
                theta = ups[member.name](z.to(member.theta0.device))
                value = evaluate(member, theta, task.eval_batches, num_labels=task.num_labels)[metric]
                details.setdefault(task.name, {}).setdefault(label, {})[member.name] = value
                raw.append(value)
                original = store.original_metric(member.name, task.name, metric)
                rel.append(relative(value, original) if original else None)
    if all(r is not None for r in rel):
        return float(np.mean(rel)), {"relative": True, "metrics": details}
    return float(np.mean(raw)), {"relative": False, "metrics": details}


def _check_inputs(
    members: Sequence[SubspaceMember],
    store: SolutionStore,
    tasks: Sequence[TaskBatches] | None,
    config: FitConfig,
) -> list[str]:
    if not members:
        raise ValueError("fit() needs at least one member")
    for member in members:
        check_member(member)
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ValueError(f"member names must be unique, got {names}")
    if tasks is None:
        if config.task_weight > 0:
            raise ValueError(
                "fit() with task_weight > 0 needs tasks (TaskBatches); pass tasks or set task_weight=0"
            )
        task_names = [t for t in store.tasks() if all(store.has(n, t) for n in names)]
    else:
        task_names = [t.name for t in tasks]
        if len(set(task_names)) != len(task_names):
            raise ValueError(f"task names must be unique, got {task_names}")
    if not task_names:
        raise ValueError("no source task has a solution for every member; add solutions to the store first")
    for member in members:
        for task in task_names:
            if not store.has(member.name, task):
                raise ValueError(
                    f"the store has no solution of member {member.name!r} on task {task!r}; add it first"
                )
        if store.dim(member.name) != member.theta0.numel():
            raise ValueError(
                f"member {member.name!r}: stored deltas have {store.dim(member.name)} entries but theta0 has "
                f"{member.theta0.numel()}; the store belongs to a different DET configuration"
            )
    return task_names


def fit(
    members: Sequence[SubspaceMember],
    store: SolutionStore,
    tasks: Sequence[TaskBatches] | None = None,
    config: FitConfig | None = None,
    *,
    output_dir: str | os.PathLike | None = None,
    log_path: str | os.PathLike | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> SubspaceBundle:
    """Learn the unified subspace of ``members`` from the source solutions in ``store``.

    Args:
        members: the DETs (their ``theta0`` are the anchors; deltas in ``store`` are relative to them).
        store: Δ_m^t for every member m and source task t.
        tasks: the source tasks' batches (``None`` only for reconstruction-only fits).
        config: :class:`FitConfig`.
        output_dir: if given, the best bundle so far is saved there (atomically) at every improvement.
        log_path: if given, one JSON line per step is appended there.
        on_step: called with each step's record (step, task, loss, per-member ce / recon, weights).

    Returns:
        The best :class:`SubspaceBundle` (by deterministic validation; by mean reconstruction error when
        no task batches / validation are available), with fit metadata.
    """
    config = config or FitConfig()
    config.validate()
    task_names = _check_inputs(members, store, tasks, config)
    task_by_name = {t.name: t for t in tasks} if tasks is not None else {}
    can_validate = tasks is not None and all(t.eval_batches for t in tasks)
    start = time.perf_counter()
    code_device = members[0].theta0.device

    with seeded(config.seed):
        ups, downs, deltas, features, member_meta = _build_projections(members, store, task_names, config)

        params = [p for m in ups.values() for p in m.parameters()] + [
            p for m in downs.values() for p in m.parameters()
        ]
        optimizer = make_optimizer(params, config.optimizer, config.lr, config.weight_decay)
        schedule = make_schedule(optimizer, config.schedule, config.steps)
        rng = np.random.default_rng(config.seed)
        streams = {t.name: t.stream() for t in tasks} if tasks is not None and config.task_weight > 0 else {}

        def current_codes() -> dict[str, dict[str, Tensor]]:
            with torch.no_grad():
                return {
                    name: {t: downs[name].head(f).to(code_device) for t, f in by_task.items()}
                    for name, by_task in features.items()
                }

        def selection() -> tuple[float, dict[str, Any]]:
            codes = current_codes()
            if can_validate:
                return validate_points(
                    members, ups, codes, [task_by_name[t] for t in task_names], store, config.metric
                )
            errors = {
                name: {
                    t: float(
                        relative_reconstruction_error(delta, ups[name].delta(codes[name][t].to(delta.device)))
                    )
                    for t, delta in deltas[name].items()
                }
                for name in ups
            }
            mean_error = float(np.mean([e for by_task in errors.values() for e in by_task.values()]))
            return -mean_error, {"reconstruction": errors}

        best: dict[str, Any] = {"score": -float("inf")}
        validation: list[dict[str, Any]] = []

        def checkpoint(step: int) -> None:
            with torch.no_grad():
                score, details = selection()
            validation.append({"step": step, "score": score, **details})
            logger.info("subspace fit step %d: validation score %.4f", step, score)
            if "ups" not in best or score > best["score"]:  # the first checkpoint always counts
                best.update(
                    score=score,
                    step=step,
                    ups={
                        n: {k: v.detach().clone() for k, v in up.state_dict().items()}
                        for n, up in ups.items()
                    },
                    codes=current_codes(),
                )
                if output_dir is not None:
                    _bundle(best, ups, config, task_names, member_meta, validation, start).save(output_dir)

        log_file = open(log_path, "a", encoding="utf-8") if log_path is not None else None  # noqa: SIM115
        bar = tqdm(total=config.steps, desc="subspace fit", disable=not config.progress, dynamic_ncols=True)
        try:
            for step in range(1, config.steps + 1):
                if config.task_order == "round_robin":
                    task = task_names[(step - 1) % len(task_names)]
                else:
                    task = task_names[int(rng.integers(len(task_names)))]
                weights = sample_weights(rng, len(members), config.mixing, config.dirichlet_alpha)
                record = _step(
                    members,
                    ups,
                    downs,
                    deltas,
                    features,
                    task,
                    streams.get(task),
                    weights,
                    config,
                    code_device,
                )
                if not math.isfinite(record["loss"]):
                    raise ValueError(
                        f"stage-1 loss became {record['loss']} at step {step} (task {task}); lower the lr"
                    )
                if config.grad_clip is not None:
                    record["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, config.grad_clip))
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                record.update(step=step, lr=schedule.get_last_lr()[0])
                schedule.step()
                if log_file is not None:
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                if on_step is not None:
                    on_step(record)
                if step % config.log_every == 0:
                    logger.info("subspace fit step %d task %s loss %.4f", step, task, record["loss"])
                bar.set_postfix(loss=f"{record['loss']:.4f}", task=task, refresh=False)
                bar.update(1)
                if (config.eval_every and step % config.eval_every == 0) or step == config.steps:
                    checkpoint(step)
        finally:
            bar.close()
            if log_file is not None:
                log_file.close()

    bundle = _bundle(best, ups, config, task_names, member_meta, validation, start)
    bundle.metadata["reconstruction"] = bundle.reconstruction_errors(store)
    if output_dir is not None:
        bundle.save(output_dir)
    return bundle


def _build_projections(
    members: Sequence[SubspaceMember], store: SolutionStore, task_names: list[str], config: FitConfig
) -> tuple[
    dict[str, UpProjection],
    dict[str, DownProjection],
    dict[str, dict[str, Tensor]],
    dict[str, dict[str, Tensor]],
    dict[str, Any],
]:
    """Per member: up / down projections scaled to its deltas, the deltas on its device, the cached
    (fixed) encoder features of each delta, and the metadata / memory report."""
    ups: dict[str, UpProjection] = {}
    downs: dict[str, DownProjection] = {}
    deltas: dict[str, dict[str, Tensor]] = {}
    features: dict[str, dict[str, Tensor]] = {}
    member_meta: dict[str, Any] = {}
    for i, member in enumerate(members):
        device, size = member.theta0.device, member.theta0.numel()
        deltas[member.name] = {t: store.delta(member.name, t).to(device) for t in task_names}
        norms = torch.stack([d.norm() for d in deltas[member.name].values()])
        ref = float(norms.pow(2).mean().sqrt())
        if ref == 0.0:
            raise ValueError(f"member {member.name!r}: every source delta is zero; store trained solutions")
        up_kind, down_kind = resolve_kinds(
            config.up, config.down, size, config.dim, config.max_dense_elements
        )
        seed = config.seed * 1000 + 2 * i
        ups[member.name] = make_up(
            up_kind,
            member.theta0,
            config.dim,
            scale=ref / size**0.5,
            seed=seed,
            width=config.fastfood_width,
        ).to(device)
        downs[member.name] = make_down(
            down_kind,
            size,
            config.dim,
            input_scale=ref,
            seed=seed + 1,
            hidden=config.encoder_hidden,
            sketch_dim=config.sketch_dim,
        ).to(device)
        with torch.no_grad():
            features[member.name] = {
                t: downs[member.name].features(d) for t, d in deltas[member.name].items()
            }
        member_meta[member.name] = {
            "num_parameters": size,
            "up": up_kind,
            "down": down_kind,
            "delta_rms_norm": ref,
            "memory_bytes": {
                "up": ups[member.name].memory_bytes(),
                "down": downs[member.name].memory_bytes(),
            },
            "dense_equivalent_bytes": 4 * size * config.dim,
        }
        logger.info(
            "subspace member %s: D=%d up=%s (%.1f MB) down=%s (%.1f MB)",
            member.name, size, up_kind, member_meta[member.name]["memory_bytes"]["up"] / 2**20,
            down_kind, member_meta[member.name]["memory_bytes"]["down"] / 2**20,
        )  # fmt: skip
    return ups, downs, deltas, features, member_meta


def _step(
    members: Sequence[SubspaceMember],
    ups: dict[str, UpProjection],
    downs: dict[str, DownProjection],
    deltas: dict[str, dict[str, Tensor]],
    features: dict[str, dict[str, Tensor]],
    task: str,
    stream: Any,
    weights: np.ndarray,
    config: FitConfig,
    code_device: torch.device,
) -> dict[str, Any]:
    """One stage-1 step: accumulates gradients, returns the step record (no optimiser step)."""
    names = [m.name for m in members]
    codes = [downs[n].head(features[n][task]).to(code_device) for n in names]
    stacked = torch.stack(codes)  # (M, d)
    # reconstruction-only fits have no batch to follow: every source task is reconstructed every step
    recon_tasks = list(deltas[names[0]]) if config.task_weight == 0 else [task]
    # row m of `mixed` is the code member m decodes
    mixed = torch.as_tensor(weights, dtype=stacked.dtype, device=code_device) @ stacked
    shared = None if config.mixing == "none" else [float(w) for w in weights[0]]
    record: dict[str, Any] = {"task": task, "weights": shared, "ce": {}, "recon": {}}
    total = 0.0
    surrogate = torch.zeros((), device=code_device)
    if config.task_weight > 0:
        batch = next(stream)
        # each member's forward + backward in turn through a detached copy of its mixed code, so one
        # member's activations are freed before the next runs; the code gradient is replayed below
        leaf = mixed.detach().requires_grad_(True)
        for i, member in enumerate(members):
            theta = ups[member.name](leaf[i].to(member.theta0.device))
            ce = member.loss(theta, batch)
            (config.task_weight * ce).backward()
            record["ce"][member.name] = float(ce.detach())
            total += config.task_weight * record["ce"][member.name]
        if leaf.grad is not None:
            surrogate = surrogate + (mixed * leaf.grad).sum()
    for member, z in zip(members, codes, strict=True):
        up = ups[member.name]
        if recon_tasks == [task]:
            rec = relative_reconstruction_error(deltas[member.name][task], up.delta(z.to(up.theta0.device)))
        else:
            target = torch.stack([deltas[member.name][t] for t in recon_tasks])
            z_all = downs[member.name].head(torch.stack([features[member.name][t] for t in recon_tasks]))
            rec = relative_reconstruction_error(target, up.delta(z_all)).mean()
        record["recon"][member.name] = float(rec.detach())
        total += config.recon_weight * record["recon"][member.name]
        surrogate = surrogate + config.recon_weight * rec.to(code_device)
    surrogate.backward()
    record["loss"] = total
    return record


def _bundle(
    best: dict[str, Any],
    ups: dict[str, UpProjection],
    config: FitConfig,
    task_names: list[str],
    member_meta: dict[str, Any],
    validation: list[dict[str, Any]],
    start: float,
) -> SubspaceBundle:
    """A bundle of the best state (copies, so later training does not change it)."""
    snapshot = {}
    for name, up in ups.items():
        copy = UpProjection.from_config(up.config())
        copy.load_state_dict(best["ups"][name])
        snapshot[name] = copy.to(up.theta0.device)
    metadata = {
        "stage": "fit",
        "fit_config": config.to_dict(),
        "source_tasks": task_names,
        "members": member_meta,
        "best_step": best["step"],
        "best_score": best["score"],
        "validation": validation,
        "wall_seconds": time.perf_counter() - start,
    }
    return SubspaceBundle(snapshot, best["codes"], metadata)
