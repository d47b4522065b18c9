"""One code through every DET: only z trains, every DET reads the same code, the selection is the DETs'
mean validation score, and each DET's reported score is its own at that code."""

import pytest
import torch

from deltaspace.subspace import OptimiseConfig, evaluate, optimise
from deltaspace.subspace.evaluate import predictions, score
from deltaspace.subspace.shared_code import optimise_shared

CONFIG = OptimiseConfig(steps=12, lr=5e-2, optimizer="adamw", eval_every=4, progress=False)


def test_one_code_serves_every_det_and_is_selected_on_their_mean(toy_study, toy_bundle):
    before = {n: {k: v.clone() for k, v in toy_bundle.up(n).state_dict().items()} for n in toy_bundle.members}
    results = optimise_shared(toy_study.members, toy_bundle, toy_study.target, CONFIG)
    assert set(results) == {m.name for m in toy_study.members}
    for name, state in before.items():  # the projections are left bit-identical
        for key, value in state.items():
            assert torch.equal(value, toy_bundle.up(name).state_dict()[key])
    codes = [r.z for r in results.values()]
    assert all(torch.equal(z, codes[0]) for z in codes) and not codes[0].requires_grad
    evals = [h["eval"] for h in next(iter(results.values())).history if "eval" in h]
    assert len(evals) == 4  # steps 0, 4, 8, 12
    z = codes[0]
    mean = sum(
        evaluate(m, toy_bundle.up(m.name)(z), toy_study.target.eval_batches)["accuracy"]
        for m in toy_study.members
    ) / len(toy_study.members)
    for member in toy_study.members:
        result = results[member.name]
        assert result.selection_metric == pytest.approx(mean) == pytest.approx(max(evals))
        pred, gold = predictions(member, toy_bundle.up(member.name)(z), toy_study.target.report_batches)
        assert result.metric == score(pred, gold, toy_study.target.num_labels)["accuracy"]
        assert result.predictions == pred.tolist()


def test_the_mean_of_one_det_twice_is_that_det_s_stage_2(toy_study, toy_bundle):
    member = toy_study.members[0]
    twin = type(member)()  # the same DET (same θ0) under the same name: the mean loss is its loss
    shared = optimise_shared([member, twin], toy_bundle, toy_study.target, CONFIG)[member.name]
    alone = optimise(member, toy_bundle, toy_study.target, CONFIG)
    torch.testing.assert_close(shared.z, alone.z)
    assert (shared.metric, shared.best_step) == (alone.metric, alone.best_step)


def test_a_shared_code_needs_two_dets(toy_study, toy_bundle):
    with pytest.raises(ValueError, match="at least 2 DETs"):
        optimise_shared(toy_study.members[:1], toy_bundle, toy_study.target, CONFIG)


def test_the_start_is_stage_2_s(toy_study, toy_bundle):
    import dataclasses

    from deltaspace.subspace.optimise import initial_code

    zero_steps = dataclasses.replace(CONFIG, steps=1, eval_every=1, lr=1e-12)  # z stays at the start
    for init in ("normal", "source_mean"):
        config = dataclasses.replace(zero_steps, init=init)
        result = next(iter(optimise_shared(toy_study.members, toy_bundle, toy_study.target, config).values()))
        starts = [initial_code(toy_bundle.dim, config, toy_bundle, m.name) for m in toy_study.members]
        torch.testing.assert_close(result.z, torch.stack(starts).mean(0))
