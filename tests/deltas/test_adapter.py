import copy
import json

import pytest
import torch

from deltaspace.deltas.adapter import AdapterConfig, sublayer_output_modules
from deltaspace.deltas.base import DeltaConfig


@pytest.fixture
def build(make_bert, make_llama):
    builders = {"bert": make_bert, "llama": make_llama}
    return lambda arch: builders[arch](attn_implementation="eager")


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("arch", ["bert", "llama"])
@pytest.mark.parametrize("placement", ["both", "ffn", "attention"])
def test_identity_at_init_and_exact_detach(build, text_batch, arch, placement):
    model = build(arch)
    before, inputs = snapshot(model), text_batch
    with torch.no_grad():
        reference = model(**inputs).logits
    attached = AdapterConfig(placement=placement, bottleneck=4).attach(model)
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, reference, atol=1e-6, rtol=0)
        # The adapters are live: a non-zero up-projection changes the outputs.
        params = dict(model.named_parameters())
        for name in attached.parameter_names():
            params[name].normal_(std=0.5)
        assert (model(**inputs).logits - reference).abs().max() > 1e-3
    attached.detach(model)
    after = model.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert all(not m._forward_hooks for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, reference, atol=0, rtol=0)


def test_structure_bert(tiny_bert):
    model = tiny_bert
    both = sublayer_output_modules(model, "both")
    assert both == [
        "bert.encoder.layer.0.attention.output.dense",
        "bert.encoder.layer.0.output.dense",
        "bert.encoder.layer.1.attention.output.dense",
        "bert.encoder.layer.1.output.dense",
    ]
    assert sublayer_output_modules(model, "ffn") == both[1::2]
    assert sublayer_output_modules(model, "attention") == both[0::2]


def test_structure_llama(tiny_llama):
    names = sublayer_output_modules(tiny_llama, "both")
    assert names == [
        "model.layers.0.self_attn.o_proj",
        "model.layers.0.mlp.down_proj",
        "model.layers.1.self_attn.o_proj",
        "model.layers.1.mlp.down_proj",
    ]


def test_adapter_matches_hand_computation(tiny_bert):
    model = tiny_bert
    attached = AdapterConfig(bottleneck=3, activation="swish").attach(model)
    dense = model.get_submodule("bert.encoder.layer.0.output.dense")
    adapter = dense.ds_adapter
    with torch.no_grad():
        adapter.up.weight.normal_()
        adapter.up.bias.normal_()
        x = torch.randn(2, 5, dense.in_features)
        out = torch.nn.functional.linear(x, dense.weight, dense.bias)
        expected = out + adapter.up(torch.nn.functional.silu(adapter.down(out)))
        torch.testing.assert_close(dense(x), expected)
    names = attached.parameter_names()
    assert len(names) == 4 * 4  # 4 adapters x (down.weight, down.bias, up.weight, up.bias)
    assert names[:4] == [
        "bert.encoder.layer.0.attention.output.dense.ds_adapter.down.weight",
        "bert.encoder.layer.0.attention.output.dense.ds_adapter.down.bias",
        "bert.encoder.layer.0.attention.output.dense.ds_adapter.up.weight",
        "bert.encoder.layer.0.attention.output.dense.ds_adapter.up.bias",
    ]


def test_shapes_init_and_no_bias(tiny_llama):
    model = tiny_llama
    attached = AdapterConfig(bottleneck=5, bias=False, init="kaiming").attach(model)
    params = dict(model.named_parameters())
    names = attached.parameter_names()
    assert len(names) == 4 * 2
    down, up = params[names[0]], params[names[1]]
    assert down.shape == (5, 32) and up.shape == (32, 5)
    assert torch.count_nonzero(up) == 0 and torch.count_nonzero(down) > 0
    bound = (1 / 32) ** 0.5  # kaiming_uniform(a=sqrt(5)) bound for fan_in 32
    assert down.abs().max() <= bound


def test_normal_init_std(tiny_bert):
    model = tiny_bert
    torch.manual_seed(0)
    attached = AdapterConfig(bottleneck=64, init="normal", init_std=0.05).attach(model)
    down = dict(model.named_parameters())[attached.parameter_names()[0]]
    assert abs(down.std().item() - 0.05) < 0.01


def test_target_modules_list_and_regex(tiny_bert):
    model = tiny_bert
    attached = AdapterConfig(target_modules=["attention.output.dense"]).attach(model)
    assert attached.module_names == sublayer_output_modules(model, "attention")
    attached.detach(model)
    attached = AdapterConfig(target_modules=r".*layer\.1\.output\.dense").attach(model)
    assert attached.module_names == ["bert.encoder.layer.1.output.dense"]


def test_errors(make_bert):
    with pytest.raises(ValueError, match="matched no module"):
        AdapterConfig(target_modules=["nonexistent"]).attach(make_bert())
    with pytest.raises(ValueError, match="placement"):
        AdapterConfig(placement="everywhere")
    with pytest.raises(ValueError, match="activation"):
        AdapterConfig(activation="nope")
    with pytest.raises(ValueError, match=r"only nn\.Linear"):
        AdapterConfig(target_modules=["LayerNorm"]).attach(make_bert())
    mixed = make_bert()
    with pytest.raises(ValueError, match="LayerNorm"):  # a Linear then a LayerNorm: nothing is attached
        AdapterConfig(target_modules=r".*output\.(dense|LayerNorm)").attach(mixed)
    assert not any(hasattr(m, "ds_adapter") or m._forward_hooks for m in mixed.modules())
    model = make_bert()
    AdapterConfig().attach(model)
    with pytest.raises(ValueError, match="already carries"):
        AdapterConfig().attach(model)


def test_deepcopy_and_detach_on_copy(tiny_bert, text_batch):
    model, inputs = tiny_bert, text_batch
    with torch.no_grad():
        reference = model(**inputs).logits
    attached = AdapterConfig(bottleneck=2).attach(model)
    with torch.no_grad():
        for name in attached.parameter_names():
            dict(model.named_parameters())[name].normal_()
        changed = model(**inputs).logits
    clone = copy.deepcopy(model)
    with torch.no_grad():
        torch.testing.assert_close(clone(**inputs).logits, changed)
    attached.detach(clone)
    with torch.no_grad():
        torch.testing.assert_close(clone(**inputs).logits, reference)
        torch.testing.assert_close(model(**inputs).logits, changed)


def test_json_round_trip():
    for config in (
        AdapterConfig(),
        AdapterConfig(placement="ffn", activation="swish", bias=False, target_modules=["o"]),
    ):
        data = json.loads(json.dumps(config.to_dict()))
        assert data["method"] == "adapter"
        assert DeltaConfig.from_dict(data) == config
