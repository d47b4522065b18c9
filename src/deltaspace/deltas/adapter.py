"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021): ``h -> h + up(act(down(h)))``.

Written here because PEFT has no bottleneck adapters (huggingface/peft#244) and AdapterHub's ``adapters``
pins transformers 4.x. The adapter sits on the *output* of a sublayer's output projection (BERT's
``attention.output.dense`` / ``output.dense``, LLaMA's ``self_attn.o_proj`` / ``mlp.down_proj``), i.e. after the
projection and before the residual add / LayerNorm, which is where Houlsby places it.

Insertion keeps the base model's parameter names: the adapter is registered as a submodule ``ds_adapter`` of
the wrapped projection and applied by a forward hook, instead of swapping the projection for a wrapper module
(which would rename ``dense.weight`` to ``dense.base_layer.weight``). ``detach`` removes both, so the model's
state dict, hooks and outputs are exactly what they were.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.pytorch_utils import Conv1D

from deltaspace.architectures import sublayer_outputs
from deltaspace.deltas.base import AttachedDelta, DeltaConfig, matches_target
from deltaspace.deltas.registry import Preset, register_delta

ADAPTER_ATTR = "ds_adapter"
PLACEMENTS = ("both", "ffn", "attention")


def sublayer_output_modules(model: nn.Module, placement: str = "both") -> list[str]:
    """Qualified names of the attention-output and/or feed-forward-output projections, in module order (the
    sublayer output names of every family in :mod:`deltaspace.architectures`)."""
    if placement not in PLACEMENTS:
        raise ValueError(f"adapter placement {placement!r} is not one of {PLACEMENTS}")
    return sublayer_outputs(
        model, attention=placement in ("both", "attention"), ffn=placement in ("both", "ffn")
    )


def output_features(module: nn.Module, name: str) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, Conv1D):
        return module.nf
    raise ValueError(
        f"cannot place an adapter on {name!r} ({type(module).__name__}): only nn.Linear and Conv1D outputs are "
        "supported; choose other target_modules"
    )


class BottleneckAdapter(nn.Module):
    """``up(act(down(h)))``; ``up`` starts at zero so the wrapped sublayer is unchanged at init."""

    def __init__(self, features: int, bottleneck: int, activation: str, bias: bool) -> None:
        super().__init__()
        self.down = nn.Linear(features, bottleneck, bias=bias)
        self.act = ACT2FN[activation]
        self.up = nn.Linear(bottleneck, features, bias=bias)

    def reset_parameters(self, init: str, init_std: float) -> None:
        if init == "normal":
            nn.init.normal_(self.down.weight, std=init_std)
        else:  # "kaiming": nn.Linear's default
            nn.init.kaiming_uniform_(self.down.weight, a=5**0.5)
        nn.init.zeros_(self.up.weight)
        for linear in (self.down, self.up):
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(hidden.to(self.down.weight.dtype)))).to(hidden.dtype)


def _delta_dtype(dtype: torch.dtype) -> torch.dtype:
    # Small residual updates would round away in half precision: keep them float32 (as PEFT does).
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _adapter_hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor | None:
    # Module-level function (not a closure) so deep copies and pickles of the model keep working.
    adapter = getattr(module, ADAPTER_ATTR)
    if getattr(adapter, "switched_off", False):  # DeltaModel.disable_adapter: the projection's own output
        return None
    return output + adapter(output)


@register_delta(
    # lr: the tuned comparison (suite v1, MiniLM-L6, 2,000 examples x 2 epochs) chose 3.16e-3 and 1e-2 on 3
    # tasks each (the lower, as suite v2's grid centre); adapter-ffn 1e-2 on 8 of 10 (docs/results.md).
    Preset("adapter", "Houlsby adapters after attention and feed-forward, bottleneck 16", lr=3.16e-3),
    Preset(
        "adapter-ffn",
        "Pfeiffer adapters after the feed-forward only, bottleneck 16",
        options={"placement": "ffn"},
        lr=1e-2,
    ),
)
@dataclasses.dataclass
class AdapterConfig(DeltaConfig):
    """Sequential bottleneck adapters.

    placement: "both" (after the attention output and the feed-forward output, Houlsby), "ffn" (feed-forward
    only, Pfeiffer) or "attention". target_modules overrides the structural discovery: a list of module-name
    suffixes or a regex string matching whole names (PEFT's convention).
    """

    method = "adapter"

    bottleneck: int = 16
    placement: str = "both"
    activation: str = "relu"
    bias: bool = True
    init: str = "normal"
    init_std: float = 1e-2
    target_modules: list[str] | str | None = None

    def __post_init__(self) -> None:
        if self.bottleneck < 1:
            raise ValueError(f"adapter bottleneck must be >= 1, got {self.bottleneck}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"adapter placement {self.placement!r} is not one of {PLACEMENTS}")
        if self.activation not in ACT2FN:
            raise ValueError(
                f"unknown adapter activation {self.activation!r}; use e.g. relu, swish, gelu, tanh"
            )
        if self.init not in ("normal", "kaiming"):
            raise ValueError(f"adapter init must be 'normal' or 'kaiming', got {self.init!r}")

    def target_names(self, model: nn.Module) -> list[str]:
        if self.target_modules is None:
            names = sublayer_output_modules(model, self.placement)
            where = f"placement={self.placement!r}"
        else:
            names = [n for n, _ in model.named_modules() if n and matches_target(n, self.target_modules)]
            where = f"target_modules={self.target_modules!r}"
        if not names:
            raise ValueError(
                f"AdapterConfig({where}) matched no module of {type(model).__name__}; pass target_modules naming "
                "the sublayer output projections (e.g. ['o_proj', 'down_proj'])"
            )
        return names

    def attach(self, model: nn.Module) -> AttachedAdapter:
        names = self.target_names(model)
        modules = [model.get_submodule(name) for name in names]
        # Validate every target before touching any, so a failed attach leaves the model as it was.
        for name, module in zip(names, modules, strict=True):
            if hasattr(module, ADAPTER_ATTR):
                raise ValueError(f"{name!r} already carries an adapter; detach it before attaching another")
        features = [output_features(module, name) for name, module in zip(names, modules, strict=True)]
        hook_ids = []
        for module, size in zip(modules, features, strict=True):
            adapter = BottleneckAdapter(size, self.bottleneck, self.activation, self.bias)
            adapter.reset_parameters(self.init, self.init_std)
            weight = module.weight
            adapter.to(device=weight.device, dtype=_delta_dtype(weight.dtype))
            module.add_module(ADAPTER_ATTR, adapter)
            hook_ids.append(module.register_forward_hook(_adapter_hook).id)
        return AttachedAdapter(self, model, names, hook_ids)


class AttachedAdapter(AttachedDelta):
    def __init__(
        self, config: AdapterConfig, model: nn.Module, names: list[str], hook_ids: list[int]
    ) -> None:
        self.config = config
        self.module_names = names
        self._hook_ids = hook_ids
        self._names = [
            f"{name}.{ADAPTER_ATTR}.{p}"
            for name in names
            for p, _ in getattr(model.get_submodule(name), ADAPTER_ATTR).named_parameters()
        ]

    def parameter_names(self) -> list[str]:
        return list(self._names)

    def detach(self, model: nn.Module) -> None:
        # Look the modules up in the model given (not cached references) so a deep copy detaches too.
        for name, hook_id in zip(self.module_names, self._hook_ids, strict=True):
            module = model.get_submodule(name)
            if module._forward_hooks.get(hook_id) is _adapter_hook:
                del module._forward_hooks[hook_id]
            if hasattr(module, ADAPTER_ATTR):
                delattr(module, ADAPTER_ATTR)

    def merge_refusal(self, model: nn.Module) -> str | None:
        return "a bottleneck adapter adds a nonlinear layer, not a weight of the base model"

    def disable_refusal(self, model: nn.Module) -> str | None:
        return None

    def set_enabled(self, model: nn.Module, enabled: bool) -> None:
        # A flag the hook reads, not removing the hooks: re-registering would change their order and ids.
        for name in self.module_names:
            getattr(model.get_submodule(name), ADAPTER_ATTR).switched_off = not enabled
