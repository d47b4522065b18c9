"""The hook registry the attention iterates, the use count that keeps a module routed, and that the hook names
are spelled only inside attention/."""

import ast
import copy
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from deltaspace.attention import (
    COEFF_HOOK,
    PREFIX_HOOK,
    attach_hooks,
    detach_hooks,
    disable,
    enable,
    find_attention_modules,
    register_hook,
)
from deltaspace.attention.hooks import HOOKS
from deltaspace.attention.routing import is_routed

SRC = Path(__file__).resolve().parents[2] / "src" / "deltaspace"


class Mixer(nn.Module):
    def __init__(self, heads: int, scale: float = 1.0) -> None:
        super().__init__()
        self.delta = nn.Parameter(torch.eye(heads) * (scale - 1.0))

    def coefficients(self) -> torch.Tensor:
        return torch.eye(self.delta.shape[0]) + self.delta


class Prefix(nn.Module):
    def forward(self, batch_size: int):
        return torch.zeros(batch_size, 2, 1, 8), torch.zeros(batch_size, 2, 1, 8)


def test_a_registered_hook_is_applied_by_the_attention(tiny_llama, left_padded_batch):
    def double_values(hook, inputs):
        inputs.value = inputs.value * hook.factor

    class Doubler(nn.Module):
        factor = 2.0

    register_hook("test_double", double_values)
    try:
        first = next(m for _, m in find_attention_modules(tiny_llama))
        outputs = []
        handle = first.o_proj.register_forward_hook(lambda m, args, out: outputs.append(args[0]))
        tiny_llama(**left_padded_batch)
        attach_hooks(tiny_llama, "test_double", [(first, Doubler())])
        tiny_llama(**left_padded_batch)
        detach_hooks("test_double", [first])
        handle.remove()
        # Attention output is linear in V: doubling V doubles what reaches o_proj (padding rows aside).
        valid = left_padded_batch["attention_mask"].bool()
        torch.testing.assert_close(outputs[1][valid], 2 * outputs[0][valid], rtol=1e-5, atol=1e-5)
        assert not is_routed(first)
        with pytest.raises(ValueError, match="already registered"):
            register_hook("test_double", lambda hook, inputs: None)
    finally:
        HOOKS.pop("test_double", None)
    with pytest.raises(ValueError, match="not a registered attention hook"):
        attach_hooks(tiny_llama, "test_double", [(first, Doubler())])


def test_route_lasts_while_any_hook_uses_it(tiny_llama):
    first, second = [m for _, m in find_attention_modules(tiny_llama)]
    attach_hooks(tiny_llama, COEFF_HOOK, [(first, Mixer(4)), (second, Mixer(4))])
    attach_hooks(tiny_llama, PREFIX_HOOK, [(first, Prefix())])
    assert is_routed(first) and is_routed(second)
    detach_hooks(COEFF_HOOK, [first, second])
    assert is_routed(first) and not is_routed(second)  # the prefix still needs the first
    detach_hooks(PREFIX_HOOK, [first])
    assert not is_routed(first) and first.config is tiny_llama.config


def test_user_routing_outlives_the_hooks(tiny_llama):
    first, _ = [m for _, m in find_attention_modules(tiny_llama)]
    enable(tiny_llama, [first])
    attach_hooks(tiny_llama, COEFF_HOOK, [(first, Mixer(4))])
    detach_hooks(COEFF_HOOK, [first])
    assert is_routed(first)
    disable(tiny_llama)
    assert not is_routed(first)


def test_attach_is_all_or_nothing(tiny_llama):
    first, second = [m for _, m in find_attention_modules(tiny_llama)]
    attach_hooks(tiny_llama, COEFF_HOOK, [(second, Mixer(4))])
    with pytest.raises(ValueError, match=f"already carries {COEFF_HOOK}"):
        attach_hooks(tiny_llama, COEFF_HOOK, [(first, Mixer(4)), (second, Mixer(4))])
    assert COEFF_HOOK not in first._modules and not is_routed(first)
    unroutable = copy.deepcopy(first)
    unroutable.config = None  # a transformers attention without a config: routing refuses it
    with pytest.raises(ValueError, match="no transformers config"):
        attach_hooks(tiny_llama, PREFIX_HOOK, [(first, Prefix()), (unroutable, Prefix())])
    assert PREFIX_HOOK not in first._modules and not is_routed(first)
    detach_hooks(COEFF_HOOK, [second])
    assert not is_routed(second)


def _string_constants(tree: ast.AST) -> list[tuple[int, str]]:
    """String literals of a module, docstrings left out (they may name a hook to explain it)."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_hook_names_are_spelled_only_inside_attention():
    # A hook name used as a name: the whole literal, or a component of a dotted parameter/module path.
    either = "(?:" + "|".join(map(re.escape, (COEFF_HOOK, PREFIX_HOOK))) + ")"
    names = re.compile(rf"^{either}$|\.{either}\b|\b{either}\.")
    found = [
        f"{path.relative_to(SRC)}:{line}"
        for path in sorted(SRC.rglob("*.py"))
        if path.relative_to(SRC).parts[0] != "attention"
        for line, text in _string_constants(ast.parse(path.read_text()))
        if names.search(text)
    ]
    assert found == [], f"hook names as literals outside attention/ (use COEFF_HOOK / PREFIX_HOOK): {found}"


def test_only_attention_modules_are_routed(tiny_llama):
    mlp = tiny_llama.model.layers[0].mlp  # has the model's config but calls no attention
    with pytest.raises(ValueError, match="not an attention module the deltaspace attention can take over"):
        enable(tiny_llama, [mlp])
    assert not is_routed(mlp)
