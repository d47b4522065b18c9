"""Sentence embeddings from a frozen encoder: masked mean pooling, then L2 normalisation.

This is the pooling the sentence-transformers MiniLM checkpoints were trained with (their
``1_Pooling/config.json`` says mean). Texts are sorted by length so each batch pads little.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Average of the hidden states over the positions the mask keeps ((B, T, D) -> (B, D))."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    if attention_mask.shape[:2] != hidden.shape[:2]:
        raise ValueError(
            f"attention_mask {tuple(attention_mask.shape)} does not cover the hidden states "
            f"{tuple(hidden.shape[:2])}; a delta that adds tokens must extend the mask in prepare_inputs"
        )
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


def encode(
    model,
    tokenizer,
    texts: Sequence[str],
    text_pairs: Sequence[str] | None = None,
    *,
    batch_size: int = 64,
    max_length: int = 128,
    normalize: bool = True,
) -> torch.Tensor:
    """(N, hidden) float32 embeddings of ``texts`` (or of the pairs ``texts[i], text_pairs[i]``), input order."""
    if text_pairs is not None and len(text_pairs) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(text_pairs)} text pairs")
    lengths = [len(t) + (len(text_pairs[i]) if text_pairs is not None else 0) for i, t in enumerate(texts)]
    order = sorted(range(len(texts)), key=lengths.__getitem__)
    device = next(model.parameters()).device
    out = torch.empty(len(texts), model.config.hidden_size)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            first = [texts[i] for i in index]
            second = [text_pairs[i] for i in index] if text_pairs is not None else None
            batch = tokenizer(
                first, second, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            ).to(device)
            hidden = model(**batch).last_hidden_state
            pooled = mean_pool(hidden, batch["attention_mask"]).float()
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[torch.tensor(index)] = pooled.cpu()
    return out
