"""What a package directory's marker records, and whether the directory still matches the manifest.

The marker names the member patterns the directory was extracted with, so a manifest that gained
members (a new task reading another file of the same package) makes ``deltaspace fetch`` extract the
package again instead of calling it present. It also says which file supplied the members: the pinned
package itself, a mirror, or a local checkout.
"""

from __future__ import annotations

import json
from pathlib import Path

from deltaspace.assets.cache import is_complete, read_marker
from deltaspace.assets.manifest import PackageSpec, is_pattern

PRESENT, OUTDATED, MISSING = "present", "outdated", "missing"


def package_marker(
    spec: PackageSpec,
    *,
    supplied_by: PackageSpec | None = None,
    origin: str = "",
    files: dict[str, str] | None = None,
) -> dict:
    """The marker of ``spec``'s directory. ``supplied_by``: the package whose file was unpacked (the
    primary or a mirror; ``None`` for a local checkout); ``files``: member -> sha256 when the members
    were checked one by one instead of through the archive's sha256."""
    marker: dict = {"package": spec.name, "version": spec.version, "members": list(spec.members)}
    if supplied_by is not None:
        marker.update(
            supplied_by=supplied_by.requirement, file=supplied_by.filename, sha256=supplied_by.sha256
        )
    if origin:
        marker["origin"] = origin
    if files is not None:
        marker["files"] = dict(sorted(files.items()))
    return marker


def package_state(spec: PackageSpec, directory: Path) -> str:
    """``present`` (complete, extracted with today's members), ``outdated`` or ``missing``."""
    if not is_complete(directory):
        return MISSING
    try:
        recorded = read_marker(directory).get("members")
    except (OSError, ValueError):
        return OUTDATED  # an unreadable marker: extract again rather than trust the directory
    if recorded is None:
        # Markers written before member lists were recorded: judge by the files on disk, so a package
        # that can no longer be downloaded (bigbench) stays usable when it already has every member.
        return PRESENT if members_on_disk(spec.members, directory) else OUTDATED
    return PRESENT if list(recorded) == list(spec.members) else OUTDATED


def members_on_disk(members: tuple[str, ...], directory: Path) -> bool:
    for member in members:
        if is_pattern(member):
            if next(iter(directory.glob(member)), None) is None:
                return False
        elif not (directory / member).is_file():
            return False
    return True


def supplier_note(spec: PackageSpec, directory: Path) -> str:
    """A short note when a present package came from somewhere other than its own file."""
    try:
        marker = read_marker(directory)
    except (OSError, json.JSONDecodeError):
        return ""
    supplied_by = marker.get("supplied_by")
    if supplied_by and supplied_by != spec.requirement:
        return f"files from mirror {supplied_by}"
    if supplied_by is None and marker.get("origin"):
        return f"from {marker['origin']}"
    return ""
