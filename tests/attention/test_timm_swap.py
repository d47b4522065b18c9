import pytest
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


class TalkingHeadAttention(torch.nn.Module):
    """CaiT's talking-heads attention: timm-style attributes (qkv, num_heads, proj), but the logits and the
    maps are also mixed across heads (proj_l before the softmax, proj_w after it)."""

    def __init__(self, dim: int = 32, num_heads: int = 4) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = torch.nn.Linear(dim, dim * 3)
        self.attn_drop = torch.nn.Dropout(0.0)
        self.proj = torch.nn.Linear(dim, dim)
        self.proj_l = torch.nn.Linear(num_heads, num_heads)
        self.proj_w = torch.nn.Linear(num_heads, num_heads)
        self.proj_drop = torch.nn.Dropout(0.0)

    def forward(self, x):
        batch, length, dim = x.shape
        qkv = (
            self.qkv(x)
            .reshape(batch, length, 3, self.num_heads, dim // self.num_heads)
            .permute(2, 0, 3, 1, 4)
        )
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = self.proj_l((q @ k.transpose(-2, -1)).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        attn = self.proj_w(attn.softmax(dim=-1).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = (self.attn_drop(attn) @ v).transpose(1, 2).reshape(batch, length, dim)
        return self.proj_drop(self.proj(x))


def test_module_it_does_not_reproduce_is_refused_in_one_line(tiny_timm_vit, pixel_batch):
    from deltaspace import CoeffTuningConfig

    block = tiny_timm_vit.blocks[1]
    torch.manual_seed(1)
    block.attn = TalkingHeadAttention().eval()
    assert is_timm_style(block.attn)  # duck typing alone would take it
    expected = tiny_timm_vit(pixel_batch)
    with pytest.raises(ValueError, match=r"^TalkingHeadAttention: .*does not reproduce") as info:
        CoeffTuningConfig().attach(tiny_timm_vit)
    assert "\n" not in str(info.value)
    # Nothing was left behind: no class swapped, no coefficients, same outputs.
    assert not any(is_swapped(m) or hasattr(m, "ds_coeff") for m in tiny_timm_vit.modules())
    assert torch.equal(tiny_timm_vit(pixel_batch), expected)


def test_swap_check_passes_in_training_mode_and_keeps_it(tiny_timm_vit):
    attn = tiny_timm_vit.blocks[0].attn.train()
    swap(attn)
    assert is_swapped(attn) and attn.training and attn.attn_drop.training
    restore(attn)


def test_meta_device_model_is_swapped_without_running_it():
    from tests.conftest import TinyTimmViT

    with torch.device("meta"):
        model = TinyTimmViT()
    swap(model.blocks[0].attn)
    assert is_swapped(model.blocks[0].attn)
