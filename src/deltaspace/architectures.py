"""The model families deltaspace knows by name: one entry a family, every name-based rule in one table.

What transformers says about a model itself comes first: a model class that records its outputs
(``_can_record_outputs``, transformers' attention-interface style) and lets the attention implementation be
chosen (``_supports_sdpa`` / ``_supports_flash_attn`` / ``_supports_flex_attn`` / ``_supports_attention_backend``)
names the classes of its (cross-)attention layers there
(:func:`deltaspace.attention.discovery.find_attention_modules` reads both). What transformers does not say (which child of an attention layer projects the queries, where a
sublayer's output projection sits, what a fresh task head is called) is in :data:`FAMILIES`. The DETs read it
here: LoRA and IA3's presets the Q/K/V names, adapters the sublayer outputs, Coeff the value projection (to
merge a diagonal ΔC), prefix tuning the head counts, BitFit and full fine-tuning the embedding and head names.

Adding a family = one :class:`Family` entry below + a tiny-config fixture in tests/test_architectures.py.
Families are tried in order; the first whose projections a model has is the model's (see :func:`family_of`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Family:
    """The names one model family uses (module-name suffixes unless said otherwise)."""

    name: str
    model_types: tuple[str, ...]  # transformers' config.model_type values that are this family
    query: str | None  # projections inside an attention module; None where the family fuses them
    key: str | None
    value: str | None
    fused_qkv: str | None = None  # one projection to [q; k; v] (GPT-2's Conv1D c_attn, timm's Linear qkv)
    attention_output: str = ""  # regex on the end of the attention sublayer's output projection's name
    ffn_output: str = ""  # regex on the end of the feed-forward sublayer's output projection's name
    heads_attr: str = "num_attention_heads"  # the attention module's query-head count attribute
    head_dim_attr: str = "head_dim"  # the attention module's head size attribute
    embeddings: tuple[str, ...] = ()  # module names of the embedding block
    task_heads: tuple[str, ...] = ()  # direct children of a model that are fresh task heads
    cross_attention: str | None = None  # the attribute holding a decoder's cross-attention
    # attention classes that go through transformers' registry in models that do not record their outputs
    # (so carry no flag naming them): found by class name.
    routed_without_flag: tuple[str, ...] = ()


FAMILIES: tuple[Family, ...] = (
    Family(
        "bert",
        ("bert", "roberta", "electra", "xlm-roberta", "vit", "deit", "layoutlm"),
        "query",
        "key",
        "value",
        attention_output=r"attention\.output\.dense",  # also crossattention.output.dense
        ffn_output=r"(?<!attention\.)output\.dense",  # layer.N.output.dense
        head_dim_attr="attention_head_size",
        embeddings=("embeddings",),
        task_heads=("classifier", "qa_outputs"),
        cross_attention="crossattention",
    ),
    Family(
        "llama",
        ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "smollm3"),
        "q_proj",
        "k_proj",
        "v_proj",
        attention_output=r"(?:self_attn|attention|attn)\.(?:o_proj|out_proj)",  # out_proj: BART, CLIP
        ffn_output=r"(?:mlp|ffn|feed_forward)\.(?:down_proj|fc2|w2)",  # fc2: BART, CLIP; w2: Mixtral-style
        heads_attr="num_heads",
        embeddings=("embed_tokens", "embed_positions"),
        task_heads=("score", "classification_head"),
        cross_attention="encoder_attn",
    ),
    Family(
        "distilbert",
        ("distilbert",),
        "q_lin",
        "k_lin",
        "v_lin",
        attention_output=r"attention\.out_lin",
        ffn_output=r"ffn\.lin2",
        heads_attr="n_heads",
        embeddings=("embeddings",),
        task_heads=("pre_classifier", "classifier"),
    ),
    Family(
        "gpt2",
        ("gpt2",),
        None,
        None,
        None,
        fused_qkv="c_attn",
        attention_output=r"attn\.c_proj",
        ffn_output=r"mlp\.c_proj",
        heads_attr="num_heads",
        embeddings=("wte", "wpe"),
        task_heads=("score",),
        cross_attention="crossattention",
    ),
    Family(
        "t5",
        ("t5", "mt5", "longt5"),
        "q",
        "k",
        "v",
        attention_output=r"(?:SelfAttention|EncDecAttention)\.o",
        ffn_output=r"DenseReluDense\.wo",
        heads_attr="n_heads",
        embeddings=("embed_tokens",),  # encoder/decoder's view of the shared table
        cross_attention="EncDecAttention",
        routed_without_flag=("LongT5Attention",),
    ),
    Family(  # timm-style ViTs (fused qkv, num_heads, proj), found by duck typing: timm is never imported
        "timm",
        (),
        None,
        None,
        None,
        fused_qkv="qkv",
        attention_output=r"attn\.proj",
        ffn_output=r"mlp\.fc2",
        heads_attr="num_heads",
        task_heads=("head",),
    ),
)


def _union(values: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))


# The union of every family's names, for rules that look a model's modules up by name alone.
TASK_HEAD_NAMES = _union([n for f in FAMILIES for n in f.task_heads])
EMBEDDING_NAMES = _union([n for f in FAMILIES for n in f.embeddings])
VALUE_NAMES = _union([f.value or "" for f in FAMILIES])
HEAD_COUNT_ATTRS = _union(["num_attention_heads", *(f.heads_attr for f in FAMILIES), "n_head"])
HEAD_DIM_ATTRS = _union([f.head_dim_attr for f in FAMILIES])
CROSS_ATTENTION_NAMES = frozenset(
    n.lower() for n in ("cross_attn", "cross_attention", *(f.cross_attention or "" for f in FAMILIES)) if n
)
ROUTED_WITHOUT_FLAG = frozenset(c for f in FAMILIES for c in f.routed_without_flag)
ATTENTION_OUTPUT_PATTERNS = _union([f.attention_output for f in FAMILIES])
FFN_OUTPUT_PATTERNS = _union([f.ffn_output for f in FAMILIES])


def sublayer_outputs(model: nn.Module, *, attention: bool = True, ffn: bool = True) -> list[str]:
    """Qualified names of the attention-output and/or feed-forward-output projections, in module order."""
    patterns = (ATTENTION_OUTPUT_PATTERNS if attention else ()) + (FFN_OUTPUT_PATTERNS if ffn else ())
    if not patterns:
        return []
    regex = re.compile(r"(?:^|\.)(?:" + "|".join(patterns) + r")$")
    return [name for name, _ in model.named_modules() if name and regex.search(name)]


def projection_names(family: Family, which: str) -> tuple[str, ...]:
    """The module-name suffixes of a family's projections: ``which`` is "query/value" or "key/value"."""
    if family.fused_qkv is not None:
        return (family.fused_qkv,)
    first = family.query if which == "query/value" else family.key
    return tuple(n for n in (first, family.value) if n)


def family_of(module_names: list[str]) -> Family | None:
    """The first family whose Q/K/V projections are all among ``module_names`` (qualified names)."""

    def has(suffix: str) -> bool:
        return any(name == suffix or name.endswith("." + suffix) for name in module_names)

    for family in FAMILIES:
        wanted = [family.fused_qkv] if family.fused_qkv else [family.query, family.key, family.value]
        if all(n is not None and has(n) for n in wanted):
            return family
    return None
