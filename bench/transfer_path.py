"""Does a free stage-2 code carry to the other DETs once it is shortened? Each held-out task's stage-2 codes of a
finished study, scaled by t (the line from θ0 to the code), decoded by their own DET and by the others.

A confound check for the fitted-region experiment (docs/study_full_suite_fit_hull.md): codes kept inside the
region are also short (length 0.67 against the free codes' 2.6), so positive transfer there could come from
staying near θ0 rather than from the region. At t ≈ 0.25 a free code is as short as a region code: if its
transfer is still negative, the direction (outside the region) is what the other DETs read differently.

    python bench/transfer_path.py studies/full_suite_fit 0.25,0.5 bench/results/transfer_path_full_suite_fit \
        studies/full_suite_fit_hull

Writes <out>.json (per task and t: the transfer matrix's predictions, resumable) and <out>.md (gain
recovered over θ0, own code and transfer, pooled over the held-out tasks with paired bootstrap intervals; t = 1
is the study's own stage 3); with a second study (sharing the held-out tasks' test examples), that study's
own-code and transfer gain minus each t's, paired.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from deltaspace.io import write_json_atomic, write_text_atomic
from deltaspace.study.config import load_study_config
from deltaspace.study.pipeline import StudyContext
from deltaspace.study.records import LEARNED
from deltaspace.study.report import _with_interval, load_records, pooled
from deltaspace.subspace import transfer
from deltaspace.subspace.gain import bootstrap_difference, pooled_gain
from deltaspace.train.result import slug


def main(study: str, scales: str, out: str, other: str | None = None) -> None:
    torch.set_num_threads(1)  # beside a running study
    config = load_study_config(f"{study}/config.json")
    records = [r for r in load_records(Path(study), config.to_dict()) if r.heldout]
    done_path = Path(f"{out}.json")
    done = json.loads(done_path.read_text()) if done_path.is_file() else {}
    context = None
    factors = [float(t) for t in scales.split(",")]
    for record in records:
        codes = {det: np.asarray(run.z) for det, run in record.runs[LEARNED].items()}
        for t in factors:
            key = f"{record.task}@{t}"
            if key in done:
                continue
            context = context or StudyContext(config)
            task = next(name for name in config.stage2_tasks if slug(name) == record.task)
            matrix = transfer(
                context.members,
                context.bundle(task),
                {det: torch.tensor(t * z, dtype=torch.float32) for det, z in codes.items()},
                context.batches[task],
            )
            done[key] = {
                "sources": matrix.sources,
                "targets": matrix.targets,
                "predictions": matrix.predictions,
            }
            write_json_atomic(done_path, done)
            print(f"{key}: done", flush=True)
    lines = [
        f"# Transfer along the line from θ0 to each stage-2 code: `{config.name}`",
        "",
        f"`python bench/transfer_path.py {study} {scales} {out}`. Gain recovered over θ0 (%), pooled over "
        f"{len(records)} held-out tasks, paired bootstrap 95 % intervals; t = 1 is the study's stage 3.",
        "",
        "| t | mean code length | own code | transfer across DETs |"
        + (f" `{Path(other).name}` − this: own | transfer |" if other else ""),
        "|---|---|---|---|" + ("---|---|" if other else ""),
    ]

    def cells(matrices: list, diagonal: bool) -> list:
        return [c for r, m in matrices for c in r.matrix_cells(m, diagonal=diagonal)]

    compared = None
    if other:
        other_config = load_study_config(f"{other}/config.json").to_dict()
        by_task = {r.task: r for r in load_records(Path(other), other_config) if r.heldout}
        theirs = [(by_task[r.task], by_task[r.task].transfer) for r in records]
        compared = (cells(theirs, True), cells(theirs, False))
    for t in [*factors, 1.0]:
        if t == 1.0:
            matrices = [(r, r.transfer) for r in records]
        else:
            matrices = [(r, done[f"{r.task}@{t}"]) for r in records]
        own_cells, off_cells = cells(matrices, True), cells(matrices, False)
        own, off = pooled(own_cells), pooled(off_cells)
        length = np.mean([t * np.linalg.norm(run.z) for r in records for run in r.runs[LEARNED].values()])
        row = f"| {t:g} | {length:.2f} | {_with_interval(*own)} | {_with_interval(*off)} |"
        if compared is not None:
            for mine, theirs in ((own_cells, compared[0]), (off_cells, compared[1])):
                difference = pooled_gain(theirs) - pooled_gain(mine)
                row += f" {_with_interval(difference, bootstrap_difference(mine, theirs))} |"
        lines.append(row)
    write_text_atomic(Path(f"{out}.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    main(*sys.argv[1:])
