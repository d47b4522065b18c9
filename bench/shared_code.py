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

import torch

from deltaspace.io import write_json_atomic, write_text_atomic
from deltaspace.study import load_study_config
from deltaspace.study.pipeline import StudyContext
from deltaspace.study.records import LEARNED, Stage2Record
from deltaspace.study.report import pooled
from deltaspace.subspace.evaluate import predictions
from deltaspace.subspace.gain import GainCell
from deltaspace.subspace.shared_code import optimise_shared, shared_summary
from deltaspace.train.result import slug

RESULTS = Path(__file__).parent / "results"


def _part(
    study: Path, task: str, trained: list[str], dets: list[str], context: StudyContext | None
) -> tuple[dict, StudyContext | None]:
    """The code trained through ``trained`` on ``task``, scored through every DET of ``dets``."""
    path = study / "shared_code" / "-".join(trained) / f"{slug(task)}.json"
    if path.is_file():
        part = json.loads(path.read_text())
        if set(dets) <= set(part["predictions"]):
            return part, context
    if context is None:  # only the DETs asked for: their members, solutions and memory
        config = load_study_config(str(study / "config.json"))
        context = StudyContext(dataclasses.replace(config, methods=dets))
    began = time.perf_counter()
    bundle = context.bundle(None)
    members = {m.name: m for m in context.members}
    batches = context.batches[task]
    results = optimise_shared([members[d] for d in trained], bundle, batches, context.config.optimise)
    part = {"task": task, "trained": trained, **shared_summary(results)}
    z = torch.tensor(part["z"])
    for name in dets:  # the DETs the code never saw: zero-shot, like stage 3's transfer
        if name not in part["predictions"]:
            with torch.no_grad():
                pred, _ = predictions(members[name], bundle.up(name)(z), batches.report_batches)
            part["predictions"][name] = pred.tolist()
    part["seconds"] = time.perf_counter() - began
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
    parser.add_argument(
        "--unseen",
        action="store_true",
        help="also train one code through every DET but one and score that one at it (3+ DETs)",
    )
    args = parser.parse_args()
    config = json.loads((args.study / "config.json").read_text())
    if config.get("heldout_mode", "fixed") != "fixed":
        raise SystemExit("error: this diagnostic reads a fixed-split study (one learned subspace)")
    tasks = args.tasks or config["heldout_tasks"]
    dets = args.dets or config["methods"]
    if len(dets) < 2 or not set(dets) <= set(config["methods"]):
        raise SystemExit(f"error: --dets takes 2 or more of the study's DETs {config['methods']}, got {dets}")
    if args.unseen and len(dets) < 3:
        raise SystemExit("error: --unseen trains through every DET but one: give 3 or more DETs")
    kinds = ["own", "shared", "transfer in"] + (["unseen"] if args.unseen else [])
    context = None
    cells: dict[str, dict[str, list[GainCell]]] = {det: {kind: [] for kind in kinds} for det in dets}
    steps = []
    for task in tasks:
        record = Stage2Record.from_dict(
            json.loads((args.study / "stage2" / f"{slug(task)}.json").read_text())
        )

        part, context = _part(args.study, task, dets, dets, context)
        steps.append(part["best_step"])
        for det in dets:
            cells[det]["own"].append(record.gain_cell(LEARNED, det))
            cells[det]["shared"].append(record.cell(det, part["predictions"][det]))
            sources = {f"{s}->{det}" for s in dets if s != det}
            cells[det]["transfer in"] += [c for c in record.transfer_cells() if c.member in sources]
            if args.unseen:  # a code trained through every DET but this one, scored through it
                others = [d for d in dets if d != det]
                unseen, context = _part(args.study, task, others, dets, context)
                cells[det]["unseen"].append(record.cell(det, unseen["predictions"][det]))
    rows = [[det, *(_row(cells[det][k]) for k in kinds)] for det in dets]
    pooled_cells = {kind: [c for det in dets for c in cells[det][kind]] for kind in kinds}
    rows.append(["**all DETs**", *(_row(pooled_cells[k]) for k in kinds)])
    summary = {
        "study": str(args.study),
        "tasks": tasks,
        "dets": dets,
        "stage2": config["optimise"],
        "best_steps": steps,
        "pooled": {kind: pooled(found) for kind, found in pooled_cells.items()},
        "per_det": {det: {k: pooled(v) for k, v in by_kind.items()} for det, by_kind in cells.items()},
    }
    name = args.study.name + ("" if dets == config["methods"] else "_" + "-".join(dets))
    write_json_atomic(RESULTS / f"shared_code_{name}.json", summary)
    headers = {
        "own": "own code",
        "shared": "one code for all",
        "transfer in": "the others' codes (transfer)",
        "unseen": "one code for the others (unseen DET)",
    }
    table = ["| DET | " + " | ".join(headers[k] for k in kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
    table += ["| " + " | ".join(row) + " |" for row in rows]
    command = f"python bench/shared_code.py {args.study}"
    command += "" if dets == config["methods"] else " --dets " + " ".join(dets)
    command += " --unseen" if args.unseen else ""
    text = (
        f"# One code for every DET: `{name}`'s held-out tasks\n\n"
        f"`{command}`: gain recovered over θ0 (%, pooled over {len(tasks)} held-out tasks, paired bootstrap "
        "95 % intervals) of each DET at its own stage-2 code, at one code trained through every DET at once "
        "(the mean of their losses; the study's stage-2 steps, rate, batches and start; selected on the "
        "DETs' mean validation accuracy), and at the other DETs' stage-2 codes (transfer)"
        + (
            "; with --unseen, at one code trained the same way through every DET but this one (zero-shot "
            "for it, like transfer)"
            if args.unseen
            else ""
        )
        + f". One code for all: chosen steps {steps}.\n\n"
        + "\n".join(table)
        + "\n"
    )
    write_text_atomic(RESULTS / f"shared_code_{name}.md", text)
    print(text)


if __name__ == "__main__":
    main()
