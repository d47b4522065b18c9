import math

import pytest
import torch
from transformers import (
    BertConfig,
    BertModel,
    DebertaV2Config,
    DebertaV2Model,
    LlamaConfig,
    LlamaForCausalLM,
    ViTConfig,
    ViTForImageClassification,
)
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from deltaspace import CoeffTuningConfig, DeltaConfig, PrefixTuningConfig, get_delta_model
from deltaspace.deltas.coeff import CoeffMixer

MIN = torch.finfo(torch.float32).min


def _randomize(delta_model, scale=0.4, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in delta_model.base_model.named_parameters():
            if name.endswith("ds_coeff.delta"):
                param.copy_(torch.randn(param.shape, generator=g) * scale)


def _capture(module):
    """Record the inputs (args and kwargs) and output of one call of ``module``."""
    seen = {}
    pre = module.register_forward_pre_hook(lambda m, a, k: seen.update(args=a, kwargs=k), with_kwargs=True)
    post = module.register_forward_hook(lambda m, a, out: seen.update(out=out))
    return seen, (pre, post)


# ------------------------------------------------------------------------------------------------ config
def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="coeff_dropout"):
        CoeffTuningConfig(coeff_dropout=1.0)
    with pytest.raises(ValueError, match="coeff_dropout"):
        CoeffTuningConfig(coeff_dropout=-0.1)
    config = CoeffTuningConfig(coeff_dropout=0.1, target_modules=["self_attn"], layers_to_transform=[1])
    assert DeltaConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["method"] == "coeff"


def _implementations(model):
    return [layer.self_attn.config._attn_implementation for layer in model.model.layers]


def test_standalone_attach_routes_only_targeted_modules_and_detach_restores(tiny_llama):
    attached = CoeffTuningConfig(layers_to_transform=[1]).attach(tiny_llama)
    assert _implementations(tiny_llama) == ["sdpa", "deltaspace"]
    assert tiny_llama.config._attn_implementation == "sdpa"
    attached.detach(tiny_llama)
    assert _implementations(tiny_llama) == ["sdpa", "sdpa"]
    assert all(layer.self_attn.config is tiny_llama.config for layer in tiny_llama.model.layers)
    assert not any(hasattr(m, "ds_coeff") for m in tiny_llama.modules())


@pytest.mark.parametrize("original", ["eager", "sdpa"])
def test_unload_restores_each_modules_own_implementation(make_llama, original):
    base = make_llama(attn_implementation=original)
    model = get_delta_model(
        base, CoeffTuningConfig(layers_to_transform=[0]), PrefixTuningConfig(num_virtual_tokens=2)
    )
    assert _implementations(base) == ["deltaspace", "deltaspace"]
    restored = model.unload()
    assert _implementations(restored) == [original, original]
    assert all(layer.self_attn.config is restored.config for layer in restored.model.layers)


def test_coeff_and_prefix_share_a_route(tiny_llama):
    coeff = CoeffTuningConfig(layers_to_transform=[0]).attach(tiny_llama)
    prefix = PrefixTuningConfig(num_virtual_tokens=2).attach(tiny_llama)
    coeff.detach(tiny_llama)
    assert _implementations(tiny_llama) == ["deltaspace", "deltaspace"]  # the prefix still needs both
    prefix.detach(tiny_llama)
    assert _implementations(tiny_llama) == ["sdpa", "sdpa"]


def test_attention_path_is_validated_and_stored(tiny_llama):
    with pytest.raises(ValueError, match="attention_path"):
        CoeffTuningConfig(attention_path="flash")
    CoeffTuningConfig(attention_path="blocked").attach(tiny_llama)
    assert tiny_llama.model.layers[0].self_attn.ds_coeff.attention_path == "blocked"


# ------------------------------------------------------------------------------ identity at ΔC = 0
def test_zero_delta_is_identity_bert(tiny_bert, text_batch):
    expected = tiny_bert(**text_batch).logits
    model = get_delta_model(tiny_bert, CoeffTuningConfig()).eval()
    torch.testing.assert_close(model(**text_batch).logits, expected, rtol=0, atol=1e-6)


def test_zero_delta_is_identity_vit(tiny_vit, pixel_batch):
    expected = tiny_vit(pixel_values=pixel_batch).logits
    model = get_delta_model(tiny_vit, CoeffTuningConfig()).eval()
    torch.testing.assert_close(model(pixel_values=pixel_batch).logits, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_zero_delta_is_identity_causal(make_llama, make_mistral, left_padded_batch, family):
    base = (make_llama if family == "llama" else make_mistral)()
    expected = base(**left_padded_batch).logits
    model = get_delta_model(base, CoeffTuningConfig()).eval()
    got = model(**left_padded_batch).logits
    valid = left_padded_batch["attention_mask"].bool()
    torch.testing.assert_close(got[valid], expected[valid], rtol=0, atol=1e-6)


# ------------------------------------------------------------------- random ΔC against hand-written math
def test_random_delta_matches_reference_bert(tiny_bert, text_batch):
    model = get_delta_model(tiny_bert, CoeffTuningConfig()).eval()
    _randomize(model)
    layer = tiny_bert.bert.encoder.layer[1].attention.self
    seen, hooks = _capture(layer)
    model(**text_batch)
    for h in hooks:
        h.remove()
    x = seen["args"][0] if seen["args"] else seen["kwargs"]["hidden_states"]
    batch, length, _ = x.shape
    heads, dim = 4, 8

    def project(linear):
        return (x @ linear.weight.T + linear.bias).view(batch, length, heads, dim).transpose(1, 2)

    q, k, v = project(layer.query), project(layer.key), project(layer.value)
    pad = (1 - text_batch["attention_mask"][:, None, None, :].float()) * MIN
    maps = (q @ k.transpose(-1, -2) / math.sqrt(dim) + pad).softmax(-1)
    coefficients = torch.eye(heads) + layer.ds_coeff.delta
    mixed = torch.einsum("hk,bkqs->bhqs", coefficients, maps)
    context = (mixed @ v).transpose(1, 2).reshape(batch, length, heads * dim)
    torch.testing.assert_close(seen["out"][0], context, rtol=1e-5, atol=1e-6)


def _llama_reference(attn, x, cos, sin, attention_mask, coefficients):
    batch, length, _ = x.shape
    heads, kv_heads, dim = 4, 2, 8
    q = (x @ attn.q_proj.weight.T).view(batch, length, heads, dim).transpose(1, 2)
    k = (x @ attn.k_proj.weight.T).view(batch, length, kv_heads, dim).transpose(1, 2)
    v = (x @ attn.v_proj.weight.T).view(batch, length, kv_heads, dim).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    k, v = k.repeat_interleave(heads // kv_heads, dim=1), v.repeat_interleave(heads // kv_heads, dim=1)
    allowed = torch.ones(length, length).tril().bool()[None, None] & attention_mask.bool()[:, None, None, :]
    scores = (q @ k.transpose(-1, -2) / math.sqrt(dim)).masked_fill(~allowed, MIN)
    mixed = torch.einsum("hk,bkqs->bhqs", coefficients, scores.softmax(-1))
    out = (mixed @ v).transpose(1, 2).reshape(batch, length, heads * dim)
    return out @ attn.o_proj.weight.T, mixed


def test_random_delta_matches_reference_llama_gqa(tiny_llama, left_padded_batch):
    model = get_delta_model(tiny_llama, CoeffTuningConfig()).eval()
    _randomize(model)
    attn = tiny_llama.model.layers[1].self_attn
    assert attn.ds_coeff.delta.shape == (4, 4)  # query heads, not the 2 KV heads
    seen, hooks = _capture(attn)
    outputs = model(**left_padded_batch, output_attentions=True)
    for h in hooks:
        h.remove()
    x = seen["kwargs"]["hidden_states"]
    cos, sin = seen["kwargs"]["position_embeddings"]
    expected, expected_maps = _llama_reference(
        attn, x, cos, sin, left_padded_batch["attention_mask"], torch.eye(4) + attn.ds_coeff.delta
    )
    valid = left_padded_batch["attention_mask"].bool()
    torch.testing.assert_close(seen["out"][0][valid], expected[valid], rtol=1e-5, atol=1e-6)
    # output_attentions returns the *mixed* maps, with future positions exactly zero (on real query rows;
    # fully padded rows see no key at all and are uniform, as in eager attention).
    maps = outputs.attentions[1]
    torch.testing.assert_close(maps[0], expected_maps[0], rtol=1e-5, atol=1e-6)
    future = torch.ones(7, 7).triu(1).bool()
    assert torch.all(maps[0][:, future] == 0)
    assert torch.all(maps[1, :, 2:][:, future[2:]] == 0)
    assert not torch.allclose(maps.sum(-1), torch.ones(2, 4, 7))  # rows no longer sum to 1


def test_sliding_window_respected_in_mixed_maps(tiny_mistral, left_padded_batch):
    tiny_mistral.set_attn_implementation("eager")
    blocked = tiny_mistral(**left_padded_batch, output_attentions=True).attentions[0] == 0
    assert blocked[0, 0].tril(-1).any()  # the window really excludes old positions
    model = get_delta_model(tiny_mistral, CoeffTuningConfig()).eval()
    _randomize(model)
    maps = model(**left_padded_batch, output_attentions=True).attentions[0]
    assert torch.all(maps[blocked.expand_as(maps)] == 0)
    assert (maps[~blocked.expand_as(maps)] != 0).any()


# -------------------------------------------------------------------------------------- generation
def test_generation_with_cache_matches_recompute(tiny_llama, left_padded_batch):
    model = get_delta_model(tiny_llama, CoeffTuningConfig()).eval()
    _randomize(model, scale=0.5)
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    cached = model.generate(**left_padded_batch, use_cache=True, **kwargs)
    recomputed = model.generate(**left_padded_batch, use_cache=False, **kwargs)
    assert torch.equal(cached, recomputed)
    assert cached.shape == (2, 13)


# ------------------------------------------------------------------------------------------ dropout
def test_coefficient_dropout_only_in_training(tiny_llama, left_padded_batch):
    model = get_delta_model(tiny_llama, CoeffTuningConfig(coeff_dropout=0.5))
    _randomize(model)
    model.eval()
    first, second = model(**left_padded_batch).logits, model(**left_padded_batch).logits
    assert torch.equal(first, second)
    model.train()
    torch.manual_seed(0)
    variants = [model(**left_padded_batch).logits for _ in range(3)]
    assert not all(torch.equal(variants[0], v) for v in variants[1:])


def test_no_dropout_training_equals_eval(tiny_llama, left_padded_batch):
    model = get_delta_model(tiny_llama, CoeffTuningConfig(coeff_dropout=0.0))
    _randomize(model)
    train_logits = model.train()(**left_padded_batch).logits
    torch.testing.assert_close(train_logits, model.eval()(**left_padded_batch).logits, rtol=0, atol=0)


def test_coefficients_inverted_dropout_one_mask_per_forward(tiny_llama, left_padded_batch):
    mixer = CoeffMixer(4, dropout=0.5)
    with torch.no_grad():
        mixer.delta.copy_(torch.arange(1.0, 17.0).view(4, 4))
    torch.manual_seed(0)
    residual = mixer.train().coefficients() - torch.eye(4)
    kept = residual != 0
    assert kept.any() and (~kept).any()
    torch.testing.assert_close(residual[kept], mixer.delta[kept] * 2)  # scaled by 1 / (1 - p)
    torch.testing.assert_close(mixer.eval().coefficients(), torch.eye(4) + mixer.delta)

    model = get_delta_model(tiny_llama, CoeffTuningConfig()).train()
    calls = []
    for layer in tiny_llama.model.layers:
        original = layer.self_attn.ds_coeff.coefficients
        layer.self_attn.ds_coeff.coefficients = lambda original=original: calls.append(1) or original()
    model(**left_padded_batch)
    assert len(calls) == len(tiny_llama.model.layers)


# ------------------------------------------------------------------------------------------ targeting
def test_target_modules_and_layers(tiny_llama):
    model = get_delta_model(tiny_llama, CoeffTuningConfig(layers_to_transform=[1]), head_modules=[])
    assert model.trainable_parameter_names() == ["model.layers.1.self_attn.ds_coeff.delta"]
    model.unload()
    regex = CoeffTuningConfig(target_modules=r"model\.layers\.0\.self_attn")
    assert [n for n, _ in regex.select(tiny_llama)] == ["model.layers.0.self_attn"]
    with pytest.raises(ValueError, match="match no attention module"):
        CoeffTuningConfig(target_modules=["nonexistent"]).attach(tiny_llama)


def test_cross_attention_only_on_request():
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=20,
        is_decoder=True,
        add_cross_attention=True,
    )
    decoder = BertModel(config)
    self_only = [n for n, _ in CoeffTuningConfig().select(decoder)]
    both = [n for n, _ in CoeffTuningConfig(include_cross_attention=True).select(decoder)]
    assert self_only == ["encoder.layer.0.attention.self", "encoder.layer.1.attention.self"]
    assert len(both) == 4 and "encoder.layer.0.crossattention.self" in both


def test_unsupported_model_gets_one_line_error():
    config = DebertaV2Config(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20
    )
    with pytest.raises(ValueError, match="cannot hook model type 'deberta-v2'") as info:
        get_delta_model(DebertaV2Model(config), CoeffTuningConfig())
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------- counts
def test_parameter_count_vit_b16():
    with torch.device("meta"):
        vit = ViTForImageClassification(ViTConfig(num_labels=10))  # defaults are ViT-B/16
    model = get_delta_model(vit, CoeffTuningConfig(), head_modules=[])
    assert model.num_trainable_parameters() == 1_728
    assert all(p.device.type == "meta" for p in model.parameters())


def test_parameter_count_llama_7b():
    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
    )
    with torch.device("meta"):
        llama = LlamaForCausalLM(config)
    model = get_delta_model(llama, CoeffTuningConfig())
    assert model.head_modules == []  # the pretrained lm_head is never trained
    assert model.num_trainable_parameters() == 32_768
