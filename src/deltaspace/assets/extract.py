"""Copy selected members of a wheel (zip) or sdist (tar.gz) into a directory.

Only the named members are written, so a 1.9 GB sdist costs one streaming pass and a few MB of disk.
Members are written by hand rather than with ``extractall`` so that nothing but regular files under
``target`` can be created (no links, no absolute or ``..`` paths).
"""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from collections.abc import Callable, Iterable
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import IO

# Provenance files taken from every package when present (licence and metadata), never required.
PROVENANCE_PATTERNS = ("*.dist-info/METADATA", "*.dist-info/LICENSE*", "*.dist-info/licenses/*", "*/PKG-INFO")


def _safe_relative(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError(f"refusing unsafe archive member path {name!r}")
    return path


def _matches(name: str, patterns: Iterable[str]) -> list[str]:
    return [pattern for pattern in patterns if name == pattern or fnmatchcase(name, pattern)]


def _iter_archive(archive: Path) -> Iterable[tuple[str, Callable[[], IO[bytes]]]]:
    """Yield (member name, opener) for every regular file, streaming through the archive once."""
    name = archive.name
    if name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as handle:
            for info in handle.infolist():
                if not info.is_dir():
                    yield info.filename, lambda info=info: handle.open(info)
    elif name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(archive, "r|*") as handle:
            for member in handle:
                if member.isfile():
                    yield member.name, lambda member=member: handle.extractfile(member)
    else:
        raise ValueError(f"unsupported archive type {archive.name!r}; expected .whl, .zip or .tar.gz")


def extract_members(
    archive: Path,
    members: Iterable[str],
    target: Path,
    *,
    optional: Iterable[str] = PROVENANCE_PATTERNS,
    on_file: Callable[[str], None] | None = None,
) -> list[str]:
    """Write the archive files matching ``members`` (exact paths or fnmatch patterns) under ``target``.

    Every pattern in ``members`` must match at least one file, else ``ValueError``; ``optional``
    patterns may match nothing. Returns the member names written, in archive order.
    """
    members = tuple(members)
    optional = tuple(optional)
    seen: set[str] = set()
    written: list[str] = []
    for name, opener in _iter_archive(Path(archive)):
        required = _matches(name, members)
        if not required and not _matches(name, optional):
            continue
        seen.update(required)
        destination = Path(target, *_safe_relative(name).parts)
        destination.parent.mkdir(parents=True, exist_ok=True)
        with opener() as source, open(destination, "wb") as sink:
            shutil.copyfileobj(source, sink, 1 << 20)
        written.append(name)
        if on_file:
            on_file(name)
    missing = [pattern for pattern in members if pattern not in seen]
    if missing:
        raise ValueError(f"{Path(archive).name} has no member matching {', '.join(missing)}")
    return written
