"""docs/results.md from the tuned sweep, checked against hand-made runs: averages, paired bootstrap intervals,
Coeff + X against X, the same-budget baselines, chosen rates, and the kept hand-written reading."""

from __future__ import annotations

import numpy as np
import pytest

from deltaspace.report.stats import bootstrap_average, paired_differences
from deltaspace.report.tuned_report import (
    PLACEHOLDER,
    READING_END,
    READING_START,
    tuned_report,
    write_tuned_report,
)
from deltaspace.train.result import RunResult, save_predictions
from deltaspace.train.sweep import RunSpec
from deltaspace.train.tuned import TunedSweepConfig

N = 40  # test examples per task
LABELS = [i % 2 for i in range(N)]


def test_bootstrap_average_estimate_and_interval():
    # Two tasks: 50 % and 100 % correct -> 75 % average; an all-correct task has no spread.
    half = np.array([[1, 0] * 50], dtype=float)
    full = np.ones((1, 100))
    interval = bootstrap_average({"a": half, "b": full}, resamples=500)
    assert interval.estimate == pytest.approx(0.75)
    assert interval.low < 0.75 < interval.high and interval.high - interval.low < 0.2
    assert bootstrap_average({"b": full}, resamples=50).format() == "100.0 [100.0, 100.0]"
    # More examples, narrower interval.
    wide = bootstrap_average({"a": np.array([[1, 0] * 10], dtype=float)}, resamples=500)
    assert wide.high - wide.low > interval.high - interval.low
    # Seeds are resampled too: seeds that disagree widen the interval even when every example agrees.
    seeds = np.stack([np.ones(100), np.zeros(100)])
    spread = bootstrap_average({"a": seeds}, resamples=500)
    assert spread.estimate == 0.5 and spread.low == 0.0 and spread.high == 1.0
    with pytest.raises(ValueError, match="no tasks"):
        bootstrap_average({})


def test_paired_differences_pair_seeds_and_examples():
    a = {"t": {0: np.array([1, 1, 0, 0]), 1: np.array([1, 0, 1, 0]), 2: np.array([1, 1, 1, 1])}}
    b = {"t": {0: np.array([1, 1, 0, 0]), 1: np.array([0, 0, 1, 0])}}
    diff = paired_differences(a, b)  # seeds 0 and 1 only (the ones both have)
    assert diff["t"].tolist() == [[0, 0, 0, 0], [1, 0, 0, 0]]
    # Identical predictions: a paired gain of exactly zero, with no spread at all.
    same = bootstrap_average(paired_differences(a, a), resamples=200)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)
    # A one-seed baseline (the probe) is paired with every seed.
    probe = {"t": {0: np.array([0, 0, 0, 0])}}
    assert paired_differences(a, probe)["t"].shape == (3, 4)
    with pytest.raises(ValueError, match="different numbers of examples"):
        paired_differences(a, {"t": {0: np.array([1, 0])}})


def _config(out) -> TunedSweepConfig:
    return TunedSweepConfig(
        out=str(out),
        tasks=["a", "b"],
        methods=["bitfit", "coeff", "head"],
        combos=["coeff+bitfit"],
        seeds=[0, 1],
        lr_grid=[0.5, 1.0],
        train=dict(model="m", max_train_examples=100, max_eval_examples=N, epochs=2, batch_size=8),
        method_overrides={"bitfit": {"lr": 1e-2}, "coeff": {"lr": 1e-1}, "head": {"lr": 1e-2}},
    )


def _write(spec: RunSpec, correct: int, params: int, val: float = 0.5, **fields) -> None:
    """A finished run whose first ``correct`` test examples are right and the rest wrong (``fields``: other
    values of its result.json)."""
    run_dir = spec.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    spec.config.to_json(run_dir / "config.json")
    predictions = [y if i < correct else 1 - y for i, y in enumerate(LABELS)]
    save_predictions(run_dir, {"test": (predictions, LABELS)})
    values = dict(
        task=spec.task, method=spec.method, seed=spec.seed, model="m", head="prototype",
        trainable_params=params, total_params=1000, best_step=1, steps=1, epochs=1.0, stopped_early=False,
        validation={"accuracy": val, "loss": 1.0}, test={"accuracy": correct / N, "macro_f1": correct / N / 2},
        train_time_s=1.0, total_time_s=1.0, peak_rss_mb=1.0,
        method_options={"C": 1.0} if spec.kind == "probe" else {},
    )  # fmt: skip
    RunResult(**{**values, **fields}).save(run_dir)


PARAMS = {"bitfit": 100, "coeff": 10, "head": 2, "coeff+bitfit": 110, "probe": 20}


def _fill(config: TunedSweepConfig, *, skip: set[str] = frozenset()) -> None:
    # Grid: the lower rate wins on validation for bitfit, the preset for coeff; the chosen runs score
    # bitfit 20/40 (a) and 24/40 (b), coeff 16/40, head 10/40.
    for spec in config.phase_runs("grid"):
        if spec.kind == "probe":
            _write(spec, 22 if spec.task == "a" else 30, PARAMS["probe"])
            continue
        low = spec.config.lr == min(config.grid_rates(spec.method))
        val = {"bitfit": 0.9 if low else 0.6, "coeff": 0.5 if low else 0.8, "head": 0.3}[spec.method]
        score = {"bitfit": 20 if spec.task == "a" else 24, "coeff": 16, "head": 10}[spec.method]
        _write(spec, score if val >= 0.8 or spec.method == "head" else 0, PARAMS[spec.method], val)
    chosen = config.choose_rates()
    for spec in config.phase_runs("seeds", chosen):
        if spec.key in skip:
            continue
        score = {"bitfit": 20 if spec.task == "a" else 24, "coeff": 16, "head": 10}.get(spec.method)
        if spec.method == "coeff+bitfit":  # +10 examples on a (both seeds), +0 on b
            score = 30 if spec.task == "a" else 24
        _write(spec, score, PARAMS[spec.method], val=0.95)


def test_report_tables_gains_baselines_and_rates(tmp_path):
    config = _config(tmp_path / "runs")
    _fill(config)
    text = tuned_report(config, "cmd", resamples=300)
    assert "from 18 of the 18 runs" in text
    # bitfit: 50 % on a, 60 % on b (both seeds) -> 55.0 average, an interval around it.
    row = next(line for line in text.splitlines() if line.startswith("| bitfit |"))
    assert "| 50.0 ± 0.0 | 60.0 ± 0.0 | 55.0 [" in row and row.endswith("| 100 (10%) |")
    # Baselines, clearly labelled: head only (25 %), the same-budget probe (55 %, 75 %).
    assert "| baseline: head only (label prototypes trained) | 25.0 ± 0.0 | 25.0 ± 0.0 | 25.0 [" in text
    assert "| baseline: linear probe, same budget (C on validation) | 55.0 | 75.0 | 65.0 [" in text
    # Coeff + bitfit − bitfit: +25 points on a, 0 on b -> +12.5 pooled, helps on 1 of 2 tasks.
    gain = next(line for line in text.splitlines() if line.startswith("| bitfit | +"))
    assert (
        gain.startswith("| bitfit | +12.5 [")
        and "| 1/2 (1 with interval > 0, 0 < 0) | +25.0 | +0.0 |" in gain
    )
    assert "bitfit +12.5 [" in text and "(helps; up on 1/2 tasks)" in text
    # Coeff alone against LoRA needs LoRA: not in this sweep, so no such sentence.
    assert "Coeff alone against tuned LoRA" not in text
    # The best-on-validation method (coeff+bitfit: 75 %, 60 %) beats the probe (55 %, 75 %) on a only.
    assert "beats the same-budget linear probe on test on 1 of 2 tasks" in text
    # Frontier by parameters: head is a baseline; coeff (40 %) -> bitfit (55 %) -> coeff+bitfit (60 %).
    assert "**coeff** (10 parameters, 40.0 %) → **bitfit** (100 parameters, 55.0 %" in text
    # Chosen rates: bitfit's lower rate (an edge), coeff's preset (the upper edge of this 2-point grid).
    assert "| bitfit | 0.01 | 0.005 ↓ | 0.005 ↓ |" in text and "| coeff | 0.1 | 0.1 ↑ | 0.1 ↑ |" in text
    assert "| baseline: linear probe, same budget (C on validation) | – | C=1 | C=1 |" in text
    # The budget comes from the runs' own config.json.
    assert "up to 100 training examples" in text and "2 epochs of batch 8" in text
    assert f"{N}–{N} test examples per task; under 500: a {N} (capped by max_eval_examples)" in text


def test_missing_runs_are_counted_and_the_reading_is_kept(tmp_path):
    config = _config(tmp_path / "runs")
    _fill(config, skip={"seeds/b/coeff+bitfit/seed1"})
    output = tmp_path / "results.md"
    text = write_tuned_report(config, output, "cmd", resamples=100)
    assert "from 17 of the 18 runs" in text and "a sweep still under way" in text
    assert f"{READING_START}\n{PLACEHOLDER}\n{READING_END}" in text
    # The gain is paired over the seeds both have: task b has seed 0 only now, still +0.
    assert "| bitfit | +12.5 [" in text
    output.write_text(output.read_text().replace(PLACEHOLDER, "Pick BitFit.\n\nTwo paragraphs."))
    again = write_tuned_report(config, output, "cmd", resamples=100)
    assert f"{READING_START}\nPick BitFit.\n\nTwo paragraphs.\n{READING_END}" in again
    assert PLACEHOLDER not in output.read_text()


def test_runs_scored_on_other_examples_are_refused(tmp_path):
    config = _config(tmp_path / "runs")
    _fill(config)
    probe = config.probe_dir("a")
    save_predictions(probe, {"test": ([0] * N, [1 - y for y in LABELS])})
    with pytest.raises(ValueError, match="scored on other test examples"):
        tuned_report(config, "cmd", resamples=10)
    with pytest.raises(ValueError, match="no finished runs of the tuned sweep"):
        tuned_report(_config(tmp_path / "empty"), "cmd")


def test_the_report_names_the_suite_it_measured():
    from deltaspace.report.tuned_report import suite_line
    from deltaspace.tasks import SUITE_TASKS, V1_TASKS

    v1 = suite_line(list(V1_TASKS))
    assert v1.startswith("**Suite:** v1 (10 tasks; 6 from BIG-bench") and "--bigbench-dir" in v1
    assert (
        suite_line(list(SUITE_TASKS[:3]))
        == f"**Suite:** v2 (3 of its {len(SUITE_TASKS)} tasks; `docs/tasks.md`)."
    )
    assert suite_line(["mine.csv"]) == "**Tasks:** mine.csv."


def test_sections_the_report_does_not_produce_are_kept_in_order(tmp_path, monkeypatch):
    # Regenerating docs/results.md keeps every `## ` section of the old file that the report does not write
    # itself (hand-written ones, and those of `report coeff-adds` and bench/llm_verbalizer/measure.py), after
    # the generated part in their old order; the report's own sections are replaced, never duplicated.
    import deltaspace.report.tuned_report as module

    config = _config(tmp_path / "runs")
    _fill(config)
    output = tmp_path / "results.md"
    own_task = ["## Your own task", "", "Fresh user-task table.", ""]
    monkeypatch.setattr(module, "user_task_section", lambda: own_task)
    old = "\n".join(
        [
            "# Old title",
            "",
            "## Reading",
            "",
            READING_START,
            "Hand reading.",
            READING_END,
            "",
            "## Test accuracy",
            "",
            "| stale table |",
            "",
            "## What Coeff adds",
            "",
            "Paired Coeff + X − X.",
            "",
            "```",
            "## not a heading: inside a code block",
            "```",
            "",
            "## Coeff-Tuning on top of each method",
            "",
            "| stale combos |",
            "",
            "## Your own task",
            "",
            "Stale user-task table.",
            "",
            "## An LLM with a verbalizer head",
            "",
            "SmolLM2 rows.",
            "",
            "### A subsection stays with its section",
            "",
        ]
    )
    output.write_text(old)
    text = write_tuned_report(config, output, "cmd", resamples=50)
    assert text == output.read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ") and "not a heading" not in line]
    assert headings == [
        "## Reading",
        "## Test accuracy",
        "## Coeff-Tuning on top of each method",
        "## Test macro-F1",
        "## Chosen learning rates",
        "## Your own task",
        "## What Coeff adds",
        "## An LLM with a verbalizer head",
    ]
    assert f"{READING_START}\nHand reading.\n{READING_END}" in text
    assert "stale" not in text.lower() and "Old title" not in text
    assert "Fresh user-task table." in text
    kept = text.split("## What Coeff adds", 1)[1]
    assert "Paired Coeff + X − X.\n\n```\n## not a heading: inside a code block\n```" in kept
    assert kept.rstrip().endswith("SmolLM2 rows.\n\n### A subsection stays with its section")
    # Regenerating again changes nothing; without the user-task results the old section is kept, not lost.
    assert write_tuned_report(config, output, "cmd", resamples=50) == text
    monkeypatch.setattr(module, "user_task_section", lambda: None)
    again = write_tuned_report(config, output, "cmd", resamples=50)
    assert again.count("## Your own task") == 1 and "Fresh user-task table." in again
