"""Routing refusals that must come at attach time, not at the first forward."""

import pytest
import torch
from peft import LoraConfig

from deltaspace import CoeffTuningConfig, get_delta_model
from deltaspace.deltas.prefix import PrefixTuningConfig
from deltaspace.errors import UserInputError


@pytest.mark.parametrize("config", [CoeffTuningConfig(), PrefixTuningConfig()], ids=["coeff", "prefix"])
def test_flex_attention_is_refused_at_attach(make_bert, text_batch, config):
    model = make_bert(attn_implementation="flex_attention")
    before = [n for n, _ in model.named_modules()]
    with pytest.raises(
        UserInputError,
        match=r"^BertSelfAttention uses attn_implementation='flex_attention', which attention-level deltas "
        r"\(Coeff-Tuning, prefix\) cannot hook; load the model with attn_implementation='sdpa' or 'eager'$",
    ):
        get_delta_model(model, config)
    assert [n for n, _ in model.named_modules()] == before  # nothing left behind
    assert all(
        getattr(m, "config", model.config)._attn_implementation == "flex_attention" for m in model.modules()
    )
    # A delta that does not touch the attention keeps working on the flex model (no backward on CPU).
    with torch.no_grad():
        get_delta_model(model, LoraConfig(r=2, target_modules=["query"]))(**text_batch)
