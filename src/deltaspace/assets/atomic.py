"""Publish a directory atomically: build it under a temporary name, write the marker last, rename.

A reader only ever sees either no directory or a complete one. A build that raises removes its
temporary directory; one killed outright leaves a ``.partial-*`` directory that the next build in the
same parent removes (its owner process is gone).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deltaspace.assets.cache import MARKER, is_complete
from deltaspace.io import write_json_atomic

_PARTIAL = ".partial-"


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(parent: Path) -> list[Path]:
    """Delete ``.partial-*`` directories left by processes that no longer run; return them."""
    removed = []
    if not parent.is_dir():
        return removed
    for entry in parent.iterdir():
        if not entry.name.startswith(_PARTIAL):
            continue
        try:
            pid = int(entry.name[len(_PARTIAL) :].split("-")[0])
        except ValueError:
            pid = -1
        if pid == os.getpid() or (pid > 0 and _pid_alive(pid)):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


@contextmanager
def atomic_directory(target: Path, marker: dict, *, replace: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory next to ``target``; on normal exit publish it as ``target``.

    ``marker`` is written as :data:`~deltaspace.assets.cache.MARKER` just before the rename. With
    ``replace`` an existing ``target`` is swapped out (and deleted); without it an existing complete
    ``target`` wins and the new build is discarded, so concurrent builders never clobber each other.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(target.parent)
    temp = Path(tempfile.mkdtemp(prefix=f"{_PARTIAL}{os.getpid()}-{target.name}-", dir=target.parent))
    os.chmod(temp, 0o777 & ~current_umask())  # mkdtemp makes it private; the cache may be shared
    try:
        yield temp
        _make_readable(temp)
        write_json_atomic(temp / MARKER, marker)
        _publish(temp, target, replace=replace)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)


def _make_readable(directory: Path) -> None:
    """Give every file the read bits the umask allows (some writers create private temp files)."""
    readable = 0o444 & ~current_umask()
    for base, _, files in os.walk(directory):
        for name in files:
            path = Path(base, name)
            mode = path.stat().st_mode
            if mode & readable != readable:
                os.chmod(path, mode | readable)


def _publish(temp: Path, target: Path, *, replace: bool) -> None:
    if target.exists() and (replace or not is_complete(target)):
        # Move the old directory aside first so the swap itself is a single rename.
        old = Path(tempfile.mkdtemp(prefix=f"{_PARTIAL}{os.getpid()}-old-", dir=target.parent))
        aside = old / target.name
        os.rename(target, aside)
        try:
            os.rename(temp, target)
        except OSError:
            os.rename(aside, target)  # put the previous copy back
            raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.rename(temp, target)
    except OSError:
        # Another process published first; keep its complete copy.
        if not is_complete(target):
            raise
