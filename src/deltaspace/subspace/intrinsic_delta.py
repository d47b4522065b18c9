"""Stage 6, intrinsic adapters: a task solved in the subspace, stored as its d numbers.

An :class:`IntrinsicDelta` is one JSON file: the member (DET) name, the code z (d floats, written with
``repr`` precision so float32 values round-trip exactly), the task and its metrics, and a reference to
the up-projection bundle: its path (relative to the JSON file when possible) and the sha256 of its tensor
file. Loading checks the hash, so a z is never decoded through a different projection than the one it was
found with. ``θ = U_m(z)`` then loads into a DeltaModel with
``dm.load_solution(dm.vector_to_solution(theta))`` (:meth:`IntrinsicDelta.load_into`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from deltaspace.io import read_json, sha256_file, write_json_atomic
from deltaspace.subspace.bundle import TENSORS_FILE, SubspaceBundle

FORMAT = "deltaspace.intrinsic_delta/1"


@dataclass
class IntrinsicDelta:
    """A subspace solution: ``member``'s parameters are ``U_member(z)`` of the referenced bundle."""

    member: str
    z: Tensor
    bundle_path: str
    bundle_sha256: str
    task: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_bundle(
        cls,
        bundle_dir: str | os.PathLike,
        member: str,
        z: Tensor,
        *,
        task: str | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> IntrinsicDelta:
        """Reference a saved bundle directory (its tensor file is hashed now)."""
        bundle_dir = Path(bundle_dir)
        tensors = bundle_dir / TENSORS_FILE
        if not tensors.is_file():
            raise FileNotFoundError(
                f"{tensors} not found; save the bundle (bundle.save(dir)) before referencing it"
            )
        z = torch.as_tensor(z).detach().reshape(-1).float().cpu().clone()
        return cls(member, z, str(bundle_dir), sha256_file(tensors), task, dict(metrics or {}))

    @property
    def dim(self) -> int:
        return self.z.numel()

    def save(self, path: str | os.PathLike) -> Path:
        """Write the JSON file (atomically); the bundle path is stored relative to it when possible."""
        path = Path(path)
        bundle = Path(self.bundle_path)
        try:
            stored = os.path.relpath(bundle.resolve(), path.resolve().parent)
        except ValueError:  # different drives on Windows
            stored = str(bundle.resolve())
        data = {
            "format": FORMAT,
            "member": self.member,
            "dim": self.dim,
            "z": [float(v) for v in self.z.tolist()],
            "bundle": {"path": stored, "tensors_sha256": self.bundle_sha256},
            "task": self.task,
            "metrics": self.metrics,
        }
        return write_json_atomic(path, data)

    @classmethod
    def load(cls, path: str | os.PathLike) -> IntrinsicDelta:
        path = Path(path)
        data = read_json(path)
        if data.get("format") != FORMAT:
            raise ValueError(
                f"{path} is not an intrinsic delta ({FORMAT}); point to a file written by IntrinsicDelta.save"
            )
        z = torch.tensor(data["z"], dtype=torch.float32)
        if z.numel() != data["dim"]:
            raise ValueError(
                f"{path}: z has {z.numel()} numbers but dim says {data['dim']}; the file is corrupt"
            )
        bundle_path = Path(data["bundle"]["path"])
        if not bundle_path.is_absolute():
            bundle_path = (path.parent / bundle_path).resolve()
        return cls(
            data["member"],
            z,
            str(bundle_path),
            data["bundle"]["tensors_sha256"],
            data.get("task"),
            data.get("metrics", {}),
        )

    def load_bundle(self, device: str | torch.device = "cpu") -> SubspaceBundle:
        """Load the referenced bundle, refusing one whose tensors differ from the referenced hash."""
        tensors = Path(self.bundle_path) / TENSORS_FILE
        if not tensors.is_file():
            raise FileNotFoundError(
                f"the referenced bundle {tensors} is missing; restore it or fix the path in the JSON"
            )
        if sha256_file(tensors) != self.bundle_sha256:
            raise ValueError(
                f"bundle {self.bundle_path} does not match the sha256 this delta was found with; use that bundle"
            )
        return SubspaceBundle.load(self.bundle_path, device=device)

    def theta(self, bundle: SubspaceBundle | None = None) -> Tensor:
        """The flat parameters θ = U_member(z) (loads the referenced bundle unless one is given)."""
        if bundle is None:
            bundle = self.load_bundle()
        elif bundle.sha256 is not None and bundle.sha256 != self.bundle_sha256:
            raise ValueError(
                "the given bundle is not the one this intrinsic delta references (sha256 differs)"
            )
        if bundle.dim != self.dim:
            raise ValueError(f"the bundle has d = {bundle.dim}, this delta has {self.dim} numbers")
        return bundle.decode(self.member, self.z)

    def solution(self, model: nn.Module, bundle: SubspaceBundle | None = None) -> dict[str, Tensor]:
        """Named tensors for a DeltaModel (``model.vector_to_solution(θ)``)."""
        theta = self.theta(bundle)
        shapes = getattr(model, "parameter_shapes", None)
        if callable(shapes):
            expected = sum(torch.Size(shape).numel() for shape in shapes().values())
            if expected != theta.numel():
                raise ValueError(
                    f"the model's solution has {expected} parameters but {self.member!r} in the bundle has "
                    f"{theta.numel()}; load it into a DeltaModel with the same delta configuration"
                )
        return model.vector_to_solution(theta)

    def load_into(self, model: nn.Module, bundle: SubspaceBundle | None = None) -> None:
        """Copy θ into a DeltaModel in place: ``model.load_solution(model.vector_to_solution(θ))``."""
        model.load_solution(self.solution(model, bundle))
