"""What part of a trained Coeff-Tuning Δ does the work: the per-head output gain or the mixing?

Each row of a softmax map sums to 1, so Â_h = Σ_k C[h, k]·A_k has rows summing to g_h = Σ_k C[h, k]: C rescales
head h's output by g_h on top of whatever it mixes. A trained Δ therefore splits exactly into

- the **gain** part, C_gain = diag(g): each head keeps its own map, rescaled (what an IA3-style per-head scale
  could learn, no mixing at all), and
- the **mix** part, C_mix = C − diag(g) + I: the same mixing with every row's mass kept at 1 (no rescaling),

and the model is scored on a task's test examples with each (θ0: C = I; trained: C). If the gain part alone
keeps most of the trained accuracy, what Coeff-Tuning learned at this budget is per-head scaling, which LoRA,
adapters and IA3 already express; that is one reason Coeff + X would add nothing over X (issue 20, item 4).

    python bench/coeff_gain_ablation.py runs/suite_v2_tuned/*/coeff/seed0 --max-test 500
    # -> bench/results/coeff_gain_ablation.{json,md}
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from deltaspace.attention.hooks import COEFF_HOOK
from deltaspace.io import write_text_atomic
from deltaspace.model import DeltaModel
from deltaspace.report.coeff_mixing import run_label
from deltaspace.tasks import load_task
from deltaspace.train.build import build_run_classifier
from deltaspace.train.config import TrainConfig
from deltaspace.train.data import cap_examples, make_loader, tokenize_split
from deltaspace.train.evaluate import evaluate_model
from deltaspace.train.result import CONFIG_FILE, DELTA_DIR

VARIANTS = ("theta0", "gain", "mix", "trained")


def split_coefficients(delta: torch.Tensor) -> dict[str, torch.Tensor]:
    """Δ for each variant: C − I with C = I, diag(g), C − diag(g) + I, and C (g: C's row sums)."""
    heads = delta.shape[-1]
    eye = torch.eye(heads, dtype=delta.dtype)
    gains = (eye + delta).sum(dim=-1)
    return {
        "theta0": torch.zeros_like(delta),
        "gain": torch.diag_embed(gains) - eye,
        "mix": delta - torch.diag_embed(gains) + eye,
        "trained": delta.clone(),
    }


def score_run(run: Path, max_test: int) -> dict:
    config = TrainConfig.from_json(run / CONFIG_FILE)
    task = load_task(config.task, seed=config.data_seed)
    classifier, tokenizer = build_run_classifier(config, task)
    model = DeltaModel.from_pretrained(classifier, run / DELTA_DIR).eval()
    test = cap_examples(task.split("test"), max_test, config.data_seed)
    loader = make_loader(
        tokenize_split(
            test, tokenizer, is_pair=task.is_pair, max_length=config.max_length or task.max_length
        ),
        tokenizer,
        batch_size=64,
        shuffle=False,
    )
    deltas = {name: p for name, p in model.named_parameters() if name.endswith(f"{COEFF_HOOK}.delta")}
    if not deltas:
        sys.exit(f"{run}: the delta has no Coeff-Tuning coefficients")
    parts = {name: split_coefficients(p.detach().float()) for name, p in deltas.items()}
    scores = {}
    for variant in VARIANTS:
        with torch.no_grad():
            for name, parameter in deltas.items():
                parameter.copy_(parts[name][variant].to(parameter.dtype))
        scores[variant] = evaluate_model(model, loader, task.num_labels)["accuracy"]
    gains = torch.stack([torch.diagonal(part["gain"]) + 1 for part in parts.values()])  # the rows' sums
    return {
        "run": run_label(run),
        "task": config.task,
        "test_examples": len(test),
        **scores,
        "gain_min": float(gains.min()),
        "gain_max": float(gains.max()),
        "gain_abs_change": float((gains - 1).abs().mean()),
    }


def _recovered(part: float, row: dict) -> float | None:
    total = row["trained"] - row["theta0"]
    return None if abs(total) < 1e-9 else 100 * (part - row["theta0"]) / total


def markdown(rows: list[dict], command: str, seconds: float) -> str:
    lines = [
        "# What part of a trained Coeff-Tuning Δ does the work: per-head gain or mixing",
        "",
        f"Command: `{command}`; {platform.platform()}, torch {torch.__version__}, {seconds:.0f} s.",
        "",
        "Test accuracy with each layer's C replaced by: **θ0** (C = I), **gain** (diag of C's row sums g_h: each "
        "head's own map rescaled, no mixing), **mix** (C − diag(g) + I: the same mixing with every row's mass "
        "kept at 1, no rescaling), **trained** (C). Every row of a softmax map sums to 1, so C rescales head h "
        "by g_h = Σ_k C[h, k]; the two parts add up to the trained Δ exactly. Share = (part − θ0) / (trained − "
        "θ0) × 100 (of the accuracy that training Δ gained); g range: the smallest and largest g_h over layers.",
        "",
        "| run | test ex. | θ0 | gain | mix | trained | gain share | mix share | g range | mean |g − 1| |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        shares = [_recovered(row[v], row) for v in ("gain", "mix")]
        lines.append(
            f"| {row['run']} | {row['test_examples']} | "
            + " | ".join(f"{row[v]:.3f}" for v in VARIANTS)
            + " | "
            + " | ".join("–" if s is None else f"{s:.0f} %" for s in shares)
            + f" | {row['gain_min']:+.2f} … {row['gain_max']:+.2f} | {row['gain_abs_change']:.2f} |"
        )
    pooled = {v: float(np.mean([row[v] for row in rows])) for v in VARIANTS}
    gained = pooled["trained"] - pooled["theta0"]
    lines.append(
        f"| **mean of {len(rows)}** | | "
        + " | ".join(f"**{pooled[v]:.3f}**" for v in VARIANTS)
        + " | "
        + " | ".join(
            "–" if abs(gained) < 1e-9 else f"**{100 * (pooled[v] - pooled['theta0']) / gained:.0f} %**"
            for v in ("gain", "mix")
        )
        + " | | |"
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of Coeff-Tuning (with a saved delta)")
    parser.add_argument("--max-test", type=int, default=500, help="test examples per task (seeded subset)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results/coeff_gain_ablation"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = []
    for run in args.runs:
        rows.append(score_run(run, args.max_test))
        print(json.dumps(rows[-1]), flush=True)
    command = "python bench/coeff_gain_ablation.py " + " ".join(sys.argv[1:])
    seconds = time.perf_counter() - start
    write_text_atomic(args.out.with_suffix(".json"), json.dumps({"command": command, "rows": rows}, indent=1))
    write_text_atomic(args.out.with_suffix(".md"), markdown(rows, command, seconds))
    print(f"wrote {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
