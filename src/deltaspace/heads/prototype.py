"""The label-prototype head: a text scored by the cosine between its encoding and its labels' names.

The subspace study compares the solutions of one delta method across tasks, so a solution must have the
same shape on every task. A fresh linear head would add ``hidden x num_labels`` task-specific parameters;
:class:`PrototypeClassifier` has none. It scores a text by the cosine between its mean-pooled encoding and
fixed embeddings of the label names ("positive", "negative", ...) computed once from the frozen base, so
everything the task learns lives in the delta.

Usage with deltas: the classifier is the model you hand to ``get_delta_model``; the deltas attach into the
encoder inside it (``classifier.encoder``), and the prototypes stay a buffer, never a parameter::

    classifier = PrototypeClassifier.from_label_names(encoder, tokenizer, task.label_names)
    delta_model = get_delta_model(classifier, LoraConfig(...), seed=0)
    out = delta_model(input_ids=..., attention_mask=..., labels=...)   # out.loss, out.logits
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from deltaspace.assets.embed import mean_pool
from deltaspace.heads.labels import label_text

DEFAULT_TEMPERATURE = 20.0


class PrototypeClassifier(nn.Module):
    """logits[b, k] = τ · cos(mean_pool(encoder(x_b)), e_k) with fixed label embeddings e_k and fixed τ.

    ``encoder`` is any AutoModel-like module returning ``last_hidden_state``. ``prototypes`` (K, D) is a
    buffer (saved in ``state_dict`` but never trained); build it with :meth:`from_label_names` so it comes
    from the frozen base. The module has no parameters of its own besides the encoder's.
    """

    # The loss is a per-batch mean, not normalised by a token count: tell HF's Trainer so it scales for
    # gradient accumulation itself.
    accepts_loss_kwargs = False

    def __init__(
        self,
        encoder: nn.Module,
        prototypes: torch.Tensor,
        temperature: float = DEFAULT_TEMPERATURE,
        label_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if prototypes.ndim != 2:
            raise ValueError(f"prototypes must be (num_labels, hidden), got shape {tuple(prototypes.shape)}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.encoder = encoder
        self.register_buffer("prototypes", F.normalize(prototypes.detach().float(), dim=-1))
        self.temperature = float(temperature)
        self.num_labels = int(prototypes.shape[0])
        self.label_names = list(label_names) if label_names is not None else None
        if self.label_names is not None and len(self.label_names) != self.num_labels:
            raise ValueError(f"{len(self.label_names)} label names for {self.num_labels} prototypes")

    @classmethod
    def from_label_names(
        cls,
        encoder: nn.Module,
        tokenizer: Any,
        label_names: Sequence[str],
        temperature: float = DEFAULT_TEMPERATURE,
    ) -> PrototypeClassifier:
        """Embed each label name ('not_entailment' is read as 'not entailment') with the encoder as it is now.

        Call this before any delta is attached, so the prototypes come from the frozen base.
        """
        if len(label_names) < 2:
            raise ValueError(f"a classifier needs at least 2 label names, got {list(label_names)}")
        prototypes = label_prototypes(encoder, tokenizer, label_names)
        return cls(encoder, prototypes, temperature=temperature, label_names=label_names)

    # HF-style accessors the deltas and tools look for; they all describe the encoder.
    @property
    def config(self) -> Any:
        return self.encoder.config

    @property
    def device(self) -> torch.device:
        return self.prototypes.device

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def set_attn_implementation(self, implementation: Any) -> None:
        self.encoder.set_attn_implementation(implementation)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        prototypes: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        """``prototypes`` (K, D), if given, replace the stored ones for this call: one model then serves
        every task of a multi-task study (the subspace stages pass each task's prototypes with its batch)."""
        kwargs.pop("num_items_in_batch", None)  # passed by HF's Trainer; the loss here is a plain mean
        kwargs.pop("return_dict", None)
        outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
        pooled = mean_pool(outputs.last_hidden_state, attention_mask).float()
        table = self.prototypes if prototypes is None else F.normalize(prototypes.to(pooled).float(), dim=-1)
        logits = self.temperature * F.normalize(pooled, dim=-1) @ table.T
        loss = F.cross_entropy(logits, labels.to(logits.device).long()) if labels is not None else None
        return SequenceClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=getattr(outputs, "hidden_states", None),
            attentions=getattr(outputs, "attentions", None),
        )


def label_prototypes(encoder: nn.Module, tokenizer: Any, label_names: Sequence[str]) -> torch.Tensor:
    """(K, D) mean-pooled encodings of the label names ('not_entailment' is read as 'not entailment')."""
    texts = [label_text(name) for name in label_names]
    prototypes = encode_mean_pooled(encoder, tokenizer, texts)
    unit = F.normalize(prototypes, dim=-1)
    same = torch.triu(unit @ unit.T > 1 - 1e-6, diagonal=1).nonzero().tolist()
    if same:
        i, j = same[0]
        raise ValueError(
            f"label names {texts[i]!r} and {texts[j]!r} encode to the same prototype (unknown to the tokenizer?); "
            "give the task distinct, readable label names"
        )
    return prototypes


@torch.no_grad()
def encode_mean_pooled(encoder: nn.Module, tokenizer: Any, texts: Sequence[str]) -> torch.Tensor:
    """Mean-pooled encodings (len(texts), D) of ``texts``, in eval mode (no dropout), as float32."""
    was_training = encoder.training
    encoder.eval()
    try:
        device = next(encoder.parameters()).device
        batch = tokenizer(list(texts), padding=True, return_tensors="pt")
        batch = {key: value.to(device) for key, value in batch.items()}
        hidden = encoder(**batch, return_dict=True).last_hidden_state
        return mean_pool(hidden, batch.get("attention_mask")).float()
    finally:
        encoder.train(was_training)
