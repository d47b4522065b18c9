"""The joint fit's resumable checkpoint: one file, ``<output_dir>/fit_checkpoint.pt``, written atomically.

:func:`~deltaspace.subspace.fit.fit` writes it every ``checkpoint_every`` steps and after the last one, and
keeps it beside the bundle: called again with more ``steps`` (under a constant learning rate, the one
schedule that does not depend on the total), the fit continues from its last step and ends where an
uninterrupted fit of the longer length would (a finished joint fit can be extended without redoing it;
called with the same steps, it returns the same bundle at once). It holds (``fit._Loop.state_dict``) the step and whether patience stopped the fit there; every
parameter of the up- and down-projections (their buffers are fixed random maps and bases, rebuilt as they
were from the seed); the optimiser's and the lr schedule's state; numpy's generator state and torch's CPU
and CUDA RNG states; each task's batch stream (epoch, batches taken, the CPU RNG state at the epoch's
start); the best state so far (value, step, the validations since it, the up-projections' parameters, the
source codes); the validation history; the step log's line count and the seconds run so far. Beside that
state it records the fit's *identity*: the :class:`FitConfig` less the fields that do not change what is
computed (:data:`RESUME_FREE`), the source tasks in order, the members (name, size) and the norm of every
source delta. A fit called again with the same arguments resumes from the checkpoint and ends exactly where
an uninterrupted one would; one whose identity differs is refused with :class:`RunMismatchError` rather than
resumed (hours of a long fit are not thrown away silently, and a changed fit is not silently continued).

The file is loaded with ``torch.load(..., weights_only=True)``: it holds tensors and plain values only (RNG
states as tensors and ints), never pickled objects.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from deltaspace.errors import BrokenFileError, RunMismatchError
from deltaspace.io import atomic_write, write_text_atomic

CHECKPOINT_FILE = "fit_checkpoint.pt"
FORMAT = "deltaspace.fit_checkpoint/1"
# FitConfig fields that change how a fit reports or how often it saves, not what it computes.
RESUME_FREE = frozenset(
    {"progress", "log_every", "checkpoint_every", "keep"}
)  # keep: which state is returned


AGREEMENT_FIELDS = frozenset({"agreement_weight", "agreement_scale", "agreement_space"})


def fit_identity(
    config: Mapping[str, Any], task_names: Sequence[str], deltas: Mapping[str, Mapping[str, Tensor]]
) -> dict[str, Any]:
    """What must be equal for a checkpoint to be resumed (``deltas``: member -> task -> Δ, in order).
    Under a constant schedule the total ``steps`` is free too: a longer fit continues a shorter one's state."""
    free = RESUME_FREE | ({"steps"} if config.get("schedule") == "constant" else set())
    # the agreement term off: its settings change nothing (checkpoints written before it had none)
    if not config.get("agreement_weight"):
        free |= AGREEMENT_FIELDS
    return {
        "format": FORMAT,
        "config": {key: value for key, value in config.items() if key not in free},
        "tasks": list(task_names),
        "members": [
            {
                "name": name,
                "size": int(next(iter(by_task.values())).numel()),
                "delta_norms": [float(by_task[t].float().norm()) for t in task_names],
            }
            for name, by_task in deltas.items()
        ],
    }


def differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Names of what differs between two identities (empty: the checkpoint may be resumed)."""
    if saved.get("format") != current["format"]:
        return [f"format ({saved.get('format')!r})"]
    found = []
    old, new = saved["config"], current["config"]
    # a constant-schedule fit leaves ``steps`` out (checkpoints written before that recorded it)
    keys = {*old, *new} - (set() if "steps" in new else {"steps"})
    found += [f"config.{key}" for key in sorted(keys) if old.get(key, ...) != new.get(key, ...)]
    if saved["tasks"] != current["tasks"]:
        found.append(f"source tasks (saved: {', '.join(saved['tasks'])})")
    old_members = [(m["name"], m["size"]) for m in saved["members"]]
    if old_members != [(m["name"], m["size"]) for m in current["members"]]:
        found.append(f"members (saved: {', '.join(f'{n} ({s})' for n, s in old_members)})")
    elif saved["tasks"] == current["tasks"]:
        # norms are recomputed from the store: equal up to rounding on another device
        for old_m, new_m in zip(saved["members"], current["members"], strict=True):
            pairs = zip(old_m["delta_norms"], new_m["delta_norms"], strict=True)
            if not all(math.isclose(a, b, rel_tol=1e-5) for a, b in pairs):
                found.append(f"source solutions of {new_m['name']}")
    return found


def save_fit_checkpoint(path: Path, identity: Mapping[str, Any], state: Mapping[str, Any]) -> None:
    """Write ``state`` with ``identity`` to ``path`` atomically (a kill mid-write keeps the previous one)."""
    payload = {"identity": dict(identity), **state}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_fit_checkpoint(path: Path, identity: Mapping[str, Any]) -> dict[str, Any] | None:
    """The state saved at ``path`` (``None`` when there is no file); refuses one of another fit."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        saved_identity = payload["identity"]
    except Exception as error:
        raise BrokenFileError(
            f"fit checkpoint {path} cannot be loaded ({type(error).__name__}: {error}); delete it to start "
            "the fit afresh"
        ) from error
    found = differences(saved_identity, identity)
    if found:
        raise RunMismatchError(
            f"{path} is the checkpoint of another fit ({'; '.join(found)} differ); delete it to start this "
            "fit afresh, or give another output_dir"
        )
    return payload


def torch_rng_state() -> dict[str, Any]:
    """torch's global CPU RNG state and that of every visible CUDA device (dropout in the members)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"cpu": torch.get_rng_state(), "cuda": list(cuda)}


def set_torch_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    cuda = state["cuda"]
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)


def set_numpy_rng_state(rng: np.random.Generator, state: Mapping[str, Any]) -> None:
    """``bit_generator.state`` is a dict of ints and strings: saved as it is."""
    rng.bit_generator.state = dict(state)


def count_lines(path: str | os.PathLike | None) -> int:
    """Complete lines (newline-terminated) in ``path``; 0 when there is no path or file."""
    if path is None or not os.path.isfile(path):
        return 0
    with open(path, "rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


def truncate_lines(path: str | os.PathLike | None, count: int) -> None:
    """Keep the first ``count`` lines of ``path`` (the step log as it was at the checkpoint a fit resumes
    from: the steps a killed fit logged after it are logged again)."""
    if path is None or not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as handle:
        *complete, partial = handle.read().split("\n")  # `partial`: "" or a line cut by a kill
    if len(complete) > count or partial:
        write_text_atomic(path, "".join(line + "\n" for line in complete[:count]))
