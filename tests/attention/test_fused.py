"""How the blocked path picks its implementation: the fused kernel where it builds, the torch ops otherwise.

Numerical parity of the two implementations is tested case by case in test_blocked.py.
"""

import pytest
import torch

from deltaspace.attention import core, fused
from deltaspace.attention.blocked import BlockedPlan
from deltaspace.attention.layout import KeyLayout


@pytest.fixture
def fresh_kernel_state(monkeypatch):
    """kernel() decides once per process; each test here starts undecided and leaves the real state."""
    monkeypatch.setattr(fused, "_loaded", {})


def test_a_kernel_that_cannot_be_built_warns_once_and_is_not_used(fresh_kernel_state, monkeypatch):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("Error building extension: g++: command not found\nmore lines")

    monkeypatch.setattr("torch.utils.cpp_extension.load", no_compiler)
    with pytest.warns(RuntimeWarning, match=r"could not be built \(Error building extension: g\+\+"):
        assert fused.kernel() is None
    assert fused.kernel() is None  # decided once: no second build attempt, no second warning


def test_the_environment_switch_turns_the_kernel_off(fresh_kernel_state, monkeypatch):
    monkeypatch.setenv(fused.ENV_SWITCH, "0")
    monkeypatch.setattr("torch.utils.cpp_extension.load", lambda *a, **k: pytest.fail("built anyway"))
    assert fused.kernel() is None


def test_attend_uses_the_torch_ops_when_the_kernel_is_missing(fresh_kernel_state, monkeypatch):
    class Attention(torch.nn.Module):
        is_causal = False

    calls = []
    monkeypatch.setenv(fused.ENV_SWITCH, "0")
    monkeypatch.setattr(core, "blocked_attention", lambda *args: calls.append(args) or args[0])
    monkeypatch.setattr(core, "choose_path", lambda *args, **kwargs: "blocked")
    q = torch.randn(1, 2, 3, 4)
    core.attend(Attention(), q, q, q, None)
    assert len(calls) == 1


def test_builds_are_keyed_by_source_and_cpu(monkeypatch, tmp_path):
    """torch caches builds by name: an edited kernel or another CPU (-march=native) must not reuse one."""
    names = {fused._module_name()}
    with monkeypatch.context() as patch:
        patch.setattr(fused, "_cpu_flags", lambda: "flags : sse2")
        names.add(fused._module_name())
    edited = tmp_path / "fused_kernel.cpp"
    edited.write_bytes(fused.SOURCE.read_bytes() + b"\n// edited\n")
    monkeypatch.setattr(fused, "SOURCE", edited)
    names.add(fused._module_name())
    assert len(names) == 3


def test_block_rows_grow_with_the_row_length():
    assert fused.block_rows(12, 2048) == 32  # MiniLM at 2048 keys
    assert fused.block_rows(12, 8192) == 64
    assert fused.block_rows(9, 8192) == 64  # SmolLM2
    assert fused.block_rows(12, 128) == 32


def test_supports_only_cpu_tensors_without_softcap():
    layout = KeyLayout.build(
        None, q_len=3, kv_len=3, num_prefix=0, causal=False, sliding_window=None, bias=None
    )
    q = torch.zeros(1, 2, 3, 4)
    assert fused.supports(q, BlockedPlan(layout, 0.5))
    assert not fused.supports(q, BlockedPlan(layout, 0.5, softcap=30.0))
