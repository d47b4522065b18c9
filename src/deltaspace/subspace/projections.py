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

    def __init__(self, theta0: Tensor | int, dim: int, scale: float) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"intrinsic dimension must be >= 1, got {dim}")
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"projection scale must be a positive finite number, got {scale}")
        if isinstance(theta0, int):
            # directions only (a part of a composite projection such as BasisUp): no anchor of its own,
            # so full fine-tuning's 22.7M-entry θ0 is not held twice
            self.theta0 = None
            self.out_features = theta0
        else:
            theta0 = torch.as_tensor(theta0).detach().reshape(-1)
            self.register_buffer("theta0", theta0.clone())
            self.out_features = theta0.numel()
        self.dim = int(dim)
        self.scale = float(scale)

    @abstractmethod
    def delta(self, z: Tensor) -> Tensor:
        """``P z`` in float32, shape ``(..., D)`` for ``z`` of shape ``(..., d)``."""

    @property
    def out_device(self) -> torch.device:
        """Where the projection's tensors (and so its outputs) live."""
        for tensor in (*self.parameters(), *self.buffers()):
            return tensor.device
        return torch.device("cpu")

    def forward(self, z: Tensor) -> Tensor:
        """θ = θ0 + P z, in θ0's dtype."""
        if self.theta0 is None:
            raise ValueError("this projection holds directions only (no θ0); call delta(z)")
        if z.shape[-1] != self.dim:
            raise ValueError(f"code has size {z.shape[-1]}, this projection expects d = {self.dim}")
        return (self.theta0.float() + self.delta(z.float())).to(self.theta0.dtype)

    def config(self) -> dict[str, Any]:
        config = {"kind": self.kind, "dim": self.dim, "out_features": self.out_features, "scale": self.scale}
        if self.theta0 is not None:
            config["theta0_dtype"] = str(self.theta0.dtype).removeprefix("torch.")
        return config

    def memory_bytes(self) -> int:
        """Bytes held by parameters and buffers (θ0 included)."""
        return _memory(self)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> UpProjection:
        """An uninitialised projection of the saved shape; call ``load_state_dict`` next."""
        kind = config.get("kind")
        classes = {c.kind: c for c in (DenseUp, FastfoodUp, BasisUp)}
        if kind not in classes:
            raise ValueError(f"unknown up-projection kind {kind!r}; known: {', '.join(classes)}")
        options = {
            k: v for k, v in config.items() if k not in ("kind", "dim", "out_features", "theta0_dtype")
        }
        if "theta0_dtype" in config:
            theta0: Tensor | int = torch.zeros(
                config["out_features"], dtype=getattr(torch, config["theta0_dtype"])
            )
        else:
            theta0 = int(config["out_features"])
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


class BasisUp(UpProjection):
    """``P z = scale · B z[:k] + E z[k:]``: k columns spanning given solutions, plus d − k extra directions.

    Not in the paper, whose decoder is a randomly initialised dense (D, d) matrix that must *learn* to
    reproduce the source solutions (and, at full fine-tuning's D, cannot be held at all). Here the first k
    columns ``B`` (D, k) are set in closed form from the source solutions (see ``closed_form.py``), so
    the source solutions are reproduced exactly from the start; the remaining d − k directions ``E`` are
    random, dense or structured (:class:`DenseUp` / :class:`FastfoodUp` without an anchor of their own),
    so nothing of size d × D is needed. Memory: k·D + that of ``E``. ``B`` and ``E`` are learnable unless
    ``train_basis=False``: then the whole decoder is fixed (``B`` a buffer), e.g. for full fine-tuning,
    where k·D floats of gradient and optimiser state would double the footprint and a fixed linear
    decoder's reconstruction error costs O(d²) from its Gram statistics
    (:mod:`~deltaspace.subspace.frozen_reconstruction`).
    """

    kind = "basis"

    def __init__(
        self,
        theta0: Tensor | int,
        dim: int,
        *,
        scale: float = 1.0,
        basis: Tensor | None = None,
        basis_dim: int | None = None,
        extra: dict[str, Any] | UpProjection | None = None,
        train_basis: bool = True,
        init: bool = True,
    ) -> None:
        super().__init__(theta0, dim, scale)
        k = basis.shape[1] if basis is not None else basis_dim
        if k is None or not 1 <= k <= self.dim:
            raise ValueError(f"basis_dim must be between 1 and d = {self.dim}, got {k}")
        self.basis_dim = int(k)
        values = torch.zeros(self.out_features, self.basis_dim)
        if basis is not None:
            if basis.shape != (self.out_features, self.basis_dim):
                raise ValueError(
                    f"basis has shape {tuple(basis.shape)}, expected ({self.out_features}, {self.basis_dim})"
                )
            values = basis.detach().float() / self.scale
        self.train_basis = bool(train_basis)
        if self.train_basis:
            self.basis = nn.Parameter(values)
        else:
            self.register_buffer("basis", values)
        if isinstance(extra, dict):
            extra = UpProjection.from_config(extra)
        if self.dim > self.basis_dim:
            if extra is None or extra.dim != self.dim - self.basis_dim:
                raise ValueError(f"{self.dim - self.basis_dim} extra directions needed, got {extra}")
            if extra.theta0 is not None or extra.out_features != self.out_features:
                raise ValueError("extra directions must be a directions-only projection of the same D")
        elif extra is not None:
            raise ValueError("no extra directions are needed when basis_dim equals d")
        if extra is not None and not self.train_basis:
            extra.requires_grad_(False)
        self.extra = extra

    def config(self) -> dict[str, Any]:
        config = {**super().config(), "basis_dim": self.basis_dim, "train_basis": self.train_basis}
        if self.extra is not None:
            config["extra"] = self.extra.config()
        return config

    def delta(self, z: Tensor) -> Tensor:
        out = self.scale * (z[..., : self.basis_dim] @ self.basis.t())
        if self.extra is not None:
            out = out + self.extra.delta(z[..., self.basis_dim :])
        return out


class _CodeHead(nn.Module):
    """``W2·tanh(W1·x + b1) + b2``: W1 ~ N(0, 1) (inputs have unit norm), W2 ~ N(0, 0.02²), zero biases.

    ``train_first_layer=False`` keeps W1, b1 fixed (buffers): random tanh features with a learned linear
    read-out. The paper trains both layers; but with Adafactor's unscaled updates every entry of a
    (hidden, D) W1 moves by about lr per step, which shifts pre-activations by ~lr·√D and saturates the
    tanh within a step or two for D >= 1e5 (collapsing the codes of correlated tasks onto one point).
    """

    def __init__(
        self,
        in_features: int,
        hidden: int,
        dim: int,
        generator: torch.Generator | None,
        train_first_layer: bool = True,
    ) -> None:
        super().__init__()
        w1, w2 = torch.empty(hidden, in_features), torch.empty(dim, hidden)
        if generator is not None:
            w1.normal_(0.0, 1.0, generator=generator)
            w2.normal_(0.0, 0.02, generator=generator)
        if train_first_layer:
            self.w1, self.b1 = nn.Parameter(w1), nn.Parameter(torch.zeros(hidden))
        else:
            self.register_buffer("w1", w1)
            self.register_buffer("b1", torch.zeros(hidden))
        self.w2, self.b2 = nn.Parameter(w2), nn.Parameter(torch.zeros(dim))

    def hidden(self, x: Tensor) -> Tensor:
        return torch.tanh(x @ self.w1.t() + self.b1)

    @torch.no_grad()
    def fit_readout(self, x: Tensor, codes: Tensor) -> None:
        """Set W2, b2 by least squares so that ``head(x_t) = codes_t`` (exact when hidden + 1 >= rows)."""
        h = self.hidden(x.float())
        design = torch.cat([h, torch.ones(h.shape[0], 1)], dim=1).double()
        solution = torch.linalg.lstsq(design, codes.double(), driver="gelsd").solution
        self.w2.copy_(solution[:-1].t().float())
        self.b2.copy_(solution[-1].float())

    def forward(self, x: Tensor) -> Tensor:
        return self.hidden(x) @ self.w2.t() + self.b2


class DownProjection(nn.Module, ABC):
    """Δ -> z. ``features`` is the fixed (parameter-free) part, so callers can cache it for fixed Δ's.

    The code head ``W2·tanh(W1·x + b1) + b2`` (``hidden`` units, default ``dim``) reads the features; a
    subclass sets its fixed map up in :meth:`_fixed_map` (which draws from the seeded generator first) and
    takes its own options through ``fixed``.
    """

    kind: ClassVar[str] = ""
    head: _CodeHead

    def __init__(
        self,
        in_features: int,
        dim: int,
        *,
        hidden: int | None = None,
        input_scale: float = 1.0,
        seed: int = 0,
        train_first_layer: bool = True,
        **fixed: Any,
    ) -> None:
        super().__init__()
        if not math.isfinite(input_scale) or input_scale <= 0:
            raise ValueError(f"input_scale must be a positive finite number, got {input_scale}")
        self.in_features, self.dim, self.input_scale = int(in_features), int(dim), float(input_scale)
        generator = _generator(seed)
        width = self._fixed_map(generator, **fixed)
        self.head = _CodeHead(width, hidden or dim, dim, generator, train_first_layer)

    def _fixed_map(self, generator: torch.Generator) -> int:
        """Set up the fixed part of :meth:`features`; returns its output width (here: Δ itself)."""
        return self.in_features

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

    def features(self, delta: Tensor) -> Tensor:
        return delta.float() / self.input_scale


class SketchDown(DownProjection):
    """``W2·tanh(W1·S(Δ/input_scale) + b1) + b2`` with a fixed structured sketch ``S``: R^D -> R^k.

    ``S(x) = Σ_j H(g_j ⊙ x_j) / √k`` over blocks ``x_j`` of k coordinates with fixed Gaussian diagonals
    ``g_j``: a Johnson–Lindenstrauss-style map (E|S x|² = |x|²) whose memory is the D numbers of ``g``.
    """

    kind = "sketch"

    def _fixed_map(self, generator: torch.Generator, sketch_dim: int | None = None) -> int:
        """``sketch_dim`` k (a power of two, default max(dim, 256)) and the Gaussian diagonals ``g_j``."""
        k = next_power_of_two(sketch_dim if sketch_dim is not None else max(self.dim, 256))
        self.sketch_dim = k
        self.blocks = -(-self.in_features // k)
        self.register_buffer("gauss", torch.randn(self.blocks, k, generator=generator))
        return k

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
    kind: str, theta0: Tensor | int, dim: int, *, scale: float, seed: int, width: int | None = None
) -> UpProjection:
    if kind == "dense":
        return DenseUp(theta0, dim, scale=scale, seed=seed)
    if kind == "fastfood":
        return FastfoodUp(theta0, dim, scale=scale, seed=seed, width=width)
    raise ValueError(f"unknown up-projection {kind!r}; use {', '.join(UP_KINDS)}")


def make_down(
    kind: str, in_features: int, dim: int, *, sketch_dim: int | None = None, **options: Any
) -> DownProjection:
    """A down-projection of ``kind``; ``options`` are :class:`DownProjection`'s (``hidden``, ``input_scale``,
    ``seed``, ``train_first_layer``); ``sketch_dim`` applies to "sketch" only."""
    if kind == "mlp":
        return MLPDown(in_features, dim, **options)
    if kind == "sketch":
        return SketchDown(in_features, dim, sketch_dim=sketch_dim, **options)
    raise ValueError(f"unknown down-projection {kind!r}; use {', '.join(DOWN_KINDS)}")
