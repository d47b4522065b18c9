"""The solution store: per member (DET) and task, the flat delta Δ = θ_task − θ0 of a trained solution.

Optionally it keeps the original-space metrics of each solution (the denominators of relative
performance). Saved as ``deltas.safetensors`` (tensors) + ``store.json`` (index and metrics); the JSON is
written last, so its presence marks a complete store.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from deltaspace.io import read_json, write_json_atomic, write_safetensors_atomic


def shared_tasks(by_member: Mapping[str, Mapping[str, object]]) -> list[str]:
    """The tasks every member has an entry for, in first-seen order."""
    if not by_member:
        return []
    first, *rest = by_member.values()
    return [task for task in first if all(task in other for other in rest)]


_TENSORS = "deltas.safetensors"
_INDEX = "store.json"


class SolutionStore:
    """Δ vectors keyed by ``(member, task)``, plus optional original-space metrics."""

    def __init__(self) -> None:
        self._deltas: dict[str, dict[str, Tensor]] = {}
        self._metrics: dict[str, dict[str, dict[str, float]]] = {}

    def add(self, member: str, task: str, delta: Tensor, metrics: Mapping[str, float] | None = None) -> None:
        """Record Δ for ``(member, task)``; all deltas of one member must have the same length."""
        delta = torch.as_tensor(delta).detach().reshape(-1).to(torch.float32).cpu().clone()
        if delta.numel() == 0:
            raise ValueError(f"empty delta for ({member!r}, {task!r})")
        if not torch.isfinite(delta).all():
            raise ValueError(
                f"delta for ({member!r}, {task!r}) has NaN/inf entries; check the trained solution"
            )
        existing = self._deltas.get(member)
        if existing:
            size = next(iter(existing.values())).numel()
            if delta.numel() != size:
                raise ValueError(
                    f"delta for ({member!r}, {task!r}) has {delta.numel()} entries, member has {size}"
                )
        self._deltas.setdefault(member, {})[task] = delta
        if metrics is not None:
            self._metrics.setdefault(member, {})[task] = {k: float(v) for k, v in metrics.items()}

    def add_solution(
        self,
        member: str,
        task: str,
        theta: Tensor,
        theta0: Tensor,
        metrics: Mapping[str, float] | None = None,
    ) -> None:
        """Record Δ = θ − θ0 from a trained flat solution and the member's initial point."""
        theta, theta0 = torch.as_tensor(theta).reshape(-1), torch.as_tensor(theta0).reshape(-1)
        if theta.shape != theta0.shape:
            raise ValueError(
                f"({member!r}, {task!r}): theta {tuple(theta.shape)} and theta0 {tuple(theta0.shape)} differ"
            )
        self.add(member, task, theta.detach().float().cpu() - theta0.detach().float().cpu(), metrics)

    def delta(self, member: str, task: str) -> Tensor:
        try:
            return self._deltas[member][task]
        except KeyError:
            raise KeyError(
                f"no solution for member {member!r} on task {task!r}; add it with store.add()"
            ) from None

    def has(self, member: str, task: str) -> bool:
        return task in self._deltas.get(member, {})

    def original_metric(self, member: str, task: str, metric: str = "accuracy") -> float | None:
        return self._metrics.get(member, {}).get(task, {}).get(metric)

    @property
    def members(self) -> list[str]:
        return list(self._deltas)

    def tasks(self, member: str | None = None) -> list[str]:
        """Tasks of ``member``, or the tasks every member has a solution for (in first-seen order)."""
        if member is not None:
            return list(self._deltas.get(member, {}))
        return shared_tasks(self._deltas)

    def dim(self, member: str) -> int:
        if member not in self._deltas:
            raise KeyError(f"no solutions for member {member!r}; known members: {self.members}")
        return next(iter(self._deltas[member].values())).numel()

    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        tensors, index = {}, []
        for member, by_task in self._deltas.items():
            for task, delta in by_task.items():
                key = f"delta_{len(index)}"
                tensors[key] = delta
                index.append({"member": member, "task": task, "key": key})
        write_safetensors_atomic(directory / _TENSORS, tensors)
        write_json_atomic(
            directory / _INDEX,
            {"format": "deltaspace.solution_store/1", "deltas": index, "metrics": self._metrics},
        )
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> SolutionStore:
        directory = Path(directory)
        index = read_json(directory / _INDEX)
        tensors = load_file(str(directory / _TENSORS))
        store = cls()
        for entry in index["deltas"]:
            store.add(entry["member"], entry["task"], tensors[entry["key"]])
        store._metrics = {
            m: {t: dict(v) for t, v in by_task.items()} for m, by_task in index.get("metrics", {}).items()
        }
        return store
