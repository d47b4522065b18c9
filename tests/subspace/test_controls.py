import pytest
import torch

from deltaspace.subspace import OptimiseConfig, optimise
from deltaspace.subspace.closed_form import rms_norm
from deltaspace.subspace.controls import control_subspace
from deltaspace.subspace.optimise import initial_code


def test_span_control_spans_the_source_solutions_and_random_does_not(toy_study):
    sources = [t.name for t in toy_study.sources]
    span = control_subspace("span", toy_study.members, toy_study.store, sources, 5, seed=0)
    random = control_subspace("random", toy_study.members, toy_study.store, sources, 5, seed=0)
    for member in toy_study.members:
        deltas = torch.stack([toy_study.store.delta(member.name, t) for t in sources])
        for bundle, expect_in_span in ((span, True), (random, False)):
            up = bundle.up(member.name)
            columns = up.delta(torch.eye(5))  # (d, D): the d directions
            # least-squares fit of every source delta from the directions
            coef = torch.linalg.lstsq(columns.t().double(), deltas.t().double()).solution
            residual = (columns.t().double() @ coef - deltas.t().double()).norm() / deltas.norm()
            assert (residual < 1e-4) == expect_in_span, (member.name, float(residual))
            # directions of about the size of the solutions, so one lr suits every subspace
            norms = columns.detach().norm(dim=1) / rms_norm(deltas)
            assert 0.2 < float(norms.mean()) < 5.0, norms
        assert span.codes == {} and random.codes == {}  # nothing learned: no source codes
    with pytest.raises(ValueError, match="unknown control"):
        control_subspace("pca", toy_study.members, toy_study.store, sources, 5)


def test_stage2_reports_the_starting_score_and_can_start_from_the_source_codes(toy_study, toy_bundle):
    member = toy_study.members[0]
    config = OptimiseConfig(steps=4, eval_every=2, optimizer="adamw", progress=False, init="source_mean")
    z0 = initial_code(toy_bundle.dim, config, toy_bundle, member.name)
    torch.testing.assert_close(z0, torch.stack(list(toy_bundle.codes[member.name].values())).mean(0))
    result = optimise(member, toy_bundle, toy_study.target, config)
    start = optimise(member, toy_bundle, toy_study.target, OptimiseConfig(**{**config.to_dict(), "steps": 1}))
    assert result.initial_metric == start.initial_metric == result.history[0]["eval"]  # the starting code's
    assert len(result.predictions) == sum(len(b["labels"]) for b in toy_study.target.report_batches)
    with pytest.raises(ValueError, match="source codes"):
        from deltaspace.subspace import SubspaceBundle

        optimise(member, SubspaceBundle(dict(toy_bundle.ups)), toy_study.target, config)
