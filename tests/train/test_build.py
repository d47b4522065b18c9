"""build_classifier: what ``head=...`` builds; here the verbalizer head over a causal LM."""

from __future__ import annotations

import pytest

from deltaspace.heads import VerbalizerClassifier
from deltaspace.train.build import build_classifier, build_run_classifier
from deltaspace.train.config import TrainConfig


def test_the_verbalizer_head_scores_the_label_names_or_ones_own_words(tiny_lm_dir, make_tiny_task):
    task = make_tiny_task()
    task.label_names = ["not_entailment", "entailment"]
    classifier, tokenizer = build_classifier(str(tiny_lm_dir), task, "verbalizer")
    assert isinstance(classifier, VerbalizerClassifier) and tokenizer.pad_token is not None
    assert classifier.label_words == ["not entailment", "entailment"]
    assert classifier.prompt == "\nOptions: not entailment, entailment.\nAnswer:"

    config = TrainConfig(
        task="tiny",
        model=str(tiny_lm_dir),
        head="verbalizer",
        label_words="bad, good",
        verbalizer_prompt="Answer :",
    )
    classifier, _ = build_run_classifier(config, task)
    assert classifier.label_words == ["bad", "good"] and classifier.prompt == "Answer :"


def test_verbalizer_errors_are_one_line(tiny_lm_dir, tiny_model_dir, make_tiny_task):
    task = make_tiny_task()
    cases = [
        (dict(model_name=str(tiny_lm_dir), label_words=["bad", "good", "fine"]), "3 label words .* 2 labels"),
        (dict(model_name=str(tiny_lm_dir), label_words=["sport", "business"]), "the same tokens"),
        (dict(model_name=str(tiny_lm_dir), head_only=True), "verbalizer head has none"),
        (dict(model_name=str(tiny_model_dir)), "decoder-only causal LM"),  # a BERT checkpoint
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message) as caught:
            build_classifier(task=task, head="verbalizer", **kwargs)
        assert "\n" not in str(caught.value)
