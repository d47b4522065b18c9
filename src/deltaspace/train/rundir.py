"""Run directories: what a run writes, when a folder may be cleared, resume, and replace-by-swap.

Rules (nothing the project did not create is ever deleted, nothing finished is lost to a failed command):

* a folder is cleared only if it holds exactly what a run writes (:func:`foreign_entries`, checked
  recursively, and its ``config.json`` must be a train config); otherwise the run is refused;
* a finished run (``result.json``) is never touched without ``overwrite``; with it, the new run is built
  beside the old one in ``.<name>.new`` and swapped in only once it has finished;
* an unfinished run with a checkpoint and the same settings is resumed; with other settings it is refused
  (unless ``overwrite``); an unfinished run without a checkpoint has nothing to lose and is restarted.

:func:`plan_run_dir` only looks; :meth:`RunDirPlan.apply` makes the changes, once everything else has been
validated; :meth:`RunDirPlan.finish` swaps a replacement run into place.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from deltaspace.errors import RunDirectoryError, RunMismatchError
from deltaspace.train.checkpoint import CHECKPOINTS_DIR, checkpoint_tree, latest_checkpoint
from deltaspace.train.result import (
    CONFIG_FILE,
    DELTA_DIR,
    METRICS_FILE,
    PREDICTIONS_FILE,
    RESULT_FILE,
    TB_DIR,
)

ERROR_FILE = "error.txt"
# Settings that do not change what a run learns or how it is scored (also used by sweeps).
BOOKKEEPING_FIELDS = (
    "output_dir",
    "log_every",
    "num_workers",
    "cpu",
    "checkpoint_every",
    "checkpoint_minutes",
    "save_delta",
    "baselines",
)

_TMP = re.compile(r"^\..+\.tmp$")  # deltaspace.io.atomic_write's temporary files
_TB_DIR = re.compile(r"^\d+(\.\d+)?$")  # accelerate's tensorboard tracker: <time.time()>/hparams.yml
# A tree spec: {"files": [regex, ...], "dirs": {regex: spec}}; an entry matching nothing is foreign.
_TB_TREE: dict[str, Any] = {
    "files": [re.compile(r"^events\.out\.tfevents\..+$"), re.compile(r"^hparams\.yml$"), _TMP],
    "dirs": {},
}
_TB_TREE["dirs"][_TB_DIR] = _TB_TREE
RUN_TREE: dict[str, Any] = {
    "files": [
        re.compile(f"^{re.escape(name)}$")
        for name in (CONFIG_FILE, METRICS_FILE, PREDICTIONS_FILE, RESULT_FILE, ERROR_FILE)
    ]
    + [_TMP],
    "dirs": {
        re.compile(f"^{DELTA_DIR}$"): {
            "files": [re.compile(r"^delta_config\.json$"), re.compile(r"^delta_model\.safetensors$"), _TMP],
            "dirs": {},
        },
        re.compile(f"^{TB_DIR}$"): _TB_TREE,
        re.compile(f"^{CHECKPOINTS_DIR}$"): checkpoint_tree(_TMP),
    },
}


def foreign_entries(directory: Path, spec: dict[str, Any] = RUN_TREE) -> list[Path]:
    """Paths under ``directory`` that a run does not write (symlinks always count as foreign)."""
    foreign: list[Path] = []
    for entry in sorted(directory.iterdir()):
        if entry.is_symlink():
            foreign.append(entry)
        elif entry.is_dir():
            child = next((sub for pattern, sub in spec["dirs"].items() if pattern.match(entry.name)), None)
            foreign.extend([entry] if child is None else foreign_entries(entry, child))
        elif not any(pattern.match(entry.name) for pattern in spec["files"]):
            foreign.append(entry)
    return foreign


def saved_config(directory: Path) -> dict[str, Any] | None:
    """The train config a run directory holds, or ``None`` when ``config.json`` is absent or not one."""
    path = directory / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and "task" in data and "method" in data else None


def settings_difference(saved: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    """``"lr=0.001 (saved) vs 0.01"`` for the first learning-relevant field that differs, else ``None``."""
    wanted = json.loads(json.dumps(wanted))  # tuples -> lists, as saved
    for key, value in wanted.items():
        if key in BOOKKEEPING_FIELDS or value is None or key not in saved or saved[key] == value:
            continue
        return f"{key}={saved[key]!r} but this run asks for {key}={value!r}"
    return None


def check_clearable(directory: Path) -> None:
    """Raise unless ``directory`` holds only what a run writes (so it may be deleted)."""
    foreign = foreign_entries(directory)
    if foreign:
        shown = ", ".join(str(path.relative_to(directory)) for path in foreign[:3])
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise RunDirectoryError(
            f"{directory} is not empty and holds files a run does not write ({shown}{more}); "
            "nothing was changed: choose another output directory or move those files"
        )
    if (directory / CONFIG_FILE).exists() and saved_config(directory) is None:
        raise RunDirectoryError(
            f"{directory / CONFIG_FILE} is not a deltaspace train config; nothing was changed: "
            "choose another output directory"
        )


def remove_strays(directory: Path) -> None:
    """Delete temporary files a killed writer left behind (``.*.tmp``, unfinished checkpoint folders)."""
    for path in sorted(directory.rglob("*"), reverse=True):
        if path.is_symlink() or not _TMP.match(path.name):
            continue
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def staging_dir(run_dir: Path) -> Path:
    return run_dir.parent / f".{run_dir.name}.new"


def _retired_dir(run_dir: Path) -> Path:
    return run_dir.parent / f".{run_dir.name}.old"


@dataclasses.dataclass
class RunDirPlan:
    """What :func:`plan_run_dir` decided. ``work_dir`` is where this run writes (``run_dir`` itself, or its
    staging folder when it replaces a finished run); ``action`` is fresh | restart | resume."""

    run_dir: Path
    work_dir: Path
    action: str
    checkpoint: Path | None = None

    @property
    def replaces(self) -> bool:
        return self.work_dir != self.run_dir

    def apply(self) -> None:
        """Make the directory ready (main process only): clear, create, or clean up for a resume."""
        if self.action == "restart" and self.work_dir.exists():
            check_clearable(self.work_dir)  # again: files may have appeared since the plan
            shutil.rmtree(self.work_dir)
        elif self.action == "resume":
            remove_strays(self.work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)

    def finish(self) -> None:
        """Swap a finished replacement run into ``run_dir`` (main process only); the old run goes last."""
        if not self.replaces:
            return
        retired = _retired_dir(self.run_dir)
        if retired.exists():
            check_clearable(retired)
            shutil.rmtree(retired)
        os.replace(self.run_dir, retired)
        os.replace(self.work_dir, self.run_dir)
        shutil.rmtree(retired)


def recover_interrupted_swap(run_dir: Path) -> None:
    """Finish or undo a swap that a kill interrupted between its two renames."""
    retired = _retired_dir(run_dir)
    if not retired.is_dir() or foreign_entries(retired):
        return
    if not run_dir.exists():
        staged = staging_dir(run_dir)
        if (staged / RESULT_FILE).is_file():
            os.replace(staged, run_dir)
        else:
            os.replace(retired, run_dir)
            return
    shutil.rmtree(retired)


def plan_run_dir(run_dir: Path, config: dict[str, Any], *, overwrite: bool = False) -> RunDirPlan:
    """Decide, without changing anything, how a run with ``config`` (resolved) uses ``run_dir``."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirectoryError(f"output directory {run_dir} is a file; choose another output directory")
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return RunDirPlan(run_dir, run_dir, "fresh")
    finished = (run_dir / RESULT_FILE).is_file()
    if finished and not overwrite:
        raise RunDirectoryError(
            f"{run_dir} holds a finished run; pass --overwrite (overwrite=True) to replace it once the new "
            "run has finished, or choose another output directory"
        )
    check_clearable(run_dir)
    if overwrite:
        work_dir = staging_dir(run_dir)
        if work_dir.exists() and any(work_dir.iterdir()):
            check_clearable(work_dir)
            return _unfinished(run_dir, work_dir, config, allow_restart=True)
        return RunDirPlan(run_dir, work_dir, "restart")
    return _unfinished(run_dir, run_dir, config, allow_restart=False)


def _unfinished(run_dir: Path, work_dir: Path, config: dict[str, Any], allow_restart: bool) -> RunDirPlan:
    checkpoint = latest_checkpoint(work_dir)
    if checkpoint is None or (work_dir / RESULT_FILE).is_file():
        return RunDirPlan(run_dir, work_dir, "restart")  # nothing to resume: the partial run was ours
    saved = saved_config(work_dir) or {}
    difference = settings_difference(saved, config)
    if difference is None:
        return RunDirPlan(run_dir, work_dir, "resume", checkpoint)
    if allow_restart:
        return RunDirPlan(run_dir, work_dir, "restart")
    raise RunMismatchError(
        f"{work_dir} holds an unfinished run (checkpoint {checkpoint.name}) trained with {difference}; "
        "rerun with its settings to resume it, pass --overwrite to replace it, or choose another output directory"
    )
