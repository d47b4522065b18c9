"""Subspace members: one per delta-tuning method (DET) taking part in the unified subspace.

A member is the small interface the subspace stages work against: a name, its flat initial point θ0
(reproducible from the DET's seed) and two functions of a flat parameter vector θ: the task loss
(differentiable with respect to θ) and predicted labels. :class:`DeltaModelMember` adapts a
``DeltaModel``; tests and toy studies can implement the protocol directly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@runtime_checkable
class SubspaceMember(Protocol):
    """One DET in the subspace: ``theta0`` is its (D_m,) flat initial point."""

    name: str
    theta0: Tensor

    def loss(self, theta: Tensor, batch: Any) -> Tensor:
        """Scalar task loss of the DET with flat parameters ``theta`` (differentiable wrt ``theta``)."""
        ...

    def predict(self, theta: Tensor, batch: Any) -> Tensor:
        """Predicted labels (1-D integer tensor) for ``batch`` with flat parameters ``theta``."""
        ...


def check_member(member: Any) -> None:
    """Raise a one-line ValueError when ``member`` does not follow :class:`SubspaceMember`."""
    if not isinstance(member, SubspaceMember):
        raise ValueError(
            f"{type(member).__name__} is not a SubspaceMember; it needs name, theta0, loss(theta, batch) and "
            "predict(theta, batch) (wrap a DeltaModel with DeltaModelMember)"
        )
    theta0 = member.theta0
    if not isinstance(theta0, Tensor) or theta0.dim() != 1 or theta0.numel() == 0:
        raise ValueError(
            f"member {member.name!r}: theta0 must be a non-empty 1-D tensor, got {getattr(theta0, 'shape', theta0)}"
        )
    if not theta0.is_floating_point():
        raise ValueError(
            f"member {member.name!r}: theta0 must be a floating-point tensor, got {theta0.dtype}"
        )


def _move(value: Any, device: torch.device) -> Any:
    return value.to(device) if isinstance(value, Tensor) else value


class DeltaModelMember:
    """A ``DeltaModel`` as a subspace member (classification with a ``.logits`` output).

    It relies only on the documented DeltaModel API: ``vector_to_solution(theta)`` (named views into the
    flat vector, so gradients flow back to θ) and ``functional_call(solution, **inputs)`` (runs the model
    with those tensors substituted, no mutation). ``batch`` is a mapping of model inputs plus
    ``"labels"``; the labels are not passed to the model, the loss is computed here.

    Args:
        name: the DET's name (e.g. ``"lora"``).
        model: the DeltaModel (or any module with the two methods above).
        theta0: the flat initial point; defaults to ``model.solution_vector()`` at wrap time, so wrap a
            freshly seeded DeltaModel (before training) or pass θ0 explicitly.
        dropout_in_loss: run ``loss`` with the model in train mode (dropout on, as in the paper's
            training); ``predict`` always runs in eval mode. The model's mode is left as last set.
        loss_fn: ``loss_fn(logits, labels) -> scalar``; defaults to cross-entropy.
        autocast: run the model under ``torch.autocast`` in this dtype (e.g. ``torch.bfloat16``: 1.4-1.6x a
            step on CPUs with AVX512-BF16, bench/cpu_bf16_step.py); θ, its gradients and the logits stay
            float32.
    """

    def __init__(
        self,
        name: str,
        model: nn.Module,
        *,
        theta0: Tensor | None = None,
        dropout_in_loss: bool = True,
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        label_key: str = "labels",
        autocast: torch.dtype | None = None,
    ) -> None:
        for method in ("vector_to_solution", "functional_call"):
            if not callable(getattr(model, method, None)):
                raise ValueError(f"member {name!r}: the model has no {method}(); pass a DeltaModel")
        if theta0 is None:
            if not callable(getattr(model, "solution_vector", None)):
                raise ValueError(
                    f"member {name!r}: give theta0 explicitly (the model has no solution_vector())"
                )
            theta0 = model.solution_vector()
        self.name = name
        self.model = model
        self.theta0 = theta0.detach().clone().reshape(-1)
        self.dropout_in_loss = dropout_in_loss
        self.loss_fn = loss_fn or F.cross_entropy
        self.label_key = label_key
        self.autocast = autocast

    @property
    def device(self) -> torch.device:
        return self.theta0.device

    def _logits(self, theta: Tensor, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        if not isinstance(batch, Mapping) or self.label_key not in batch:
            raise ValueError(
                f"member {self.name!r}: a batch must be a dict of model inputs with {self.label_key!r}"
            )
        if theta.shape != self.theta0.shape:
            raise ValueError(
                f"member {self.name!r}: theta has shape {tuple(theta.shape)}, expected {tuple(self.theta0.shape)}"
            )
        inputs = {key: _move(value, theta.device) for key, value in batch.items() if key != self.label_key}
        labels = torch.as_tensor(batch[self.label_key]).to(theta.device)
        if self.autocast is None:
            outputs = self.model.functional_call(self.model.vector_to_solution(theta), **inputs)
            return outputs.logits, labels
        with torch.autocast(theta.device.type, dtype=self.autocast):
            outputs = self.model.functional_call(self.model.vector_to_solution(theta), **inputs)
        return outputs.logits.float(), labels

    def loss(self, theta: Tensor, batch: Mapping[str, Any]) -> Tensor:
        self.model.train(self.dropout_in_loss)
        logits, labels = self._logits(theta, batch)
        return self.loss_fn(logits, labels)

    @torch.no_grad()
    def outputs(self, theta: Tensor, batch: Mapping[str, Any]) -> Tensor:
        """The model's logits in eval mode (no dropout), without gradients."""
        self.model.eval()
        return self._logits(theta, batch)[0]

    def differentiable_outputs(self, theta: Tensor, batch: Mapping[str, Any]) -> Tensor:
        """:meth:`outputs` differentiable with respect to ``theta`` (eval mode, no dropout)."""
        self.model.eval()
        return self._logits(theta, batch)[0]

    def predict(self, theta: Tensor, batch: Mapping[str, Any]) -> Tensor:
        return self.outputs(theta, batch).argmax(dim=-1)
