"""Fixtures shared by the prompt and prefix tests: tiny models on the eager attention path."""

import pytest
import torch
from transformers import LlamaForSequenceClassification


@pytest.fixture
def bert(make_bert):
    return make_bert(attn_implementation="eager")


@pytest.fixture
def llama_lm(make_llama):
    return make_llama(attn_implementation="eager")


@pytest.fixture
def llama_cls(llama_lm):
    """The tiny LLaMA as a sequence classifier (pools the last non-padding token)."""
    torch.manual_seed(0)
    return LlamaForSequenceClassification(llama_lm.config).eval()
