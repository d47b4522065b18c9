"""Tiny fixtures for the training layer: a random 2-layer BERT checkpoint on disk and synthetic tasks.

The task is learnable by a tiny model in a few steps: each text holds one sentiment word among filler
words, and the label is that word's polarity.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import BertConfig, BertModel, BertTokenizer

from deltaspace.tasks.task import Task

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POSITIVE = ["good", "great", "fine", "nice", "superb"]
NEGATIVE = ["bad", "awful", "poor", "dull", "weak"]
FILLER = ["the", "a", "movie", "film", "was", "is", "plot", "cast", "very", "quite", "and", "story"]
LABEL_WORDS = ["negative", "positive", "neutral", "not", "entailment"]
VOCAB = SPECIAL + POSITIVE + NEGATIVE + FILLER + LABEL_WORDS


def write_tiny_checkpoint(directory: Path, seed: int = 0) -> Path:
    """A random BertModel (2 layers, hidden 32, 4 heads, no dropout) and its tokenizer, saved to ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab_file = directory / "vocab.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n")
    tokenizer = BertTokenizer(vocab=str(vocab_file))
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def make_task(
    n_train: int = 64,
    n_val: int = 32,
    n_test: int = 32,
    *,
    pair: bool = False,
    seed: int = 0,
    name: str = "tiny",
) -> Task:
    """Binary sentiment (labels negative / positive); with ``pair`` the sentiment word is in ``text_pair``."""
    rng = random.Random(seed)

    def split(n: int) -> Dataset:
        rows = {"text": [], "label": []}
        if pair:
            rows["text_pair"] = []
        for index in range(n):
            label = index % 2
            word = rng.choice(POSITIVE if label else NEGATIVE)
            words = rng.sample(FILLER, 4)
            if pair:
                rows["text"].append(" ".join(words))
                rows["text_pair"].append(f"{rng.choice(FILLER)} {word}")
            else:
                words.insert(rng.randrange(5), word)
                rows["text"].append(" ".join(words))
            rows["label"].append(label)
        return Dataset.from_dict(rows)

    return Task(
        name=name,
        label_names=["negative", "positive"],
        train=split(n_train),
        validation=split(n_val),
        test=split(n_test),
        is_pair=pair,
        max_length=16,
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def tiny_task() -> Task:
    return make_task()


@pytest.fixture
def make_tiny_task():
    """The :func:`make_task` factory (test modules cannot import a conftest by name)."""
    return make_task


@pytest.fixture
def write_checkpoint():
    """The :func:`write_tiny_checkpoint` writer."""
    return write_tiny_checkpoint


def write_reviews(path: Path, words: tuple[str, ...] = ("good", "bad", "great", "awful")) -> Path:
    """A user's JSONL data file: "<filler> <filler> was <word>", labelled positive (good, great) or negative."""
    fillers = ["the", "a", "movie", "film", "plot", "cast", "story", "very"]
    rows = [
        {
            "text": f"{first} {second} was {word}",
            "label": "positive" if word in ("good", "great") else "negative",
        }
        for first in fillers
        for second in fillers[:4]
        for word in words
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def write_reviews_file():
    """The :func:`write_reviews` writer (a user-style JSONL task file)."""
    return write_reviews
