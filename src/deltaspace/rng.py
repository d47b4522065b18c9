"""Seeded blocks: code run under torch's global RNG seeded, the caller's RNG state restored afterwards.

The one idiom for "this draw depends on the seed only": θ0 of every delta (``DeltaModel``), heads, the
subspace study's projections and members.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch


@contextlib.contextmanager
def seeded(seed: int, devices: Sequence[int] | None = None) -> Iterator[None]:
    """Run a block with torch's global RNG (CPU and CUDA) seeded with ``seed``, restoring the state afterwards.

    ``devices``: the CUDA devices whose RNG state is saved and restored (default: every visible one).
    """
    if devices is None:
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=list(devices)):
        torch.manual_seed(seed)
        yield
