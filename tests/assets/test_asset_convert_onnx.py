"""ONNX -> BERT conversion on a tiny BERT exported the way sentence-transformers exports (names under
``model.0.auto_model``, anonymous ``onnx::MatMul_*`` weights)."""

import pytest
import torch
from asset_fixtures import tiny_bert_dir
from torch import nn
from transformers import AutoModel, AutoTokenizer, BertModel

from deltaspace.assets.convert_onnx import convert_onnx_bert, onnx_bert_state_dict


class _Inner(nn.Module):
    def __init__(self, bert):
        super().__init__()
        self.auto_model = bert


class _SentenceTransformerLike(nn.Module):
    def __init__(self, bert):
        super().__init__()
        self.model = nn.ModuleList([_Inner(bert)])

    def forward(self, input_ids, attention_mask):
        return self.model[0].auto_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    source = tiny_bert_dir(root / "source", random_all=True)
    bert = BertModel.from_pretrained(source, add_pooling_layer=False).eval()
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 5, 3, 0, 0]])
    mask = (ids != 0).long()
    path = root / "tiny.onnx"
    axes = {"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"}, "hidden": {0: "b", 1: "s"}}
    torch.onnx.export(
        _SentenceTransformerLike(bert).eval(),
        (ids, mask),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["hidden"],
        dynamic_axes=axes,
        dynamo=False,
        opset_version=17,
    )
    return source, path, bert


def test_state_dict_maps_every_weight(exported):
    _, path, bert = exported
    state = onnx_bert_state_dict(path)
    reference = {k: v for k, v in bert.state_dict().items() if not k.endswith("position_ids")}
    assert state.keys() == reference.keys()
    for key, value in reference.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)


def test_convert_matches_onnxruntime_and_reloads(exported, tmp_path):
    source, path, bert = exported
    out = tmp_path / "converted"
    out.mkdir()
    difference = convert_onnx_bert(path, source, out, num_attention_heads=4)
    assert difference < 1e-5
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    model = AutoModel.from_pretrained(out, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    batch = tokenizer(["a man is playing guitar", "the market"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        torch.testing.assert_close(model(**batch).last_hidden_state, bert(**batch).last_hidden_state)


def test_conversion_that_disagrees_with_onnxruntime_fails(exported, tmp_path):
    source, path, _ = exported
    # A wrong head count gives a model with the right weights but different outputs.
    with pytest.raises(ValueError, match="differs from onnxruntime"):
        convert_onnx_bert(path, source, tmp_path, num_attention_heads=2)
