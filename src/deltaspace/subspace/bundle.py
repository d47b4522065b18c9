"""``SubspaceBundle``: what stage 1 produces and stages 2–6 consume.

It holds every member's up-projection (with its anchor θ0), the codes of the source solutions
(member -> task -> z) and JSON metadata (fit config, validation history, memory report). The encoders are
deliberately not part of it: stages 2–6 never need them (the paper's stage 2 keeps ~330M unused encoder
parameters in memory at d = 100).

On disk: ``bundle.safetensors`` (all tensors) and ``bundle.json`` (structure, metadata and the sha256 of
the tensor file). The tensor file is written first and the JSON last, both atomically, so a directory
with a ``bundle.json`` always holds a complete bundle; :meth:`SubspaceBundle.load` checks the hash.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor

from deltaspace.io import read_json, sha256_file, write_json_atomic, write_safetensors_atomic
from deltaspace.subspace.projections import UpProjection, relative_reconstruction_error
from deltaspace.subspace.store import SolutionStore, shared_tasks

TENSORS_FILE = "bundle.safetensors"
INDEX_FILE = "bundle.json"
FORMAT = "deltaspace.subspace_bundle/1"


class SubspaceBundle:
    """The unified subspace: up-projections U_m sharing the code space R^d, plus the source codes."""

    def __init__(
        self,
        ups: Mapping[str, UpProjection],
        codes: Mapping[str, Mapping[str, Tensor]] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if not ups:
            raise ValueError("a SubspaceBundle needs at least one up-projection")
        dims = {name: up.dim for name, up in ups.items()}
        if len(set(dims.values())) != 1:
            raise ValueError(f"all up-projections must share the intrinsic dimension d; got {dims}")
        self.ups: dict[str, UpProjection] = dict(ups)
        self.dim: int = next(iter(dims.values()))
        self.codes: dict[str, dict[str, Tensor]] = {}
        for member, by_task in (codes or {}).items():
            if member not in self.ups:
                raise ValueError(f"codes given for unknown member {member!r}; members: {self.members}")
            for task, z in by_task.items():
                z = torch.as_tensor(z).detach().reshape(-1).float().cpu()
                if z.numel() != self.dim:
                    raise ValueError(
                        f"code of ({member!r}, {task!r}) has size {z.numel()}, expected d = {self.dim}"
                    )
                self.codes.setdefault(member, {})[task] = z
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.sha256: str | None = None

    @property
    def members(self) -> list[str]:
        return list(self.ups)

    def tasks(self) -> list[str]:
        """Tasks with a code for every member, in first-seen order."""
        return shared_tasks(self.codes)

    def up(self, member: str) -> UpProjection:
        if member not in self.ups:
            raise KeyError(f"member {member!r} is not in this bundle; members: {self.members}")
        return self.ups[member]

    def code(self, member: str, task: str) -> Tensor:
        try:
            return self.codes[member][task]
        except KeyError:
            raise KeyError(f"no code for member {member!r} on task {task!r}; tasks: {self.tasks()}") from None

    def task_codes(self, task: str) -> dict[str, Tensor]:
        """member -> code of that member's solution on ``task``."""
        return {member: self.code(member, task) for member in self.members}

    @torch.no_grad()
    def decode(self, member: str, z: Tensor) -> Tensor:
        """θ = U_member(z) (detached)."""
        up = self.up(member)
        return up(torch.as_tensor(z).to(up.theta0.device)).detach()

    def memory_bytes(self) -> dict[str, int]:
        return {member: up.memory_bytes() for member, up in self.ups.items()}

    def to(self, device: str | torch.device) -> SubspaceBundle:
        for up in self.ups.values():
            up.to(device)
        return self

    @torch.no_grad()
    def reconstruction_errors(self, store: SolutionStore) -> dict[str, dict[str, float]]:
        """Relative squared error ``|Δ − P z|² / |Δ|²`` of each stored code against the store's Δ."""
        errors: dict[str, dict[str, float]] = {}
        for member, by_task in self.codes.items():
            up = self.ups[member]
            for task, z in by_task.items():
                if store.has(member, task):
                    delta = store.delta(member, task).to(up.theta0.device)
                    recon = up.delta(z.to(up.theta0.device))
                    errors.setdefault(member, {})[task] = float(relative_reconstruction_error(delta, recon))
        return errors

    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        tensors: dict[str, Tensor] = {}
        members = []
        for i, (member, up) in enumerate(self.ups.items()):
            for key, value in up.state_dict().items():
                tensors[f"up.{i}.{key}"] = value
            codes = []
            for j, (task, z) in enumerate(self.codes.get(member, {}).items()):
                tensors[f"code.{i}.{j}"] = z
                codes.append(task)
            members.append({"name": member, "up": up.config(), "code_tasks": codes})
        write_safetensors_atomic(directory / TENSORS_FILE, tensors)
        self.sha256 = sha256_file(directory / TENSORS_FILE)
        index = {
            "format": FORMAT,
            "dim": self.dim,
            "members": members,
            "tensors_sha256": self.sha256,
            "metadata": self.metadata,
        }
        write_json_atomic(directory / INDEX_FILE, index)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> SubspaceBundle:
        directory = Path(directory)
        index = _read_index(directory)
        tensor_path = directory / TENSORS_FILE
        if not tensor_path.is_file():
            raise FileNotFoundError(
                f"{tensor_path} is missing; the bundle directory is incomplete, re-save it"
            )
        digest = sha256_file(tensor_path)
        if digest != index["tensors_sha256"]:
            raise ValueError(
                f"{tensor_path} does not match the sha256 in {INDEX_FILE}; the bundle was modified, re-save it"
            )
        tensors = load_file(str(tensor_path))
        ups = {}
        for i, entry in enumerate(index["members"]):
            up = UpProjection.from_config(entry["up"])
            prefix = f"up.{i}."
            state = {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}
            up.load_state_dict(state, strict=True)
            ups[entry["name"]] = up.to(device)
        bundle = cls(ups, _codes(index, tensors.__getitem__), index.get("metadata", {}))
        bundle.sha256 = digest
        return bundle


def _read_index(directory: Path) -> dict[str, Any]:
    index = read_json(directory / INDEX_FILE)
    if index.get("format") != FORMAT:
        raise ValueError(
            f"{directory} holds {index.get('format')!r}, not a {FORMAT} bundle; point to a fit() output"
        )
    return index


def _codes(index: dict[str, Any], tensor: Callable[[str], Tensor]) -> dict[str, dict[str, Tensor]]:
    """Member -> task -> code from a bundle's index, each code read by name with ``tensor``."""
    return {
        entry["name"]: {task: tensor(f"code.{i}.{j}") for j, task in enumerate(entry["code_tasks"])}
        for i, entry in enumerate(index["members"])
    }


def read_codes(directory: str | os.PathLike) -> dict[str, dict[str, Tensor]]:
    """A saved bundle's source codes (member -> task -> z) without its projections, which can be gigabytes
    (full fine-tuning's): for reports that place codes, not for decoding them (the tensors' sha256 is not
    checked; :meth:`SubspaceBundle.load` does)."""
    directory = Path(directory)
    index = _read_index(directory)
    with safe_open(str(directory / TENSORS_FILE), framework="pt") as tensors:
        return _codes(index, tensors.get_tensor)
