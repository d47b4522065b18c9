import pytest
import torch
from asset_fixtures import tiny_bert_dir

from deltaspace.assets import MissingAssetError, load_model
from deltaspace.assets.models import resolve_model_dir


def test_missing_packaged_model_names_the_fetch_command(tmp_path):
    with pytest.raises(MissingAssetError) as error:
        load_model("minilm-l6", cache=tmp_path)
    message = str(error.value)
    assert "model 'minilm-l6' is not in the cache" in message and "run `deltaspace fetch`" in message
    assert "\n" not in message
    with pytest.raises(MissingAssetError, match=r"deltaspace fetch --with smollm2"):
        resolve_model_dir("smollm2-135m", tmp_path)


def test_env_var_sets_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DELTASPACE_CACHE", str(tmp_path / "elsewhere"))
    with pytest.raises(MissingAssetError, match="elsewhere"):
        load_model("minilm-l3")


def test_local_directory_encoder_and_classifier(tmp_path):
    directory = tiny_bert_dir(tmp_path / "tiny")
    encoder, tokenizer = load_model(directory)
    batch = tokenizer(["a man is playing guitar"], return_tensors="pt")
    with torch.inference_mode():
        hidden = encoder(**batch).last_hidden_state
    assert hidden.shape == (1, 7, 32)
    assert not encoder.training

    classifier, _ = load_model(str(directory), kind="sequence-classification", num_labels=3)
    with torch.inference_mode():
        logits = classifier(**batch).logits
    assert logits.shape == (1, 3)
    # The encoder inside the classifier carries the saved weights, unchanged.
    with torch.inference_mode():
        inner = classifier.bert(**batch).last_hidden_state
    torch.testing.assert_close(inner, hidden)


def test_kind_and_num_labels_are_validated(tmp_path):
    directory = tiny_bert_dir(tmp_path / "tiny")
    with pytest.raises(ValueError, match="unknown model kind 'decoder'"):
        load_model(directory, kind="decoder")
    with pytest.raises(ValueError, match="needs num_labels"):
        load_model(directory, kind="sequence-classification")
    with pytest.raises(ValueError, match="num_labels only applies"):
        load_model(directory, num_labels=2)


def test_missing_local_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "nowhere"))


def test_causal_lm_gets_a_pad_token(tmp_path, make_llama):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<eos>", "<unk>", "hello", "world"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", unk_token="<unk>")
    model = make_llama(vocab_size=len(words), pad_token_id=None)
    model.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    lm, tok = load_model(tmp_path / "lm", kind="causal-lm")
    assert tok.pad_token == "<eos>" and lm.config.pad_token_id == tok.pad_token_id == 0
    batch = tok(["hello world", "hello"], padding=True, return_tensors="pt")
    assert lm(**batch).logits.shape == (2, 2, len(words))
