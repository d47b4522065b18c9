"""Every delta method through DeltaModel: identity at init, gradients, solutions, θ0 from the seed, save/load.

The matrix is the registry's: every preset, with the facts its DET's file declares (tests/deltas/
test_example_det.py runs the same checks on the example DET of docs/architecture.md).
"""

import json

import pytest
import torch
from tests.deltas.contract import build, check_contract, check_solution_round_trip, check_theta0, logits

from deltaspace import get_delta_model
from deltaspace.deltas.adapter import AdapterConfig
from deltaspace.deltas.base import DeltaConfig
from deltaspace.deltas.presets import available_methods, resolve_method
from deltaspace.deltas.registry import presets

COMBINATIONS = ["coeff+lora", "adapter+prefix", "prompt+coeff"]
METHODS = available_methods() + COMBINATIONS
ARCHS = ["bert", "llama"]


@pytest.fixture
def base_for(make_bert, make_llama):
    builders = {"bert": make_bert, "llama": make_llama}
    return lambda arch: builders[arch](attn_implementation="eager")


def test_shipped_presets_are_registered_and_build_their_class(tiny_bert):
    shipped = {"coeff", "lora", "ia3", "adapter", "adapter-ffn", "prefix", "prompt", "bitfit", "full"}
    assert shipped <= set(available_methods())
    for name, preset in presets().items():
        assert preset.description, name
        (config,) = resolve_method(name, tiny_bert)
        assert type(config) is preset.config_class, name


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", METHODS)
def test_delta_model_contract(base_for, text_batch, tmp_path, arch, method):
    check_contract(base_for, arch, method, text_batch, tmp_path)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", available_methods())
def test_theta0_reproducible_from_seed(base_for, arch, method):
    check_theta0(base_for, arch, method)


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
    reference = logits(classifier, text_batch)
    model = build(classifier, method)
    assert model.head_modules == []
    out = logits(model, text_batch)
    if presets()[method].changes_output_at_init:
        assert (out - reference).abs().max() > 1e-6
    else:
        torch.testing.assert_close(out, reference, atol=1e-6, rtol=0)
    check_solution_round_trip(model, text_batch)


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
