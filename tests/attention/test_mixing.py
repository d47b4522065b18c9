import pytest
import torch

from deltaspace.attention import mix_heads, mix_heads_reference


def test_fast_path_matches_reference():
    g = torch.Generator().manual_seed(0)
    attn = torch.rand(3, 5, 4, 6, generator=g, dtype=torch.float64).softmax(-1)
    coeff = torch.randn(5, 5, generator=g, dtype=torch.float64)
    fast = mix_heads(attn, coeff)
    torch.testing.assert_close(fast, mix_heads_reference(attn, coeff), rtol=1e-12, atol=1e-12)
    # Spot-check the convention Â[b, h] = Σ_k C[h, k] A[b, k] on one entry.
    expected = sum(coeff[2, k] * attn[1, k, 3, 4] for k in range(5))
    torch.testing.assert_close(fast[1, 2, 3, 4], expected)


def test_identity_is_exact_and_non_contiguous_input_works():
    attn = torch.rand(2, 4, 6, 3).transpose(2, 3)
    assert torch.equal(mix_heads(attn, torch.eye(4)), attn)


def test_mixing_preserves_causal_zeros():
    scores = torch.randn(2, 4, 5, 5).masked_fill(torch.ones(5, 5).triu(1).bool(), float("-inf"))
    mixed = mix_heads(scores.softmax(-1), torch.randn(4, 4))
    assert torch.all(mixed[..., torch.ones(5, 5).triu(1).bool()] == 0)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"expected \(4, 4\)"):
        mix_heads(torch.rand(1, 4, 2, 2), torch.eye(3))


def test_same_bits_with_and_without_autograd():
    # Saved -> loaded logits must reproduce exactly, and loading runs without gradients.
    attn = torch.rand(2, 4, 7, 7).softmax(-1)
    coeff = torch.eye(4) + 0.3 * torch.randn(4, 4)
    with torch.no_grad():
        plain = mix_heads(attn, coeff)
    assert torch.equal(mix_heads(attn, coeff.clone().requires_grad_()), plain)
