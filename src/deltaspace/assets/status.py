"""What is in the cache: one row per pinned package and per packaged model."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from deltaspace.assets.cache import cache_dir, is_complete, packages_root, read_marker
from deltaspace.assets.manifest import load_manifest
from deltaspace.assets.markers import MISSING, PRESENT, package_state, supplier_note
from deltaspace.assets.registry import PACKAGED_MODELS


@dataclass(frozen=True)
class AssetStatus:
    name: str
    kind: str  # "package" or "model"
    present: bool
    optional: bool
    path: Path
    size_bytes: int
    detail: str
    # "present", "missing", or "outdated" (a package extracted with an older member list: fetch again)
    state: str = "missing"


def _size(path: Path) -> int:
    total = 0
    for base, _, files in os.walk(path):
        total += sum((Path(base) / f).stat().st_size for f in files)
    return total


def asset_status(cache: str | os.PathLike | None = None) -> list[AssetStatus]:
    root = cache_dir(cache)
    rows = []
    for spec in load_manifest():
        path = packages_root(root) / spec.key
        state = package_state(spec, path)
        present = state == PRESENT
        note = supplier_note(spec, path) if present else ""
        detail = f"{spec.provides} ({note})" if note else spec.provides
        rows.append(
            AssetStatus(
                spec.requirement, "package", present, spec.extra is not None, path,
                _size(path) if state != MISSING else 0, detail, state,
            )
        )  # fmt: skip
    for model in PACKAGED_MODELS.values():
        path = model.published_dir(root)
        present = is_complete(path) and model.directory(root).is_dir()
        detail = model.description
        if present and model.build is not None:
            detail = read_marker(path).get("detail", detail)
        size = _size(model.directory(root)) if present else 0
        state = PRESENT if present else MISSING
        rows.append(
            AssetStatus(model.name, "model", present, model.extra is not None, path, size, detail, state)
        )
    return rows
