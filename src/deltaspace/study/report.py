"""report.md of a study: every table is computed from the JSON files the stages wrote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from deltaspace.io import write_text_atomic
from deltaspace.train.sweep import slug

# The paper's multi-task averages (Yi et al., 2022, Tables 3 and 4; T5-base, 60 source tasks, d = 100).
PAPER_HELDOUT_OPTIMISATION = 88.7
PAPER_TRANSFER = 84.7


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _pct(value: float | None) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.1f}"


def _acc(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else None


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _original_space(out: Path, config: dict) -> list[str]:
    from deltaspace.study.config import StudyConfig
    from deltaspace.train.sweep import collect_results

    runs = StudyConfig.from_dict({**config, "out": str(out)}).runs_dir
    frame = collect_results(runs)
    if frame.empty:
        return ["No finished original-space runs yet."]
    frame = frame[frame.seed == config.get("seed", 0)]  # a shared sweep may hold other seeds too
    frame["task_slug"] = frame.task.map(slug)
    methods = config["methods"]
    rows = []
    for task in config["source_tasks"] + config["heldout_tasks"]:
        cells = [slug(task) + (" (held-out)" if task in config["heldout_tasks"] else "")]
        for method in methods:
            hit = frame[(frame.task_slug == slug(task)) & (frame.method == method)]
            cells.append(_acc(float(hit.test_accuracy.mean())) if len(hit) else "–")
        rows.append(cells)
    params = []
    for method in methods:
        hit = frame[frame.method == method]
        params.append(f"{int(hit.trainable_params.iloc[0]):,}" if len(hit) else "–")
    rows.append(["trainable params", *params])
    return _table(["task", *methods], rows)


def _fit(out: Path) -> list[str]:
    fit = _read(out / "subspace" / "fit.json")
    if fit is None:
        return ["Stage 1 has not run yet."]
    rows = []
    for name, dim in fit["dims"].items():
        errors = fit["reconstruction_error"].get(name, {})
        kinds = fit.get("projection_kinds", {}).get(name, {})
        kind = kinds.get("up", "?") if isinstance(kinds, dict) else str(kinds)
        rows.append(
            [
                name,
                f"{dim:,}",
                kind,
                f"{fit['projection_memory_bytes'].get(name, 0) / 2**20:.2f}",
                _pct(100 * _mean(list(errors.values())) if errors else None),
            ]
        )
    lines = [
        f"Intrinsic dimension d = {fit['config']['dim']}, {fit['config']['steps']} steps, "
        f"{fit['seconds']:.0f} s, source tasks: {', '.join(map(slug, fit['source_tasks']))}.",
        "",
    ]
    return lines + _table(
        [
            "DET",
            "D (parameters)",
            "up-projection",
            "projection memory (MiB)",
            "relative reconstruction error (%)",
        ],
        rows,
    )


FULL = "full"  # the full fine-tuning preset


def _stage2_rows(results: dict[str, dict], config: dict) -> list[tuple[str, dict]]:
    """(row label, stage-2 result) per finished task, in report order (held-out tasks first by default)."""
    rows = []
    for task in config.get("optimise_tasks") or config["heldout_tasks"] + config["source_tasks"]:
        data = results.get(slug(task))
        if data is not None:
            rows.append((slug(task) + (" (held-out)" if data["heldout"] else " (source)"), data))
    return rows


def _recovered_gain(results: dict[str, dict], methods: list[str], config: dict) -> list[str]:
    """(subspace − θ0) / (original − θ0): how much of training's gain over the untrained point the
    subspace recovers. Relative performance hides a strong θ0 (a zero-shot head); this does not."""
    rows, heldout = [], []
    for label, data in _stage2_rows(results, config):
        if not data.get("initial"):
            continue
        cells = []
        for m in methods:
            gain = data["original"][m] - data["initial"][m]
            value = None if gain <= 0 else 100 * (data["optimise"][m]["metric"] - data["initial"][m]) / gain
            cells.append(value)
        if data["heldout"]:
            heldout.append(cells)
        rows.append([label, *map(_pct, cells)])
    if not rows:
        return []
    if heldout:
        columns = [[v for v in column if v is not None] for column in zip(*heldout, strict=True)]
        rows.append(["**held-out average**", *(_pct(_mean(c)) if c else "–" for c in columns)])
    lines = [
        "Gain recovered (%) = (subspace − θ0 accuracy) / (original − θ0 accuracy) × 100 per DET: the share "
        "of what original-space training gained over the untrained point that the d numbers recover "
        "(– where training gained nothing).",
        "",
    ]
    return lines + _table(["task", *methods], rows)


def _stage2(out: Path, config: dict) -> tuple[list[str], list[str], dict]:
    results = {path.stem: _read(path) for path in sorted((out / "stage2").glob("*.json"))}
    if not results:
        return ["Stage 2 has not run yet."], ["Stage 3 has not run yet."], {}
    methods = config["methods"]
    rows, heldout_rel = [], []
    for label, data in _stage2_rows(results, config):
        rel = [data["optimise"][m]["relative"] for m in methods]
        if data["heldout"]:
            heldout_rel.append(rel)
        rows.append(
            [
                label,
                *(
                    f"{_pct(r)} ({data['optimise'][m]['metric']:.3f} / {data['original'][m]:.3f})"
                    for r, m in zip(rel, methods, strict=True)
                ),
                _pct(_mean(rel)),
                _acc(_mean(list(data.get("initial", {}).values()))),
            ]
        )
    summary = {}
    if heldout_rel:
        columns = list(zip(*heldout_rel, strict=True))
        summary["heldout_optimisation"] = _mean([v for row in heldout_rel for v in row])
        rows.append(
            [
                "**held-out average**",
                *(_pct(_mean(list(c))) for c in columns),
                f"**{_pct(summary['heldout_optimisation'])}**",
                "",
            ]
        )
    stage2 = [
        "Relative performance (%) = subspace accuracy / original-space accuracy × 100 on the same test "
        "examples (cells: relative (subspace / original)). θ0 acc = mean accuracy of the DETs' untrained "
        "initial points (the label-prototype head's zero-shot accuracy): the floor a solution must beat.",
        "",
    ]
    stage2 += _table(["task", *methods, "avg", "θ0 acc"], rows)
    stage2 += ["", *_recovered_gain(results, methods, config)]

    pairs: dict[tuple[str, str], list[float]] = {}
    for data in results.values():
        if not data["heldout"] or data["transfer"]["relative"] is None:
            continue
        matrix = data["transfer"]
        for i, source in enumerate(matrix["sources"]):
            for j, target in enumerate(matrix["targets"]):
                if source != target:
                    pairs.setdefault((source, target), []).append(matrix["relative"][i][j])
    if pairs:
        header = ["source \\ target", *methods]
        table_rows = [
            [s, *("–" if s == t else _pct(_mean(pairs.get((s, t), []))) for t in methods)] for s in methods
        ]
        summary["transfer"] = _mean([v for values in pairs.values() for v in values])
        stage3 = [
            "Zero-shot transfer on the held-out tasks: z found through the source DET, decoded by the "
            "target DET; relative performance (%) averaged over tasks.",
            "",
        ]
        stage3 += _table(header, table_rows)
        stage3 += ["", f"Average over all off-diagonal pairs: **{_pct(summary['transfer'])} %**."]
        if FULL in methods:
            summary["from_full"] = _mean([v for (s, t), vs in pairs.items() if s == FULL for v in vs])
            summary["to_full"] = _mean([v for (s, t), vs in pairs.items() if t == FULL for v in vs])
            stage3 += [
                "",
                "Stage 5, full fine-tuning as a DET (through its structured projection): solutions found "
                f"through full fine-tuning transfer to the other DETs at **{_pct(summary['from_full'])} %**; "
                f"the other DETs' solutions decoded as full fine-tuning reach **{_pct(summary['to_full'])} %**.",
            ]
    else:
        stage3 = ["No held-out transfer results yet."]
    return stage2, stage3, summary


def write_report(out: str | Path) -> Path:
    """Write ``<out>/report.md`` from the stage outputs present; returns its path."""
    out = Path(out)
    config = _read(out / "config.json")
    timings = _read(out / "timings.json") or {}
    lines = [
        f"# deltaspace study `{config['name']}`",
        "",
        f"Model **{Path(config['model']).name}**; DETs {', '.join(config['methods'])}; source tasks "
        f"{', '.join(map(slug, config['source_tasks']))}; held-out tasks "
        f"{', '.join(map(slug, config['heldout_tasks'])) or '–'}; "
        f"seed {config['seed']}. Regenerate with `deltaspace study {out / 'config.json'}`.",
        "",
    ]

    lines += [
        "## Original space (each DET trained alone, label-prototype head)",
        "",
        "Test accuracy of the sweep runs.",
        "",
    ]
    lines += _original_space(out, config)
    lines += ["", "## Stage 1: subspace approximation", "", *_fit(out)]

    stage2, stage3, summary = _stage2(out, config)
    lines += ["", "## Stage 2: optimisation inside the subspace (only d numbers trained)", "", *stage2]
    lines += ["", "## Stage 3: transfer across DETs", "", *stage3]

    landscape = _read(out / "landscape.json")
    lines += ["", "## Stage 4: landscape", ""]
    if landscape is None:
        lines.append("Stage 4 has not run yet.")
    else:
        lines += [
            f"Task {landscape['task']}, the plane through its DETs' codes, a "
            f"{len(landscape['a'])}×{len(landscape['b'])} grid. Fraction of the grid where every DET "
            f"reaches {landscape['threshold']:.0f} % of its original-space accuracy: "
            f"**{100 * landscape['shared_fraction']:.1f} %**.",
            "",
            "![landscape](landscape.png)",
        ]

    lines += ["", "## Compared with the paper", ""]
    lines += _table(
        ["quantity", "this study", "paper (multi-task, T5-base, d = 100)"],
        [
            [
                "subspace optimisation, held-out tasks (avg %)",
                _pct(summary.get("heldout_optimisation")),
                f"{PAPER_HELDOUT_OPTIMISATION}",
            ],
            [
                "transfer across DETs, held-out tasks (avg %)",
                _pct(summary.get("transfer")),
                f"{PAPER_TRANSFER}",
            ],
        ],
    )
    intrinsic = sorted((out / "intrinsic").glob("*.json")) if (out / "intrinsic").is_dir() else []
    if intrinsic:
        lines += [
            "",
            f"Stage 6: {len(intrinsic)} intrinsic deltas (d numbers + a hash-checked reference to the "
            "bundle) are in `intrinsic/`.",
        ]
    if timings:
        lines += ["", "## Time per stage", ""]
        lines += _table(["stage", "seconds"], [[k, f"{v:.0f}"] for k, v in timings.items()])
    path = out / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path
