"""Fixtures for the subspace tests: single-threaded torch and a trained toy study shared by the tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from subspace_toys import (
    FeatureMember,
    LinearMember,
    LowRankMember,
    make_task,
    make_task_family,
    train_original,
)

from deltaspace.subspace import SolutionStore, TaskBatches, evaluate


@pytest.fixture(autouse=True)
def _single_thread():
    """The toy tensors are tiny: thread start-up and contention would dominate the run time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class ToyStudy:
    members: list
    sources: list[TaskBatches]
    target: TaskBatches
    store: SolutionStore
    target_original: dict[str, float]


@pytest.fixture(scope="session")
def toy_study() -> ToyStudy:
    """Three toy DETs, three related source tasks and one held-out target task, all trained in their
    original parameter spaces (the solutions stage 1 decomposes and the denominators of relative scores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        basis = make_task_family(rank=2, seed=0)
        g = torch.Generator().manual_seed(1)
        sources = [make_task(f"src{i}", basis, torch.randn(2, generator=g), seed=10 + i) for i in range(3)]
        target = make_task("target", basis, torch.randn(2, generator=g), seed=99)
        members = [LinearMember(), LowRankMember(), FeatureMember()]
        store = SolutionStore()
        target_original = {}
        for member in members:
            for task in sources:
                theta = train_original(member, task)
                store.add_solution(
                    member.name, task.name, theta, member.theta0, evaluate(member, theta, task.eval_batches)
                )
            theta = train_original(member, target)
            target_original[member.name] = evaluate(member, theta, target.report_batches)["accuracy"]
        return ToyStudy(members, sources, target, store, target_original)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def toy_bundle(toy_study):
    """A briefly fitted subspace of the toy study (mechanics tests; quality is checked end to end)."""
    from deltaspace.subspace import FitConfig, fit

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = FitConfig(dim=3, steps=30, optimizer="adamw", lr=3e-2, progress=False)
        return fit(toy_study.members, toy_study.store, toy_study.sources, config)
    finally:
        torch.set_num_threads(threads)
