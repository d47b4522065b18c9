"""The "Your own task" section of docs/results.md, from ``bench/results/user_tasks.json``.

That file is written by ``bench/user_tasks/measure.py`` (the defaults and ``tune`` on user-style data files).
The section is generated, so the tuned comparison's report (:mod:`deltaspace.report.tuned_report`) keeps it
when it regenerates docs/results.md, and the measurement replaces it in place when it reruns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

USER_TASK_RESULTS = Path("bench") / "results" / "user_tasks.json"
HEADING = "## Your own task"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _beats(rows: list[dict[str, Any]], accuracy) -> int:
    return sum(1 for row in rows if accuracy(row) > row["probe"])


def _grid(tune: dict[str, Any]) -> str:
    """``linear,``; marked ¹ when tune tried one head (older records), ² when the other head's grid was run
    on its own after the record (``tune --head linear --seed 0``) and lost on validation."""
    tried = tune.get("validation_by_head", {"prototype": None})
    mark = "²" if tune.get("linear_grid_separately") else ("" if len(tried) > 1 else "¹")
    return f"{tune.get('head', 'prototype')}{mark},"


def user_task_section(path: str | Path = USER_TASK_RESULTS) -> list[str] | None:
    """The section's markdown lines, or ``None`` when ``path`` does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    rows = data["tasks"]
    n = len(rows)
    lora = _beats(rows, lambda row: row["train_lora_default"]["test_accuracy"])
    coeff = _beats(rows, lambda row: row["train_coeff_lora_default"]["test_accuracy"])
    tuned = _beats(rows, lambda row: row["tune_lora"]["test_accuracy_mean"])
    table = [
        "| task | classes | majority | frozen probe | `train` lora | `train` coeff+lora | `tune` lora (3 seeds) | "
        "tune's head, rate | `train` lora: steps (early stop) | `tune` time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        tune = row["tune_lora"]
        default = row["train_lora_default"]
        table.append(
            f"| {row['task']} | {row.get('classes', '–')} | {_pct(row['majority'])} | {_pct(row['probe'])} | "
            f"{_pct(default['test_accuracy'])} | {_pct(row['train_coeff_lora_default']['test_accuracy'])} | "
            f"{_pct(tune['test_accuracy_mean'])} ± {_pct(tune['test_accuracy_sd'])} | "
            f"{_grid(tune)} {tune['lr']:.3g} (×{tune['multiple']:g}) | {default['steps']} "
            f"({'yes' if default['stopped_early'] else 'no'}) | {tune['seconds_of_runs'] / 60:.0f} min |"
        )
    collapsed = [
        f"{row['task']} ({label})"
        for row in rows
        for label, accuracy in [
            ("train lora", row["train_lora_default"]["test_accuracy"]),
            ("train coeff+lora", row["train_coeff_lora_default"]["test_accuracy"]),
            *[(f"tune seed {i}", value) for i, value in enumerate(row["tune_lora"].get("test_accuracy", []))],
        ]
        if accuracy <= row["majority"] + 0.005
    ]
    runs = sum(2 + len(row["tune_lora"].get("test_accuracy", [])) for row in rows)
    collapse = (
        f"Runs that ended at or below the majority class (collapsed to one class): {len(collapsed)} of {runs}"
        + (f": {', '.join(collapsed)}." if collapsed else ".")
    )
    return [
        HEADING,
        "",
        "What a user who brings a labelled file gets (files built from packages outside the suite by "
        "`python bench/user_tasks/build.py`; `bench/user_tasks/README.md` says what each is), measured by "
        f"`{data['command']}` on {data['machine']}. Test accuracy (%) on each file's own deterministic split; "
        "majority and the same-budget frozen probe are what every run records beside itself. `train` = the "
        "defaults (`deltaspace train --task FILE --method M`: the preset's rate, the step budget sized by the "
        "data, early stopping); `train` lora is `tune`'s prototype-head ×1 seed-0 run, the same configuration. "
        "`tune` = `deltaspace tune --task FILE --method lora` (the prototype and the linear head × ×0.316 / ×1 / "
        "×3.16 the preset rate, chosen on validation, seeds 0–2 at the choice); its time is the sum of its "
        "runs' wall clocks. ¹ Measured before `tune` tried the head (prototype only). ² The prototype-head "
        "grid and seeds are that earlier record; the linear-head grid was run on its own later (`deltaspace "
        "tune --head linear --seed 0`) and scored below the prototype head's best on validation, so `tune` "
        "with both heads chooses the same runs (runs are deterministic on this machine: friends_speaker's "
        "rerun reproduced every recorded prototype-head validation score exactly).",
        "",
        *table,
        "",
        f"Against the frozen probe: `train` lora beats it on {lora} of {n} files, `train` coeff+lora on "
        f"{coeff} of {n}, `tune` lora on {tuned} of {n}. {collapse}",
        "",
    ]


def replace_section(markdown: str, section: list[str], heading: str = HEADING) -> str:
    """``markdown`` with its ``heading`` section (up to the next ``## `` heading) replaced by ``section``,
    or with ``section`` appended when it has none."""
    lines = markdown.rstrip("\n").split("\n")
    if heading in lines:
        start = lines.index(heading)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines = lines[:start] + section + lines[end:]
    else:
        lines = [*lines, "", *section]
    return "\n".join(lines).rstrip("\n") + "\n"
