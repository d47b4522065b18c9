"""Does one code of a study's subspace serve every DET on a held-out task? The ceiling of transfer.

For each held-out task of a finished study, :func:`~deltaspace.subspace.shared_code.optimise_shared` trains
one code through every DET at once (the mean of their task losses; the study's stage-2 steps, rate, batches
and start) in the study's learned subspace, and each DET is scored at that code on the study's test
examples. Printed and written beside the study's own numbers, pooled gain recovered over θ0 per DET:

- own code: the DET's stage-2 code (the study's optimisation result);
- shared code: the one code trained through every DET;
- transfer in: the other DETs' stage-2 codes decoded by this DET (the study's transfer).

Shared ≈ own: the subspace holds codes that serve every DET, and single-DET stage 2 lands on codes that
serve only its own (transfer fails from where stage 2 ends, not from the subspace). Shared far below own:
no code of the subspace serves the DETs together. Resumable (one part per task under
``<study>/shared_code/``). Writes bench/results/shared_code_<study>.{json,md}.

    python bench/shared_code.py studies/full_suite [--tasks medmcqa_subject ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from deltaspace.io import write_json_atomic, write_text_atomic
from deltaspace.study import load_study_config
from deltaspace.study.pipeline import StudyContext
from deltaspace.study.records import LEARNED, Stage2Record
from deltaspace.study.report import pooled
from deltaspace.subspace.gain import GainCell
from deltaspace.subspace.shared_code import optimise_shared
from deltaspace.train.result import slug

RESULTS = Path(__file__).parent / "results"


def _part(
    study: Path, task: str, dets: list[str], context: StudyContext | None
) -> tuple[dict, StudyContext | None]:
    path = study / "shared_code" / "-".join(dets) / f"{slug(task)}.json"
    if path.is_file():
        return json.loads(path.read_text()), context
    if context is None:  # only the DETs asked for: their members, solutions and memory
        config = load_study_config(str(study / "config.json"))
        context = StudyContext(dataclasses.replace(config, methods=dets))
    began = time.perf_counter()
    results = optimise_shared(
        context.members, context.bundle(None), context.batches[task], context.config.optimise
    )
    first = next(iter(results.values()))
    part = {
        "task": task,
        "z": first.z.tolist(),
        "best_step": first.best_step,
        "selection_metric": first.selection_metric,
        "predictions": {name: r.predictions for name, r in results.items()},
        "seconds": time.perf_counter() - began,
    }
    write_json_atomic(path, part)
    return part, context


def _row(cells: list[GainCell]) -> str:
    value, interval = pooled(cells)
    if value is None:
        return "–"
    return f"{value:.1f} [{interval[0]:.1f}, {interval[1]:.1f}]" if interval else f"{value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="a finished study folder (config.json, subspace/, stage2/)")
    parser.add_argument("--tasks", nargs="*", help="held-out tasks (default: the study's)")
    parser.add_argument("--dets", nargs="*", help="the DETs that share the code (default: the study's)")
    args = parser.parse_args()
    config = json.loads((args.study / "config.json").read_text())
    if config.get("heldout_mode", "fixed") != "fixed":
        raise SystemExit("error: this diagnostic reads a fixed-split study (one learned subspace)")
    tasks = args.tasks or config["heldout_tasks"]
    dets = args.dets or config["methods"]
    if len(dets) < 2 or not set(dets) <= set(config["methods"]):
        raise SystemExit(f"error: --dets takes 2 or more of the study's DETs {config['methods']}, got {dets}")
    context = None
    own, shared, transfer_in = [], [], []
    per_det: dict[str, dict[str, list[GainCell]]] = {}
    steps = []
    for task in tasks:
        record = Stage2Record.from_dict(
            json.loads((args.study / "stage2" / f"{slug(task)}.json").read_text())
        )
        part, context = _part(args.study, task, dets, context)
        steps.append(part["best_step"])
        for det, predictions in part["predictions"].items():
            cells = {
                "own": [record.gain_cell(LEARNED, det)],
                "shared": [
                    GainCell(
                        task,
                        det,
                        record.correct(predictions),
                        record.correct(record.initial[det]),
                        record.correct(record.original[det]),
                    )
                ],
                "transfer in": [
                    c
                    for c in record.transfer_cells()
                    if c.member in {f"{s}->{det}" for s in dets if s != det}
                ],
            }
            for kind, found in cells.items():
                per_det.setdefault(det, {}).setdefault(kind, []).extend(found)
            own += cells["own"]
            shared += cells["shared"]
            transfer_in += cells["transfer in"]
    kinds = ("own", "shared", "transfer in")
    rows = [[det, *(_row(per_det[det][k]) for k in kinds)] for det in per_det]
    rows.append(["**all DETs**", _row(own), _row(shared), _row(transfer_in)])
    summary = {
        "study": str(args.study),
        "tasks": tasks,
        "dets": dets,
        "stage2": config["optimise"],
        "best_steps": steps,
        "pooled": {
            kind: pooled(cells)
            for kind, cells in (("own", own), ("shared", shared), ("transfer_in", transfer_in))
        },
        "per_det": {det: {k: pooled(v) for k, v in by_kind.items()} for det, by_kind in per_det.items()},
    }
    name = args.study.name + ("" if dets == config["methods"] else "_" + "-".join(dets))
    write_json_atomic(RESULTS / f"shared_code_{name}.json", summary)
    table = ["| DET | own code | shared code | transfer in |", "|---|---|---|---|"]
    table += ["| " + " | ".join(row) + " |" for row in rows]
    text = (
        f"# One code for every DET: `{name}`'s held-out tasks\n\n"
        f"`python bench/shared_code.py {args.study}{'' if dets == config['methods'] else ' --dets ' + ' '.join(dets)}`: gain recovered over θ0 (%, pooled over {len(tasks)} "
        "held-out tasks, paired bootstrap 95 % intervals) of each DET at its own stage-2 code, at one code "
        "trained through every DET at once (the mean of their losses; the study's stage-2 steps, rate, "
        "batches and start; selected on the DETs' mean validation accuracy), and at the other DETs' "
        f"stage-2 codes (transfer). Shared code's chosen steps: {steps}.\n\n" + "\n".join(table) + "\n"
    )
    write_text_atomic(RESULTS / f"shared_code_{name}.md", text)
    print(text)


if __name__ == "__main__":
    main()
