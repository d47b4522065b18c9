import dataclasses

import pytest
import torch

from deltaspace.subspace import OptimiseConfig, optimise
from deltaspace.subspace.optimise import initial_code


class WatchingMember:
    """Wraps a toy member and records, at every loss call, which tensors require gradients."""

    def __init__(self, inner, up):
        self.inner, self.up = inner, up
        self.name, self.theta0 = inner.name, inner.theta0
        self.calls = []

    def loss(self, theta, batch):
        grad_tensors = [name for name, p in self.up.named_parameters() if p.requires_grad]
        self.calls.append((theta.requires_grad, grad_tensors))
        return self.inner.loss(theta, batch)

    def predict(self, theta, batch):
        return self.inner.predict(theta, batch)


def _snapshot(bundle, member):
    tensors = {
        f"{name}.{key}": value.clone()
        for name in bundle.members
        for key, value in bundle.up(name).state_dict().items()
    }
    tensors.update({f"code.{m}.{t}": z.clone() for m in bundle.members for t, z in bundle.codes[m].items()})
    tensors["member.theta0"] = member.theta0.clone()
    return tensors


def test_stage2_trains_only_z(toy_study, toy_bundle):
    member = WatchingMember(toy_study.members[0], toy_bundle.up("linear"))
    flags = {name: p.requires_grad for name, p in toy_bundle.up("linear").named_parameters()}
    before = _snapshot(toy_bundle, member)
    config = OptimiseConfig(steps=15, lr=5e-2, optimizer="adamw", eval_every=5, progress=False)
    result = optimise(member, toy_bundle, toy_study.target, config, original_metric=0.9)
    after = _snapshot(toy_bundle, member)
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key  # bit-identical
    assert len(member.calls) == 15
    assert all(theta_grad and grads == [] for theta_grad, grads in member.calls)  # only z is trainable
    restored = {name: p.requires_grad for name, p in toy_bundle.up("linear").named_parameters()}
    assert restored == flags
    assert result.z.shape == (toy_bundle.dim,) and not result.z.requires_grad
    assert result.relative == pytest.approx(100 * result.metric / 0.9)
    assert [h["step"] for h in result.history if "eval" in h] == [0, 5, 10, 15]
    assert result.selection_metric == max(h["eval"] for h in result.history if "eval" in h)


def test_stage2_init_and_determinism(toy_study, toy_bundle):
    member = toy_study.members[1]
    assert torch.equal(initial_code(3, OptimiseConfig(init="zeros")), torch.zeros(3))
    z = initial_code(3, OptimiseConfig(init="normal", init_std=0.02, seed=4))
    assert z.abs().max() < 0.2 and torch.equal(z, initial_code(3, OptimiseConfig(seed=4)))
    config = OptimiseConfig(steps=8, lr=5e-2, optimizer="adamw", eval_every=4, progress=False)
    a = optimise(member, toy_bundle, toy_study.target, config)
    b = optimise(member, toy_bundle, toy_study.target, config)
    assert torch.equal(a.z, b.z) and a.metric == b.metric and a.relative is None
    # zero steps of progress from a zero code is exactly θ0: the subspace is anchored at the init
    zero = optimise(
        member,
        toy_bundle,
        toy_study.target,
        OptimiseConfig(steps=1, lr=1e-9, init="zeros", optimizer="adamw", eval_every=0, progress=False),
    )
    assert torch.equal(toy_bundle.decode(member.name, torch.zeros(3)), member.theta0)
    assert zero.best_step in (0, 1)


def test_stage2_rejects_mismatched_member(toy_study, toy_bundle):
    class Other:
        name, theta0 = "linear", torch.zeros(7)

        def loss(self, theta, batch): ...

        def predict(self, theta, batch): ...

    with pytest.raises(ValueError, match="up-projection maps to"):
        optimise(Other(), toy_bundle, toy_study.target, OptimiseConfig(progress=False))
    with pytest.raises(KeyError, match="not in this bundle"):
        optimise(
            type("M", (Other,), {"name": "nope"})(),
            toy_bundle,
            toy_study.target,
            OptimiseConfig(progress=False),
        )


def test_hull_region_keeps_codes_mixtures_of_theta0_and_the_source_codes(toy_study, toy_bundle):
    from deltaspace.subspace.code_geometry import code_geometry
    from deltaspace.subspace.optimise import HULL_START_THETA0, hull_start, hull_vertices

    member = toy_study.members[0]
    vertices = hull_vertices(toy_bundle, member.name)
    sources = torch.stack(list(toy_bundle.codes[member.name].values()))
    assert torch.equal(vertices[0], torch.zeros(toy_bundle.dim)) and torch.equal(vertices[1:], sources)
    weights = torch.softmax(hull_start(len(vertices)), 0)
    assert weights[0].item() == pytest.approx(HULL_START_THETA0)
    assert torch.allclose(
        weights[1:], torch.full((len(vertices) - 1,), (1 - HULL_START_THETA0) / (len(vertices) - 1))
    )
    config = OptimiseConfig(steps=12, lr=0.3, optimizer="adamw", eval_every=4, region="hull", progress=False)
    result = optimise(member, toy_bundle, toy_study.target, config)
    free = optimise(member, toy_bundle, toy_study.target, dataclasses.replace(config, region="free"))
    assert not torch.allclose(result.z, free.z)
    # the chosen code is a mixture: weights ≥ 0 summing to at most 1 over the source codes
    geometry = code_geometry(result.z.tolist(), sources.tolist())
    assert geometry.negative_weight < 1e-5 and geometry.weight_sum <= 1 + 1e-5
    assert geometry.outside_span < 1e-4 or sources.shape[0] >= toy_bundle.dim
    with pytest.raises(ValueError, match="drop z_init"):
        optimise(member, toy_bundle, toy_study.target, config, z_init=torch.zeros(toy_bundle.dim))
    with pytest.raises(ValueError, match="unknown region"):
        OptimiseConfig(region="ball").validate()
