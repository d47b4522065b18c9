"""``load_task``: a suite task or a user's own data -> :class:`~deltaspace.tasks.task.Task` with fixed splits."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from datasets import ClassLabel, Dataset, Features, Value

from deltaspace.assets.cache import cache_dir
from deltaspace.errors import MissingFileError, UserInputError
from deltaspace.tasks.examples import PreparedExamples, prepare
from deltaspace.tasks.files import read_user_table, split_spec
from deltaspace.tasks.registry import SUITE, SUITE_TASKS
from deltaspace.tasks.splits import grouped_split, stratified_split
from deltaspace.tasks.suite import suite_examples
from deltaspace.tasks.task import Task

Spec = str | os.PathLike | Sequence[str | os.PathLike]
logger = logging.getLogger(__name__)


def suggest_max_length(frame: pd.DataFrame) -> int:
    """A token budget covering ~95% of examples: 1.4 tokens per word, rounded up to 32, in [32, 512]."""
    words = frame["text"].str.split().str.len()
    if "text_pair" in frame.columns:
        words = words + frame["text_pair"].str.split().str.len()
    tokens = float(np.percentile(words, 95)) * 1.4 + 3
    return int(min(512, max(32, 32 * math.ceil(tokens / 32))))


def _dataset(frame: pd.DataFrame, label_names: list[str]) -> Dataset:
    """The split as a ``datasets.Dataset`` (text, [text_pair], label); the group column stays behind."""
    columns = {"text": Value("string")}
    if "text_pair" in frame.columns:
        columns["text_pair"] = Value("string")
    columns["label"] = ClassLabel(names=label_names)
    data = {name: frame[name].tolist() for name in columns}
    return Dataset.from_dict(data, features=Features(columns))


def build_task(
    prepared: PreparedExamples,
    *,
    name: str,
    seed: int,
    max_train: int,
    max_validation: int,
    max_test: int,
    max_length: int,
    metadata: dict,
) -> Task:
    """Split prepared examples (stratified, seeded) into a :class:`Task`."""
    frame = prepared.frame
    sizes = {"max_train": max_train, "max_validation": max_validation, "max_test": max_test}
    if "group" in frame.columns:
        indices = grouped_split(frame["label"].to_numpy(), frame["group"].to_numpy(), seed=seed, **sizes)
    else:
        indices = stratified_split(frame["label"].to_numpy(), seed=seed, **sizes)
    splits = {split: _dataset(frame.iloc[idx], prepared.label_names) for split, idx in indices.items()}
    metadata = {
        **metadata,
        **prepared.stats,
        "seed": seed,
        "sizes": {split: len(ds) for split, ds in splits.items()},
    }
    return Task(
        name=name,
        label_names=list(prepared.label_names),
        train=splits["train"],
        validation=splits["validation"],
        test=splits["test"],
        is_pair="text_pair" in frame.columns,
        max_length=max_length,
        metadata=metadata,
    )


def load_task(
    spec: Spec,
    *,
    seed: int = 0,
    max_train: int = 2000,
    max_validation: int = 500,
    max_test: int = 1000,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    group_column: str | None = None,
    label_names: Sequence[str] | None = None,
    name: str | None = None,
    max_length: int | None = None,
    cache: str | os.PathLike | None = None,
) -> Task:
    """Load a task with fixed, seeded, stratified train / validation / test splits.

    ``spec``: a suite task name (see ``SUITE_TASKS``; needs ``deltaspace fetch``), or a path to a CSV /
    TSV / JSONL / JSON file (or a list of them), or a directory saved with ``datasets``' ``save_to_disk``.
    Paths may carry options, ``"data.csv?text=review&label=stars&text_pair=...&group=doc"``, equivalent to
    ``text_column`` / ``text_pair_column`` / ``label_column`` / ``group_column`` (the document a row comes
    from: rows of one document stay in one split, see :func:`~deltaspace.tasks.splits.grouped_split`).
    ``label_names`` fixes the class order for user data (default: sorted labels). Texts are de-duplicated
    before splitting, so no text is in two splits. Sizes: test ``min(max_test, 30% of N)``, validation ``min(max_validation, 15% of N)``, train
    ``min(max_train, rest)``.
    """
    sizes = {"max_train": max_train, "max_validation": max_validation, "max_test": max_test}
    if isinstance(spec, str) and spec in SUITE:
        column_options = (text_column, text_pair_column, label_column, group_column, label_names)
        if any(option is not None for option in column_options):
            raise UserInputError(
                f"{spec!r} is a suite task; column options and label_names only apply to user data"
            )
        task = SUITE[spec]
        prepared = suite_examples(spec, cache_dir(cache))
        metadata = {
            "source": task.package,
            "licence": task.licence,
            "description": task.description,
            "role": task.role,
        }
        return build_task(
            prepared,
            name=name or spec,
            seed=seed,
            max_length=max_length or task.max_length,
            metadata=metadata,
            **sizes,
        )

    paths, options = _user_paths(spec)
    table = read_user_table(
        paths,
        text_column=text_column or options.get("text"),
        text_pair_column=text_pair_column or options.get("text_pair"),
        label_column=label_column or options.get("label"),
        group_column=group_column or options.get("group"),
    )
    task_name = name or options.get("name") or table.name
    prepared = prepare(table.frame, label_names or table.label_names, name=task_name)
    note = dropped_rows_note(prepared.stats, ", ".join(os.path.basename(os.fspath(p)) for p in paths))
    if note:
        logger.warning(note)
    metadata = {"source": [os.fspath(p) for p in paths], "columns": table.columns}
    return build_task(
        prepared,
        name=task_name,
        seed=seed,
        max_length=max_length or suggest_max_length(prepared.frame),
        metadata=metadata,
        **sizes,
    )


def dropped_rows_note(stats: dict[str, int], source: str) -> str | None:
    """One line counting the rows cleaning dropped (empty text / label, duplicates, conflicting labels)."""
    parts = [
        f"{stats.get(key, 0)} {what if stats.get(key, 0) == 1 else plural}"
        for key, what, plural in (
            ("n_empty_removed", "with an empty text or label", "with an empty text or label"),
            ("n_duplicates_removed", "duplicate", "duplicates"),
            ("n_conflicting_removed", "with conflicting labels", "with conflicting labels"),
        )
        if stats.get(key, 0)
    ]
    if not parts:
        return None
    return f"{source}: kept {stats['n_examples']} of {stats['n_raw']} rows (dropped {', '.join(parts)})"


def _user_paths(spec: Spec) -> tuple[list[str], dict[str, str]]:
    if isinstance(spec, (str, os.PathLike)):
        path, options = split_spec(os.fspath(spec))
        if not os.path.exists(os.path.expanduser(path)):
            if os.sep not in path and "." not in path:
                raise UserInputError(
                    f"unknown task {path!r}: not a suite task ({', '.join(SUITE_TASKS)}) and not a file"
                )
            raise MissingFileError(
                f"task data {path!r} does not exist; pass a suite task ({', '.join(SUITE_TASKS)}) or a "
                "CSV / TSV / JSONL file"
            )
        return [path], options
    paths = [os.fspath(p) for p in spec]
    if not paths:
        raise UserInputError("load_task needs a task name, a path, or a non-empty list of paths")
    return paths, {}
