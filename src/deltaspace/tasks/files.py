"""A user's own task: CSV / TSV / JSONL files or a local ``datasets`` directory -> example table.

Spec syntax: a path, optionally followed by ``?key=value&...`` options, e.g.
``"reviews.csv?text=review&label=stars"`` or ``"nli.jsonl?text=premise&text_pair=hypothesis"``.
Keys: ``text``, ``text_pair`` (alias ``pair``), ``label``, ``name``. Keyword arguments of
``load_task`` do the same. Splits stored in a ``DatasetDict`` are pooled and re-split by
:mod:`deltaspace.tasks.splits`, so every task gets the same de-duplication, stratification and caps.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import parse_qsl

import pandas as pd

from deltaspace.errors import BrokenFileError, MissingFileError, UserInputError

SPEC_KEYS = {
    "text": "text",
    "text_pair": "text_pair",
    "pair": "text_pair",
    "label": "label",
    "group": "group",
    "name": "name",
}
_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json"}
_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".zip")
TEXT_DEFAULTS = ("text", "sentence", "sentence1", "premise", "question")
PAIR_DEFAULTS = {"sentence1": ("sentence2",), "premise": ("hypothesis",), "question": ("context", "passage")}
LABEL_DEFAULTS = ("label", "labels")


@dataclass(frozen=True)
class UserTable:
    frame: pd.DataFrame  # columns text, [text_pair], label (raw values)
    label_names: list[str] | None  # from a datasets ClassLabel feature, else None
    name: str
    columns: dict[str, str | None]  # which source columns were used


def absolute_spec(spec: str) -> str:
    """``spec`` with a relative data-file path made absolute (its options kept), so a run folder that
    records it can be evaluated from any directory; suite names and missing paths come back unchanged."""
    path, sep, query = (spec, "", "") if Path(spec).exists() else spec.partition("?")
    expanded = Path(path).expanduser()
    if expanded.is_absolute() or not expanded.exists():
        return spec
    return str(expanded.absolute()) + sep + query


def split_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"data.csv?text=review"`` -> (``"data.csv"``, ``{"text": "review"}``); unknown keys raise."""
    if "?" not in spec or Path(spec).exists():
        return spec, {}
    path, query = spec.split("?", 1)
    options = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise UserInputError(
            f"bad options {query!r} in task spec {spec!r}; write them as ?text=<column>&label=<column>"
        ) from None
    for key, value in pairs:
        if key not in SPEC_KEYS:
            raise UserInputError(
                f"unknown option {key!r} in task spec {spec!r}; use {', '.join(sorted(SPEC_KEYS))}"
            )
        options[SPEC_KEYS[key]] = value
    return path, options


def file_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSION:
        suffixes = suffixes[:-1]
    if not suffixes or suffixes[-1] not in _SUFFIXES:
        raise UserInputError(
            f"cannot read {path.name}: expected a .csv, .tsv, .jsonl or .json file (optionally compressed) "
            "or a directory saved with datasets' save_to_disk"
        )
    return _SUFFIXES[suffixes[-1]]


_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def _open_text(path: Path) -> IO[str]:
    opener = _OPENERS.get(path.suffix.lower())
    if opener is not None:
        return io.TextIOWrapper(opener(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _check_text_file(path: Path) -> None:
    """Refuse an empty or binary (NUL bytes, not UTF-8) uncompressed file with a one-line reason."""
    if path.suffix.lower() in _COMPRESSION:
        return
    if path.stat().st_size == 0:
        raise BrokenFileError(
            f"task file {path} is empty; it needs a header row (or JSON lines) and examples"
        )
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    if b"\x00" in head:
        raise BrokenFileError(f"task file {path} is binary, not text; pass a UTF-8 CSV / TSV / JSONL file")


def _read_jsonl(path: Path) -> pd.DataFrame:
    records = []
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise BrokenFileError(
                    f"{path} line {number}: not valid JSON ({error.msg} at column {error.colno}); each line "
                    'must be one JSON object such as {"text": "...", "label": "..."}'
                ) from None
            if not isinstance(record, dict):
                raise BrokenFileError(
                    f"{path} line {number}: expected a JSON object such as "
                    f'{{"text": "...", "label": "..."}}, got {type(record).__name__}'
                )
            records.append(record)
    return pd.DataFrame.from_records(records)


def _read_file(path: Path) -> pd.DataFrame:
    kind = file_format(path)
    _check_text_file(path)
    try:
        if kind in ("csv", "tsv"):
            # Only empty cells are missing: texts such as "NA" or "null" stay texts.
            frame = pd.read_csv(
                path, sep="," if kind == "csv" else "\t", keep_default_na=False, na_values=[""]
            )
        elif kind == "jsonl":
            frame = _read_jsonl(path)
        else:
            with _open_text(path) as handle:
                data = json.load(handle)
            if isinstance(data, dict):
                data = next((v for v in data.values() if isinstance(v, list)), None)
            if not isinstance(data, list):
                raise BrokenFileError(
                    f"{path}: a .json file must hold a list of records (or use JSON lines, .jsonl)"
                )
            frame = pd.DataFrame.from_records(data)
    except pd.errors.EmptyDataError:
        raise BrokenFileError(f"task file {path} is empty; it needs a header row and examples") from None
    except UnicodeDecodeError as error:
        raise BrokenFileError(
            f"task file {path} is not UTF-8 text (byte {error.start}); save it as UTF-8"
        ) from None
    except pd.errors.ParserError as error:
        raise BrokenFileError(
            f"task file {path} is not a valid {kind.upper()} ({str(error).strip().splitlines()[0]}); "
            "check its quoting and separators"
        ) from None
    except json.JSONDecodeError as error:
        raise BrokenFileError(
            f"{path} line {error.lineno}: not valid JSON ({error.msg} at column {error.colno})"
        ) from None
    except (OSError, EOFError, lzma.LZMAError) as error:
        raise BrokenFileError(f"cannot read task file {path} ({error}); is it truncated?") from None
    if len(frame) == 0:
        raise BrokenFileError(
            f"task file {path} has no examples (only a header?); add rows with a text and a label"
        )
    return frame


def _read_datasets_dir(path: Path) -> tuple[pd.DataFrame, dict]:
    if not ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        raise UserInputError(
            f"directory {path} is not a dataset saved with datasets' save_to_disk (no dataset_dict.json or "
            "state.json); pass a CSV / JSONL file instead"
        )
    from datasets import Dataset, load_from_disk

    loaded = load_from_disk(str(path))
    parts = [loaded] if isinstance(loaded, Dataset) else [loaded[split] for split in loaded]
    features = parts[0].features
    return pd.concat([part.to_pandas() for part in parts], ignore_index=True), features


def _pick(
    columns: Sequence[str], wanted: str | None, defaults: Sequence[str], role: str, source: str
) -> str | None:
    if wanted is not None:
        if wanted not in columns:
            raise UserInputError(
                f"{role} column {wanted!r} is not in {source}; available columns: {', '.join(map(str, columns))}"
            )
        return wanted
    return next((c for c in defaults if c in columns), None)


def read_user_table(
    paths: Sequence[str | os.PathLike],
    *,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    group_column: str | None = None,
) -> UserTable:
    """Read and concatenate ``paths`` (files of one format, or one ``datasets`` directory).

    ``group_column``: the document each row comes from (a review's product, a passage's article); rows of
    one document then stay in one split.
    """
    paths = [Path(p).expanduser() for p in paths]
    for path in paths:
        if not path.exists():
            raise MissingFileError(f"task data {str(path)!r} does not exist")
    features = None
    if any(p.is_dir() for p in paths):
        if len(paths) != 1:
            raise UserInputError("pass a single datasets directory, not a list mixing directories and files")
        frame, features = _read_datasets_dir(paths[0])
    else:
        frame = pd.concat([_read_file(p) for p in paths], ignore_index=True)
    source = ", ".join(p.name for p in paths)
    columns = [str(c) for c in frame.columns]
    text = _pick(columns, text_column, TEXT_DEFAULTS, "text", source)
    if text is None:
        raise UserInputError(
            f"no text column in {source}; name it with text_column=... (or ?text=...); available columns: "
            f"{', '.join(columns)}"
        )
    pair_defaults = PAIR_DEFAULTS.get(text, ()) if text_column is None else ()
    pair = _pick(columns, text_pair_column, pair_defaults, "text pair", source)
    label = _pick(columns, label_column, LABEL_DEFAULTS, "label", source)
    if label is None:
        raise UserInputError(
            f"no label column in {source}; name it with label_column=... (or ?label=...); available columns: "
            f"{', '.join(columns)}"
        )
    label_names = None
    out = pd.DataFrame({"text": frame[text], "label": frame[label]})
    if pair is not None:
        out.insert(1, "text_pair", frame[pair])
    group = _pick(columns, group_column, (), "group", source)
    if group is not None:
        out["group"] = frame[group]
    if features is not None and hasattr(features.get(label), "names"):
        label_names = list(features[label].names)
        out = out[out["label"] >= 0]  # ClassLabel -1 marks unlabelled rows (e.g. GLUE test splits)
        out = out.assign(label=out["label"].map(lambda i: label_names[int(i)]))
    name = paths[0].name.split(".")[0] if paths[0].is_file() else paths[0].name
    return UserTable(
        out, label_names, name, {"text": text, "text_pair": pair, "label": label, "group": group}
    )
