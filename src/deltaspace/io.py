"""File-level persistence helpers: atomic writes, JSON / JSONL / safetensors, sha256 of a file.

Every whole-file write goes through :func:`atomic_write`: the data is written to a temporary file in
the destination directory, flushed to disk, made mode 0644 and moved into place with ``os.replace``.
A reader (or a rerun after a kill) sees either the old file or the complete new one, never a partial
write; a writer that raises leaves the old file untouched and no temporary file behind.

This is the lowest layer of the package: it imports nothing from ``deltaspace``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

FILE_MODE = 0o644  # results, checkpoints and caches are meant to be readable by other users
_CHUNK = 1 << 20


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then move it onto ``path``.

    The temporary file (``.<name>.<random>.tmp``) lives in the destination directory so that
    ``os.replace`` is an atomic rename. Parent directories are created. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        # fsync so that a crash right after the rename cannot publish an empty or truncated file.
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)  # mkstemp creates 0600; chmod after writing in case the writer re-created it
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    def _write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)

    return atomic_write(path, _write)


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented standard JSON (see :func:`to_jsonable`; NaN / inf become null)."""
    return write_text_atomic(path, json.dumps(to_jsonable(data), indent=2, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; check the path (it is written by the matching save())"
        )
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def append_jsonl(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one JSON line. A kill can at worst truncate the last line; :func:`read_jsonl` skips it.

    Appending cannot be atomic per file, so a new file is created with mode 0644 (less if the umask says so).
    """
    line = json.dumps(to_jsonable(record), allow_nan=False) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(line)


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Records of a JSONL file, skipping a truncated last line."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def to_jsonable(value: Any) -> Any:
    """Plain JSON types: numpy / torch scalars become numbers, NaN / inf become null, paths strings."""
    if isinstance(value, dict):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_safetensors_atomic(
    path: str | os.PathLike[str], tensors: dict[str, Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """Save ``tensors`` (moved to CPU) as a safetensors file."""
    # Imported here so that JSON-only users (configs, the CLI) do not pay for importing torch.
    from safetensors.torch import save_file

    # safetensors refuses tensors that share storage, so every tensor is saved as its own contiguous copy.
    tensors = {key: value.detach().to("cpu", copy=True).contiguous() for key, value in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def sha256_file(path: str | os.PathLike[str], progress: Callable[[int, int], None] | None = None) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks; ``progress(bytes done, bytes total)`` after each block."""
    digest = hashlib.sha256()
    total = os.path.getsize(path)
    done = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return digest.hexdigest()
