"""Linear probe of a frozen encoder on the task suite: how much each task asks beyond the base model.

Per task: mean-pooled, L2-normalised embeddings of the frozen model (``task.max_length`` tokens),
logistic regression on the train split, accuracy / macro-F1 on the test split, next to the majority
baseline. Writes ``<out>/linear_probe.json`` and ``<out>/linear_probe.md``.

    python bench/linear_probe.py                 # all 10 tasks, minilm-l6, seed 0, 1 thread
    python bench/linear_probe.py --tasks intent bbc_topic --model minilm-l3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from deltaspace.assets import load_model
from deltaspace.assets.embed import encode
from deltaspace.tasks import SUITE, SUITE_TASKS, compute_metrics, load_task, majority_baseline


def embed_split(model, tokenizer, dataset, max_length: int, batch_size: int) -> np.ndarray:
    pairs = list(dataset["text_pair"]) if "text_pair" in dataset.column_names else None
    return encode(
        model, tokenizer, list(dataset["text"]), pairs, batch_size=batch_size, max_length=max_length
    ).numpy()


def probe_task(name: str, model, tokenizer, *, seed: int, C: float, batch_size: int) -> dict:
    start = time.perf_counter()
    task = load_task(name, seed=seed)
    train_x = embed_split(model, tokenizer, task.train, task.max_length, batch_size)
    test_x = embed_split(model, tokenizer, task.test, task.max_length, batch_size)
    encoded = time.perf_counter()
    train_y, test_y = np.asarray(task.train["label"]), np.asarray(task.test["label"])
    classifier = LogisticRegression(C=C, max_iter=5000).fit(train_x, train_y)
    metrics = compute_metrics(classifier.predict(test_x), test_y, task.num_labels)
    return {
        "task": name,
        "role": SUITE[name].role if name in SUITE else "user",
        "source": task.metadata.get("source"),
        "licence": task.metadata.get("licence", ""),
        "n_examples": task.metadata["n_examples"],
        "train": len(task.train),
        "validation": len(task.validation),
        "test": len(task.test),
        "classes": task.num_labels,
        "is_pair": task.is_pair,
        "max_length": task.max_length,
        "majority": majority_baseline(train_y, test_y),
        "probe_accuracy": metrics["accuracy"],
        "probe_macro_f1": metrics["macro_f1"],
        "encode_seconds": round(encoded - start, 1),
        "fit_seconds": round(time.perf_counter() - encoded, 1),
    }


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write(text)
    os.chmod(temp, 0o644)  # mkstemp files are private
    os.replace(temp, path)


def markdown(results: list[dict], header: dict) -> str:
    lines = [
        f"# Linear probe: frozen {header['model']}, mean-pooled L2-normalised embeddings, "
        f"LogisticRegression(C={header['C']:g})",
        "",
        f"Command: `{header['command']}` (seed {header['seed']}, {header['threads']} thread(s), "
        f"{header['total_seconds']:.0f} s on {header['machine']}).",
        "",
        "| task | role | N | train / val / test | classes | pair | max len | majority | probe acc | probe macro-F1 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['task']} | {r['role']} | {r['n_examples']} | {r['train']} / {r['validation']} / {r['test']} | "
            f"{r['classes']} | {'yes' if r['is_pair'] else 'no'} | {r['max_length']} | {r['majority']:.3f} | "
            f"{r['probe_accuracy']:.3f} | {r['probe_macro_f1']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--tasks", nargs="+", default=list(SUITE_TASKS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--C", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model, tokenizer = load_model(args.model)
    results = []
    for name in args.tasks:
        result = probe_task(name, model, tokenizer, seed=args.seed, C=args.C, batch_size=args.batch_size)
        results.append(result)
        print(
            f"{name:18s} N={result['n_examples']:6d} K={result['classes']:2d} majority={result['majority']:.3f} "
            f"probe={result['probe_accuracy']:.3f} ({result['encode_seconds']:.0f} s)",
            flush=True,
        )
    command = "python bench/linear_probe.py"
    defaults = {"model": "minilm-l6", "seed": 0, "C": 10.0, "threads": 1, "batch_size": 64}
    for key, default in defaults.items():
        if getattr(args, key) != default:
            command += f" --{key.replace('_', '-')} {getattr(args, key)}"
    if args.tasks != list(SUITE_TASKS):
        command += " --tasks " + " ".join(args.tasks)
    header = {
        "model": args.model,
        "seed": args.seed,
        "C": args.C,
        "threads": args.threads,
        "command": command,
        "machine": f"{platform.machine()} CPU, torch {torch.__version__}",
        "total_seconds": time.perf_counter() - start,
    }
    write_atomic(args.out / "linear_probe.json", json.dumps({**header, "results": results}, indent=2) + "\n")
    write_atomic(args.out / "linear_probe.md", markdown(results, header))
    print(f"wrote {args.out / 'linear_probe.json'} and {args.out / 'linear_probe.md'}")


if __name__ == "__main__":
    main()
