"""Train-step time and peak memory of Coeff-Tuning + LoRA against LoRA alone.

Each (method, sequence length) runs in its own subprocess so that its peak resident memory (ru_maxrss)
is its own. Writes bench/results/coeff_overhead.json and .md.

    python bench/coeff_overhead.py [--model minilm-l6] [--lengths 128 512] [--batch-size 8] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def measure(model_name: str, method: str, length: int, batch_size: int, steps: int, warmup: int) -> dict:
    import torch

    from deltaspace.assets import load_model
    from deltaspace.deltas.presets import resolve_method
    from deltaspace.model import get_delta_model

    torch.manual_seed(0)
    model, _ = load_model(model_name, num_labels=2, kind="sequence-classification")
    delta_model = get_delta_model(model, *resolve_method(method, model), seed=0)
    delta_model.train()
    trainable, total = delta_model.get_nb_trainable_parameters()
    optimizer = torch.optim.AdamW([p for p in delta_model.parameters() if p.requires_grad], lr=1e-4)
    vocab = model.config.vocab_size
    input_ids = torch.randint(1000, vocab, (batch_size, length))
    batch = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "labels": torch.randint(0, 2, (batch_size,)),
    }
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        loss = delta_model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "model": model_name,
        "method": method,
        "seq_len": length,
        "batch_size": batch_size,
        "steps": steps,
        "step_time_s_median": statistics.median(times),
        "step_time_s_mean": statistics.fmean(times),
        "peak_rss_mib": peak_kib / 1024,
        "rss_before_training_mib": rss_before / 1024,
        "trainable_params": trainable,
        "total_params": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--methods", nargs="+", default=["lora", "coeff+lora"])
    parser.add_argument("--lengths", nargs="+", type=int, default=[128, 512])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: "method,length" in a subprocess
    args = parser.parse_args()

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.one:
        method, length = args.one.split(",")
        result = measure(args.model, method, int(length), args.batch_size, args.steps, args.warmup)
        print(json.dumps(result))
        return

    rows = []
    for length in args.lengths:
        for method in args.methods:
            command = [
                sys.executable,
                __file__,
                "--one",
                f"{method},{length}",
                "--model",
                args.model,
                "--batch-size",
                str(args.batch_size),
                "--steps",
                str(args.steps),
                "--warmup",
                str(args.warmup),
                "--threads",
                str(args.threads),
            ]
            print(f"measuring {method} at length {length} ...", file=sys.stderr, flush=True)
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(output.strip().splitlines()[-1]))

    base = {(r["seq_len"]): r for r in rows if r["method"] == args.methods[0]}
    for row in rows:
        ref = base[row["seq_len"]]
        row["time_ratio_vs_" + args.methods[0]] = row["step_time_s_median"] / ref["step_time_s_median"]
        row["peak_rss_ratio_vs_" + args.methods[0]] = row["peak_rss_mib"] / ref["peak_rss_mib"]

    import torch

    report = {
        "command": "python bench/coeff_overhead.py " + " ".join(sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "results": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS / "coeff_overhead.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, RESULTS / "coeff_overhead.json")

    ref_name = args.methods[0]
    lines = [
        f"# Coeff-Tuning overhead on {args.model} (CPU, batch {args.batch_size}, {args.steps} timed steps)",
        "",
        f"Command: `{report['command']}`",
        "",
        f"| seq len | method | trainable params | step time (s) | time vs {ref_name} | peak RSS (MiB) | RSS vs {ref_name} |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['seq_len']} | {row['method']} | {row['trainable_params']:,} | {row['step_time_s_median']:.3f} "
            f"| {row['time_ratio_vs_' + ref_name]:.2f}x | {row['peak_rss_mib']:.0f} "
            f"| {row['peak_rss_ratio_vs_' + ref_name]:.2f}x |"
        )
    tmp = RESULTS / "coeff_overhead.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, RESULTS / "coeff_overhead.md")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
