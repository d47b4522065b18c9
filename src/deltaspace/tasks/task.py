"""The task record every loader returns and every trainer consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets import Dataset

from deltaspace.errors import UserInputError

SPLITS = ("train", "validation", "test")


@dataclass
class Task:
    """A labelled classification task with fixed train / validation / test splits.

    Each split is a ``datasets.Dataset`` with columns ``text``, ``label`` (int in ``[0, num_labels)``) and,
    for sentence-pair tasks, ``text_pair``.
    """

    name: str
    label_names: list[str]
    train: Dataset
    validation: Dataset
    test: Dataset
    is_pair: bool = False
    max_length: int = 128
    metadata: dict = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def split(self, name: str) -> Dataset:
        if name not in SPLITS:
            raise UserInputError(f"unknown split {name!r}; use {', '.join(SPLITS)}")
        return getattr(self, name)
