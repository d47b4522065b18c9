"""Where a stage-2 code lies relative to the source codes that stage 1 was fitted on.

The joint fit trains the map from a code to each DET's parameters at the source tasks' codes (its
interpolation term mixes one task's DET codes, which the closed form makes equal), and the decoders are
linear: between the source codes, a code decodes to the same mixture of source solutions in every DET. That
region is where one code is made to mean the same to every DET. A held-out task's stage-2 code can leave it
two ways: along directions outside the span of the source codes (the
descent or random extra directions, which each DET reads its own way), and, inside the span, as a
combination of the source solutions that is no mixture (negative weights, or weights summing far from 1:
an extrapolation from the solutions rather than an interpolation between them). Not in the paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CodeGeometry:
    """``outside_span``: the fraction of the code's norm outside the span of the source codes (0 inside);
    ``weight_sum`` and ``negative_weight``: the sum of the source-code weights that give the code's part in
    that span and their negative mass (a mixture of θ0 and the source codes: sum ≤ 1, negative mass 0);
    ``norm``: the code's length."""

    norm: float
    outside_span: float
    weight_sum: float
    negative_weight: float


def code_geometry(code: Sequence[float], source_codes: Sequence[Sequence[float]]) -> CodeGeometry:
    """The code's position against the source codes (least-squares weights: the minimum-norm ones when
    the source codes are linearly dependent)."""
    z = np.asarray(code, dtype=np.float64).reshape(-1)
    sources = np.asarray(source_codes, dtype=np.float64)
    if sources.ndim != 2 or sources.shape[0] == 0 or sources.shape[1] != z.size:
        raise ValueError(
            f"source codes must be a non-empty (k, {z.size}) array to place a code of size {z.size}, "
            f"got shape {sources.shape}"
        )
    weights = np.linalg.lstsq(sources.T, z, rcond=None)[0]
    norm = float(np.linalg.norm(z))
    outside = float(np.linalg.norm(z - sources.T @ weights)) / norm if norm > 0 else 0.0
    return CodeGeometry(
        norm=norm,
        outside_span=outside,
        weight_sum=float(weights.sum()),
        negative_weight=float(-weights[weights < 0].sum()),
    )
