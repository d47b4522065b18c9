"""The fused CPU kernel of the blocked Coeff attention (``fused_kernel.cpp``), built on first use.

Same algorithm and results as :mod:`deltaspace.attention.blocked` (whole-row query blocks, exact softmax,
recomputation in backward), but each block's scores, softmax, head mix, dropout and their gradients stay in
cache in one C++ loop instead of streaming large panels through a dozen torch ops; blocks run in parallel
on torch's intra-op threads. Measured in ``bench/coeff_long.py``.

Written as a C++ extension (rather than ``torch.compile``, which does not fuse a cross-head mix with a row
softmax into one pass) and compiled with torch's extension tooling on first use (about half a minute; torch
caches the build in ``TORCH_EXTENSIONS_DIR``). Where it cannot be built or loaded (no C++ compiler, a torch
without the MKL BLAS of the x86 wheels), :func:`kernel` returns None once, with one warning, and the
blocked path runs its torch-op implementation. ``DELTASPACE_FUSED_ATTENTION=0`` turns the kernel off.

Dropout masks come from a counter-based hash of (seed, batch, head, query, key): the same mask in forward
and backward whatever the blocking, but not the masks the torch-op path draws.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import warnings
from pathlib import Path
from types import ModuleType

import torch

from deltaspace.attention.blocked import BlockedPlan, compute_dtype, full_precision

SOURCE = Path(__file__).with_name("fused_kernel.cpp")
# -fno-trapping-math lets GCC vectorise the rounding in the exp; torch builds itself with the same flag.
CFLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-trapping-math", "-fno-math-errno"]
ENV_SWITCH = "DELTASPACE_FUSED_ATTENTION"
# Query rows per block. Bigger blocks make the products efficient (a 32-row product runs near BLAS speed, 8
# rows at half of it), smaller ones keep the block's two (H, rows, keys) buffers in cache. Measured on 2
# cores, MiniLM shape, forward + backward: 2048 keys 32 rows 0.27 s (16: 0.31, 64: 0.27); 4096 keys 32 rows
# 1.15 s (16: 1.27, 64: 1.15); 8192 keys 64 rows 4.62 s (16: 5.59, 32: 4.95).
BLOCK_ROWS = 32
LONG_ROW_ELEMENTS = 12 * 4096  # H·keys from which blocks take twice the rows
MAX_BLOCK_ROWS = 64

_loaded: dict[str, ModuleType | None] = {}


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next((line for line in info if line.startswith("flags")), "")
    except OSError:
        return platform.processor()


def _module_name() -> str:
    """A name that changes with the source, the flags and the CPU (-march=native), so torch's build cache never
    serves an edited kernel or one built for another machine's instruction set."""
    key = SOURCE.read_bytes() + " ".join(CFLAGS).encode() + _cpu_flags().encode()
    digest = hashlib.sha256(key).hexdigest()[:12]
    return f"deltaspace_coeff_attention_{digest}"


def _ninja_on_path() -> None:
    """torch's builder runs `ninja` from PATH; the pip package puts it beside the interpreter."""
    if shutil.which("ninja") is not None:
        return
    try:
        import ninja

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    except ImportError:
        pass


def kernel() -> ModuleType | None:
    """The compiled kernel, or None where it is switched off or cannot be built (warned once)."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return None
    if "module" not in _loaded:
        try:
            from torch.utils.cpp_extension import load

            _ninja_on_path()
            _loaded["module"] = load(
                _module_name(), [str(SOURCE)], extra_cflags=CFLAGS, extra_ldflags=["-fopenmp"], verbose=False
            )
        except Exception as error:  # any build or import failure means: use the torch-op path
            _loaded["module"] = None
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            warnings.warn(
                f"the fused Coeff attention kernel could not be built ({first_line}); the blocked path uses "
                f"its slower torch-op implementation (set {ENV_SWITCH}=0 to silence this)",
                RuntimeWarning,
                stacklevel=2,
            )
    return _loaded["module"]


def supports(query: torch.Tensor, plan: BlockedPlan) -> bool:
    """Whether the fused kernel computes this call: CPU tensors, no softcap (Gemma-2 keeps the torch ops)."""
    return query.device.type == "cpu" and plan.softcap is None


def block_rows(heads: int, keys: int) -> int:
    rows = 2 * BLOCK_ROWS if heads * keys >= LONG_ROW_ELEMENTS else BLOCK_ROWS
    return min(rows, MAX_BLOCK_ROWS)


def _additive(tensor: torch.Tensor | None, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor | None:
    """Mask or bias broadcast to (B, H, Lq, Lk) without copying (strides 0), unit stride along keys."""
    if tensor is None:
        return None
    if tensor.dtype != torch.bool:
        tensor = tensor.to(dtype)
    tensor = tensor.expand(shape)
    return tensor if tensor.stride(-1) == 1 else tensor.contiguous()


def _arguments(query: torch.Tensor, plan: BlockedPlan, dtype: torch.dtype) -> tuple:
    """The plan as the kernel's arguments after (q, k, v, coefficients)."""
    layout = plan.layout
    shape = (query.shape[0], query.shape[1], layout.q_len, layout.kv_len)
    return (
        _additive(layout.mask, shape, dtype),
        _additive(layout.bias, shape, dtype),
        plan.scaling,
        layout.num_prefix,
        layout.causal_offset is not None,
        layout.causal_offset or 0,
        layout.window or 0,
        plan.dropout,
        plan.seed % (1 << 63),
        block_rows(query.shape[1], layout.total_keys),
    )


def _float(*tensors: torch.Tensor | None, dtype: torch.dtype) -> list[torch.Tensor | None]:
    return [None if t is None else t.to(dtype).contiguous() for t in tensors]


class _FusedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query, key, value, coefficients, plan):  # type: ignore[override]
        with full_precision(query):
            dtype = compute_dtype(query)
            arguments = _arguments(query, plan, dtype)
            output, stats = kernel().forward(
                *_float(query, key, value, coefficients, dtype=dtype), *arguments
            )
        ctx.save_for_backward(query, key, value, coefficients, stats)
        ctx.plan = plan
        return output.to(query.dtype)

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        query, key, value, coefficients, stats = ctx.saved_tensors
        needs = [bool(n) for n in ctx.needs_input_grad[:4]]
        with full_precision(grad_output):
            dtype = compute_dtype(query)
            arguments = _arguments(query, ctx.plan, dtype)
            (grad_output,) = _float(grad_output, dtype=dtype)
            grads = kernel().backward(
                grad_output, stats, *_float(query, key, value, coefficients, dtype=dtype), *arguments, needs
            )
        inputs = (query, key, value, coefficients)
        return (
            *(
                g.to(t.dtype) if need and t is not None else None
                for g, t, need in zip(grads, inputs, needs, strict=True)
            ),
            None,
        )


def fused_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    coefficients: torch.Tensor | None,
    plan: BlockedPlan,
) -> torch.Tensor:
    """:func:`deltaspace.attention.blocked.blocked_attention` through the fused kernel (check :func:`kernel`
    and :func:`supports` first)."""
    return _FusedAttention.apply(query, key, value, coefficients, plan)
