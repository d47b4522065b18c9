"""Stage 4, performance landscape: evaluate every DET on a 2-D grid in a plane of the subspace.

The paper reports "a substantial region where different DETs all perform well" but released no code;
the plane, grid and measure are made explicit here:

- :func:`plane_through`: the affine plane through three codes, coordinates (a, b) with the points at
  (0, 0), (1, 0), (0, 1) — for one task's DET codes the triangle of stage 1's interpolation lies in
  ``a, b >= 0, a + b <= 1``. Use it also for "z* and two codes".
- :func:`pca_plane`: the plane of the top two principal directions of any number (>= 3) of codes.
- :func:`default_plane`: first three DET codes of a task; with two DETs, the two codes and z = 0 (θ0).
- :func:`solution_plane`: a stage-2 code z* and two DET codes.

:func:`landscape` decodes every grid point with every member, evaluates it on the task's report batches
and returns the arrays; :meth:`Landscape.shared_fraction` is the fraction of the grid where every DET
reaches a threshold (default 90 %) of its original-space performance. Plotting lives in
:mod:`deltaspace.subspace.plots`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from deltaspace.subspace.batches import TaskBatches
from deltaspace.subspace.bundle import SubspaceBundle
from deltaspace.subspace.evaluate import check_metric, evaluate
from deltaspace.subspace.member import SubspaceMember, check_member


@dataclass
class Plane:
    """``z(a, b) = origin + a·u + b·v``; ``anchors`` are named points' (a, b) coordinates."""

    origin: Tensor
    u: Tensor
    v: Tensor
    anchors: dict[str, tuple[float, float]]
    kind: str

    def points(self, a: Tensor, b: Tensor) -> Tensor:
        """Codes at every (a_j, b_i): shape (len(b), len(a), d) (rows follow b, as in an image)."""
        return self.origin + b[:, None, None] * self.v + a[None, :, None] * self.u

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "origin": self.origin.tolist(),
            "u": self.u.tolist(),
            "v": self.v.tolist(),
            "anchors": {k: list(v) for k, v in self.anchors.items()},
        }


def _vector(z: Tensor) -> Tensor:
    return torch.as_tensor(z).detach().reshape(-1).double().cpu()


def plane_through(points: Mapping[str, Tensor]) -> Plane:
    """The affine plane through exactly three named points: the first at (0, 0), then (1, 0), (0, 1)."""
    if len(points) != 3:
        raise ValueError(f"plane_through needs exactly 3 points, got {len(points)}; use pca_plane for more")
    (n0, p0), (n1, p1), (n2, p2) = ((name, _vector(z)) for name, z in points.items())
    u, v = p1 - p0, p2 - p0
    gram = torch.stack([u, v]) @ torch.stack([u, v]).t()
    if torch.linalg.matrix_rank(gram, rtol=1e-8) < 2:
        raise ValueError(
            f"points {n0!r}, {n1!r}, {n2!r} are (nearly) collinear; pick other points or use pca_plane"
        )
    anchors = {n0: (0.0, 0.0), n1: (1.0, 0.0), n2: (0.0, 1.0)}
    return Plane(p0.float(), u.float(), v.float(), anchors, "affine")


def pca_plane(points: Mapping[str, Tensor]) -> Plane:
    """Plane through the mean of >= 3 points along their top two principal directions (unit vectors)."""
    if len(points) < 3:
        raise ValueError(
            f"pca_plane needs at least 3 points, got {len(points)}; use plane_through / default_plane"
        )
    names = list(points)
    x = torch.stack([_vector(points[n]) for n in names])
    mean = x.mean(0)
    _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
    if len(s) < 2 or s[1] <= 1e-12 * max(float(s[0]), 1.0):
        raise ValueError("the points span fewer than two dimensions; a PCA plane is undefined for them")
    u, v = vh[0], vh[1]
    coords = (x - mean) @ torch.stack([u, v]).t()
    anchors = {n: (float(c[0]), float(c[1])) for n, c in zip(names, coords, strict=True)}
    return Plane(mean.float(), u.float(), v.float(), anchors, "pca")


def default_plane(bundle: SubspaceBundle, task: str) -> Plane:
    """The plane through the first three DET codes of ``task``; with two DETs, through both and z = 0.

    Where the DETs' codes of the task (nearly) coincide, as after the closed-form start, which gives
    every DET one shared code per task, that triangle is a point: the plane then runs through θ0 (z = 0),
    the task's code and the code of the next source task, so the grid shows the region around the
    task's solution, the untrained point and the way towards another task.
    """
    codes = bundle.task_codes(task)
    if len(codes) < 2:
        raise ValueError(
            f"a landscape plane needs at least two DET codes for {task!r}; the bundle has {len(codes)}"
        )
    stacked = torch.stack([_vector(z) for z in codes.values()])
    spread = float((stacked - stacked.mean(0)).norm(dim=1).max())
    if spread > 1e-3 * max(1.0, float(stacked.norm(dim=1).max())):
        if len(codes) >= 3:
            try:
                return plane_through(dict(list(codes.items())[:3]))
            except ValueError:
                pass  # collinear codes: fall through to the task plane
        elif len(codes) == 2:
            return plane_through({"θ0": torch.zeros(bundle.dim), **codes})
    others = [t for t in bundle.tasks() if t != task]
    if not others:
        raise ValueError(
            f"the DETs share one code for {task!r} and the bundle has no other task to span a plane"
        )
    return plane_through(
        {
            "θ0": torch.zeros(bundle.dim),
            task: stacked.mean(0),
            others[0]: torch.stack([_vector(z) for z in bundle.task_codes(others[0]).values()]).mean(0),
        }
    )


def solution_plane(
    z_star: Tensor, bundle: SubspaceBundle, task: str, pair: Sequence[str] | None = None
) -> Plane:
    """The plane through a stage-2 code ``z*`` and two DET codes of the source ``task`` (default: the first two)."""
    codes = bundle.task_codes(task)
    pair = list(pair) if pair is not None else list(codes)[:2]
    if len(pair) != 2 or any(name not in codes for name in pair):
        raise ValueError(f"pair must name two of the bundle's members {list(codes)}, got {pair}")
    return plane_through({"z*": z_star, pair[0]: codes[pair[0]], pair[1]: codes[pair[1]]})


@dataclass
class Landscape:
    """Grid evaluations: ``metrics[name][i, j]`` at ``(a[j], b[i])``; ``relative`` in percent when known."""

    task: str
    metric: str
    plane: Plane
    a: np.ndarray
    b: np.ndarray
    metrics: dict[str, np.ndarray]
    relative: dict[str, np.ndarray] | None
    original_metrics: dict[str, float] | None

    def shared_region(self, threshold: float = 90.0) -> np.ndarray:
        """Boolean grid: every DET reaches ``threshold`` % of its original-space performance."""
        if self.relative is None:
            raise ValueError(
                "shared_region needs original-space metrics; pass original_metrics to landscape()"
            )
        return np.logical_and.reduce([rel >= threshold for rel in self.relative.values()])

    def shared_fraction(self, threshold: float = 90.0) -> float:
        """Fraction of the grid where every DET reaches ``threshold`` % of its original-space performance."""
        return float(self.shared_region(threshold).mean())

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "metric": self.metric,
            "plane": self.plane.to_dict(),
            "a": self.a.tolist(),
            "b": self.b.tolist(),
            "metrics": {k: v.tolist() for k, v in self.metrics.items()},
            "relative": None if self.relative is None else {k: v.tolist() for k, v in self.relative.items()},
            "original_metrics": self.original_metrics,
            "shared_fraction_90": None if self.relative is None else self.shared_fraction(90.0),
        }


def grid_axes(
    plane: Plane, resolution: int, extent: Sequence[float] | None = None, margin: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Grid coordinates: ``extent = (a_min, a_max, b_min, b_max)``, or the anchors' bounding box widened by
    ``margin`` × its size on every side (the affine plane's default is [-0.5, 1.5]²)."""
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    if extent is None:
        coords = np.array(list(plane.anchors.values()))
        lo, hi = coords.min(0), coords.max(0)
        span = np.where(hi - lo > 0, hi - lo, 1.0)
        extent = (
            lo[0] - margin * span[0],
            hi[0] + margin * span[0],
            lo[1] - margin * span[1],
            hi[1] + margin * span[1],
        )
    if len(extent) != 4 or extent[0] >= extent[1] or extent[2] >= extent[3]:
        raise ValueError(f"extent must be (a_min, a_max, b_min, b_max) with min < max, got {extent}")
    return np.linspace(extent[0], extent[1], resolution), np.linspace(extent[2], extent[3], resolution)


def landscape(
    members: Sequence[SubspaceMember],
    bundle: SubspaceBundle,
    task: TaskBatches,
    plane: Plane | None = None,
    *,
    resolution: int = 21,
    extent: Sequence[float] | None = None,
    margin: float = 0.5,
    original_metrics: Mapping[str, float] | None = None,
    metric: str = "accuracy",
    progress: bool = True,
) -> Landscape:
    """Decode each grid point of ``plane`` (default: :func:`default_plane` of ``task``) with every member
    and evaluate it on the task's report batches. Cost: resolution² × members evaluations."""
    check_metric(metric)
    for member in members:
        check_member(member)
    plane = plane if plane is not None else default_plane(bundle, task.name)
    if plane.origin.numel() != bundle.dim:
        raise ValueError(f"the plane lives in R^{plane.origin.numel()} but the subspace has d = {bundle.dim}")
    a, b = grid_axes(plane, resolution, extent, margin)
    codes = plane.points(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32))
    values = {m.name: np.zeros((len(b), len(a))) for m in members}
    bar = tqdm(total=len(a) * len(b) * len(members), desc=f"landscape {task.name}", disable=not progress)
    try:
        for member in members:
            up = bundle.up(member.name).to(member.theta0.device)
            for i in range(len(b)):
                for j in range(len(a)):
                    with torch.no_grad():
                        theta = up(codes[i, j].to(member.theta0.device))
                    scores = evaluate(member, theta, task.report_batches, num_labels=task.num_labels)
                    values[member.name][i, j] = scores[metric]
                    bar.update(1)
    finally:
        bar.close()
    rel = None
    originals = dict(original_metrics) if original_metrics is not None else None
    if originals is not None:
        missing = [m.name for m in members if not originals.get(m.name)]
        if missing:
            raise ValueError(f"original_metrics lacks a positive value for {missing}; give one per member")
        rel = {name: 100.0 * v / originals[name] for name, v in values.items()}
    return Landscape(task.name, metric, plane, a, b, values, rel, originals)
