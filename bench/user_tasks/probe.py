"""Frozen-encoder linear probe of the built user files, on deltaspace's own split of each file.

Same measurement as ``bench/linear_probe.py`` (mean-pooled, L2-normalised embeddings of the frozen
model, LogisticRegression C=10, seed 0, one thread), applied to the files ``build.py`` wrote:

    python bench/user_tasks/probe.py                       # every file in bench/user_tasks/data
    python bench/user_tasks/probe.py --files bench/user_tasks/data/review_sentiment.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deltaspace.assets import load_model
from linear_probe import probe_task


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=Path, nargs="+", default=None)
    parser.add_argument("--data", type=Path, default=Path(__file__).parent / "data")
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--C", type=float, default=10.0)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    torch.set_num_threads(1)
    files = args.files or sorted(p for p in args.data.iterdir() if p.suffix in {".csv", ".jsonl"})
    model, tokenizer = load_model(args.model)
    print("| file | N | train / val / test | classes | max len | majority | probe acc | probe macro-F1 |")
    print("|---|---|---|---|---|---|---|---|")
    for path in files:
        r = probe_task(
            f"{path}?text=text&label=label",
            model,
            tokenizer,
            seed=args.seed,
            C=args.C,
            batch_size=args.batch_size,
        )
        print(
            f"| {path.name} | {r['n_examples']} | {r['train']} / {r['validation']} / {r['test']} | {r['classes']} | "
            f"{r['max_length']} | {r['majority']:.3f} | {r['probe_accuracy']:.3f} | {r['probe_macro_f1']:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
