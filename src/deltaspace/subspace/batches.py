"""``TaskBatches``: the only view of a task the subspace code needs.

The subspace stages never touch datasets or tokenizers: the caller hands over, per task, a factory of
training batches (called again whenever an epoch is exhausted) and fixed evaluation batches. A batch is
whatever the members' ``loss`` / ``predict`` understand; :func:`batch_labels` finds its labels (a
``"labels"`` (or ``"label"``) entry of a mapping, or the last element of a tuple / list).

:func:`shuffled_batches` makes a factory that deals a fresh order every epoch from torch's global RNG, and
:class:`TrainStream` (what :meth:`TaskBatches.stream` returns) can save and restore its position, so a
resumed stage-1 fit sees the very batches an uninterrupted one would.
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

    def stream(self) -> TrainStream:
        """Training batches forever: the factory is called again for every new epoch."""
        return TrainStream(self)

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

        train = shuffled_batches(
            len(inputs), batch_size, lambda index: {"inputs": inputs[index], "labels": labels[index]}
        )

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


def shuffled_batches(
    size: int, batch_size: int, make_batch: Callable[[Tensor], Any]
) -> Callable[[], Iterator[Any]]:
    """A ``train_batches`` factory over ``size`` examples that deals a fresh order every epoch.

    Each call draws a permutation from torch's global RNG (as a shuffling ``DataLoader`` does) when its
    first batch is asked for, cuts it into index tensors of ``batch_size`` and yields ``make_batch(index)``
    for each. The stages run under their own seed, so the orders follow from it; drawing everything at the
    epoch's start is what lets :class:`TrainStream` replay an epoch on resume.
    """
    if size < 1 or batch_size < 1:
        raise ValueError(f"shuffled_batches needs size >= 1 and batch_size >= 1, got {size}, {batch_size}")

    def epoch() -> Iterator[Any]:
        order = torch.randperm(size)
        for start in range(0, size, batch_size):
            yield make_batch(order[start : start + batch_size])

    return epoch


_END = object()  # marks an exhausted iterator (a batch may be anything, None included)


class TrainStream(Iterator[Any]):
    """A task's training batches forever, with a position that can be saved and restored.

    Every epoch calls ``task.train_batches()`` afresh. The position is (epoch, batches taken in it) and the
    CPU RNG state at the epoch's start: :meth:`load_state_dict` replays that epoch's order from that state
    and skips the batches already taken. That is exact for factories that draw their randomness from torch's
    global CPU RNG when their first batch is asked for (:func:`shuffled_batches`, a shuffling
    ``DataLoader``) or draw none (a fixed list).
    """

    def __init__(self, task: TaskBatches) -> None:
        self.task = task
        self.epoch = 0  # the current epoch (0: the first)
        self.position = 0  # batches taken from the current epoch
        self._epoch_rng: Tensor | None = None
        self._batches: Iterator[Any] | None = None

    def __next__(self) -> Any:
        if self._batches is None:
            self._epoch_rng = torch.get_rng_state()
            self._batches = iter(self.task.train_batches())
            self.position = 0
        try:
            batch = next(self._batches)
        except StopIteration:
            if self.position == 0:
                raise ValueError(
                    f"task {self.task.name!r}: train_batches() yielded no batch; give it at least one"
                ) from None
            self._batches = None
            self.epoch += 1
            return next(self)
        self.position += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        """Plain values and a tensor (loadable with ``torch.load(..., weights_only=True)``)."""
        return {"epoch": self.epoch, "position": self.position, "epoch_rng": self._epoch_rng}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue where :meth:`state_dict` was taken; torch's global RNG is left as it was."""
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._epoch_rng, self._batches = state["epoch_rng"], None
        if self.position == 0 or self._epoch_rng is None:
            return  # nothing taken yet: the next batch starts an epoch from the RNG as it will be then
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._epoch_rng)
            self._batches = iter(self.task.train_batches())
            for taken in range(self.position):
                if next(self._batches, _END) is _END:
                    raise ValueError(
                        f"task {self.task.name!r}: the saved position ({self.position} batches into epoch "
                        f"{self.epoch}) is past the epoch's end ({taken}); the batches changed since"
                    )
