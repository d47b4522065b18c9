"""The stage-2 record of one task: what the pipeline writes (``stage2/<task>.json``) and the report reads.

Every reported number is paired on the same test examples: the gold labels, θ0's and the original-space
solution's predictions, and the predictions of each subspace's best code, so gain recovered and its
bootstrap interval are computed from the record alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deltaspace.subspace.gain import GainCell
from deltaspace.train.result import slug

LEARNED = "learned"
SHARED = "shared"  # stage 3: one code trained through every DET at once


def bundle_path(out: str | Path, heldout_mode: str, task: str | None = None) -> Path:
    """The subspace that solves ``task`` in the study at ``out``: the shared one, or (leaving one out) the
    one fitted without it."""
    if heldout_mode == "leave_one_out" and task is not None:
        return Path(out) / "subspace-loo" / slug(task)
    return Path(out) / "subspace"


@dataclass
class SubspaceRun:
    """Stage 2 through one DET in one subspace: the chosen code's test score and predictions."""

    metric: float
    initial_metric: float | None
    selection_metric: float
    best_step: int
    predictions: list[int]
    z: list[float]
    relative: float | None = None


@dataclass
class Stage2Record:
    """Stage 2 (and stage 3) of one task.

    ``runs[subspace][det]``: ``learned`` is stage 1's subspace, the others the controls (``random``,
    ``span``). ``transfer``: the learned subspace's transfer matrix (rows: source DET, columns: target
    DET) with its per-cell predictions. ``transfer_shared``: the same matrix with each code cut to the
    coordinates every DET shares by construction (a closed-form subspace's source-solution directions; the
    descent and random ones set to 0), diagonal included: which part of a code carries across DETs.
    ``source_tasks``: the tasks its subspace was fitted on. ``shared``: one code trained through every DET at
    once in the learned subspace (``z``, ``best_step``, each DET's ``predictions`` at it), when the study
    asks for it (``shared_code``).
    """

    task: str
    heldout: bool
    source_tasks: list[str]
    gold: list[int]
    initial: dict[str, list[int]]
    original: dict[str, list[int]]
    runs: dict[str, dict[str, SubspaceRun]]
    transfer: dict[str, Any] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    transfer_shared: dict[str, Any] | None = None
    shared: dict[str, Any] | None = None

    def accuracy(self, predictions: list[int]) -> float:
        return float(np.mean(np.asarray(predictions) == np.asarray(self.gold)))

    def correct(self, predictions: list[int]) -> np.ndarray:
        return (np.asarray(predictions) == np.asarray(self.gold)).astype(float)

    def cell(self, det: str, predictions: list[int], member: str | None = None) -> GainCell:
        """``det``'s gain cell for ``predictions`` against its θ0 and original (labelled ``member``, default
        ``det``)."""
        return GainCell(
            self.task,
            member or det,
            self.correct(predictions),
            self.correct(self.initial[det]),
            self.correct(self.original[det]),
        )

    def gain_cell(self, subspace: str, det: str) -> GainCell:
        return self.cell(det, self.runs[subspace][det].predictions)

    def shared_cells(self) -> list[GainCell]:
        """One cell per DET at the code trained through every DET at once (none without ``shared``)."""
        if not self.shared:
            return []
        return [self.cell(det, predictions) for det, predictions in self.shared["predictions"].items()]

    def transfer_cells(self) -> list[GainCell]:
        """One cell per off-diagonal (source, target) pair: the target DET's gain from the source's code."""
        return self.matrix_cells(self.transfer, diagonal=False)

    def matrix_cells(self, matrix: dict[str, Any] | None, *, diagonal: bool) -> list[GainCell]:
        """The cells of a transfer matrix (``transfer`` or ``transfer_shared``): its off-diagonal pairs, or
        with ``diagonal`` its diagonal (each DET decoding its own code)."""
        if not matrix or not matrix.get("predictions"):
            return []
        return [
            self.cell(target, matrix["predictions"][i][j], f"{source}->{target}")
            for i, source in enumerate(matrix["sources"])
            for j, target in enumerate(matrix["targets"])
            if (source == target) == diagonal
        ]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stage2Record:
        data = dict(data)
        data["runs"] = {
            kind: {det: SubspaceRun(**run) for det, run in by_det.items()}
            for kind, by_det in data["runs"].items()
        }
        return cls(**data)
