"""VerbalizerClassifier: a causal LM's log-probabilities of the label words after the text and a prompt."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deltaspace.assets import load_model
from deltaspace.deltas.presets import resolve_method
from deltaspace.deltas.prompt import PromptTuningConfig
from deltaspace.heads import VerbalizerClassifier
from deltaspace.model import DeltaModel, get_delta_model

TEXTS = ["the movie was good", "bad", "a film was quite dull and the plot weak"]
SINGLE = ["negative", "positive", "neutral"]  # one token each: the fast path
MULTI = ["not entailment", "entailment", "neutral"]  # "not entailment" is two tokens: one row per label


@pytest.fixture
def lm_and_tokenizer(tiny_lm_dir):
    return load_model(tiny_lm_dir, kind="causal-lm")


def _batch(tokenizer, side: str = "right"):
    tokenizer.padding_side = side
    return tokenizer(TEXTS, padding=True, return_tensors="pt")


@torch.no_grad()
def _hand_scores(lm, tokenizer, words: list[str], prompt: str) -> torch.Tensor:
    """Σ_j log_softmax(lm([text][prompt][word]))[position before token j, token j], one unpadded row each."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    scores = []
    for text in TEXTS:
        text_ids = tokenizer(text)["input_ids"]
        row = []
        for word in words:
            word_ids = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([text_ids + prompt_ids + word_ids])
            log_probs = lm(input_ids=ids).logits[0].log_softmax(-1)
            start = len(text_ids) + len(prompt_ids)
            row.append(sum(log_probs[start - 1 + j, token] for j, token in enumerate(word_ids)))
        scores.append(torch.stack(row))
    return torch.stack(scores)


@pytest.mark.parametrize("words", [SINGLE, MULTI], ids=["single-token", "multi-token"])
def test_scores_are_the_lms_own_label_word_log_probabilities(lm_and_tokenizer, words):
    lm, tokenizer = lm_and_tokenizer
    classifier = VerbalizerClassifier.from_label_words(lm, tokenizer, words)
    assert classifier.single_token == (words is SINGLE)
    assert classifier.prompt == f"\nOptions: {', '.join(words)}.\nAnswer:"
    batch, target = _batch(tokenizer), torch.tensor([1, 0, 2])
    with torch.no_grad():
        out = classifier(**batch, labels=target)
    expected = _hand_scores(lm, tokenizer, words, classifier.prompt)
    assert out.logits.shape == (3, 3)
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.loss, F.cross_entropy(expected, target), rtol=1e-5, atol=1e-5)
    assert classifier(**batch).loss is None


def test_the_fast_path_is_one_row_a_text_and_agrees_with_the_general_path(lm_and_tokenizer):
    lm, tokenizer = lm_and_tokenizer
    classifier = VerbalizerClassifier.from_label_words(lm, tokenizer, SINGLE)
    rows_seen = []
    lm.register_forward_pre_hook(
        lambda module, args, kwargs: rows_seen.append(len(kwargs["input_ids"])), with_kwargs=True
    )
    batch = _batch(tokenizer)
    with torch.no_grad():
        fast = classifier(**batch).logits
        classifier.fast_path = False
        general = classifier(**batch).logits
        left_padded = classifier(**_batch(tokenizer, side="left")).logits
    assert rows_seen == [3, 9, 9]  # B rows, then B·K
    torch.testing.assert_close(fast, general, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(left_padded, general, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("words", [SINGLE, MULTI], ids=["single-token", "multi-token"])
def test_a_prompt_of_ones_own_and_vectors_in_place_of_tokens(lm_and_tokenizer, words):
    lm, tokenizer = lm_and_tokenizer
    classifier = VerbalizerClassifier.from_label_words(lm, tokenizer, words, prompt="{labels} ? Answer :")
    assert classifier.prompt == f"{', '.join(words)} ? Answer :"
    batch = _batch(tokenizer)
    with torch.no_grad():
        from_ids = classifier(**batch).logits
        from_vectors = classifier(
            inputs_embeds=lm.get_input_embeddings()(batch["input_ids"]),
            attention_mask=batch["attention_mask"],
        ).logits
    torch.testing.assert_close(from_vectors, from_ids, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        from_ids, _hand_scores(lm, tokenizer, words, classifier.prompt), rtol=1e-5, atol=1e-5
    )


def test_no_parameters_of_its_own(lm_and_tokenizer):
    lm, tokenizer = lm_and_tokenizer
    classifier = VerbalizerClassifier.from_label_words(lm, tokenizer, MULTI)
    assert all(name.startswith("lm.") for name, _ in classifier.named_parameters())
    assert sum(p.numel() for p in classifier.parameters()) == sum(p.numel() for p in lm.parameters())
    assert {"prompt_ids", "label_ids", "label_lengths"} <= set(dict(classifier.named_buffers()))
    assert classifier.label_lengths.tolist() == [2, 1, 1]
    assert classifier.config is lm.config and classifier.get_input_embeddings() is lm.get_input_embeddings()
    assert VerbalizerClassifier.accepts_loss_kwargs is False


@pytest.mark.parametrize("method", ["lora", "coeff", "coeff+lora", "bitfit"])
def test_deltas_attach_inside_the_lm_and_start_where_it_is(lm_and_tokenizer, make_llama, method):
    _, tokenizer = lm_and_tokenizer
    lm = make_llama(vocab_size=len(tokenizer), attention_bias=True)  # biases for BitFit
    classifier = VerbalizerClassifier.from_label_words(lm, tokenizer, MULTI)
    batch = _batch(tokenizer)
    with torch.no_grad():
        before = classifier(**batch).logits
    model = get_delta_model(classifier, *resolve_method(method, classifier), seed=0).eval()
    names = model.trainable_parameter_names()
    assert names and all(name.startswith("lm.model.layers.") for name in names)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["coeff+lora", "prefix"])
def test_training_lowers_the_loss_changes_only_the_delta_and_reloads(
    lm_and_tokenizer, tiny_lm_dir, tmp_path, method
):
    lm, tokenizer = lm_and_tokenizer
    classifier = VerbalizerClassifier.from_label_words(lm, tokenizer, MULTI)
    pretrained = [(p, p.detach().clone()) for p in classifier.parameters()]
    model = get_delta_model(classifier, *resolve_method(method, classifier), seed=0)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and not {id(p) for p in trainable} & {id(p) for p, _ in pretrained}
    batch, target = _batch(tokenizer), torch.tensor([1, 0, 2])

    def loss() -> float:
        with torch.no_grad():
            return model.eval()(**batch, labels=target).loss.item()

    start = loss()
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    torch.manual_seed(0)
    model.train()
    for _ in range(5):
        optimizer.zero_grad()
        model(**batch, labels=target).loss.backward()
        optimizer.step()
    assert loss() < start
    assert all(torch.equal(p, saved) for p, saved in pretrained)

    model.save_pretrained(tmp_path / "delta")
    with torch.no_grad():
        trained = model(**batch).logits
    fresh, _ = load_model(tiny_lm_dir, kind="causal-lm")
    restored = DeltaModel.from_pretrained(
        VerbalizerClassifier.from_label_words(fresh, tokenizer, MULTI), tmp_path / "delta"
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(restored(**batch).logits, trained, rtol=1e-5, atol=1e-5)


def test_prompt_tuning_feeds_it_vectors(lm_and_tokenizer):
    lm, tokenizer = lm_and_tokenizer
    classifier = VerbalizerClassifier.from_label_words(lm, tokenizer, MULTI)
    model = get_delta_model(classifier, PromptTuningConfig(num_virtual_tokens=3), seed=0)
    out = model(**_batch(tokenizer), labels=torch.tensor([1, 0, 2]))
    assert out.logits.shape == (3, 3)
    out.loss.backward()
    assert model.base_model.ds_prompt.embedding.grad.abs().sum() > 0


def test_one_line_errors(lm_and_tokenizer, make_bert):
    lm, tokenizer = lm_and_tokenizer

    def build(words: list[str], prompt: str | None = None) -> VerbalizerClassifier:
        return VerbalizerClassifier.from_label_words(lm, tokenizer, words, prompt)

    classifier, batch = build(SINGLE), _batch(tokenizer)
    cases = [
        (lambda: build(["positive"]), "at least 2 label words"),
        (lambda: build(["positive", " "]), "label word 2 .* is empty"),
        (lambda: build(["sport", "business"]), "the same tokens"),  # both unknown: each reads as <unk>
        (lambda: build(SINGLE, prompt=" "), "no tokens"),
        (lambda: VerbalizerClassifier(make_bert(), [5], [[8], [9]]), "decoder-only causal LM"),
        (lambda: classifier(**batch, position_ids=torch.zeros(3, 8)), "takes no position_ids"),
        (
            lambda: classifier(attention_mask=batch["attention_mask"]),
            "exactly one of input_ids or inputs_embeds",
        ),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as caught:
            call()
        assert "\n" not in str(caught.value)
