"""Coeff-Tuning's two attention paths on whole tiny models: the blocked path against the explicit reference
(forward, gradients wrt ΔC, LoRA weights, prefix parameters and input embeddings), memory kept for backward,
generation with a KV cache, and small ΔC updates in bf16."""

import pytest
import torch
from peft import LoraConfig

from deltaspace import CoeffTuningConfig, PrefixTuningConfig, get_delta_model
from deltaspace.attention import attend, blocked, core
from deltaspace.deltas.coeff import CoeffMixer

FAMILIES = {
    # name: (fixture builder, batch fixture, LoRA targets)
    "bert": ("make_bert", "text_batch", ["query", "value"]),
    "llama": ("make_llama", "left_padded_batch", ["q_proj", "v_proj"]),
    "mistral": ("make_mistral", "left_padded_batch", ["q_proj", "v_proj"]),
}


def _force(monkeypatch, path):
    """ "auto" picks the explicit path up to this many map elements: 0 forces blocked, 2^60 explicit."""
    monkeypatch.setattr(core, "AUTO_EXPLICIT_MAX_ELEMENTS", 0 if path == "blocked" else 1 << 60)


def _randomize(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad and ("ds_coeff" in name or "lora_B" in name):
                param.copy_(torch.randn(param.shape, generator=g, dtype=param.dtype) * 0.3)


def _build(request, family, with_prefix, seed=0):
    maker, batch_name, targets = FAMILIES[family]
    base = request.getfixturevalue(maker)(seed=seed, attn_implementation="sdpa")
    configs = [CoeffTuningConfig(coeff_dropout=0.0), LoraConfig(r=4, lora_alpha=8, target_modules=targets)]
    if with_prefix:
        configs.append(PrefixTuningConfig(num_virtual_tokens=3, hidden_size=8))
    model = get_delta_model(base, *configs, head_modules=[]).double().eval()
    _randomize(model)
    return model, request.getfixturevalue(batch_name)


def _loss_and_grads(model, batch):
    embeddings = model.base_model.get_input_embeddings()(batch["input_ids"]).detach().requires_grad_()
    logits = model(inputs_embeds=embeddings, attention_mask=batch["attention_mask"]).logits
    valid = batch["attention_mask"].bool()
    if logits.dim() == 3:  # causal LM: score the real (non-padding) positions only
        logits = logits[valid]
    weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(1), dtype=logits.dtype)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    grads = torch.autograd.grad((logits * weights).sum(), [embeddings, *params.values()])
    grads = {"inputs_embeds": grads[0], **dict(zip(params, grads[1:], strict=True))}
    return logits, grads


@pytest.mark.parametrize("with_prefix", [False, True], ids=["coeff+lora", "coeff+lora+prefix"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_blocked_matches_explicit_forward_and_gradients(request, monkeypatch, family, with_prefix):
    monkeypatch.setattr(blocked, "PANEL_ELEMENTS", 2 * 4 * 2 * 12)  # ~2 query rows per panel: many panels
    model, batch = _build(request, family, with_prefix)
    _force(monkeypatch, "explicit")
    ref_logits, ref_grads = _loss_and_grads(model, batch)
    _force(monkeypatch, "blocked")
    logits, grads = _loss_and_grads(model, batch)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-10, atol=1e-10)
    assert any("ds_coeff" in n for n in grads) and any("lora_A" in n for n in grads)
    assert any("ds_prefix" in n for n in grads) == with_prefix
    for name, expected in ref_grads.items():
        assert expected.abs().max() > 0, name  # every compared gradient is really exercised
        torch.testing.assert_close(grads[name], expected, rtol=1e-9, atol=1e-10, msg=name)


def test_prefix_alone_blocked_matches_explicit(request, monkeypatch, make_llama, left_padded_batch):
    model = get_delta_model(make_llama(), PrefixTuningConfig(num_virtual_tokens=3, hidden_size=8)).double()
    _force(monkeypatch, "explicit")
    ref_logits, ref_grads = _loss_and_grads(model, left_padded_batch)
    _force(monkeypatch, "blocked")
    logits, grads = _loss_and_grads(model, left_padded_batch)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-10, atol=1e-10)
    for name, expected in ref_grads.items():
        torch.testing.assert_close(grads[name], expected, rtol=1e-9, atol=1e-10, msg=name)


@pytest.mark.parametrize("path", ["explicit", "blocked"])
def test_generation_with_cache_on_both_paths(monkeypatch, make_llama, left_padded_batch, path):
    _force(monkeypatch, path)
    model = get_delta_model(make_llama(), CoeffTuningConfig(attention_path=path)).eval()
    _randomize(model)
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    cached = model.generate(**left_padded_batch, use_cache=True, **kwargs)
    recomputed = model.generate(**left_padded_batch, use_cache=False, **kwargs)
    assert torch.equal(cached, recomputed)
    _force(monkeypatch, "explicit" if path == "blocked" else "blocked")
    for layer in model.base_model.model.layers:
        layer.self_attn.ds_coeff.attention_path = "auto"
    assert torch.equal(model.generate(**left_padded_batch, use_cache=True, **kwargs), cached)


def _largest_saved(model, batch, path):
    for module in model.modules():
        if hasattr(module, "ds_coeff"):
            module.ds_coeff.attention_path = path
    sizes = []

    def pack(tensor):
        sizes.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**batch).logits.sum().backward()
    return max(sizes)


def test_blocked_path_keeps_no_attention_map_for_backward(make_llama):
    model = get_delta_model(make_llama(), CoeffTuningConfig(coeff_dropout=0.0)).train()
    length = 48
    batch = {"input_ids": torch.randint(1, 64, (1, length), generator=torch.Generator().manual_seed(0))}
    one_map = 4 * length * length  # H·N·N for one layer, batch 1
    assert _largest_saved(model, batch, "explicit") >= one_map
    assert _largest_saved(model, batch, "blocked") < one_map // 2  # only O(N·d) tensors (and the logits)


def test_auto_picks_explicit_for_small_maps_and_blocked_beyond():
    assert core.choose_path("auto", core.AUTO_EXPLICIT_MAX_ELEMENTS, trainable_bias=False) == "explicit"
    assert core.choose_path("auto", core.AUTO_EXPLICIT_MAX_ELEMENTS + 1, trainable_bias=False) == "blocked"
    assert core.choose_path("auto", 1 << 40, trainable_bias=True) == "explicit"  # blocked has no bias grad
    assert core.choose_path("blocked", 1, trainable_bias=False) == "blocked"


@pytest.mark.parametrize("path", ["explicit", "blocked"])
def test_small_delta_acts_in_bf16(path):
    """Near 1.0 bf16 steps are 2⁻⁷ up and 2⁻⁸ down: C = I + ΔC rounded to bf16 made ±1e-3 invisible (and
    ±3e-3 asymmetric). Mixed in float32, a ±1e-3 diagonal scales every head's output by 1 ± 1e-3: the bf16
    output changes, in both directions, by about that much overall."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 32, 16, generator=g).to(torch.bfloat16) for _ in range(3))
    module = torch.nn.Module()
    module.ds_coeff = CoeffMixer(4, dropout=0.0, attention_path=path)

    def output_with(step):
        with torch.no_grad():
            module.ds_coeff.delta.copy_(torch.eye(4) * step)
            return attend(module, q, k, v, None)[0].float()

    base = output_with(0.0)
    assert attend(module, q, k, v, None)[0].dtype == torch.bfloat16
    for step in (1e-3, -1e-3):
        change = ((output_with(step) - base) * base.sign()).sum() / base.abs().sum()
        assert change == pytest.approx(step, rel=0.5)
