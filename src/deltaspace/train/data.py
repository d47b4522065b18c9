"""Tokenised splits and dynamically padded data loaders for a :class:`~deltaspace.tasks.task.Task`."""

from __future__ import annotations

from typing import Any

import datasets.utils as datasets_utils
import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding


def tokenize_split(dataset: Dataset, tokenizer: Any, *, is_pair: bool, max_length: int) -> Dataset:
    """Columns ``input_ids``, ``attention_mask`` (``token_type_ids`` if the tokenizer makes them), ``labels``.

    Pair tasks are encoded as the tokenizer's sentence pair (``text``, ``text_pair``). Padding is left to
    the collator so each batch is only as long as its longest example.
    """
    needed = ["text", "label"] + (["text_pair"] if is_pair else [])
    missing = [column for column in needed if column not in dataset.column_names]
    if missing:
        raise ValueError(f"task split lacks column(s) {missing}; a Task split needs columns {needed}")

    def encode(batch: dict[str, list]) -> dict[str, list]:
        pair = batch["text_pair"] if is_pair else None
        encoded = tokenizer(batch["text"], pair, truncation=True, max_length=max_length)
        encoded["labels"] = batch["label"]
        return encoded

    # A progress bar per split is noise next to the training bar; restore the global setting afterwards.
    was_enabled = not datasets_utils.are_progress_bars_disabled()
    datasets_utils.disable_progress_bars()
    try:
        return dataset.map(encode, batched=True, remove_columns=dataset.column_names)
    finally:
        if was_enabled:
            datasets_utils.enable_progress_bars()


def make_loader(
    dataset: Dataset,
    tokenizer: Any,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader padding each batch dynamically; a shuffled one draws its order from ``seed``."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=DataCollatorWithPadding(tokenizer),
        num_workers=num_workers,
    )


def cap_examples(dataset: Dataset, limit: int | None, seed: int) -> Dataset:
    """At most ``limit`` examples, a seeded random subset (the same for every run with this seed)."""
    if limit is None or len(dataset) <= limit:
        return dataset
    return dataset.shuffle(seed=seed).select(range(limit))
