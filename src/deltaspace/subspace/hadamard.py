"""Fast Walsh–Hadamard transform along the last dimension.

Written here because neither torch nor the project's dependencies ship an autograd-friendly FWHT. The
structured projections apply it to many short blocks (n = 64 ... 1024) of a D-sized vector: there one GEMM
with the small n×n matrix beats log2(n) butterfly passes by an order of magnitude on CPU (each pass
allocates a D-sized tensor), so small n use the matrix and larger n the O(n log n) butterflies.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

DENSE_MAX = 1024  # H_1024 is 4 MiB in float32


@functools.lru_cache(maxsize=16)
def hadamard_matrix(n: int, dtype: torch.dtype = torch.float32, device: str = "cpu") -> Tensor:
    """The n×n Sylvester Hadamard matrix (±1 entries), ``n`` a power of two; cached per dtype and device."""
    h = torch.ones(1, 1, dtype=dtype, device=device)
    while h.shape[0] < n:
        h = torch.cat((torch.cat((h, h), 1), torch.cat((h, -h), 1)), 0)
    return h


def next_power_of_two(n: int) -> int:
    if n < 1:
        raise ValueError(f"expected a positive size, got {n}")
    return 1 << (n - 1).bit_length()


def fwht(x: Tensor, *, dense_max: int = DENSE_MAX) -> Tensor:
    """Unnormalised Walsh–Hadamard transform ``x @ H_n`` over the last dim (``n`` a power of two).

    ``H_n`` has ±1 entries and ``H_n @ H_n = n·I``; divide by ``sqrt(n)`` for the orthonormal version.
    Up to ``dense_max`` one matmul with the cached matrix; beyond it O(n log n) butterfly passes.
    """
    n = x.shape[-1]
    if n & (n - 1):
        raise ValueError(f"fwht needs a power-of-two last dimension, got {n}; pad the input first")
    if n <= dense_max:
        return x @ hadamard_matrix(n, x.dtype, str(x.device))  # H is symmetric
    shape = x.shape
    h = 1
    while h < n:
        # pairs (i, i + h) inside consecutive blocks of 2h entries
        pairs = x.reshape(*shape[:-1], n // (2 * h), 2, h)
        a, b = pairs[..., 0, :], pairs[..., 1, :]
        x = torch.stack((a + b, a - b), dim=-2).reshape(shape)
        h *= 2
    return x
