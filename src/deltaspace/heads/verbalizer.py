"""The label-word ("verbalizer") head: a causal LM classifies a text by how likely it finds each label's word.

``logits[b, k] = Σ_j log p(w_kj | text_b, prompt, w_k1 .. w_k(j-1))``: the log-probability the LM gives label
k's word (tokenised as it follows the prompt, with a leading space: " positive") after the text and a fixed
prompt suffix (by default ``"\\nOptions: negative, positive.\\nAnswer:"``). The loss is the cross-entropy over
these K scores. Like :class:`~deltaspace.heads.PrototypeClassifier` it adds no parameters: the LM's own
knowledge of the words is the head, so the frozen LM already classifies (zero-shot) and everything the task
learns lives in the delta.

The data pipeline is the one of every head (the plain tokenised text, padded by the collator); the classifier
appends the prompt and the label tokens itself, each row ``[text][prompt][label tokens][padding]``, padded on
the right so every position is that of the unpadded sequence. When every label word is one token, one forward
of B rows ``[text][prompt]`` scores all K labels at the last position; otherwise B·K rows, one per label.

Usage with deltas: hand the classifier to ``get_delta_model``; the deltas attach into the LM inside it
(``classifier.lm``), and the prompt and label tokens stay buffers::

    lm, tokenizer = load_model("smollm2-135m", kind="causal-lm")
    classifier = VerbalizerClassifier.from_label_words(lm, tokenizer, ["negative", "positive"])
    delta_model = get_delta_model(classifier, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]), seed=0)
    out = delta_model(input_ids=..., attention_mask=..., labels=...)   # out.loss, out.logits (B, K)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from deltaspace.deltas.prompt import is_causal_model

DEFAULT_PROMPT = "\nOptions: {labels}.\nAnswer:"  # {labels}: the label words, comma-joined


class VerbalizerClassifier(nn.Module):
    """logits[b, k] = Σ_j log p(label word k's token j | text b, prompt, its tokens before j) under ``lm``.

    ``lm`` is an ``AutoModelForCausalLM``-like decoder. ``prompt_ids`` (the suffix appended to every text) and
    ``label_ids`` (each label word's tokens) become buffers; build them with :meth:`from_label_words`. The
    module has no parameters of its own besides the LM's. ``fast_path=False`` scores single-token label words
    the general way too (one row per label), which the one-row-per-text fast path must match.
    """

    # The loss is a per-batch mean, not normalised by a token count: tell HF's Trainer so it scales for
    # gradient accumulation itself.
    accepts_loss_kwargs = False

    def __init__(
        self,
        lm: nn.Module,
        prompt_ids: Sequence[int],
        label_ids: Sequence[Sequence[int]],
        label_words: Sequence[str] | None = None,
        *,
        prompt: str | None = None,
        fast_path: bool = True,
    ) -> None:
        super().__init__()
        words = list(label_words) if label_words is not None else [str(list(ids)) for ids in label_ids]
        _check_labels(words, label_ids)
        if len(prompt_ids) == 0:
            raise ValueError(
                "the verbalizer prompt tokenises to no tokens; the first label token is read after it, so give "
                "a prompt such as '\\nAnswer:'"
            )
        if not is_causal_model(lm):
            raise ValueError(
                f"the verbalizer head needs a decoder-only causal LM (e.g. smollm2-135m); {type(lm).__name__} is "
                "not one"
            )
        if lm.get_output_embeddings() is None:
            raise ValueError(
                f"{type(lm).__name__} has no LM head (get_output_embeddings() is None); load the model with "
                "kind='causal-lm'"
            )
        self.lm = lm
        lengths = [len(ids) for ids in label_ids]
        table = torch.zeros(len(label_ids), max(lengths), dtype=torch.long)
        for row, ids in enumerate(label_ids):
            table[row, : len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
        self.register_buffer("prompt_ids", torch.as_tensor(list(prompt_ids), dtype=torch.long))
        self.register_buffer("label_ids", table)  # (K, longest word), 0 past each word's end
        self.register_buffer("label_lengths", torch.as_tensor(lengths, dtype=torch.long))
        self.num_labels = len(label_ids)
        self.label_words = list(label_words) if label_words is not None else None
        self.prompt = prompt
        self.single_token = max(lengths) == 1
        self.fast_path = fast_path

    @classmethod
    def from_label_words(
        cls,
        lm: nn.Module,
        tokenizer: Any,
        label_words: Sequence[str],
        prompt: str | None = None,
        *,
        fast_path: bool = True,
    ) -> VerbalizerClassifier:
        """Tokenise ``label_words`` (one a class, in label order) and the prompt suffix.

        ``prompt`` defaults to :data:`DEFAULT_PROMPT`; ``{labels}`` in it becomes the comma-joined words. Each
        word is scored with a leading space (" positive"), tokenised as it follows the prompt.
        """
        words = [str(word).strip() for word in label_words]
        if len(words) < 2:
            raise ValueError(f"a verbalizer needs at least 2 label words, got {words}")
        if not all(words):
            raise ValueError(
                f"label word {words.index('') + 1} of {words} is empty; give every class a word, e.g. "
                "label_words='negative,positive'"
            )
        text = (DEFAULT_PROMPT if prompt is None else prompt).replace("{labels}", ", ".join(words))
        prompt_ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        label_ids = [label_token_ids(tokenizer, text, prompt_ids, word) for word in words]
        return cls(lm, prompt_ids, label_ids, words, prompt=text, fast_path=fast_path)

    # HF-style accessors the deltas and tools look for; they all describe the LM.
    @property
    def config(self) -> Any:
        return self.lm.config

    @property
    def device(self) -> torch.device:
        return self.prompt_ids.device

    def get_input_embeddings(self) -> nn.Module:
        return self.lm.get_input_embeddings()

    def set_attn_implementation(self, implementation: Any) -> None:
        self.lm.set_attn_implementation(implementation)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        """``input_ids`` (B, L): the tokenised texts, padded on either side (``attention_mask`` marks the real
        tokens). Prompt tuning hands over ``inputs_embeds`` instead; the rows are then built from vectors."""
        kwargs.pop("num_items_in_batch", None)  # passed by HF's Trainer; the loss here is a plain mean
        kwargs.pop("return_dict", None)
        kwargs.pop("token_type_ids", None)  # a BERT-style tokenizer's segment ids: a causal LM takes none
        if kwargs:
            raise ValueError(
                f"VerbalizerClassifier builds each row itself and takes no {', '.join(sorted(kwargs))}"
            )
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("VerbalizerClassifier needs exactly one of input_ids or inputs_embeds")
        tokens = input_ids if input_ids is not None else inputs_embeds
        if attention_mask is None:
            attention_mask = torch.ones(tokens.shape[:2], dtype=torch.long, device=tokens.device)
        logits = self.label_scores(tokens, attention_mask)
        loss = F.cross_entropy(logits, labels.to(logits.device).long()) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def label_scores(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, K) summed log-probabilities of each label word after each text and the prompt (float32)."""
        batch, device = tokens.shape[0], tokens.device
        num_labels, prompt_length = self.num_labels, self.prompt_ids.numel()
        rows_of = torch.arange(batch, device=device)
        fast = self.fast_path and self.single_token
        if fast:
            # One row a text, [text][prompt]: its last position predicts every label's one token.
            tails = self.prompt_ids[None]
            tail_lengths = self.label_lengths.new_full((1,), prompt_length)
            text_of_row, tail_of_row = rows_of, torch.zeros_like(rows_of)
            slots = torch.arange(1, device=device)
        else:
            # Row (b, k) = [text b][prompt][word k but its last token]: the position j after the prompt's last
            # token predicts word k's token j.
            tails = torch.cat([self.prompt_ids.expand(num_labels, -1), self.label_ids[:, :-1]], dim=1)
            tail_lengths = prompt_length + self.label_lengths - 1
            text_of_row = rows_of.repeat_interleave(num_labels)
            tail_of_row = torch.arange(num_labels, device=device).repeat(batch)
            slots = torch.arange(self.label_ids.shape[1], device=device)
        rows, row_mask, text_lengths = self._rows(
            tokens, attention_mask, tails, tail_lengths, text_of_row, tail_of_row
        )
        log_probs = self._log_probs_at(rows, row_mask, text_lengths[:, None] + prompt_length - 1 + slots)
        if fast:
            return log_probs[:, 0, self.label_ids[:, 0]]
        words = self.label_ids[tail_of_row]
        picked = log_probs.gather(-1, words[..., None]).squeeze(-1)
        in_word = slots[None] < self.label_lengths[tail_of_row][:, None]
        return torch.where(in_word, picked, 0.0).sum(-1).view(batch, num_labels)

    def _rows(
        self,
        tokens: torch.Tensor,
        attention_mask: torch.Tensor,
        tails: torch.Tensor,
        tail_lengths: torch.Tensor,
        text_of_row: torch.Tensor,
        tail_of_row: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(rows, mask, text lengths)``: row r = [real tokens of text text_of_row[r]][tails[tail_of_row[r]]
        up to its length][padding], tokens (R, W) or vectors (R, W, D) as ``tokens`` is."""
        real = attention_mask.bool()
        # Each text's real tokens first, in order, wherever the collator put the padding.
        texts = _take(tokens, torch.argsort((~real).long(), dim=1, stable=True))
        if tokens.dim() == 3:
            tails = self.lm.get_input_embeddings()(tails).to(tokens.dtype)
        count, length, tail_width = len(text_of_row), tokens.shape[1], tails.shape[1]
        padding = tokens.new_zeros((count, 1, *tokens.shape[2:]))
        source = torch.cat([texts[text_of_row], tails[tail_of_row], padding], dim=1)
        text_lengths = real.sum(1)[text_of_row]
        ends = text_lengths + tail_lengths[tail_of_row]
        place = torch.arange(int(ends.max()), device=tokens.device)[None]
        index = torch.where(place < text_lengths[:, None], place, length + place - text_lengths[:, None])
        index = torch.where(place < ends[:, None], index, length + tail_width)
        return _take(source, index), (place < ends[:, None]).to(attention_mask.dtype), text_lengths

    def _log_probs_at(self, rows: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(R, J, V) float32 log-softmax of the LM's logits at ``positions`` (R, J) of each row."""
        head = self.lm.get_output_embeddings()

        # Only the J positions a row is scored at go through the LM head (all of them would make a
        # rows × length × vocabulary tensor, GBs for a 49k vocabulary); selecting the head's input, not
        # calling the head ourselves, keeps the model's own logit processing (soft-capping, scaling).
        def select(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            return (_take(args[0], positions), *args[1:])

        handle = head.register_forward_pre_hook(select)
        try:
            key = "inputs_embeds" if rows.dim() == 3 else "input_ids"
            logits = self.lm(**{key: rows}, attention_mask=mask, use_cache=False).logits
        finally:
            handle.remove()
        if logits.shape[:2] != positions.shape:
            raise RuntimeError(
                f"{type(self.lm).__name__} did not compute its logits through get_output_embeddings(); the "
                "verbalizer head cannot select the scored positions"
            )
        return logits.float().log_softmax(-1)


def label_token_ids(tokenizer: Any, prompt: str, prompt_ids: Sequence[int], word: str) -> list[int]:
    """``word``'s tokens as they follow ``prompt``: " word" tokenised after the prompt where the prompt's own
    tokens come out unchanged (byte-level BPE), else " word" alone."""
    joined = list(tokenizer(prompt + " " + word, add_special_tokens=False)["input_ids"])
    if len(joined) > len(prompt_ids) and joined[: len(prompt_ids)] == list(prompt_ids):
        return joined[len(prompt_ids) :]
    return list(tokenizer(" " + word, add_special_tokens=False)["input_ids"])


def _check_labels(words: list[str], label_ids: Sequence[Sequence[int]]) -> None:
    if len(label_ids) < 2:
        raise ValueError(f"a verbalizer needs at least 2 labels, got {words}")
    if len(words) != len(label_ids):
        raise ValueError(f"{len(words)} label words for {len(label_ids)} token sequences")
    seen: dict[tuple[int, ...], str] = {}
    for word, ids in zip(words, label_ids, strict=True):
        key = tuple(int(i) for i in ids)
        if not key:
            raise ValueError(f"label word {word!r} tokenises to no tokens; give every class a word")
        if key in seen:
            raise ValueError(
                f"label words {seen[key]!r} and {word!r} tokenise to the same tokens {list(key)}; give each class "
                "its own word (label_words, --label-words)"
            )
        seen[key] = word


def _take(source: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``source[r, index[r, p]]`` for tokens (R, L) or vectors (R, L, D)."""
    if source.dim() == 3:
        index = index[..., None].expand(-1, -1, source.shape[-1])
    return source.gather(1, index)
