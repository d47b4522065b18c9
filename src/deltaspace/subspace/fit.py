"""Stage 1, subspace approximation: every member's projections in one shared code space.

Two starts, then (``steps > 0``) the paper's joint fit:

- ``init="closed_form"`` (default; not in the paper): shared task codes and per-DET decoders that
  reproduce every source solution exactly (:mod:`deltaspace.subspace.closed_form`), plus d − k random
  extra directions; the encoders' read-outs are fitted by least squares to map each solution to its code.
- ``init="random"`` (the paper's): random encoders and decoders that the reconstruction loss must pull
  onto the solutions.

A joint-fit step on source task t: encode each member's delta ``z_m = E_m(Δ_m^t)``, draw interpolation
weights ``w ~ Dirichlet(α, ..., α)``, mix ``z_mix = Σ w_m z_m`` and minimise
``Σ_m task_weight · CE_m(U_m(z_mix)) + λ · Σ_m mean_t |Δ_m^t − P_m z_m^t|² / |Δ_m^t|²``.

Differences from the paper's code (each a deliberate improvement, the paper's choice still available):

- Reconstruction of *all* source tasks every step (``recon_all_tasks``; the paper reconstructs the
  step's task only, so the decoders chase the last task visited: 52–118 % error after 120 steps of a
  synthetic check against 1–13 % for all tasks every step).
- The task loss runs on ``members_per_step`` DETs drawn per step (default all), so a study with many DETs,
  full fine-tuning among them, can take more steps in the same time.
- Encoders with a fixed random first layer (``train_encoder_first_layer=False``): see
  :class:`~deltaspace.subspace.projections._CodeHead` for why a trained one saturates.
- Interpolation weights from Dirichlet(1, ..., 1), uniform on the simplex; the paper's stick breaking is
  ``mixing="paper"``. The reconstruction term is the relative squared error (scale-free).
- Memory: each member's backward runs right after its forward (the mixed code enters every member as a
  detached leaf and its gradient is routed back into the encoders at the end).
- Validation, when asked for (``eval_every > 0``), is deterministic: each member at its own code and at
  the centroid of the task's codes (or, cheaper, ``eval_centroid_only``); the best checkpoint is kept,
  and with ``patience`` the fit stops once that many validations in a row have not improved on it
  (``steps`` is then the most it may take). With ``eval_every = 0`` nothing is evaluated and the last
  state is returned (a validation that selects among one checkpoint is waste).
- Resumable: ``checkpoint_every`` steps, one atomic checkpoint (:mod:`~deltaspace.subspace._fit_checkpoint`);
  a fit called again with the same arguments continues where it stopped and ends in the same bundle; called
  with more ``steps`` (constant schedule), a finished fit continues from its last step.
- Encoders are not returned: stages 2–6 need only the up-projections and the source codes.

Long fits (thousands of steps): with ``output_dir`` the fit checkpoints every ``checkpoint_every`` steps
(:mod:`~deltaspace.subspace._fit_checkpoint`), and a fit called again with the same arguments resumes from
the checkpoint and ends in the same bundle as an uninterrupted run; each task's training batches come from a
:class:`~deltaspace.subspace.batches.TrainStream` whose position is part of the checkpoint (a
:func:`~deltaspace.subspace.batches.shuffled_batches` factory deals a new order every epoch); a progress bar
shows the loss, the last validation score and the ETA, and the step log the seconds of every step.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from deltaspace.best import BestCheckpoint
from deltaspace.errors import BrokenFileError, RunMismatchError
from deltaspace.subspace._fit_checkpoint import (
    CHECKPOINT_FILE,
    count_lines,
    fit_identity,
    load_fit_checkpoint,
    save_fit_checkpoint,
    set_numpy_rng_state,
    set_torch_rng_state,
    torch_rng_state,
    truncate_lines,
)
from deltaspace.subspace._optim import check_step_options, make_optimizer, make_schedule, seeded
from deltaspace.subspace.alignment import (
    alignment_maps,
    embedding_batch,
    misalignment,
    output_change,
    output_changes,
)
from deltaspace.subspace.batches import TaskBatches, TrainStream
from deltaspace.subspace.bundle import SubspaceBundle
from deltaspace.subspace.closed_form import closed_form_basis, complement_directions, rms_norm, shared_codes
from deltaspace.subspace.evaluate import evaluate_with_loss, relative
from deltaspace.subspace.frozen_reconstruction import FrozenReconstruction, is_frozen
from deltaspace.subspace.member import SubspaceMember, check_member
from deltaspace.subspace.projections import (
    BasisUp,
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
INITS = ("closed_form", "random")
GRADIENT_SCALES = ("unit", "loss", "output")
ALIGN_SPACES = ("logits", "embedding")
KEEPS = ("best", "last")


@dataclass
class FitConfig:
    """Stage-1 settings.

    Attributes:
        dim: intrinsic dimension d shared by all members (paper: 4 single-task, 100 multi-task).
        init: ``closed_form`` (exact start from the source solutions, default) or ``random`` (the paper's).
        steps: joint-fit steps after the start (0: the closed-form start as it is).
        lr, optimizer, schedule, weight_decay, grad_clip: optimisation (paper: Adafactor, constant lr
            1e-4 on raw N(0, 0.02) weights; here weights are O(1) by construction, see projections.py).
        recon_weight: λ on the relative reconstruction error (per member).
        task_weight: weight of the task losses; 0 fits by reconstruction only (no batches needed).
        recon_all_tasks: reconstruct every source task at every step (the paper: only the step's task).
        members_per_step: DETs whose task loss runs per step (drawn at random; ``None``: all).
        mixing: ``dirichlet`` (default), ``paper`` (the paper's stick breaking) or ``none``.
        dirichlet_alpha: concentration of the Dirichlet (1 = uniform on the simplex).
        task_order: ``round_robin`` or ``random`` choice of the source task per step.
        up, down: projection kinds (``auto`` picks dense / mlp when D·d <= max_dense_elements, else the
            structured fastfood / sketch ones); with the closed-form start ``up`` is the kind of the
            d − k extra directions beside the k solution directions.
        train_basis: with the closed-form start, whether a member's decoder (solution and extra
            directions) is trained in the joint fit (``auto``: yes unless the member is too large for a
            dense projection; a fixed one's reconstruction then costs O(d²) per step).
        gradient_directions: with the closed-form start, fill the d − k extra directions first with the
            source tasks' descent directions at θ0 (minus the task-loss gradient over ``gradient_batches``
            batches, outside the solutions' span, shared across DETs like the solutions) instead of
            random ones. Not in the paper: the first step training takes on a task, which a held-out
            task's training may share with the source tasks' more than with a random direction.
        gradient_scale: ``unit`` (descent directions of unit norm in parameter space), ``loss`` (scaled
            so that a unit step lowers the batch's loss by 1 to first order) or ``output`` (scaled so
            that a unit step changes the model's outputs on the batch it came from by the same amount
            in every DET: the geometric mean over DETs of a unit-norm step's output change). ``loss``
            and ``output`` aim at transfer: the same code should mean the same change in every DET.
        gradient_align: re-express each DET's descent directions inside their span so the same code
            changes every DET's outputs on the source batches alike, to first order
            (:mod:`~deltaspace.subspace.alignment`); aims at transfer, not in the paper.
        gradient_align_space: what the alignment matches: ``logits`` (the source tasks' label scores) or
            ``embedding`` (the unit sentence embedding the prototype head reads: label-free, so it also
            covers the directions a held-out task's labels read; needs batches with ``prototypes``).
        gradient_align_pool: candidate descent directions per aligned one: ``k`` > 1 computes k times as
            many (``gradient_batches`` × k per task) and each DET's aligned directions are combinations
            of all of them, which can match the consensus more closely than a change of coordinates.
        gradient_per_batch: one descent direction per batch (T · gradient_batches of them, which also
            span how the direction varies within a task) instead of one per task.
        agreement_weight: weight of a label-free term that trains the DETs to read codes beyond the
            source mixtures alike (0: off; not in the paper). Each step draws a code z ~ N(0, s² I) (``s`` =
            ``agreement_scale``, sized like stage 2's codes), and one of the step's DETs (the student, whose
            decoder the fit trains) is pulled toward another's (the teacher's, held fixed for this term)
            output change from θ0 at z on the step's batch: ‖δ_student − δ_teacher‖² / ‖δ_teacher‖² over
            the batch's ``agreement_space`` outputs. The teacher is detached so the term cannot be met by making codes do nothing: the
            student must follow a decoder whose directions still act. The joint fit's own terms align
            the DETs only at the source codes (and, the decoders being linear, between them), where a held-out task's codes rarely lie
            (:mod:`~deltaspace.subspace.code_geometry`).
        agreement_scale: ``s`` above, the per-coordinate spread of the codes the agreement term visits.
        agreement_space: ``embedding`` (the unit sentence embedding a prototype head reads: label-free,
            so it covers what any task's labels read; needs batches with ``prototypes``) or ``logits`` (the
            source task's label scores).
        train_encoder_first_layer: train the encoders' first layer (the paper) or keep it fixed.
        encoder_hidden, sketch_dim, fastfood_width: projection sizes (defaults: max(d, T), max(d, 256),
            max(d, 64)).
        eval_every: validate every this many steps (0: never; the last state is returned).
        patience: stop once this many validations in a row have not improved on the best one (needs
            ``eval_every``; ``None``: run all ``steps``, which are then the most the fit may take); the best
            state is returned either way. The closed-form start's validation (step 0) counts as the first.
        keep: the state that becomes the subspace: ``best`` (the best validated one, the paper's
            checkpoint-best; the last when nothing is validated) or ``last`` (what the joint fit's training
            made of it, whatever source validation says; validations then only measure the curve).
        eval_centroid_only: validate each member at the centroid of the task's codes only (T·M evaluations
            per check instead of up to T·M·(M+1) with every member's own code too): for long fits.
        metric: validation metric: ``accuracy`` or ``macro_f1`` (relative to the originals where the store
            has their metrics), or ``loss`` (the mean cross-entropy, lower is better: smooth where accuracy
            on a few hundred examples moves in steps, and not the originals' own selection criterion, so a
            start at the originals does not win every tie). Every validation records all three.
        seed: seeds projection init, weights / task order, the batch order and the members' own
            randomness (dropout).
        checkpoint_every: with ``output_dir``, save a resumable checkpoint every this many steps and after
            the last (0: never); see :mod:`~deltaspace.subspace._fit_checkpoint`.
        log_every: steps between log lines; progress: show a tqdm bar (loss, last validation, ETA).
    """

    dim: int = 4
    init: str = "closed_form"
    steps: int = 100
    lr: float = 1e-3
    optimizer: str = "adamw"
    schedule: str = "constant"
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    recon_weight: float = 1.0
    task_weight: float = 1.0
    recon_all_tasks: bool = True
    members_per_step: int | None = None
    mixing: str = "dirichlet"
    dirichlet_alpha: float = 1.0
    task_order: str = "round_robin"
    up: str = "auto"
    down: str = "auto"
    train_basis: str | bool = "auto"
    gradient_directions: bool = False
    gradient_batches: int = 4
    gradient_per_batch: bool = False
    gradient_scale: str = "unit"
    gradient_align: bool = False
    gradient_align_space: str = "logits"
    gradient_align_pool: int = 1
    agreement_weight: float = 0.0
    agreement_scale: float = 0.5
    agreement_space: str = "embedding"
    train_encoder_first_layer: bool = False
    max_dense_elements: int = 1 << 27
    encoder_hidden: int | None = None
    sketch_dim: int | None = None
    fastfood_width: int | None = None
    eval_every: int = 0
    patience: int | None = None
    keep: str = "best"
    eval_centroid_only: bool = False
    metric: str = "accuracy"
    seed: int = 0
    checkpoint_every: int = 100
    log_every: int = 50
    progress: bool = True

    def validate(self) -> None:
        if self.dim < 1 or self.steps < 0:
            raise ValueError(f"dim must be >= 1 and steps >= 0, got dim={self.dim}, steps={self.steps}")
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; use {' or '.join(INITS)}")
        if self.init == "random" and self.steps < 1:
            raise ValueError("a random start needs steps >= 1 (or use init: closed_form)")
        check_step_options(self.optimizer, self.schedule, self.eval_every, self.metric, loss_allowed=True)
        if self.patience is not None and (self.patience < 1 or not self.eval_every):
            raise ValueError(
                f"patience counts validations: it needs eval_every > 0 and must be >= 1 or null, got "
                f"patience={self.patience}, eval_every={self.eval_every}"
            )
        if self.keep not in KEEPS:
            raise ValueError(f"keep must be {' or '.join(KEEPS)}, got {self.keep!r}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0 (0: never), got {self.checkpoint_every}")
        if self.mixing not in MIXINGS:
            raise ValueError(f"unknown mixing {self.mixing!r}; use {', '.join(MIXINGS)}")
        if self.task_order not in TASK_ORDERS:
            raise ValueError(f"unknown task_order {self.task_order!r}; use {', '.join(TASK_ORDERS)}")
        if self.recon_weight < 0 or self.task_weight < 0 or self.recon_weight + self.task_weight == 0:
            raise ValueError("recon_weight and task_weight must be >= 0 and not both 0")
        if self.dirichlet_alpha <= 0:
            raise ValueError(f"dirichlet_alpha must be > 0, got {self.dirichlet_alpha}")
        if self.members_per_step is not None and self.members_per_step < 1:
            raise ValueError(f"members_per_step must be >= 1 or null, got {self.members_per_step}")
        if self.gradient_scale not in GRADIENT_SCALES:
            raise ValueError(
                f"gradient_scale must be one of {', '.join(GRADIENT_SCALES)}, got {self.gradient_scale!r}"
            )
        if self.gradient_align and not self.gradient_directions:
            raise ValueError(
                "gradient_align aligns the descent directions: set gradient_directions: true too"
            )
        if self.gradient_align_space not in ALIGN_SPACES:
            raise ValueError(
                f"gradient_align_space must be one of {', '.join(ALIGN_SPACES)}, got {self.gradient_align_space!r}"
            )
        if self.gradient_align_pool < 1:
            raise ValueError(f"gradient_align_pool must be >= 1, got {self.gradient_align_pool}")
        if (
            self.gradient_align_space != "logits" or self.gradient_align_pool > 1
        ) and not self.gradient_align:
            raise ValueError(
                "gradient_align_space / gradient_align_pool shape the alignment: set gradient_align: true too"
            )
        if self.gradient_align_pool > 1 and not self.gradient_per_batch:
            raise ValueError(
                "gradient_align_pool needs gradient_per_batch: true (one candidate direction per batch)"
            )
        if self.agreement_weight < 0 or self.agreement_scale <= 0:
            raise ValueError(
                f"agreement_weight must be >= 0 and agreement_scale > 0, got {self.agreement_weight} and "
                f"{self.agreement_scale}"
            )
        if self.agreement_space not in ALIGN_SPACES:
            raise ValueError(
                f"agreement_space must be one of {', '.join(ALIGN_SPACES)}, got {self.agreement_space!r}"
            )
        if self.agreement_weight > 0 and self.task_weight == 0:
            raise ValueError("the agreement term runs on the task batches: it needs task_weight > 0")
        if self.train_basis not in ("auto", True, False):
            raise ValueError(f"train_basis must be auto, true or false, got {self.train_basis!r}")

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


def fixed_points(codes: dict[str, Tensor], centroid_only: bool = False) -> dict[str, Tensor]:
    """The deterministic validation points: each member's code (a vertex) and their centroid (left out
    when the codes coincide, as after the closed-form start: it would repeat the vertices); with
    ``centroid_only`` the centroid alone."""
    stacked = torch.stack(list(codes.values()))
    centroid = stacked.mean(0)
    if centroid_only:
        return {"centroid": centroid}
    points = {f"vertex:{name}": z for name, z in codes.items()}
    if (stacked - centroid).abs().max() > 1e-6 * max(1.0, float(centroid.abs().max())):
        points["centroid"] = centroid
    return points


def validate_points(
    members: Sequence[SubspaceMember],
    ups: dict[str, UpProjection],
    codes: dict[str, dict[str, Tensor]],
    tasks: Sequence[TaskBatches],
    store: SolutionStore,
    metric: str,
    centroid_only: bool = False,
) -> tuple[float, dict[str, Any]]:
    """Evaluate every member at every fixed point of every task. The score is the mean of ``metric``: relative
    to the originals when the store has their metrics (not for ``loss``). The details hold ``metric`` per
    task, point and member, and the mean ``accuracy`` and ``loss`` whatever the metric."""
    details: dict[str, Any] = {}
    raw, rel, accuracy, loss = [], [], [], []
    for task in tasks:
        points = fixed_points({m.name: codes[m.name][task.name] for m in members}, centroid_only)
        for label, z in points.items():
            for member in members:
                theta = ups[member.name](z.to(member.theta0.device))
                scores = evaluate_with_loss(member, theta, task.eval_batches, num_labels=task.num_labels)
                value = scores[metric]
                details.setdefault(task.name, {}).setdefault(label, {})[member.name] = value
                raw.append(value)
                accuracy.append(scores["accuracy"])
                loss.append(scores["loss"])
                original = None if metric == "loss" else store.original_metric(member.name, task.name, metric)
                rel.append(relative(value, original) if original else None)
    means = {"accuracy": float(np.mean(accuracy)), "loss": float(np.mean(loss))}
    if all(r is not None for r in rel):
        return float(np.mean(rel)), {"relative": True, "metrics": details, **means}
    return float(np.mean(raw)), {"relative": False, "metrics": details, **means}


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
    if config.agreement_weight > 0:
        lacking = [
            m.name
            for m in members
            if not (
                callable(getattr(m, "outputs", None)) and callable(getattr(m, "differentiable_outputs", None))
            )
        ]
        if lacking:
            raise ValueError(
                f"agreement_weight > 0 compares the DETs' outputs: member(s) {lacking} have no "
                "outputs(theta, batch) and differentiable_outputs(theta, batch); wrap a DeltaModel with DeltaModelMember"
            )
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
        output_dir: if given, the returned bundle is saved there (atomically). A fit of ``steps > 0`` also
            keeps a resumable checkpoint there (``fit_checkpoint.pt``, every ``checkpoint_every`` steps and
            after the last, kept beside the bundle): called again with the same arguments after a kill,
            the fit continues from it and returns the bundle an uninterrupted fit would; called with more
            ``steps`` under a constant schedule, a finished fit continues from its last step; a
            checkpoint of a fit with other settings, source tasks or members, or past ``steps``, is refused
            (:class:`~deltaspace.errors.RunMismatchError`: delete it or use another ``output_dir``).
        log_path: if given, one JSON line per step is appended there (with the step's ``seconds``); a
            resumed fit first drops the lines logged after its checkpoint, and a resumable fit that finds
            no checkpoint starts the log afresh.
        on_step: called with each step's record (step, task, loss, per-member ce / recon, weights,
            seconds).

    Returns:
        The best :class:`SubspaceBundle` by deterministic validation when ``eval_every > 0``, else the
        last state, with fit metadata.
    """
    config = config or FitConfig()
    config.validate()
    task_names = _check_inputs(members, store, tasks, config)
    task_by_name = {t.name: t for t in tasks} if tasks is not None else {}
    can_validate = tasks is not None and all(t.eval_batches for t in tasks)
    start = time.perf_counter()
    code_device = members[0].theta0.device
    checkpoint_path, identity, saved = None, None, None
    if output_dir is not None and config.steps and config.checkpoint_every:
        checkpoint_path = Path(output_dir) / CHECKPOINT_FILE
        deltas = {m.name: {t: store.delta(m.name, t) for t in task_names} for m in members}
        identity = fit_identity(config.to_dict(), task_names, deltas)
        saved = load_fit_checkpoint(checkpoint_path, identity)  # refuses one of another fit, before any work

    with seeded(config.seed):
        proj, member_meta = _build_projections(members, store, task_names, config, task_by_name or None)
        params = [
            p for m in [*proj.ups.values(), *proj.downs.values()] for p in m.parameters() if p.requires_grad
        ]
        streams = {t.name: t.stream() for t in tasks} if tasks is not None and config.task_weight > 0 else {}
        # the validation loss is the one score where lower is better (the reconstruction fallback is -error)
        best = BestCheckpoint(higher_is_better=not (can_validate and config.metric == "loss"))
        loop = _Loop(rng=np.random.default_rng(config.seed), streams=streams, best=best)
        if config.steps:
            loop.optimizer = make_optimizer(params, config.optimizer, config.lr, config.weight_decay)
            loop.schedule = make_schedule(loop.optimizer, config.schedule, config.steps)

        def current_codes() -> dict[str, dict[str, Tensor]]:
            with torch.no_grad():
                return {
                    name: {t: proj.downs[name].head(f).to(code_device) for t, f in by_task.items()}
                    for name, by_task in proj.features.items()
                }

        def selection() -> tuple[float, dict[str, Any]]:
            codes = current_codes()
            if can_validate:
                return validate_points(
                    members, proj.ups, codes, [task_by_name[t] for t in task_names], store, config.metric,
                    config.eval_centroid_only,
                )  # fmt: skip
            errors = _reconstruction(proj, codes)
            mean_error = float(np.mean([e for by_task in errors.values() for e in by_task.values()]))
            return -mean_error, {"reconstruction": errors}

        def snapshot() -> _FitState:
            return _FitState(
                ups={  # a fixed decoder never changes: referenced, not copied (full fine-tuning's is GBs)
                    n: {
                        k: v.detach() if n in proj.frozen else v.detach().clone()
                        for k, v in up.state_dict().items()
                    }
                    for n, up in proj.ups.items()
                },
                codes=current_codes(),
            )

        def validate_at(step: int) -> float:
            with torch.no_grad():
                score, details = selection()
            loop.validation.append({"step": step, "score": score, **details})
            logger.info("subspace fit step %d: validation score %.4f", step, score)
            loop.best.offer(step, score, snapshot)
            return score

        save = None
        if checkpoint_path is not None:

            def save() -> None:
                state = loop.state_dict(proj, time.perf_counter() - start)
                save_fit_checkpoint(checkpoint_path, identity, state)

        if saved is not None:
            loop.load_state_dict(saved, proj, code_device)
            if loop.step > config.steps:
                raise RunMismatchError(
                    f"{checkpoint_path} holds a fit at step {loop.step}, past this fit's steps ({config.steps}); "
                    f"ask for steps >= {loop.step}, or delete it to start this fit afresh"
                )
            truncate_lines(log_path, loop.log_lines)
            logger.info("subspace fit resumes at step %d from %s", loop.step, checkpoint_path)
        else:
            if checkpoint_path is not None:  # a resumable fit starting afresh: a fit killed before its
                truncate_lines(log_path, 0)  # first checkpoint logged steps that are taken again now
            loop.log_lines = count_lines(log_path)
            if config.eval_every and config.init == "closed_form":
                validate_at(0)  # the exact start is a candidate like any other
        if config.steps and not loop.stopped_early:  # a fit stopped early may be resumed after its stop
            _train(members, proj, params, loop, config, code_device, task_names, validate_at, log_path,
                   on_step, save)  # fmt: skip
        if not config.eval_every:
            loop.best.keep(config.steps, float("nan"), snapshot())  # nothing validated: the last state
        last = snapshot() if config.keep == "last" else None

    # a resumed fit's wall time counts the time before its resume too
    bundle = _bundle(loop, proj.ups, config, task_names, member_meta, start - loop.seconds_before, last)
    bundle.metadata["reconstruction"] = bundle.reconstruction_errors(store)
    if output_dir is not None:
        bundle.save(output_dir)  # the checkpoint stays: asked for more steps, the fit continues from it
    return bundle


@dataclass
class _Loop:
    """What the joint fit changes as it runs besides the projections' weights. With those weights it is
    what a checkpoint saves (:meth:`state_dict`) and a resume restores (:meth:`load_state_dict`)."""

    rng: np.random.Generator  # task order, interpolation weights, members per step
    streams: dict[str, TrainStream]  # each task's training batches and their position
    best: BestCheckpoint[_FitState]
    validation: list[dict[str, Any]] = field(default_factory=list)
    optimizer: torch.optim.Optimizer | None = None
    schedule: Any = None
    step: int = 0  # optimiser steps taken
    stopped_early: bool = False  # `patience` validations in a row did not improve on the best
    log_lines: int = 0  # lines of the step log as of `step`
    seconds_before: float = 0.0  # what the fit ran before this call (a resumed fit)

    def state_dict(self, proj: _Projections, seconds: float) -> dict[str, Any]:
        """Tensors and plain values only (``seconds``: how long this call has run)."""
        return {
            "step": self.step,
            "stopped_early": self.stopped_early,
            "weights": {key: p.detach() for key, p in _parameters(proj).items()},
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch_rng_state(),
            "streams": {name: stream.state_dict() for name, stream in self.streams.items()},
            "best": None if self.best.empty else _best_state(self.best, proj),
            "validation": self.validation,
            "log_lines": self.log_lines,
            "seconds": self.seconds_before + seconds,
        }

    def load_state_dict(self, saved: dict[str, Any], proj: _Projections, code_device: torch.device) -> None:
        """Restore what :meth:`state_dict` saved, the projections' weights and torch's RNG included."""
        parameters = _parameters(proj)
        if set(parameters) != set(saved["weights"]):
            raise BrokenFileError(
                "the fit checkpoint holds other projection weights than this fit builds (written by another "
                "version of deltaspace?); delete it to start the fit afresh"
            )
        with torch.no_grad():
            for key, p in parameters.items():
                p.copy_(saved["weights"][key])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.schedule.load_state_dict(saved["schedule"])
        for name, stream in self.streams.items():
            stream.load_state_dict(saved["streams"][name])  # replays its epoch under a forked RNG
        set_numpy_rng_state(self.rng, saved["numpy_rng"])
        set_torch_rng_state(saved["torch_rng"])
        if saved["best"] is not None:
            best = saved["best"]
            state = _FitState(
                ups={name: _full_state(up, best["ups"][name]) for name, up in proj.ups.items()},
                codes={
                    name: {t: z.to(code_device) for t, z in by_task.items()}
                    for name, by_task in best["codes"].items()
                },
            )
            self.best.keep(best["step"], best["value"], state, best["metrics"])
            self.best.evals_without_improvement = best["evals_without_improvement"]
        self.validation[:] = saved["validation"]
        self.step, self.log_lines, self.seconds_before = saved["step"], saved["log_lines"], saved["seconds"]
        # absent from the checkpoints written before patience existed
        self.stopped_early = bool(saved.get("stopped_early", False))


def _parameters(proj: _Projections) -> dict[str, nn.Parameter]:
    """Every parameter of the projections by name: what the fit trains (their buffers never change, so a
    resume rebuilds them as they were)."""
    return {
        f"{kind}.{name}.{key}": p
        for kind, modules in (("up", proj.ups), ("down", proj.downs))
        for name, module in modules.items()
        for key, p in module.named_parameters()
    }


def _best_state(best: BestCheckpoint[_FitState], proj: _Projections) -> dict[str, Any]:
    """The kept state for a checkpoint: the up-projections' parameters (not their fixed buffers) and codes."""
    kept = best.state
    ups = {
        name: {key: kept.ups[name][key] for key, _ in up.named_parameters()} for name, up in proj.ups.items()
    }
    return {
        "step": best.step,
        "value": best.value,
        "metrics": best.metrics,
        "evals_without_improvement": best.evals_without_improvement,
        "ups": ups,
        "codes": kept.codes,
    }


def _full_state(up: UpProjection, parameters: dict[str, Tensor]) -> dict[str, Tensor]:
    """``up``'s state dict with ``parameters`` in place of its own (its buffers are shared, not copied:
    they never change)."""
    state = dict(up.state_dict())
    for key, value in parameters.items():
        state[key] = value.to(state[key].device)
    return state


def _train(
    members: Sequence[SubspaceMember],
    proj: _Projections,
    params: list[Tensor],
    loop: _Loop,
    config: FitConfig,
    code_device: torch.device,
    task_names: list[str],
    validate_at: Callable[[int], float],
    log_path: str | os.PathLike | None,
    on_step: Callable[[dict[str, Any]], None] | None,
    save: Callable[[], None] | None,
) -> None:
    """The joint fit from step ``loop.step`` to ``config.steps``: validating every ``config.eval_every``
    steps, stopping once ``config.patience`` validations in a row have not improved on the best, and saving
    (``save``) every ``config.checkpoint_every`` steps and after the last (the early stop's included)."""
    log_file = open(log_path, "a", encoding="utf-8") if log_path is not None else None  # noqa: SIM115
    bar = tqdm(
        total=config.steps,
        initial=loop.step,
        desc="subspace fit",
        disable=not config.progress,
        dynamic_ncols=True,
    )
    last_score = loop.validation[-1]["score"] if loop.validation else None
    try:
        for step in range(loop.step + 1, config.steps + 1):
            began = time.perf_counter()
            if config.task_order == "round_robin":
                task = task_names[(step - 1) % len(task_names)]
            else:
                task = task_names[int(loop.rng.integers(len(task_names)))]
            weights = sample_weights(loop.rng, len(members), config.mixing, config.dirichlet_alpha)
            chosen = _choose_members(loop.rng, len(members), config.members_per_step)
            agreement = _agreement_draw(loop.rng, members, proj, chosen, config)
            record = _step(
                members, proj, task, loop.streams.get(task), weights, chosen, config, code_device, agreement
            )
            if not math.isfinite(record["loss"]):
                raise ValueError(
                    f"stage-1 loss became {record['loss']} at step {step} (task {task}); lower the lr"
                )
            if config.grad_clip is not None:
                record["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, config.grad_clip))
            loop.optimizer.step()
            loop.optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - began  # the step alone: validation and saving are not in it
            record.update(step=step, lr=loop.schedule.get_last_lr()[0], seconds=seconds)
            loop.schedule.step()
            loop.step = step
            if log_file is not None:
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                loop.log_lines += 1
            if on_step is not None:
                on_step(record)
            if step % config.log_every == 0:
                logger.info(
                    "subspace fit step %d/%d task %s loss %.4f (%.3f s/step)",
                    step, config.steps, task, record["loss"], record["seconds"],
                )  # fmt: skip
            if config.eval_every and (step % config.eval_every == 0 or step == config.steps):
                last_score = validate_at(step)
                stale = loop.best.evals_without_improvement
                loop.stopped_early = config.patience is not None and stale >= config.patience
            bar.set_postfix(_postfix(record, last_score), refresh=False)
            bar.update(1)
            last = step == config.steps or loop.stopped_early
            if save is not None and (step % config.checkpoint_every == 0 or last):
                save()
            if loop.stopped_early:
                logger.info(
                    "subspace fit stops early at step %d: %d validations without improving on step %d's",
                    step, config.patience, loop.best.step,
                )  # fmt: skip
                break
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()


def _postfix(record: dict[str, Any], score: float | None) -> dict[str, str]:
    """The progress bar's postfix: the step's loss and task, and the last validation score."""
    postfix = {"loss": f"{record['loss']:.4f}", "task": record["task"]}
    if score is not None:
        postfix["val"] = f"{score:.4f}"
    return postfix


def _choose_members(rng: np.random.Generator, members: int, per_step: int | None) -> list[int]:
    """Indices of the members whose task loss runs this step (all when ``per_step`` is None or >= M)."""
    if per_step is None or per_step >= members:
        return list(range(members))
    return sorted(int(i) for i in rng.choice(members, size=per_step, replace=False))


@torch.no_grad()
def _reconstruction(proj: _Projections, codes: dict[str, dict[str, Tensor]]) -> dict[str, dict[str, float]]:
    errors = {}
    for name, by_task in proj.deltas.items():
        tasks = list(by_task)
        values = proj.reconstruction_error(name, tasks, torch.stack([codes[name][t] for t in tasks]))
        errors[name] = dict(zip(tasks, values.tolist(), strict=True))
    return errors


def _descent_directions(
    member: SubspaceMember,
    tasks: dict[str, TaskBatches],
    task_names: list[str],
    batches: int,
    per_batch: bool,
    scale: str = "unit",
) -> tuple[Tensor, list[str], Tensor]:
    """Minus the task-loss gradient at θ0 (the first step training takes), each scaled to unit norm
    (``scale="loss"``: to a unit first-order loss change): one row per source task averaged over its first
    ``batches`` batches, or (``per_batch``) one row per batch, T · batches rows that also carry how the
    direction varies within a task. Returns the rows, their names, (``scale="output"``) each unit row's
    RMS output change on its last batch (ones otherwise) and the batches drawn (probe inputs)."""
    rows, names, sensitivity, drawn = [], [], [], []
    for name in task_names:
        stream = tasks[name].stream()
        theta = member.theta0.detach().clone().requires_grad_(True)
        for b in range(batches):
            batch = next(stream)
            drawn.append(batch)
            (member.loss(theta, batch) / (1 if per_batch else batches)).backward()
            if per_batch or b == batches - 1:
                grad = -theta.grad.detach().float()
                norm = grad.norm().clamp_min(1e-30)
                rows.append(grad / norm if scale != "loss" else grad / norm**2)
                sensitivity.append(
                    float(output_change(member, rows[-1], batch).pow(2).mean().sqrt())
                    if scale == "output"
                    else 1.0
                )
                names.append(f"{name}#{b}" if per_batch else name)
                theta.grad = None
    return torch.stack(rows), names, torch.tensor(sensitivity, dtype=torch.float64), drawn


def _matched_output_scale(sensitivity: dict[str, Tensor]) -> dict[str, Tensor]:
    """Per DET, the factor that gives every descent direction the same output change in every DET: the
    geometric mean over DETs of a unit step's output change, over this DET's."""
    stacked = torch.stack(list(sensitivity.values())).clamp_min(1e-30)  # (members, rows)
    target = stacked.log().mean(0).exp()
    return {name: (target / s.clamp_min(1e-30)).float() for name, s in sensitivity.items()}


@dataclass
class _Projections:
    """The joint fit's working set, per member: its up / down projections, its source deltas (on its
    device) and their encoder features (the encoders' fixed first layer, computed once)."""

    ups: dict[str, UpProjection]
    downs: dict[str, DownProjection]
    deltas: dict[str, dict[str, Tensor]]
    features: dict[str, dict[str, Tensor]]
    # members whose up-projection the fit does not train: their reconstruction from Gram statistics
    frozen: dict[str, FrozenReconstruction] = field(default_factory=dict)

    def reconstruction_error(self, name: str, tasks: list[str], z: Tensor) -> Tensor:
        """Relative reconstruction errors (one per task) of member ``name``'s codes ``z`` for ``tasks``."""
        if name in self.frozen:
            return self.frozen[name].error(z, tasks)
        up = self.ups[name]
        target = torch.stack([self.deltas[name][t] for t in tasks])
        return relative_reconstruction_error(target, up.delta(z.to(up.out_device)))


def _build_projections(
    members: Sequence[SubspaceMember],
    store: SolutionStore,
    task_names: list[str],
    config: FitConfig,
    tasks: dict[str, TaskBatches] | None = None,
) -> tuple[_Projections, dict[str, Any]]:
    """Per member: up / down projections scaled to its deltas (set in closed form for
    ``init="closed_form"``), the deltas on its device, the cached (fixed) encoder features of each delta;
    and the metadata / memory report."""
    deltas = {m.name: {t: store.delta(m.name, t).to(m.theta0.device) for t in task_names} for m in members}
    stacked = {name: torch.stack([by_task[t] for t in task_names]) for name, by_task in deltas.items()}
    for name, x in stacked.items():
        if not bool(x.abs().sum() > 0):
            raise ValueError(f"member {name!r}: every source delta is zero; store trained solutions")
    codes = shared_codes(stacked, task_names, config.dim) if config.init == "closed_form" else None
    target_codes, bases, alignment = None, {}, None
    if codes is not None:
        target_codes = torch.zeros(len(task_names), config.dim)
        target_codes[:, : codes.rank] = codes.codes
        bases = {name: closed_form_basis(x, codes) for name, x in stacked.items()}
        if config.gradient_directions and tasks is not None and config.dim > codes.rank:
            descent, sensitivity, names, probe = {}, {}, [], []
            pool = config.gradient_align_pool  # > 1 only with gradient_align (validate)
            for m in members:
                with seeded(config.seed):  # every DET's gradients on the same batches
                    descent[m.name], names, sensitivity[m.name], probe = _descent_directions(
                        m,
                        tasks,
                        task_names,
                        config.gradient_batches * pool,
                        config.gradient_per_batch,
                        config.gradient_scale,
                    )
            if config.gradient_scale == "output":
                factors = _matched_output_scale(sensitivity)
                descent = {
                    name: rows * factors[name][:, None].to(rows.device) for name, rows in descent.items()
                }
            wanted = config.dim - codes.rank
            extra = complement_directions(bases, descent, names, wanted * pool)
            if config.gradient_align and len(members) > 1:
                if config.gradient_align_space == "embedding":
                    probe = [embedding_batch(batch) for batch in probe]
                n = min(wanted, next(iter(extra.values())).shape[1])
                changes = {m.name: output_changes(m, extra[m.name], probe) for m in members}
                maps = alignment_maps(changes, columns=n)
                before = misalignment({name: f[:, :n] for name, f in changes.items()})
                alignment = {"before": before, "after": misalignment(changes, maps)}
                logger.info(
                    "descent directions aligned across DETs: misalignment %(before).3f -> %(after).3f",
                    alignment,
                )
                extra = {name: columns @ maps[name].to(columns) for name, columns in extra.items()}
            else:  # nothing to align with: the first `wanted` candidates of the pool
                extra = {name: columns[:, :wanted] for name, columns in extra.items()}
            bases = {name: torch.cat([basis, extra[name]], dim=1) for name, basis in bases.items()}
    ups: dict[str, UpProjection] = {}
    downs: dict[str, DownProjection] = {}
    features: dict[str, dict[str, Tensor]] = {}
    member_meta: dict[str, Any] = {}
    for i, member in enumerate(members):
        device, size = member.theta0.device, member.theta0.numel()
        ref = rms_norm(stacked[member.name])
        up_kind, down_kind = resolve_kinds(
            config.up, config.down, size, config.dim, config.max_dense_elements
        )
        seed = config.seed * 1000 + 2 * i
        scale = ref / size**0.5
        if codes is None:
            up = make_up(
                up_kind, member.theta0, config.dim, scale=scale, seed=seed, width=config.fastfood_width
            )
        else:
            basis = bases[member.name]
            extra = None
            if config.dim > basis.shape[1]:
                extra = make_up(
                    up_kind,
                    size,
                    config.dim - basis.shape[1],
                    scale=scale,
                    seed=seed,
                    width=config.fastfood_width,
                )
            train_basis = (
                size * config.dim <= config.max_dense_elements
                if config.train_basis == "auto"
                else bool(config.train_basis)
            )
            up = BasisUp(
                member.theta0, config.dim, scale=scale, basis=basis, extra=extra, train_basis=train_basis
            )
        ups[member.name] = up.to(device)
        down = make_down(
            down_kind,
            size,
            config.dim,
            input_scale=ref,
            seed=seed + 1,
            hidden=config.encoder_hidden or max(config.dim, len(task_names)),
            sketch_dim=config.sketch_dim,
            train_first_layer=config.train_encoder_first_layer,
        ).to(device)
        downs[member.name] = down
        with torch.no_grad():
            features[member.name] = {t: down.features(d) for t, d in deltas[member.name].items()}
            if target_codes is not None:
                x = torch.stack([features[member.name][t] for t in task_names])
                down.head.fit_readout(x, target_codes.to(x.device))
        member_meta[member.name] = {
            "num_parameters": size,
            "up": up.kind if codes is None else f"basis+{up_kind}" if up.extra is not None else "basis",
            "down": down_kind,
            "delta_rms_norm": ref,
            "memory_bytes": {"up": up.memory_bytes(), "down": down.memory_bytes()},
            "dense_equivalent_bytes": 4 * size * config.dim,
        }
        logger.info(
            "subspace member %s: D=%d up=%s (%.1f MB) down=%s (%.1f MB)",
            member.name, size, member_meta[member.name]["up"], member_meta[member.name]["memory_bytes"]["up"] / 2**20,
            down_kind, member_meta[member.name]["memory_bytes"]["down"] / 2**20,
        )  # fmt: skip
    if codes is not None:
        member_meta["_closed_form"] = {
            "basis_dim": codes.rank,
            "gradient_dim": next(iter(bases.values())).shape[1] - codes.rank,
            "alignment": alignment,
            "gram_eigenvalues": [float(v) for v in codes.eigenvalues],
        }
    frozen = {name: FrozenReconstruction(up, deltas[name]) for name, up in ups.items() if is_frozen(up)}
    return _Projections(ups, downs, deltas, features, frozen), member_meta


def _agreement_draw(
    rng: np.random.Generator,
    members: Sequence[SubspaceMember],
    proj: _Projections,
    chosen: list[int],
    config: FitConfig,
) -> tuple[int, int, Tensor] | None:
    """The agreement term's (teacher, student, code) for this step: two of the step's DETs in random order,
    the student one whose decoder the fit trains; None when the term is off or no such pair exists."""
    if config.agreement_weight == 0:
        return None
    order = [chosen[int(i)] for i in rng.permutation(len(chosen))]
    code = torch.as_tensor(rng.normal(0.0, config.agreement_scale, config.dim), dtype=torch.float32)
    students = [i for i in order if members[i].name not in proj.frozen]
    if len(order) < 2 or not students:
        return None
    student = students[0]
    teacher = next(i for i in order if i != student)
    return teacher, student, code


def _agreement(
    teacher: SubspaceMember,
    student: SubspaceMember,
    proj: _Projections,
    code: Tensor,
    batch: Any,
    space: str,
) -> Tensor:
    """How far the student's output change at ``code`` (from its θ0) is from the teacher's (detached), over
    the batch and relative to the teacher's: Σ‖δ_s − δ_t‖² / Σ‖δ_t‖². Changes, not outputs: DETs need not
    share θ0's outputs, and a code's meaning is what it changes."""
    if space == "embedding":
        batch = embedding_batch(batch)
    with torch.no_grad():
        target = teacher.outputs(proj.ups[teacher.name](code.to(teacher.theta0.device)), batch).float()
        target = target - teacher.outputs(teacher.theta0, batch).float()
        anchor = student.outputs(student.theta0, batch).float()
    moved = student.differentiable_outputs(proj.ups[student.name](code.to(student.theta0.device)), batch)
    change = moved.float() - anchor.to(moved.device)
    target = target.to(change.device)
    return (change - target).pow(2).sum() / target.pow(2).sum().clamp_min(1e-12)


def _step(
    members: Sequence[SubspaceMember],
    proj: _Projections,
    task: str,
    stream: Any,
    weights: np.ndarray,
    chosen: list[int],
    config: FitConfig,
    code_device: torch.device,
    agreement: tuple[int, int, Tensor] | None = None,
) -> dict[str, Any]:
    """One stage-1 step: accumulates gradients, returns the step record (no optimiser step)."""
    ups, downs, deltas, features = proj.ups, proj.downs, proj.deltas, proj.features
    names = [m.name for m in members]
    codes = [downs[n].head(features[n][task]).to(code_device) for n in names]
    stacked = torch.stack(codes)  # (M, d)
    # reconstruction-only fits have no batch to follow: every source task is reconstructed every step
    all_tasks = config.recon_all_tasks or config.task_weight == 0
    recon_tasks = list(deltas[names[0]]) if all_tasks else [task]
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
        for i in chosen:
            member = members[i]
            theta = ups[member.name](leaf[i].to(member.theta0.device))
            ce = member.loss(theta, batch)
            (config.task_weight * ce).backward()
            record["ce"][member.name] = float(ce.detach())
            total += config.task_weight * record["ce"][member.name]
        if leaf.grad is not None:
            surrogate = surrogate + (mixed * leaf.grad).sum()
        if agreement is not None:
            teacher, student, code = agreement
            term = _agreement(members[teacher], members[student], proj, code, batch, config.agreement_space)
            (config.agreement_weight * term).backward()
            record["agree"] = {members[student].name: float(term.detach())}
            total += config.agreement_weight * float(term.detach())
    for member in members:
        z_all = downs[member.name].head(torch.stack([features[member.name][t] for t in recon_tasks]))
        rec = proj.reconstruction_error(member.name, recon_tasks, z_all).mean()
        record["recon"][member.name] = float(rec.detach())
        total += config.recon_weight * record["recon"][member.name]
        surrogate = surrogate + config.recon_weight * rec.to(code_device)
    surrogate.backward()
    record["loss"] = total
    return record


@dataclass
class _FitState:
    """What the fit keeps of its best checkpoint: the up-projections' weights and the source codes."""

    ups: dict[str, dict[str, Tensor]]
    codes: dict[str, dict[str, Tensor]]


def _bundle(
    loop: _Loop,
    ups: dict[str, UpProjection],
    config: FitConfig,
    task_names: list[str],
    member_meta: dict[str, Any],
    start: float,
    last: _FitState | None = None,
) -> SubspaceBundle:
    """A bundle of the best state, or of ``last`` when given (copies, so later training does not change
    it)."""
    best = loop.best
    # fit() always keeps a best state (the last one when nothing is validated)
    kept = last if last is not None else best.state
    snapshot = {}
    for name, up in ups.items():
        if is_frozen(up):  # the fit never changed it, and nothing trains it after: the bundle holds it as is
            snapshot[name] = up
            continue
        copy = UpProjection.from_config(up.config())
        copy.load_state_dict(kept.ups[name])
        snapshot[name] = copy.to(up.out_device)
    metadata = {
        "stage": "fit",
        "fit_config": config.to_dict(),
        "source_tasks": task_names,
        "members": {k: v for k, v in member_meta.items() if not k.startswith("_")},
        "closed_form": member_meta.get("_closed_form"),
        "best_step": best.step,
        "best_score": None if math.isnan(best.value) else best.value,
        "kept": config.keep,
        "kept_step": loop.step if last is not None else best.step,
        "steps_run": loop.step,
        "stopped_early": loop.stopped_early,
        "validation": loop.validation,
        "wall_seconds": time.perf_counter() - start,
    }
    return SubspaceBundle(snapshot, kept.codes, metadata)
