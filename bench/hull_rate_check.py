"""Is stage 2 inside the fitted region (``optimise.region: hull``) held back by its rate? Rerun chosen
(task, DET) cells of a finished hull study at other rates, everything else as the study ran them.

    python bench/hull_rate_check.py studies/full_suite_fit_hull request_risk,spam_email lora,adapter 0.05,0.5

One JSON line per cell and rate (test accuracy, the validation accuracy that chose the step, the step, seconds)
on stdout; one thread, so it can run beside a study.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import torch

from deltaspace.study.config import load_study_config
from deltaspace.study.pipeline import StudyContext
from deltaspace.subspace import optimise


def main(study: str, tasks: str, dets: str, rates: str) -> None:
    torch.set_num_threads(1)
    config = load_study_config(f"{study}/config.json")
    context = StudyContext(config)
    bundle = context.bundle()
    for task in tasks.split(","):
        for det in dets.split(","):
            (member,) = [m for m in context.members if m.name == det]
            for rate in map(float, rates.split(",")):
                start = time.perf_counter()
                settings = dataclasses.replace(config.optimise, lr=rate, progress=False)
                result = optimise(member, bundle, context.batches[task], settings)
                line = {
                    "task": task,
                    "det": det,
                    "lr": rate,
                    "test": result.metric,
                    "val": result.selection_metric,
                    "best_step": result.best_step,
                    "seconds": round(time.perf_counter() - start),
                }
                print(json.dumps(line), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(*sys.argv[1:])
