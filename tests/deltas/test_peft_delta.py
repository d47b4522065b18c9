import json

import pytest
import torch
from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig

from deltaspace import DeltaConfig, PeftDeltaConfig, get_delta_model
from deltaspace.deltas.presets import resolve_method
from deltaspace.errors import UserInputError


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_lora_attach_detach_restores_exactly(tiny_llama, left_padded_batch):
    before = _state(tiny_llama)
    grads = {n: p.requires_grad for n, p in tiny_llama.named_parameters()}
    expected = tiny_llama(**left_padded_batch).logits
    attached = PeftDeltaConfig(LoraConfig(r=2, target_modules=["q_proj", "v_proj"])).attach(tiny_llama)
    names = attached.parameter_names()
    assert names[:2] == [
        "model.layers.0.self_attn.q_proj.lora_A.default.weight",
        "model.layers.0.self_attn.q_proj.lora_B.default.weight",
    ]
    assert len(names) == 8
    params = dict(tiny_llama.named_parameters())
    assert all(n in params for n in names)
    # LoRA B starts at zero: the function is unchanged.
    torch.testing.assert_close(tiny_llama(**left_padded_batch).logits, expected, rtol=0, atol=0)
    attached.detach(tiny_llama)
    after = _state(tiny_llama)
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert {n: p.requires_grad for n, p in tiny_llama.named_parameters()} == grads
    assert not hasattr(tiny_llama, "peft_config")
    assert type(tiny_llama.model.layers[0].self_attn.q_proj) is torch.nn.Linear


def test_ia3_parameter_names(tiny_bert):
    attached = PeftDeltaConfig(
        IA3Config(target_modules=["key", "value", "output.dense"], feedforward_modules=["output.dense"])
    ).attach(tiny_bert)
    names = attached.parameter_names()
    assert "bert.encoder.layer.0.attention.self.key.ia3_l.default" in names
    assert all(".ia3_l.default" in n for n in names)
    assert len(names) == 2 * 3 + 2  # key, value, attention.output.dense, output.dense per layer
    attached.detach(tiny_bert)
    assert not any("ia3" in n for n, _ in tiny_bert.named_parameters())


def test_two_peft_deltas_on_one_layer_are_both_active(tiny_llama, left_padded_batch):
    before = _state(tiny_llama)
    first = PeftDeltaConfig(LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False)).attach(
        tiny_llama
    )
    only_first = tiny_llama(**left_padded_batch).logits
    second = PeftDeltaConfig(LoraConfig(r=3, target_modules=["q_proj"], init_lora_weights=False)).attach(
        tiny_llama
    )
    assert first.adapter != second.adapter
    assert not set(first.parameter_names()) & set(second.parameter_names())
    q_proj = tiny_llama.model.layers[0].self_attn.q_proj
    assert sorted(q_proj.active_adapters) == sorted([first.adapter, second.adapter])
    assert not torch.allclose(tiny_llama(**left_padded_batch).logits, only_first)
    assert sorted(tiny_llama.peft_config) == sorted([first.adapter, second.adapter])
    second.detach(tiny_llama)
    assert q_proj.active_adapters == [first.adapter] and list(tiny_llama.peft_config) == [first.adapter]
    torch.testing.assert_close(tiny_llama(**left_padded_batch).logits, only_first, rtol=0, atol=0)
    first.detach(tiny_llama)
    after = _state(tiny_llama)
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    "peft_config",
    [LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], use_dora=True), IA3Config()],
)
def test_json_round_trip(peft_config):
    config = PeftDeltaConfig(peft_config)
    data = json.loads(json.dumps(config.to_dict()))
    restored = DeltaConfig.from_dict(data)
    assert isinstance(restored, PeftDeltaConfig)
    assert type(restored.peft_config) is type(peft_config)
    assert restored.to_dict() == config.to_dict()


@pytest.mark.parametrize(
    ("peft_config", "message"),
    [
        (
            PromptTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"),
            "PromptTuningConfig or PrefixTuningConfig",
        ),
        (PrefixTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"), "prompt-learning"),
        (LoraConfig(target_modules=["q_proj"], modules_to_save=["score"]), "head_modules"),
        (LoraConfig(target_modules=["q_proj"], init_lora_weights="pissa"), "changes the base weights"),
        (LoraConfig(target_modules=["q_proj"], bias="all"), "bias"),
    ],
)
def test_unsupported_options_are_refused(peft_config, message):
    with pytest.raises(ValueError, match=message):
        PeftDeltaConfig(peft_config)


def test_not_a_peft_config():
    with pytest.raises(ValueError, match=r"peft\.PeftConfig"):
        PeftDeltaConfig({"r": 8})


def _untouched(model):
    """What a refused attach must leave: no PEFT layer, no peft_config, the same parameters and flags."""
    return (
        [(n, p.requires_grad) for n, p in model.named_parameters()],
        [n for n, _ in model.named_modules()],
        "peft_config" in model.__dict__,
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            dict(r=2, target_modules=["q_proj"]),
            r"^LoraConfig\(target_modules=\['q_proj'\]\) matches no module of BertForSequenceClassification; its "
            r"linear layers end in query, key, value, dense, classifier \(e\.g\. 'bert\.encoder\.layer\.0\.attention"
            r"\.self\.query'\); pass some of those as target_modules$",
        ),
        (
            dict(r=2, target_modules=["query"], layers_to_transform=[5], layers_pattern="layer"),
            r"^LoraConfig\(target_modules=\['query'\], layers_to_transform=\[5\], layers_pattern='layer'\) matches "
            r"no module",
        ),
        # PEFT stops after wrapping layer 0's query (LayerNorm is not a layer LoRA supports): undone.
        (
            dict(r=2, target_modules=["query", "LayerNorm"]),
            r"^PEFT refused LoraConfig: .*LayerNorm.*; fix that option$",
        ),
        (dict(r=0, target_modules=["query"]), r"^PEFT refused LoraConfig: `r` should be a positive integer"),
    ],
)
def test_peft_errors_are_one_line_and_leave_the_model_untouched(tiny_bert, text_batch, options, message):
    before, expected = _untouched(tiny_bert), tiny_bert(**text_batch).logits
    with pytest.raises(UserInputError, match=message) as caught:
        get_delta_model(tiny_bert, LoraConfig(**options))
    assert "\n" not in str(caught.value)
    assert _untouched(tiny_bert) == before
    assert torch.equal(tiny_bert(**text_batch).logits, expected)


def test_preset_overrides_peft_refuses_are_one_line(tiny_bert):
    with pytest.raises(
        UserInputError,
        match=r"^LoraConfig\(target_modules='.\*query', layers_to_transform=\[0\]\) is refused: `layers_to_transform` cannot be used",
    ):
        resolve_method("lora", tiny_bert, target_modules=".*query", layers_to_transform=[0])
    # A preset resolved with targets the model lacks fails at attach in the same one line.
    with pytest.raises(UserInputError, match=r"^LoraConfig\(target_modules=\['q_proj'\]\) matches no module"):
        get_delta_model(tiny_bert, *resolve_method("lora", tiny_bert, target_modules=["q_proj"]))
