"""The blocked Coeff attention against the explicit reference, at the level of the attention function.

Both implementations of the blocked path run every case: the torch ops (blocked.py) and the fused C++ kernel
(fused.py). Panels and blocks are made tiny (a few rows) so every case runs through many of them and through
several column ranges.
"""

import pytest
import torch

from deltaspace.attention import blocked, fused
from deltaspace.attention.blocked import BlockedPlan, blocked_attention
from deltaspace.attention.explicit import explicit_attention
from deltaspace.attention.layout import MASKED, KeyLayout

B, H, H_KV, D = 2, 4, 2, 8


@pytest.fixture(autouse=True)
def tiny_panels(monkeypatch):
    monkeypatch.setattr(blocked, "PANEL_ELEMENTS", 3 * B * H * 16)  # ~3 query rows per panel
    monkeypatch.setattr(fused, "MAX_BLOCK_ROWS", 3)  # ~3 query rows per block


def _fused_kernel():
    if fused.kernel() is None:
        pytest.skip("the fused kernel could not be built here (see the warning); the torch-op path is tested")
    return fused.fused_attention


@pytest.fixture(params=["torch ops", "fused kernel"])
def blocked_impl(request):
    """blocked_attention's two implementations: same signature, same results."""
    return blocked_attention if request.param == "torch ops" else _fused_kernel()


def _inputs(q_len, kv_len, seed=0, prefix=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()  # noqa: E731
    q = make(B, H, q_len, D)
    k = make(B, H_KV, prefix + kv_len, D)
    v = make(B, H_KV, prefix + kv_len, D)
    c = torch.eye(H, dtype=torch.float64) + 0.4 * torch.randn(H, H, generator=g, dtype=torch.float64)
    return q, k, v, c.requires_grad_()


def _padding(kv_len, q_len, kind):
    keep = torch.ones(B, kv_len, dtype=torch.bool)
    keep[1, :3] = False  # left padding of the second sequence
    if kind == "2d":
        return keep.long()
    full = keep[:, None, None, :].expand(B, 1, q_len, kv_len)
    if kind == "bool":
        return full
    return torch.zeros(B, 1, q_len, kv_len, dtype=torch.float64).masked_fill(~full, MASKED)


CASES = {
    "no mask": dict(),
    "padding bool": dict(mask="bool"),
    "padding float": dict(mask="float"),
    "padding 2d + causal": dict(mask="2d", causal=True),
    "causal (no mask)": dict(causal=True),
    "causal + cache": dict(causal=True, q_len=5),
    "sliding window": dict(causal=True, window=4),
    "sliding window + cache + padding": dict(mask="2d", causal=True, window=3, q_len=6),
    "prefix + padding": dict(mask="bool", prefix=3),
    "prefix + sliding window": dict(causal=True, window=4, prefix=2),
    "softcap + bias": dict(softcap=2.0, bias=True),
    "no mixing (prefix only)": dict(prefix=2, mix=False),
}


def _case(name):
    spec = CASES[name]
    kv_len = 13
    q_len = spec.get("q_len", kv_len)
    prefix = spec.get("prefix", 0)
    q, k, v, c = _inputs(q_len, kv_len, prefix=prefix)
    mask = _padding(kv_len, q_len, spec["mask"]) if "mask" in spec else None
    bias = None
    if spec.get("bias"):
        bias = torch.randn(
            1, H, q_len, kv_len, generator=torch.Generator().manual_seed(5), dtype=torch.float64
        )
    layout = KeyLayout.build(
        mask,
        q_len=q_len,
        kv_len=kv_len,
        num_prefix=prefix,
        causal=spec.get("causal", False),
        sliding_window=spec.get("window"),
        bias=bias,
    )
    return q, k, v, (c if spec.get("mix", True) else None), layout, spec.get("softcap")


def _valid_rows(layout):
    """Query rows that see at least one key (fully masked rows are padding queries; see KeyLayout)."""
    scores = torch.zeros(B, H, layout.q_len, layout.total_keys, dtype=torch.float64)
    return (layout.apply(scores, 0, 0) > MASKED / 2).any(-1)  # (B, H, Lq)


@pytest.mark.parametrize("name", list(CASES))
def test_forward_and_gradients_match_explicit(name, blocked_impl):
    q, k, v, c, layout, softcap = _case(name)
    tensors = [t for t in (q, k, v, c) if t is not None]
    valid = _valid_rows(layout)
    weight = torch.randn(
        B, H, layout.q_len, D, generator=torch.Generator().manual_seed(9), dtype=torch.float64
    )

    def run(path):
        if path == "explicit":
            out, _ = explicit_attention(q, k, v, c, layout, scaling=D**-0.5, softcap=softcap)
        else:
            impl = blocked_attention if softcap is not None else blocked_impl  # the kernel has no softcap
            out = impl(q, k, v, c, BlockedPlan(layout, D**-0.5, softcap))
        loss = (out * weight)[valid].sum()
        return out, torch.autograd.grad(loss, tensors)

    ref_out, ref_grads = run("explicit")
    out, grads = run("blocked")
    torch.testing.assert_close(out[valid], ref_out[valid], rtol=1e-10, atol=1e-12)
    for got, expected in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-11)


def test_gradcheck_with_attention_dropout(blocked_impl):
    """Dropout masks come from the seed: backward must regenerate exactly forward's masks."""
    q, k, v, c = _inputs(6, 6, seed=1)
    layout = KeyLayout.build(
        None, q_len=6, kv_len=6, num_prefix=0, causal=True, sliding_window=None, bias=None
    )
    plan = BlockedPlan(layout, D**-0.5, dropout=0.3, seed=1234)
    assert torch.autograd.gradcheck(lambda *t: blocked_impl(*t, plan), (q, k, v, c))


def test_dropout_is_seeded_and_acts(blocked_impl):
    q, k, v, c = _inputs(7, 7, seed=2)
    layout = KeyLayout.build(
        None, q_len=7, kv_len=7, num_prefix=0, causal=False, sliding_window=None, bias=None
    )
    with torch.no_grad():
        plain = blocked_impl(q, k, v, c, BlockedPlan(layout, D**-0.5))
        first = blocked_impl(q, k, v, c, BlockedPlan(layout, D**-0.5, dropout=0.5, seed=3))
        again = blocked_impl(q, k, v, c, BlockedPlan(layout, D**-0.5, dropout=0.5, seed=3))
        other = blocked_impl(q, k, v, c, BlockedPlan(layout, D**-0.5, dropout=0.5, seed=4))
    assert torch.equal(first, again)
    assert not torch.allclose(first, plain) and not torch.allclose(first, other)


def test_key_columns_skipped_only_where_nothing_is_visible():
    layout = KeyLayout.build(
        _padding(13, 13, "2d"), q_len=13, kv_len=13, num_prefix=0, causal=True, sliding_window=4, bias=None
    )
    assert layout.columns(0, 3) == (0, 3)  # causal: nothing right of the last row
    assert layout.columns(8, 11) == (5, 11)  # window: nothing older than 4 positions
    # A 4D mask (SDPA/eager format) is authoritative: the range is read from its content.
    causal_4d = torch.ones(13, 13, dtype=torch.bool).tril()[None, None].expand(B, 1, 13, 13)
    from_mask = KeyLayout.build(
        causal_4d, q_len=13, kv_len=13, num_prefix=0, causal=True, sliding_window=None, bias=None
    )
    assert from_mask.causal_offset is None and from_mask.columns(0, 3) == (0, 3)
    with_prefix = KeyLayout.build(
        None, q_len=13, kv_len=13, num_prefix=2, causal=True, sliding_window=4, bias=None
    )
    assert with_prefix.columns(8, 11) == (0, 13)  # prefix columns stay in front


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_mask_rate_and_unbiased_scale(p):
    layout = KeyLayout.build(
        None, q_len=4, kv_len=4, num_prefix=0, causal=False, sliding_window=None, bias=None
    )
    plan = BlockedPlan(layout, 1.0, dropout=p, seed=7)
    dropped = blocked._dropped(plan, 0, torch.empty(200_000))
    assert dropped.float().mean().item() == pytest.approx(p, abs=0.005)
    assert not torch.equal(dropped, blocked._dropped(plan, 1, torch.empty(200_000)))  # panels differ
    kept_fraction = 1.0 - (blocked._drop_threshold(p) + 2**15) / 2**16
    assert blocked._keep_scale(p) * kept_fraction == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_fused_dropout_rate_is_unbiased_and_independent_of_blocking(p, monkeypatch):
    """With V = 1 and no mixing each output is the kept share of its row's probability mass, scaled by
    1/(1-p): its mean over many rows is 1 (unbiased), and the masks do not depend on the block size."""
    impl = _fused_kernel()
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 2, 512, 4, generator=g), torch.randn(1, 2, 512, 4, generator=g)
    v = torch.ones(1, 2, 512, 1)
    layout = KeyLayout.build(
        None, q_len=512, kv_len=512, num_prefix=0, causal=False, sliding_window=None, bias=None
    )
    plan = BlockedPlan(layout, 0.0, dropout=p, seed=11)  # scaling 0: uniform maps, each key weighs 1/512
    out = impl(q, k, v, None, plan)
    kept = out * (1 - p) * 512  # number of kept keys per row
    assert kept.mean().item() == pytest.approx(512 * (1 - p), rel=0.01)
    assert kept.std().item() == pytest.approx((512 * p * (1 - p)) ** 0.5, rel=0.15)  # independent draws
    assert out.mean().item() == pytest.approx(1.0, abs=0.01)
    monkeypatch.setattr(fused, "MAX_BLOCK_ROWS", 64)
    # One key dropped differently would move an output by 1/512/(1-p) > 1e-3; gemm rounding stays ~1e-6.
    torch.testing.assert_close(impl(q, k, v, None, plan), out, rtol=0, atol=1e-5)


def test_explicit_path_keeps_one_map_for_backward():
    q, k, v, c = _inputs(9, 9, seed=3)
    layout = KeyLayout.build(
        None, q_len=9, kv_len=9, num_prefix=0, causal=True, sliding_window=None, bias=None
    )
    maps = set()

    def pack(tensor):
        if tensor.numel() == B * H * 9 * 9 and tensor.is_floating_point():
            maps.add(tensor.untyped_storage().data_ptr())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, _ = explicit_attention(q, k, v, c, layout, scaling=D**-0.5)
    assert len(maps) == 1  # the softmax output, shared by the softmax and the mix; Â is recomputed
    out.sum().backward()
