import math

import pytest
import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

from deltaspace.attention import ATTENTION_NAME, attend, disable, enable, find_attention_modules, is_enabled


class HandMadePrefix(nn.Module):
    """The ds_prefix contract: called with the batch size, returns (B, H_kv, P, head_dim) keys and values."""

    def __init__(self, kv_heads: int, length: int, head_dim: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self.key = nn.Parameter(torch.randn(kv_heads, length, head_dim, generator=g))
        self.value = nn.Parameter(torch.randn(kv_heads, length, head_dim, generator=g))

    def forward(self, batch_size: int):
        return self.key.expand(batch_size, -1, -1, -1), self.value.expand(batch_size, -1, -1, -1)


def test_registered_with_mask_function():
    assert ATTENTION_NAME in AttentionInterface._global_mapping
    # Without a mask function under the same name transformers would silently pass attention_mask=None.
    assert ATTENTION_NAME in AttentionMaskInterface._global_mapping


@pytest.mark.parametrize("with_mask", [True, False])
def test_prefix_keys_values_against_reference(with_mask):
    g = torch.Generator().manual_seed(0)
    batch, heads, kv_heads, q_len, kv_len, dim, plen = 2, 4, 2, 3, 5, 8, 2
    module = nn.Module()
    module.ds_prefix = HandMadePrefix(kv_heads, plen, dim)
    q = torch.randn(batch, heads, q_len, dim, generator=g)
    k = torch.randn(batch, kv_heads, kv_len, dim, generator=g)
    v = torch.randn(batch, kv_heads, kv_len, dim, generator=g)
    mask = None
    if with_mask:
        keep = torch.ones(batch, kv_len, dtype=torch.bool)
        keep[1, 3:] = False
        mask = torch.zeros(batch, 1, q_len, kv_len).masked_fill(
            ~keep[:, None, None, :], torch.finfo(torch.float32).min
        )

    out, weights = attend(module, q, k, v, mask, scaling=None)

    full_k = torch.cat([module.ds_prefix.key.expand(batch, -1, -1, -1), k], 2).repeat_interleave(2, dim=1)
    full_v = torch.cat([module.ds_prefix.value.expand(batch, -1, -1, -1), v], 2).repeat_interleave(2, dim=1)
    scores = q @ full_k.transpose(-1, -2) / math.sqrt(dim)
    if with_mask:
        scores = scores + torch.cat([torch.zeros(batch, 1, q_len, plen), mask], dim=-1)
    expected_w = scores.softmax(-1)
    torch.testing.assert_close(weights, expected_w)
    torch.testing.assert_close(out, (expected_w @ full_v).transpose(1, 2))
    assert weights.shape == (batch, heads, q_len, plen + kv_len)
    assert torch.all(weights[:, :, :, :plen] > 0)  # prefix columns stay visible
    if with_mask:
        assert torch.all(weights[1, :, :, plen + 3 :] == 0)


def test_prefix_through_a_transformers_model(tiny_llama, left_padded_batch):
    attn_module = tiny_llama.model.layers[0].self_attn
    attn_module.ds_prefix = HandMadePrefix(kv_heads=2, length=3, head_dim=8)
    enable(tiny_llama)
    try:
        out = tiny_llama(**left_padded_batch, output_attentions=True)
    finally:
        disable(tiny_llama)
        del attn_module.ds_prefix
    maps = out.attentions[0]
    assert maps.shape == (2, 4, 7, 3 + 7)
    assert torch.all(maps[..., :3] > 0)
    causal_future = torch.ones(7, 7).triu(1).bool()
    assert torch.all(maps[..., 3:][..., causal_future] == 0)
    assert torch.all(maps[1, :, 2:, 3:5] == 0)  # left padding of the second sequence stays masked
    assert len(out.attentions) == 1  # the layer without a prefix stayed on SDPA, which returns no maps


def _all_attention(model):
    return [m for _, m in find_attention_modules(model)]


@pytest.mark.parametrize("original", ["sdpa", "eager"])
def test_enable_routes_only_given_modules_and_disable_restores(make_llama, original):
    model = make_llama(attn_implementation=original)
    first, second = _all_attention(model)
    shared = first.config
    assert enable(model, [first]) == [first]
    assert enable(model, [first]) == []  # idempotent
    assert is_enabled(model) and first.config._attn_implementation == ATTENTION_NAME
    assert second.config is shared and model.config._attn_implementation == original
    disable(model)
    assert not is_enabled(model) and first.config is shared


def test_enable_without_modules_routes_modules_carrying_deltas(make_llama):
    model = make_llama()
    first, second = _all_attention(model)
    second.ds_prefix = HandMadePrefix(kv_heads=2, length=1, head_dim=8)
    assert enable(model) == [second]
    assert first.config is model.config  # no delta: keeps the model's own implementation
    disable(model)


@pytest.mark.parametrize("original", ["sdpa", "eager"])
def test_enabled_without_deltas_matches_original(make_llama, left_padded_batch, original):
    model = make_llama(attn_implementation=original)
    expected = model(**left_padded_batch).logits
    enable(model, _all_attention(model))
    got = model(**left_padded_batch).logits
    disable(model)
    valid = left_padded_batch["attention_mask"].bool()
    torch.testing.assert_close(got[valid], expected[valid], rtol=0, atol=1e-6)


def test_causal_module_without_mask_stays_causal():
    module = nn.Module()
    module.is_causal = True
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 4, 8, generator=g) for _ in range(3))
    _, weights = attend(module, q, k, v, None)
    assert torch.all(weights[..., torch.ones(4, 4).triu(1).bool()] == 0)
    module.is_causal = False
    assert torch.all(attend(module, q, k, v, None)[1] > 0)


def test_t5_position_bias_is_applied():
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(vocab_size=40, d_model=16, d_kv=8, d_ff=20, num_layers=1, num_heads=2)
    model = T5ForConditionalGeneration(config).eval()
    batch = {
        "input_ids": torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]),
        "decoder_input_ids": torch.tensor([[0, 5, 6], [0, 9, 10]]),
    }
    expected = model(**batch).logits
    enable(model, _all_attention(model))
    got = model(**batch).logits
    disable(model)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
