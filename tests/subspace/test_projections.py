import pytest
import scipy.linalg
import torch

from deltaspace.subspace import (
    DenseUp,
    FastfoodUp,
    MLPDown,
    SketchDown,
    UpProjection,
    relative_reconstruction_error,
)
from deltaspace.subspace.hadamard import fwht, next_power_of_two
from deltaspace.subspace.projections import resolve_kinds


@pytest.mark.parametrize("n", [1, 2, 16, 64])
def test_fwht_matches_dense_hadamard_on_both_paths(n):
    x = torch.randn(3, 5, n, dtype=torch.float64, requires_grad=True)
    hadamard = torch.tensor(scipy.linalg.hadamard(n), dtype=torch.float64)
    weights = torch.randn(3, 5, n, dtype=torch.float64)
    grads = []
    for dense_max in (0, 1024):  # butterflies, then the cached matrix
        y = fwht(x, dense_max=dense_max)
        torch.testing.assert_close(y, x @ hadamard)
        grads.append(torch.autograd.grad((y * weights).sum(), x)[0])
    torch.testing.assert_close(grads[0], grads[1])
    torch.testing.assert_close(grads[1], weights @ hadamard)


def test_fwht_errors_and_sizes():
    with pytest.raises(ValueError, match="power-of-two"):
        fwht(torch.randn(12))
    assert [next_power_of_two(n) for n in (1, 2, 3, 64, 65)] == [1, 2, 4, 64, 128]


@pytest.mark.parametrize("cls", [DenseUp, FastfoodUp])
def test_up_shapes_anchor_and_linearity(cls):
    theta0 = torch.randn(300)
    up = cls(theta0, 6, scale=0.5, seed=3)
    z1, z2 = torch.randn(6), torch.randn(6)
    assert up(z1).shape == (300,)
    assert up(torch.randn(4, 6)).shape == (4, 300)
    assert torch.equal(up(torch.zeros(6)), theta0)  # bias-free and anchored: z = 0 is θ0 exactly
    torch.testing.assert_close(up.delta(z1 + 2 * z2), up.delta(z1) + 2 * up.delta(z2), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(up(z1) - theta0, up.delta(z1))
    with pytest.raises(ValueError, match="expects d = 6"):
        up(torch.randn(5))


def test_up_keeps_theta0_dtype():
    theta0 = torch.randn(64).to(torch.bfloat16)
    assert DenseUp(theta0, 3)(torch.randn(3)).dtype == torch.bfloat16


def test_fastfood_columns_behave_like_dense_gaussian_columns():
    # P/scale should have ~i.i.d. N(0, 1) columns at init, like DenseUp: (PᵀP)/D ≈ I
    up = FastfoodUp(torch.zeros(1 << 15), 8, seed=0)
    gram = up.delta(torch.eye(8)) @ up.delta(torch.eye(8)).t() / up.out_features
    torch.testing.assert_close(gram, torch.eye(8), atol=0.05, rtol=0.0)


def test_structured_memory_is_linear_in_d_times_not_d_times_D():
    size, dim = (1 << 14) + 5, 64
    dense_bytes = 4 * size * dim
    up = FastfoodUp(torch.zeros(size), dim)
    down = SketchDown(size, dim)
    for module in (up, down):
        assert module.memory_bytes() == sum(
            t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()]
        )
        assert module.memory_bytes() < dense_bytes / 10
        assert max(t.numel() for t in [*module.parameters(), *module.buffers()]) < 2 * size
    assert DenseUp(torch.zeros(size), dim).memory_bytes() >= dense_bytes


def test_down_projections_shapes_and_sketch_norm():
    delta = torch.randn(2, 5000)
    for down in (MLPDown(5000, 4, input_scale=2.0), SketchDown(5000, 4, sketch_dim=128, input_scale=2.0)):
        assert down(delta).shape == (2, 4)
        assert down(delta[0]).shape == (4,)
    sketch = SketchDown(5000, 4, sketch_dim=256)
    ratios = sketch.features(torch.randn(200, 5000)).norm(dim=-1) / 5000**0.5
    assert abs(float(ratios.mean()) - 1.0) < 0.05  # norm-preserving on average (JL-style sketch)


def test_relative_reconstruction_error_is_scale_free():
    delta, recon = torch.randn(50), torch.randn(50)
    base = relative_reconstruction_error(delta, recon)
    torch.testing.assert_close(relative_reconstruction_error(1e3 * delta, 1e3 * recon), base)
    assert float(relative_reconstruction_error(delta, delta)) == 0.0
    assert float(relative_reconstruction_error(delta, torch.zeros(50))) == pytest.approx(1.0)


@pytest.mark.parametrize("cls", [DenseUp, FastfoodUp])
def test_config_round_trip(cls):
    up = cls(torch.randn(100), 5, scale=0.3, seed=1)
    with torch.no_grad():
        for p in up.parameters():
            p.add_(torch.randn_like(p))
    copy = UpProjection.from_config(up.config())
    copy.load_state_dict(up.state_dict())
    z = torch.randn(5)
    assert torch.equal(copy(z), up(z))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="smaller than d"):
        FastfoodUp(torch.zeros(100), 20, width=8)
    with pytest.raises(ValueError, match="positive finite"):
        DenseUp(torch.zeros(10), 2, scale=0.0)
    with pytest.raises(ValueError, match="unknown up-projection"):
        resolve_kinds("kron", "auto", 10, 2, 100)
    assert resolve_kinds("auto", "auto", 10, 2, 100) == ("dense", "mlp")
    assert resolve_kinds("auto", "auto", 1000, 2, 100) == ("fastfood", "sketch")
