"""The Gram-statistics reconstruction of a frozen up-projection equals the direct one (values and the
gradient in the code), with the columns decoded a few at a time and float64 blocks over D."""

import pytest
import torch

from deltaspace.subspace import closed_form, frozen_reconstruction
from deltaspace.subspace.frozen_reconstruction import FrozenReconstruction, is_frozen
from deltaspace.subspace.projections import BasisUp, FastfoodUp, relative_reconstruction_error


def _frozen_up(extra: bool) -> BasisUp:
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(50, 5, generator=g)
    directions = FastfoodUp(50, 6, scale=0.3, seed=1) if extra else None
    # train_basis=False fixes the whole decoder: the extra directions' parameters too
    return BasisUp(50, 11 if extra else 5, scale=0.7, basis=basis, extra=directions, train_basis=False)


@pytest.mark.parametrize("extra", [False, True])
def test_gram_error_and_gradient_equal_the_direct_reconstruction(monkeypatch, extra):
    monkeypatch.setattr(closed_form, "_BLOCK", 16)  # several float64 blocks over D = 50
    monkeypatch.setattr(frozen_reconstruction, "_BLOCK", 16)
    monkeypatch.setattr(frozen_reconstruction, "_COLUMNS", 3)  # ragged column passes
    up = _frozen_up(extra)
    assert is_frozen(up)
    g = torch.Generator().manual_seed(2)
    deltas = {f"t{i}": torch.randn(50, generator=g) for i in range(4)}
    deltas["exact"] = up.delta(torch.randn(up.dim, generator=g)).detach()
    gram = FrozenReconstruction(up, deltas)
    tasks = ["t2", "exact", "t0"]
    z = torch.randn(3, up.dim, generator=g)
    z[1] = torch.linalg.lstsq(up.delta(torch.eye(up.dim)).t(), deltas["exact"][:, None]).solution[
        :, 0
    ]  # the code that reproduces "exact"
    z_gram, z_direct = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    fast = gram.error(z_gram, tasks)
    direct = relative_reconstruction_error(torch.stack([deltas[t] for t in tasks]), up.delta(z_direct))
    torch.testing.assert_close(fast, direct, rtol=1e-4, atol=1e-6)
    assert float(fast[1].detach()) < 1e-6 and float(fast.detach().min()) >= 0.0
    (fast * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    (direct * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    torch.testing.assert_close(z_gram.grad, z_direct.grad, rtol=1e-4, atol=1e-5)
    every = torch.randn(5, up.dim, generator=g)  # default: every task, in the deltas' order
    torch.testing.assert_close(gram.error(every), gram.error(every, ["t0", "t1", "t2", "t3", "exact"]))


def test_a_trainable_up_projection_is_refused():
    up = BasisUp(20, 3, basis=torch.randn(20, 3))
    assert not is_frozen(up)
    with pytest.raises(ValueError, match="without trainable parameters"):
        FrozenReconstruction(up, {"t": torch.randn(20)})


def test_a_fit_with_frozen_bases_follows_the_direct_reconstruction(toy_study, monkeypatch):
    import importlib

    from deltaspace.subspace import FitConfig, fit

    fit_module = importlib.import_module("deltaspace.subspace.fit")  # the module: the package exports fit()

    config = FitConfig(dim=3, steps=5, train_basis=False, optimizer="adamw", lr=1e-2, progress=False, seed=3)
    fast_records, direct_records, built = [], [], []
    real = fit_module.FrozenReconstruction
    monkeypatch.setattr(fit_module, "FrozenReconstruction", lambda up, d: built.append(up) or real(up, d))
    fast = fit(toy_study.members, toy_study.store, toy_study.sources, config, on_step=fast_records.append)
    assert len(built) == len(toy_study.members)  # every member's reconstruction went through Gram statistics
    monkeypatch.setattr(fit_module, "is_frozen", lambda up: False)  # every member through the direct path
    direct = fit(toy_study.members, toy_study.store, toy_study.sources, config, on_step=direct_records.append)
    for a, b in zip(fast_records, direct_records, strict=True):
        assert a["recon"] == pytest.approx(b["recon"], rel=1e-4, abs=1e-7)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    for name in fast.members:
        for task in fast.tasks():
            torch.testing.assert_close(fast.code(name, task), direct.code(name, task), rtol=1e-4, atol=1e-6)
