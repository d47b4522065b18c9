"""report.md of a study: every table is computed from the JSON files the stages wrote.

The headline is *gain recovered over θ0*, pooled over tasks, with a paired bootstrap 95 % interval
(:mod:`deltaspace.subspace.gain`), for the learned subspace beside the random and span controls run
through the same stage-2 optimiser, steps and d. Relative performance, the paper's measure, is the
second table: with our label-prototype head θ0 already scores 0.3–0.7, so relative numbers start at
60–85 % before any training.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from deltaspace.io import write_text_atomic
from deltaspace.study.records import LEARNED, Stage2Record, bundle_path
from deltaspace.subspace.code_geometry import CodeGeometry, code_geometry
from deltaspace.subspace.gain import GainCell, bootstrap_difference, bootstrap_interval, pooled_gain
from deltaspace.train.sweep import slug

# The paper's multi-task averages (Yi et al., 2022, Tables 3 and 4; T5-base, 60 source tasks, d = 100).
PAPER_HELDOUT_OPTIMISATION = 88.7
PAPER_TRANSFER = 84.7
FULL = "full"  # the full fine-tuning preset
SUBSPACE_LABELS = {LEARNED: "learned (stage 1)", "random": "random control", "span": "span control"}


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _pct(value: float | None) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.1f}"


def _acc(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(kept)) if kept else None


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def pooled(cells: list[GainCell]) -> tuple[float | None, tuple[float, float] | None]:
    """Pooled gain recovered and its bootstrap 95 % interval."""
    return pooled_gain(cells), bootstrap_interval(cells)


def _example_counts(counts: list[int]) -> str:
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"


def _with_interval(value: float | None, interval: tuple[float, float] | None) -> str:
    if value is None:
        return "–"
    if interval is None:
        return _pct(value)
    return f"{_pct(value)} [{_pct(interval[0])}, {_pct(interval[1])}]"


def load_records(out: Path, config: dict) -> list[Stage2Record]:
    """The finished stage-2 records, in report order (the configured stage-2 tasks first)."""
    records = {
        path.stem: Stage2Record.from_dict(_read(path)) for path in sorted((out / "stage2").glob("*.json"))
    }
    order = [slug(t) for t in (config.get("optimise_tasks") or [])]
    order += [slug(t) for t in config["heldout_tasks"] + config["source_tasks"]]
    ranked = [records[t] for t in dict.fromkeys(order) if t in records]
    return ranked + [r for name, r in records.items() if name not in order]


def _label(record: Stage2Record) -> str:
    return record.task + (" (held-out)" if record.heldout else " (source)")


# ------------------------------------------------------------------------------------------ sections
def run_results(runs: Path, tasks: list[str], methods: list[str], seed: int) -> dict[tuple[str, str], dict]:
    """``{(task, method): result.json}`` of the finished original-space runs of ``seed`` under ``runs``."""
    from deltaspace.train.result import run_path

    return {
        (task, method): json.loads(path.read_text())
        for task in tasks
        for method in methods
        if (path := run_path(runs, task, method, seed) / "result.json").is_file()
    }


def originals_beside_baselines(
    out: Path, found: dict[tuple[str, str], dict], tasks: list[tuple[str, str]], methods: list[str]
) -> list[str]:
    """Each task's original-space runs (``found``: :func:`run_results`; test accuracy on their own test
    examples) beside the training split's majority class and the same-budget probe (``<out>/baselines.json``),
    with each DET's trainable parameters and, where the runs' step counts differ, each run's steps.
    ``tasks``: (task, row label)."""
    from deltaspace.study.baselines import read_baselines

    baselines = read_baselines(out)
    if not found:
        return ["No finished original-space runs yet."]
    steps = {data["steps"] for data in found.values()}
    rows, beats, below = [], 0, []
    for task, label in tasks:
        known = baselines.get(slug(task), {})
        probe = known.get("probe")
        cells = []
        for method in methods:
            data = found.get((task, method))
            if data is None:
                cells.append("–")
                continue
            score = data["test"]["accuracy"]
            cells.append(_acc(score) + (f" ({data['steps']} steps)" if len(steps) > 1 else ""))
            if probe is not None:
                beats += score > probe
                below += [f"{slug(task)} {method}"] if score <= probe else []
        rows.append([label, _acc(known.get("majority")), _acc(probe), *cells])
    params = []
    for method in methods:
        hit = [data for (_, m), data in found.items() if m == method]
        params.append(f"{hit[0]['trainable_params']:,}" if hit else "–")
    rows.append(["trainable params", "", "", *params])
    if baselines:
        tally = f"Runs above the probe: {beats} of {len(found)}" + (
            f" (at or below it: {', '.join(below)})." if 0 < len(below) <= 12 else "."
        )
    else:
        tally = "The baselines are written by the report stage (`--stages report`)."
    every = f" Every run took {steps.pop()} optimizer steps." if len(steps) == 1 else ""
    return [
        "Test accuracy of the original-space runs on their own test examples (the sweep's), beside the "
        "training split's majority class and the same-budget frozen-embedding probe (logistic regression, "
        f"C chosen on validation) on the same examples.{every} {tally}",
        "",
        *_table(["task", "majority", "probe", *methods], rows),
    ]


def _original_space(out: Path, config: dict) -> list[str]:
    from deltaspace.study.config import StudyConfig

    runs = StudyConfig(**{**config, "out": str(out)}).runs_dir
    fixed = config.get("heldout_mode", "fixed") == "fixed"
    tasks = [
        (task, slug(task) + (" (held-out)" if fixed and task in config["heldout_tasks"] else ""))
        for task in config["source_tasks"] + config["heldout_tasks"]
    ]
    found = run_results(runs, [task for task, _ in tasks], config["methods"], config.get("seed", 0))
    lines = originals_beside_baselines(out, found, tasks, config["methods"])
    return [*lines, "", *_stage2_budget([data["steps"] for data in found.values()], config)]


def _stage2_budget(steps: list[int], config: dict) -> list[str]:
    """Issue 19: stage 2 never gets more optimizer steps than the originals (``steps``) had, or the report
    says how many more."""
    optimise, train = config.get("optimise") or {}, config.get("train") or {}
    if not steps or "steps" not in optimise:
        return []
    fewest, stage2 = min(steps), optimise["steps"]
    budget = (
        f"Stage 2 takes {stage2} optimizer steps of {config.get('batch_size', '?')} examples; the originals "
        f"took {fewest}" + (f"–{max(steps)}" if max(steps) != fewest else "") + f" steps of "
        f"{train.get('batch_size', '?')}"
    )
    if stage2 > fewest:
        return [budget + f": **stage 2 gets {stage2 - fewest} more steps than the shortest original**."]
    return [budget + ": stage 2 never gets more steps than an original had."]


def _fit(out: Path) -> list[str]:
    fits = [_read(path) for path in sorted(out.glob("subspace*/**/fit.json"))]
    fits = [f for f in fits if f is not None]
    if not fits:
        return ["Stage 1 has not run yet."]
    first = fits[0]
    cfg = first["config"]
    closed = first.get("closed_form") or {}
    start = (
        f"the exact closed-form start (not the paper's: k = {closed.get('basis_dim')} solution directions shared "
        "by every DET"
        + (
            f", {closed['gradient_dim']} source-task descent directions at θ0"
            if closed.get("gradient_dim")
            else ""
        )
        + ", the rest random)"
        if cfg.get("init") == "closed_form"
        else "the paper's random start"
    )
    per_step = [f["seconds_per_step"] for f in fits if f.get("seconds_per_step")]
    steps = f"{cfg['steps']} joint-fit steps"
    ran = [f for f in fits if f.get("steps_run") is not None]
    if cfg["steps"] and ran and cfg.get("eval_every"):  # validated: the steps run and the state kept
        kept = "the last state kept" if cfg.get("keep") == "last" else "the best kept"
        course = ", ".join(f"{f['steps_run']} run, best at {f['best_step']}" for f in ran)
        patience = f", patience {cfg['patience']}" if cfg.get("patience") else ""
        steps = (
            f"at most {cfg['steps']} joint-fit steps ({course}, {kept}; validation every {cfg['eval_every']}"
            f"{patience})"
        )
    if cfg["steps"]:
        recon = (
            "all source tasks reconstructed every step"
            if cfg.get("recon_all_tasks", True)
            else "one task reconstructed per step"
        )
        per_step_dets = f", {cfg['members_per_step']} DETs per step" if cfg.get("members_per_step") else ""
        steps = f"then {steps} ({cfg['optimizer']}, lr {cfg['lr']:g}, {recon}{per_step_dets})"
    else:  # only what ran: no joint-fit settings for a fit that did not train
        steps = "no joint fit"
    lines = [
        f"Intrinsic dimension d = {cfg['dim']}; {start}, {steps}; "
        f"{len(fits)} subspace(s), {sum(f['seconds'] for f in fits):.0f} s in all"
        + (f", {np.mean(per_step):.2f} s per joint-fit step" if per_step else "")
        + ".",
        "",
    ]
    if len(fits) == 1:
        lines[0] += f" Source tasks: {', '.join(map(slug, first['source_tasks']))}."
        checks = first.get("validation") or []
        if cfg["steps"] and checks:  # the curve the kept state was chosen on (or, keeping the last, measured)
            metric = cfg.get("metric", "accuracy")
            curve = ", ".join(f"{c['score']:.4f} (step {c['step']})" for c in checks)
            lines[0] += f" Source-task validation ({metric}): {curve}."
    rows = []
    for name, dim in first["dims"].items():
        errors = [e for f in fits for e in f["reconstruction_error"].get(name, {}).values()]
        kinds = first.get("projection_kinds", {}).get(name, {})
        rows.append(
            [
                name,
                f"{dim:,}",
                kinds.get("up", "?") if isinstance(kinds, dict) else str(kinds),
                f"{first['projection_memory_bytes'].get(name, 0) / 2**20:.2f}",
                _pct(100 * _mean(errors)) if errors else "–",
                _pct(100 * max(errors)) if errors else "–",
            ]
        )
    return lines + _table(
        [
            "DET",
            "D (parameters)",
            "up-projection",
            "projection memory (MiB)",
            "mean recon. error (%)",
            "max recon. error (%)",
        ],
        rows,
    )


def paired_difference(base: Sequence[GainCell], other: Sequence[GainCell], *, resamples: int = 2000) -> str:
    """``other``'s pooled gain minus ``base``'s with its paired interval (the same tasks' test examples),
    in bold where the interval excludes 0."""
    first, second = pooled_gain(base), pooled_gain(other)
    if first is None or second is None:
        return "–"
    interval = bootstrap_difference(base, other, resamples=resamples)
    text = _with_interval(second - first, interval)
    return f"**{text}**" if interval and (interval[0] > 0 or interval[1] < 0) else text


def _headline(records: list[Stage2Record], methods: list[str]) -> tuple[list[str], dict[str, Any]]:
    heldout = [r for r in records if r.heldout]
    if not heldout:
        return ["No held-out stage-2 results yet."], {}
    kinds = [k for k in (LEARNED, "random", "span") if all(k in r.runs for r in heldout)]
    controls = kinds[1:]
    summary: dict[str, Any] = {}
    rows = []
    for det in [*methods, None]:
        cells, chosen = [], {}
        for kind in kinds:
            chosen[kind] = [r.gain_cell(kind, d) for r in heldout for d in ([det] if det else methods)]
            value, interval = pooled(chosen[kind])
            cells.append(_with_interval(value, interval))
            if det is None:
                summary[kind] = (value, interval)
        # the test of a learned subspace: above each control by more than the paired interval
        cells += [paired_difference(chosen[control], chosen[LEARNED]) for control in controls]
        rows.append([det or "**all DETs**", *cells])
    n_examples = sorted({len(r.gold) for r in heldout})
    lines = [
        "Gain recovered (%) = Σ (subspace − θ0 accuracy) / Σ (original − θ0 accuracy) × 100, pooled over "
        f"the {len(heldout)} held-out task(s) ({_example_counts(n_examples)} test examples each), with a "
        "paired bootstrap 95 % interval. The controls run through the same stage-2 optimiser, steps and d"
        + (
            "; learned − control: the difference in points, paired on the same test examples (bold where its "
            "interval excludes 0)."
            if controls
            else "."
        ),
        "",
        *_table(["DET", *(SUBSPACE_LABELS[k] for k in kinds), *(f"learned − {k}" for k in controls)], rows),
    ]
    transfer = [c for r in heldout for c in r.transfer_cells()]
    if transfer:
        summary["transfer"] = pooled(transfer)
        lines += [
            "",
            "Zero-shot transfer (a code found through one DET, decoded by another; all off-diagonal pairs): "
            f"gain recovered **{_with_interval(*summary['transfer'])} %**.",
        ]
    return lines, summary


def _per_task(records: list[Stage2Record], methods: list[str]) -> list[str]:
    rows = []
    for record in records:
        cells = []
        for det in methods:
            cell = record.gain_cell(LEARNED, det)
            value = pooled_gain([cell])
            run = record.runs[LEARNED][det]
            cells.append(
                f"{_pct(value)} (val {_acc(run.initial_metric)} → {_acc(run.selection_metric)} at step {run.best_step})"
            )
        rows.append([_label(record), *cells])
    return [
        "Per task (learned subspace): gain recovered (%) on the test examples, and the validation accuracy "
        "at the starting code → at the step stage 2 chose (step 0 = nothing better than the start was "
        "found; – where training gained nothing).",
        "",
        *_table(["task", *methods], rows),
    ]


def _relative(records: list[Stage2Record], methods: list[str]) -> tuple[list[str], float | None]:
    rows, heldout_rel = [], []
    for record in records:
        rel, cells = [], []
        for det in methods:
            run = record.runs[LEARNED][det]
            original = record.accuracy(record.original[det])
            value = 100 * run.metric / original if original > 0 else None
            rel.append(value)
            cells.append(f"{_pct(value)} ({run.metric:.3f} / {original:.3f})")
        if record.heldout:
            heldout_rel.append(rel)
        theta0 = _mean([record.accuracy(record.initial[d]) for d in methods])
        rows.append([_label(record), *cells, _pct(_mean(rel)), _acc(theta0)])
    average = _mean([v for row in heldout_rel for v in row]) if heldout_rel else None
    if heldout_rel:
        columns = list(zip(*heldout_rel, strict=True))
        rows.append(
            ["**held-out average**", *(_pct(_mean(list(c))) for c in columns), f"**{_pct(average)}**", ""]
        )
    return [
        "Relative performance (%) = subspace accuracy / original-space accuracy × 100 on the same test "
        "examples (cells: relative (subspace / original)). θ0 acc = mean "
        "accuracy of the untrained initial points (the label-prototype head's zero-shot accuracy).",
        "",
        *_table(["task", *methods, "avg", "θ0 acc"], rows),
    ], average


def _transfer(records: list[Stage2Record], methods: list[str]) -> tuple[list[str], dict[str, float | None]]:
    pairs: dict[tuple[str, str], list[float]] = {}
    for record in records:
        matrix = record.transfer
        if not record.heldout or not matrix or matrix.get("relative") is None:
            continue
        for i, source in enumerate(matrix["sources"]):
            for j, target in enumerate(matrix["targets"]):
                if source != target:
                    pairs.setdefault((source, target), []).append(matrix["relative"][i][j])
    if not pairs:
        return ["No held-out transfer results yet."], {}
    summary = {"transfer_relative": _mean([v for values in pairs.values() for v in values])}
    lines = [
        "Relative performance (%) of zero-shot transfer on the held-out tasks: z found through the source "
        "DET, decoded by the target DET, averaged over tasks.",
        "",
        *_table(
            ["source \\ target", *methods],
            [[s, *("–" if s == t else _pct(_mean(pairs.get((s, t), []))) for t in methods)] for s in methods],
        ),
        "",
        f"Average over all off-diagonal pairs: {_pct(summary['transfer_relative'])} %.",
    ]
    lines += _shared_part([r for r in records if r.heldout])
    lines += _one_code([r for r in records if r.heldout], methods)
    if FULL in methods:
        heldout = [r for r in records if r.heldout]
        cells = [c for r in heldout for c in r.transfer_cells()]
        from_full = pooled_gain([c for c in cells if c.member.startswith(f"{FULL}->")])
        to_full = pooled_gain([c for c in cells if c.member.endswith(f"->{FULL}")])
        lines += [
            "",
            "Stage 5, full fine-tuning as a DET (through its structured projection): solutions found through "
            f"full fine-tuning recover **{_pct(from_full)} %** of the other DETs' gain when decoded by them; "
            f"the other DETs' solutions decoded as full fine-tuning recover **{_pct(to_full)} %** of its gain.",
        ]
    return lines, summary


def _one_code(heldout: list[Stage2Record], methods: list[str]) -> list[str]:
    """Each DET at its own code, at one code trained through every DET at once, and at the others' codes:
    whether the subspace holds codes that serve every DET, which bounds what transfer can reach."""
    records = [r for r in heldout if r.shared]
    if not records:
        return []

    kinds = (
        [r.gain_cell(LEARNED, m) for r in records for m in methods],  # member: the DET
        [c for r in records for c in r.shared_cells()],  # member: the DET
        [c for r in records for c in r.transfer_cells()],  # member: "source->target"
    )
    rows = []
    for det in [*methods, None]:  # None: every DET pooled
        picked = [[c for c in cells if det in (None, c.member.split("->")[-1])] for cells in kinds]
        rows.append([det or "**all DETs**", *(_with_interval(*pooled(cells)) for cells in picked)])
    return [
        "",
        "One code trained through every DET at once (the mean of their task losses; stage 2's steps, rate, "
        "batches and start; chosen on their mean validation accuracy), scored through each, beside each DET's "
        f"own code and the other DETs' codes (gain recovered, %, pooled over {len(records)} held-out task(s)). "
        "Where one code serves every DET about as well as its own, the subspace holds common solutions and "
        "transfer fails because a code trained through one DET is specific to it.",
        "",
        *_table(["DET", "own code", "one code for all", "the others' codes (transfer)"], rows),
    ]


def shared_coordinates(record: Stage2Record) -> int:
    """How many leading code coordinates every DET shares in the record's subspace (stored with the shared
    transfer; records written before it was stored: one per source task, the closed form's k)."""
    shared = record.transfer_shared or {}
    dim = min(len(run.z) for run in record.runs[LEARNED].values())
    return int(shared.get("coordinates") or min(len(record.source_tasks), dim))


def code_agreement(records: list[Stage2Record]) -> tuple[float, int, float, int] | None:
    """Mean cosine between the codes that different DETs found for the same task, cut to the shared
    coordinates, and the same for one DET's codes of different tasks (the baseline: codes that share nothing
    but the subspace): ``(same task, pairs, same DET, pairs)``; None without two DETs or two codes."""

    def cosine(a: np.ndarray, b: np.ndarray) -> float | None:
        norm = float(np.linalg.norm(a) * np.linalg.norm(b))
        return float(a @ b) / norm if norm > 0 else None

    codes = {
        r.task: {det: np.asarray(run.z[: shared_coordinates(r)]) for det, run in r.runs[LEARNED].items()}
        for r in records
        if r.transfer_shared
    }
    same = [cosine(by_det[a], by_det[b]) for by_det in codes.values() for a, b in combinations(by_det, 2)]
    across = [
        cosine(codes[s][det], codes[t][det])
        for s, t in combinations(codes, 2)
        for det in codes[s]
        if det in codes[t] and len(codes[s][det]) == len(codes[t][det])
    ]
    same = [c for c in same if c is not None]
    across = [c for c in across if c is not None]
    if not same:
        return None
    return float(np.mean(same)), len(same), (float(np.mean(across)) if across else float("nan")), len(across)


def _shared_part(heldout: list[Stage2Record]) -> list[str]:
    """Which part of a code carries across DETs: every code cut to the shared source-solution coordinates."""
    with_shared = [r for r in heldout if r.transfer_shared]
    if not with_shared:
        return []
    own = pooled([c for r in with_shared for c in r.matrix_cells(r.transfer_shared, diagonal=True)])
    off = pooled([c for r in with_shared for c in r.matrix_cells(r.transfer_shared, diagonal=False)])
    full_own = pooled([c for r in with_shared for c in r.matrix_cells(r.transfer, diagonal=True)])
    full_off = pooled([c for r in with_shared for c in r.transfer_cells()])
    shared = with_shared[0].transfer_shared
    rows = [
        ["the whole code", _with_interval(*full_own), _with_interval(*full_off)],
        ["shared coordinates only", _with_interval(*own), _with_interval(*off)],
    ]
    return [
        "",
        "Which part of a code carries across DETs: each stage-2 code kept whole, or cut to the coordinates "
        "every DET shares by construction (the source solutions' directions; the per-DET descent and random "
        f"directions set to 0), decoded by its own DET and by the others (gain recovered, %, pooled over "
        f"{len(with_shared)} held-out task(s); {len(shared['sources'])} DETs).",
        "",
        *_table(["code", "own DET", "other DETs (transfer)"], rows),
        *_agreement_lines(with_shared),
    ]


def _agreement_lines(records: list[Stage2Record]) -> list[str]:
    agreement = code_agreement(records)
    if agreement is None:
        return []
    same, pairs, across, other_pairs = agreement
    baseline = f"; one DET's codes of different tasks: {across:.2f} over {other_pairs}" if other_pairs else ""
    return [
        "",
        "How alike the codes that different DETs find for the same task are, on those shared coordinates: "
        f"mean cosine **{same:.2f}** over {pairs} pairs of DETs{baseline} (1: the same combination of source "
        "directions; 0: unrelated).",
    ]


def code_places(
    out: Path, records: list[Stage2Record], heldout_mode: str = "fixed"
) -> tuple[dict[str, list[CodeGeometry]], list[CodeGeometry]]:
    """Where each DET's learned stage-2 codes of the held-out tasks lie against the source codes stage 1 was
    fitted on (:mod:`deltaspace.subspace.code_geometry`), per DET; and the source codes themselves, placed
    against themselves (their lengths, for scale)."""
    from deltaspace.subspace.bundle import read_codes

    sources: dict[Path, dict] = {}
    places: dict[str, list[CodeGeometry]] = {}
    for record in (r for r in records if r.heldout):
        path = bundle_path(out, heldout_mode, record.task)
        if path not in sources:
            sources[path] = read_codes(path) if (path / "bundle.json").is_file() else {}
        for det, run in record.runs[LEARNED].items():
            codes = sources[path].get(det)
            if codes:
                places.setdefault(det, []).append(code_geometry(run.z, [z.tolist() for z in codes.values()]))
    vertices = [
        z.tolist() for codes in sources.values() for by_task in codes.values() for z in by_task.values()
    ]
    return places, [code_geometry(z, [z]) for z in vertices]


def mean_geometry(found: list[CodeGeometry]) -> dict[str, float]:
    return {key: float(np.mean([getattr(g, key) for g in found])) for key in found[0].__dataclass_fields__}


def geometry_cells(mean: dict[str, float]) -> list[str]:
    """Length, % outside the span, weight sum and negative weight, as the reports print them."""
    return [
        f"{mean['norm']:.2f}",
        f"{100 * mean['outside_span']:.0f}",
        f"{round(mean['weight_sum'], 2) + 0.0:.2f}",  # + 0.0: no "-0.00"
        f"{round(mean['negative_weight'], 2) + 0.0:.2f}",
    ]


GEOMETRY_HEADER = ["length", "outside the span (%)", "weight sum", "negative weight"]


def _code_places(
    out: Path, config: dict[str, Any], records: list[Stage2Record], methods: list[str]
) -> list[str]:
    places, vertices = code_places(out, records, config.get("heldout_mode", "fixed"))
    if not places:
        return []
    heldout = [r for r in records if r.heldout]
    rows = [[det, *geometry_cells(mean_geometry(places[det]))] for det in methods if det in places]
    rows.append(["**all DETs**", *geometry_cells(mean_geometry([g for f in places.values() for g in f]))])
    rows.append(["the source codes (for scale)", *geometry_cells(mean_geometry(vertices))])
    return [
        "",
        "Where the held-out tasks' stage-2 codes lie against the source codes the subspace was fitted on "
        f"(means over {len(heldout)} task(s)): the share of a code's length outside the source codes' span, "
        "and the weights that combine the source codes into its part inside the span. The joint fit trains "
        "the subspace at the source codes, and a mixture of them (weights ≥ 0 summing to 1, or less with θ0 as "
        "a vertex) decodes to the same mixture of source solutions in every DET: 0 % outside the span and "
        "negative weight 0 is that region; anything else is read by each DET its own way.",
        "",
        *_table(["DET", *GEOMETRY_HEADER], rows),
    ]


def _landscape(out: Path) -> list[str]:
    landscape = _read(out / "landscape.json")
    if landscape is None:
        return ["Stage 4 has not run yet."]
    anchors = ", ".join(landscape["plane"]["anchors"])
    return [
        f"Task {landscape['task']} (validation examples), the {landscape['plane']['kind']} plane through "
        f"{anchors}, a {len(landscape['a'])}×{len(landscape['b'])} grid. Fraction of the grid where every "
        "DET reaches "
        f"{landscape['threshold']:.0f} % of its original-space accuracy: "
        f"**{100 * landscape['shared_fraction']:.1f} %**.",
        "",
        "![landscape](landscape.png)",
    ]


def _paper(summary: dict[str, Any], relative: float | None, transfer_relative: float | None) -> list[str]:
    learned = summary.get(LEARNED, (None, None))
    random = summary.get("random", (None, None))
    transfer = summary.get("transfer", (None, None))
    return [
        "The paper's θ0 (a randomly initialised DET on T5-base doing generation) scores about zero, so its "
        "relative performance is in effect gain recovered; ours starts from a zero-shot head, so gain "
        "recovered is the comparable figure (our relative performance is shown for completeness).",
        "",
        *_table(
            [
                "quantity",
                "this study: gain recovered (95 % CI)",
                "this study: relative",
                "paper (multi-task, d = 100)",
            ],
            [
                [
                    "subspace optimisation, held-out tasks (%)",
                    _with_interval(*learned),
                    _pct(relative),
                    f"{PAPER_HELDOUT_OPTIMISATION}",
                ],
                ["random-subspace control, same d and steps (%)", _with_interval(*random), "", "–"],
                [
                    "transfer across DETs, held-out tasks (%)",
                    _with_interval(*transfer),
                    _pct(transfer_relative),
                    f"{PAPER_TRANSFER}",
                ],
            ],
        ),
    ]


WORKER_KEYS = ("workers", "threads_per_worker")  # timings.json: how the stages ran, beside their seconds


def _stage2_start(optimise: dict[str, Any]) -> str:
    if optimise.get("region", "free") == "hull":
        return "codes restricted to mixtures of θ0 and the DET's source codes (region hull; start 0.9 on θ0)"
    return f"start {optimise.get('init', '?')}"


def _precision(config: dict[str, Any]) -> str:
    """A note for the header when every stage ran under bfloat16 autocast."""
    return (
        "; every stage under **bfloat16 autocast**" if config.get("mixed_precision", "no") == "bf16" else ""
    )


def _workers(timings: dict[str, float]) -> str:
    workers, threads = int(timings["workers"]), int(timings.get("threads_per_worker", 1))
    plural = "es" if workers > 1 else ""
    return f"{workers} worker process{plural} x {threads} thread{'s' if threads > 1 else ''} each (the last call's)"


def time_section(out: Path, note: str = "") -> list[str]:
    """ "## Time" of a setting made of several studies: minutes per stage over all of them."""
    path = out / "timings.json"
    if not path.is_file():
        return []
    timings = json.loads(path.read_text())
    stages = {k: v for k, v in timings.items() if k not in WORKER_KEYS}
    rows = [[stage, f"{seconds / 60:.1f}"] for stage, seconds in stages.items()]
    total = f"{sum(stages.values()) / 60:.1f} min in all" + (f" ({note})" if note else "")
    workers = f"{_workers(timings)}; " if "workers" in timings else ""
    return ["", "## Time", "", *_table(["stage", "minutes"], rows), "", f"{workers}{total}."]


def write_report(out: str | Path) -> Path:
    """Write ``<out>/report.md`` from the stage outputs present; returns its path."""
    out = Path(out)
    config = _read(out / "config.json")
    timings = _read(out / "timings.json") or {}
    methods = config["methods"]
    records = load_records(out, config)
    optimise = config.get("optimise") or {}
    mode = config.get("heldout_mode", "fixed")
    if mode == "leave_one_out":
        tasks = "tasks " + ", ".join(map(slug, config["source_tasks"] + config["heldout_tasks"]))
        tasks += (
            "; **leave-one-out**: every task held out in turn, solved in a subspace fitted on all the others"
        )
    else:
        tasks = (
            f"source tasks {', '.join(map(slug, config['source_tasks']))}; held-out tasks "
            f"{', '.join(map(slug, config['heldout_tasks'])) or '–'}"
        )
    lines = [
        f"# deltaspace study `{config['name']}`",
        "",
        f"Model **{Path(config['model']).name}**; DETs {', '.join(methods)}; {tasks}"
        + f"; seed {config['seed']}{_precision(config)}. Stage 2: {optimise.get('steps', '?')} steps of "
        f"{optimise.get('optimizer', '?')} (lr {optimise.get('lr', '?')}), {_stage2_start(optimise)}. "
        f"Regenerate with `deltaspace study {out / 'config.json'}`.",
        "",
        "## Headline: how much of training's gain the subspace recovers",
        "",
    ]
    headline, summary = _headline(records, methods)
    lines += headline
    lines += [
        "",
        "## Original space (each DET trained alone, label-prototype head)",
        "",
    ]
    lines += _original_space(out, config)
    lines += ["", "## Stage 1: subspace approximation", "", *_fit(out)]
    lines += ["", "## Stage 2: optimisation inside the subspace (only d numbers trained)", ""]
    if records:
        relative_lines, relative = _relative(records, methods)
        lines += [*_per_task(records, methods), "", *relative_lines]
    else:
        relative = None
        lines.append("Stage 2 has not run yet.")
    transfer_lines, transfer_summary = _transfer(records, methods)
    lines += ["", "## Stage 3: transfer across DETs", "", *transfer_lines]
    lines += _code_places(out, config, records, methods)
    lines += ["", "## Stage 4: landscape", "", *_landscape(out)]
    lines += [
        "",
        "## Compared with the paper",
        "",
        *_paper(summary, relative, transfer_summary.get("transfer_relative")),
    ]
    intrinsic = sorted((out / "intrinsic").glob("*.json")) if (out / "intrinsic").is_dir() else []
    if intrinsic:
        lines += [
            "",
            f"Stage 6: {len(intrinsic)} intrinsic deltas (d numbers + a hash-checked reference to the "
            "bundle) are in `intrinsic/`.",
        ]
    if timings:
        lines += ["", "## Time per stage", ""]
        lines += _table(
            ["stage", "seconds"], [[k, f"{v:.0f}"] for k, v in timings.items() if k not in WORKER_KEYS]
        )
        if "workers" in timings:
            total = sum(v for k, v in timings.items() if k not in WORKER_KEYS) / 60
            lines += ["", f"{_workers(timings)}; {total:.1f} min in all."]
    path = out / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path
