"""Stage 3, subspace solution transfer: decode a code found through one DET with every other DET.

Given the stage-2 codes ``z*_s`` (one per source DET s), every target DET t evaluates ``U_t(z*_s)``
zero-shot. Rows are source DETs, columns target DETs; the diagonal is stage 2 itself ("optimisation"),
the off-diagonal entries are the paper's "A→L"-style transfer numbers. Relative performance divides by
the *target* DET's original-space metric.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from deltaspace.subspace.batches import TaskBatches, batch_labels
from deltaspace.subspace.bundle import SubspaceBundle
from deltaspace.subspace.evaluate import check_metric, predictions, relative, score
from deltaspace.subspace.member import SubspaceMember, check_member
from deltaspace.subspace.optimise import OptimiseConfig, OptimiseResult, optimise


@dataclass
class TransferResult:
    """``metrics[i, j]``: source DET ``sources[i]``'s code decoded by target DET ``targets[j]``.

    ``relative`` (percent of the target's original-space metric) is present when all originals were given.
    """

    task: str
    metric: str
    sources: list[str]
    targets: list[str]
    metrics: np.ndarray
    relative: np.ndarray | None
    predictions: list[list[list[int]]] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["metrics"] = self.metrics.tolist()
        data["relative"] = None if self.relative is None else self.relative.tolist()
        return data

    def off_diagonal_mean(self, relative_values: bool = True) -> float:
        """Mean over source != target pairs (the paper's transfer "Avg")."""
        values = self.relative if relative_values and self.relative is not None else self.metrics
        mask = np.array([[s != t for t in self.targets] for s in self.sources])
        return float(values[mask].mean()) if mask.any() else float("nan")


def batch_gold(batches: Sequence[Any]) -> torch.Tensor:
    """The gold labels of ``batches``, concatenated (1-D, long)."""
    return torch.cat([batch_labels(b).reshape(-1).cpu() for b in batches]).long()


def transfer(
    members: Sequence[SubspaceMember],
    bundle: SubspaceBundle,
    codes: Mapping[str, Tensor],
    task: TaskBatches,
    *,
    original_metrics: Mapping[str, float] | None = None,
    metric: str = "accuracy",
    known: Mapping[str, Sequence[int]] | None = None,
) -> TransferResult:
    """Evaluate each source code (``codes``: source DET name -> z) through every member's up-projection.

    ``known``: member name -> report-batch predictions already computed for its own code (stage 2's),
    reused for the diagonal instead of evaluated again.
    """
    check_metric(metric)
    for member in members:
        check_member(member)
    if not codes:
        raise ValueError("transfer() needs at least one source code (source DET name -> z)")
    sources, targets = list(codes), [m.name for m in members]
    values = np.zeros((len(sources), len(targets)))
    cells: list[list[list[int]]] = []
    gold = batch_gold(task.report_batches)
    for i, source in enumerate(sources):
        row = []
        for j, member in enumerate(members):
            if known is not None and source == member.name and member.name in known:
                pred = torch.as_tensor(list(known[member.name])).long()
            else:
                up = bundle.up(member.name).to(member.theta0.device)
                with torch.no_grad():
                    theta = up(torch.as_tensor(codes[source]).float().to(member.theta0.device))
                pred, _ = predictions(member, theta, task.report_batches)
            values[i, j] = score(pred, gold, task.num_labels)[metric]
            row.append(pred.tolist())
        cells.append(row)
    rel = None
    if original_metrics is not None and all(original_metrics.get(t) for t in targets):
        rel = np.array(
            [[relative(v, original_metrics[t]) for v, t in zip(row, targets, strict=True)] for row in values]
        )
    return TransferResult(task.name, metric, sources, targets, values, rel, cells)


def optimise_and_transfer(
    members: Sequence[SubspaceMember],
    bundle: SubspaceBundle,
    task: TaskBatches,
    config: OptimiseConfig | None = None,
    *,
    original_metrics: Mapping[str, float] | None = None,
) -> tuple[TransferResult, dict[str, OptimiseResult]]:
    """Stage 2 through every member, then the full transfer matrix of the codes found."""
    config = config or OptimiseConfig()
    originals = dict(original_metrics or {})
    results = {
        m.name: optimise(m, bundle, task, config, original_metric=originals.get(m.name)) for m in members
    }
    matrix = transfer(
        members,
        bundle,
        {name: r.z for name, r in results.items()},
        task,
        original_metrics=original_metrics,
        metric=config.metric,
        known={name: r.predictions for name, r in results.items() if r.predictions is not None},
    )
    return matrix, results
