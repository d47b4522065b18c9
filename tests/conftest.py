"""Shared tiny-model fixtures (random weights from small configs; each builds in milliseconds).

Fixtures named ``make_*`` return a builder taking config overrides; the plain fixtures are the defaults.
All models are returned in eval mode with a fixed seed.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    ViTConfig,
    ViTForImageClassification,
)

# Two cores are shared by pytest-xdist workers: one torch thread each avoids oversubscription, and studies
# run in the test's own process (tests/study/test_workers.py asks for worker processes explicitly).
torch.set_num_threads(1)
os.environ.setdefault("DELTASPACE_WORKERS", "1")


@pytest.fixture(autouse=True, scope="session")
def _baselines_outside_the_user_cache(tmp_path_factory):
    """Probes that runs cache (train.baselines) go to a temp folder, never into the user's cache."""
    from deltaspace.train.baselines import BASELINES_ENV

    patch = pytest.MonkeyPatch()
    patch.setenv(BASELINES_ENV, str(tmp_path_factory.mktemp("baselines")))
    yield
    patch.undo()


def _build(model_cls, config_cls, defaults: dict, overrides: dict, seed: int = 0):
    torch.manual_seed(seed)
    return model_cls(config_cls(**{**defaults, **overrides})).eval()


_BERT = dict(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=32,
    num_labels=3,
)
_VIT = dict(
    image_size=16,
    patch_size=4,
    num_channels=3,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    num_labels=3,
)
_LLAMA = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    pad_token_id=0,
)
_MISTRAL = {**_LLAMA, "sliding_window": 3}

# A word-level vocabulary for the tiny causal LM on disk: the verbalizer's default prompt, label words, and
# the words of tests/train's synthetic tasks (anything else reads as <unk>).
TINY_LM_WORDS = ["<pad>", "<unk>", "<eos>", "Options", "Answer", ":", ",", "."]
TINY_LM_WORDS += ["negative", "positive", "neutral", "not", "entailment"]
TINY_LM_WORDS += ["good", "great", "fine", "nice", "superb", "bad", "awful", "poor", "dull", "weak"]
TINY_LM_WORDS += ["the", "a", "movie", "film", "was", "is", "plot", "cast", "very", "quite", "and", "story"]


def write_tiny_lm(directory, seed: int = 0):
    """A random LLaMA causal LM (vocabulary :data:`TINY_LM_WORDS`) and its word-level tokenizer, saved to
    ``directory`` as ``load_model(directory, kind="causal-lm")`` reads them."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(TINY_LM_WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<eos>", unk_token="<unk>", pad_token="<pad>"
    )
    model = _build(LlamaForCausalLM, LlamaConfig, _LLAMA, {"vocab_size": len(TINY_LM_WORDS)}, seed)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture
def make_bert():
    return lambda seed=0, **overrides: _build(
        BertForSequenceClassification, BertConfig, _BERT, overrides, seed
    )


@pytest.fixture
def make_vit():
    return lambda seed=0, **overrides: _build(ViTForImageClassification, ViTConfig, _VIT, overrides, seed)


@pytest.fixture
def make_llama():
    return lambda seed=0, **overrides: _build(LlamaForCausalLM, LlamaConfig, _LLAMA, overrides, seed)


@pytest.fixture
def make_mistral():
    return lambda seed=0, **overrides: _build(MistralForCausalLM, MistralConfig, _MISTRAL, overrides, seed)


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory):
    """A random 2-layer LLaMA causal LM with a word-level tokenizer on disk (see :func:`write_tiny_lm`)."""
    return write_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture
def tiny_bert(make_bert):
    """BERT for sequence classification: 2 layers, 4 heads, hidden 32, 3 labels."""
    return make_bert()


@pytest.fixture
def tiny_vit(make_vit):
    """ViT for image classification: 16x16 images, patch 4, 2 layers, 4 heads, 3 labels."""
    return make_vit()


@pytest.fixture
def tiny_llama(make_llama):
    """LLaMA causal LM with GQA: 4 query heads over 2 key/value heads, 2 layers, vocab 64, pad id 0."""
    return make_llama()


@pytest.fixture
def tiny_mistral(make_mistral):
    """Mistral causal LM with a sliding window of 3 (GQA 4/2), 2 layers."""
    return make_mistral()


@pytest.fixture
def text_batch():
    """Two sequences of length 7; the second is padded (right) over its last 3 positions."""
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(1, 64, (2, 7), generator=generator)
    attention_mask = torch.ones(2, 7, dtype=torch.long)
    attention_mask[1, 4:] = 0
    input_ids[1, 4:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


@pytest.fixture
def left_padded_batch():
    """Two sequences of length 7 for causal LMs; the second is left-padded over its first 2 positions."""
    generator = torch.Generator().manual_seed(2)
    input_ids = torch.randint(1, 64, (2, 7), generator=generator)
    attention_mask = torch.ones(2, 7, dtype=torch.long)
    attention_mask[1, :2] = 0
    input_ids[1, :2] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


@pytest.fixture
def pixel_batch():
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))


class TimmStyleAttention(nn.Module):
    """Mirrors timm's ViT ``Attention`` layout: fused qkv, q/k norms, fused SDPA path fixed at construction."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True, attn_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused_attn = True
        self.qkv = nn.Linear(dim, dim * 3)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.norm = nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, dim = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.fused_attn:
            p = self.attn_drop.p if self.training else 0.0
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            if attn_mask is not None:
                attn = attn + attn_mask
            x = self.attn_drop(attn.softmax(dim=-1)) @ v
        x = self.norm(x.transpose(1, 2).reshape(batch, length, dim))
        return self.proj_drop(self.proj(x))


class TimmStyleBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = TimmStyleAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyTimmViT(nn.Module):
    """A two-block timm-style ViT classifier (16x16 images, patch 4, dim 32, 4 heads, 5 classes)."""

    def __init__(self, dim: int = 32, num_heads: int = 4, depth: int = 2, num_classes: int = 5) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=4, stride=4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, 17, dim) * 0.02)
        self.blocks = nn.Sequential(*[TimmStyleBlock(dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(tokens))[:, 0])


@pytest.fixture
def tiny_timm_vit():
    torch.manual_seed(0)
    return TinyTimmViT().eval()
