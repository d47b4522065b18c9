"""PNG plots of a :class:`~deltaspace.subspace.landscape.Landscape` (matplotlib, Agg canvas).

One heat map per DET (relative performance when the original-space metrics are known, else the raw
metric) and an overlay panel with each DET's ">= threshold" region and their intersection; the named
anchor points (the DET codes, z*, θ0) are marked on every panel. The figure is rendered on an explicit Agg
canvas, so the global matplotlib backend is left untouched.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from deltaspace.io import atomic_write
from deltaspace.subspace.landscape import Landscape

_COLOURS = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
)


def _has_level(grid: np.ndarray, level: float) -> bool:
    """Whether a contour at ``level`` exists (matplotlib warns when asked for one that does not)."""
    return bool(grid.min() < level <= grid.max())


def _mark_anchors(ax, landscape: Landscape) -> None:
    for name, (a, b) in landscape.plane.anchors.items():
        ax.plot([a], [b], marker="o", color="black", markersize=5, markerfacecolor="white")
        ax.annotate(name, (a, b), textcoords="offset points", xytext=(4, 4), fontsize=8)


def plot_landscape(
    landscape: Landscape, path: str | os.PathLike, *, threshold: float = 90.0, title: str | None = None
) -> Path:
    """Write the heat maps (+ overlay when relative values exist) of ``landscape`` to ``path`` (PNG)."""
    names = list(landscape.metrics)
    use_relative = landscape.relative is not None
    grids = landscape.relative if use_relative else landscape.metrics
    panels = len(names) + (1 if use_relative else 0)
    fig = Figure(figsize=(4.2 * panels, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    # imshow's extent is the outer edge of the cells; the grid values sit at the cell centres
    half_a, half_b = (landscape.a[1] - landscape.a[0]) / 2, (landscape.b[1] - landscape.b[0]) / 2
    extent = (
        landscape.a[0] - half_a,
        landscape.a[-1] + half_a,
        landscape.b[0] - half_b,
        landscape.b[-1] + half_b,
    )
    vmax = max(float(np.max(g)) for g in grids.values())
    vmin = min(float(np.min(g)) for g in grids.values())
    label = f"relative {landscape.metric} (%)" if use_relative else landscape.metric
    for ax, name in zip(axes, names, strict=False):
        image = ax.imshow(
            grids[name], origin="lower", extent=extent, aspect="auto", vmin=vmin, vmax=vmax, cmap="viridis"
        )
        if use_relative and _has_level(grids[name], threshold):
            ax.contour(
                landscape.a, landscape.b, grids[name], levels=[threshold], colors="white", linewidths=1.0
            )
        _mark_anchors(ax, landscape)
        ax.set_title(name)
        ax.set_xlabel("a")
        ax.set_ylabel("b")
        fig.colorbar(image, ax=ax, label=label, shrink=0.85)
    if use_relative:
        ax = axes[-1]
        handles = []
        for i, name in enumerate(names):
            colour = _COLOURS[i % len(_COLOURS)]
            mask = (grids[name] >= threshold).astype(float)
            if mask.any():
                ax.contourf(landscape.a, landscape.b, mask, levels=[0.5, 1.5], colors=[colour], alpha=0.25)
            handles.append(Patch(color=colour, alpha=0.4, label=f"{name} ≥ {threshold:g}%"))
        shared = landscape.shared_region(threshold).astype(float)
        if shared.any():
            ax.contourf(landscape.a, landscape.b, shared, levels=[0.5, 1.5], colors="none", hatches=["///"])
        if _has_level(shared, 0.5):
            ax.contour(landscape.a, landscape.b, shared, levels=[0.5], colors="black", linewidths=1.2)
        handles.append(Patch(facecolor="none", edgecolor="black", hatch="///", label="all DETs"))
        _mark_anchors(ax, landscape)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_title(f"shared ≥{threshold:g}%: {100 * landscape.shared_fraction(threshold):.1f}% of grid")
        ax.set_xlabel("a")
        ax.legend(handles=handles, fontsize=7, loc="upper right")
    fig.suptitle(title or f"{landscape.task}: {landscape.plane.kind} plane")
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
