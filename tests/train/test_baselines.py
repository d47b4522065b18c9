"""Majority and the frozen probe beside every run: scored on the run's own split, the probe cached per task."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasets import Dataset

from deltaspace.train import baselines
from deltaspace.train.config import TrainConfig
from deltaspace.train.evaluate import metrics_from_logits


def _config(model_dir, tmp_path, **changes) -> TrainConfig:
    return TrainConfig(
        task="tiny", model=str(model_dir), method="lora", batch_size=8, max_steps=2, cpu=True,
        output_dir=str(tmp_path / "run"), save_delta=False, **changes,
    )  # fmt: skip


def test_majority_is_the_training_splits_commonest_label_scored_like_a_run(tmp_path, make_tiny_task):
    task = make_tiny_task(n_train=40, n_val=20, n_test=30)
    task.train = Dataset.from_dict({"text": ["x"] * 5, "label": [1, 1, 1, 0, 0]})
    result = baselines.majority_baseline(TrainConfig(task="tiny"), task)
    assert result["label"] == "positive"
    for split in ("validation", "test"):
        labels = np.asarray(task.split(split)["label"])
        constant = np.tile([0.0, 1.0], (len(labels), 1))  # always "positive"
        expected = metrics_from_logits(constant, labels, task.num_labels)
        assert result[split]["accuracy"] == pytest.approx(expected["accuracy"])
        assert result[split]["macro_f1"] == pytest.approx(expected["macro_f1"])


def test_the_probe_is_fitted_once_per_task_and_budget(tmp_path, tiny_model_dir, make_tiny_task, monkeypatch):
    task = make_tiny_task()
    config = _config(tiny_model_dir, tmp_path)
    first = baselines.probe_baseline(config, task, cache=tmp_path / "cache")
    assert first["C"] > 0 and 0 <= first["test"]["accuracy"] <= 1

    def refit(*args, **kwargs):
        raise AssertionError("the cached probe was fitted again")

    monkeypatch.setattr("deltaspace.train.probe.fit_logistic", refit)
    assert baselines.probe_baseline(config, task, cache=tmp_path / "cache") == first
    # Another budget or other data is another probe.
    assert baselines.probe_dir(config.replace(max_train_examples=10), task, tmp_path) != baselines.probe_dir(
        config, task, tmp_path
    )
    other = make_tiny_task(seed=1)
    assert baselines.task_digest(other) != baselines.task_digest(task)
    assert baselines.task_digest(make_tiny_task()) == baselines.task_digest(task)


def test_a_run_records_where_it_stands(tmp_path, tiny_model_dir, make_tiny_task):
    from deltaspace.train.loop import train

    task = make_tiny_task()
    result = train(_config(tiny_model_dir, tmp_path), task=task)
    saved = json.loads((tmp_path / "run" / "result.json").read_text())["baselines"]
    assert saved == result.baselines
    assert saved["majority"] == baselines.majority_baseline(_config(tiny_model_dir, tmp_path), task)
    assert set(saved["probe"]) == {"C", "validation", "test"}


def test_cli_train_prints_the_baselines_under_the_run(tmp_path, tiny_model_dir, write_reviews_file):
    from typer.testing import CliRunner

    import deltaspace.cli.train  # noqa: F401  (registers `train`)
    from deltaspace.cli.app import app

    data = write_reviews_file(tmp_path / "mine.jsonl", words=("good", "bad", "great"))  # a positive majority
    done = CliRunner().invoke(
        app,
        ["train", "--task", str(data), "--model", str(tiny_model_dir), "--method", "lora", "--max-steps", "2",
         "--batch-size", "8", "--cpu", "--out", str(tmp_path / "run")],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "test, majority (positive)" in done.output and "test, frozen probe (C=" in done.output


def test_a_verbalizer_run_records_the_frozen_lms_zero_shot_scores(
    tmp_path, tiny_lm_dir, make_tiny_task, monkeypatch
):
    from deltaspace.train.build import build_classifier
    from deltaspace.train.data import make_loader, tokenize_split
    from deltaspace.train.evaluate import evaluate_model, evaluate_run
    from deltaspace.train.loop import train

    task = make_tiny_task()
    config = _config(tiny_lm_dir, tmp_path).replace(head="verbalizer", save_delta=True)
    result = train(config, task=task)
    saved = json.loads((tmp_path / "run" / "result.json").read_text())["baselines"]
    assert saved == result.baselines and set(saved) == {"majority", "probe", "zero_shot"}
    zero_shot = saved["zero_shot"]
    assert zero_shot["label_words"] == ["negative", "positive"]
    assert zero_shot["prompt"] == "\nOptions: negative, positive.\nAnswer:"
    # The frozen LM under the verbalizer head, no delta: scored on the run's own test examples.
    classifier, tokenizer = build_classifier(str(tiny_lm_dir), task, "verbalizer")
    loader = make_loader(
        tokenize_split(task.test, tokenizer, is_pair=False, max_length=task.max_length), tokenizer,
        batch_size=8, shuffle=False,
    )  # fmt: skip
    assert zero_shot["test"] == pytest.approx(evaluate_model(classifier, loader, task.num_labels))

    def rebuild(*args, **kwargs):
        raise AssertionError("the cached zero-shot scores were computed again")

    monkeypatch.setattr("deltaspace.train.build.build_classifier", rebuild)
    assert baselines.zero_shot_baseline(config, task) == zero_shot
    # Other label words or another prompt are other scores.
    for changes in ({"label_words": "bad,good"}, {"verbalizer_prompt": "Answer :"}):
        assert baselines.zero_shot_path(config.replace(**changes), task) != baselines.zero_shot_path(
            config, task
        )
    monkeypatch.undo()
    # The saved run rebuilds the same classifier.
    assert evaluate_run(tmp_path / "run", "test", task=task, device="cpu") == pytest.approx(result.test)


def test_cli_trains_and_evaluates_a_verbalizer_run(tmp_path, tiny_lm_dir, write_reviews_file):
    from typer.testing import CliRunner

    import deltaspace.cli.train  # noqa: F401  (registers `train`)
    from deltaspace.cli.app import app

    data = write_reviews_file(tmp_path / "mine.jsonl", words=("good", "bad", "great"))
    run = tmp_path / "run"
    done = CliRunner().invoke(
        app,
        ["train", "--task", str(data), "--model", str(tiny_lm_dir), "--head", "verbalizer", "--label-words",
         "bad,good", "--verbalizer-prompt", "Answer :", "--method", "coeff+lora", "--max-steps", "2",
         "--batch-size", "8", "--cpu", "--out", str(run)],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "test, zero-shot (frozen LM)" in done.output and "test, frozen probe (C=" in done.output
    config = json.loads((run / "config.json").read_text())
    assert (config["head"], config["label_words"], config["verbalizer_prompt"]) == (
        "verbalizer",
        "bad,good",
        "Answer :",
    )
    evaluated = CliRunner().invoke(app, ["eval", str(run), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    test = json.loads((run / "result.json").read_text())["test"]
    assert json.loads(evaluated.output.strip().splitlines()[-1]) == pytest.approx(test)

    wrong = CliRunner().invoke(
        app,
        ["train", "--task", str(data), "--model", str(tiny_lm_dir), "--head", "verbalizer", "--label-words",
         "bad,good,fine", "--method", "lora", "--cpu", "--out", str(tmp_path / "wrong")],
    )  # fmt: skip
    assert wrong.exit_code == 1 and "3 label words (bad, good, fine)" in wrong.output
    assert not (tmp_path / "wrong").exists()
