"""Worker processes: a study spread over processes gives what one process gives; failures surface."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import pytest
import torch
from tests.study.test_study_pipeline import tiny_study  # noqa: F401 (the fixture)

from deltaspace.errors import DeltaspaceError, UserInputError
from deltaspace.study import StudyConfig, run_study
from deltaspace.study.records import Stage2Record
from deltaspace.study.workers import Job, resolve_workers, run_jobs


def _records(out: Path) -> dict[str, Stage2Record]:
    return {
        p.stem: Stage2Record.from_dict(json.loads(p.read_text()))
        for p in sorted((out / "stage2").glob("*.json"))
    }


def test_two_workers_give_the_results_of_one_process(
    tiny_study: StudyConfig,  # noqa: F811
    tmp_path: Path,
) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker: the same arithmetic, so the same numbers
    try:
        run_study(tiny_study, workers=1)
    finally:
        torch.set_num_threads(threads)
    parallel = dataclasses.replace(tiny_study, out=str(tmp_path / "parallel"), name="tiny-parallel")
    run_study(parallel, workers=2)

    one, two = Path(tiny_study.out), Path(parallel.out)
    for method in tiny_study.methods:  # the sweep's runs, trained in the workers
        for task in ("sentiment", "topic", "sentiment2"):
            first = json.loads((one / "runs" / task / method / "seed0" / "result.json").read_text())
            second = json.loads((two / "runs" / task / method / "seed0" / "result.json").read_text())
            assert first["test"] == second["test"], (task, method)
    fit_one = json.loads((one / "subspace" / "fit.json").read_text())
    fit_two = json.loads((two / "subspace" / "fit.json").read_text())
    assert fit_one["reconstruction_error"] == fit_two["reconstruction_error"]
    records_one, records_two = _records(one), _records(two)
    assert records_one.keys() == records_two.keys() and records_one
    for task, record in records_one.items():
        other = records_two[task]
        assert record.transfer["metrics"] == other.transfer["metrics"]
        for kind, by_det in record.runs.items():
            for det, run in by_det.items():
                assert run.predictions == other.runs[kind][det].predictions, (task, kind, det)
                assert all(
                    math.isclose(a, b, abs_tol=1e-6)
                    for a, b in zip(run.z, other.runs[kind][det].z, strict=True)
                )
    assert (
        json.loads((one / "landscape.json").read_text())["metrics"]
        == json.loads((two / "landscape.json").read_text())["metrics"]
    )
    timings = json.loads((two / "timings.json").read_text())
    assert timings["workers"] == 2 and {"sweep", "fit", "optimise", "landscape"} <= set(timings)
    assert "2 worker processes x" in (two / "report.md").read_text()
    assert list((two / "logs").glob("worker-*.log"))  # the workers' own progress went to their logs


def test_a_failing_job_stops_the_stage_with_its_label(tmp_path: Path) -> None:
    # an expected failure (the library's own error type) in a worker: one line naming the job
    jobs = [Job("fine", math.sqrt, (4.0,)), Job("bad workers", resolve_workers, (0,))]
    with pytest.raises(DeltaspaceError, match=r"^bad workers: workers must be >= 1"):
        run_jobs(jobs, workers=2, log_dir=tmp_path, desc="test")
    # anything else: its type, message and the worker's traceback
    with pytest.raises(RuntimeError, match=r"(?s)not a number failed: ValueError: .*Traceback"):
        run_jobs([Job("fine", math.sqrt, (4.0,)), Job("not a number", float, ("x",))], workers=2,
                 log_dir=tmp_path, desc="test")  # fmt: skip
    # a worker killed from outside (the kernel's out-of-memory killer): one line with the fix, not a traceback
    with pytest.raises(
        DeltaspaceError, match=r"^(killed|fine): a worker process died .* rerun with --workers 1"
    ):
        run_jobs([Job("killed", os._exit, (9,)), Job("fine", math.sqrt, (4.0,))], workers=2, log_dir=tmp_path,
                 desc="test")  # fmt: skip
    # in one process the exception is the job's own
    with pytest.raises(UserInputError):
        run_jobs([Job("bad workers", resolve_workers, (0,))], workers=1, log_dir=tmp_path, desc="test")


def test_an_isolated_lone_job_runs_in_a_process_of_its_own(tmp_path: Path) -> None:
    # a stage-1 fit's leftovers must go with its process: a lone job is spawned when workers are allowed
    # (the label prefix is the pool's; in this process the job's own exception would come through)
    with pytest.raises(DeltaspaceError, match=r"^bad workers: workers must be >= 1"):
        run_jobs(
            [Job("bad workers", resolve_workers, (0,))], workers=2, log_dir=tmp_path, desc="t", isolate=True
        )
    with pytest.raises(
        DeltaspaceError, match=r"^exit: a worker process died"
    ):  # in this process: pytest gone
        run_jobs([Job("exit", os._exit, (9,))], workers=2, log_dir=tmp_path, desc="t", isolate=True)
    assert (
        run_jobs([Job("root", math.sqrt, (4.0,))], workers=2, log_dir=tmp_path, desc="t", isolate=True)[
            "root"
        ]
        >= 0
    )
    assert not list(tmp_path.glob("worker-*.log"))  # a lone worker keeps its output on the terminal
    # --workers 1 keeps everything in this process
    with pytest.raises(UserInputError):
        run_jobs(
            [Job("bad workers", resolve_workers, (0,))], workers=1, log_dir=tmp_path, desc="t", isolate=True
        )


def test_worker_count_defaults_to_the_cores_and_refuses_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DELTASPACE_WORKERS", raising=False)
    assert 1 <= resolve_workers(None) <= 4
    monkeypatch.setenv("DELTASPACE_WORKERS", "3")
    assert resolve_workers(None) == 3
    monkeypatch.setenv("DELTASPACE_WORKERS", "two")
    with pytest.raises(UserInputError, match="DELTASPACE_WORKERS must be a whole number"):
        resolve_workers(None)
    assert resolve_workers(3) == 3
    with pytest.raises(UserInputError, match="workers must be >= 1"):
        resolve_workers(0)


def test_studies_sharing_a_runs_folder_train_each_run_once(tiny_study: StudyConfig) -> None:  # noqa: F811
    from deltaspace.study.pipeline import _jobs, _unique

    first = tiny_study.to_dict()
    second = {**first, "name": "other", "out": first["out"] + "-other", "runs": str(tiny_study.runs_dir)}
    jobs = [job for study in (first, second) for job in _jobs("sweep", StudyConfig.from_dict(study))]
    assert len(jobs) == 2 * len(tiny_study.tasks) * len(tiny_study.methods)
    assert len(_unique(jobs)) == len(tiny_study.tasks) * len(tiny_study.methods)
