"""Cut a long document into passages of whole sentences, about ``words`` words each."""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'“(\[]?[A-Z0-9])")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def passages(text: str, words: int = 60, min_words: int = 12) -> list[str]:
    """Consecutive sentences joined until a passage has at least ``words`` words.

    A last passage shorter than ``min_words`` is dropped: a lone closing line ("Thank you.") says
    nothing about its document.
    """
    chunks: list[str] = []
    current: list[str] = []
    count = 0
    for sentence in sentences(text):
        current.append(sentence)
        count += len(sentence.split())
        if count >= words:
            chunks.append(" ".join(current))
            current, count = [], 0
    if current and count >= min_words:
        chunks.append(" ".join(current))
    return chunks
