"""The unified optimisation subspace across delta-tuning methods ("Different Tunes Played with Equal Skill").

Stages: solutions of each DET (member) per task go into a :class:`SolutionStore`; :func:`fit` (stage 1)
learns per-member projections into one shared d-dimensional code space (:class:`SubspaceBundle`);
:func:`optimise` (stage 2) solves a task by training only z; :func:`transfer` (stage 3) decodes z through
every other member; :func:`landscape` (stage 4) maps a 2-D plane of the subspace; full fine-tuning takes
part through structured projections (stage 5); :class:`IntrinsicDelta` (stage 6) stores a solution as its
d numbers plus a reference to the bundle.
"""

from deltaspace.subspace.batches import TaskBatches, batch_labels
from deltaspace.subspace.bundle import SubspaceBundle
from deltaspace.subspace.evaluate import evaluate
from deltaspace.subspace.fit import FitConfig, fit
from deltaspace.subspace.intrinsic_delta import IntrinsicDelta
from deltaspace.subspace.landscape import (
    Landscape,
    Plane,
    default_plane,
    landscape,
    pca_plane,
    plane_through,
    solution_plane,
)
from deltaspace.subspace.member import DeltaModelMember, SubspaceMember
from deltaspace.subspace.optimise import OptimiseConfig, OptimiseResult, optimise
from deltaspace.subspace.projections import (
    DenseUp,
    DownProjection,
    FastfoodUp,
    MLPDown,
    SketchDown,
    UpProjection,
    relative_reconstruction_error,
)
from deltaspace.subspace.store import SolutionStore
from deltaspace.subspace.transfer import TransferResult, optimise_and_transfer, transfer

__all__ = [
    "DeltaModelMember",
    "DenseUp",
    "DownProjection",
    "FastfoodUp",
    "FitConfig",
    "IntrinsicDelta",
    "Landscape",
    "MLPDown",
    "OptimiseConfig",
    "OptimiseResult",
    "Plane",
    "SketchDown",
    "SolutionStore",
    "SubspaceBundle",
    "SubspaceMember",
    "TaskBatches",
    "TransferResult",
    "UpProjection",
    "batch_labels",
    "default_plane",
    "evaluate",
    "fit",
    "landscape",
    "optimise",
    "optimise_and_transfer",
    "pca_plane",
    "plane_through",
    "relative_reconstruction_error",
    "solution_plane",
    "transfer",
]
