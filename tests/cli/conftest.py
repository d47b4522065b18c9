"""Fixtures for the CLI tests: a tiny random BERT checkpoint on disk (built in well under a second)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizer

WORDS = ["good", "great", "fine", "bad", "awful", "poor", "the", "a", "movie", "film", "was", "is", "plot"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "negative", "positive"]


@pytest.fixture(scope="session")
def cli_model_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("cli-tiny-bert")
    (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=20,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    BertTokenizer(vocab=str(directory / "vocab.txt")).save_pretrained(directory)
    return directory
