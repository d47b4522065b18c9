"""Where the fused Coeff attention kernel spends its time, phase by phase, beside SDPA (CPU).

One attention op, forward + backward, at the shapes of bench/coeff_long.py's targets (MiniLM-L6: 12 heads of
32, SmolLM2-135M: 9 query heads over 3 KV heads of 64, causal), attention dropout 0. The kernel is built a
second time with -DDS_PROFILE, which adds a timer per phase (CPU seconds summed over threads); the totals
come from the normal build. Each product's rate (GFLOP/s) is its multiply-adds over its CPU time.

    python bench/coeff_kernel_profile.py [--threads 1,2] [--length 2048]

Writes bench/results/coeff_kernel_profile.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from deltaspace.attention import fused
from deltaspace.attention.blocked import BlockedPlan
from deltaspace.attention.layout import KeyLayout

RESULTS = Path(__file__).parent / "results"
SHAPES = {  # name: (heads, kv heads, head dim, causal)
    "minilm-l6": (12, 12, 32, False),
    "smollm2-135m": (9, 3, 64, True),
}
# Phase index (fused_kernel.cpp's PHASE(i)) -> (name, products of (rows x keys) x head dim it runs, or 0).
PHASES = {
    0: ("forward: scores Q·Kᵀ", 1),
    1: ("forward: mask + softmax", 0),
    2: ("forward: head mix", 0),
    3: ("forward: P̂·V", 1),
    5: ("backward: scores Q·Kᵀ (recomputed)", 1),
    6: ("backward: softmax (recomputed from kept row statistics)", 0),
    7: ("backward: head mix (recomputed)", 0),
    8: ("backward: dV = P̂ᵀ·dO", 1),
    9: ("backward: dP̂ = dO·Vᵀ", 1),
    10: ("backward: dC and the transposed mix", 0),
    11: ("backward: softmax backward", 0),
    12: ("backward: dQ = dS·K, dK = dSᵀ·Q", 2),
}


def _profile_kernel():
    from torch.utils.cpp_extension import load

    fused._ninja_on_path()
    return load(
        fused._module_name() + "_profile",
        [str(fused.SOURCE)],
        extra_cflags=[*fused.CFLAGS, "-DDS_PROFILE"],
        extra_ldflags=["-fopenmp"],
    )


def _best(fn, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(model: str, length: int, threads: int, profiled) -> dict:
    torch.set_num_threads(threads)
    heads, kv_heads, dim, causal = SHAPES[model]
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, heads, length, dim, generator=g, requires_grad=True)
    k, v = (torch.randn(1, kv_heads, length, dim, generator=g, requires_grad=True) for _ in range(2))
    c = (torch.eye(heads) + 0.1 * torch.randn(heads, heads, generator=g)).requires_grad_()
    grad = torch.randn(1, heads, length, dim, generator=g)
    layout = KeyLayout.build(
        None, q_len=length, kv_len=length, num_prefix=0, causal=causal, sliding_window=None, bias=None
    )
    plan = BlockedPlan(layout, dim**-0.5)

    def sdpa():
        F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=kv_heads != heads).backward(grad)

    def sdpa_forward():
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=kv_heads != heads)

    def kernel():
        fused.fused_attention(q, k, v, c, plan).backward(grad)

    def kernel_forward():
        with torch.no_grad():
            fused.fused_attention(q, k, v, c, plan)

    result = {
        "model": model,
        "seq_len": length,
        "threads": threads,
        "sdpa_s": _best(sdpa),
        "sdpa_forward_s": _best(sdpa_forward),
        "fused_s": _best(kernel),
        "fused_forward_s": _best(kernel_forward),
    }
    # The phases: a few calls of the profiling build, median CPU seconds per phase.
    arguments = fused._arguments(q, plan, torch.float32)
    keep = [True, True, True, True]
    samples = []
    with torch.no_grad():
        for _ in range(4):
            profiled.read_phases()
            _, stats = profiled.forward(q, k, v, c, *arguments)
            profiled.backward(grad, stats, q, k, v, c, *arguments, keep)
            samples.append(profiled.read_phases())
    phases = {i: statistics.median(s[i] for s in samples[1:]) for i in PHASES}
    # Visible (query, key) pairs: a causal map keeps about half of them (blocks skip what no row sees).
    pairs = length * length * (0.5 if causal else 1.0)
    result["phases"] = [
        {
            "phase": PHASES[i][0],
            "cpu_s": seconds,
            "gflops": (2 * heads * pairs * dim * PHASES[i][1] / seconds / 1e9) if PHASES[i][1] else None,
        }
        for i, seconds in phases.items()
    ]
    return result


def _markdown(report: dict) -> str:
    lines = [
        "# The fused Coeff attention kernel, phase by phase (CPU)",
        "",
        f"Command: `{report['command']}`; machine: {report['machine']}, torch {torch.__version__}.",
        "One attention op (B = 1), forward + backward, attention dropout 0; best of 3. Phases: CPU seconds "
        "summed over threads (median of 3 calls of a build with per-phase timers), so with 2 threads they "
        "add up to about twice the wall time. GFLOP/s: the product's multiply-adds over its CPU time.",
        "",
    ]
    for row in report["results"]:
        lines += [
            f"## {row['model']}, N = {row['seq_len']}, {row['threads']} thread(s)",
            "",
            f"Forward + backward: fused kernel {row['fused_s']:.3f} s, SDPA {row['sdpa_s']:.3f} s "
            f"(**{row['fused_s'] / row['sdpa_s']:.2f}x**); forward only {row['fused_forward_s']:.3f} s vs "
            f"{row['sdpa_forward_s']:.3f} s ({row['fused_forward_s'] / row['sdpa_forward_s']:.2f}x).",
            "",
            "| phase | CPU s | share | GFLOP/s |",
            "|---|---|---|---|",
        ]
        total = sum(p["cpu_s"] for p in row["phases"])
        for p in row["phases"]:
            rate = f"{p['gflops']:.0f}" if p["gflops"] else ""
            lines.append(f"| {p['phase']} | {p['cpu_s']:.3f} | {100 * p['cpu_s'] / total:.0f} % | {rate} |")
        products = sum(p["cpu_s"] for p in row["phases"] if p["gflops"])
        lines += [
            f"| **all phases** | {total:.3f} | | products {products:.3f} s ({100 * products / total:.0f} %) |",
            "",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--length", type=int, default=2048)
    args = parser.parse_args()
    if fused.kernel() is None:
        sys.exit("the fused kernel could not be built here: nothing to profile")
    profiled = _profile_kernel()
    results = [
        measure(model, args.length, int(threads), profiled)
        for threads in args.threads.split(",")
        for model in SHAPES
    ]
    report = {
        "command": "python bench/coeff_kernel_profile.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name, text in (
        ("coeff_kernel_profile.json", json.dumps(report, indent=2)),
        ("coeff_kernel_profile.md", _markdown(report)),
    ):
        tmp = RESULTS / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, RESULTS / name)
    print(_markdown(report))


if __name__ == "__main__":
    main()
