import json

import pytest
import torch

from deltaspace.deltas.base import DeltaConfig
from deltaspace.deltas.full import FullFineTuningConfig

IDS = torch.tensor([[2, 5, 9, 11, 3], [2, 7, 4, 1, 1]])


def test_all_base_parameters_except_head(tiny_bert):
    model = tiny_bert
    names = FullFineTuningConfig().attach(model).parameter_names()
    all_names = [n for n, _ in model.named_parameters()]
    assert names == [n for n in all_names if not n.startswith("classifier.")]
    assert FullFineTuningConfig(exclude_head=False).attach(model).parameter_names() == all_names


def test_exclusions(tiny_bert):
    model = tiny_bert
    names = (
        FullFineTuningConfig(exclude_embeddings=True, exclude_patterns=[r"LayerNorm"])
        .attach(model)
        .parameter_names()
    )
    assert not any("embeddings" in n or "LayerNorm" in n for n in names)
    assert "bert.encoder.layer.0.attention.self.query.weight" in names
    with pytest.raises(ValueError, match="excluded every parameter"):
        FullFineTuningConfig(exclude_patterns=["."]).attach(model)


def test_tied_and_untied_lm_head(make_llama):
    tied = FullFineTuningConfig().attach(make_llama(tie_word_embeddings=True)).parameter_names()
    assert "model.embed_tokens.weight" in tied and "lm_head.weight" not in tied  # one tensor, listed once
    untied = FullFineTuningConfig().attach(make_llama(tie_word_embeddings=False)).parameter_names()
    assert "lm_head.weight" in untied  # a pretrained LM head is part of the base, not a fresh task head


@pytest.mark.parametrize("restore", [True, False])
def test_detach_restores_pretrained_weights(tiny_llama, restore):
    model = tiny_llama
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        reference = model(input_ids=IDS).logits
    attached = FullFineTuningConfig(restore_on_detach=restore).attach(model)
    params = dict(model.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=IDS).logits, reference, atol=1e-6, rtol=0)
        for name in attached.parameter_names():
            params[name].add_(0.1 * torch.randn_like(params[name]))
        changed = model(input_ids=IDS).logits
    attached.detach(model)
    after = model.state_dict()
    assert list(after) == list(before)
    with torch.no_grad():
        if restore:
            assert all(torch.equal(after[k], v) for k, v in before.items())
            torch.testing.assert_close(model(input_ids=IDS).logits, reference, atol=0, rtol=0)
        else:
            torch.testing.assert_close(model(input_ids=IDS).logits, changed, atol=0, rtol=0)


def test_json_round_trip():
    config = FullFineTuningConfig(
        exclude_embeddings=True, exclude_patterns=["pooler"], restore_on_detach=False
    )
    data = json.loads(json.dumps(config.to_dict()))
    assert data["method"] == "full"
    assert DeltaConfig.from_dict(data) == config
