"""report.md from hand-made stage outputs: the numbers it prints are the ones the stages wrote."""

from __future__ import annotations

import json
from pathlib import Path

from deltaspace.study.report import write_report


def _stage2(task: str, heldout: bool, original: dict, initial: dict, found: dict) -> dict:
    methods = list(original)
    relative = [[100 * found[t] / original[t] for t in methods] for _ in methods]
    return {
        "task": task,
        "heldout": heldout,
        "original": original,
        "initial": initial,
        "optimise": {m: {"metric": found[m], "relative": 100 * found[m] / original[m]} for m in methods},
        "transfer": {"sources": methods, "targets": methods, "metrics": relative, "relative": relative},
    }


def test_relative_performance_and_gain_recovered(tmp_path: Path) -> None:
    config = {
        "name": "t",
        "model": "m",
        "methods": ["lora", "full"],
        "source_tasks": ["a"],
        "heldout_tasks": ["b"],
        "seed": 0,
        "optimise_tasks": ["b"],
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "stage2").mkdir()
    data = _stage2(
        "b",
        True,
        original={"lora": 0.80, "full": 0.90},
        initial={"lora": 0.70, "full": 0.70},
        found={"lora": 0.75, "full": 0.70},
    )
    (tmp_path / "stage2" / "b.json").write_text(json.dumps(data))
    text = write_report(tmp_path).read_text()
    # relative: 0.75 / 0.80 = 93.75 %, 0.70 / 0.90 = 77.8 %; gain recovered: 50 % and 0 %
    assert "| b (held-out) | 93.8 (0.750 / 0.800) | 77.8 (0.700 / 0.900) | 85.8 | 0.700 |" in text
    assert "| b (held-out) | 50.0 | 0.0 |" in text
    assert "Stage 5, full fine-tuning" in text
