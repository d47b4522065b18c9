"""What an unset learning rate and training length mean: the method's preset rate, and a step budget sized by
the data, evaluated :data:`EVALUATIONS` times and early-stopped.

Why a step budget and not a fixed number of epochs: two epochs of a 700-example task are ~45 optimizer steps,
too few for any delta method to move (a user's 1,050-row CSV scored barely above majority with two epochs of
LoRA, 0.71 with six). So a run gets at least :data:`MIN_STEPS` updates, or :data:`EPOCHS` passes where that is
more, and at most :data:`MAX_STEPS` (a large task stops early instead of paying for epochs it does not need);
early stopping on validation (:data:`PATIENCE` evaluations in which neither the metric nor the validation loss
improved) ends a run that has converged, and the best validation checkpoint is the run's result either way.

Every value set explicitly (``lr``, ``epochs``, ``max_steps``, ``eval_every``, ``early_stopping_patience``) is
kept; a run with ``epochs`` or ``max_steps`` set has no early stopping unless asked for. The resolved values go
into the run's ``config.json``, so a rerun of the same command compares like with like.
"""

from __future__ import annotations

import math

from deltaspace.deltas.presets import default_rates
from deltaspace.errors import UserInputError
from deltaspace.train.config import TrainConfig
from deltaspace.train.preflight import HEAD_ONLY

MIN_STEPS = 300
EPOCHS = 3.0
MAX_STEPS = 3000
EVALUATIONS = 10
PATIENCE = 3
# Head only (label prototypes trained, no delta): the tuned comparison chose 1e-2 on 5 of 10 tasks
# (docs/results.md, "Chosen learning rates").
HEAD_ONLY_LR = 1e-2


def budget_steps(updates_per_epoch: int) -> int:
    """Optimizer steps of a run with no length given: ``EPOCHS`` passes within [MIN_STEPS, MAX_STEPS]."""
    return int(min(max(math.ceil(EPOCHS * updates_per_epoch), MIN_STEPS), MAX_STEPS))


def updates_per_epoch(train_examples: int, config: TrainConfig) -> int:
    """Optimizer updates one pass over ``train_examples`` takes (the loader keeps the last, partial batch)."""
    return max(1, math.ceil(math.ceil(train_examples / config.batch_size) / config.grad_accum))


def resolve_rates(config: TrainConfig) -> TrainConfig:
    """``lr`` (and, when neither is given, Coeff's own rate in a combination) from the method's presets."""
    if config.lr is not None:
        return config
    if config.method.strip() == HEAD_ONLY:
        return config.replace(lr=HEAD_ONLY_LR)
    try:
        lr, overrides = default_rates(config.method)
    except ValueError as error:
        raise UserInputError(f"{error} (method {config.method!r})") from None
    return config.replace(lr=lr, lr_overrides=config.lr_overrides or overrides)


def resolve_length(config: TrainConfig, train_examples: int) -> TrainConfig:
    """``max_steps``, ``eval_every`` and ``early_stopping_patience`` of a run whose length was not given."""
    if config.epochs is not None or config.max_steps is not None:
        return config
    steps = budget_steps(updates_per_epoch(train_examples, config))
    return config.replace(
        max_steps=steps,
        eval_every=config.eval_every or max(1, math.ceil(steps / EVALUATIONS)),
        early_stopping_patience=config.early_stopping_patience or PATIENCE,
    )


def resolve_defaults(config: TrainConfig, train_examples: int) -> TrainConfig:
    """``config`` with an unset rate and length filled in for a training split of ``train_examples``."""
    return resolve_length(resolve_rates(config), train_examples)
