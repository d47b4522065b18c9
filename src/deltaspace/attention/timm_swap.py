"""timm-style attention modules (fused ``qkv``, ``num_heads``, ``proj``) routed through the explicit core.

timm's ``Attention`` fixes its fused-SDPA switch at construction and never exposes the attention maps, so an
attention-level delta cannot hook it. :func:`swap` changes the module's class to a subclass whose forward is
the explicit computation of :mod:`deltaspace.attention.core` (the same one the transformers hook uses),
keeping every submodule and parameter in place; :func:`restore` puts the original class back. Detection is
by duck typing (:func:`deltaspace.attention.discovery.is_timm_style`); timm is never imported.

Duck typing cannot tell a plain timm ``Attention`` from a relative of it that computes something else with the
same attributes (CaiT's talking heads mix logits and maps across heads with ``proj_l``/``proj_w``; Swin adds
a relative position bias). So :func:`swap` runs the original forward and the explicit one on a fixed random
input first and refuses, with a one-line error naming the type, any module whose output it does not reproduce.
"""

from __future__ import annotations

import torch
from torch import nn

from deltaspace.attention.core import attend
from deltaspace.attention.hooks import HOOKS

_SWAPPED_CLASSES: dict[type, type] = {}


def _explicit_forward(
    self: nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None = None
) -> torch.Tensor:
    batch, length, _ = x.shape
    heads = self.num_heads
    head_dim = self.qkv.out_features // (3 * heads)
    qkv = self.qkv(x).reshape(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    query, key, value = qkv.unbind(0)
    if getattr(self, "q_norm", None) is not None:
        query = self.q_norm(query)
    if getattr(self, "k_norm", None) is not None:
        key = self.k_norm(key)
    attn_drop = getattr(self, "attn_drop", None)
    dropout = attn_drop.p if isinstance(attn_drop, nn.Dropout) and self.training else 0.0
    out, _ = attend(
        self, query, key, value, attn_mask, scaling=getattr(self, "scale", head_dim**-0.5), dropout=dropout
    )
    out = out.reshape(batch, length, heads * head_dim)
    if getattr(self, "norm", None) is not None:
        out = self.norm(out)
    out = self.proj(out)
    if getattr(self, "proj_drop", None) is not None:
        out = self.proj_drop(out)
    return out


def _swapped_class(cls: type) -> type:
    if cls not in _SWAPPED_CLASSES:
        _SWAPPED_CLASSES[cls] = type(
            f"Deltaspace{cls.__name__}",
            (cls,),
            {"forward": _explicit_forward, "_ds_original_class": cls, "__module__": __name__},
        )
    return _SWAPPED_CLASSES[cls]


def is_swapped(module: nn.Module) -> bool:
    return "_ds_original_class" in type(module).__dict__


def _check_reproduces(module: nn.Module, original: type) -> None:
    """Compare the original and the swapped forward (eval mode, deltas set aside) on a fixed random input."""
    weight = module.qkv.weight
    if weight.is_meta:  # nothing to run on (e.g. a model built on the meta device to count parameters)
        return
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, module.qkv.in_features, generator=generator).to(weight.device, weight.dtype)
    deltas = {name: module._modules.pop(name) for name in HOOKS if name in module._modules}
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            expected = original.forward(module, x)
            got = _explicit_forward(module, x)
    except Exception as error:
        raise ValueError(
            f"{original.__name__}: the deltaspace timm-style path cannot run this module's forward "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); only timm-style "
            "attention (fused qkv, optional q/k norms, softmax, proj) is supported"
        ) from None
    finally:
        module._modules.update(deltas)
        for m, mode in modes:
            m.training = mode
    tolerance = 1e-2 if weight.dtype in (torch.float16, torch.bfloat16) else 1e-5
    same = isinstance(expected, torch.Tensor) and expected.shape == got.shape
    scale = 1.0 + float(expected.abs().max()) if same else 1.0
    if not same or not torch.allclose(got, expected, rtol=tolerance, atol=tolerance * scale):
        diff = f"max difference {float((got - expected).abs().max()):.3g}" if same else "another output shape"
        raise ValueError(
            f"{original.__name__}: the deltaspace timm-style path does not reproduce this module's forward "
            f"({diff} on a random input); only timm-style attention (fused qkv, optional q/k norms, softmax, "
            "proj) is supported"
        )


def swap(module: nn.Module) -> None:
    """Route ``module`` through the explicit core (idempotent); refuses a module it does not reproduce."""
    if is_swapped(module):
        return
    if getattr(module, "gate", None) is not None:
        raise ValueError(
            f"{type(module).__name__} uses gated attention, which the deltaspace timm-style path does not "
            "reproduce; build the model without gating"
        )
    original = type(module)
    module.__class__ = _swapped_class(original)
    try:
        _check_reproduces(module, original)
    except ValueError:
        module.__class__ = original
        raise


def restore(module: nn.Module) -> None:
    """Undo :func:`swap` (no-op for a module that was not swapped)."""
    if is_swapped(module):
        module.__class__ = type(module)._ds_original_class
