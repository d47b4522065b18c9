import numpy as np
import pytest

from deltaspace.subspace import OptimiseConfig, evaluate, optimise_and_transfer, transfer


def test_transfer_matrix_shape_diagonal_and_relative(toy_study, toy_bundle):
    config = OptimiseConfig(steps=10, lr=5e-2, optimizer="adamw", eval_every=5, progress=False)
    originals = toy_study.target_original
    matrix, results = optimise_and_transfer(
        toy_study.members, toy_bundle, toy_study.target, config, original_metrics=originals
    )
    names = [m.name for m in toy_study.members]
    assert matrix.sources == matrix.targets == names
    assert matrix.metrics.shape == matrix.relative.shape == (3, 3)
    # the diagonal is stage 2 itself: each code decoded by the member it was found with
    np.testing.assert_array_equal(np.diag(matrix.metrics), [results[n].metric for n in names])
    np.testing.assert_allclose(
        matrix.relative, 100 * matrix.metrics / np.array([originals[n] for n in names])[None, :]
    )
    # an off-diagonal entry is the target member's score at U_target(z_source)
    target = toy_study.members[2]
    theta = toy_bundle.decode(target.name, results["linear"].z)
    expected = evaluate(target, theta, toy_study.target.report_batches)["accuracy"]
    assert matrix.metrics[0, 2] == expected
    off = [matrix.relative[i, j] for i in range(3) for j in range(3) if i != j]
    assert matrix.off_diagonal_mean() == pytest.approx(np.mean(off))
    assert matrix.to_dict()["relative"][0][0] == matrix.relative[0, 0]


def test_transfer_without_originals_and_single_source(toy_study, toy_bundle):
    z = toy_bundle.code("lowrank", "src0")
    result = transfer(toy_study.members, toy_bundle, {"lowrank": z}, toy_study.sources[0])
    assert result.metrics.shape == (1, 3) and result.relative is None
    with pytest.raises(ValueError, match="at least one source code"):
        transfer(toy_study.members, toy_bundle, {}, toy_study.target)
