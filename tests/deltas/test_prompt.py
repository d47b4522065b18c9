import json

import pytest
import torch

from deltaspace import get_delta_model
from deltaspace.deltas.base import DeltaConfig
from deltaspace.deltas.prompt import PromptTuningConfig

PROMPT_IDS = [7, 8, 9]
IDS = torch.tensor([[2, 5, 9, 11, 3], [2, 7, 4, 6, 3]])


def test_bert_prompt_goes_after_cls_and_equals_those_tokens(bert):
    """A prompt initialised from tokens t is exactly the model fed [CLS] t ... as ordinary input ids."""
    model = bert
    attached = PromptTuningConfig(num_virtual_tokens=3, init_token_ids=PROMPT_IDS).attach(model)
    assert attached.position == "after_first" and attached.parameter_names() == ["ds_prompt.embedding"]
    types = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 1, 1, 1]])
    prepared = attached.prepare_inputs({"input_ids": IDS, "token_type_ids": types}, model)
    assert prepared["inputs_embeds"].shape == (2, 8, 32) and "input_ids" not in prepared
    assert prepared["attention_mask"].tolist() == [[1] * 8] * 2
    assert prepared["token_type_ids"][:, 1:4].eq(0).all()
    assert torch.equal(prepared["token_type_ids"][:, 4:], types[:, 1:])
    spliced = torch.cat([IDS[:, :1], torch.tensor([PROMPT_IDS] * 2), IDS[:, 1:]], dim=1)
    spliced_types = torch.cat([types[:, :1], torch.zeros(2, 3, dtype=torch.long), types[:, 1:]], dim=1)
    with torch.no_grad():
        expected = model(input_ids=spliced, token_type_ids=spliced_types).logits
        torch.testing.assert_close(model(**prepared).logits, expected, atol=1e-6, rtol=0)


def test_causal_lm_prompt_is_prepended_with_labels_masked(llama_lm):
    model = llama_lm
    attached = PromptTuningConfig(num_virtual_tokens=3, init_token_ids=PROMPT_IDS).attach(model)
    assert attached.position == "start"
    prepared = attached.prepare_inputs({"input_ids": IDS, "labels": IDS}, model)
    assert prepared["labels"][:, :3].eq(-100).all()
    spliced = torch.cat([torch.tensor([PROMPT_IDS] * 2), IDS], dim=1)
    labels = torch.cat([torch.full((2, 3), -100), IDS], dim=1)
    with torch.no_grad():
        out, expected = model(**prepared), model(input_ids=spliced, labels=labels)
    torch.testing.assert_close(out.logits, expected.logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.loss, expected.loss, atol=1e-6, rtol=0)


def test_causal_lm_generates_from_prompt(llama_lm):
    model = llama_lm
    attached = PromptTuningConfig(num_virtual_tokens=3, init_token_ids=PROMPT_IDS).attach(model)
    prepared = attached.prepare_inputs({"input_ids": IDS}, model)
    spliced = torch.cat([torch.tensor([PROMPT_IDS] * 2), IDS], dim=1)
    kwargs = {"max_new_tokens": 3, "do_sample": False, "pad_token_id": 0}
    generated = model.generate(**prepared, **kwargs)
    expected = model.generate(input_ids=spliced, attention_mask=torch.ones_like(spliced), **kwargs)
    assert torch.equal(generated[:, -3:], expected[:, -3:])
    attached.detach(model)
    delta_model = get_delta_model(model, PromptTuningConfig(num_virtual_tokens=3, init_token_ids=PROMPT_IDS))
    assert torch.equal(delta_model.generate(input_ids=IDS, **kwargs)[:, -3:], expected[:, -3:])


@pytest.mark.parametrize("which", ["bert", "llama_cls"])
def test_padding_is_ignored(request, which):
    """A padded row gives the same logits as the same row alone (for causal classifiers: right padding too)."""
    model = request.getfixturevalue(which)
    attached = PromptTuningConfig(num_virtual_tokens=4).attach(model)
    ids = torch.tensor([[2, 5, 9, 11, 3, 6], [2, 7, 4, 3, 0, 0]])
    mask = torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]])
    with torch.no_grad():
        both = model(**attached.prepare_inputs({"input_ids": ids, "attention_mask": mask}, model)).logits
        alone = model(**attached.prepare_inputs({"input_ids": ids[1:, :4]}, model)).logits
    torch.testing.assert_close(both[1:], alone, atol=1e-5, rtol=0)


def test_prompt_changes_outputs_and_detach_restores(bert):
    model = bert
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        reference = model(input_ids=IDS).logits
    attached = PromptTuningConfig(num_virtual_tokens=5).attach(model)
    with torch.no_grad():
        assert (
            model(**attached.prepare_inputs({"input_ids": IDS}, model)).logits - reference
        ).abs().max() > 1e-6
    attached.detach(model)
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], v) for k, v in before.items())
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=IDS).logits, reference, atol=0, rtol=0)


def test_random_init_uses_vocabulary_embeddings_and_seed(bert):
    model = bert
    torch.manual_seed(5)
    PromptTuningConfig(num_virtual_tokens=6).attach(model)
    prompt = model.ds_prompt.embedding.detach()
    table = model.get_input_embeddings().weight.detach()
    assert all((table - row).abs().sum(dim=1).min() == 0 for row in prompt)
    del model.ds_prompt
    torch.manual_seed(5)
    PromptTuningConfig(num_virtual_tokens=6).attach(model)
    assert torch.equal(model.ds_prompt.embedding, prompt)


def test_init_text_with_tokenizer(make_bert, tmp_path):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "classify": 10, "the": 11, "sentiment": 12}
    backend = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]").save_pretrained(tmp_path)
    model = make_bert()
    config = PromptTuningConfig(
        num_virtual_tokens=5, init_text="classify the sentiment", tokenizer_name_or_path=str(tmp_path)
    )
    config.attach(model)
    table = model.get_input_embeddings().weight
    assert torch.equal(model.ds_prompt.embedding, table[[10, 11, 12, 10, 11]])


def test_errors(make_bert):
    model = make_bert()
    attached = PromptTuningConfig(num_virtual_tokens=2).attach(model)
    with pytest.raises(ValueError, match="position_ids"):
        attached.prepare_inputs({"input_ids": IDS, "position_ids": torch.arange(5)[None]}, model)
    with pytest.raises(ValueError, match="exactly one"):
        attached.prepare_inputs({}, model)
    with pytest.raises(ValueError, match="already carries"):
        PromptTuningConfig().attach(model)
    with pytest.raises(ValueError, match="tokenizer_name_or_path"):
        PromptTuningConfig(init_text="hello")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        PromptTuningConfig(init_token_ids=[10_000]).attach(make_bert())


def test_json_round_trip():
    config = PromptTuningConfig(num_virtual_tokens=7, position="start", init_token_ids=[1, 2])
    data = json.loads(json.dumps(config.to_dict()))
    assert data["method"] == "prompt"
    assert DeltaConfig.from_dict(data) == config
