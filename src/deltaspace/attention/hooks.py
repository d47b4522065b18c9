"""The hooks attention-level deltas put on an attention module, and how the attention applies them.

A hook is a submodule of an attention module under a registered name. :func:`apply_hooks` (called by
:func:`deltaspace.attention.core.attend` on every call) iterates :data:`HOOKS` in registration order and lets
each hook present on the module change what the attention computes: prefix tuning puts keys/values in front,
Coeff-Tuning supplies the head-mixing coefficients. The names live here only: deltas refer to
:data:`PREFIX_HOOK` / :data:`COEFF_HOOK`, never to the strings, and install their hooks through
:func:`deltaspace.attention.routing.attach_hooks`, which also routes the module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

# ``module.ds_prefix(batch_size) -> (key, value)``, each (B, H_kv, P, head_dim).
PREFIX_HOOK = "ds_prefix"
# ``module.ds_coeff.coefficients() -> C`` (H, H); optional ``attention_path`` ("auto", "explicit", "blocked").
COEFF_HOOK = "ds_coeff"


@dataclass
class HookedInputs:
    """What one attention call computes with, as the hooks leave it."""

    key: torch.Tensor  # (B, H_kv, P + Lk, D): prefix keys first
    value: torch.Tensor
    num_prefix: int = 0
    coefficients: torch.Tensor | None = None  # (H, H) head mix, None: no mixing
    attention_path: str = "auto"


HookApply = Callable[[nn.Module, HookedInputs], None]


def _apply_prefix(hook: nn.Module, inputs: HookedInputs) -> None:
    key_prefix, value_prefix = hook(inputs.key.shape[0])
    inputs.num_prefix = key_prefix.shape[2]
    inputs.key = torch.cat([key_prefix.to(inputs.key.dtype), inputs.key], dim=2)
    inputs.value = torch.cat([value_prefix.to(inputs.value.dtype), inputs.value], dim=2)


def _apply_coeff(hook: nn.Module, inputs: HookedInputs) -> None:
    inputs.coefficients = hook.coefficients()
    inputs.attention_path = getattr(hook, "attention_path", "auto")


# name -> how the attention applies that hook; applied in this order (prefixes change the keys first).
HOOKS: dict[str, HookApply] = {PREFIX_HOOK: _apply_prefix, COEFF_HOOK: _apply_coeff}


def register_hook(name: str, apply: HookApply) -> None:
    """Make the attention apply ``apply(hook, inputs)`` for every module carrying a submodule ``name``."""
    if name in HOOKS and HOOKS[name] is not apply:
        raise ValueError(f"attention hook {name!r} is already registered; pick another name")
    HOOKS[name] = apply


def check_hook_name(name: str) -> None:
    if name not in HOOKS:
        raise ValueError(
            f"{name!r} is not a registered attention hook ({', '.join(HOOKS)}); register_hook it first"
        )


def hook_of(module: nn.Module, name: str) -> nn.Module | None:
    """The hook ``name`` on ``module``, or None."""
    return module._modules.get(name)


def carries_hook(module: nn.Module) -> bool:
    """Whether ``module`` carries any registered attention hook."""
    return any(name in module._modules for name in HOOKS)


def apply_hooks(module: nn.Module, key: torch.Tensor, value: torch.Tensor) -> HookedInputs:
    """Keys, values and head mix of one call after every hook on ``module`` had its say."""
    inputs = HookedInputs(key, value)
    for name, apply in HOOKS.items():
        hook = module._modules.get(name)
        if hook is not None:
            apply(hook, inputs)
    return inputs
