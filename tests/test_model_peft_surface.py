"""What a PEFT user reaches for on a DeltaModel (issue 21, item 4): get_base_model, disable_adapter, the
transformers PEFT mixin's methods answered in one line, stacking on a PeftModel, fp32 deltas on a bf16 base."""

import pytest
import torch
from peft import LoraConfig, get_peft_model, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from tests.deltas.contract import build, logits

from deltaspace import CoeffTuningConfig, DeltaModel, get_delta_model
from deltaspace.deltas.full import FullFineTuningConfig
from deltaspace.deltas.presets import available_methods, resolve_method
from deltaspace.errors import UserInputError

# prefix+coeff and coeff+prefix put two hooks on the same attention modules, in both orders.
METHODS = [*available_methods(), "coeff+lora", "prefix+coeff", "coeff+prefix", "ia3+bitfit", "adapter+prompt"]


def _perturb(model, seed=0, scale=0.3):
    """Random values for every trained tensor, so every delta (and the head) changes the outputs."""
    g = torch.Generator().manual_seed(seed)
    model.load_solution({n: torch.randn(t.shape, generator=g) * scale for n, t in model.solution().items()})


def _snapshot(model):
    """Everything switching the deltas off and on must give back: parameter objects, values, flags, order."""
    return [
        (name, param, param.requires_grad, param.detach().clone()) for name, param in model.named_parameters()
    ] + [("modules", [n for n, _ in model.named_modules()], None, None)]


def _assert_same(before, after):
    assert [entry[0] for entry in before] == [entry[0] for entry in after]
    for (name, param, grad, value), (_, param2, grad2, value2) in zip(before, after, strict=True):
        if name == "modules":
            assert param == param2
            continue
        assert param2 is param, name
        assert grad2 == grad, name
        assert torch.equal(value2, value), name


def _attention_state(model):
    return [
        (n, type(m).__name__, getattr(getattr(m, "config", None), "_attn_implementation", None))
        for n, m in model.named_modules()
    ]


@pytest.fixture
def base_for(make_bert, make_llama):
    # The models' default attention (SDPA): switched off, Coeff's modules must be back on it exactly.
    builders = {"bert": make_bert, "llama": make_llama}
    return lambda arch: builders[arch]()


def test_get_base_model(tiny_bert):
    model = get_delta_model(tiny_bert, CoeffTuningConfig())
    assert model.get_base_model() is tiny_bert is model.base_model
    model.unload()
    with pytest.raises(RuntimeError, match="unloaded"):
        model.get_base_model()


@pytest.mark.parametrize("arch", ["bert", "llama"])
@pytest.mark.parametrize("method", METHODS)
def test_disable_adapter_is_the_base_and_restores_exactly(base_for, text_batch, arch, method):
    model = build(base_for(arch), method, seed=1)
    _perturb(model)
    before, attention = _snapshot(model.base_model), _attention_state(model.base_model)
    tuned = logits(model, text_batch)
    with model.disable_adapter():
        off = logits(model, text_batch)
    after = logits(model, text_batch)
    assert torch.equal(after, tuned)  # back on: bit for bit
    _assert_same(before, _snapshot(model.base_model))
    assert _attention_state(model.base_model) == attention
    assert off.shape != tuned.shape or not torch.equal(off, tuned)  # the deltas did change the outputs
    # Switched off = the base without its deltas (the trained head stays, as unload() keeps it).
    assert torch.equal(off, logits(model.unload(), text_batch))


def test_disable_adapter_timm_style(tiny_timm_vit, pixel_batch):
    model = get_delta_model(tiny_timm_vit, CoeffTuningConfig(), head_modules=["head"]).eval()
    _perturb(model)
    with torch.no_grad():
        tuned = model(pixel_batch)
        with model.disable_adapter():
            off = model(pixel_batch)
        assert torch.equal(model(pixel_batch), tuned)
        assert not torch.equal(off, tuned)
        assert torch.equal(off, model.unload()(pixel_batch))


def test_disable_adapter_nested_under_inference_mode_and_on_error(tiny_bert, text_batch):
    model = get_delta_model(tiny_bert, CoeffTuningConfig(), LoraConfig(r=2, target_modules=["query"])).eval()
    _perturb(model)
    tuned = logits(model, text_batch)
    with torch.inference_mode(), model.disable_adapter():
        off = model(**text_batch).logits
        with model.disable_adapter():  # nested: harmless, the inner block switches nothing
            assert torch.equal(model(**text_batch).logits, off)
        assert torch.equal(model(**text_batch).logits, off)  # still off after the inner block
    assert torch.equal(logits(model, text_batch), tuned)
    with pytest.raises(KeyError), model.disable_adapter():
        raise KeyError("user code failed inside the block")
    assert torch.equal(logits(model, text_batch), tuned)  # back on after an error too


def test_reference_pass_inside_a_training_step(make_bert, text_batch):
    """DPO-style: a reference pass with the deltas off between the policy's forward and backward changes no
    gradient, and the frozen pretrained values stand in for BitFit's trained biases without being trained."""
    labels = torch.tensor([0, 2])

    def step(with_reference):
        base = make_bert()
        configs = [CoeffTuningConfig(coeff_dropout=0.0), *resolve_method("lora+bitfit", base)]
        model = get_delta_model(base, *configs, seed=2)
        _perturb(model, seed=5, scale=0.05)
        model.train()
        loss = model(**text_batch, labels=labels).loss
        if with_reference:
            with torch.no_grad(), model.disable_adapter():
                reference = model(**text_batch, labels=labels).loss
            assert reference != loss
        loss.backward()
        return {n: p.grad.clone() for n, p in model.base_model.named_parameters() if p.grad is not None}

    plain, referenced = step(False), step(True)
    assert plain.keys() == referenced.keys() and plain
    for name in plain:
        assert torch.equal(plain[name], referenced[name]), name


def test_disable_adapter_refusals_and_guards(tiny_bert, text_batch, tmp_path):
    model = get_delta_model(
        tiny_bert, FullFineTuningConfig(restore_on_detach=False), CoeffTuningConfig()
    ).eval()
    _perturb(model)
    tuned = logits(model, text_batch)
    with (
        pytest.raises(
            UserInputError, match=r"^cannot switch the deltas off: full \(.*restore_on_detach=True\)$"
        ),
        model.disable_adapter(),
    ):
        pass
    assert torch.equal(logits(model, text_batch), tuned)  # nothing was switched
    model.unload()

    model = get_delta_model(tiny_bert, CoeffTuningConfig())
    with model.disable_adapter():
        for call in (
            model.solution,
            model.unload,
            model.merge_and_unload,
            lambda: model.save_pretrained(tmp_path),
        ):
            with pytest.raises(UserInputError, match="inside disable_adapter"):
                call()
    assert model.solution()  # fine again after the block


def test_peft_mixin_methods_answer_in_one_line(tiny_bert):
    model = get_delta_model(tiny_bert, LoraConfig(r=2, target_modules=["query"]))
    for name, hint in [
        ("set_adapter", "disable_adapter"),
        ("active_adapters", "disable_adapter"),
        ("add_adapter", "get_delta_model"),
        ("load_adapter", "DeltaModel.from_pretrained"),
        ("disable_adapters", "disable_adapter"),
        ("enable_adapters", "disable_adapter"),
        ("delete_adapter", "unload"),
        ("get_adapter_state_dict", "solution"),
    ]:
        with pytest.raises(AttributeError, match=hint) as caught:
            getattr(model, name)
        message = str(caught.value)
        assert (
            "\n" not in message
            and "version" not in message
            and message.startswith(f"DeltaModel has no {name!r}")
        )
        assert not hasattr(model, name)  # what Trainer asks before it calls them
    with pytest.raises(
        AttributeError, match=r"'DeltaModel' object has no attribute 'no_such_thing' \(nor has its base"
    ):
        model.no_such_thing  # noqa: B018
    assert model.config is tiny_bert.config  # the base's own attributes still come through
    assert callable(model.print_trainable_parameters)


def test_stacking_on_a_peft_model_is_refused_with_the_way_out(make_bert, text_batch):
    peft_model = get_peft_model(make_bert(), LoraConfig(r=2, target_modules=["query"]))
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    with pytest.raises(
        UserInputError, match=r"peft\.PeftModel, whose adapters it would freeze; pass model\.merge_and_unload"
    ):
        get_delta_model(peft_model, CoeffTuningConfig())
    assert {n for n, p in peft_model.named_parameters() if p.requires_grad} == trainable  # untouched
    # The ways out the message names both work.
    merged = get_delta_model(peft_model.merge_and_unload(), CoeffTuningConfig())
    assert all("ds_coeff" in n or n.startswith("classifier") for n in merged.trainable_parameter_names())
    base = make_bert()
    fresh = get_delta_model(base, CoeffTuningConfig(), LoraConfig(r=2, target_modules=["query"]))
    assert any("lora_" in n for n in fresh.trainable_parameter_names())

    injected = inject_adapter_in_model(LoraConfig(r=2, target_modules=["query"]), make_bert())
    with pytest.raises(UserInputError, match=r"already carries PEFT adapter layers \(e\.g\. 'bert\.encoder"):
        get_delta_model(injected, CoeffTuningConfig())
    assert any(isinstance(m, BaseTunerLayer) for m in injected.modules())


@pytest.mark.parametrize("method", ["lora", "ia3", "coeff", "adapter", "prefix", "prompt", "coeff+lora"])
def test_deltas_are_fp32_on_a_bf16_base(make_llama, text_batch, tmp_path, method):
    base = make_llama().to(torch.bfloat16)
    reference = logits(base, text_batch)
    model = build(base, method, seed=0)
    own = [n for delta in model.deltas for n in delta.parameter_names()]
    params = dict(model.base_model.named_parameters())
    assert own and all(params[n].dtype == torch.float32 for n in own), {n: params[n].dtype for n in own}
    assert all(p.dtype == torch.bfloat16 for n, p in params.items() if n not in own)  # the base stays bf16
    out = logits(model, text_batch)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    if method in ("lora", "ia3", "adapter"):  # identity at init, bit for bit (Coeff reroutes the attention)
        assert torch.equal(out, reference)
    # Forward and backward run (delta weights cast at use); gradients are fp32 like their parameters.
    model.train()
    model(**text_batch).logits.float().pow(2).mean().backward()
    assert all(params[n].grad is not None and params[n].grad.dtype == torch.float32 for n in own)
    model.eval()
    _perturb(model, scale=0.05)
    tuned = logits(model, text_batch)
    model.save_pretrained(tmp_path)
    restored = DeltaModel.from_pretrained(model.unload(), tmp_path)
    assert torch.equal(logits(restored, text_batch), tuned)


def test_fp32_lora_merges_into_a_bf16_base(make_llama, text_batch):
    base = make_llama().to(torch.bfloat16)
    model = get_delta_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    _perturb(model, scale=0.05)
    tuned = logits(model, text_batch)
    merged = model.merge_and_unload()
    assert all(p.dtype == torch.bfloat16 for p in merged.parameters())
    torch.testing.assert_close(logits(merged, text_batch), tuned, atol=0.05, rtol=0.05)
