"""Seconds per joint-fit step of the single-task setting with stage 1 trained (``single_task_fit``).

The study's own stage-1 fit (MiniLM-L6; adapter, LoRA, prefix; d = 4; batches of 16 examples cut at 64
tokens; the task loss through all three DETs and every DET's reconstruction each step) on one pair's source
task, from the closed-form start, for a few dozen steps at each thread count, in this process; plus one
validation as the study runs it (each DET at the centroid of the codes, on the source task's 250 validation
examples). Reads the original-space runs of ``studies/single_task/runs`` (run ``deltaspace study single_task
--stages sweep`` first). Writes bench/results/single_task_fit_steps.{json,md}, with what the whole
experiment costs at the measured rate: pairs × variants × steps.

    python bench/single_task_fit_steps.py [--steps 30] [--threads 1 2] [--config single_task_fit]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from deltaspace.io import write_json_atomic, write_text_atomic

RESULTS = Path(__file__).parent / "results"
WARMUP = 3  # steps left out of the statistics (first-call allocations, lazy imports)


def measure(context, study, threads: int, steps: int) -> dict:
    from deltaspace.subspace import fit
    from deltaspace.subspace.evaluate import evaluate_with_loss

    torch.set_num_threads(threads)
    source = study.source_tasks[0]
    config = dataclasses.replace(study.fit, steps=steps, eval_every=0, patience=None, progress=False)
    records: list[dict] = []
    marks = [time.perf_counter()]

    def on_step(record: dict) -> None:
        records.append(record)
        marks.append(time.perf_counter())

    start = time.perf_counter()
    bundle = fit(context.members, context.store, [context.batches[source]], config, on_step=on_step)
    total = time.perf_counter() - start
    step_seconds = [r["seconds"] for r in records][WARMUP:]
    between = [b - a for a, b in itertools.pairwise(marks)][WARMUP:]
    # a validation as the study's fit runs it: every DET at the centroid of the source task's codes; the
    # second of two (warm), the first kept beside it
    codes = torch.stack([bundle.code(m.name, source) for m in context.members]).mean(0)
    validation = []
    for _ in range(2):
        began = time.perf_counter()
        for member in context.members:
            evaluate_with_loss(
                member, bundle.decode(member.name, codes), context.batches[source].eval_batches
            )
        validation.append(time.perf_counter() - began)
    return {
        "threads": threads,
        "source": source,
        "steps": steps,
        "median_step_s": statistics.median(step_seconds),
        "mean_step_s": statistics.fmean(step_seconds),
        "mean_between_steps_s": statistics.fmean(between),
        "validation_s": validation[1],
        "first_validation_s": validation[0],
        "fit_total_s": total,  # the closed-form start (descent directions) included
        "ce_first": records[0]["ce"],
        "ce_last": records[-1]["ce"],
        "recon_last": records[-1]["recon"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="single_task_fit")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    from deltaspace.study import load_study_config
    from deltaspace.study.pipeline import StudyContext

    single = load_study_config(args.config)
    study = single.studies()[0]
    context = StudyContext(study)
    rows = [measure(context, study, threads, args.steps) for threads in args.threads]
    fit = study.fit
    pairs = len(single.pairs)
    validations = fit.steps // fit.eval_every if fit.eval_every else 0
    for row in rows:
        per_step = row["mean_step_s"] + (row["validation_s"] / fit.eval_every if fit.eval_every else 0.0)
        row["per_step_with_validation_s"] = per_step
        row["max_fit_s_per_pair"] = fit.steps * row["mean_step_s"] + validations * row["validation_s"]
        row["max_fit_s_per_variant"] = pairs * row["max_fit_s_per_pair"]
    load = os.getloadavg()[0]
    write_json_atomic(
        RESULTS / "single_task_fit_steps.json",
        {"config": args.config, "max_steps": fit.steps, "eval_every": fit.eval_every, "pairs": pairs,
         "rows": rows, "load_average_1min": load, "machine": platform.machine(), "cpus": os.cpu_count(),
         "torch": torch.__version__},
    )  # fmt: skip
    lines = [
        f"# Joint-fit steps of `{args.config}` (MiniLM-L6; adapter, LoRA, prefix; d = 4; batch 16 × 64 tokens)",
        "",
        f"`python bench/single_task_fit_steps.py --steps {args.steps} --threads "
        f"{' '.join(map(str, args.threads))}` on {platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}; source task {rows[0]['source']}; mean of {args.steps - WARMUP} steps after "
        f"{WARMUP} warm-up steps; 1-minute load average at the end {load:.1f}. A step: the task loss through "
        "all three DETs (forward + backward each) and every DET's reconstruction. A validation: each DET at "
        "the centroid of the codes on 250 validation examples.",
        "",
        "| threads | s/step (median) | s/step (mean) | s/validation | s/step incl. validation | "
        f"most a pair's fit can take ({fit.steps} steps) | most one variant's fits take ({pairs} pairs) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['threads']} | {row['median_step_s']:.3f} | {row['mean_step_s']:.3f} | "
            f"{row['validation_s']:.1f} | {row['per_step_with_validation_s']:.3f} | "
            f"{row['max_fit_s_per_pair'] / 60:.0f} min | {row['max_fit_s_per_variant'] / 60:.0f} min |"
        )
    write_text_atomic(RESULTS / "single_task_fit_steps.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
