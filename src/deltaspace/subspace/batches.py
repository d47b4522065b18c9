"""``TaskBatches``: the only view of a task the subspace code needs.

The subspace stages never touch datasets or tokenizers: the caller hands over, per task, a factory of
training batches (called again whenever an epoch is exhausted) and fixed evaluation batches. A batch is
whatever the members' ``loss`` / ``predict`` understand; :func:`batch_labels` finds its labels (a
``"labels"`` (or ``"label"``) entry of a mapping, or the last element of a tuple / list).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


def batch_labels(batch: Any) -> Tensor:
    """The label tensor of a batch: ``batch["labels"]`` / ``batch["label"]``, or the last item of a tuple."""
    if isinstance(batch, Mapping):
        for key in ("labels", "label"):
            if key in batch:
                return torch.as_tensor(batch[key])
        raise ValueError(
            f"batch has no 'labels' entry (keys: {sorted(batch)}); add the labels under 'labels'"
        )
    if isinstance(batch, (tuple, list)) and batch:
        return torch.as_tensor(batch[-1])
    raise ValueError(
        f"cannot find labels in a batch of type {type(batch).__name__}; use a dict with 'labels'"
    )


@dataclass
class TaskBatches:
    """A task as the subspace stages see it.

    Attributes:
        name: task name (the key of its solutions in the :class:`SolutionStore`).
        train_batches: zero-argument factory returning an iterable of training batches (one epoch).
        eval_batches: batches for model selection (stage-1 validation, stage-2 best-z choice).
        test_batches: batches for the reported numbers (transfer, landscape, stage-2 report); defaults to
            ``eval_batches``.
        num_labels: number of classes (for macro-F1); inferred from the labels when ``None``.
    """

    name: str
    train_batches: Callable[[], Iterable[Any]]
    eval_batches: Sequence[Any]
    test_batches: Sequence[Any] | None = None
    num_labels: int | None = None

    def __post_init__(self) -> None:
        if not callable(self.train_batches):
            raise ValueError(
                f"task {self.name!r}: train_batches must be a zero-argument factory, e.g. lambda: loader"
            )
        self.eval_batches = list(self.eval_batches)
        if self.test_batches is not None:
            self.test_batches = list(self.test_batches)

    @property
    def report_batches(self) -> list[Any]:
        return list(self.test_batches if self.test_batches is not None else self.eval_batches)

    def stream(self) -> Iterator[Any]:
        """Training batches forever: the factory is called again for every new epoch."""
        while True:
            empty = True
            for batch in self.train_batches():
                empty = False
                yield batch
            if empty:
                raise ValueError(
                    f"task {self.name!r}: train_batches() yielded no batch; give it at least one"
                )

    @classmethod
    def from_tensors(
        cls,
        name: str,
        inputs: Tensor,
        labels: Tensor,
        *,
        batch_size: int,
        eval_inputs: Tensor,
        eval_labels: Tensor,
        test_inputs: Tensor | None = None,
        test_labels: Tensor | None = None,
        eval_batch_size: int = 1024,
        num_labels: int | None = None,
    ) -> TaskBatches:
        """In-memory task whose batches are ``{"inputs": x, "labels": y}``, reshuffled every epoch.

        Shuffling draws from torch's global RNG (as a shuffling ``DataLoader`` does), so the stages, which
        run under their own seed, see the same batches on every run.
        """
        if len(inputs) != len(labels) or len(eval_inputs) != len(eval_labels):
            raise ValueError(f"task {name!r}: inputs and labels must have the same length")
        if batch_size < 1:
            raise ValueError(f"task {name!r}: batch_size must be >= 1, got {batch_size}")

        def train() -> Iterator[dict[str, Tensor]]:
            order = torch.randperm(len(inputs))
            for start in range(0, len(order), batch_size):
                index = order[start : start + batch_size]
                yield {"inputs": inputs[index], "labels": labels[index]}

        def chunks(x: Tensor, y: Tensor) -> list[dict[str, Tensor]]:
            return [
                {"inputs": x[i : i + eval_batch_size], "labels": y[i : i + eval_batch_size]}
                for i in range(0, len(x), eval_batch_size)
            ]

        test = None
        if test_inputs is not None:
            if test_labels is None or len(test_inputs) != len(test_labels):
                raise ValueError(f"task {name!r}: give test_labels of the same length as test_inputs")
            test = chunks(test_inputs, test_labels)
        return cls(name, train, chunks(eval_inputs, eval_labels), test, num_labels)
