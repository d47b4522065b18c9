"""Fast Walsh–Hadamard transform along the last dimension.

Written here because neither torch nor the project's dependencies ship an autograd-friendly FWHT;
``scipy.linalg.hadamard`` builds the dense n×n matrix, which is exactly what the structured projections
must avoid. The transform is linear, so autograd saves no activations for it.
"""

from __future__ import annotations

import torch
from torch import Tensor


def next_power_of_two(n: int) -> int:
    if n < 1:
        raise ValueError(f"expected a positive size, got {n}")
    return 1 << (n - 1).bit_length()


def fwht(x: Tensor) -> Tensor:
    """Unnormalised Walsh–Hadamard transform ``x @ H_n`` over the last dim (``n`` a power of two).

    ``H_n`` has ±1 entries and ``H_n @ H_n = n·I``; divide by ``sqrt(n)`` for the orthonormal version.
    Cost O(n log n) per vector: log2(n) butterfly passes over reshaped views.
    """
    n = x.shape[-1]
    if n & (n - 1):
        raise ValueError(f"fwht needs a power-of-two last dimension, got {n}; pad the input first")
    shape = x.shape
    h = 1
    while h < n:
        # pairs (i, i + h) inside consecutive blocks of 2h entries
        pairs = x.reshape(*shape[:-1], n // (2 * h), 2, h)
        a, b = pairs[..., 0, :], pairs[..., 1, :]
        x = torch.stack((a + b, a - b), dim=-2).reshape(shape)
        h *= 2
    return x
