"""Memory of the subspace up-projections for full fine-tuning of MiniLM-L6 (D = 22.7M parameters).

A dense d x D up-projection is what the paper uses; deltaspace's structured Fastfood projection stores
O(D + n·d) numbers instead. This measures ``memory_bytes()`` of both kinds of real projection objects
(dense only where it fits in RAM, else its size is computed), plus the time of one forward + backward
through the Fastfood map. Writes bench/results/projection_memory.{json,md}.

    python bench/projection_memory.py [--dims 4 16 100]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from deltaspace.io import write_json_atomic, write_text_atomic
from deltaspace.subspace import DenseUp, FastfoodUp

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", nargs="+", type=int, default=[4, 16, 100])
    parser.add_argument("--dense-limit-gb", type=float, default=2.0, help="build dense ones up to this size")
    args = parser.parse_args()

    from deltaspace.assets import load_model
    from deltaspace.deltas.presets import resolve_method
    from deltaspace.model import get_delta_model

    encoder, _ = load_model("minilm-l6", kind="encoder")
    theta0 = get_delta_model(encoder, *resolve_method("full", encoder)).solution_vector()
    size = theta0.numel()
    rows = []
    for dim in args.dims:
        fastfood = FastfoodUp(theta0, dim)
        z = torch.zeros(dim, requires_grad=True)
        start = time.perf_counter()
        fastfood(z).sum().backward()
        seconds = time.perf_counter() - start
        dense_bytes = 4 * dim * size
        if dense_bytes <= args.dense_limit_gb * 2**30:
            dense_bytes = DenseUp(theta0, dim).memory_bytes()
        rows.append(
            {
                "D": size,
                "d": dim,
                "dense_bytes": dense_bytes,
                "fastfood_bytes": fastfood.memory_bytes(),
                "fastfood_forward_backward_s": seconds,
            }
        )
        print(rows[-1], file=sys.stderr)
    RESULTS.mkdir(exist_ok=True)
    write_json_atomic(
        RESULTS / "projection_memory.json",
        {"command": "python bench/projection_memory.py", "threads": torch.get_num_threads(), "rows": rows},
    )
    lines = [
        f"# Up-projection memory for full fine-tuning of MiniLM-L6 (D = {size:,})",
        "",
        "Command: `python bench/projection_memory.py`. Memory includes θ0 (the anchor) in both kinds.",
        "",
        "| d | dense d×D (MiB) | Fastfood (MiB) | Fastfood forward + backward (s) |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['d']} | {row['dense_bytes'] / 2**20:,.0f} | {row['fastfood_bytes'] / 2**20:,.0f} | "
            f"{row['fastfood_forward_backward_s']:.2f} |"
        )
    write_text_atomic(RESULTS / "projection_memory.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
