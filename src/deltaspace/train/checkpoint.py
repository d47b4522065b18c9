"""Resumable training checkpoints: ``<run>/checkpoints/step-<N>/``, written atomically.

A checkpoint holds Accelerate's state (optimizer, scheduler, RNG states, its step counter; the model's full
state dict is left out: the frozen base is rebuilt from the config), ``tensors.safetensors`` (the current and
the best solution, the torch RNG state and the data order's generator state at the start of the epoch) and
``train_state.json`` (step, position in the epoch, best-so-far, running loss), written last.

It is written into ``checkpoints/.step-<N>.tmp``, every file fsynced, then renamed to ``step-<N>`` (a
rename is atomic), so a kill mid-write leaves only a temporary folder, which the next run deletes; a
``step-<N>`` folder without ``train_state.json`` is never loaded. Older checkpoints are removed once a
newer one is in place.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from deltaspace.errors import BrokenFileError
from deltaspace.io import read_json, write_json_atomic, write_safetensors_atomic
from deltaspace.train.faults import pause_point

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "train_state.json"
TENSORS_FILE = "tensors.safetensors"
_STEP_DIR = re.compile(r"^step-(\d+)$")
# Files Accelerate's save_state writes for a model-less state on CPU / GPU.
_ACCELERATE_FILES = (
    r"^optimizer(_\d+)?\.bin$",
    r"^scheduler(_\d+)?\.bin$",
    r"^random_states_\d+\.pkl$",
    r"^scaler\.pt$",
    r"^sampler(_\d+)?\.bin$",
    r"^dl_state_dict(_\d+)?\.bin$",
)


def checkpoint_tree(tmp_pattern: re.Pattern[str]) -> dict[str, Any]:
    """The run-directory spec of ``checkpoints/`` (see :mod:`deltaspace.train.rundir`)."""
    files = [re.compile(p) for p in _ACCELERATE_FILES]
    files += [
        re.compile(f"^{re.escape(STATE_FILE)}$"),
        re.compile(f"^{re.escape(TENSORS_FILE)}$"),
        tmp_pattern,
    ]
    one = {"files": files, "dirs": {}}
    return {"files": [tmp_pattern], "dirs": {_STEP_DIR: one, tmp_pattern: one}}


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step, or ``None``."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return None
    complete = [
        (int(match.group(1)), path)
        for path in root.iterdir()
        if (match := _STEP_DIR.match(path.name)) and (path / STATE_FILE).is_file()
    ]
    return max(complete)[1] if complete else None


def save_checkpoint(
    accelerator: Any, run_dir: Path, step: int, state: dict[str, Any], tensors: dict[str, torch.Tensor]
) -> Path:
    """Write the checkpoint of ``step`` (every process must call this; the main one writes the files)."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    final = root / f"step-{step:08d}"
    tmp = root / f".step-{step:08d}.tmp"
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()  # every process's RNG file is in place before the folder is published
    if accelerator.is_main_process:
        write_safetensors_atomic(tmp / TENSORS_FILE, tensors)
        pause_point("checkpoint-write", step, run_dir)
        for path in tmp.iterdir():
            _fsync(path)
        write_json_atomic(tmp / STATE_FILE, {**state, "step": step})  # last: marks the folder complete
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(root)
        for path in root.iterdir():
            match = _STEP_DIR.match(path.name)
            if match and int(match.group(1)) < step:
                shutil.rmtree(path)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Any, path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore Accelerate's state from ``path``; return ``(train_state, tensors)``."""
    from safetensors.torch import load_file

    try:
        state = read_json(path / STATE_FILE)
        tensors = load_file(path / TENSORS_FILE)
        accelerator.load_state(str(path))
    except Exception as error:
        raise BrokenFileError(
            f"checkpoint {path} cannot be loaded ({type(error).__name__}: {error}); delete that folder to "
            "resume from an earlier checkpoint or from the start"
        ) from error
    return state, tensors


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
