import dataclasses
import json

import numpy as np
import pytest
import torch
from subspace_toys import LinearMember

from deltaspace.subspace import FitConfig, SolutionStore, SubspaceBundle, TaskBatches, fit
from deltaspace.subspace.fit import fixed_points, sample_weights


class ReconOnlyMember:
    """A member for reconstruction-only fits: the task loss must never be called."""

    def __init__(self, name: str, size: int, seed: int) -> None:
        self.name = name
        self.theta0 = torch.randn(size, generator=torch.Generator().manual_seed(seed))

    def loss(self, theta, batch):
        raise AssertionError("reconstruction-only fit must not call the task loss")

    def predict(self, theta, batch):
        raise AssertionError("reconstruction-only fit must not evaluate")


def _low_rank_store(members, dim, tasks, scales, seed=0):
    """Deltas that truly lie in a dim-dimensional subspace per member: Δ_t = P_true z_t (very different scales)."""
    g = torch.Generator().manual_seed(seed)
    store = SolutionStore()
    for member, scale in zip(members, scales, strict=True):
        basis = scale * torch.randn(member.theta0.numel(), dim, generator=g)
        for t in range(tasks):
            store.add(member.name, f"t{t}", basis @ torch.randn(dim, generator=g))
    return store


# the paper's random start, learning the reconstruction from scratch
RECON = dict(
    init="random",
    optimizer="adamw",
    schedule="cosine",
    lr=0.1,
    task_weight=0.0,
    grad_clip=None,
    progress=False,
)


def test_dense_projection_recovers_low_dimensional_deltas_exactly():
    # a 40-parameter DET with tiny deltas next to a 200-parameter one with huge deltas: the normalised loss
    # must fit both
    members = [ReconOnlyMember("small", 40, 1), ReconOnlyMember("large", 200, 2)]
    store = _low_rank_store(members, dim=3, tasks=4, scales=[0.01, 30.0])
    bundle = fit(
        members, store, None, FitConfig(dim=3, steps=300, encoder_hidden=16, up="dense", down="mlp", **RECON)
    )
    errors = bundle.reconstruction_errors(store)
    assert bundle.metadata["members"]["small"]["up"] == "dense"
    assert max(e for by_task in errors.values() for e in by_task.values()) < 1e-3, errors
    assert bundle.metadata["reconstruction"] == errors
    assert bundle.tasks() == ["t0", "t1", "t2", "t3"]


def test_structured_projection_fits_where_its_structure_allows():
    # one Δ per member is always representable (per-coordinate scale), as are several Δ's when D <= width
    members = [ReconOnlyMember("ft", 1000, 1), ReconOnlyMember("narrow", 48, 2)]
    store = SolutionStore()
    g = torch.Generator().manual_seed(5)
    store.add("ft", "t0", 0.1 * torch.randn(1000, generator=g))
    store.add("narrow", "t0", torch.randn(48, generator=g))
    bundle = fit(members, store, None, FitConfig(dim=3, steps=200, up="fastfood", down="sketch", **RECON))
    assert {m["up"] for m in bundle.metadata["members"].values()} == {"fastfood"}
    errors = bundle.reconstruction_errors(store)
    assert max(e for by_task in errors.values() for e in by_task.values()) < 1e-3, errors

    narrow = [ReconOnlyMember("narrow", 48, 2)]
    store = _low_rank_store(narrow, dim=3, tasks=3, scales=[1.0])
    bundle = fit(
        narrow,
        store,
        None,
        FitConfig(dim=3, steps=400, encoder_hidden=16, up="fastfood", **{**RECON, "lr": 0.05}),
    )
    assert max(bundle.reconstruction_errors(store)["narrow"].values()) < 1e-3


class BigMember(LinearMember):
    """A "full fine-tuning"-sized member: D = 2^16, of which the first entries form a linear classifier."""

    def __init__(self):
        super().__init__("full", seed=3)
        self.theta0 = torch.cat([self.theta0, torch.zeros((1 << 16) - self.theta0.numel())])


@pytest.mark.parametrize("init", ["random", "closed_form"])
def test_large_member_never_materialises_a_dense_projection(init):
    member, dim = BigMember(), 16
    size = member.theta0.numel()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 12, generator=g)
    task = TaskBatches.from_tensors(
        "t", x, x[:, 0].gt(0).long(), batch_size=32, eval_inputs=x, eval_labels=x[:, 0].gt(0).long()
    )
    store = SolutionStore()
    store.add("full", "t", 0.01 * torch.randn(size, generator=g))
    config = FitConfig(
        dim=dim, init=init, steps=3, optimizer="adafactor", max_dense_elements=size * dim - 1, progress=False
    )
    bundle = fit([member], store, [task], config)
    meta = bundle.metadata["members"]["full"]
    expected = "fastfood" if init == "random" else "basis+fastfood"
    assert (meta["up"], meta["down"]) == (expected, "sketch")
    assert meta["memory_bytes"]["up"] < meta["dense_equivalent_bytes"] / 3  # O(D) (θ0 included), not d·D
    assert meta["memory_bytes"]["down"] < meta["dense_equivalent_bytes"] / 4
    assert max(t.numel() for t in bundle.up("full").state_dict().values()) < 2 * size


def test_fit_is_deterministic_and_validates_at_fixed_points(toy_study):
    config = FitConfig(dim=3, steps=6, eval_every=3, optimizer="adamw", lr=1e-2, progress=False, seed=7)
    records = []
    first = fit(toy_study.members, toy_study.store, toy_study.sources, config, on_step=records.append)
    second = fit(toy_study.members, toy_study.store, toy_study.sources, config)
    for name in first.members:
        for key, value in first.up(name).state_dict().items():
            assert torch.equal(value, second.up(name).state_dict()[key])
        for task in first.tasks():
            assert torch.equal(first.code(name, task), second.code(name, task))
    # the closed-form start is validated too (step 0), where every DET shares one code per task
    assert [v["step"] for v in first.metadata["validation"]] == [0, 3, 6]
    labels = set(first.metadata["validation"][0]["metrics"]["src0"])
    assert labels == {"vertex:linear", "vertex:lowrank", "vertex:features"}
    labels = set(first.metadata["validation"][-1]["metrics"]["src0"])
    assert labels == {"vertex:linear", "vertex:lowrank", "vertex:features", "centroid"}
    assert first.metadata["validation"][0]["relative"] is True  # store holds the original-space metrics
    assert [r["task"] for r in records] == ["src0", "src1", "src2"] * 2  # round robin
    assert all(set(r["ce"]) == set(r["recon"]) == {"linear", "lowrank", "features"} for r in records)


def test_fit_writes_best_bundle_and_log(toy_study, tmp_path):
    config = FitConfig(dim=2, steps=4, eval_every=2, optimizer="adamw", progress=False)
    bundle = fit(
        toy_study.members,
        toy_study.store,
        toy_study.sources,
        config,
        output_dir=tmp_path / "b",
        log_path=tmp_path / "log.jsonl",
    )
    # The kept state is the best validated one (the first of equals), and what was saved is that state.
    validation = bundle.metadata["validation"]
    assert [v["step"] for v in validation] == [0, 2, 4]
    best = max(validation, key=lambda v: v["score"])
    assert (bundle.metadata["best_step"], bundle.metadata["best_score"]) == (best["step"], best["score"])
    saved = SubspaceBundle.load(tmp_path / "b")
    for member in bundle.members:
        for task in bundle.tasks():
            assert torch.equal(saved.code(member, task), bundle.code(member, task))
            torch.testing.assert_close(
                saved.decode(member, saved.code(member, task)),
                bundle.decode(member, bundle.code(member, task)),
            )
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # one line a training step


def test_interpolation_weights():
    rng = np.random.default_rng(0)
    draws = np.stack([sample_weights(rng, 3, "dirichlet")[0] for _ in range(4000)])
    assert np.allclose(draws.sum(1), 1.0) and (draws >= 0).all()
    np.testing.assert_allclose(draws.mean(0), [1 / 3] * 3, atol=0.02)  # uniform on the simplex
    paper = np.stack([sample_weights(rng, 3, "paper")[0] for _ in range(4000)])
    np.testing.assert_allclose(paper.mean(0), [0.5, 0.25, 0.25], atol=0.02)  # the paper's biased sampling
    assert np.array_equal(sample_weights(rng, 3, "none"), np.eye(3))
    points = fixed_points({"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([0.0, 1.0])})
    assert torch.equal(points["centroid"], torch.tensor([0.5, 0.5]))


def test_fit_rejects_bad_input(toy_study):
    with pytest.raises(ValueError, match="needs tasks"):
        fit(toy_study.members, toy_study.store, None, FitConfig(progress=False))
    with pytest.raises(ValueError, match="unknown mixing"):
        fit(toy_study.members, toy_study.store, toy_study.sources, FitConfig(mixing="uniform"))
    empty = SolutionStore()
    with pytest.raises(ValueError, match="has no solution"):
        fit(toy_study.members, empty, toy_study.sources, FitConfig(progress=False))


def test_fit_options_without_interpolation_and_random_order(toy_study):
    records = []
    config = FitConfig(
        dim=2, steps=4, mixing="none", task_order="random", optimizer="adamw", progress=False, seed=3
    )
    fit(toy_study.members, toy_study.store, toy_study.sources, config, on_step=records.append)
    assert all(r["weights"] is None for r in records)
    tasks = [r["task"] for r in records]
    assert set(tasks) <= {"src0", "src1", "src2"}
    # random order is drawn from the seed: the same seed repeats it, another seed gives another one
    again, other = [], []
    fit(toy_study.members, toy_study.store, toy_study.sources, config, on_step=again.append)
    longer = FitConfig(**{**config.to_dict(), "steps": 12})
    fit(toy_study.members, toy_study.store, toy_study.sources, longer, on_step=other.append)
    assert [r["task"] for r in again] == tasks
    assert [r["task"] for r in other] != ["src0", "src1", "src2"] * 4  # not the round robin


def test_fit_stops_on_a_non_finite_loss(toy_study):
    class Exploding(LinearMember):
        def loss(self, theta, batch):
            return super().loss(theta, batch) * float("nan")

    member = Exploding()
    with pytest.raises(ValueError, match="lower the lr"):
        fit([member], toy_study.store, toy_study.sources, FitConfig(dim=2, steps=2, progress=False))


def test_closed_form_start_reproduces_every_source_solution_exactly():
    # unrelated, differently scaled DETs; 5 tasks in d = 7: k = 5 solution directions + 2 random ones
    members = [ReconOnlyMember("small", 40, 1), ReconOnlyMember("large", 3000, 2)]
    g = torch.Generator().manual_seed(4)
    store = SolutionStore()
    for member, scale in zip(members, [0.01, 30.0], strict=True):
        for t in range(5):
            store.add(member.name, f"t{t}", scale * torch.randn(member.theta0.numel(), generator=g))
    config = FitConfig(dim=7, steps=0, task_weight=0.0, max_dense_elements=40 * 7, progress=False)
    bundle = fit(members, store, None, config)
    errors = bundle.reconstruction_errors(store)
    assert max(e for by_task in errors.values() for e in by_task.values()) < 1e-8, errors
    assert bundle.metadata["members"]["small"]["up"] == "basis+dense"
    assert bundle.metadata["members"]["large"]["up"] == "basis+fastfood"  # no dense d × D matrix
    assert bundle.metadata["closed_form"]["basis_dim"] == 5
    for task in bundle.tasks():
        # one code per task, shared by every DET, living in the first k coordinates
        small, large = bundle.code("small", task), bundle.code("large", task)
        torch.testing.assert_close(small, large, rtol=0, atol=1e-5)
        assert small[5:].abs().max() < 1e-5
    # a reconstruction-only joint fit from there keeps the solutions (nothing to improve)
    trained = fit(members, store, None, FitConfig(**{**config.to_dict(), "steps": 20, "lr": 1e-3}))
    errors = trained.reconstruction_errors(store)
    assert max(e for by_task in errors.values() for e in by_task.values()) < 1e-3, errors


def test_closed_form_start_is_the_paper_objective_optimum_on_a_toy_study(toy_study):
    """Mixing DET codes changes nothing when codes are shared: every DET decodes its own solution."""
    bundle = fit(
        toy_study.members, toy_study.store, toy_study.sources, FitConfig(dim=4, steps=0, progress=False)
    )
    for member in toy_study.members:
        for task in bundle.tasks():
            theta = bundle.decode(member.name, bundle.code(member.name, task))
            expected = member.theta0 + toy_study.store.delta(member.name, task)
            torch.testing.assert_close(theta, expected, rtol=1e-4, atol=1e-5)
    assert bundle.metadata["best_step"] == 0 and bundle.metadata["validation"] == []


def test_members_per_step_samples_the_task_loss(toy_study):
    records = []
    config = FitConfig(dim=3, steps=6, members_per_step=1, optimizer="adamw", progress=False)
    fit(toy_study.members, toy_study.store, toy_study.sources, config, on_step=records.append)
    assert all(len(r["ce"]) == 1 for r in records)
    assert all(len(r["recon"]) == 3 for r in records)  # every member's reconstruction, every step
    assert len({next(iter(r["ce"])) for r in records}) > 1


def test_gradient_directions_keep_the_solutions_exact_and_span_the_descent_directions(toy_study):
    from deltaspace.subspace._optim import seeded
    from deltaspace.subspace.fit import _descent_directions

    config = FitConfig(dim=7, steps=0, gradient_directions=True, gradient_batches=1, progress=False)
    bundle = fit(toy_study.members, toy_study.store, toy_study.sources, config)
    assert bundle.metadata["closed_form"] == {
        **bundle.metadata["closed_form"],
        "basis_dim": 3,
        "gradient_dim": 3,
    }
    errors = bundle.reconstruction_errors(toy_study.store)
    assert max(e for by_task in errors.values() for e in by_task.values()) < 1e-6
    tasks = {t.name: t for t in toy_study.sources}
    for member in toy_study.members:
        columns = bundle.up(member.name).delta(torch.eye(7)[:6]).detach().t().double()  # (D, 6)
        with seeded(0):  # the same shuffled first batches as inside fit()
            descent = _descent_directions(member, tasks, list(tasks), 1, False)[0].t().double()
        coef = torch.linalg.lstsq(columns, descent).solution
        assert (columns @ coef - descent).norm() / descent.norm() < 1e-4, member.name


def test_output_scaled_descent_directions_change_every_members_outputs_alike(toy_study):
    from deltaspace.subspace._optim import seeded
    from deltaspace.subspace.alignment import output_change
    from deltaspace.subspace.fit import _descent_directions, _matched_output_scale

    tasks = {t.name: t for t in toy_study.sources}
    rows, sensitivity, last_batch = {}, {}, {}
    for member in toy_study.members:
        with seeded(0):
            rows[member.name], _, sensitivity[member.name], _ = _descent_directions(
                member, tasks, list(tasks), 1, True, "output"
            )
        with seeded(0):  # the batch each row was measured on (one per task, per_batch)
            last_batch[member.name] = [next(tasks[t].stream()) for t in tasks]
    before = torch.stack(list(sensitivity.values()))
    assert (before.max(0).values / before.min(0).values).max() > 1.5  # the members differ unscaled
    factors = _matched_output_scale(sensitivity)
    after = torch.tensor(
        [
            [
                float(
                    output_change(member, rows[member.name][i] * factors[member.name][i], batch)
                    .pow(2)
                    .mean()
                    .sqrt()
                )
                for i, batch in enumerate(last_batch[member.name])
            ]
            for member in toy_study.members
        ]
    )
    torch.testing.assert_close(after, after[:1].expand_as(after), rtol=1e-3, atol=0)
    torch.testing.assert_close(after[0], before.log().mean(0).exp().float(), rtol=1e-3, atol=0)


def test_aligned_descent_directions_keep_each_span_and_agree_across_members(toy_study):
    config = FitConfig(dim=7, steps=0, gradient_directions=True, gradient_batches=2, progress=False)
    plain = fit(toy_study.members, toy_study.store, toy_study.sources, config)
    aligned = fit(
        toy_study.members,
        toy_study.store,
        toy_study.sources,
        dataclasses.replace(config, gradient_align=True),
    )
    report = aligned.metadata["closed_form"]["alignment"]
    assert report["after"] < 0.8 * report["before"], report
    errors = aligned.reconstruction_errors(toy_study.store)
    assert max(e for by_task in errors.values() for e in by_task.values()) < 1e-6
    for member in toy_study.members:
        before = plain.up(member.name).delta(torch.eye(7)).detach().t().double()
        after = aligned.up(member.name).delta(torch.eye(7)).detach().t().double()
        coef = torch.linalg.lstsq(before, after).solution  # the same span, other coordinates
        assert (before @ coef - after).norm() / after.norm() < 1e-5, member.name
        assert (after - before).norm() / before.norm() > 1e-2, member.name


def test_gradient_align_needs_gradient_directions():
    with pytest.raises(ValueError, match="gradient_directions"):
        FitConfig(gradient_align=True).validate()


def test_a_pool_of_candidates_aligns_closer_than_a_change_of_coordinates(toy_study):
    config = FitConfig(
        dim=7,
        steps=0,
        gradient_directions=True,
        gradient_batches=2,
        gradient_per_batch=True,
        gradient_align=True,
        progress=False,
    )
    plain = fit(toy_study.members, toy_study.store, toy_study.sources, config)
    pooled = fit(
        toy_study.members,
        toy_study.store,
        toy_study.sources,
        dataclasses.replace(config, gradient_align_pool=3),
    )
    before = plain.metadata["closed_form"]["alignment"]
    after = pooled.metadata["closed_form"]["alignment"]
    assert after["after"] < before["after"], (before, after)
    errors = pooled.reconstruction_errors(toy_study.store)  # the solutions keep their exact codes
    assert max(e for by_task in errors.values() for e in by_task.values()) < 1e-6
    for member in toy_study.members:
        assert pooled.up(member.name).delta(torch.eye(7)).shape[0] == 7


def test_alignment_options_are_checked():
    with pytest.raises(ValueError, match="set gradient_align: true too"):
        FitConfig(gradient_directions=True, gradient_align_pool=2).validate()
    with pytest.raises(ValueError, match="gradient_align_pool needs gradient_per_batch"):
        FitConfig(gradient_directions=True, gradient_align=True, gradient_align_pool=2).validate()
    with pytest.raises(ValueError, match="gradient_align_space must be one of logits, embedding"):
        FitConfig(gradient_directions=True, gradient_align=True, gradient_align_space="hidden").validate()
    with pytest.raises(ValueError, match="gradient_align_pool must be >= 1"):
        FitConfig(gradient_directions=True, gradient_align=True, gradient_align_pool=0).validate()


def _disagreement(bundle, members, batch, scale, draws=16):
    """Mean over random codes of the spread given and over pairs of members of Σ‖δ_a − δ_b‖² / Σ‖δ_a‖²,
    δ the output change a code makes from the member's θ0."""
    g = torch.Generator().manual_seed(123)
    values = []
    for _ in range(draws):
        z = torch.randn(bundle.dim, generator=g) * scale
        with torch.no_grad():
            changes = [m.outputs(bundle.up(m.name)(z), batch) - m.outputs(m.theta0, batch) for m in members]
        values += [
            float((a - b).pow(2).sum() / a.pow(2).sum())
            for i, a in enumerate(changes)
            for b in changes[i + 1 :]
        ]
    return float(np.mean(values))


def test_the_agreement_term_makes_members_read_random_codes_alike(toy_study):
    base = dict(dim=5, steps=60, gradient_directions=True, gradient_batches=1, members_per_step=2,
                optimizer="adamw", lr=3e-2, progress=False)  # fmt: skip
    records = []
    plain = fit(toy_study.members, toy_study.store, toy_study.sources, FitConfig(**base))
    agreed = fit(
        toy_study.members,
        toy_study.store,
        toy_study.sources,
        FitConfig(**base, agreement_weight=1.0, agreement_scale=0.5, agreement_space="logits"),
        on_step=records.append,
    )
    assert all(len(r["agree"]) == 1 for r in records)
    batch = next(iter(toy_study.target.eval_batches))  # inputs of a task the fit never saw
    assert _disagreement(agreed, toy_study.members, batch, 0.5) < 0.7 * _disagreement(
        plain, toy_study.members, batch, 0.5
    )
    # the source solutions stay reconstructed: the term moves what codes between them mean
    errors = agreed.reconstruction_errors(toy_study.store)
    assert max(e for by_task in errors.values() for e in by_task.values()) < 0.05


def test_the_agreement_term_is_checked_and_off_leaves_old_checkpoints_resumable(toy_study):
    from deltaspace.subspace._fit_checkpoint import fit_identity

    with pytest.raises(ValueError, match="agreement_weight must be >= 0"):
        FitConfig(agreement_weight=-1.0).validate()
    with pytest.raises(ValueError, match="agreement_space must be one of"):
        FitConfig(agreement_space="tokens").validate()

    class Bare:
        name, theta0 = "bare", torch.zeros(3)

        def loss(self, theta, batch): ...

        def predict(self, theta, batch): ...

    with pytest.raises(ValueError, match=r"member\(s\) \['bare'\] have no"):
        fit([Bare()], toy_study.store, toy_study.sources, FitConfig(agreement_weight=1.0, progress=False))
    deltas = {"m": {"t": torch.ones(2)}}
    off = fit_identity(FitConfig().to_dict(), ["t"], deltas)["config"]
    assert not {"agreement_weight", "agreement_scale", "agreement_space"} & set(off)
    on = fit_identity(FitConfig(agreement_weight=0.5).to_dict(), ["t"], deltas)["config"]
    assert on["agreement_weight"] == 0.5 and on["agreement_space"] == "embedding"
