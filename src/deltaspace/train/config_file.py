"""A sweep's YAML / JSON config file: read, checked and overridden alike for every kind of sweep."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deltaspace.errors import BrokenFileError, MissingFileError, UserInputError


def read_config_file(path: Path, what: str, keys: Sequence[str], overrides: dict[str, Any]) -> dict[str, Any]:
    """The mapping in ``path`` (``what`` names the file in messages, e.g. ``"sweep config"``), refusing keys
    outside ``keys``, with the non-None ``overrides`` in place of its keys (``train`` is merged into the
    file's ``train`` mapping, so one field can change without restating the others)."""
    import yaml  # lazily: the CLI's --help does not need it

    if not path.is_file():
        raise MissingFileError(f"{what} {path} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise BrokenFileError(f"{what} {path} is not UTF-8 text; pass a YAML or JSON file") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise BrokenFileError(f"{what} {path} is not valid YAML ({where}{problem}); fix the file") from None
    if not isinstance(data, dict):
        raise UserInputError(f"{what} {path} must be a mapping with keys {', '.join(keys)}")
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise UserInputError(f"{what} {path} has unknown key(s) {unknown}; valid keys: {', '.join(keys)}")
    for key, value in overrides.items():
        if value is not None:
            data[key] = {**data.get(key, {}), **value} if key == "train" else value
    return data
