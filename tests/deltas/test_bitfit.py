import json

import pytest
import torch

from deltaspace.deltas.base import DeltaConfig
from deltaspace.deltas.bitfit import BitFitConfig


def test_all_biases_except_head(tiny_bert):
    model = tiny_bert
    names = BitFitConfig().attach(model).parameter_names()
    expected = [
        n for n, _ in model.named_parameters() if n.endswith(".bias") and not n.startswith("classifier.")
    ]
    assert names == expected
    assert "bert.pooler.dense.bias" in names and "bert.embeddings.LayerNorm.bias" in names
    with_head = BitFitConfig(exclude_head=False).attach(model).parameter_names()
    assert with_head == [*expected, "classifier.bias"]


def test_exclusions_and_pattern(tiny_bert):
    model = tiny_bert
    no_norm = BitFitConfig(exclude_layernorm=True).attach(model).parameter_names()
    assert no_norm and not any("LayerNorm" in n for n in no_norm)
    no_emb = BitFitConfig(exclude_embeddings=True).attach(model).parameter_names()
    assert "bert.embeddings.LayerNorm.bias" not in no_emb
    assert "bert.encoder.layer.0.attention.output.LayerNorm.bias" in no_emb
    value_only = BitFitConfig(pattern=r"self\.value").attach(model).parameter_names()
    assert value_only == [f"bert.encoder.layer.{i}.attention.self.value.bias" for i in range(2)]


def test_unchanged_at_init_and_detach_restores_pretrained_biases(tiny_bert, text_batch):
    model = tiny_bert
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        reference = model(**text_batch).logits
    attached = BitFitConfig().attach(model)
    params = dict(model.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(model(**text_batch).logits, reference, atol=1e-6, rtol=0)
        for name in attached.parameter_names():
            params[name].add_(torch.randn_like(params[name]))
        assert (model(**text_batch).logits - reference).abs().max() > 1e-3
    attached.detach(model)
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_model_without_biases_errors(tiny_llama, tiny_bert):
    with pytest.raises(ValueError, match="no bias parameters in LlamaForCausalLM"):
        BitFitConfig().attach(tiny_llama)
    with pytest.raises(ValueError, match="matching 'nothing'"):
        BitFitConfig(pattern="nothing").attach(tiny_bert)


def test_json_round_trip():
    config = BitFitConfig(pattern="value", exclude_layernorm=True)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["method"] == "bitfit"
    assert DeltaConfig.from_dict(data) == config
