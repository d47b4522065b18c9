"""Coeff-Tuning (Miao, Chen, Qiu, CVPR 2025): tune how each layer's post-softmax attention maps are combined.

Each targeted attention module gets the Coeff hook (``deltaspace.attention.COEFF_HOOK``), a submodule holding a zero-initialised residual Δ of shape
(H, H), H the number of *query* heads (under GQA the maps are mixed after the key/value heads are repeated).
The attention computes ``C = I + dropout(Δ)`` in training (one inverted-dropout mask per forward per layer,
shared by the batch) and ``C = I + Δ`` in eval, then ``Â[b, h] = Σ_k C[h, k] · A[b, k]``
(:mod:`deltaspace.attention`). At Δ = 0 the model is exactly the base model.

Dropout and weight decay act on the residual only, never on the identity, so they cannot delete pretrained
heads. Only the diagonal of C could be merged into the output projection; the off-diagonal mixing is
input-dependent and stays an inference-time cost (about H/(2·d_head) extra FLOPs of the attention).
``attach`` puts the hooks on the targeted modules (only those) with ``deltaspace.attention.attach_hooks``,
which routes them through the deltaspace attention; ``detach`` takes them off, and a module gets its own
implementation back once no attention-level delta on it needs the route. ``attention_path`` picks how the mixed attention is
computed: "explicit" (whole maps; the reference), "blocked" (query panels recomputed in backward, memory
O(N) instead of O(N²) per layer), or "auto" (explicit for small maps, blocked beyond).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from deltaspace.architectures import VALUE_NAMES
from deltaspace.attention.core import ATTENTION_PATHS
from deltaspace.attention.discovery import (
    find_attention_modules,
    is_cross_attention,
    kv_shape,
    layer_index,
    model_type,
    num_query_heads,
)
from deltaspace.attention.hooks import COEFF_HOOK, hook_of
from deltaspace.attention.routing import attach_hooks, detach_hooks, switch_hooks
from deltaspace.deltas.base import AttachedDelta, DeltaConfig, matches_target
from deltaspace.deltas.registry import Preset, register_delta


class CoeffMixer(nn.Module):
    """The per-layer Coeff-Tuning parameter: residual head-mixing coefficients Δ (H×H, zero at init).

    Δ and C are float32 whatever the base dtype (as PEFT does for adapters), and the attention mixes in
    float32: near 1.0 bf16 steps are 2⁻⁷ up and 2⁻⁸ down, so C rounded to bf16 would swallow small updates.
    """

    def __init__(
        self,
        num_heads: int,
        dropout: float,
        device: torch.device | None = None,
        attention_path: str = "auto",
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.attention_path = attention_path
        self.delta = nn.Parameter(torch.zeros(num_heads, num_heads, device=device, dtype=torch.float32))

    def coefficients(self) -> torch.Tensor:
        """C = I + dropout(Δ) in training, I + Δ in eval."""
        identity = torch.eye(self.num_heads, device=self.delta.device, dtype=self.delta.dtype)
        return identity + F.dropout(self.delta, p=self.dropout, training=self.training)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, dropout={self.dropout}, attention_path={self.attention_path!r}"


# lr: alone, the tuned comparison (suite v1, MiniLM-L6) chose 3.16e-2 on 7 of 10 tasks (docs/results.md). Beside
# another method that rate is too high (every Coeff + X seed collapsed to the majority class on epistemic_nli);
# ΔC at 1e-2, the first sweep's rate, did better there (docs/results.md, "What Coeff adds"): so 1e-2 in "a+b".
@register_delta(
    Preset(
        "coeff",
        "Coeff-Tuning: per-layer head-mixing coefficients",
        seeded_init=False,
        lr=3.16e-2,
        combined_lr=1e-2,
        lr_key=COEFF_HOOK,
    )
)
@dataclasses.dataclass
class CoeffTuningConfig(DeltaConfig):
    """Coeff-Tuning options.

    ``target_modules``: a regex (full match on the module name) or a list of name suffixes, chosen among the
    attention modules; default every self-attention module. ``layers_to_transform``: keep only these layer
    indices (the first all-digit component of the module name). ``include_cross_attention``: also tune
    cross-attention modules. ``attention_path``: "auto" (default), "explicit" or "blocked" (see the module
    docstring); it changes speed and memory, never the result beyond float rounding.
    """

    method: ClassVar[str] = "coeff"

    coeff_dropout: float = 0.2
    target_modules: list[str] | str | None = None
    layers_to_transform: list[int] | None = None
    include_cross_attention: bool = False
    attention_path: str = "auto"

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.coeff_dropout) < 1.0:
            raise ValueError(f"coeff_dropout must be in [0, 1), got {self.coeff_dropout}")
        if self.attention_path not in ATTENTION_PATHS:
            raise ValueError(
                f"attention_path must be one of {', '.join(ATTENTION_PATHS)}, got {self.attention_path!r}"
            )
        if isinstance(self.target_modules, (list, tuple)):
            self.target_modules = list(self.target_modules)
        if self.layers_to_transform is not None:
            self.layers_to_transform = [int(i) for i in self.layers_to_transform]

    def select(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        """The attention modules this config targets (raises a one-line ValueError when there are none)."""
        candidates = find_attention_modules(model)
        if not candidates:
            raise ValueError(
                f"Coeff-Tuning cannot hook model type {model_type(model)!r}: its attention does not go through "
                "transformers' attention registry (no module forward uses ALL_ATTENTION_FUNCTIONS) and it has "
                "no timm-style attention (fused qkv, num_heads, proj)"
            )
        selected = [
            (n, m) for n, m in candidates if self.include_cross_attention or not is_cross_attention(n, m)
        ]
        selected = [
            (n, m)
            for n, m in selected
            if self.target_modules is None or matches_target(n, self.target_modules)
        ]
        if self.layers_to_transform is not None:
            wanted = set(self.layers_to_transform)
            selected = [(n, m) for n, m in selected if layer_index(n) in wanted]
        if not selected:
            examples = ", ".join(n for n, _ in candidates[:4])
            raise ValueError(
                f"Coeff-Tuning: target_modules={self.target_modules!r}, layers_to_transform="
                f"{self.layers_to_transform!r} match no attention module of {model_type(model)!r}; "
                f"its attention modules are named like: {examples}"
            )
        return selected

    def attach(self, model: nn.Module) -> CoeffAttached:
        selected = self.select(model)
        hooks = []
        for _, module in selected:
            param = next(module.parameters(), None)
            device = param.device if param is not None else None
            mixer = CoeffMixer(
                num_query_heads(module), float(self.coeff_dropout), device, self.attention_path
            )
            hooks.append((module, mixer))
        attach_hooks(model, COEFF_HOOK, hooks)
        return CoeffAttached(self, [name for name, _ in selected])


@dataclasses.dataclass(frozen=True)
class ValueOutputs:
    """Where an attention module computes its values: ``layer``'s outputs ``start`` on. ``transposed``: the
    weight is (in, out), as in GPT-2's ``Conv1D``, so the outputs are its columns rather than its rows."""

    layer: nn.Module
    start: int
    transposed: bool = False

    def scale(self, factor: torch.Tensor) -> None:
        """Multiply value output j (j from ``start``) by ``factor[j]``, in weight and bias."""
        outputs = slice(self.start, self.start + factor.numel())
        factor = factor.to(self.layer.weight.dtype)
        if self.transposed:
            self.layer.weight[:, outputs] *= factor[None, :]
        else:
            self.layer.weight[outputs] *= factor[:, None]
        if self.layer.bias is not None:
            self.layer.bias[outputs] *= factor


def value_outputs(module: nn.Module) -> ValueOutputs | None:
    """An attention module's value projection and where its value outputs start, if it has one."""
    for attr in VALUE_NAMES:  # the value projection names of every family
        layer = getattr(module, attr, None)
        layer = getattr(layer, "base_layer", layer)  # a PEFT-wrapped projection (merged before Coeff)
        if isinstance(layer, nn.Linear):
            return ValueOutputs(layer, 0)
    for attr, transposed in (
        ("qkv", False),
        ("c_attn", True),
    ):  # fused [q; k; v]: timm's Linear, GPT-2's Conv1D
        fused = getattr(module, attr, None)
        fused = getattr(fused, "base_layer", fused)
        weight = getattr(fused, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            continue
        if not transposed and not isinstance(fused, nn.Linear):
            continue
        outputs = weight.shape[1] if transposed else weight.shape[0]
        if outputs % 3 == 0:
            return ValueOutputs(fused, 2 * outputs // 3, transposed)
    return None


def _head_scales(module: nn.Module) -> torch.Tensor:
    """Diagonal of C = I + Δ grouped by value head: shape (H_kv, H / H_kv)."""
    kv_heads, _ = kv_shape(module)
    return (1.0 + torch.diagonal(hook_of(module, COEFF_HOOK).delta.detach())).view(kv_heads, -1)


class CoeffAttached(AttachedDelta):
    def __init__(self, config: CoeffTuningConfig, module_names: list[str]) -> None:
        self.config = config
        self.module_names = module_names
        self._parked: list[nn.Module] | None = None  # the mixers, while switched off

    def disable_refusal(self, model: nn.Module) -> str | None:
        return None

    def set_enabled(self, model: nn.Module, enabled: bool) -> None:
        # Off = the hooks taken off (and their modules unrouted, back on their own attention implementation), the
        # very same mixers put back on: exactly the base's computation, nothing reallocated.
        modules = [model.get_submodule(name) for name in self.module_names]
        self._parked = switch_hooks(model, COEFF_HOOK, modules, self._parked, enabled)

    def parameter_names(self) -> list[str]:
        return [f"{name}.{COEFF_HOOK}.delta" if name else f"{COEFF_HOOK}.delta" for name in self.module_names]

    def detach(self, model: nn.Module) -> None:
        detach_hooks(COEFF_HOOK, [model.get_submodule(name) for name in self.module_names])

    def merge_refusal(self, model: nn.Module) -> str | None:
        for name in self.module_names:
            module = model.get_submodule(name)
            delta = hook_of(module, COEFF_HOOK).delta.detach()
            if torch.count_nonzero(delta - torch.diag(torch.diagonal(delta))):
                return (
                    f"a non-diagonal head mix is not a weight of the base model (ΔC of {name or 'the model'})"
                )
            if value_outputs(module) is None:
                return f"{name or type(module).__name__} has no value projection to scale"
            scales = _head_scales(module)
            if not torch.equal(scales, scales[:, :1].expand_as(scales)):
                return f"query heads sharing a value head of {name} have different coefficients"
        return None

    def merge(self, model: nn.Module) -> None:
        # With C diagonal, head h's output is C[h,h]·A_h·V_h, and V_h is linear in its value rows.
        with torch.no_grad():
            for name in self.module_names:
                module = model.get_submodule(name)
                _, head_dim = kv_shape(module)
                value_outputs(module).scale(_head_scales(module)[:, 0].repeat_interleave(head_dim))
        self.detach(model)
