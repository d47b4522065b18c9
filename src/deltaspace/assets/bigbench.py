"""BIG-bench's task files from a local checkout, for when the pinned sdist cannot be downloaded.

PyPI no longer serves bigbench 1.0.0 (its file URL answers HTTP 403), so besides the sdist given with
``--packages-dir``, the task files may come from a directory: a BIG-bench checkout (or unpacked sdist),
its ``bigbench`` or ``benchmark_tasks`` directory, or any directory of task folders in the same layout
(``multiemo/hotels_sentence_en/task.json``). Exactly the manifest's members are copied, at the paths the
sdist would give, so tasks read them unchanged; each file's sha256 goes into the marker.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from deltaspace.assets.atomic import atomic_directory
from deltaspace.assets.cache import packages_root
from deltaspace.assets.manifest import PackageSpec, is_pattern
from deltaspace.assets.markers import PRESENT, package_marker, package_state
from deltaspace.errors import MissingFileError
from deltaspace.io import sha256_file

PACKAGE = "bigbench"
ENV = "DELTASPACE_BIGBENCH_DIR"
_TASKS_PREFIX = "bigbench/benchmark_tasks/"


class CheckoutMissingFiles(MissingFileError):
    """The checkout lacks some task files; ``missing`` lists them relative to its task directory."""

    def __init__(self, base: Path, missing: list[str]) -> None:
        self.base = base
        self.missing = missing
        super().__init__(f"{base} lacks {len(missing)} BIG-bench task file(s): {', '.join(missing)}")


@dataclass(frozen=True)
class CheckoutImport:
    target: Path
    action: str  # "present" or "copied"
    seconds: float
    files: int


def env_checkout() -> Path | None:
    value = os.environ.get(ENV, "").strip()
    return Path(value).expanduser() if value else None


def tasks_base(checkout: Path) -> Path:
    """The directory of task folders inside ``checkout`` (see the module docstring for the layouts)."""
    checkout = Path(checkout).expanduser()
    if not checkout.is_dir():
        raise MissingFileError(f"BIG-bench directory {checkout} does not exist (or is not a directory)")
    for candidate in (checkout / "bigbench" / "benchmark_tasks", checkout / "benchmark_tasks"):
        if candidate.is_dir():
            return candidate
    return checkout


def task_relative(member: str) -> str:
    """``bigbench-1.0.0/bigbench/benchmark_tasks/x/task.json`` -> ``x/task.json``."""
    _, found, relative = member.partition(_TASKS_PREFIX)
    if not found or not relative:
        raise ValueError(f"bigbench member {member!r} is not under {_TASKS_PREFIX}")
    return relative


def _locate(spec: PackageSpec, base: Path) -> tuple[dict[str, Path], list[str]]:
    """member -> file in ``base`` for every member found, and the relative paths not found."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for member in spec.members:
        relative = task_relative(member)
        prefix = member[: len(member) - len(relative)]
        if is_pattern(relative):
            matches = sorted(p for p in base.glob(relative) if p.is_file())
            found.update({prefix + p.relative_to(base).as_posix(): p for p in matches})
            if not matches:
                missing.append(relative)
        elif (base / relative).is_file():
            found[member] = base / relative
        else:
            missing.append(relative)
    return found, missing


def import_checkout(spec: PackageSpec, root: Path, checkout: Path, *, force: bool = False) -> CheckoutImport:
    """Copy ``spec``'s members from ``checkout`` into its package directory, all or nothing.

    Raises :class:`CheckoutMissingFiles` (nothing written) when any member is absent.
    """
    target = packages_root(root) / spec.key
    start = time.perf_counter()
    if package_state(spec, target) == PRESENT and not force:
        return CheckoutImport(target, "present", 0.0, 0)
    base = tasks_base(checkout)
    found, missing = _locate(spec, base)
    if missing:
        raise CheckoutMissingFiles(base, missing)
    digests: dict[str, str] = {}
    marker = package_marker(spec, origin=f"local checkout {base.resolve()}")
    # Replace whatever is there: reaching this point means it is missing, outdated or forced.
    with atomic_directory(target, marker, replace=True) as temp:
        for member, source in found.items():
            destination = temp / member
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination)
            digests[member] = sha256_file(destination)
        marker["files"] = dict(sorted(digests.items()))  # written with the marker, on leaving the block
    return CheckoutImport(target, "copied", time.perf_counter() - start, len(found))
