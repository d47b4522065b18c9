"""Get a verified file for a package: its own, or a mirror's when its own cannot be had.

Candidates are the package and then its mirrors, in manifest order. Local files (``--packages-dir``)
are tried first for every candidate, so an offline machine holding only a mirror's file never waits on
the network; then each candidate is downloaded in turn. A failed download or a file with the wrong
sha256 moves on to the next candidate; when none is left, :class:`Unavailable` carries every answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from deltaspace.assets.download import (
    ChecksumError,
    DownloadError,
    ProgressFn,
    download_package,
    find_local,
    verify_sha256,
)
from deltaspace.assets.manifest import MirrorSpec, PackageSpec


@dataclass(frozen=True)
class Obtained:
    archive: Path
    supplier: PackageSpec  # the package itself or the mirror's package
    mirror: MirrorSpec | None
    origin: str  # the local file, or "download"


class Unavailable(RuntimeError):
    """No candidate file could be had; ``answers`` says why, one entry per attempt."""

    def __init__(self, spec: PackageSpec, answers: list[str]) -> None:
        self.spec = spec
        self.answers = answers
        super().__init__(f"{spec.requirement}: " + "; ".join(answers))


def obtain(
    spec: PackageSpec,
    dest: Path,
    *,
    sources: Iterable[Path] = (),
    progress: ProgressFn | None = None,
) -> Obtained:
    sources = tuple(sources)
    candidates: list[tuple[PackageSpec, MirrorSpec | None]] = [(spec, None)]
    candidates += [(mirror.package, mirror) for mirror in spec.mirrors]
    answers: list[str] = []
    for candidate, mirror in candidates:
        local = find_local(candidate, sources)
        if local is None:
            continue
        try:
            verify_sha256(local, candidate, progress)
        except ChecksumError:
            answers.append(f"{local} has the wrong sha256")
            continue
        return Obtained(local, candidate, mirror, str(local))
    for index, (candidate, mirror) in enumerate(candidates):
        try:
            path = download_package(candidate, dest / str(index), progress=progress)
        except DownloadError as error:
            answers.append(_labelled(candidate, spec, error.answer))
            continue
        except ChecksumError:
            answers.append(_labelled(candidate, spec, "downloaded file has the wrong sha256"))
            continue
        return Obtained(path, candidate, mirror, "download")
    raise Unavailable(spec, answers)


def _labelled(candidate: PackageSpec, primary: PackageSpec, answer: str) -> str:
    return answer if candidate is primary else f"mirror {candidate.requirement}: {answer}"
