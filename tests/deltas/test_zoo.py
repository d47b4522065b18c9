"""Every delta method through DeltaModel: identity at init, gradients, solutions, θ0 from the seed, save/load."""

import copy
import json

import pytest
import torch

from deltaspace import DeltaModel, get_delta_model
from deltaspace.attention import is_enabled
from deltaspace.deltas.adapter import AdapterConfig
from deltaspace.deltas.base import DeltaConfig
from deltaspace.deltas.presets import available_methods, resolve_method

CHANGE_AT_INIT = {"prompt", "prefix"}  # by design these change outputs before any training
DETERMINISTIC_INIT = {"coeff", "ia3", "bitfit", "full"}  # θ0 does not depend on the seed
COMBINATIONS = ["coeff+lora", "adapter+prefix", "prompt+coeff"]
METHODS = available_methods() + COMBINATIONS
ARCHS = ["bert", "llama"]


@pytest.fixture
def base_for(make_bert, make_llama):
    builders = {"bert": make_bert, "llama": make_llama}
    return lambda arch: builders[arch](attn_implementation="eager")


def _build(base, method, seed=0, **overrides):
    if method == "bitfit" and not any(n.endswith("bias") for n, _ in base.named_parameters()):
        pytest.skip("the tiny LLaMA has no biases (BitFit's error is tested in test_bitfit)")
    return get_delta_model(base, *resolve_method(method, base, **overrides), seed=seed).eval()


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def test_available_methods():
    assert available_methods() == [
        "coeff", "lora", "ia3", "adapter", "adapter-ffn", "prefix", "prompt", "bitfit", "full",
    ]  # fmt: skip


def _check_gradients(model, batch):
    """Only the deltas' parameters and the head's get gradients (and requires_grad)."""
    own = [n for delta in model.deltas for n in delta.parameter_names()]
    trainable = model.trainable_parameter_names()
    assert trainable[: len(own)] == own
    heads = {n for n, _ in model.base_model.named_parameters() if n.startswith("classifier.")}
    assert set(trainable) - set(own) <= heads
    model.train()
    model(**batch).logits.float().pow(2).mean().backward()
    model.eval()
    for name, param in model.base_model.named_parameters():
        assert (param.grad is not None) == (name in trainable), name
        assert param.requires_grad == (name in trainable), name
    assert any(p.grad.abs().sum() > 0 for n, p in model.base_model.named_parameters() if n in own)
    model.zero_grad(set_to_none=True)


def _check_solution_round_trip(model, batch):
    """solution_vector -> vector_to_solution -> functional_call is the module; load_solution does what it predicts."""
    vector = model.solution_vector()
    assert vector.numel() == model.num_trainable_parameters()
    current = _logits(model, batch)
    with torch.no_grad():
        same = model.functional_call(model.vector_to_solution(vector), **batch).logits
        torch.testing.assert_close(same, current, atol=0, rtol=0)
        perturbed = vector + 0.2 * torch.randn(vector.shape, generator=torch.Generator().manual_seed(3))
        predicted = model.functional_call(model.vector_to_solution(perturbed), **batch).logits
    torch.testing.assert_close(
        _logits(model, batch), current, atol=0, rtol=0
    )  # functional_call mutates nothing
    assert (predicted - current).abs().max() > 1e-4
    model.load_solution(model.vector_to_solution(perturbed))
    torch.testing.assert_close(_logits(model, batch), predicted, atol=1e-6, rtol=0)
    assert torch.equal(model.solution_vector(), perturbed)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", METHODS)
def test_delta_model_contract(base_for, text_batch, tmp_path, arch, method):
    base = base_for(arch)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    reference = _logits(base, text_batch)
    model = _build(base, method, seed=3)

    out = _logits(model, text_batch)
    if any(m in CHANGE_AT_INIT for m in method.split("+")):
        assert (out[:, : reference.shape[1]] - reference).abs().max() > 1e-6
    else:
        torch.testing.assert_close(out, reference, atol=1e-6, rtol=0)
    _check_gradients(model, text_batch)
    _check_solution_round_trip(model, text_batch)

    # save -> load into a fresh copy of the base reproduces the outputs and the solution
    expected = _logits(model, text_batch)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "delta_config.json").read_text())
    assert [d["method"] for d in saved["deltas"]] == [c.method for c in model.delta_configs]
    loaded = DeltaModel.from_pretrained(base_for(arch), tmp_path)
    torch.testing.assert_close(_logits(loaded, text_batch), expected, atol=1e-6, rtol=0)
    assert torch.equal(loaded.solution_vector(), model.solution_vector())

    # unload returns the base exactly as it was, apart from the (trained) head
    heads = {k for k in before if k.startswith("classifier.")}
    restored = model.unload()
    assert restored is base and not is_enabled(base) and base.config._attn_implementation == "eager"
    after = base.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], v) for k, v in before.items() if k not in heads)
    with torch.no_grad():
        for k in heads:
            after[k].copy_(before[k])
    torch.testing.assert_close(_logits(base, text_batch), reference, atol=0, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", available_methods())
def test_theta0_reproducible_from_seed(base_for, arch, method):
    base = base_for(arch)
    first = _build(copy.deepcopy(base), method, seed=7).solution_vector()
    again = _build(copy.deepcopy(base), method, seed=7).solution_vector()
    other = _build(copy.deepcopy(base), method, seed=8).solution_vector()
    assert torch.equal(first, again)
    assert torch.equal(first, other) == (method in DETERMINISTIC_INIT)


def test_our_preset_configs_round_trip_through_json(tiny_bert):
    for method in ("adapter", "adapter-ffn", "prefix", "prompt", "bitfit", "full"):
        (config,) = resolve_method(method, tiny_bert)
        assert DeltaConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_targets_resolved_from_the_model(tiny_bert, tiny_llama):
    (bert_lora,) = resolve_method("lora", tiny_bert)
    (llama_lora,) = resolve_method("lora", tiny_llama)
    assert (
        set(bert_lora.target_modules) == {"query", "value"}
        and bert_lora.r == 8
        and bert_lora.lora_alpha == 16
    )
    assert set(llama_lora.target_modules) == {"q_proj", "v_proj"}
    (bert_ia3,) = resolve_method("ia3", tiny_bert)
    assert set(bert_ia3.feedforward_modules) == {f"bert.encoder.layer.{i}.output.dense" for i in range(2)}
    assert {"key", "value"} <= set(bert_ia3.target_modules)


def test_overrides(tiny_bert):
    lora, adapter = resolve_method("lora+adapter", tiny_bert, r=4, adapter__bottleneck=3)
    assert lora.r == 4 and adapter == AdapterConfig(bottleneck=3)
    (prefix,) = resolve_method("prefix", tiny_bert, **{"prefix.num_virtual_tokens": 5})
    assert prefix.num_virtual_tokens == 5
    with pytest.raises(ValueError, match="unknown delta method"):
        resolve_method("loraa", tiny_bert)
    with pytest.raises(ValueError, match="match no field"):
        resolve_method("lora", tiny_bert, bottleneck=3)
    with pytest.raises(ValueError, match="not in"):
        resolve_method("lora", tiny_bert, adapter__bottleneck=3)
    with pytest.raises(ValueError, match="has no option"):
        resolve_method("lora", tiny_bert, lora__bottleneck=3)
    with pytest.raises(ValueError, match="twice"):
        resolve_method("lora+lora", tiny_bert)


def test_vit_adapter_and_prefix(tiny_vit, pixel_batch):
    reference = tiny_vit(pixel_values=pixel_batch).logits
    adapter = get_delta_model(tiny_vit, *resolve_method("adapter", tiny_vit)).eval()
    assert len(adapter.deltas[0].module_names) == 4
    torch.testing.assert_close(adapter(pixel_values=pixel_batch).logits, reference, atol=1e-6, rtol=0)
    base = adapter.unload()
    prefix = get_delta_model(base, *resolve_method("prefix", base)).eval()
    # The prefixes are attended to (logits move) and train (every prefix tensor gets a gradient).
    logits = prefix(pixel_values=pixel_batch).logits
    assert not torch.allclose(logits, reference, atol=1e-4)
    logits.square().sum().backward()
    grads = {n: p.grad for n, p in tiny_vit.named_parameters() if "ds_prefix" in n}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())
    base = prefix.unload()
    torch.testing.assert_close(base(pixel_values=pixel_batch).logits, reference, atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"nn\.Embedding"):
        get_delta_model(base, *resolve_method("prompt", base))


@pytest.mark.parametrize("method", available_methods())
def test_presets_on_the_prototype_classifier(make_bert, text_batch, method):
    """The study's head wraps a bare encoder: every preset attaches inside it and keeps solutions exact."""
    from deltaspace.heads import PrototypeClassifier

    torch.manual_seed(0)
    classifier = PrototypeClassifier(make_bert(attn_implementation="eager").bert, torch.randn(3, 32)).eval()
    reference = _logits(classifier, text_batch)
    model = _build(classifier, method)
    assert model.head_modules == []
    out = _logits(model, text_batch)
    if method in CHANGE_AT_INIT:
        assert (out - reference).abs().max() > 1e-6
    else:
        torch.testing.assert_close(out, reference, atol=1e-6, rtol=0)
    _check_solution_round_trip(model, text_batch)


def test_new_trainable_tensors_stay_float32_under_bfloat16(make_llama, text_batch):
    base = make_llama().to(torch.bfloat16)
    model = get_delta_model(base, *resolve_method("adapter+prefix+prompt", base))
    trainable = set(model.trainable_parameter_names())
    assert {p.dtype for n, p in base.named_parameters() if n in trainable} == {torch.float32}
    model.train()
    logits = model(**text_batch).logits
    assert logits.dtype == torch.bfloat16
    logits.float().pow(2).mean().backward()
    assert all(p.grad is not None for n, p in base.named_parameters() if n in trainable)
