"""Clean, de-duplicate and label-encode a table of examples before it is split.

De-duplication runs before splitting, so no text (or text pair) can land in two splits. A text that
occurs with two different labels is ambiguous and every copy of it is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from deltaspace.errors import UserInputError


@dataclass(frozen=True)
class PreparedExamples:
    frame: pd.DataFrame  # columns text, [text_pair], label (int), [group: the source document]
    label_names: list[str]
    stats: dict[str, int]


def _key_columns(frame: pd.DataFrame) -> list[str]:
    return ["text", "text_pair"] if "text_pair" in frame.columns else ["text"]


def clean(frame: pd.DataFrame) -> pd.DataFrame:
    """Strip the text columns and drop rows with an empty text or a missing label."""
    frame = frame.dropna(subset=[*_key_columns(frame), "label"]).copy()
    if "group" in frame.columns:
        # a row without a document is its own group
        missing = frame["group"].isna()
        frame["group"] = frame["group"].astype(str).where(~missing, "row-" + frame.index.astype(str))
    for column in _key_columns(frame):
        frame[column] = frame[column].astype(str).str.strip()
        frame = frame[frame[column] != ""]
    return frame.reset_index(drop=True)


def dedupe(frame: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """Keep the first copy of each text (pair); drop texts seen with conflicting labels.

    Returns (frame, number of duplicate rows removed, number of rows removed for conflicting labels).
    """
    keys = _key_columns(frame)
    label_count = frame.groupby(keys, sort=False)["label"].transform("nunique")
    conflicting = label_count > 1
    kept = frame[~conflicting]
    unique = kept.drop_duplicates(keys, keep="first")
    return unique.reset_index(drop=True), len(kept) - len(unique), int(conflicting.sum())


def label_vocabulary(labels: pd.Series) -> list[str]:
    """Sorted label names: numerically for integer labels (1, 2, 10), else as strings."""
    values = labels.unique()
    if all(isinstance(v, (bool, np.bool_)) for v in values):
        return [str(v) for v in sorted(values)]
    numeric = pd.to_numeric(pd.Series(values), errors="coerce")
    if not numeric.isna().any() and (numeric == numeric.round()).all():
        return [str(int(v)) for v in sorted(numeric)]
    return sorted(str(v) for v in values)


def _label_strings(labels: pd.Series) -> pd.Series:
    numeric = pd.to_numeric(labels, errors="coerce")
    is_bool = labels.map(lambda v: isinstance(v, (bool, np.bool_))).all()
    if not is_bool and not numeric.isna().any() and (numeric == numeric.round()).all():
        return numeric.astype("int64").astype(str)
    return labels.astype(str)


def prepare(
    frame: pd.DataFrame, label_names: Sequence[str] | None = None, *, name: str = "task"
) -> PreparedExamples:
    """Clean, de-duplicate and encode labels as ints in ``[0, len(label_names))``.

    Without ``label_names`` the names are the sorted distinct labels. Raises ``UserInputError`` (a
    ``ValueError``) for no usable row, for a label
    outside ``label_names``, for fewer than two classes and for fewer than 10 examples.
    """
    raw = len(frame)
    frame = clean(frame)
    if raw and not len(frame):
        raise UserInputError(
            f"task {name!r} has no usable examples: all {raw} rows have an empty text or label "
            "(check which columns hold the text and the label)"
        )
    if label_names is None:
        label_names = label_vocabulary(frame["label"])
    label_names = [str(n) for n in label_names]
    if len(set(label_names)) != len(label_names):
        raise UserInputError(f"task {name!r}: label names must be unique, got {label_names}")
    strings = _label_strings(frame["label"]) if len(frame) else frame["label"].astype(str)
    unknown = sorted(set(strings) - set(label_names))
    if unknown:
        raise UserInputError(f"task {name!r}: labels {unknown[:10]} are not in the label names {label_names}")
    index = {label: i for i, label in enumerate(label_names)}
    frame = frame.assign(label=strings.map(index).astype("int64"))
    frame, duplicates, conflicting = dedupe(frame)
    present = sorted(frame["label"].unique())
    if len(present) < 2:
        only = label_names[present[0]] if present else "none"
        raise UserInputError(
            f"task {name!r} has a single class ({only!r}) after cleaning; a classification task needs "
            "at least two (check the label column)"
        )
    if len(frame) < 10:
        raise UserInputError(f"task {name!r} has only {len(frame)} usable examples; at least 10 are needed")
    columns = [*_key_columns(frame), "label"] + (["group"] if "group" in frame.columns else [])
    stats = {
        "n_raw": raw,
        "n_examples": len(frame),
        "n_duplicates_removed": duplicates,
        "n_conflicting_removed": conflicting,
        "n_empty_removed": raw - len(frame) - duplicates - conflicting,
    }
    return PreparedExamples(frame[columns].reset_index(drop=True), label_names, stats)
