"""DeltaModel.merge_and_unload: foldable deltas become base weights; the others are refused untouched."""

import pytest
import torch
from peft import IA3Config, LoraConfig
from peft.tuners.tuners_utils import BaseTunerLayer

from deltaspace import (
    AdapterConfig,
    BitFitConfig,
    CoeffTuningConfig,
    FullFineTuningConfig,
    PrefixTuningConfig,
    PromptTuningConfig,
    get_delta_model,
)
from deltaspace.errors import UserInputError

LORA_BERT = dict(r=2, target_modules=["query", "value"])


def _perturb(model, seed=0, scale=0.3, diagonal_coeff=True):
    """Move every trained tensor off its initial value; Coeff's ΔC stays diagonal unless told otherwise."""
    g = torch.Generator().manual_seed(seed)
    solution = {}
    for name, tensor in model.solution().items():
        value = torch.randn(tensor.shape, generator=g) * scale
        if name.endswith("ds_coeff.delta") and diagonal_coeff:
            value = torch.diag(torch.diagonal(value))
        solution[name] = value
    model.load_solution(solution)


def _plain(model):
    """No delta module left: no ds_* submodule, no PEFT layer, no forward hook."""
    names = [part for name, _ in model.named_modules() for part in name.split(".")]
    return (
        not any(n.startswith("ds_") for n in names)
        and not any(isinstance(m, BaseTunerLayer) for m in model.modules())
        and not any(m._forward_hooks for m in model.modules())
    )


def _merge_and_compare(model, *configs, run):
    with torch.no_grad():
        pristine = run(model)
    delta_model = get_delta_model(model, *configs)
    _perturb(delta_model)
    delta_model.eval()
    with torch.no_grad():
        before = run(delta_model)
        merged = delta_model.merge_and_unload()
        after = run(merged)
    assert merged is model and _plain(merged)
    assert not torch.allclose(before, pristine, atol=1e-3)  # the deltas matter, so a no-op merge would fail
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    return merged


def _logits(batch):
    return lambda m: m(**batch).logits


@pytest.mark.parametrize(
    "configs",
    [
        [LoraConfig(**LORA_BERT)],
        [IA3Config(target_modules=["key", "value", "output.dense"], feedforward_modules=["output.dense"])],
        [BitFitConfig()],
        [FullFineTuningConfig()],
        [CoeffTuningConfig()],
        # Coeff scales the value rows LoRA and BitFit also change: the order of folding matters.
        [CoeffTuningConfig(), LoraConfig(**LORA_BERT), BitFitConfig()],
        [LoraConfig(r=2, target_modules=["value"]), LoraConfig(r=3, target_modules=["value", "key"])],
    ],
    ids=["lora", "ia3", "bitfit", "full", "coeff-diagonal", "coeff+lora+bitfit", "two-loras"],
)
def test_merged_bert_matches_unmerged(tiny_bert, text_batch, configs):
    _merge_and_compare(tiny_bert, *configs, run=_logits(text_batch))


def test_merged_bert_keeps_the_trained_weights(tiny_bert, text_batch):
    """BitFit's and full fine-tuning's trained values stay (detach would have restored the pretrained ones)."""
    pretrained = tiny_bert.bert.encoder.layer[0].attention.self.value.bias.clone()
    merged = _merge_and_compare(tiny_bert, BitFitConfig(), run=_logits(text_batch))
    assert not torch.equal(merged.bert.encoder.layer[0].attention.self.value.bias, pretrained)
    assert all(p.requires_grad for p in merged.parameters())  # the flags from before get_delta_model


def test_merged_vit_and_timm_coeff(tiny_vit, pixel_batch, tiny_timm_vit):
    _merge_and_compare(tiny_vit, CoeffTuningConfig(), run=lambda m: m(pixel_values=pixel_batch).logits)
    _merge_and_compare(
        tiny_timm_vit,
        CoeffTuningConfig(),
        LoraConfig(r=2, target_modules=["qkv"]),
        run=lambda m: m(pixel_batch),
    )


def test_merged_llama_gqa_coeff_with_equal_group_coefficients(tiny_llama, left_padded_batch):
    model = get_delta_model(tiny_llama, CoeffTuningConfig(), IA3Config(target_modules=["v_proj", "k_proj"]))
    model.eval()
    _perturb(model)
    # 4 query heads over 2 value heads: heads (0, 1) and (2, 3) share a value head, so share a coefficient.
    solution = model.solution()
    for name in solution:
        if name.endswith("ds_coeff.delta"):
            solution[name] = torch.diag(torch.tensor([0.5, 0.5, -0.3, -0.3]))
    model.load_solution(solution)
    with torch.no_grad():
        before = model(**left_padded_batch).logits
        merged = model.merge_and_unload()
        after = merged(**left_padded_batch).logits
    assert _plain(merged) and merged.config._attn_implementation == "sdpa"
    assert all(layer.self_attn.config._attn_implementation == "sdpa" for layer in merged.model.layers)
    real = left_padded_batch["attention_mask"].bool()  # fully masked pad rows differ between implementations
    torch.testing.assert_close(after[real], before[real], rtol=1e-4, atol=1e-5)


def test_merged_gpt2_coeff_scales_the_value_columns_of_its_conv1d():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=20, n_embd=16, n_layer=2, n_head=4, num_labels=3, pad_token_id=0)
    model = GPT2ForSequenceClassification(config).eval()
    batch = {"input_ids": torch.randint(1, 20, (2, 7), generator=torch.Generator().manual_seed(1))}
    weight = model.transformer.h[0].attn.c_attn.weight.detach().clone()  # Conv1D: (in, [q; k; v])
    merged = _merge_and_compare(model, CoeffTuningConfig(), run=lambda m: m(**batch).logits)
    after = merged.transformer.h[0].attn.c_attn.weight
    assert torch.equal(after[:, :32], weight[:, :32])  # queries and keys untouched
    assert not torch.equal(after[:, 32:], weight[:, 32:])  # each head's value columns scaled


def _refused(model, delta_model, run, *needles):
    with torch.no_grad():
        before = run(delta_model)
        with pytest.raises(UserInputError) as info:
            delta_model.merge_and_unload()
        message = str(info.value)
        assert "\n" not in message
        for needle in needles:
            assert needle in message
        # Nothing changed: same outputs, still a working DeltaModel that can be unloaded.
        torch.testing.assert_close(run(delta_model), before, rtol=0, atol=0)
    delta_model.unload()
    assert _plain(model)


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        (PromptTuningConfig(num_virtual_tokens=2), "prompt (soft prompt tokens"),
        (PrefixTuningConfig(num_virtual_tokens=2), "prefix (prefix keys and values"),
        (AdapterConfig(), "adapter (a bottleneck adapter"),
    ],
    ids=["prompt", "prefix", "adapter"],
)
def test_unfoldable_deltas_are_refused(tiny_bert, text_batch, config, needle):
    delta_model = get_delta_model(tiny_bert, LoraConfig(**LORA_BERT), config)
    _perturb(delta_model)
    delta_model.eval()
    _refused(tiny_bert, delta_model, _logits(text_batch), needle)


def test_non_diagonal_coeff_is_refused(tiny_bert, text_batch):
    delta_model = get_delta_model(tiny_bert, CoeffTuningConfig(), BitFitConfig())
    _perturb(delta_model, diagonal_coeff=False)
    delta_model.eval()
    _refused(
        tiny_bert,
        delta_model,
        _logits(text_batch),
        "coeff (a non-diagonal head mix is not a weight of the base model",
    )


def test_gqa_coeff_with_unequal_group_coefficients_is_refused(tiny_llama, left_padded_batch):
    delta_model = get_delta_model(tiny_llama, CoeffTuningConfig())
    _perturb(delta_model)  # diagonal, but heads sharing a value head get different coefficients
    delta_model.eval()
    _refused(tiny_llama, delta_model, lambda m: m(**left_padded_batch).logits, "sharing a value head")
