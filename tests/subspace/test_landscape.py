import numpy as np
import pytest
import torch

from deltaspace.subspace import (
    DenseUp,
    SubspaceBundle,
    TaskBatches,
    default_plane,
    landscape,
    pca_plane,
    plane_through,
    solution_plane,
)
from deltaspace.subspace.plots import plot_landscape

N = 1000


class DiscMember:
    """θ ∈ R² (θ0 = 0); accuracy is exactly ``#{i < N·f(θ)} / N`` with ``f = clip(1 − |θ − c|² / 4, 0, 1)``."""

    def __init__(self, name, centre):
        self.name, self.centre = name, torch.tensor(centre, dtype=torch.float64)
        self.theta0 = torch.zeros(2)

    def loss(self, theta, batch):
        return (theta.double() - self.centre).pow(2).sum()

    def predict(self, theta, batch):
        f = (1 - (theta.double() - self.centre).pow(2).sum() / 4).clamp(0, 1)
        return (batch["inputs"] >= N * f).long()  # 0 (= the label) for the first ⌈N·f⌉ examples


def analytic_accuracy(point, centre):
    f = np.clip(1 - np.sum((np.asarray(point) - np.asarray(centre)) ** 2) / 4, 0, 1)
    return np.mean(np.arange(N) < N * f)


@pytest.fixture
def disc_study():
    members = [DiscMember("A", [0.0, 0.0]), DiscMember("B", [1.0, 0.0])]
    ups = {}
    for m in members:
        up = DenseUp(m.theta0, 2)
        with torch.no_grad():
            up.weight.copy_(torch.eye(2))  # θ = z
        ups[m.name] = up
    codes = {"A": {"task": torch.tensor([0.0, 0.0])}, "B": {"task": torch.tensor([1.0, 0.0])}}
    batch = {"inputs": torch.arange(N), "labels": torch.zeros(N, dtype=torch.long)}
    task = TaskBatches("task", lambda: [batch], [batch], num_labels=2)
    return members, SubspaceBundle(ups, codes), task


def test_landscape_grid_matches_analytic_accuracy(disc_study):
    members, bundle, task = disc_study
    plane = plane_through(
        {"A": torch.tensor([0.0, 0.0]), "B": torch.tensor([1.0, 0.0]), "C": torch.tensor([0.0, 1.0])}
    )
    result = landscape(
        members, bundle, task, plane, resolution=9, original_metrics={"A": 1.0, "B": 1.0}, progress=False
    )
    np.testing.assert_allclose(result.a, np.linspace(-0.5, 1.5, 9))  # anchors' box widened by half its size
    for m in members:
        grid = result.metrics[m.name]
        assert grid.shape == (9, 9)
        for i, b in enumerate(result.b):
            for j, a in enumerate(result.a):
                assert abs(grid[i, j] - analytic_accuracy([a, b], m.centre.numpy())) <= 1 / N
    # both ≥ 90 % ⟺ |z − c|² ≤ 0.4 for both centres: the grid points (0.5, 0) and (0.5, ±0.25)
    assert result.shared_fraction(90.0) == pytest.approx(3 / 81)
    shared = result.shared_region(90.0)
    assert {(result.a[j], result.b[i]) for i, j in zip(*np.nonzero(shared), strict=True)} == {
        (0.5, 0.0),
        (0.5, 0.25),
        (0.5, -0.25),
    }
    assert result.to_dict()["shared_fraction_90"] == pytest.approx(3 / 81)


def test_default_and_other_planes(disc_study):
    _, bundle, _ = disc_study
    # two DETs: the plane through θ0 (z = 0) and both codes, which here lie on one line
    with pytest.raises(ValueError, match="collinear"):
        default_plane(bundle, "task")
    points = {
        "p": torch.tensor([1.0, 2.0, 0.0]),
        "q": torch.tensor([0.0, 1.0, 1.0]),
        "r": torch.tensor([2.0, 0.0, 1.0]),
        "s": torch.tensor([1.0, 1.0, 1.0]),
    }
    for make in (plane_through, pca_plane):
        chosen = dict(list(points.items())[:3])
        p = make(chosen)
        for name, z in chosen.items():
            a, b = p.anchors[name]
            torch.testing.assert_close(p.origin + a * p.u + b * p.v, z, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="collinear"):
        plane_through({"a": torch.zeros(3), "b": torch.ones(3), "c": 2 * torch.ones(3)})
    with pytest.raises(ValueError, match="at least 3"):
        pca_plane({"a": torch.zeros(3), "b": torch.ones(3)})
    z_star = torch.tensor([0.5, 1.0])
    sp = solution_plane(z_star, bundle, "task")
    assert list(sp.anchors) == ["z*", "A", "B"]


def test_default_plane_uses_codes(toy_bundle, disc_study):
    plane = default_plane(toy_bundle, "src0")
    assert list(plane.anchors) == ["linear", "lowrank", "features"]
    torch.testing.assert_close(plane.origin, toy_bundle.code("linear", "src0"))
    _, bundle, _ = disc_study
    bundle.codes["A"]["task"] = torch.tensor([1.0, 0.0])
    bundle.codes["B"]["task"] = torch.tensor([0.0, 1.0])
    two = default_plane(bundle, "task")
    assert list(two.anchors) == ["θ0", "A", "B"] and torch.equal(two.origin, torch.zeros(2))


def test_plot_landscape_writes_png(disc_study, tmp_path):
    members, bundle, task = disc_study
    plane = plane_through(
        {"A": torch.tensor([0.0, 0.0]), "B": torch.tensor([1.0, 0.0]), "C": torch.tensor([0.0, 1.0])}
    )
    result = landscape(
        members, bundle, task, plane, resolution=5, original_metrics={"A": 1.0, "B": 1.0}, progress=False
    )
    path = plot_landscape(result, tmp_path / "plots" / "landscape.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    raw = landscape(members, bundle, task, plane, resolution=3, progress=False)
    assert raw.relative is None
    with pytest.raises(ValueError, match="original-space metrics"):
        raw.shared_fraction()
    assert plot_landscape(raw, tmp_path / "raw.png").is_file()
