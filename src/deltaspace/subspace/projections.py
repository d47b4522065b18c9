"""Per-DET projections between a DET's flat parameter space (D_m) and the shared subspace (d).

Up-projections map a code z ∈ R^d to parameters, anchored at the DET's initial point and bias-free:
``U(z) = θ0 + P z`` (the paper's linear decoder), so ``z = 0`` is the shared random init.

- :class:`DenseUp`: ``P = scale · W`` with a dense (D, d) ``W`` (the paper's decoder).
- :class:`FastfoodUp`: a structured ``P`` whose memory is O(D + n·d) (no D×d matrix): a Fastfood
  transform (Le et al. 2013, as used by Aghajanyan et al.'s SAID) with a learnable Gaussian diagonal per
  block (as in the paper's released ``intrinsic.py``), a learnable per-coordinate output scale and a
  learnable n×d input map. Used for full fine-tuning and any DET too large for a dense matrix.

Down-projections ("encoders") map a solution's Δ to its code, the paper's two-layer tanh encoder
``W2·tanh(W1·x + b1) + b2``:

- :class:`MLPDown`: ``x = Δ / input_scale`` fed to a dense (hidden, D) ``W1`` (the paper's encoder).
- :class:`SketchDown`: ``x = S(Δ / input_scale)`` where ``S`` is a fixed norm-preserving structured random
  sketch R^D -> R^k (per-block random Gaussian diagonal + Hadamard, blocks summed); only the small MLP on
  top is learnable, so memory is O(D + k·hidden).

Scale conventions (an improvement over the paper, which uses raw N(0, 0.02) weights whatever D_m is):
``scale`` and ``input_scale`` are set per DET from the typical norm of its deltas, so codes are O(1) and
learning rates mean the same thing for a 300-parameter DET and a 22M-parameter one. The reconstruction
loss is likewise normalised per DET (:func:`relative_reconstruction_error`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from deltaspace.subspace.hadamard import fwht, next_power_of_two

UP_KINDS = ("dense", "fastfood")
DOWN_KINDS = ("mlp", "sketch")


def relative_reconstruction_error(delta: Tensor, reconstruction: Tensor) -> Tensor:
    """``||Δ − Pz||² / ||Δ||²`` over the last dim: scale-free, so DETs of any size weigh the same.

    The paper uses the unnormalised ``||Δ − Pz||₂``, whose size depends on D_m and on the DET's delta
    norms, so one λ cannot suit Coeff-Tuning (hundreds of parameters) and adapters (hundreds of
    thousands) at once.
    """
    denom = delta.pow(2).sum(-1).clamp_min(torch.finfo(delta.dtype).tiny)
    return (delta - reconstruction).pow(2).sum(-1) / denom


def _memory(module: nn.Module) -> int:
    tensors = [*module.parameters(), *module.buffers()]
    return int(sum(t.numel() * t.element_size() for t in tensors))


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


class UpProjection(nn.Module, ABC):
    """``U(z) = θ0 + P z`` for one DET. ``delta(z) = P z`` is what the reconstruction loss compares to Δ."""

    kind: ClassVar[str] = ""

    def __init__(self, theta0: Tensor, dim: int, scale: float) -> None:
        super().__init__()
        theta0 = torch.as_tensor(theta0).detach().reshape(-1)
        if dim < 1:
            raise ValueError(f"intrinsic dimension must be >= 1, got {dim}")
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"projection scale must be a positive finite number, got {scale}")
        self.register_buffer("theta0", theta0.clone())
        self.dim = int(dim)
        self.out_features = theta0.numel()
        self.scale = float(scale)

    @abstractmethod
    def delta(self, z: Tensor) -> Tensor:
        """``P z`` in float32, shape ``(..., D)`` for ``z`` of shape ``(..., d)``."""

    def forward(self, z: Tensor) -> Tensor:
        """θ = θ0 + P z, in θ0's dtype."""
        if z.shape[-1] != self.dim:
            raise ValueError(f"code has size {z.shape[-1]}, this projection expects d = {self.dim}")
        return (self.theta0.float() + self.delta(z.float())).to(self.theta0.dtype)

    def config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "dim": self.dim,
            "out_features": self.out_features,
            "scale": self.scale,
            "theta0_dtype": str(self.theta0.dtype).removeprefix("torch."),
        }

    def memory_bytes(self) -> int:
        """Bytes held by parameters and buffers (θ0 included)."""
        return _memory(self)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> UpProjection:
        """An uninitialised projection of the saved shape; call ``load_state_dict`` next."""
        kind = config.get("kind")
        classes = {c.kind: c for c in (DenseUp, FastfoodUp)}
        if kind not in classes:
            raise ValueError(f"unknown up-projection kind {kind!r}; known: {', '.join(UP_KINDS)}")
        options = {
            k: v for k, v in config.items() if k not in ("kind", "dim", "out_features", "theta0_dtype")
        }
        theta0 = torch.zeros(
            config["out_features"], dtype=getattr(torch, config.get("theta0_dtype", "float32"))
        )
        return classes[kind](theta0, config["dim"], init=False, **options)


class DenseUp(UpProjection):
    """``P = scale · W`` with ``W`` (D, d) ~ N(0, init_std²): the paper's linear bias-free decoder."""

    kind = "dense"

    def __init__(
        self,
        theta0: Tensor,
        dim: int,
        *,
        scale: float = 1.0,
        init_std: float = 1.0,
        seed: int = 0,
        init: bool = True,
    ) -> None:
        super().__init__(theta0, dim, scale)
        weight = torch.empty(self.out_features, self.dim)
        if init:
            weight.normal_(0.0, init_std, generator=_generator(seed))
        self.weight = nn.Parameter(weight)

    def delta(self, z: Tensor) -> Tensor:
        return self.scale * (z @ self.weight.t())


class FastfoodUp(UpProjection):
    """Structured ``P z = scale · s ⊙ [H(G_j ⊙ u)]_j``, with ``u = Π H B (M z) / √n``.

    ``M`` (n, d) is a learnable input map (init ``init_std·[I; 0]``), ``B`` fixed random signs, ``Π`` a
    fixed permutation, ``H`` the n×n Walsh–Hadamard matrix (applied by FWHT, never stored), ``G_j`` a
    learnable Gaussian diagonal for output block j (blocks of n coordinates, D/n of them) and ``s`` a
    learnable per-coordinate scale (init 1). At init the columns of ``P/scale`` behave like i.i.d.
    N(0, init_std²) vectors, matching :class:`DenseUp`.

    Memory: G and s hold ~D numbers each, M holds n·d, B and Π n each: O(D + n·d), never D·d. Capacity:
    ``range(P) ⊂ diag(s)·range(F)``; with the learnable scale ``s`` any single target Δ is exactly
    representable, but several unrelated Δ's generally are not (storing k arbitrary D-vectors needs k·D
    numbers). Use :class:`DenseUp` when the memory allows and many tasks must be reconstructed exactly.
    """

    kind = "fastfood"

    def __init__(
        self,
        theta0: Tensor,
        dim: int,
        *,
        scale: float = 1.0,
        width: int | None = None,
        init_std: float = 1.0,
        seed: int = 0,
        init: bool = True,
    ) -> None:
        super().__init__(theta0, dim, scale)
        n = next_power_of_two(width if width is not None else max(self.dim, 64))
        if n < self.dim:
            raise ValueError(f"fastfood width {n} is smaller than d = {self.dim}; use width >= d")
        self.width = n
        self.blocks = -(-self.out_features // n)
        generator = _generator(seed)
        signs = torch.ones(n)
        perm = torch.arange(n)
        gauss = torch.empty(self.blocks, n)
        mix = torch.zeros(n, self.dim)
        if init:
            signs = torch.randint(0, 2, (n,), generator=generator).float() * 2 - 1
            perm = torch.randperm(n, generator=generator)
            gauss.normal_(0.0, 1.0, generator=generator)
            mix[: self.dim] = init_std * torch.eye(self.dim)
        self.register_buffer("signs", signs)
        self.register_buffer("perm", perm)
        self.gauss = nn.Parameter(gauss)
        self.coord_scale = nn.Parameter(torch.ones(self.out_features))
        self.mix = nn.Parameter(mix)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "width": self.width}

    def delta(self, z: Tensor) -> Tensor:
        n = self.width
        x = z @ self.mix.t()  # (..., n)
        u = fwht(x * self.signs)[..., self.perm] / math.sqrt(n)  # orthonormal mixing of the code
        y = fwht(self.gauss * u.unsqueeze(-2))  # (..., blocks, n): entries ~ N(0, |x|²)
        y = y.flatten(-2)[..., : self.out_features]
        return self.scale * self.coord_scale * y


class _CodeHead(nn.Module):
    """``W2·tanh(W1·x + b1) + b2``: W1 ~ N(0, 1) (inputs have unit norm), W2 ~ N(0, 0.02²), zero biases."""

    def __init__(self, in_features: int, hidden: int, dim: int, generator: torch.Generator | None) -> None:
        super().__init__()
        w1, w2 = torch.empty(hidden, in_features), torch.empty(dim, hidden)
        if generator is not None:
            w1.normal_(0.0, 1.0, generator=generator)
            w2.normal_(0.0, 0.02, generator=generator)
        self.w1, self.b1 = nn.Parameter(w1), nn.Parameter(torch.zeros(hidden))
        self.w2, self.b2 = nn.Parameter(w2), nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x @ self.w1.t() + self.b1) @ self.w2.t() + self.b2


class DownProjection(nn.Module, ABC):
    """Δ -> z. ``features`` is the fixed (parameter-free) part, so callers can cache it for fixed Δ's."""

    kind: ClassVar[str] = ""
    head: _CodeHead

    def __init__(self, in_features: int, dim: int, input_scale: float) -> None:
        super().__init__()
        if not math.isfinite(input_scale) or input_scale <= 0:
            raise ValueError(f"input_scale must be a positive finite number, got {input_scale}")
        self.in_features, self.dim, self.input_scale = int(in_features), int(dim), float(input_scale)

    @abstractmethod
    def features(self, delta: Tensor) -> Tensor:
        """Fixed map of Δ (..., D) to the head's input (..., F); no learnable parameters."""

    def forward(self, delta: Tensor) -> Tensor:
        return self.head(self.features(delta))

    def memory_bytes(self) -> int:
        return _memory(self)


class MLPDown(DownProjection):
    """The paper's encoder ``W2·tanh(W1·(Δ/input_scale) + b1) + b2`` with a dense (hidden, D) W1."""

    kind = "mlp"

    def __init__(
        self,
        in_features: int,
        dim: int,
        *,
        hidden: int | None = None,
        input_scale: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(in_features, dim, input_scale)
        self.head = _CodeHead(in_features, hidden or dim, dim, _generator(seed))

    def features(self, delta: Tensor) -> Tensor:
        return delta.float() / self.input_scale


class SketchDown(DownProjection):
    """``W2·tanh(W1·S(Δ/input_scale) + b1) + b2`` with a fixed structured sketch ``S``: R^D -> R^k.

    ``S(x) = Σ_j H(g_j ⊙ x_j) / √k`` over blocks ``x_j`` of k coordinates with fixed Gaussian diagonals
    ``g_j``: a Johnson–Lindenstrauss-style map (E|S x|² = |x|²) whose memory is the D numbers of ``g``.
    """

    kind = "sketch"

    def __init__(
        self,
        in_features: int,
        dim: int,
        *,
        sketch_dim: int | None = None,
        hidden: int | None = None,
        input_scale: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(in_features, dim, input_scale)
        k = next_power_of_two(sketch_dim if sketch_dim is not None else max(dim, 256))
        self.sketch_dim = k
        self.blocks = -(-in_features // k)
        generator = _generator(seed)
        self.register_buffer("gauss", torch.randn(self.blocks, k, generator=generator))
        self.head = _CodeHead(k, hidden or dim, dim, generator)

    def features(self, delta: Tensor) -> Tensor:
        x = delta.float() / self.input_scale
        pad = self.blocks * self.sketch_dim - self.in_features
        if pad:
            x = torch.nn.functional.pad(x, (0, pad))
        x = x.reshape(*x.shape[:-1], self.blocks, self.sketch_dim)
        return fwht(x * self.gauss).sum(-2) / math.sqrt(self.sketch_dim)


def resolve_kinds(up: str, down: str, in_features: int, dim: int, max_dense_elements: int) -> tuple[str, str]:
    """Turn ``"auto"`` into dense/mlp when a D×d matrix has at most ``max_dense_elements`` entries."""
    small = in_features * dim <= max_dense_elements
    up = ("dense" if small else "fastfood") if up == "auto" else up
    down = ("mlp" if small else "sketch") if down == "auto" else down
    if up not in UP_KINDS:
        raise ValueError(f"unknown up-projection {up!r}; use auto, {', '.join(UP_KINDS)}")
    if down not in DOWN_KINDS:
        raise ValueError(f"unknown down-projection {down!r}; use auto, {', '.join(DOWN_KINDS)}")
    return up, down


def make_up(
    kind: str, theta0: Tensor, dim: int, *, scale: float, seed: int, width: int | None = None
) -> UpProjection:
    if kind == "dense":
        return DenseUp(theta0, dim, scale=scale, seed=seed)
    if kind == "fastfood":
        return FastfoodUp(theta0, dim, scale=scale, seed=seed, width=width)
    raise ValueError(f"unknown up-projection {kind!r}; use {', '.join(UP_KINDS)}")


def make_down(
    kind: str,
    in_features: int,
    dim: int,
    *,
    input_scale: float,
    seed: int,
    hidden: int | None = None,
    sketch_dim: int | None = None,
) -> DownProjection:
    if kind == "mlp":
        return MLPDown(in_features, dim, hidden=hidden, input_scale=input_scale, seed=seed)
    if kind == "sketch":
        return SketchDown(
            in_features, dim, sketch_dim=sketch_dim, hidden=hidden, input_scale=input_scale, seed=seed
        )
    raise ValueError(f"unknown down-projection {kind!r}; use {', '.join(DOWN_KINDS)}")
