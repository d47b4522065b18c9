import json

import pytest
import torch

from deltaspace.subspace import DenseUp, FastfoodUp, SolutionStore, SubspaceBundle
from deltaspace.subspace.bundle import read_codes


def _bundle():
    ups = {
        "dense": DenseUp(torch.randn(50), 4, scale=0.3, seed=1),
        "ff": FastfoodUp(torch.randn(300).double(), 4, seed=2),
    }
    with torch.no_grad():
        for up in ups.values():
            for p in up.parameters():
                p.add_(0.1 * torch.randn_like(p))
    codes = {name: {"t0": torch.randn(4), "t/1": torch.randn(4)} for name in ups}
    return SubspaceBundle(ups, codes, {"note": "x", "scores": [1.5, 2.0]})


def test_bundle_save_load_round_trip(tmp_path):
    bundle = _bundle()
    bundle.save(tmp_path / "b")
    loaded = SubspaceBundle.load(tmp_path / "b")
    assert loaded.members == ["dense", "ff"] and loaded.dim == 4 and loaded.tasks() == ["t0", "t/1"]
    assert loaded.metadata == {"note": "x", "scores": [1.5, 2.0]}
    assert loaded.sha256 == bundle.sha256 and len(loaded.sha256) == 64
    z = torch.randn(3, 4)
    for name in bundle.members:
        assert torch.equal(loaded.decode(name, z), bundle.decode(name, z))  # bit-identical outputs
        assert loaded.decode(name, z).dtype == bundle.up(name).theta0.dtype
        for task in bundle.tasks():
            assert torch.equal(loaded.code(name, task), bundle.code(name, task))
    assert loaded.memory_bytes() == bundle.memory_bytes()
    codes = read_codes(tmp_path / "b")  # the codes alone, without the projections
    assert {name: list(by_task) for name, by_task in codes.items()} == {
        n: ["t0", "t/1"] for n in bundle.members
    }
    assert all(torch.equal(codes[n][t], bundle.code(n, t)) for n in bundle.members for t in bundle.tasks())
    assert not list((tmp_path / "b").glob("*.tmp"))  # atomic writes leave no temporaries


def test_bundle_rejects_tampering_and_bad_input(tmp_path):
    _bundle().save(tmp_path / "b")
    index = json.loads((tmp_path / "b" / "bundle.json").read_text())
    index["tensors_sha256"] = "0" * 64
    (tmp_path / "b" / "bundle.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="does not match the sha256"):
        SubspaceBundle.load(tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SubspaceBundle.load(tmp_path / "missing")
    with pytest.raises(ValueError, match="share the intrinsic dimension"):
        SubspaceBundle({"a": DenseUp(torch.zeros(5), 2), "b": DenseUp(torch.zeros(5), 3)})
    with pytest.raises(ValueError, match="expected d = 2"):
        SubspaceBundle({"a": DenseUp(torch.zeros(5), 2)}, {"a": {"t": torch.zeros(3)}})


def test_solution_store_round_trip(tmp_path):
    store = SolutionStore()
    theta0 = torch.randn(10)
    theta = theta0 + torch.randn(10)
    store.add_solution("lora", "task/a", theta, theta0, {"accuracy": 0.8})
    store.add("lora", "b", torch.randn(10))
    store.add("coeff", "task/a", torch.randn(3))
    assert store.tasks() == ["task/a"] and store.tasks("lora") == ["task/a", "b"]
    torch.testing.assert_close(store.delta("lora", "task/a"), theta - theta0)
    store.save(tmp_path / "s")
    loaded = SolutionStore.load(tmp_path / "s")
    assert loaded.members == ["lora", "coeff"] and loaded.original_metric("lora", "task/a") == 0.8
    for member in store.members:
        for task in store.tasks(member):
            assert torch.equal(loaded.delta(member, task), store.delta(member, task))
    with pytest.raises(ValueError, match="has 4 entries, member has 10"):
        store.add("lora", "c", torch.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        store.add("x", "t", torch.tensor([float("nan")]))
    with pytest.raises(KeyError, match="no solution for member"):
        store.delta("lora", "zzz")
