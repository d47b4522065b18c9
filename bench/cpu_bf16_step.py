"""Seconds per training step on CPU in float32 and under bfloat16 autocast, per DET.

The original-space runs of the studies and the tuned comparison (MiniLM-L6, label-prototype head, batches
of 32 texts cut at 64 tokens) are most of their time on a CPU machine. CPUs with AVX512-BF16 or AMX run
bfloat16 matrix products at up to twice the float32 rate, so this measures what autocast would give each
DET: forward, backward and AdamW step on real batches of a suite task, median over steps after a warm-up,
in this process, at each thread count. Writes bench/results/cpu_bf16_step.{json,md}.

    python bench/cpu_bf16_step.py [--task movie_sentiment] [--methods lora adapter prefix coeff] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time
from pathlib import Path

import torch

from deltaspace.io import write_json_atomic, write_text_atomic

RESULTS = Path(__file__).parent / "results"
WARMUP = 3


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    line = next((row for row in text.splitlines() if row.startswith("flags")), "")
    return sorted(f for f in line.split() if "bf16" in f or f.startswith("amx"))


def batches(task_name: str, tokenizer, count: int, batch_size: int, max_length: int) -> list[dict]:
    from transformers import DataCollatorWithPadding

    from deltaspace.tasks.load import load_task
    from deltaspace.train.data import tokenize_split

    task = load_task(task_name, seed=0)
    split = task.split("train").select(range(count * batch_size))
    encoded = tokenize_split(split, tokenizer, is_pair=task.is_pair, max_length=max_length)
    collate = DataCollatorWithPadding(tokenizer)
    rows = [encoded[i] for i in range(len(encoded))]
    return [dict(collate(rows[i : i + batch_size])) for i in range(0, len(rows), batch_size)]


def measure(method: str, task_name: str, steps: int, dtype: str, batch_size: int, max_length: int) -> dict:
    from deltaspace.deltas.presets import resolve_method
    from deltaspace.model import get_delta_model
    from deltaspace.tasks.load import load_task
    from deltaspace.train.build import build_classifier

    task = load_task(task_name, seed=0)
    classifier, tokenizer = build_classifier("minilm-l6", task, "prototype", 0)
    model = get_delta_model(classifier, *resolve_method(method, classifier), seed=0)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    data = batches(task_name, tokenizer, steps + WARMUP, batch_size, max_length)
    seconds, losses = [], []
    for batch in data:
        began = time.perf_counter()
        cast = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
        with cast:
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - began)
        losses.append(float(loss.detach()))
    kept = seconds[WARMUP:]
    return {
        "median_s": statistics.median(kept),
        "min_s": min(kept),
        "steps": len(kept),
        "tokens_per_batch": int(sum(b["attention_mask"].sum() for b in data) / len(data)),
        "first_losses": losses[:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="movie_sentiment")
    parser.add_argument("--methods", nargs="+", default=["lora", "adapter", "prefix", "coeff"])
    parser.add_argument("--threads", nargs="+", type=int, default=[2])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args()

    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for method in args.methods:
            result = {"method": method, "threads": threads}
            for dtype in ("fp32", "bf16"):
                result[dtype] = measure(
                    method, args.task, args.steps, dtype, args.batch_size, args.max_length
                )
            result["speedup"] = result["fp32"]["median_s"] / result["bf16"]["median_s"]
            rows.append(result)
            print(
                f"{method:8s} {threads} thr: fp32 {result['fp32']['median_s']:.3f} s, "
                f"bf16 {result['bf16']['median_s']:.3f} s ({result['speedup']:.2f}x)",
                flush=True,
            )
    meta = {
        "task": args.task,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_bf16_flags": cpu_flags(),
    }
    RESULTS.mkdir(exist_ok=True)
    write_json_atomic(RESULTS / "cpu_bf16_step.json", {"meta": meta, "rows": rows})
    lines = [
        "# Training step on CPU: float32 against bfloat16 autocast",
        "",
        f"`python bench/cpu_bf16_step.py` — MiniLM-L6, label-prototype head, {args.task}, batches of "
        f"{args.batch_size} cut at {args.max_length} tokens (forward, backward, AdamW), median of "
        f"{args.steps} steps after {WARMUP} warm-up; torch {torch.__version__}; CPU flags "
        f"{', '.join(meta['cpu_bf16_flags']) or 'none with bf16'}.",
        "",
        "| DET | threads | float32 (s) | bf16 autocast (s) | speed-up |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['threads']} | {row['fp32']['median_s']:.3f} | "
            f"{row['bf16']['median_s']:.3f} | {row['speedup']:.2f}x |"
        )
    write_text_atomic(RESULTS / "cpu_bf16_step.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
