"""The contract every DET keeps through DeltaModel, as checks the test matrices call (test_zoo, test_example_det).

What a DET may do differently comes from its preset's facts (``deltaspace.deltas.registry.Preset``).
"""

import copy
import json

import pytest
import torch

from deltaspace import DeltaModel, get_delta_model
from deltaspace.attention import is_enabled
from deltaspace.deltas.presets import resolve_method
from deltaspace.deltas.registry import presets


def _facts(method):
    return [presets()[part] for part in method.split("+")]


def build(base, method, seed=0, **overrides):
    no_bias = not any(n.endswith("bias") for n, _ in base.named_parameters())
    if no_bias and any(p.needs_bias for p in _facts(method)):
        pytest.skip("the base has no biases (BitFit's error is tested in test_bitfit)")
    return get_delta_model(base, *resolve_method(method, base, **overrides), seed=seed).eval()


def logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def _check_gradients(model, batch):
    """Only the deltas' parameters and the head's get gradients (and requires_grad)."""
    own = [n for delta in model.deltas for n in delta.parameter_names()]
    trainable = model.trainable_parameter_names()
    assert trainable[: len(own)] == own
    heads = {n for n, _ in model.base_model.named_parameters() if n.startswith("classifier.")}
    assert set(trainable) - set(own) <= heads
    model.train()
    model(**batch).logits.float().pow(2).mean().backward()
    model.eval()
    for name, param in model.base_model.named_parameters():
        assert (param.grad is not None) == (name in trainable), name
        assert param.requires_grad == (name in trainable), name
    assert any(p.grad.abs().sum() > 0 for n, p in model.base_model.named_parameters() if n in own)
    model.zero_grad(set_to_none=True)


def check_solution_round_trip(model, batch):
    """solution_vector -> vector_to_solution -> functional_call is the module; load_solution does what it predicts."""
    vector = model.solution_vector()
    assert vector.numel() == model.num_trainable_parameters()
    current = logits(model, batch)
    with torch.no_grad():
        same = model.functional_call(model.vector_to_solution(vector), **batch).logits
        torch.testing.assert_close(same, current, atol=0, rtol=0)
        perturbed = vector + 0.2 * torch.randn(vector.shape, generator=torch.Generator().manual_seed(3))
        predicted = model.functional_call(model.vector_to_solution(perturbed), **batch).logits
    torch.testing.assert_close(
        logits(model, batch), current, atol=0, rtol=0
    )  # functional_call mutates nothing
    assert (predicted - current).abs().max() > 1e-4
    model.load_solution(model.vector_to_solution(perturbed))
    torch.testing.assert_close(logits(model, batch), predicted, atol=1e-6, rtol=0)
    assert torch.equal(model.solution_vector(), perturbed)


def check_contract(base_for, arch, method, text_batch, tmp_path):
    """Identity at init (unless the DET says otherwise), gradients, solutions, save/load, exact unload."""
    base = base_for(arch)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    reference = logits(base, text_batch)
    model = build(base, method, seed=3)

    out = logits(model, text_batch)
    if any(p.changes_output_at_init for p in _facts(method)):
        assert (out[:, : reference.shape[1]] - reference).abs().max() > 1e-6
    else:
        torch.testing.assert_close(out, reference, atol=1e-6, rtol=0)
    _check_gradients(model, text_batch)
    check_solution_round_trip(model, text_batch)

    # save -> load into a fresh copy of the base reproduces the outputs and the solution
    expected = logits(model, text_batch)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "delta_config.json").read_text())
    assert [d["method"] for d in saved["deltas"]] == [c.method for c in model.delta_configs]
    loaded = DeltaModel.from_pretrained(base_for(arch), tmp_path)
    torch.testing.assert_close(logits(loaded, text_batch), expected, atol=1e-6, rtol=0)
    assert torch.equal(loaded.solution_vector(), model.solution_vector())

    # unload returns the base exactly as it was, apart from the (trained) head
    heads = {k for k in before if k.startswith("classifier.")}
    restored = model.unload()
    assert restored is base and not is_enabled(base) and base.config._attn_implementation == "eager"
    after = base.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], v) for k, v in before.items() if k not in heads)
    with torch.no_grad():
        for k in heads:
            after[k].copy_(before[k])
    torch.testing.assert_close(logits(base, text_batch), reference, atol=0, rtol=0)


def check_theta0(base_for, arch, method):
    """θ0 is a function of the seed: the same seed gives the same θ0, another one another θ0 (if seeded)."""
    base = base_for(arch)
    first = build(copy.deepcopy(base), method, seed=7).solution_vector()
    again = build(copy.deepcopy(base), method, seed=7).solution_vector()
    other = build(copy.deepcopy(base), method, seed=8).solution_vector()
    assert torch.equal(first, again)
    assert torch.equal(first, other) == (not presets()[method].seeded_init)
