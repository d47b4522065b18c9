"""Where a run stands: the majority class and the frozen-embedding linear probe on the run's own split.

A test score means little alone: 0.62 is good on a five-class task and below majority on a skewed binary one.
So every ``train`` run (``baselines=True``, the default) records beside its own score

    majority   the training split's most frequent label, scored on validation and test
    probe      the same-budget linear probe (:mod:`deltaspace.train.probe`: logistic regression on the frozen
               model's sentence embeddings, C chosen on validation), on the same examples and token limit
    zero_shot  with the verbalizer head only: the frozen LM's own label-word scores (no delta), on the same
               validation and test examples, prompt, label words and token limit

in ``result.json`` (``baselines``) and in ``train``'s final table. The probe is fitted once per task, model
and budget and kept in the cache (``<cache>/baselines/<task>-<key>/``, a probe run folder), keyed by the
task's content, so a second run or a sweep pays for it once; the zero-shot scores likewise
(``<cache>/baselines/<task>-zero-shot-<key>.json``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from deltaspace.io import read_json, write_json_atomic
from deltaspace.tasks.task import SPLITS, Task
from deltaspace.train.config import TrainConfig
from deltaspace.train.data import cap_examples, make_loader, tokenize_split
from deltaspace.train.probe import DEFAULT_C_GRID, PROBE
from deltaspace.train.result import slug

BASELINES_DIR = "baselines"
BASELINES_ENV = (
    "DELTASPACE_BASELINES_DIR"  # where cached probes go instead of <cache>/baselines (tests use it)
)


def baselines_root(cache: str | Path | None = None) -> Path:
    """``cache``/baselines if given, else ``$DELTASPACE_BASELINES_DIR``, else ``<cache>/baselines``."""
    from deltaspace.assets.cache import cache_dir

    if cache is None and os.environ.get(BASELINES_ENV):
        return Path(os.environ[BASELINES_ENV])
    return cache_dir(cache) / BASELINES_DIR


def task_digest(task: Task) -> str:
    """sha256 of the task's content (labels, pairing, every split's texts and labels)."""
    digest = hashlib.sha256(json.dumps([task.label_names, task.is_pair]).encode())
    for name in SPLITS:
        split = task.split(name)
        columns = ["text", "label"] + (["text_pair"] if task.is_pair else [])
        for column in columns:
            digest.update(json.dumps(list(split[column]), ensure_ascii=False).encode())
    return digest.hexdigest()


def majority_baseline(config: TrainConfig, task: Task) -> dict[str, Any]:
    """The training split's most frequent label (ties: the lower label id), scored on validation and test."""
    train = cap_examples(task.split("train"), config.max_train_examples, config.data_seed)
    counts = Counter(train["label"])
    label = min(counts, key=lambda value: (-counts[value], value))
    scores = {}
    for name in ("validation", "test"):
        labels = cap_examples(task.split(name), config.max_eval_examples, config.data_seed)["label"]
        share = sum(1 for y in labels if y == label) / len(labels)
        # Its one predicted class has precision `share` and recall 1; every other class scores F1 0.
        scores[name] = {"accuracy": share, "macro_f1": 2 * share / (1 + share) / task.num_labels}
    return {"label": task.label_names[label], **scores}


def probe_dir(config: TrainConfig, task: Task, cache: str | Path | None = None) -> Path:
    """The cached probe folder of this task, model and budget."""
    key = {
        "task": task_digest(task),
        "model": config.model,
        "max_length": config.max_length or task.max_length,
        "max_train_examples": config.max_train_examples,
        "max_eval_examples": config.max_eval_examples,
        "data_seed": config.data_seed,
        "C": list(DEFAULT_C_GRID),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return baselines_root(cache) / f"{slug(task.name)}-{digest}"


def probe_baseline(config: TrainConfig, task: Task, cache: str | Path | None = None) -> dict[str, Any]:
    """The same-budget probe's validation and test metrics and its chosen C (fitted once, then cached)."""
    from deltaspace.train.probe import run_probe

    probe_config = TrainConfig(
        task=config.task,
        model=config.model,
        method=PROBE,
        data_seed=config.data_seed,
        max_length=config.max_length or task.max_length,
        max_train_examples=config.max_train_examples,
        max_eval_examples=config.max_eval_examples,
        eval_batch_size=config.eval_batch_size,
        cpu=config.cpu,
        output_dir=str(probe_dir(config, task, cache)),
    )
    result = run_probe(probe_config, task=task)
    return {"C": result.method_options.get("C"), "validation": result.validation, "test": result.test}


def zero_shot_path(config: TrainConfig, task: Task, cache: str | Path | None = None) -> Path:
    """The cached zero-shot scores of this task, model, prompt, label words and evaluation budget."""
    from deltaspace.heads import DEFAULT_PROMPT
    from deltaspace.train.build import verbalizer_label_words

    key = {
        "task": task_digest(task),
        "model": config.model,
        "prompt": config.verbalizer_prompt or DEFAULT_PROMPT,
        "label_words": verbalizer_label_words(task, config.label_word_list),
        "max_length": config.max_length or task.max_length,
        "max_eval_examples": config.max_eval_examples,
        "data_seed": config.data_seed,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return baselines_root(cache) / f"{slug(task.name)}-zero-shot-{digest}.json"


def zero_shot_baseline(config: TrainConfig, task: Task, cache: str | Path | None = None) -> dict[str, Any]:
    """The frozen LM's verbalizer metrics (no delta) on validation and test, with its label words and prompt
    (scored once, then cached)."""
    import torch

    from deltaspace.train.build import build_classifier
    from deltaspace.train.evaluate import evaluate_model

    path = zero_shot_path(config, task, cache)
    if path.is_file():
        return read_json(path)
    classifier, tokenizer = build_classifier(
        config.model,
        task,
        "verbalizer",
        label_words=config.label_word_list,
        verbalizer_prompt=config.verbalizer_prompt,
    )
    classifier.to("cuda" if torch.cuda.is_available() and not config.cpu else "cpu")
    result: dict[str, Any] = {"label_words": classifier.label_words, "prompt": classifier.prompt}
    for name in ("validation", "test"):
        dataset = cap_examples(task.split(name), config.max_eval_examples, config.data_seed)
        tokenized = tokenize_split(
            dataset, tokenizer, is_pair=task.is_pair, max_length=config.max_length or task.max_length
        )
        loader = make_loader(tokenized, tokenizer, batch_size=config.eval_batch_size, shuffle=False)
        result[name] = evaluate_model(classifier, loader, task.num_labels)
    write_json_atomic(path, result)
    return result


def task_baselines(config: TrainConfig, task: Task, cache: str | Path | None = None) -> dict[str, Any]:
    """``{"majority": ..., "probe": ...}`` for ``config``'s split and budget, and ``"zero_shot"`` with the
    verbalizer head (see the module docstring)."""
    baselines = {"majority": majority_baseline(config, task), "probe": probe_baseline(config, task, cache)}
    if config.head == "verbalizer":
        baselines["zero_shot"] = zero_shot_baseline(config, task, cache)
    return baselines
