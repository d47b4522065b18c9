"""Worker processes for a study's independent jobs (original-space runs, stage-2 tasks, fits).

Why processes and not torch's own threads: a study's work is many small models on small batches, where
intra-op threads scale poorly (a joint-fit step: 1.30 s on one thread, 0.81 s on two, 1.6x) while two
one-thread processes keep two cores busy (2x); the jobs are independent, write their results atomically
into their own files, and resume. ``concurrent.futures`` with the ``spawn`` start method (fork after torch
has started its thread pools can deadlock); each worker sets its thread count before any job runs and
sends its own progress bars and logs to ``<log_dir>/worker-<pid>.log``, while the caller shows one bar over
the jobs.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from deltaspace.errors import DeltaspaceError, UserInputError

MAX_AUTO_WORKERS = 4  # beyond this, each worker's model copies cost more memory than the cores give back


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_workers(requested: int | None) -> int:
    """``requested`` worker processes, or (None) ``$DELTASPACE_WORKERS`` if set, else one per usable core up
    to 4 on a CPU-only machine and 1 where CUDA is available (the jobs would share one GPU)."""
    if requested is None and os.environ.get("DELTASPACE_WORKERS"):
        try:
            requested = int(os.environ["DELTASPACE_WORKERS"])
        except ValueError:
            raise UserInputError(
                f"DELTASPACE_WORKERS must be a whole number, got {os.environ['DELTASPACE_WORKERS']!r}"
            ) from None
    if requested is not None:
        if requested < 1:
            raise UserInputError(f"workers must be >= 1 (or left out for one per core), got {requested}")
        return requested
    import torch

    if torch.cuda.is_available():
        return 1
    return max(1, min(usable_cores(), MAX_AUTO_WORKERS))


@dataclasses.dataclass(frozen=True)
class Job:
    """One independent piece of a phase: ``run(*args)`` must be a module-level function (it is pickled
    by reference) whose arguments pickle; ``label`` names it in errors and the progress bar."""

    label: str
    run: Callable[..., Any]
    args: tuple[Any, ...] = ()


@dataclasses.dataclass
class JobFailure:
    label: str
    kind: str
    message: str
    trace: str
    expected: bool


def _init_worker(threads: int, log_dir: str | None) -> None:
    import torch

    torch.set_num_threads(threads)
    if log_dir is None:  # a lone worker: its bars and logs stay on the caller's terminal
        return
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    log = open(Path(log_dir) / f"worker-{os.getpid()}.log", "a", buffering=1)  # noqa: SIM115 (process-long)
    os.dup2(log.fileno(), 2)  # C-level warnings too
    sys.stderr = log


def _execute(job: Job) -> float | JobFailure:
    start = time.perf_counter()
    try:
        job.run(*job.args)
    except Exception as error:  # sent back as data: exception classes need not pickle
        return JobFailure(
            job.label,
            type(error).__name__,
            str(error),
            traceback.format_exc(),
            isinstance(error, DeltaspaceError),
        )
    return time.perf_counter() - start


def run_jobs(
    jobs: Sequence[Job],
    *,
    workers: int,
    log_dir: str | Path,
    desc: str,
    threads: int | None = None,
    isolate: bool = False,
) -> dict[str, float]:
    """Run every job, in this process when ``workers`` is 1 or there is one job, else on ``workers``
    spawned processes of ``threads`` threads each (default: the usable cores shared out); returns each
    job's seconds by label. The first failure cancels the jobs not yet started and is raised here (an
    expected one as one line, anything else with the worker's traceback).

    ``isolate`` (with ``workers`` > 1): a lone job runs in one spawned process with every thread instead of
    in this one, so the memory it leaves behind goes with the process. A study's stage-1 fit holds several
    copies of full fine-tuning's (22.7M × d) decoder; kept in this process, they pushed the next stage's
    workers out of memory on a 24 GB machine."""
    from tqdm.auto import tqdm

    seconds: dict[str, float] = {}
    if not jobs:
        return seconds
    lone = isolate and workers > 1 and len(jobs) == 1
    workers = min(workers, len(jobs))
    if workers == 1 and not lone:  # in this process, exceptions as they are
        for job in jobs:
            start = time.perf_counter()
            job.run(*job.args)
            seconds[job.label] = time.perf_counter() - start
        return seconds
    threads = threads or max(1, usable_cores() // workers)
    bar = tqdm(total=len(jobs), desc=f"{desc} ({workers} worker{'s' * (workers > 1)} x {threads} thread{'s' * (threads > 1)})",
               unit="job", disable=lone)  # fmt: skip
    context = multiprocessing.get_context("spawn")
    log = None if lone else str(log_dir)
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(threads, log)
    ) as pool:
        pending = {pool.submit(_execute, job): job for job in jobs}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    job = pending.pop(future)
                    try:
                        outcome = future.result()
                    except BrokenProcessPool:  # a worker was killed, on a study most often for memory
                        raise DeltaspaceError(
                            f"{job.label}: a worker process died (killed by the system: most often out of "
                            f"memory, {workers} workers each holding the study's models and solutions); rerun "
                            "with --workers 1 (or DELTASPACE_WORKERS=1) to resume with less memory: finished "
                            "parts are kept"
                        ) from None
                    if isinstance(outcome, JobFailure):
                        _raise(outcome)
                    seconds[job.label] = outcome
                    bar.set_postfix_str(job.label)
                    bar.update(1)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            bar.close()
    return seconds


def _raise(failure: JobFailure) -> None:
    if failure.expected:
        raise DeltaspaceError(f"{failure.label}: {failure.message}")
    raise RuntimeError(f"{failure.label} failed: {failure.kind}: {failure.message}\n{failure.trace}")
