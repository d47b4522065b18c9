"""Unset rate and length: the preset's rate, a step budget sized by the data, early stopping."""

from __future__ import annotations

import json

import pytest

from deltaspace.deltas.presets import default_rates
from deltaspace.deltas.registry import Preset, presets
from deltaspace.errors import UserInputError
from deltaspace.train import defaults
from deltaspace.train.config import TrainConfig


def test_every_preset_carries_a_default_rate():
    assert all(preset.lr is not None and preset.lr > 0 for preset in presets().values())


def test_rates_alone_and_in_a_combination():
    assert default_rates("lora") == (presets()["lora"].lr, {})
    coeff = presets()["coeff"]
    # Coeff keeps its own (combination) rate for its parameters; the other part sets the base rate.
    assert default_rates("coeff+lora") == (presets()["lora"].lr, {coeff.lr_key: coeff.combined_lr})
    assert coeff.combined_lr < coeff.lr
    # Parts without an own-rate key share the smallest of their rates.
    assert default_rates("lora+ia3") == (min(presets()["lora"].lr, presets()["ia3"].lr), {})
    with pytest.raises(ValueError, match="unknown delta method"):
        default_rates("lora+nope")


def test_a_preset_rate_must_be_positive():
    with pytest.raises(ValueError, match="lr must be a positive float"):
        Preset("x", "bad", lr=0.0)


def test_resolve_rates_fills_only_what_is_unset():
    config = defaults.resolve_rates(TrainConfig(task="t", method="coeff+lora"))
    assert (config.lr, config.lr_overrides) == default_rates("coeff+lora")
    given = defaults.resolve_rates(TrainConfig(task="t", method="coeff+lora", lr=1e-3))
    assert (given.lr, given.lr_overrides) == (1e-3, {})  # one rate for everything: what was asked
    head = defaults.resolve_rates(TrainConfig(task="t", method="head"))
    assert head.lr == defaults.HEAD_ONLY_LR
    with pytest.raises(UserInputError, match="unknown delta method"):
        defaults.resolve_rates(TrainConfig(task="t", method="nope"))


@pytest.mark.parametrize(
    ("examples", "steps"),
    [(100, defaults.MIN_STEPS), (700, defaults.MIN_STEPS), (5000, 3 * 157), (10**6, defaults.MAX_STEPS)],
)
def test_the_step_budget_follows_the_data_within_bounds(examples, steps):
    config = TrainConfig(task="t", batch_size=32)
    resolved = defaults.resolve_length(config, examples)
    assert resolved.max_steps == steps
    assert resolved.eval_every == -(-steps // defaults.EVALUATIONS)
    assert resolved.early_stopping_patience == defaults.PATIENCE


def test_a_given_length_is_kept_without_early_stopping():
    for given in ({"epochs": 2.0}, {"max_steps": 7}):
        config = TrainConfig(task="t", **given)
        assert defaults.resolve_length(config, 5000) == config
    patient = defaults.resolve_length(TrainConfig(task="t", early_stopping_patience=9, eval_every=5), 100)
    assert (patient.early_stopping_patience, patient.eval_every) == (9, 5)


def test_a_default_run_resolves_and_records_its_settings(tmp_path, tiny_model_dir, make_tiny_task):
    from deltaspace.train.loop import train

    task = make_tiny_task(n_train=40, n_val=16, n_test=16)
    config = TrainConfig(
        task="tiny", model=str(tiny_model_dir), method="lora", batch_size=8, cpu=True,
        output_dir=str(tmp_path / "run"), save_delta=False, baselines=False,
    )  # fmt: skip
    result = train(config, task=task)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["lr"] == presets()["lora"].lr
    assert (saved["max_steps"], saved["eval_every"], saved["early_stopping_patience"]) == (
        defaults.MIN_STEPS,
        defaults.MIN_STEPS // defaults.EVALUATIONS,
        defaults.PATIENCE,
    )
    # The budget bounds the run (early stopping itself: tests/train/test_loop.py).
    assert result.steps <= defaults.MIN_STEPS and result.best_step <= result.steps
    assert result.baselines == {}
    # A sweep that asks for the defaults again sees the finished run as its own (no settings mismatch).
    from deltaspace.train.sweep import RunSpec, check_same_settings

    check_same_settings(RunSpec("tiny", "lora", 0, config))
    with pytest.raises(Exception, match="lr"):
        check_same_settings(RunSpec("tiny", "lora", 0, config.replace(lr=0.5)))
