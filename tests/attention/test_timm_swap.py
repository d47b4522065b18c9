import torch

from deltaspace.attention import disable, enable, find_attention_modules, is_timm_style
from deltaspace.attention.timm_swap import is_swapped, restore, swap


def _capture_input(module):
    seen = {}
    handle = module.register_forward_hook(lambda m, args, out: seen.update(x=args[0], out=out))
    return seen, handle


def _reference(attn, x, coefficients):
    """timm attention written out from the module's weights, with the maps mixed by C."""
    batch, length, dim = x.shape
    heads, head_dim = attn.num_heads, dim // attn.num_heads
    qkv = x @ attn.qkv.weight.T + attn.qkv.bias
    q, k, v = qkv.reshape(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(q), attn.k_norm(k)
    maps = (q @ k.transpose(-1, -2) * head_dim**-0.5).softmax(-1)
    mixed = torch.einsum("hk,bkqs->bhqs", coefficients, maps)
    out = (mixed @ v).transpose(1, 2).reshape(batch, length, dim)
    return out @ attn.proj.weight.T + attn.proj.bias


def test_detected_by_duck_typing(tiny_timm_vit):
    names = [n for n, _ in find_attention_modules(tiny_timm_vit)]
    assert names == ["blocks.0.attn", "blocks.1.attn"]
    assert is_timm_style(tiny_timm_vit.blocks[0].attn)


def test_swap_equals_fused_original_and_restores(tiny_timm_vit, pixel_batch):
    attn = tiny_timm_vit.blocks[0].attn
    original_cls = type(attn)
    expected = tiny_timm_vit(pixel_batch)
    swap(attn)
    assert is_swapped(attn) and isinstance(attn, original_cls)
    torch.testing.assert_close(tiny_timm_vit(pixel_batch), expected, rtol=0, atol=1e-6)
    restore(attn)
    assert type(attn) is original_cls
    assert torch.equal(tiny_timm_vit(pixel_batch), expected)


def test_swapped_path_mixes_heads_like_reference(tiny_timm_vit, pixel_batch):
    attn = tiny_timm_vit.blocks[1].attn
    attn.ds_coeff = torch.nn.Module()
    delta = torch.randn(4, 4, generator=torch.Generator().manual_seed(0)) * 0.3
    attn.ds_coeff.coefficients = lambda: torch.eye(4) + delta
    enable(tiny_timm_vit)
    seen, handle = _capture_input(attn)
    try:
        tiny_timm_vit(pixel_batch)
    finally:
        handle.remove()
        disable(tiny_timm_vit)
        del attn.ds_coeff
    torch.testing.assert_close(
        seen["out"], _reference(attn, seen["x"], torch.eye(4) + delta), rtol=1e-5, atol=1e-6
    )
    assert not any(is_swapped(m) for m in tiny_timm_vit.modules())
