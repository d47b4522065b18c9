"""docs/results.md is computed from the sweep's result files: check it against hand-made results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deltaspace.report.suite_report import NOTES_MARKER, main, suite_report


def _result(root: Path, task: str, method: str, seed: int, accuracy: float, params: int) -> None:
    run = root / task / method / f"seed{seed}"
    run.mkdir(parents=True)
    (run / "result.json").write_text(
        json.dumps(
            {
                "task": task,
                "method": method,
                "seed": seed,
                "trainable_params": params,
                "total_params": 1000,
                "test": {"accuracy": accuracy, "macro_f1": accuracy / 2},
                "validation": {"accuracy": accuracy},
            }
        )
    )


def test_tables_and_paired_gain(tmp_path: Path) -> None:
    for seed, (lora, both) in enumerate([(0.70, 0.74), (0.72, 0.71), (0.68, 0.75)]):
        _result(tmp_path, "rt_sentiment", "lora", seed, lora, 100)
        _result(tmp_path, "rt_sentiment", "coeff+lora", seed, both, 110)
    _result(tmp_path, "intent", "lora", 0, 0.90, 100)
    _result(tmp_path, "intent", "coeff+lora", 0, 0.80, 110)
    text = suite_report(tmp_path, "cmd")
    assert "| lora | 70.0 ± 2.0 |" in text.replace("  ", " ")  # mean 70.0, sample std 2.0
    assert "| rt_sentiment | +3.3 ± 4.0 | 2/3 |" in text  # diffs +4, -1, +7: sample std 4.04
    assert "| intent | -10.0 | 0/1 |" in text
    assert "**mean over tasks** | **-3.3**" in text


def test_control_sweep_joins_under_its_own_name(tmp_path: Path) -> None:
    _result(tmp_path / "main", "rt_sentiment", "lora", 0, 0.70, 100)
    _result(tmp_path / "main", "rt_sentiment", "coeff+lora", 0, 0.76, 110)
    _result(tmp_path / "control", "rt_sentiment", "lora", 0, 0.75, 100)
    text = suite_report(tmp_path / "main", "cmd", {"lora@lr2e-3": tmp_path / "control"})
    assert "## coeff+lora against lora@lr2e-3" in text
    assert "| rt_sentiment | +1.0 | 1/1 |" in text and "| rt_sentiment | +6.0 | 1/1 |" in text


def test_every_coeff_variant_meets_every_lora_variant_and_notes_survive(tmp_path: Path) -> None:
    _result(tmp_path / "main", "rt_sentiment", "lora", 0, 0.70, 100)
    _result(tmp_path / "main", "rt_sentiment", "coeff+lora", 0, 0.76, 110)
    _result(tmp_path / "lr", "rt_sentiment", "lora", 0, 0.75, 100)
    _result(tmp_path / "dc", "rt_sentiment", "coeff+lora", 0, 0.78, 110)
    output = tmp_path / "results.md"
    args = [
        str(tmp_path / "main"),
        str(output),
        f"{tmp_path / 'lr'}=lora@lr2e-3",
        f"{tmp_path / 'dc'}=coeff+lora@dc",
    ]
    main(args)
    text = output.read_text()
    for pair in (
        "coeff+lora against lora",
        "coeff+lora against lora@lr2e-3",
        "coeff+lora@dc against lora@lr2e-3",
    ):
        assert f"## {pair}\n" in text
    assert "| rt_sentiment | +3.0 | 1/1 |" in text  # coeff+lora@dc − lora@lr2e-3

    output.write_text(text + f"\n{NOTES_MARKER}\n\n## Reading the tables\n\nHand-written.\n")
    _result(tmp_path / "main", "intent", "lora", 0, 0.90, 100)
    main(args)
    regenerated = output.read_text()
    assert "| intent |" in regenerated and regenerated.endswith("## Reading the tables\n\nHand-written.\n")
    assert regenerated.count(NOTES_MARKER) == 1


def test_empty_sweep_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no finished runs"):
        suite_report(tmp_path, "cmd")
