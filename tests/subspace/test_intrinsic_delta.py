import json
import shutil

import pytest
import torch
from peft import LoraConfig

from deltaspace import get_delta_model
from deltaspace.subspace import DeltaModelMember, DenseUp, FastfoodUp, IntrinsicDelta, SubspaceBundle


def _saved_bundle(path, ups):
    bundle = SubspaceBundle(ups)
    bundle.save(path)
    return bundle


def test_intrinsic_delta_round_trip_reproduces_theta_exactly(tmp_path):
    ups = {
        "lora": DenseUp(torch.randn(60), 5, scale=0.7, seed=1),
        "full": FastfoodUp(torch.randn(500), 5, seed=2),
    }
    bundle = _saved_bundle(tmp_path / "study" / "bundle", ups)
    z = torch.randn(5) / 3
    for member in ("lora", "full"):
        delta = IntrinsicDelta.from_bundle(
            tmp_path / "study" / "bundle", member, z, task="rte", metrics={"accuracy": 0.7}
        )
        path = delta.save(tmp_path / "study" / "deltas" / f"{member}.json")
        data = json.loads(path.read_text())
        assert data["dim"] == 5 and data["bundle"]["path"] == "../bundle"  # relative reference
        loaded = IntrinsicDelta.load(path)
        assert torch.equal(loaded.z, z) and loaded.task == "rte" and loaded.metrics == {"accuracy": 0.7}
        assert torch.equal(loaded.theta(), bundle.decode(member, z))  # bit-identical θ
    # moving the whole study keeps the relative reference valid
    shutil.move(tmp_path / "study", tmp_path / "moved")
    moved = IntrinsicDelta.load(tmp_path / "moved" / "deltas" / "full.json")
    assert torch.equal(moved.theta(), bundle.decode("full", z))


def test_intrinsic_delta_refuses_a_different_bundle(tmp_path):
    _saved_bundle(tmp_path / "b", {"lora": DenseUp(torch.randn(60), 5, seed=1)})
    path = IntrinsicDelta.from_bundle(tmp_path / "b", "lora", torch.randn(5)).save(tmp_path / "d.json")
    other = _saved_bundle(tmp_path / "b", {"lora": DenseUp(torch.randn(60), 5, seed=9)})  # overwritten
    loaded = IntrinsicDelta.load(path)
    with pytest.raises(ValueError, match="sha256"):
        loaded.theta()
    with pytest.raises(ValueError, match="sha256 differs"):
        loaded.theta(other)
    with pytest.raises(FileNotFoundError, match="save the bundle"):
        IntrinsicDelta.from_bundle(tmp_path / "nowhere", "lora", torch.randn(5))


def test_intrinsic_delta_loads_into_a_delta_model(tmp_path, tiny_bert, text_batch):
    model = get_delta_model(tiny_bert, LoraConfig(r=2, target_modules=["query", "value"]), seed=0)
    member = DeltaModelMember("lora", model, dropout_in_loss=False)
    bundle = _saved_bundle(tmp_path / "b", {"lora": DenseUp(member.theta0, 3, scale=0.05, seed=0)})
    z = torch.tensor([0.3, -1.2, 0.8])
    IntrinsicDelta.from_bundle(tmp_path / "b", "lora", z).save(tmp_path / "lora.json")
    theta = bundle.decode("lora", z)
    model.eval()
    expected = model.functional_call(model.vector_to_solution(theta), **text_batch).logits
    IntrinsicDelta.load(tmp_path / "lora.json").load_into(model)
    assert torch.equal(model.solution_vector(), theta)
    torch.testing.assert_close(model(**text_batch).logits, expected)
    small = IntrinsicDelta("lora", z, str(tmp_path / "b"), bundle.sha256)
    other = get_delta_model(model.unload(), LoraConfig(r=1, target_modules=["query"]), seed=0)
    with pytest.raises(ValueError, match="same delta configuration"):
        small.load_into(other)
