"""Prompt tuning (Lester et al. 2021): trainable soft-prompt vectors inserted into the input embeddings.

Our own implementation rather than PEFT's: PEFT's prompt learning lives in the ``PeftModel*`` forward wrappers
and cannot be injected into a plain model (``peft.inject_adapter_in_model`` refuses prompt-learning configs), so
it does not fit the attach contract; and PEFT always prepends the prompt, which pushes BERT's [CLS] off
position 0 where the pooler reads it. Here the prompt goes *after* the first token for bidirectional encoders
(keeping [CLS] first) and in front for causal models (whose pooling reads the last token).

The vectors live on the model as ``ds_prompt.embedding`` (P, D) and are read in :meth:`prepare_inputs` at call
time, so substituting that tensor (``torch.func.functional_call`` over the DeltaModel) takes effect.
``prepare_inputs`` turns ``input_ids`` into ``inputs_embeds`` through the model's word embeddings, inserts the
prompt, and extends ``attention_mask`` (ones), ``token_type_ids`` (zeros) and token-level ``labels`` (-100);
the model adds its own position embeddings. Causal LMs can generate from the rewritten ``inputs_embeds``.
Causal *sequence classifiers* pool the last position when given ``inputs_embeds`` (they find the last real
token only from ``input_ids``), so for them right-padded batches are re-packed with the padding on the left;
the per-sequence outputs are those of the unpadded rows. Outputs have P more positions than the input.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from deltaspace.deltas.base import AttachedDelta, DeltaConfig
from deltaspace.deltas.registry import Preset, register_delta

PROMPT_ATTR = "ds_prompt"
POSITIONS = ("auto", "after_first", "start")


class SoftPrompt(nn.Module):
    def __init__(self, init: torch.Tensor) -> None:
        super().__init__()
        self.embedding = nn.Parameter(init)


def is_causal_model(model: nn.Module) -> bool:
    """True when the model's attention is causal (decoder-only LMs), judged from its attention modules."""
    if getattr(getattr(model, "config", None), "is_decoder", False):
        return True
    return any(getattr(m, "is_causal", False) is True for m in model.modules())


def _insert(tensor: torch.Tensor, at: int, block: torch.Tensor) -> torch.Tensor:
    return torch.cat([tensor[:, :at], block, tensor[:, at:]], dim=1)


# lr: the tuned comparison (suite v1, MiniLM-L6) chose 1e-2 on 6 of 10 tasks (docs/results.md).
@register_delta(
    Preset(
        "prompt",
        "prompt tuning, 20 soft tokens from random vocabulary embeddings",
        changes_output_at_init=True,
        lr=1e-2,
    )
)
@dataclasses.dataclass
class PromptTuningConfig(DeltaConfig):
    """``num_virtual_tokens`` soft prompt vectors.

    Initialisation: the word embeddings of ``init_token_ids``, else of ``init_text`` tokenised with
    ``tokenizer_name_or_path``, else of random vocabulary tokens (drawn from the seeded RNG); the token list is
    repeated to fill ``num_virtual_tokens``. position: "auto" (after the first token for bidirectional encoders,
    in front for causal models), "after_first" or "start".
    """

    method = "prompt"

    num_virtual_tokens: int = 20
    position: str = "auto"
    init_text: str | None = None
    tokenizer_name_or_path: str | None = None
    init_token_ids: list[int] | None = None

    def __post_init__(self) -> None:
        if self.num_virtual_tokens < 1:
            raise ValueError(f"num_virtual_tokens must be >= 1, got {self.num_virtual_tokens}")
        if self.position not in POSITIONS:
            raise ValueError(f"prompt position {self.position!r} is not one of {POSITIONS}")
        if self.init_text is not None and self.tokenizer_name_or_path is None and self.init_token_ids is None:
            raise ValueError("init_text needs tokenizer_name_or_path (or pass init_token_ids instead)")

    def _init_token_ids(self, vocab_size: int) -> torch.Tensor:
        if self.init_token_ids is not None:
            ids = list(self.init_token_ids)
        elif self.init_text is not None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_name_or_path)
            ids = tokenizer(self.init_text, add_special_tokens=False)["input_ids"]
        else:
            return torch.randint(vocab_size, (self.num_virtual_tokens,))
        if not ids:
            raise ValueError(
                "prompt init text/token list is empty; give a non-empty init_text or init_token_ids"
            )
        bad = [i for i in ids if not 0 <= i < vocab_size]
        if bad:
            raise ValueError(
                f"prompt init token ids {bad[:5]} are outside the vocabulary (size {vocab_size})"
            )
        repeats = -(-self.num_virtual_tokens // len(ids))
        return torch.tensor((ids * repeats)[: self.num_virtual_tokens])

    def attach(self, model: nn.Module) -> AttachedPrompt:
        if hasattr(model, PROMPT_ATTR):
            raise ValueError("the model already carries a soft prompt; detach it before attaching another")
        embeddings = model.get_input_embeddings()
        if not isinstance(embeddings, nn.Embedding):
            raise ValueError(
                f"prompt tuning needs an nn.Embedding input table, got {type(embeddings).__name__}"
            )
        ids = self._init_token_ids(embeddings.num_embeddings).to(embeddings.weight.device)
        init = embeddings.weight.detach()[ids].clone()
        if init.dtype in (torch.float16, torch.bfloat16):
            init = init.float()  # trainable tensors stay float32 under a half-precision base
        model.add_module(PROMPT_ATTR, SoftPrompt(init))
        position = self.position
        if position == "auto":
            position = "start" if is_causal_model(model) else "after_first"
        # Given inputs_embeds, causal sequence classifiers pool the last position (they can only find the last
        # real token from input_ids), so right-padded rows must be packed to the left for them.
        pack_left = is_causal_model(model) and type(model).__name__.endswith("ForSequenceClassification")
        return AttachedPrompt(self, position, pack_left)


class AttachedPrompt(AttachedDelta):
    def __init__(self, config: PromptTuningConfig, position: str, pack_left: bool = False) -> None:
        self.config = config
        self.position = position
        self.pack_left = pack_left
        self.enabled = True  # False inside DeltaModel.disable_adapter: inputs pass through untouched

    def parameter_names(self) -> list[str]:
        return [f"{PROMPT_ATTR}.embedding"]

    def detach(self, model: nn.Module) -> None:
        if hasattr(model, PROMPT_ATTR):
            delattr(model, PROMPT_ATTR)

    def merge_refusal(self, model: nn.Module) -> str | None:
        return "soft prompt tokens are extra inputs, not a weight of the base model"

    def disable_refusal(self, model: nn.Module) -> str | None:
        return None

    def set_enabled(self, model: nn.Module, enabled: bool) -> None:
        self.enabled = enabled

    def prepare_inputs(self, inputs: dict[str, Any], model: nn.Module) -> dict[str, Any]:
        if not self.enabled:
            return inputs
        inputs = dict(inputs)
        if inputs.get("past_key_values") is not None:
            raise ValueError("prompt tuning rewrites whole inputs; call it without past_key_values")
        if inputs.get("position_ids") is not None:
            raise ValueError("prompt tuning shifts token positions itself; call it without position_ids")
        input_ids = inputs.pop("input_ids", None)
        embeds = inputs.pop("inputs_embeds", None)
        if (input_ids is None) == (embeds is None):
            raise ValueError("prompt tuning needs exactly one of input_ids or inputs_embeds")
        if embeds is None:
            embeds = model.get_input_embeddings()(input_ids)
        batch, length = embeds.shape[:2]
        prompt = getattr(model, PROMPT_ATTR).embedding
        prompt = prompt.to(embeds.dtype).unsqueeze(0).expand(batch, -1, -1)
        num = prompt.shape[1]
        at = min(1, length) if self.position == "after_first" else 0
        inputs["inputs_embeds"] = _insert(embeds, at, prompt)

        mask = inputs.get("attention_mask")
        if mask is None:
            mask = torch.ones(batch, length, dtype=torch.long, device=embeds.device)
        if mask.dim() != 2:
            raise ValueError(
                f"prompt tuning needs a 2-D attention_mask (batch, seq), got shape {tuple(mask.shape)}"
            )
        inputs["attention_mask"] = _insert(mask, at, mask.new_ones(batch, num))
        token_types = inputs.get("token_type_ids")
        if token_types is not None:
            inputs["token_type_ids"] = _insert(token_types, at, token_types.new_zeros(batch, num))
        labels = inputs.get("labels")
        if (
            isinstance(labels, torch.Tensor)
            and labels.dim() >= 2
            and tuple(labels.shape[:2]) == (batch, length)
        ):
            inputs["labels"] = _insert(labels, at, labels.new_full((batch, num, *labels.shape[2:]), -100))
        if self.pack_left and not bool(inputs["attention_mask"][:, -1].all()):
            _pack_left(inputs)
        return inputs


def _pack_left(inputs: dict[str, Any]) -> None:
    """Move each row's padding to the front (stable, so token order is kept); per-sequence outputs are unchanged."""
    order = torch.argsort(inputs["attention_mask"], dim=1, stable=True)
    for key in ("inputs_embeds", "attention_mask", "token_type_ids", "labels"):
        value = inputs.get(key)
        if isinstance(value, torch.Tensor) and value.dim() >= 2 and value.shape[:2] == order.shape:
            index = order.view(*order.shape, *([1] * (value.dim() - 2))).expand_as(value)
            inputs[key] = torch.gather(value, 1, index)
