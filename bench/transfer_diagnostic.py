"""Which part of a stage-2 code carries transfer across DETs, and which part breaks it.

For a finished study with the closed-form subspace (coordinates: k solution directions, then the descent
directions, then random ones), every held-out task's stage-2 code z found through a source DET is decoded
by every DET with only some coordinates kept (the rest set to 0), and scored on the study's test examples.
Prints, per mask, the pooled gain recovered over θ0 off the diagonal (transfer) and on it (the DET's own
code), in percent.

    python bench/transfer_diagnostic.py studies/default [--json bench/results/transfer_diagnostic.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from deltaspace.io import write_json_atomic
from deltaspace.study import load_study_config
from deltaspace.study.pipeline import StudyContext
from deltaspace.subspace.evaluate import predictions


def _accuracy(pred: list[int], gold: torch.Tensor) -> float:
    return float((torch.tensor(pred) == gold).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="a finished study folder (config.json, subspace/, stage2/)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    config = load_study_config(str(args.study / "config.json"))
    context = StudyContext(config)
    bundle = context.bundle(None)
    layout = bundle.metadata.get("closed_form")
    if layout is None:
        raise SystemExit("this diagnostic needs a closed-form subspace (fit.init: closed_form)")
    k, g, d = layout["basis_dim"], layout["gradient_dim"], config.fit.dim
    masks = {
        "all coordinates": range(d),
        "solution directions": range(k),
        "descent directions": range(k, k + g),
        "solution + descent": range(k + g),
    }
    cells = []
    for task in config.stage2_tasks:
        record = json.loads((args.study / "stage2" / f"{task}.json").read_text())
        gold, initial, original = context.reference_predictions(task)
        gold = torch.tensor(gold)
        for source, run in record["runs"]["learned"].items():
            z = torch.tensor(run["z"]).float()
            for member in context.members:
                up = bundle.up(member.name)
                for mask, index in masks.items():
                    kept = torch.zeros_like(z)
                    kept[list(index)] = z[list(index)]
                    with torch.no_grad():
                        pred, _ = predictions(member, up(kept), context.batches[task].report_batches)
                    start = _accuracy(initial[member.name], gold)
                    cells.append(
                        {
                            "task": task,
                            "source": source,
                            "target": member.name,
                            "mask": mask,
                            "gain": _accuracy(pred.tolist(), gold) - start,
                            "trained_gain": _accuracy(original[member.name], gold) - start,
                        }
                    )

    def pooled(rows: list[dict]) -> float:
        return 100 * sum(r["gain"] for r in rows) / sum(r["trained_gain"] for r in rows)

    summary = {}
    print(f"{'coordinates kept':<22} {'transfer (off-diagonal)':>24} {'own code (diagonal)':>20}")
    for mask in masks:
        off = pooled([c for c in cells if c["mask"] == mask and c["source"] != c["target"]])
        own = pooled([c for c in cells if c["mask"] == mask and c["source"] == c["target"]])
        summary[mask] = {"transfer": off, "own": own}
        print(f"{mask:<22} {off:>23.1f}% {own:>19.1f}%")
    if args.json:
        write_json_atomic(args.json, {"study": str(args.study), "summary": summary, "cells": cells})


if __name__ == "__main__":
    main()
