"""The "What Coeff adds" section (issue 20), checked against hand-made runs of both protocols: paired gains and
their intervals, tasks where Coeff helps, collapsed runs, Coeff alone against LoRA, ΔC's chosen rate and
dropout, the target's verdict, and writing the section into a file that keeps everything else."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.report.test_tuned_report import N
from tests.report.test_tuned_report import _write as write_run

from deltaspace.report.coeff_adds import (
    HEADING,
    PLACEHOLDER,
    READING_END,
    READING_START,
    coeff_adds_section,
    gains,
    paper_protocol,
    tuned_protocol,
    write_coeff_adds,
)
from deltaspace.train.sweep import RunSpec, SweepConfig
from deltaspace.train.tuned import TunedSweepConfig


def _write(spec: RunSpec, correct: int, *, val: float = 0.5, majority: float = 0.45, improving: bool = False):
    """A finished run with ``correct`` of the 40 test examples right, its majority class's test accuracy, and
    whether its best validation score came at its last step."""
    params = {"coeff": 24, "lora": 3000}.get(spec.method, 3024)
    baselines = {"majority": {"label": "x", "test": {"accuracy": majority}}}
    write_run(spec, correct, params, val, best_step=10 if improving else 5, steps=10, baselines=baselines)


def _tuned_config(out: Path) -> TunedSweepConfig:
    return TunedSweepConfig(
        out=str(out),
        tasks=["a", "b"],
        methods=["coeff", "lora"],
        combos=["coeff+lora"],
        seeds=[0, 1],
        lr_grid=[0.5, 1.0],
        probe=None,
        train=dict(model="m", max_eval_examples=N),
        method_overrides={"coeff": {"lr": 1e-1}, "lora": {"lr": 1e-3}},
        combo_tuning={"rates": ["one_rate", 1.0], "option": {"coeff_dropout": [0.0, 0.2]}},
    )


# Test examples right (of 40) at the chosen configurations: LoRA, Coeff, Coeff + LoRA per task.
TUNED = {("a", "lora"): 24, ("b", "lora"): 30, ("a", "coeff"): 16, ("b", "coeff"): 20}
TUNED_COMBO = {"a": 28, "b": 30}


def _fill_tuned(config: TunedSweepConfig) -> None:
    """Presets chosen in the grid; ΔC at LoRA's rate (one rate) with dropout 0.2 on task a, at Coeff's own
    rate (x1) with dropout 0 on task b. Runs not chosen score 0 correct, so a wrong pick shows."""
    for spec in config.phase_runs("grid"):
        chosen = spec.config.lr == config.preset_rates()[spec.method]
        _write(spec, TUNED[(spec.task, spec.method)] if chosen else 0, val=0.8 if chosen else 0.6)
    selections = config.choose_rates()
    for spec in config.phase_runs("combo_lr", selections):
        best = spec.key.endswith("one_rate" if spec.task == "a" else "x1")
        _write(spec, TUNED_COMBO["a"] if best and spec.task == "a" else 0, val=0.9 if best else 0.7)
    combo_rates = config.choose_combo_rates(selections)
    for spec in config.phase_runs("combo_option", selections, combo_rates=combo_rates):
        _write(spec, TUNED_COMBO["b"] if spec.task == "b" else 0, val=0.95 if spec.task == "b" else 0.5)
    combos = config.choose_combos(selections, combo_rates)
    for spec in config.phase_runs("seeds", selections, combos=combos):
        score = TUNED_COMBO[spec.task] if "+" in spec.method else TUNED[(spec.task, spec.method)]
        _write(spec, score)


def _paper_config(out: Path) -> SweepConfig:
    return SweepConfig(
        out=str(out),
        tasks=["a", "b"],
        methods=["coeff", "lora", "coeff+lora", "adapter", "coeff+adapter"],
        seeds=[0, 1, 2],
        train=dict(model="m", lr=1e-3, max_eval_examples=N),
    )


PAPER = {
    ("a", "lora"): 20, ("b", "lora"): 30, ("a", "coeff+lora"): 24, ("b", "coeff+lora"): 32,
    ("a", "adapter"): 20, ("b", "adapter"): 20, ("a", "coeff+adapter"): 26, ("b", "coeff+adapter"): 20,
    ("a", "coeff"): 10, ("b", "coeff"): 18,
}  # fmt: skip


def _fill_paper(config: SweepConfig, skip: set[str] = frozenset()) -> None:
    for spec in config.runs():
        if spec.method not in skip:
            _write(spec, PAPER[(spec.task, spec.method)], majority=0.5, improving=spec.method == "lora")


def test_tuned_protocol_gains_collapses_and_choices(tmp_path):
    config = _tuned_config(tmp_path / "tuned")
    _fill_tuned(config)
    protocol = tuned_protocol(config, "configs/tuned.yaml")
    assert (protocol.found, protocol.expected, protocol.tasks) == (12, 12, ["a", "b"])
    # Coeff + LoRA − LoRA: +4 of 40 on a (+10 points, both seeds), 0 on b: +5.0 over tasks.
    (gain,) = gains(protocol, resamples=300)
    assert (gain.x, gain.pooled.estimate) == ("lora", pytest.approx(0.05))
    assert gain.per_task["a"].estimate == pytest.approx(0.10) and gain.per_task["b"].estimate == 0.0
    assert gain.pooled.low > 0 and gain.meets_target
    choices = {task: (c.rate_label, c.value) for (task, _), c in protocol.choices.items()}
    assert choices == {"a": ("one rate", 0.2), "b": ("×1", 0.0)}

    lines, reading = _protocol_text(protocol)
    text = "\n".join(lines)
    assert "`configs/tuned.yaml` → `" in text and "12 of 12 runs (all)." in text
    row = next(line for line in lines if line.startswith("| lora |"))
    # Coeff alone scores 16/40 on a, at or below its majority 0.45: both seeds collapsed.
    assert (
        row.startswith("| lora | +5.0 [") and "| 1/2 (1 with interval > 0, 0 < 0) | 0/4, 0/4 | +5.0 [" in row
    )
    assert row.endswith("] | +10.0 | +0.0 |") and row.count("+5.0 [") == 2  # no pair collapsed: the same gain
    # Coeff alone − LoRA: −8 and −10 of 40: −22.5 points.
    assert "**Coeff alone − LoRA** (the same training budget): -22.5 [" in text
    assert "24 trainable parameters against 3K; collapsed runs: Coeff 2/4, LoRA 0/4." in text
    assert "collapsed runs (test accuracy ≤ majority class + 0.5 points): 2 of 12." in text
    assert (
        "for 2 (task, X) pairs: X's own rate (one rate for every parameter; also where it is a multiple of "
        "Coeff's) on 1, Coeff's own chosen rate (×1) "
        "on 1, another multiple of it on 0; coeff_dropout: 0 on 1, 0.2 on 1." in text
    )
    assert "| coeff+lora | one rate, 0.2 | ×1, 0 |" in text
    assert "lr varies" in text and "max_eval_examples 40" in text  # as trained, from config.json
    assert reading.startswith(
        "*Tuned rates, ΔC's rate and dropout tuned for the combination*: Coeff + X − X: "
    )
    assert (
        "lora +5.0 [" in reading
        and "without collapsed pairs); ≥ +0.5 points with an interval above 0 for 1 of 1 X (lora)" in reading
    )
    assert "; Coeff alone − LoRA -22.5 [" in reading and reading.endswith("].")


def _protocol_text(protocol):
    from deltaspace.report.coeff_adds import protocol_lines

    return protocol_lines(protocol, resamples=300)


def test_paper_protocol_target_and_runs_still_improving(tmp_path):
    config = _paper_config(tmp_path / "paper")
    _fill_paper(config)
    protocol = paper_protocol(config, "configs/paper.yaml")
    assert protocol.combos == ["coeff+lora", "coeff+adapter"] and protocol.found == protocol.expected == 30
    found = {g.x: g for g in gains(protocol, resamples=500)}
    # LoRA: +4 on a (+10 points), +2 on b (+5): +7.5. Adapter: +6 on a (+15), 0 on b: +7.5.
    assert found["lora"].pooled.estimate == pytest.approx(0.075)
    assert found["adapter"].pooled.estimate == pytest.approx(0.075)
    assert found["adapter"].per_task["b"].estimate == 0.0
    assert all(g.meets_target for g in found.values())
    # Without the pairs where a side collapsed (at most 20 of 40 right): LoRA keeps task b only (+5), adapter
    # nothing (it collapsed on both tasks).
    assert found["lora"].uncollapsed.estimate == pytest.approx(0.05) and found["adapter"].uncollapsed is None
    section = coeff_adds_section([protocol], "cmd", resamples=500)
    text = "\n".join(section)
    assert section[0] == HEADING and "Produced by: `cmd`." in text
    # Collapsed at majority 0.5 (at most 20 of 40 right): Coeff (6), adapter (6), LoRA on a, Coeff + adapter on b.
    assert "| adapter | +7.5 [" in text and "| 3/6, 6/6 | – | +15.0 | +0.0 |" in text
    assert "| lora | +7.5 [" in text and "| 2/2 (" in text and "| 0/6, 3/6 | +5.0 [" in text
    assert "collapsed runs: Coeff 6/6, LoRA 3/6." in text and "-27.5 [" in text
    assert "majority class + 0.5 points): 18 of 30." in text
    assert "(best validation at the last step): 6 of 30" in text  # the LoRA runs
    assert "**Target** (Coeff + X − X ≥ +0.5 points with an interval above 0 for at least 2 X under the " \
        "paper's regime): met (lora, adapter)." in text  # fmt: skip
    assert "lr 0.001" in text and "lr_overrides none" in text


def test_a_null_and_a_protocol_not_run_yet(tmp_path):
    paper = _paper_config(tmp_path / "paper")
    _fill_paper(paper, skip={"coeff+adapter"})
    tuned = tuned_protocol(_tuned_config(tmp_path / "nothing"), "t.yaml")
    text = "\n".join(coeff_adds_section([tuned, paper_protocol(paper, "p.yaml")], "cmd", resamples=200))
    assert (
        "0 of 12 runs (a sweep still under way: missing runs are left out).\n\nNo finished runs yet." in text
    )
    assert "- *Tuned rates, ΔC's rate and dropout tuned for the combination*: not run yet." in text
    assert "not met (1 of 1 X): under this protocol, a null so far (the sweep is still under way)." in text
    with pytest.raises(ValueError, match="no finished runs of either protocol"):
        coeff_adds_section([tuned], "cmd")


def test_the_section_replaces_its_own_and_keeps_the_rest_and_the_reading(tmp_path):
    paper = _paper_config(tmp_path / "paper")
    _fill_paper(paper)
    protocols = [paper_protocol(paper, "p.yaml")]
    output = tmp_path / "results.md"
    text = write_coeff_adds(protocols, output, "cmd", resamples=100)  # no file yet: the section alone
    assert text.startswith(HEADING) and f"{READING_START}\n{PLACEHOLDER}\n{READING_END}" in text
    output.write_text(f"# Results\n\n## A\n\nkept\n\n{text}\n## B\n\nkept too\n")
    before = output.read_text()
    output.write_text(before.replace(PLACEHOLDER, "Coeff adds nothing here.\n\nSecond paragraph."))
    again = write_coeff_adds(protocols, output, "cmd2", resamples=100)
    assert again.startswith("# Results\n\n## A\n\nkept\n\n## What Coeff adds\n")
    assert again.endswith("\n## B\n\nkept too\n") and again.count(HEADING) == 1
    assert f"{READING_START}\nCoeff adds nothing here.\n\nSecond paragraph.\n{READING_END}" in again
    assert "Produced by: `cmd2`" in again and PLACEHOLDER not in again


def test_cli_writes_the_section(tmp_path):
    from typer.testing import CliRunner

    import deltaspace.cli.tune  # noqa: F401  (registers `report`)
    from deltaspace.cli.app import app

    tuned, paper = _tuned_config(tmp_path / "tuned"), _paper_config(tmp_path / "paper")
    _fill_tuned(tuned)
    _fill_paper(paper)
    files = {}
    for name, body in (
        ("tuned.yaml", f"out: {tuned.out}\ntasks: [a, b]\nmethods: [coeff, lora]\ncombos: [coeff+lora]\n"
         "seeds: [0, 1]\nlr_grid: [0.5, 1.0]\nprobe: null\ntrain: {model: m, max_eval_examples: 40}\n"
         "method_overrides: {coeff: {lr: 0.1}, lora: {lr: 0.001}}\n"
         "combo_tuning: {rates: [one_rate, 1.0], option: {coeff_dropout: [0.0, 0.2]}}\n"),
        ("paper.yaml", f"out: {paper.out}\ntasks: [a, b]\nmethods: [coeff, lora, coeff+lora, adapter, "
         "coeff+adapter]\nseeds: [0, 1, 2]\ntrain: {model: m, lr: 0.001, max_eval_examples: 40}\n"),
    ):  # fmt: skip
        files[name] = tmp_path / name
        files[name].write_text(body)
    output = tmp_path / "results.md"
    output.write_text("# Results\n\n## Other\n\nkept\n")
    result = CliRunner().invoke(
        app,
        ["report", "coeff-adds", "--tuned", str(files["tuned.yaml"]), "--paper", str(files["paper.yaml"]),
         "--one-rate", "none", "--own-rate", "none", "--output", str(output), "--resamples", "100"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = output.read_text()
    assert text.startswith("# Results\n\n## Other\n\nkept\n\n## What Coeff adds\n")
    assert "| lora | +5.0 [" in text and "| lora | +7.5 [" in text and "met (lora, adapter)" in text
    assert "### The tuned comparison's budget, one rate" not in text
    # a plain sweep given as the one-rate protocol gets its own subsection and reading line; the target
    # sentence stays the paper regime's
    result = CliRunner().invoke(
        app,
        ["report", "coeff-adds", "--tuned", str(files["tuned.yaml"]), "--paper", str(files["paper.yaml"]),
         "--one-rate", str(files["paper.yaml"]), "--own-rate", str(files["paper.yaml"]), "--output", str(output),
         "--resamples", "100"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = output.read_text()
    one_rate = text[text.index("### The tuned comparison's budget, one rate for every parameter") :]
    assert "30 of 30 runs (all)" in one_rate and "| lora | +7.5 [" in one_rate
    assert "- *The tuned comparison's budget, one rate for every parameter (X's preset rate, ΔC included)*: " \
        "Coeff + X − X: lora +7.5" in text  # fmt: skip
    assert text.count("**Target**") == 1
    assert "### The tuned comparison's budget, ΔC at Coeff's own rate (X at its preset rate)" in text
