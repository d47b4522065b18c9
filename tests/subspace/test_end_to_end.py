"""fit -> optimise -> transfer -> landscape -> intrinsic delta on three toy DETs, one of them structured."""

import numpy as np
import torch

from deltaspace.subspace import (
    DenseUp,
    FitConfig,
    IntrinsicDelta,
    OptimiseConfig,
    SubspaceBundle,
    evaluate,
    fit,
    landscape,
    optimise,
    optimise_and_transfer,
)
from deltaspace.subspace.plots import plot_landscape


def test_toy_study_end_to_end(toy_study, tmp_path):
    members, target = toy_study.members, toy_study.target
    # "features" (D = 72) goes over the dense budget: it takes part through the structured projections
    config = FitConfig(
        dim=4, steps=300, lr=3e-2, optimizer="adamw", eval_every=100, max_dense_elements=200, progress=False
    )
    bundle = fit(members, toy_study.store, toy_study.sources, config, output_dir=tmp_path / "bundle")
    assert {n: m["up"] for n, m in bundle.metadata["members"].items()} == {
        "linear": "basis+dense",
        "lowrank": "basis+dense",
        "features": "basis+fastfood",
    }
    assert bundle.metadata["best_score"] > 85.0  # mean relative accuracy at the vertices and centroids

    stage2 = OptimiseConfig(steps=100, lr=5e-2, optimizer="adamw", eval_every=25, progress=False)
    matrix, results = optimise_and_transfer(
        members, bundle, target, stage2, original_metrics=toy_study.target_original
    )
    chance = 1 / 3
    for name, result in results.items():
        # a held-out task solved with 4 trainable numbers, far above chance and near the original space
        assert result.metric > 0.8 > chance, (name, result.metric)
        assert result.relative > 85.0, (name, result.relative)
    # an unfitted random subspace of the same dimension does far worse: the fitted subspace carries the tasks
    random = SubspaceBundle(
        {m.name: DenseUp(m.theta0, 4, scale=bundle.up(m.name).scale, seed=5) for m in members}
    )
    for member in members:
        baseline = optimise(member, random, target, stage2).metric
        assert results[member.name].metric > baseline + 0.2, (member.name, baseline)
    assert np.all(np.diag(matrix.relative) > 85.0)
    assert matrix.off_diagonal_mean() > 60.0  # zero-shot transfer between DETs works well above chance

    originals = {m.name: toy_study.store.original_metric(m.name, "src0") for m in members}
    grid = landscape(
        members, bundle, toy_study.sources[0], resolution=7, original_metrics=originals, progress=False
    )
    assert grid.metrics["linear"].shape == (7, 7)
    assert grid.shared_fraction(90.0) > 0.25  # a substantial region where all DETs reach 90 %
    assert plot_landscape(grid, tmp_path / "landscape.png").stat().st_size > 0

    # stage 6: the lowrank solution as 4 numbers + a reference to the bundle
    delta = IntrinsicDelta.from_bundle(tmp_path / "bundle", "lowrank", results["lowrank"].z, task=target.name)
    loaded = IntrinsicDelta.load(delta.save(tmp_path / "lowrank.json"))
    theta = loaded.theta()
    assert torch.equal(theta, bundle.decode("lowrank", results["lowrank"].z))
    assert evaluate(members[1], theta, target.report_batches)["accuracy"] == results["lowrank"].metric
