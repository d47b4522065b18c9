"""PrototypeClassifier: no trainable head, cosine logits to label prototypes from the frozen base."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig
from transformers import BertConfig, BertModel, BertTokenizer

from deltaspace.heads import PrototypeClassifier, mean_pool
from deltaspace.model import get_delta_model

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "positive", "negative", "neutral", "not", "entailment"]
VOCAB += ["good", "bad", "the", "movie", "was", "a", "film"]


@pytest.fixture
def encoder_and_tokenizer(tmp_path):
    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
    )
    return BertModel(config).eval(), BertTokenizer(vocab=str(vocab_file))


def _batch(tokenizer):
    return tokenizer(["the movie was good", "bad", "a film"], padding=True, return_tensors="pt")


def test_no_parameters_of_its_own(encoder_and_tokenizer):
    encoder, tokenizer = encoder_and_tokenizer
    classifier = PrototypeClassifier.from_label_names(encoder, tokenizer, ["negative", "positive"])
    assert all(name.startswith("encoder.") for name, _ in classifier.named_parameters())
    assert sum(p.numel() for p in classifier.parameters()) == sum(p.numel() for p in encoder.parameters())
    assert "prototypes" in dict(classifier.named_buffers())
    assert classifier.prototypes.shape == (2, 32) and not classifier.prototypes.requires_grad


def test_logits_are_scaled_cosines_to_label_name_embeddings(encoder_and_tokenizer):
    encoder, tokenizer = encoder_and_tokenizer
    labels = ["not_entailment", "entailment", "neutral"]
    classifier = PrototypeClassifier.from_label_names(encoder, tokenizer, labels, temperature=7.0)
    batch = _batch(tokenizer)
    target = torch.tensor([2, 0, 1])
    out = classifier(**batch, labels=target)
    assert out.logits.shape == (3, 3)

    with torch.no_grad():
        names = tokenizer(["not entailment", "entailment", "neutral"], padding=True, return_tensors="pt")
        hidden = encoder(**names).last_hidden_state
        mask = names["attention_mask"].unsqueeze(-1).float()
        prototypes = (hidden * mask).sum(1) / mask.sum(1)
        texts = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (texts * mask).sum(1) / mask.sum(1)
    expected = 7.0 * torch.stack(
        [torch.stack([F.cosine_similarity(p, e, dim=0) for e in prototypes]) for p in pooled]
    )
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.loss, F.cross_entropy(expected, target), rtol=1e-5, atol=1e-5)
    assert classifier(**batch).loss is None


def test_padding_does_not_change_logits(encoder_and_tokenizer):
    encoder, tokenizer = encoder_and_tokenizer
    classifier = PrototypeClassifier.from_label_names(encoder, tokenizer, ["negative", "positive"])
    alone = classifier(**tokenizer(["bad"], return_tensors="pt")).logits
    padded = classifier(**tokenizer(["bad"], padding="max_length", max_length=9, return_tensors="pt")).logits
    torch.testing.assert_close(alone, padded, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="does not cover"):
        mean_pool(torch.zeros(1, 4, 8), torch.ones(1, 3))


def test_under_a_delta_model_only_the_delta_trains(encoder_and_tokenizer):
    encoder, tokenizer = encoder_and_tokenizer
    batch = _batch(tokenizer)
    lora = LoraConfig(r=2, target_modules=["query", "value"])
    two = PrototypeClassifier.from_label_names(encoder, tokenizer, ["negative", "positive"])
    with torch.no_grad():
        before = two(**batch).logits
    model = get_delta_model(two, lora, seed=0)
    names = model.trainable_parameter_names()
    assert names and all(name.startswith("encoder.") and "lora_" in name for name in names)
    # LoRA's B starts at zero: wrapping leaves the outputs unchanged.
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, before, rtol=1e-5, atol=1e-6)
    model.train()
    model(**batch, labels=torch.tensor([1, 0, 1])).loss.backward()
    assert all(p.grad is None for n, p in model.base_model.named_parameters() if n not in set(names))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad)
    shapes_two = model.parameter_shapes()
    model.unload()

    # A three-label task gives a solution of exactly the same shape (what the subspace study needs).
    three = PrototypeClassifier.from_label_names(encoder, tokenizer, ["negative", "neutral", "positive"])
    assert get_delta_model(three, lora, seed=0).parameter_shapes() == shapes_two


def test_bad_inputs():
    encoder = torch.nn.Identity()
    with pytest.raises(ValueError, match="num_labels, hidden"):
        PrototypeClassifier(encoder, torch.zeros(3))
    with pytest.raises(ValueError, match="temperature"):
        PrototypeClassifier(encoder, torch.ones(2, 4), temperature=0)
    with pytest.raises(ValueError, match="at least 2 label names"):
        PrototypeClassifier.from_label_names(encoder, None, ["only"])


def test_label_names_unknown_to_the_tokenizer_are_a_clear_error(encoder_and_tokenizer):
    encoder, tokenizer = encoder_and_tokenizer
    # Both names are out of the tiny vocabulary: they encode as [CLS] [UNK] [SEP], the same prototype.
    with pytest.raises(ValueError, match="encode to the same prototype"):
        PrototypeClassifier.from_label_names(encoder, tokenizer, ["sport", "business"])
