"""Seconds per joint-fit reconstruction of a fixed decoder at full fine-tuning's size: direct vs Gram.

The joint fit reconstructs every source task through every DET's decoder each step. Full fine-tuning's
decoder (MiniLM-L6: D = 22,713,216; d = 32; 15 source tasks in full_suite_fit) is too large to train, so it
is fixed, and :class:`~deltaspace.subspace.frozen_reconstruction.FrozenReconstruction` computes its error
from ``PᵀP`` and ``PᵀΔ`` (set up once) instead of decoding 15 × 22.7M floats forward and backward. Random
data of the real sizes; the direct path's forward + backward against the Gram path's (and its one-off
set-up), and the two errors side by side. Writes bench/results/frozen_reconstruction.{json,md}.

    python bench/frozen_reconstruction.py [--size 22713216] [--dim 32] [--tasks 15] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import Tensor

from deltaspace.io import write_json_atomic, write_text_atomic
from deltaspace.subspace.frozen_reconstruction import FrozenReconstruction
from deltaspace.subspace.projections import BasisUp, relative_reconstruction_error

RESULTS = Path(__file__).parent / "results"


def _timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=22_713_216)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--tasks", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(args.size, args.dim, generator=g)
    up = BasisUp(args.size, args.dim, basis=basis, train_basis=False)
    del basis
    deltas = {f"t{i}": torch.randn(args.size, generator=g) for i in range(args.tasks)}
    target = torch.stack(list(deltas.values()))
    z = torch.randn(args.tasks, args.dim, generator=g)

    def direct() -> Tensor:
        code = z.clone().requires_grad_(True)
        error = relative_reconstruction_error(target, up.delta(code))
        error.mean().backward()
        return error.detach()

    began = time.perf_counter()
    frozen = FrozenReconstruction(up, deltas)
    setup = time.perf_counter() - began

    def gram() -> Tensor:
        code = z.clone().requires_grad_(True)
        error = frozen.error(code)
        error.mean().backward()
        return error.detach()

    direct_s = _timed(direct, args.repeats)
    gram_s = _timed(gram, max(args.repeats, 20))
    gap = float((direct() - gram()).abs().max() / direct().abs().max())
    result = {
        "size": args.size,
        "dim": args.dim,
        "tasks": args.tasks,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "direct_seconds": statistics.median(direct_s),
        "gram_seconds": statistics.median(gram_s),
        "gram_setup_seconds": setup,
        "max_relative_difference": gap,
    }
    write_json_atomic(RESULTS / "frozen_reconstruction.json", result)
    write_text_atomic(
        RESULTS / "frozen_reconstruction.md",
        "# A fixed decoder's reconstruction in the joint fit: direct vs Gram statistics\n\n"
        f"`python bench/frozen_reconstruction.py` ({result['machine']}, {result['threads']} threads): D = "
        f"{args.size:,}, d = {args.dim}, {args.tasks} source tasks, random data, forward + backward into the codes "
        f"(median of {args.repeats} / {max(args.repeats, 20)}).\n\n"
        "| path | seconds per step |\n|---|---|\n"
        f"| direct (decode every task) | {result['direct_seconds']:.3f} |\n"
        f"| Gram statistics | {result['gram_seconds']:.5f} |\n\n"
        f"One-off set-up of the Gram statistics: {setup:.1f} s. Largest difference between the two errors: "
        f"{gap:.1e} of the largest error.\n",
    )
    print((RESULTS / "frozen_reconstruction.md").read_text())


if __name__ == "__main__":
    main()
