import copy
import json

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from deltaspace.attention import is_enabled
from deltaspace.deltas.base import DeltaConfig
from deltaspace.deltas.prefix import PrefixTuningConfig

P = 3


def additive(allowed: torch.Tensor) -> torch.Tensor:
    return torch.where(allowed, 0.0, torch.finfo(torch.float32).min)[:, None]


def reference_attention(q, k, v, key_prefix, value_prefix, mask, scaling):
    """Plain attention with the prefixes in front of the keys/values and every query allowed to see them."""
    groups = q.shape[1] // k.shape[1]
    keys = torch.cat([key_prefix, k], dim=2).repeat_interleave(groups, dim=1)
    values = torch.cat([value_prefix, v], dim=2).repeat_interleave(groups, dim=1)
    mask = torch.cat([torch.zeros(*mask.shape[:-1], key_prefix.shape[2]), mask], dim=-1)
    weights = torch.softmax(q @ keys.transpose(-1, -2) * scaling + mask, dim=-1)
    return (weights @ values).transpose(1, 2).flatten(2)


KEY_MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)


@pytest.mark.parametrize("reparameterize", [True, False])
def test_bert_attention_matches_hand_computed_reference(bert, reparameterize):
    model = bert
    PrefixTuningConfig(num_virtual_tokens=P, reparameterize=reparameterize, hidden_size=8).attach(model)
    attn = model.bert.encoder.layer[1].attention.self
    hidden = torch.randn(2, 5, 32)
    mask = additive(KEY_MASK[:, None, :].expand(2, 5, 5))
    split = lambda x: x.view(2, 5, 4, 8).transpose(1, 2)  # noqa: E731
    with torch.no_grad():
        out, weights = attn(hidden, attention_mask=mask)
        kp, vp = attn.ds_prefix(2)
        expected = reference_attention(
            split(attn.query(hidden)),
            split(attn.key(hidden)),
            split(attn.value(hidden)),
            kp,
            vp,
            mask,
            8**-0.5,
        )
    assert kp.shape == (2, 4, P, 8)
    torch.testing.assert_close(out, expected)
    assert weights.shape == (2, 4, 5, 5 + P)
    assert weights[1, :, :, P + 3 :].abs().max() == 0  # padded keys get no weight; the prefix always does
    assert weights[:, :, :, :P].min() > 0


@pytest.mark.parametrize("reparameterize", [True, False])
def test_llama_gqa_attention_matches_hand_computed_reference(llama_lm, reparameterize):
    model = llama_lm
    PrefixTuningConfig(num_virtual_tokens=P, reparameterize=reparameterize, hidden_size=8).attach(model)
    attn = model.model.layers[0].self_attn
    hidden = torch.randn(2, 5, 32)
    cos, sin = model.model.rotary_emb(hidden, torch.arange(5)[None].expand(2, 5))
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    mask = additive(causal[None] & KEY_MASK[:, None, :])
    with torch.no_grad():
        out, _ = attn(hidden, position_embeddings=(cos, sin), attention_mask=mask)
        q = attn.q_proj(hidden).view(2, 5, 4, 8).transpose(1, 2)
        k = attn.k_proj(hidden).view(2, 5, 2, 8).transpose(1, 2)
        v = attn.v_proj(hidden).view(2, 5, 2, 8).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        kp, vp = attn.ds_prefix(2)
        expected = attn.o_proj(reference_attention(q, k, v, kp, vp, mask, 8**-0.5))
    assert kp.shape == (2, 2, P, 8)  # (B, H_kv, P, head_dim): prefixes per key/value head
    torch.testing.assert_close(out, expected)


def test_reparameterisation_is_one_mlp_sliced_per_layer(llama_lm):
    model = llama_lm
    attached = PrefixTuningConfig(num_virtual_tokens=P, hidden_size=8).attach(model)
    generator = model.ds_prefix_generator
    assert attached.parameter_names() == [
        "ds_prefix_generator.embedding",
        "ds_prefix_generator.down.weight",
        "ds_prefix_generator.up.weight",
    ]
    layers, kv_heads, head_dim = 2, 2, 8
    assert generator.embedding.shape == (P, 32)
    assert generator.down.weight.shape == (8, 32)
    assert generator.up.weight.shape == (layers * 2 * kv_heads * head_dim, 8)
    with torch.no_grad():
        full = torch.tanh(generator.embedding @ generator.down.weight.T) @ generator.up.weight.T
        full = full.view(P, layers, 2, kv_heads, head_dim)
        for layer in range(layers):
            key, value = model.model.layers[layer].self_attn.ds_prefix(1)
            torch.testing.assert_close(key[0], full[:, layer, 0].transpose(0, 1))
            torch.testing.assert_close(value[0], full[:, layer, 1].transpose(0, 1))


def test_direct_prefix_parameters(bert):
    model = bert
    attached = PrefixTuningConfig(num_virtual_tokens=P, reparameterize=False).attach(model)
    names = attached.parameter_names()
    assert names == [
        f"bert.encoder.layer.{i}.attention.self.ds_prefix.{kv}" for i in range(2) for kv in ("key", "value")
    ]
    params = dict(model.named_parameters())
    assert all(params[n].shape == (4, P, 8) for n in names)


@pytest.mark.parametrize("which", ["bert", "llama_cls"])
def test_padding_is_ignored_in_the_whole_model(request, which):
    model = request.getfixturevalue(which)
    PrefixTuningConfig(num_virtual_tokens=P, hidden_size=8).attach(model)
    ids = torch.tensor([[2, 5, 9, 11, 3, 6], [2, 7, 4, 3, 0, 0]])
    mask = torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]])
    with torch.no_grad():
        both = model(input_ids=ids, attention_mask=mask).logits
        alone = model(input_ids=ids[1:, :4]).logits
    torch.testing.assert_close(both[1:], alone, atol=1e-5, rtol=0)


def test_prefix_changes_outputs_and_detach_restores_everything(llama_lm):
    model = llama_lm
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.tensor([[2, 5, 9, 11]])
    with torch.no_grad():
        reference = model(input_ids=ids).logits
    configs = [layer.self_attn.config for layer in model.model.layers]
    attached = PrefixTuningConfig(num_virtual_tokens=P).attach(model)
    routed = [layer.self_attn.config._attn_implementation for layer in model.model.layers]
    assert is_enabled(model) and routed == ["deltaspace"] * 2 and model.config._attn_implementation == "eager"
    with torch.no_grad():
        assert (model(input_ids=ids).logits - reference).abs().max() > 1e-6
    attached.detach(model)
    assert not is_enabled(model) and [layer.self_attn.config for layer in model.model.layers] == configs
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], v) for k, v in before.items())
    assert not any(hasattr(m, "ds_prefix") for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, reference, atol=0, rtol=0)


def test_generation_with_cache_matches_full_recomputation(llama_lm):
    model = llama_lm
    PrefixTuningConfig(num_virtual_tokens=P, hidden_size=8).attach(model)
    ids = torch.tensor([[2, 5, 9, 11]])
    generated = model.generate(input_ids=ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    tokens = ids
    with torch.no_grad():
        for _ in range(4):
            next_token = model(input_ids=tokens, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            tokens = torch.cat([tokens, next_token], dim=1)
    assert torch.equal(generated, tokens)


def test_errors(bert):
    model = bert
    PrefixTuningConfig().attach(model)
    with pytest.raises(ValueError, match="already carries"):
        PrefixTuningConfig().attach(model)
    with pytest.raises(ValueError, match="no attention module"):
        PrefixTuningConfig().attach(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="num_virtual_tokens"):
        PrefixTuningConfig(num_virtual_tokens=0)


def test_json_round_trip():
    config = PrefixTuningConfig(num_virtual_tokens=12, reparameterize=False, hidden_size=24, embed_dim=32)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["method"] == "prefix"
    assert DeltaConfig.from_dict(data) == config


def test_timm_style_attention(tiny_timm_vit, pixel_batch):
    """Models without a transformers config: prefixes go through the swapped timm-style attention."""
    model = tiny_timm_vit
    with torch.no_grad():
        reference = model(pixel_batch)
    attached = PrefixTuningConfig(num_virtual_tokens=P, hidden_size=8).attach(model)
    assert model.ds_prefix_generator.embedding.shape == (P, 32)  # D = heads × head size
    key, value = model.blocks[0].attn.ds_prefix(2)
    assert key.shape == value.shape == (2, 4, P, 8)
    with torch.no_grad():
        assert (model(pixel_batch) - reference).abs().max() > 1e-6
    attached.detach(model)
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_batch), reference, atol=0, rtol=0)


def test_deep_copy_keeps_one_shared_generator(llama_lm):
    model = llama_lm
    PrefixTuningConfig(num_virtual_tokens=P, hidden_size=8).attach(model)
    clone = copy.deepcopy(model)
    layers = [clone.model.layers[i].self_attn.ds_prefix for i in range(2)]
    assert all(layer.__dict__["_generator"] is clone.ds_prefix_generator for layer in layers)
    assert [k for k in clone.state_dict() if "prefix" in k] == [
        "ds_prefix_generator.embedding",
        "ds_prefix_generator.down.weight",
        "ds_prefix_generator.up.weight",
    ]
    ids = torch.tensor([[2, 5, 9, 11]])
    with torch.no_grad():
        clone.ds_prefix_generator.embedding.add_(1.0)  # the copy's layers follow the copy's generator
        assert (clone(input_ids=ids).logits - model(input_ids=ids).logits).abs().max() > 1e-4
