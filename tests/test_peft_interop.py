"""PEFT adapter folders in and out (issue 21, item 3): a folder PeftModel.save_pretrained wrote loads into a
DeltaModel (alone or beside Coeff) with PeftModel's outputs exactly; save_peft writes one PeftModel.from_pretrained
reads with the DeltaModel's outputs exactly; refusals in one line."""

import json

import pytest
import torch
from peft import IA3Config, LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file

from deltaspace import CoeffTuningConfig, DeltaModel, get_delta_model
from deltaspace.errors import UserInputError
from deltaspace.peft_interop import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE

CONFIGS = {
    "lora": lambda: LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"]),
    # SEQ_CLS: PEFT trains and saves the classifier as modules_to_save (listing "classifier" and "score").
    "lora-seq-cls": lambda: LoraConfig(
        r=4, lora_alpha=8, target_modules=["query", "value"], task_type="SEQ_CLS"
    ),
    "ia3": lambda: IA3Config(target_modules=["key", "value", "intermediate.dense"], feedforward_modules=[]),
}


def _randomise(model, seed=1, scale=0.3):
    """Random values for every trainable tensor (a trained adapter, not the identity at init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=g) * scale)


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture
def batch(text_batch):
    return {**text_batch, "input_ids": text_batch["input_ids"] % 100}


def _peft_folder(make_bert, kind, directory):
    peft_model = get_peft_model(make_bert(), CONFIGS[kind]())
    _randomise(peft_model)
    peft_model.eval()
    peft_model.save_pretrained(directory)
    return peft_model


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_peft_folder_loads_with_peft_outputs(make_bert, batch, tmp_path, kind):
    peft_model = _peft_folder(make_bert, kind, tmp_path / "adapter")
    model = DeltaModel.from_peft(make_bert(), tmp_path / "adapter")
    assert torch.equal(_logits(model, batch), _logits(peft_model, batch))
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.head_modules == ["classifier"]
    # The head PEFT trained (modules_to_save) came with it; otherwise the base's, as PeftModel keeps it.
    assert torch.equal(model.base_model.classifier.weight, peft_model.base_model.model.classifier.weight)


def test_peft_folder_beside_coeff(make_bert, batch, tmp_path):
    peft_model = _peft_folder(make_bert, "lora", tmp_path / "adapter")
    model = DeltaModel.from_peft(
        make_bert(), tmp_path / "adapter", CoeffTuningConfig(), seed=3, is_trainable=True
    )
    assert [c.method for c in model.delta_configs] == ["peft", "coeff"]
    # Coeff starts at the identity: the outputs are still the PeftModel's (to float rounding of the mixing path).
    torch.testing.assert_close(_logits(model, batch), _logits(peft_model, batch), rtol=0, atol=1e-6)
    trainable = {n for n, p in model.base_model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("ds_coeff" in n for n in trainable)
    # Training goes on from the loaded adapter; save_pretrained / from_pretrained keep both deltas exactly.
    model.train()
    model(**batch, labels=torch.tensor([0, 2])).loss.backward()
    model.eval()
    model.save_pretrained(tmp_path / "mine")
    again = DeltaModel.from_pretrained(make_bert(), tmp_path / "mine")
    assert torch.equal(_logits(again, batch), _logits(model, batch))


@pytest.mark.parametrize("kind", ["lora", "ia3"])
def test_save_peft_reads_back_in_peft(make_bert, batch, tmp_path, kind):
    model = get_delta_model(make_bert(), CONFIGS[kind]())
    _randomise(model)
    model.eval()
    model.save_peft(tmp_path / "export")
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [
        ADAPTER_CONFIG_FILE,
        ADAPTER_WEIGHTS_FILE,
    ]
    config = json.loads((tmp_path / "export" / ADAPTER_CONFIG_FILE).read_text())
    assert config["modules_to_save"] == ["classifier"] and config["inference_mode"] is True
    keys = load_file(str(tmp_path / "export" / ADAPTER_WEIGHTS_FILE))
    assert all(k.startswith("base_model.model.") and ".default." not in k for k in keys)

    peft_model = PeftModel.from_pretrained(make_bert(), tmp_path / "export").eval()
    assert torch.equal(_logits(peft_model, batch), _logits(model, batch))
    # And back: the exported folder loads into a DeltaModel with the same outputs.
    assert torch.equal(
        _logits(DeltaModel.from_peft(make_bert(), tmp_path / "export"), batch), _logits(model, batch)
    )


def test_save_peft_names_what_it_leaves_out(make_bert, batch, tmp_path):
    model = get_delta_model(make_bert(), CONFIGS["lora"](), CoeffTuningConfig())
    _randomise(model)
    model.eval()
    with pytest.warns(UserWarning, match=r"not exported: coeff"):
        model.save_peft(tmp_path / "export")
    lora_only = PeftModel.from_pretrained(make_bert(), tmp_path / "export").eval()
    # What was exported is the LoRA and the head as trained, without Coeff's head mix.
    reference = get_delta_model(make_bert(), CONFIGS["lora"]())
    reference.load_solution({n: t for n, t in model.solution().items() if "ds_coeff" not in n})
    assert torch.equal(_logits(lora_only, batch), _logits(reference.eval(), batch))


def test_save_peft_refusals_are_one_line(make_bert, tmp_path):
    coeff_only = get_delta_model(make_bert(), CoeffTuningConfig())
    with pytest.raises(UserInputError, match=r"has none \(coeff\); use save_pretrained") as error:
        coeff_only.save_peft(tmp_path / "x")
    assert "\n" not in str(error.value)
    two = get_delta_model(make_bert(), CONFIGS["lora"](), LoraConfig(r=2, target_modules=["key"]))
    with pytest.raises(UserInputError, match=r"one adapter but this model has 2 PEFT deltas"):
        two.save_peft(tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_folder_mix_ups_are_named(make_bert, tmp_path):
    _peft_folder(make_bert, "lora", tmp_path / "adapter")
    with pytest.raises(FileNotFoundError, match=r"is a PEFT adapter folder .*DeltaModel\.from_peft"):
        DeltaModel.from_pretrained(make_bert(), tmp_path / "adapter")
    get_delta_model(make_bert(), CoeffTuningConfig()).save_pretrained(tmp_path / "mine")
    with pytest.raises(FileNotFoundError, match=r"no adapter_config\.json in .*PeftModel\.save_pretrained"):
        DeltaModel.from_peft(make_bert(), tmp_path / "mine")
    with pytest.raises(UserInputError, match=r"base model first, then the folder: DeltaModel\.from_peft"):
        DeltaModel.from_peft(tmp_path / "adapter", make_bert())


def test_pickled_or_foreign_adapters_are_refused_untouched(make_bert, tmp_path):
    peft_model = get_peft_model(make_bert(), CONFIGS["lora"]())
    peft_model.save_pretrained(tmp_path / "pickled", safe_serialization=False)
    with pytest.raises(UserInputError, match=r"adapter_model\.bin \(pickle\), which deltaspace never loads"):
        DeltaModel.from_peft(make_bert(), tmp_path / "pickled")

    # An adapter trained on another model (other target names): PEFT's refusal, in one line.
    (tmp_path / "other").mkdir()
    _peft_folder(make_bert, "lora", tmp_path / "other")
    config = json.loads((tmp_path / "other" / ADAPTER_CONFIG_FILE).read_text())
    (tmp_path / "other" / ADAPTER_CONFIG_FILE).write_text(
        json.dumps({**config, "target_modules": ["q_proj"]})
    )
    base = make_bert()
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    with pytest.raises(UserInputError, match=r"matches no module of BertForSequenceClassification"):
        DeltaModel.from_peft(base, tmp_path / "other")
    # A rank that does not fit the saved tensors: named, and the base left as it was.
    (tmp_path / "other" / ADAPTER_CONFIG_FILE).write_text(json.dumps({**config, "r": 2}))
    with pytest.raises(UserInputError, match=r"shapes differ from this model's"):
        DeltaModel.from_peft(base, tmp_path / "other")
    assert {n: p for n, p in base.named_parameters()}.keys() == before.keys()
    assert all(torch.equal(p, before[n]) for n, p in base.named_parameters())
