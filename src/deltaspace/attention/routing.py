"""Routing single attention modules to the "deltaspace" attention and back, and counting who needs the route.

Only the attention modules that carry an attention-level hook are routed; every other module keeps the
implementation the model was loaded with (SDPA, FlashAttention-2, eager). transformers modules pick their
attention function from ``self.config._attn_implementation`` at each call, so a routed module gets its own
shallow copy of its config naming "deltaspace"; :func:`unroute` puts the original config object back. The mask
stays the one the model builds for its own implementation, which
:class:`deltaspace.attention.layout.KeyLayout` reads in every format. timm-style modules are swapped instead
(:mod:`deltaspace.attention.timm_swap`).

Deltas do not route by hand: :func:`attach_hooks` puts their hooks on the modules and routes them,
:func:`detach_hooks` takes them off; each module counts its hooks, and a module routed for hooks is unrouted
when its last hook leaves. Modules the user routed with :func:`enable` stay routed.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

from torch import nn

from deltaspace.attention import timm_swap
from deltaspace.attention.discovery import (
    find_attention_modules,
    is_hf_attention,
    is_timm_style,
    learn_attention_classes,
)
from deltaspace.attention.hooks import carries_hook, check_hook_name, hook_of
from deltaspace.errors import UserInputError

ATTENTION_NAME = "deltaspace"

# Routed transformers module -> the config object it had before (restored by unroute).
_ROUTED: weakref.WeakKeyDictionary[nn.Module, Any] = weakref.WeakKeyDictionary()
# Module -> how many hooks attach_hooks put on it, for modules that attach_hooks routed itself.
_HOOK_USERS: weakref.WeakKeyDictionary[nn.Module, int] = weakref.WeakKeyDictionary()


def is_routed(module: nn.Module) -> bool:
    return module in _ROUTED or timm_swap.is_swapped(module)


def route(module: nn.Module) -> bool:
    """Send ``module`` through the deltaspace attention; False if it already was (then nothing changes)."""
    if is_routed(module):
        return False
    if not is_hf_attention(module):
        if not is_timm_style(module):
            raise ValueError(
                f"{type(module).__name__} is not an attention module the deltaspace attention can take over; "
                "pick one of deltaspace.attention.find_attention_modules(model)"
            )
        timm_swap.swap(module)
        return True
    config = getattr(module, "config", None)
    if config is None or not hasattr(config, "_attn_implementation_internal"):
        raise ValueError(
            f"{type(module).__name__} has no transformers config to read its attention implementation from, "
            "so it cannot be routed to the deltaspace attention"
        )
    if getattr(config, "_attn_implementation", None) == "flex_attention":
        # The model would build flex attention's BlockMask for every layer, which the deltaspace attention
        # cannot read: refuse now rather than at the first forward.
        raise UserInputError(
            f"{type(module).__name__} uses attn_implementation='flex_attention', which attention-level deltas "
            "(Coeff-Tuning, prefix) cannot hook; load the model with attn_implementation='sdpa' or 'eager'"
        )
    own = copy.copy(config)  # shallow: everything shared but the implementation name
    own._attn_implementation_internal = ATTENTION_NAME
    _ROUTED[module] = config
    module.config = own
    return True


def unroute(module: nn.Module) -> None:
    """Undo :func:`route` (no-op for a module that is not routed)."""
    if module in _ROUTED:
        module.config = _ROUTED.pop(module)
    _HOOK_USERS.pop(module, None)
    timm_swap.restore(module)


def is_enabled(model: nn.Module) -> bool:
    """Whether any attention module of ``model`` is routed through the deltaspace attention."""
    return any(is_routed(m) for m in model.modules())


def _route_all(modules: Iterable[nn.Module]) -> list[nn.Module]:
    """Route every module or none: on error the ones routed here are unrouted again."""
    routed: list[nn.Module] = []
    try:
        for module in modules:
            if route(module):
                routed.append(module)
    except ValueError:
        for module in routed:
            unroute(module)
        raise
    return routed


def enable(model: nn.Module, modules: Iterable[nn.Module] | None = None) -> list[nn.Module]:
    """Route ``modules`` (default: the attention modules of ``model`` that carry a hook); returns those newly
    routed. All-or-nothing: on error, nothing stays routed. They stay routed until :func:`disable`."""
    if modules is None:
        modules = [m for _, m in find_attention_modules(model) if carries_hook(m)]
    learn_attention_classes(model)
    return _route_all(modules)


def disable(model: nn.Module, modules: Iterable[nn.Module] | None = None) -> None:
    """Unroute ``modules`` (default: every routed module of ``model``), restoring each one's own attention."""
    for module in list(model.modules()) if modules is None else modules:
        unroute(module)


def attach_hooks(model: nn.Module, name: str, hooks: Sequence[tuple[nn.Module, nn.Module]]) -> None:
    """Put hook ``name`` on each (attention module of ``model``, hook) pair and route those modules.
    All-or-nothing: a module that already carries ``name`` or cannot be routed leaves every module as it
    was (ValueError)."""
    check_hook_name(name)
    learn_attention_classes(model)
    for module, _ in hooks:
        if name in module._modules:
            raise ValueError(f"{type(module).__name__} already carries {name}; detach that delta first")
    for module, hook in hooks:
        module.add_module(name, hook)
    try:
        newly = set(_route_all(module for module, _ in hooks))
    except ValueError:
        for module, _ in hooks:
            del module._modules[name]
        raise
    for module, _ in hooks:
        if module in newly or module in _HOOK_USERS:
            _HOOK_USERS[module] = _HOOK_USERS.get(module, 0) + 1


def detach_hooks(name: str, modules: Iterable[nn.Module]) -> None:
    """Take hook ``name`` off ``modules``; a module routed for hooks is unrouted once it carries none."""
    check_hook_name(name)
    for module in modules:
        if module._modules.pop(name, None) is None or module not in _HOOK_USERS:
            continue
        _HOOK_USERS[module] -= 1
        if _HOOK_USERS[module] <= 0:
            unroute(module)


def switch_hooks(
    model: nn.Module, name: str, modules: Sequence[nn.Module], parked: list[nn.Module] | None, enabled: bool
) -> list[nn.Module] | None:
    """A delta's hooks switched off or on again (``disable_adapter``). Off: hook ``name`` taken off ``modules``
    (each unrouted once it carries none, so it runs its own attention), the hook modules returned to be kept;
    on: those ``parked`` modules put back, ``None`` returned. Switching to the current state changes nothing."""
    if not enabled and parked is None:
        parked = [hook_of(module, name) for module in modules]
        detach_hooks(name, modules)
        return parked
    if enabled and parked is not None:
        attach_hooks(model, name, list(zip(modules, parked, strict=True)))
        return None
    return parked
