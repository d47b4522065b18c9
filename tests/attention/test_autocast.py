"""Coeff attention under mixed precision (``torch.autocast`` bf16 and fp16 on CPU): both paths train, and
their gradients match a float32 reference to half-precision tolerance. (fp16 on a GPU runs the same
autograd functions; no GPU was available to run it there.)

Before the fix, autocast lowered the products inside the custom autograd functions to bf16 in forward only
(backward runs outside the autocast region): the explicit path failed with a dtype mismatch in backward and
the blocked path with a float32 mask value written into a bf16 tensor.
"""

import pytest
import torch
from peft import LoraConfig

from deltaspace import CoeffTuningConfig, get_delta_model
from deltaspace.attention import fused
from deltaspace.attention.blocked import BlockedPlan, blocked_attention
from deltaspace.attention.explicit import explicit_attention
from deltaspace.attention.layout import KeyLayout

B, H, L, D = 2, 4, 9, 8


HALF = [torch.bfloat16, torch.float16]


def _inputs(dtype: torch.dtype):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, L, D, generator=g).to(dtype).requires_grad_() for _ in range(3))
    c = (torch.eye(H) + 0.3 * torch.randn(H, H, generator=g)).requires_grad_()
    return q, k, v, c


def _run(path, q, k, v, c, autocast: bool, dtype: torch.dtype = torch.bfloat16):
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1, :2] = 0
    layout = KeyLayout.build(
        mask, q_len=L, kv_len=L, num_prefix=0, causal=False, sliding_window=None, bias=None
    )
    with torch.autocast("cpu", dtype=dtype, enabled=autocast):
        if path == "explicit":
            out, _ = explicit_attention(q, k, v, c, layout, scaling=D**-0.5)
        else:
            blocked = fused.fused_attention if path == "fused" else blocked_attention
            out = blocked(q, k, v, c, BlockedPlan(layout, D**-0.5, None))
        loss = out.float().pow(2).sum()
    return out, torch.autograd.grad(loss, (q, k, v, c))


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("path", ["explicit", "blocked", "fused"])
def test_attention_paths_run_under_half_precision_autocast(path, dtype):
    if path == "fused" and fused.kernel() is None:
        pytest.skip("the fused kernel could not be built here")
    q, k, v, c = _inputs(dtype)
    out, grads = _run(path, q, k, v, c, autocast=True, dtype=dtype)
    reference = [t.detach().float().requires_grad_() for t in (q, k, v, c)]
    ref_out, ref_grads = _run(path, *reference, autocast=False)
    torch.testing.assert_close(out.float(), ref_out.float(), rtol=2e-2, atol=2e-2)
    for got, expected, leaf in zip(grads, ref_grads, (q, k, v, c), strict=True):
        assert got.dtype == leaf.dtype and torch.isfinite(got).all()
        torch.testing.assert_close(got.float(), expected, rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("path", ["explicit", "blocked"])
def test_coeff_lora_model_trains_under_half_precision_autocast(make_bert, path, dtype):
    def gradients(autocast: bool):
        model = get_delta_model(
            make_bert(),
            CoeffTuningConfig(coeff_dropout=0.0, attention_path=path),
            LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], init_lora_weights=False),
        )
        with torch.no_grad():  # a non-zero ΔC, so its gradient depends on the mixing
            for name, parameter in model.named_parameters():
                if "ds_coeff" in name:
                    parameter.add_(0.05 * torch.randn_like(parameter))
        ids = torch.randint(3, 100, (3, 12), generator=torch.Generator().manual_seed(1))
        mask = torch.ones_like(ids)
        mask[2, :4] = 0
        with torch.autocast("cpu", dtype=dtype, enabled=autocast):
            loss = model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1, 2])).loss
        loss.backward()
        return {n: p.grad.float() for n, p in model.named_parameters() if p.requires_grad}

    torch.manual_seed(0)
    reference = gradients(autocast=False)
    torch.manual_seed(0)
    mixed = gradients(autocast=True)
    assert reference.keys() == mixed.keys() and any("ds_coeff" in n for n in mixed)
    for name, grad in mixed.items():
        assert torch.isfinite(grad).all(), name
        # bf16 keeps ~3 significant digits: the direction of each gradient survives, to within a few %
        cosine = torch.nn.functional.cosine_similarity(grad.flatten(), reference[name].flatten(), dim=0)
        assert cosine > 0.98, (name, float(cosine))
