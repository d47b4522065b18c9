"""Read a suite task from the fetched packages, caching the prepared examples as parquet.

The cache file holds every cleaned, de-duplicated, label-encoded example (before splitting), keyed
by the task, the package version and :data:`PARSER_VERSION`, so a changed parser never reads a stale
file. Splitting is cheap and happens on every load.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pandas as pd

from deltaspace.assets import bigbench
from deltaspace.assets.cache import is_complete, missing_asset, packages_root, tasks_root
from deltaspace.assets.manifest import PackageSpec, get_package
from deltaspace.io import atomic_write, write_json_atomic
from deltaspace.tasks.examples import PreparedExamples, prepare
from deltaspace.tasks.registry import SUITE, SuiteTask

PARSER_VERSION = 2  # 2: suite v2 (group column; e-mail and news cleaning)


def source_path(task: SuiteTask, root: Path) -> Path:
    """The raw file (or directory) of ``task``; raises ``MissingAssetError`` if its package is absent."""
    spec = get_package(task.package)
    package_dir = packages_root(root) / spec.key
    if not is_complete(package_dir):
        raise missing_asset(f"task {task.name!r} (package {spec.requirement})", root, _fetch_hint(spec))
    return package_dir / task.member


def _fetch_hint(spec: PackageSpec) -> str:
    if spec.name == bigbench.PACKAGE:
        # PyPI no longer serves bigbench==1.0.0: the old sdist or a checkout is the only way in.
        return (
            f"deltaspace fetch --with bigbench --packages-dir DIR` (DIR holding the old {spec.filename}) or "
            "`deltaspace fetch --bigbench-dir CHECKOUT"
        )
    if spec.extra:
        return f"deltaspace fetch --with {spec.extra}"
    return "deltaspace fetch"


def _cache_file(task: SuiteTask, root: Path) -> Path:
    spec = get_package(task.package)
    return tasks_root(root) / f"{task.name}.{spec.version}.v{PARSER_VERSION}.parquet"


def _write_atomic(frame: pd.DataFrame, meta: dict, path: Path) -> None:
    # The parquet file is written last: its presence means both files are complete.
    write_json_atomic(path.with_suffix(".json"), meta)
    atomic_write(path, lambda temp: frame.to_parquet(temp, index=False))


def suite_examples(name: str, root: Path) -> PreparedExamples:
    """All prepared examples of suite task ``name`` (read from the parquet cache when present)."""
    task = SUITE[name]
    path = source_path(task, root)
    cached = _cache_file(task, root)
    if cached.is_file() and cached.with_suffix(".json").is_file():
        meta = json.loads(cached.with_suffix(".json").read_text(encoding="utf-8"))
        return PreparedExamples(pd.read_parquet(cached), meta["label_names"], meta["stats"])
    prepared = prepare(task.read(path), list(task.label_names), name=name)
    # A read-only cache only costs re-parsing next time.
    with contextlib.suppress(OSError):
        _write_atomic(prepared.frame, {"label_names": prepared.label_names, "stats": prepared.stats}, cached)
    return prepared
