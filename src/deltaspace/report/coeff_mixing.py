"""What Coeff-Tuning learned: how far each layer's coefficients C = I + Δ moved from the identity, and which
heads they mix.

Read from a run's saved delta (``<run>/delta/delta_model.safetensors``, the Δ of every layer's
``ds_coeff`` hook; Coeff alone or inside a combination), per layer:

- ``rel_norm``: ‖Δ‖_F / ‖I‖_F = ‖Δ‖_F / √H, how far C is from the identity (0: the pre-trained model);
- ``diag_mean`` and ``diag_min``: C[h, h] = 1 + Δ[h, h], how much each head's own map is kept (below 1: the
  head is damped, below 0: inverted);
- ``mixing``: the mean over heads h of Σ_{k≠h} |C[h, k]| / Σ_k |C[h, k]|, the share of a head's new map that
  comes from the other heads' maps (0: no mixing, only rescaling);
- ``top``: the largest off-diagonal coefficient, as (h, k, C[h, k]): head h takes that much of head k's map;
- ``uniform``: the share of ‖Δ‖²_F in its row means (Δ[h, k] ≈ c_h for every k): near 1, head h adds c_h times
  the *sum* of all heads' maps rather than choosing heads to mix. Gradients favour that shape when the heads'
  maps are alike (∂L/∂Δ[h, k] = ⟨∂L/∂Â_h, A_k⟩), so it is the first thing to check before reading "which
  heads mix" from a run (a random Δ puts 1/H of its energy there);
- ``gain``: the mean over heads of |Σ_k Δ[h, k]|: each row of a softmax map sums to 1, so the rows of Â_h sum
  to Σ_k C[h, k] = 1 + Σ_k Δ[h, k], and head h's output is rescaled by that much on top of any mixing (an
  IA3-like per-head gain that Coeff-Tuning can learn without choosing heads).

The issue this answers (20, item 4): if Coeff + X adds nothing, is it because ΔC stayed at the identity
(nothing learned: a rate too low, too few steps) or because it moved and did not help?

    deltaspace report coeff-mixing runs/suite_v2_tuned/*/coeff/seed0 [--plot mixing.png]
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deltaspace.attention.hooks import COEFF_HOOK
from deltaspace.errors import MissingFileError, UserInputError
from deltaspace.io import atomic_write

WEIGHTS = Path("delta") / "delta_model.safetensors"
_LAYER = re.compile(r"layers?\.(\d+)\.")


@dataclasses.dataclass
class LayerMixing:
    """The statistics of one layer's Δ (see the module docstring)."""

    name: str
    heads: int
    rel_norm: float
    diag_mean: float
    diag_min: float
    mixing: float
    top: tuple[int, int, float]
    uniform: float
    gain: float

    @classmethod
    def of(cls, name: str, delta: np.ndarray) -> LayerMixing:
        heads = delta.shape[0]
        coefficients = np.eye(heads) + delta
        diagonal = np.diag(coefficients)
        magnitude = np.abs(coefficients)
        off = magnitude * (1.0 - np.eye(heads))
        totals = magnitude.sum(axis=1)
        shares = np.divide(off.sum(axis=1), totals, out=np.zeros(heads), where=totals > 0)
        h, k = np.unravel_index(int(np.argmax(off)), off.shape)
        energy = float((delta**2).sum())
        row_means = delta.mean(axis=1)
        uniform = float(heads * (row_means**2).sum() / energy) if energy > 0 else 0.0
        return cls(
            name=name,
            heads=heads,
            rel_norm=float(np.linalg.norm(delta) / np.sqrt(heads)),
            diag_mean=float(diagonal.mean()),
            diag_min=float(diagonal.min()),
            mixing=float(shares.mean()),
            top=(int(h), int(k), float(coefficients[h, k])),
            uniform=uniform,
            gain=float(np.abs(delta.sum(axis=1)).mean()),
        )


def read_mixing(run: str | Path) -> dict[str, np.ndarray]:
    """Every layer's Δ of a run (or of a delta folder / safetensors file), in layer order."""
    from safetensors import safe_open

    path = Path(run)
    if path.is_dir():
        path = path / WEIGHTS if (path / WEIGHTS).is_file() else path / WEIGHTS.name
    if not path.is_file():
        raise MissingFileError(f"{run}: no saved delta ({WEIGHTS}); train the run with save_delta on")
    found = {}
    with safe_open(str(path), framework="np") as weights:
        for key in weights.keys():  # noqa: SIM118 (safe_open is not a mapping)
            if key.endswith(f"{COEFF_HOOK}.delta"):
                found[key.removesuffix(f".{COEFF_HOOK}.delta")] = weights.get_tensor(key).astype(np.float64)
    if not found:
        raise UserInputError(f"{run}: the delta has no Coeff-Tuning coefficients (no '{COEFF_HOOK}' layers)")
    return dict(sorted(found.items(), key=lambda item: _layer_number(item[0])))


def _layer_number(name: str) -> int:
    match = _LAYER.search(name)
    return int(match.group(1)) if match else 0


def layer_label(name: str) -> str:
    match = _LAYER.search(name)
    return f"layer {match.group(1)}" if match else name


def run_label(run: str | Path) -> str:
    """``<task>/<method>/seed<k>``: the last three parts of a sweep's run folder."""
    return "/".join(Path(run).parts[-3:])


def run_mixing(run: str | Path) -> list[LayerMixing]:
    return [LayerMixing.of(name, delta) for name, delta in read_mixing(run).items()]


def mixing_table(runs: Sequence[str | Path]) -> list[list[str]]:
    """One row per run and layer: the statistics as printed (3 decimals; top as ``h←k C``)."""
    rows = []
    for run in runs:
        label = run_label(run)
        for layer in run_mixing(run):
            h, k, value = layer.top
            rows.append(
                [
                    label,
                    layer_label(layer.name),
                    f"{layer.rel_norm:.3f}",
                    f"{layer.diag_mean:.3f}",
                    f"{layer.diag_min:.3f}",
                    f"{layer.mixing:.3f}",
                    f"{h}←{k} {value:+.3f}",
                    f"{layer.uniform:.2f}",
                    f"{layer.gain:.3f}",
                ]
            )
    return rows


def mixing_summary(runs: Sequence[str | Path]) -> list[list[str]]:
    """One row per run: each statistic's mean over the layers (the largest off-diagonal |C[h, k]| over all
    layers instead of the top entry)."""
    rows = []
    for run in runs:
        layers = run_mixing(run)

        def mean(values: list[float]) -> str:
            return f"{float(np.mean(values)):.3f}"

        rows.append(
            [
                run_label(run),
                str(len(layers)),
                mean([layer.rel_norm for layer in layers]),
                mean([layer.diag_mean for layer in layers]),
                f"{min(layer.diag_min for layer in layers):.3f}",
                mean([layer.mixing for layer in layers]),
                f"{max(abs(layer.top[2]) for layer in layers):.3f}",
                f"{float(np.mean([layer.uniform for layer in layers])):.2f}",
                mean([layer.gain for layer in layers]),
            ]
        )
    return rows


SUMMARY_HEADER = [
    "run",
    "layers",
    "mean ‖Δ‖/‖I‖",
    "mean C[h,h]",
    "min C[h,h]",
    "mean mixing share",
    "largest |off-diagonal|",
    "mean row-uniform share",
    "mean |head gain − 1|",
]
TABLE_HEADER = [
    "run",
    "layer",
    "‖Δ‖/‖I‖",
    "mean C[h,h]",
    "min C[h,h]",
    "mixing share",
    "largest off-diagonal",
    "row-uniform share",
    "|head gain − 1|",
]


def plot_mixing(run: str | Path, path: str | Path, *, title: str | None = None) -> Path:
    """Heat maps of Δ = C − I, one per layer, on one symmetric colour scale (red: a head takes more of
    another head's map, blue: less)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    deltas = read_mixing(run)
    scale = max(float(np.abs(d).max()) for d in deltas.values()) or 1.0
    fig = Figure(figsize=(2.6 * len(deltas) + 0.8, 3.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(deltas), squeeze=False)[0]
    image = None
    for ax, (name, delta) in zip(axes, deltas.items(), strict=True):
        image = ax.imshow(delta, cmap="RdBu_r", vmin=-scale, vmax=scale)
        ax.set_title(layer_label(name), fontsize=9)
        ax.set_xlabel("from head k", fontsize=8)
        ax.tick_params(labelsize=6)
    axes[0].set_ylabel("head h", fontsize=8)
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="Δ[h, k]")
    fig.suptitle(title or f"Coeff-Tuning: C − I of {run}", fontsize=9)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
