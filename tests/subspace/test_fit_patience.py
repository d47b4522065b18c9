"""Early stopping in the stage-1 fit: ``patience`` validations without improvement stop it, the best state
is what it returns, and a fit killed before or after its stop resumes to the bundle of an uninterrupted one.

Most tests script the validation score per step (``validate_points`` replaced), so the step where the fit
must stop and the state it must keep are known exactly; one runs the real validation."""

import importlib

import pytest
import torch

from deltaspace.subspace import FitConfig, SubspaceBundle, fit
from deltaspace.subspace._fit_checkpoint import CHECKPOINT_FILE, load_fit_checkpoint

fit_module = importlib.import_module("deltaspace.subspace.fit")  # the package's `fit` is the function

# validated at 0, 2, 4, ...: the best is step 4's; 6, 8 and 10 do not beat it (8 ties), so patience 3
# stops the fit at step 10 of at most 30
SCORES = {0: 0.50, 2: 0.60, 4: 0.70, 6: 0.65, 8: 0.70, 10: 0.69, 12: 0.90}
CONFIG = dict(
    dim=4,
    steps=30,
    eval_every=2,
    patience=3,
    checkpoint_every=3,
    members_per_step=2,
    optimizer="adamw",
    lr=3e-2,
    progress=False,
    seed=5,
)


class Killed(Exception):
    pass


class Script:
    """The on_step that tells the scripted validation the step (call it from every on_step: a resumed fit
    validates only the steps it runs, after their on_step); ``fresh()`` before a fit that starts at 0."""

    def __init__(self):
        self.step = 0

    def __call__(self, record):
        self.step = record["step"]

    def fresh(self):
        self.step = 0
        return self


@pytest.fixture
def scripted(monkeypatch):
    """Replaces the validation by ``SCORES[step]``."""
    script = Script()

    def validate_points(*args, **kwargs):
        return SCORES[script.step], {"relative": False, "metrics": {}, "accuracy": 0.0, "loss": 0.0}

    monkeypatch.setattr(fit_module, "validate_points", validate_points)
    return script


def _same_state(a, b):
    for name in a.members:
        state = a.up(name).state_dict()
        for key, value in state.items():
            assert torch.equal(value, b.up(name).state_dict()[key]), (name, key)
        for task in a.tasks():
            assert torch.equal(a.code(name, task), b.code(name, task)), (name, task)


def test_patience_stops_the_fit_and_keeps_the_best_state(toy_study, scripted):
    members, store, sources = toy_study.members, toy_study.store, toy_study.sources
    records = []

    def on_step(record):
        scripted(record)
        records.append(record["step"])

    bundle = fit(members, store, sources, FitConfig(**CONFIG), on_step=on_step)
    assert records == list(range(1, 11))  # stopped at step 10, not 30
    meta = bundle.metadata
    assert (meta["steps_run"], meta["stopped_early"]) == (10, True)
    assert [v["step"] for v in meta["validation"]] == [0, 2, 4, 6, 8, 10]
    assert (meta["best_step"], meta["best_score"]) == (4, 0.70)  # a tie (step 8) keeps the earlier
    # the returned state is step 4's: the state of a fit that runs 4 steps and keeps its last
    four = FitConfig(**{**CONFIG, "steps": 4, "eval_every": 0, "patience": None})
    four = fit(members, store, sources, four)
    _same_state(bundle, four)
    # without patience the same fit runs to its end (and keeps its best: step 12's scripted 0.9)
    config = FitConfig(**{**CONFIG, "steps": 12, "patience": None})
    whole = fit(members, store, sources, config, on_step=scripted.fresh())
    assert (whole.metadata["steps_run"], whole.metadata["stopped_early"]) == (12, False)
    assert whole.metadata["best_step"] == 12


@pytest.mark.parametrize("kill", ["before_the_stop", "after_the_stop"])
def test_a_killed_fit_resumes_to_the_same_early_stop(toy_study, scripted, tmp_path, monkeypatch, kill):
    members, store, sources = toy_study.members, toy_study.store, toy_study.sources
    config = FitConfig(**CONFIG)
    whole = fit(members, store, sources, config, output_dir=tmp_path / "a", on_step=scripted)

    out = tmp_path / "b"
    scripted.fresh()
    if kill == "before_the_stop":
        # killed during step 8: the last checkpoint is step 6's, one validation without improvement
        def on_step(record):
            scripted(record)
            if record["step"] == 8:
                raise Killed

        with pytest.raises(Killed):
            fit(members, store, sources, config, output_dir=out, on_step=on_step)
        saved = load_fit_checkpoint(out / CHECKPOINT_FILE, _identity(members, store, sources, config))
        assert saved["step"] == 6 and saved["best"]["evals_without_improvement"] == 1
        assert not saved["stopped_early"]
    else:
        # killed after the stop's checkpoint, while the bundle is written: the resumed fit trains no more
        def broken_save(self, directory):
            raise Killed

        with monkeypatch.context() as patch:
            patch.setattr(SubspaceBundle, "save", broken_save)
            with pytest.raises(Killed):
                fit(members, store, sources, config, output_dir=out, on_step=scripted)
        saved = load_fit_checkpoint(out / CHECKPOINT_FILE, _identity(members, store, sources, config))
        assert saved["step"] == 10 and saved["stopped_early"]
    steps = []

    def on_step(record):
        scripted(record)
        steps.append(record["step"])

    resumed = fit(members, store, sources, config, output_dir=out, on_step=on_step)
    assert steps == ([7, 8, 9, 10] if kill == "before_the_stop" else [])
    _same_state(whole, resumed)
    for key in ("validation", "best_step", "best_score", "steps_run", "stopped_early"):
        assert resumed.metadata[key] == whole.metadata[key], key
    assert (out / CHECKPOINT_FILE).is_file()  # kept beside the bundle


def _identity(members, store, sources, config):
    from deltaspace.subspace._fit_checkpoint import fit_identity

    names = [t.name for t in sources]
    deltas = {m.name: {t: store.delta(m.name, t) for t in names} for m in members}
    return fit_identity(config.to_dict(), names, deltas)


def test_validation_loss_selects_the_lowest_and_every_validation_records_accuracy_and_loss(toy_study):
    config = FitConfig(**{**CONFIG, "steps": 6, "metric": "loss", "patience": 2, "lr": 1e-2})
    bundle = fit(toy_study.members, toy_study.store, toy_study.sources, config)
    validation = bundle.metadata["validation"]
    assert all({"accuracy", "loss"} <= set(v) for v in validation)
    assert all(v["score"] == v["loss"] and not v["relative"] for v in validation)
    best = min(validation, key=lambda v: v["score"])
    assert (bundle.metadata["best_step"], bundle.metadata["best_score"]) == (best["step"], best["score"])
    assert 0 < validation[0]["accuracy"] <= 1


def test_patience_needs_validation():
    with pytest.raises(ValueError, match="patience"):
        FitConfig(steps=10, patience=3).validate()
    with pytest.raises(ValueError, match="patience"):
        FitConfig(steps=10, eval_every=2, patience=0).validate()
    FitConfig(steps=10, eval_every=2, patience=1, metric="loss").validate()


def test_keep_last_returns_the_trained_state_and_still_measures_the_curve(toy_study):
    from deltaspace.subspace import FitConfig, fit

    base = dict(dim=3, steps=6, optimizer="adamw", lr=1e-2, progress=False, seed=7)
    last = fit(
        toy_study.members, toy_study.store, toy_study.sources, FitConfig(**base, eval_every=3, keep="last")
    )
    plain = fit(toy_study.members, toy_study.store, toy_study.sources, FitConfig(**base))  # nothing validated
    for name in last.members:
        for key, value in last.up(name).state_dict().items():
            torch.testing.assert_close(value, plain.up(name).state_dict()[key])
        for task in last.tasks():
            torch.testing.assert_close(last.code(name, task), plain.code(name, task))
    assert [v["step"] for v in last.metadata["validation"]] == [0, 3, 6]  # the curve is still measured
    assert (last.metadata["kept"], last.metadata["kept_step"]) == ("last", 6)
    with pytest.raises(ValueError, match="keep must be best or last"):
        FitConfig(keep="first").validate()
