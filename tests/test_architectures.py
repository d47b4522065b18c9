"""The family table: every entry has a tiny-config fixture here, and on it the table's names and transformers'
flags find what each DET needs (attention modules, Q/K/V, sublayer outputs, heads, embeddings).

Adding a family = one entry in src/deltaspace/architectures.py + one builder in FAMILY_MODELS below.
"""

from __future__ import annotations

import pytest
import torch
from tests.conftest import TimmStyleAttention
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
    T5Config,
    T5EncoderModel,
)
from transformers.pytorch_utils import Conv1D

from deltaspace import CoeffTuningConfig, get_delta_model, resolve_method
from deltaspace.architectures import FAMILIES, family_of, projection_names, sublayer_outputs
from deltaspace.attention import find_attention_modules, num_query_heads
from deltaspace.attention.discovery import kv_shape
from deltaspace.deltas.bitfit import embedding_parameter_names

LAYERS, HEADS, HIDDEN = 2, 4, 32
TEXT = {
    "input_ids": torch.tensor([[1, 5, 7, 9, 2], [1, 6, 8, 2, 0]]),
    "attention_mask": torch.tensor([[1] * 5, [1] * 4 + [0]]),
}


class _TimmBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = TimmStyleAttention(HIDDEN, HEADS)
        self.mlp = nn.Module()
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(HIDDEN, 2 * HIDDEN), nn.Linear(2 * HIDDEN, HIDDEN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp.fc2(torch.relu(self.mlp.fc1(x)))


class _TimmModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[_TimmBlock() for _ in range(LAYERS)])
        self.head = nn.Linear(HIDDEN, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x)[:, 0])


def _text(model_cls, config):
    return lambda: (model_cls(config).eval(), TEXT)


# family name -> () -> (tiny model in eval mode, keyword inputs)
FAMILY_MODELS = {
    "bert": _text(
        BertForSequenceClassification,
        BertConfig(vocab_size=20, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                   intermediate_size=37, num_labels=3),
    ),
    "llama": _text(
        LlamaForSequenceClassification,
        LlamaConfig(vocab_size=20, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                    num_key_value_heads=2, intermediate_size=48, num_labels=3, pad_token_id=0),
    ),
    "distilbert": _text(
        DistilBertForSequenceClassification,
        DistilBertConfig(vocab_size=20, dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS, hidden_dim=37, num_labels=3),
    ),
    "gpt2": _text(
        GPT2ForSequenceClassification,
        GPT2Config(vocab_size=20, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, num_labels=3, pad_token_id=0),
    ),
    "t5": _text(
        T5EncoderModel,
        T5Config(vocab_size=20, d_model=HIDDEN, d_kv=HIDDEN // HEADS, d_ff=37, num_layers=LAYERS, num_heads=HEADS),
    ),
    "timm": lambda: (_TimmModel().eval(), {"x": torch.randn(2, 5, HIDDEN, generator=torch.Generator().manual_seed(0))}),
}  # fmt: skip


def test_every_family_has_a_fixture():
    assert set(FAMILY_MODELS) == {family.name for family in FAMILIES}


def _output(model, inputs):
    out = model(**inputs)
    return getattr(out, "logits", getattr(out, "last_hidden_state", out))


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_the_table_finds_what_each_det_needs(family):
    torch.manual_seed(0)
    model, inputs = FAMILY_MODELS[family.name]()
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear | Conv1D)]
    assert family_of(linear) is family

    # Attention: one self-attention module a layer (from transformers' flags or timm duck typing), holding the
    # family's projections, with its head counts readable.
    attention = find_attention_modules(model)
    assert len(attention) == LAYERS
    for _, module in attention:
        assert all(hasattr(module, n) for n in projection_names(family, "query/value"))
        assert num_query_heads(module) == HEADS and kv_shape(module)[1] == HIDDEN // HEADS

    # Adapters: one attention-output and one feed-forward-output projection a layer.
    assert len(sublayer_outputs(model, ffn=False)) == LAYERS
    assert len(sublayer_outputs(model, attention=False)) == LAYERS

    # LoRA / IA3 presets target the family's projections.
    (lora,) = resolve_method("lora", model)
    assert set(lora.target_modules) == set(projection_names(family, "query/value"))

    # Heads and embeddings by the table's names (DeltaModel trains the head; BitFit / full can skip embeddings).
    delta_model = get_delta_model(model, CoeffTuningConfig())
    assert set(delta_model.head_modules) == {n for n, _ in model.named_children() if n in family.task_heads}
    blocks = [n for n, _ in model.named_modules() if n.split(".")[-1] in family.embeddings]
    assert bool(blocks) == bool(family.embeddings)
    names = {f"{b}.{p}" for b in blocks for p, _ in model.get_submodule(b).named_parameters()}
    assert names <= embedding_parameter_names(model)

    # Coeff-Tuning attaches to every layer and leaves the outputs alone at init.
    reference = _output(delta_model.unload(), inputs)
    delta_model = get_delta_model(model, CoeffTuningConfig())
    assert (
        len(delta_model.trainable_parameter_names())
        - sum(1 for n in delta_model.trainable_parameter_names() if n.split(".")[0] in family.task_heads)
        == LAYERS
    )
    with torch.no_grad():
        torch.testing.assert_close(_output(delta_model, inputs), reference, rtol=1e-5, atol=1e-5)
    delta_model.unload()
