"""The generated "Your own task" section: its counts against the probe, and its replacement in place."""

from __future__ import annotations

import json

from deltaspace.report.user_tasks import HEADING, replace_section, user_task_section


def _row(task: str, probe: float, lora: float, coeff: float, tuned: float) -> dict:
    def run(accuracy: float) -> dict:
        return {"test_accuracy": accuracy, "steps": 120, "stopped_early": True}

    return {
        "task": task,
        "classes": 3,
        "majority": 0.4,
        "probe": probe,
        "train_lora_default": run(lora),
        "train_coeff_lora_default": run(coeff),
        "tune_lora": {
            "test_accuracy_mean": tuned,
            "test_accuracy_sd": 0.01,
            "lr": 0.00316,
            "multiple": 1.0,
            "seconds_of_runs": 600.0,
        },
    }


def test_the_section_counts_the_files_where_each_beats_the_probe(tmp_path):
    path = tmp_path / "user_tasks.json"
    assert user_task_section(path) is None
    rows = [_row("a", 0.6, 0.7, 0.5, 0.72), _row("b", 0.8, 0.79, 0.81, 0.85)]
    path.write_text(json.dumps({"command": "cmd", "machine": "2 cores", "tasks": rows}))
    section = user_task_section(path)
    assert section[0] == HEADING
    text = "\n".join(section)
    assert (
        "`train` lora beats it on 1 of 2 files, `train` coeff+lora on 1 of 2, `tune` lora on 2 of 2" in text
    )
    # An older record (tune tried the prototype head only) is marked; a head grid's choice is named.
    assert (
        "| a | 3 | 40.0 | 60.0 | 70.0 | 50.0 | 72.0 ± 1.0 | prototype¹, 0.00316 (×1) | 120 (yes) | 10 min |"
        in text
    )
    rows[1]["tune_lora"].update(
        head="linear", validation_by_head={"prototype": {"1": 0.5}, "linear": {"1": 0.6}}
    )
    path.write_text(json.dumps({"command": "cmd", "machine": "2 cores", "tasks": rows}))
    assert "| 85.0 ± 1.0 | linear, 0.00316 (×1) |" in "\n".join(user_task_section(path))
    assert "at or below the majority class (collapsed to one class): 0 of 4." in text
    rows[0]["tune_lora"]["test_accuracy"] = [0.7, 0.4]
    path.write_text(json.dumps({"command": "cmd", "machine": "2 cores", "tasks": rows}))
    assert "collapsed to one class): 1 of 6: a (tune seed 1)." in "\n".join(user_task_section(path))


def test_replace_section_keeps_everything_else():
    section = [HEADING, "", "new", ""]
    before = "# Title\n\n## A\n\ntext\n"
    appended = replace_section(before, section)
    assert appended == "# Title\n\n## A\n\ntext\n\n## Your own task\n\nnew\n"
    middle = "# Title\n\n## Your own task\n\nold\nrows\n\n## B\n\nkept\n"
    assert replace_section(middle, section) == "# Title\n\n## Your own task\n\nnew\n\n## B\n\nkept\n"
    assert replace_section(appended, section) == appended
