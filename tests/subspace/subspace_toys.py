"""Toy subspace members and tasks: small classifiers on synthetic data, cheap enough for unit tests.

Tasks come from a low-dimensional family: task t labels x by ``argmax(W_t x)`` with
``W_t = Σ_i c_ti B_i`` (a few shared basis matrices), so related tasks share structure the subspace can
capture. Each member parameterises a classifier differently, so the same subspace code means different
things to different members.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from deltaspace.subspace import TaskBatches

FEATURES, CLASSES = 12, 3


class LinearMember:
    """θ = (W (K×p), b (K)): logits = x Wᵀ + b (entries past W and b are ignored)."""

    def __init__(self, name: str = "linear", seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.name = name
        self.theta0 = 0.1 * torch.randn(CLASSES * FEATURES + CLASSES, generator=g)

    def logits(self, theta: Tensor, x: Tensor) -> Tensor:
        w = theta[: CLASSES * FEATURES].view(CLASSES, FEATURES)
        return x @ w.t() + theta[CLASSES * FEATURES : CLASSES * FEATURES + CLASSES]

    def loss(self, theta: Tensor, batch: dict) -> Tensor:
        return F.cross_entropy(self.logits(theta, batch["inputs"]), batch["labels"])

    def predict(self, theta: Tensor, batch: dict) -> Tensor:
        return self.logits(theta, batch["inputs"]).argmax(-1)

    def outputs(self, theta: Tensor, batch: dict) -> Tensor:
        return self.logits(theta, batch["inputs"])

    def differentiable_outputs(self, theta: Tensor, batch: dict) -> Tensor:
        return self.logits(theta, batch["inputs"])


class LowRankMember(LinearMember):
    """θ = (A (K×r), B (r×p)): logits = x (A B)ᵀ, a LoRA-like bilinear parameterisation."""

    def __init__(self, name: str = "lowrank", rank: int = 2, seed: int = 1) -> None:
        g = torch.Generator().manual_seed(seed)
        self.name, self.rank = name, rank
        self.theta0 = torch.cat(
            [0.3 * torch.randn(CLASSES * rank, generator=g), torch.zeros(rank * FEATURES)]
        )

    def logits(self, theta: Tensor, x: Tensor) -> Tensor:
        a = theta[: CLASSES * self.rank].view(CLASSES, self.rank)
        b = theta[CLASSES * self.rank :].view(self.rank, FEATURES)
        return x @ (a @ b).t()


class FeatureMember(LinearMember):
    """θ = V (h×K) on fixed random features tanh(x R): a different coordinate system altogether."""

    def __init__(self, name: str = "features", hidden: int = 24, seed: int = 2) -> None:
        g = torch.Generator().manual_seed(seed)
        self.name, self.hidden = name, hidden
        self.proj = torch.randn(FEATURES, hidden, generator=g) / FEATURES**0.5
        self.theta0 = 0.1 * torch.randn(hidden * CLASSES, generator=g)

    def logits(self, theta: Tensor, x: Tensor) -> Tensor:
        return torch.tanh(x @ self.proj) @ theta.view(self.hidden, CLASSES)


def make_task_family(rank: int = 2, seed: int = 0) -> Tensor:
    """The basis matrices B_i (rank, K, p) shared by every task of the family."""
    return torch.randn(rank, CLASSES, FEATURES, generator=torch.Generator().manual_seed(seed))


def make_task(
    name: str,
    basis: Tensor,
    coefficients: Tensor,
    *,
    seed: int,
    n_train: int = 256,
    n_eval: int = 256,
    batch_size: int = 64,
) -> TaskBatches:
    g = torch.Generator().manual_seed(seed)
    weight = torch.einsum("r,rkp->kp", coefficients, basis)

    def sample(n: int) -> tuple[Tensor, Tensor]:
        x = torch.randn(n, FEATURES, generator=g)
        return x, (x @ weight.t()).argmax(-1)

    x, y = sample(n_train)
    xe, ye = sample(n_eval)
    xt, yt = sample(n_eval)
    return TaskBatches.from_tensors(
        name, x, y, batch_size=batch_size, eval_inputs=xe, eval_labels=ye, test_inputs=xt, test_labels=yt,
        num_labels=CLASSES,
    )  # fmt: skip


def train_original(member, task: TaskBatches, steps: int = 150, lr: float = 0.05) -> Tensor:
    """Train the member in its original parameter space from θ0 (full batch Adam); returns θ."""
    theta = member.theta0.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([theta], lr=lr)
    with torch.random.fork_rng():  # the epoch's shuffle draws from the global RNG: fix it, leave it untouched
        torch.manual_seed(0)
        batches = list(task.train_batches())
    batch = {
        "inputs": torch.cat([b["inputs"] for b in batches]),
        "labels": torch.cat([b["labels"] for b in batches]),
    }
    for _ in range(steps):
        optimizer.zero_grad()
        member.loss(theta, batch).backward()
        optimizer.step()
    return theta.detach()
