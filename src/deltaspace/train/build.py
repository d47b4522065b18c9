"""Base model + task head for a task: the one place that decides what ``head=...`` means."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from deltaspace.errors import UserInputError
from deltaspace.heads import DEFAULT_TEMPERATURE, PrototypeClassifier, VerbalizerClassifier, label_text
from deltaspace.rng import seeded
from deltaspace.tasks.task import Task
from deltaspace.train.config import HEADS, TrainConfig
from deltaspace.train.preflight import HEAD_ONLY


def build_classifier(
    model_name: str,
    task: Task,
    head: str = "prototype",
    seed: int = 0,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    head_only: bool = False,
    label_words: Sequence[str] | None = None,
    verbalizer_prompt: str | None = None,
) -> tuple[nn.Module, Any]:
    """``(classifier, tokenizer)`` for ``task``, ready to be passed to ``get_delta_model``.

    ``head="prototype"``: :class:`~deltaspace.heads.PrototypeClassifier` over the bare encoder, with label
    prototypes from the frozen base and no trainable head (the same solution shape on every task).
    ``head="linear"``: Hugging Face's ``AutoModelForSequenceClassification`` with a fresh head drawn from
    ``seed`` (``get_delta_model`` trains it together with the deltas).
    ``head="verbalizer"``: :class:`~deltaspace.heads.VerbalizerClassifier` over the causal LM, scoring
    ``label_words`` (one a class, in label order; default: the label names, 'not_entailment' read as
    'not entailment') after ``verbalizer_prompt`` (default: :data:`~deltaspace.heads.DEFAULT_PROMPT`).
    ``head_only=True`` (method ``head``): with the prototype head, the label prototypes become a trainable
    ``head`` (:class:`TrainedPrototypeClassifier`); the linear head trains as it always does.
    """
    from deltaspace.assets import load_model

    if head == "prototype":
        encoder, tokenizer = load_model(model_name, kind="encoder")
        classifier = PrototypeClassifier.from_label_names(
            encoder, tokenizer, task.label_names, temperature=temperature
        )
        return (TrainedPrototypeClassifier(classifier) if head_only else classifier), tokenizer
    if head == "linear":
        # The fresh head is initialised from the global RNG inside from_pretrained: draw it from `seed`.
        with seeded(seed):
            model, tokenizer = load_model(
                model_name, num_labels=task.num_labels, kind="sequence-classification"
            )
        model.config.id2label = dict(enumerate(task.label_names))
        model.config.label2id = {name: index for index, name in enumerate(task.label_names)}
        return model, tokenizer
    if head == "verbalizer":
        if head_only:
            raise UserInputError(
                f"method {HEAD_ONLY!r} trains a task head and the verbalizer head has none; choose a delta "
                "method, e.g. lora"
            )
        words = verbalizer_label_words(task, label_words)
        lm, tokenizer = load_model(model_name, kind="causal-lm")
        try:
            classifier = VerbalizerClassifier.from_label_words(lm, tokenizer, words, verbalizer_prompt)
        except ValueError as error:  # a word or prompt this tokenizer cannot tell apart: the user's to fix
            raise UserInputError(str(error)) from None
        return classifier, tokenizer
    raise ValueError(f"unknown head {head!r}; use one of {', '.join(HEADS)}")


def verbalizer_label_words(task: Task, label_words: Sequence[str] | None = None) -> list[str]:
    """The words the verbalizer head scores: ``label_words`` (one a label of ``task``, in its order), or the
    task's label names read as text."""
    if label_words is None:
        return [label_text(name) for name in task.label_names]
    words = [str(word).strip() for word in label_words]
    if len(words) != task.num_labels:
        raise UserInputError(
            f"{len(words)} label words ({', '.join(words)}) for task {task.name!r}, which has {task.num_labels} "
            f"labels ({', '.join(task.label_names)}); give one word a label, in that order"
        )
    return words


def build_run_classifier(config: TrainConfig, task: Task) -> tuple[nn.Module, Any]:
    """:func:`build_classifier` as ``config`` asks: training a run and scoring it later build the same."""
    return build_classifier(
        config.model,
        task,
        config.head,
        config.seed,
        temperature=config.temperature,
        head_only=config.method == HEAD_ONLY,
        label_words=config.label_word_list,
        verbalizer_prompt=config.verbalizer_prompt,
    )


class PrototypeTable(nn.Module):
    """The label prototypes (K, D) as a parameter, initialised from the frozen base's label embeddings."""

    def __init__(self, prototypes: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(prototypes.detach().clone())


class TrainedPrototypeClassifier(PrototypeClassifier):
    """A :class:`PrototypeClassifier` whose prototypes train (as the child module ``head``, which
    ``get_delta_model`` detects as the task head): the head-only baseline, nothing else learns."""

    def __init__(self, base: PrototypeClassifier) -> None:
        super().__init__(base.encoder, base.prototypes, base.temperature, base.label_names)
        self.head = PrototypeTable(self.prototypes)

    def forward(self, *args: Any, prototypes: torch.Tensor | None = None, **kwargs: Any) -> Any:
        # PrototypeClassifier normalises given prototypes per call, so gradients reach the table.
        return super().forward(
            *args, prototypes=self.head.weight if prototypes is None else prototypes, **kwargs
        )
