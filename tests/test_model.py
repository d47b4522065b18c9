import json
import os

import pytest
import safetensors.torch
import torch
from peft import LoraConfig

from deltaspace import CoeffTuningConfig, DeltaModel, PeftDeltaConfig, get_delta_model
from deltaspace.errors import UserInputError
from deltaspace.model import CONFIG_FILE, WEIGHTS_FILE

LORA_BERT = dict(r=2, target_modules=["query", "value"])


def _perturb(model, seed=0, scale=0.3):
    """Give every trained tensor a random value, so round trips are tested away from the initial point."""
    g = torch.Generator().manual_seed(seed)
    model.load_solution({n: torch.randn(t.shape, generator=g) * scale for n, t in model.solution().items()})


def _no_ds_modules(model):
    return not any(part.startswith("ds_") for name, _ in model.named_modules() for part in name.split("."))


# ---------------------------------------------------------------------------------------- composition
def test_coeff_and_lora_in_one_call(tiny_bert, text_batch, capsys):
    model = get_delta_model(tiny_bert, CoeffTuningConfig(), LoraConfig(**LORA_BERT))
    assert isinstance(model.delta_configs[1], PeftDeltaConfig)
    names = model.trainable_parameter_names()
    assert names[:2] == [
        "bert.encoder.layer.0.attention.self.ds_coeff.delta",
        "bert.encoder.layer.1.attention.self.ds_coeff.delta",
    ]
    assert all("lora_" in n for n in names[2:10])
    assert names[10:] == ["classifier.weight", "classifier.bias"]
    assert {n for n, p in tiny_bert.named_parameters() if p.requires_grad} == set(names)
    routed = [layer.attention.self.config._attn_implementation for layer in tiny_bert.bert.encoder.layer]
    assert (
        routed == ["deltaspace"] * 2 and tiny_bert.config._attn_implementation == "sdpa"
    )  # only routed modules
    model.print_trainable_parameters()
    trainable, total = model.get_nb_trainable_parameters()
    expected = 2 * 16 + 2 * 2 * (2 * 32 * 2) + 3 * 32 + 3
    assert trainable == model.num_trainable_parameters() == expected
    assert capsys.readouterr().out.strip() == (
        f"trainable params: {expected:,d} || all params: {total:,d} || trainable%: {100 * expected / total:.4f}"
    )


def test_peft_only_model_keeps_original_attention(tiny_llama):
    model = get_delta_model(tiny_llama, LoraConfig(r=2, target_modules=["q_proj"]))
    assert tiny_llama.config._attn_implementation == "sdpa"
    assert model.head_modules == []  # lm_head is pretrained, never picked as a head


def test_gradients_reach_deltas_and_head_only(tiny_bert, text_batch):
    model = get_delta_model(tiny_bert, CoeffTuningConfig(coeff_dropout=0.0), LoraConfig(**LORA_BERT))
    model.train()
    loss = model(**text_batch, labels=torch.tensor([0, 2])).loss
    loss.backward()
    trained = set(model.trainable_parameter_names())
    for name, param in tiny_bert.named_parameters():
        if name in trained:
            assert param.grad is not None, name
        else:
            assert param.grad is None, name
    grads = {n: tiny_bert.get_parameter(n).grad for n in trained}
    for name, grad in grads.items():
        if "lora_A" not in name:  # lora_A's gradient is exactly zero while lora_B is still zero
            assert grad.abs().sum() > 0, name


def test_head_modules_explicit_and_invalid(tiny_bert):
    model = get_delta_model(tiny_bert, CoeffTuningConfig(), head_modules=[])
    assert all(n.endswith("ds_coeff.delta") for n in model.trainable_parameter_names())
    model.unload()
    with pytest.raises(ValueError, match="head module 'nope' not found"):
        get_delta_model(tiny_bert, CoeffTuningConfig(), head_modules=["nope"])
    assert tiny_bert.config._attn_implementation == "sdpa" and _no_ds_modules(tiny_bert)


def test_failed_attach_leaves_base_untouched(tiny_llama):
    before = {n: p.requires_grad for n, p in tiny_llama.named_parameters()}
    with pytest.raises(ValueError):
        get_delta_model(tiny_llama, CoeffTuningConfig(), LoraConfig(target_modules=["no_such_module"]))
    assert (
        _no_ds_modules(tiny_llama)
        and {n: p.requires_grad for n, p in tiny_llama.named_parameters()} == before
    )


def test_seeded_attach_is_reproducible(make_bert):
    first = get_delta_model(make_bert(), LoraConfig(**LORA_BERT), seed=3).solution_vector()
    second = get_delta_model(make_bert(), LoraConfig(**LORA_BERT), seed=3).solution_vector()
    other = get_delta_model(make_bert(), LoraConfig(**LORA_BERT), seed=4).solution_vector()
    assert torch.equal(first, second) and not torch.equal(first, other)


# ------------------------------------------------------------------------------------------ solutions
def test_solution_vector_round_trip_and_views(tiny_bert, text_batch):
    model = get_delta_model(tiny_bert, CoeffTuningConfig(), LoraConfig(**LORA_BERT)).eval()
    _perturb(model)
    vector = model.solution_vector()
    assert vector.shape == (model.num_trainable_parameters(),)
    solution = model.vector_to_solution(vector)
    assert list(solution) == model.trainable_parameter_names()
    assert all(torch.equal(solution[n], t) for n, t in model.solution().items())
    assert {n: t.shape for n, t in solution.items()} == model.parameter_shapes()
    first = next(iter(solution.values()))
    assert first.data_ptr() == vector.data_ptr()  # views, not copies
    with pytest.raises(ValueError, match="1-D vector"):
        model.vector_to_solution(vector[:-1])


def test_vector_to_solution_gradients_match_slicing(tiny_bert, text_batch):
    """The split-based views give the gradients of plain slicing (the reference) exactly."""
    model = get_delta_model(tiny_bert, CoeffTuningConfig(), LoraConfig(**LORA_BERT)).eval()
    _perturb(model)
    base = model.solution_vector()

    def grad(build) -> torch.Tensor:
        theta = base.clone().requires_grad_(True)
        model.functional_call(build(theta), **text_batch).logits.pow(2).sum().backward()
        return theta.grad

    def sliced(theta: torch.Tensor) -> dict[str, torch.Tensor]:
        out, offset = {}, 0
        for name, shape in model.parameter_shapes().items():
            out[name] = theta[offset : offset + shape.numel()].view(shape)
            offset += shape.numel()
        return out

    reference, fast = grad(sliced), grad(model.vector_to_solution)
    assert reference.abs().sum() > 0
    torch.testing.assert_close(fast, reference, rtol=0, atol=0)


def test_functional_call_substitutes_without_mutation(tiny_bert, text_batch):
    model = get_delta_model(tiny_bert, CoeffTuningConfig(), LoraConfig(**LORA_BERT)).eval()
    original = model.solution()
    z = torch.zeros(model.num_trainable_parameters(), requires_grad=True)
    with torch.no_grad():
        z += torch.randn(z.shape, generator=torch.Generator().manual_seed(0)) * 0.3
    out = model.functional_call(model.vector_to_solution(z), **text_batch).logits
    assert all(torch.equal(original[n], t) for n, t in model.solution().items())  # nothing was mutated
    out.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0  # gradients flow back into the flat vector
    model.load_solution({n: t.detach() for n, t in model.vector_to_solution(z.detach()).items()})
    torch.testing.assert_close(model(**text_batch).logits, out.detach(), rtol=0, atol=0)


def test_load_solution_rejects_bad_input(tiny_bert):
    model = get_delta_model(tiny_bert, CoeffTuningConfig())
    solution = model.solution()
    name = next(iter(solution))
    with pytest.raises(ValueError, match="shape"):
        model.load_solution({**solution, name: torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="missing"):
        model.load_solution({k: v for k, v in solution.items() if k != name})


# ---------------------------------------------------------------------------------------- persistence
def test_save_load_round_trip_exact(make_bert, text_batch, tmp_path):
    model = get_delta_model(make_bert(), CoeffTuningConfig(), LoraConfig(**LORA_BERT)).eval()
    _perturb(model)
    expected = model(**text_batch).logits
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == [CONFIG_FILE, WEIGHTS_FILE]
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert meta["base_model"]["num_attention_heads"] == 4 and meta["head_modules"] == ["classifier"]
    assert [d["method"] for d in meta["deltas"]] == ["coeff", "peft"]

    fresh = make_bert(seed=0)
    loaded = DeltaModel.from_pretrained(fresh, tmp_path)
    assert torch.equal(loaded(**text_batch).logits, expected)
    assert not any(p.requires_grad for p in fresh.parameters()) and not loaded.training
    trainable = DeltaModel.from_pretrained(make_bert(), tmp_path, is_trainable=True)
    assert all(tensor.requires_grad for tensor in trainable._params().values())


def test_from_pretrained_names_the_argument_order(make_bert, tmp_path):
    get_delta_model(make_bert(), CoeffTuningConfig()).save_pretrained(tmp_path)
    base = make_bert()
    for folder in (tmp_path, str(tmp_path)):
        with pytest.raises(
            UserInputError,
            match=r"^DeltaModel\.from_pretrained takes the base model first, then the folder: "
            r"DeltaModel\.from_pretrained\(base_model, '.*'\)$",
        ):
            DeltaModel.from_pretrained(folder, base)
    with pytest.raises(UserInputError, match=r"needs the base model \(an nn\.Module\) first, got str"):
        DeltaModel.from_pretrained("minilm-l6", tmp_path)
    assert not any(n.startswith("ds_") or ".ds_" in n for n, _ in base.named_modules())
    DeltaModel.from_pretrained(base, tmp_path)  # the right order works


def test_save_load_timm_style(tiny_timm_vit, pixel_batch, tmp_path):
    model = get_delta_model(tiny_timm_vit, CoeffTuningConfig())
    assert model.head_modules == ["head"]
    _perturb(model)
    expected = model.eval()(pixel_batch)
    model.save_pretrained(tmp_path)
    base = model.unload()
    assert torch.equal(DeltaModel.from_pretrained(base, tmp_path)(pixel_batch), expected)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"num_attention_heads": 2}, "attention heads"), ({"num_hidden_layers": 3}, "layers")],
)
def test_load_into_mismatched_base(make_bert, tmp_path, overrides, message):
    get_delta_model(make_bert(), CoeffTuningConfig()).save_pretrained(tmp_path)
    other = make_bert(**overrides)
    with pytest.raises(ValueError, match=message) as info:
        DeltaModel.from_pretrained(other, tmp_path)
    assert "\n" not in str(info.value)
    assert _no_ds_modules(other) and other.config._attn_implementation == "sdpa"


def test_load_with_missing_modules_or_shapes(make_bert, make_llama, tmp_path):
    get_delta_model(make_llama(), LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path)
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    meta["base_model"] = {}  # skip the fingerprint check to reach the structural checks
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="do not fit"):
        DeltaModel.from_pretrained(make_bert(), tmp_path)  # BERT has no q_proj
    with pytest.raises(ValueError, match="shape"):
        DeltaModel.from_pretrained(make_llama(hidden_size=48, head_dim=8), tmp_path)


def test_damaged_files(tiny_bert, make_bert, tmp_path):
    get_delta_model(tiny_bert, CoeffTuningConfig()).save_pretrained(tmp_path)
    weights = tmp_path / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="damaged"):
        DeltaModel.from_pretrained(make_bert(), tmp_path)
    weights.write_bytes(b"not a safetensors file")
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    del meta["weights_sha256"]
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="damaged or not a safetensors file"):
        DeltaModel.from_pretrained(make_bert(), tmp_path)
    (tmp_path / CONFIG_FILE).write_text("{ broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        DeltaModel.from_pretrained(make_bert(), tmp_path)
    os.remove(weights)
    with pytest.raises(FileNotFoundError, match=WEIGHTS_FILE):
        DeltaModel.from_pretrained(make_bert(), tmp_path)


def test_failed_save_leaves_no_file(tiny_bert, tmp_path, monkeypatch):
    model = get_delta_model(tiny_bert, CoeffTuningConfig())

    def broken_save(tensors, path, metadata=None):
        with open(path, "wb") as handle:
            handle.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken_save)  # deltaspace.io imports it per call
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(tmp_path)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------------------------- unload
def test_unload_returns_unchanged_base(tiny_llama, left_padded_batch):
    state = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    expected = tiny_llama(**left_padded_batch).logits
    model = get_delta_model(tiny_llama, CoeffTuningConfig(), LoraConfig(r=2, target_modules=["v_proj"]))
    _perturb(model)
    assert not torch.allclose(model(**left_padded_batch).logits, expected)
    base = model.unload()
    assert base is tiny_llama and _no_ds_modules(base) and not hasattr(base, "peft_config")
    assert base.config._attn_implementation == "sdpa"
    assert all(p.requires_grad for p in base.parameters())
    assert base.state_dict().keys() == state.keys() and all(
        torch.equal(v, state[k]) for k, v in base.state_dict().items()
    )
    assert torch.equal(base(**left_padded_batch).logits, expected)
    with pytest.raises(RuntimeError, match="unloaded"):
        model(**left_padded_batch)


def test_unload_timm_style_restores_class(tiny_timm_vit, pixel_batch):
    expected = tiny_timm_vit(pixel_batch)
    classes = [type(m) for m in tiny_timm_vit.modules()]
    model = get_delta_model(tiny_timm_vit, CoeffTuningConfig())
    torch.testing.assert_close(model(pixel_batch), expected, rtol=0, atol=1e-6)  # ΔC = 0: same function
    base = model.unload()
    assert [type(m) for m in base.modules()] == classes and _no_ds_modules(base)
    assert torch.equal(base(pixel_batch), expected)


def test_generate_delegates(tiny_llama, left_padded_batch):
    expected = tiny_llama.generate(**left_padded_batch, max_new_tokens=3, do_sample=False, pad_token_id=0)
    model = get_delta_model(tiny_llama, CoeffTuningConfig())
    got = model.generate(**left_padded_batch, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert torch.equal(got, expected)


def test_read_solution_checks_a_saved_run_against_this_model(make_bert, tmp_path):
    """The study reads many trained runs into one model's layout without rebuilding a base for each."""
    trained = get_delta_model(make_bert(), CoeffTuningConfig(), seed=2)
    with torch.no_grad():
        for param in trained.base_model.parameters():
            if param.requires_grad:
                param.add_(0.1)
    trained.save_pretrained(tmp_path / "run")
    reader = get_delta_model(make_bert(), CoeffTuningConfig(), seed=2)
    solution = reader.read_solution(tmp_path / "run")
    assert list(solution) == list(reader.parameter_shapes())
    assert all(torch.equal(solution[n], t) for n, t in trained.solution().items())
    assert not torch.equal(reader.solution_vector(), trained.solution_vector())  # nothing was loaded
    other_seed = get_delta_model(make_bert(), CoeffTuningConfig(), seed=3)
    with pytest.raises(ValueError, match=r"\(coeff, seed 2\) are not this model's \(coeff, seed 3\)"):
        other_seed.read_solution(tmp_path / "run")
    lora = get_delta_model(make_bert(), LoraConfig(r=2, target_modules=["query"]), seed=2)
    with pytest.raises(ValueError, match="are not this model's"):
        lora.read_solution(tmp_path / "run")
    with pytest.raises(ValueError, match="attention heads per layer"):
        get_delta_model(make_bert(num_attention_heads=2), CoeffTuningConfig(), seed=2).read_solution(
            tmp_path / "run"
        )
    (tmp_path / "run" / WEIGHTS_FILE).write_bytes(b"junk")
    with pytest.raises(ValueError, match="checksum mismatch"):
        reader.read_solution(tmp_path / "run")
