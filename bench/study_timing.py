"""Wall-clock time of a whole study from scratch: the issue-9 targets (`./run study` ≤ 15 min, the full suite
≤ 75 min on a 2-core machine).

Runs ``deltaspace study <config>`` in a fresh folder (the config's ``out`` and ``runs`` redirected there, so
every original-space run is trained, nothing reused; the model and task assets must already be fetched),
measures the wall clock and the peak memory of the study process, and writes
``bench/results/study_timing_<name>.json`` and ``.md`` with the per-stage seconds the study itself records.
Run it on an otherwise idle machine: it is a time measurement.

    python bench/study_timing.py full_suite              # ~80 min on 2 cores
    python bench/study_timing.py default --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from deltaspace.io import write_json_atomic, write_text_atomic
from deltaspace.study.config import load_study_config

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", help="a shipped study name (default, full_suite, ...) or a YAML file")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)"
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="fresh folder for runs and study (default: a temp dir)"
    )
    args = parser.parse_args()

    source = load_study_config(args.config).to_dict()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="deltaspace-timing-"))
    if workdir.exists() and any(workdir.iterdir()):
        sys.exit(f"--workdir {workdir} is not empty; the timing needs a fresh folder")
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        **source,
        "name": f"{source['name']}_timing",
        "out": str(workdir / "study"),
        "runs": str(workdir / "runs"),
    }
    config_path = workdir / "study.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    command = [sys.executable, "-m", "deltaspace.cli", "study", str(config_path), "--no-fetch"]
    start = time.perf_counter()
    completed = subprocess.run(command, env=env, check=False)
    wall = time.perf_counter() - start
    if completed.returncode != 0:
        sys.exit(f"the study failed (exit code {completed.returncode}); nothing written")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    stages = json.loads((workdir / "study" / "timings.json").read_text())
    result = {
        "study": source["name"],
        "command": f"python bench/study_timing.py {args.config} --threads {args.threads}",
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "wall_seconds": round(wall, 1),
        "peak_rss_gb": round(peak_kb / 2**20, 2),
        "stage_seconds": {name: round(seconds, 1) for name, seconds in stages.items()},
    }
    name = source["name"]
    write_json_atomic(RESULTS / f"study_timing_{name}.json", result)
    rows = "\n".join(f"| {stage} | {seconds:,.0f} |" for stage, seconds in result["stage_seconds"].items())
    write_text_atomic(
        RESULTS / f"study_timing_{name}.md",
        f"# Study `{name}` from scratch: {wall / 60:.1f} min wall clock\n\n"
        f"`{result['command']}` on {result['cpu_count']} cores ({result['threads']} torch threads); peak RSS "
        f"{result['peak_rss_gb']} GB. Every original-space run trained (nothing reused).\n\n"
        f"| stage | seconds |\n|---|---:|\n{rows}\n",
    )
    print(f"{name}: {wall / 60:.1f} min; wrote {RESULTS / f'study_timing_{name}.json'}")


if __name__ == "__main__":
    main()
