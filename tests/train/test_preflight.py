"""Checks before work: method strings and options, model paths, sweep configs."""

from __future__ import annotations

import pytest

from deltaspace.deltas.presets import available_methods, resolve_method
from deltaspace.errors import BrokenFileError, MissingAssetError, UserInputError
from deltaspace.train.preflight import check_method, check_model, preset_config_classes
from deltaspace.train.sweep import SweepConfig


def test_preset_classes_match_what_the_presets_build(tiny_bert):
    classes = preset_config_classes()
    assert sorted(classes) == sorted(available_methods())
    for name in available_methods():
        (config,) = resolve_method(name, tiny_bert)
        assert type(config) is classes[name], name


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("coeff+lora", {"lora.r": 4, "coeff_dropout": 0.1}),
        ("lora", {"r": 2, "lora_alpha": 4, "target_modules": ["query", "value"], "lora_dropout": 0.0}),
        ("lora", {"lora__r": 16}),
        ("adapter", {"bottleneck": 4}),
        ("prompt", {"num_virtual_tokens": 5}),
        ("bitfit", {}),
    ],
)
def test_valid_methods_pass(method, options, tiny_bert):
    check_method(method, options)
    resolve_method(method, tiny_bert, **options)  # and the presets agree they are valid


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("", {}, "must be a preset"),
        ("lorra", {}, r"unknown delta method\(s\) \['lorra'\]"),
        ("lora+coeff+lora", {}, "twice"),
        ("lora", {"r": "abc"}, "r must be an integer"),
        ("lora", {"r": 2.5}, "r must be an integer"),
        ("lora", {"r": True}, "r must be an integer"),
        ("lora", {"r": -3}, ">= 1"),
        ("lora", {"target_modules": 3}, "target_modules must be"),
        ("lora", {"lora_dropout": 1.0}, r"\[0, 1\)"),
        ("lora", {"ranks": 4}, "matches no option"),
        ("lora", {"coeff.coeff_dropout": 0.1}, "not in 'lora'"),
        ("coeff+lora", {"lora.rank": 4}, "lora has no option 'rank'"),
        ("adapter", {"bottleneck": "wide"}, "bottleneck must be an integer"),
    ],
)
def test_bad_methods_fail_before_any_model(method, options, message):
    with pytest.raises(UserInputError, match=message):
        check_method(method, options)


def test_models_are_checked_without_loading(tmp_path, monkeypatch):
    monkeypatch.setenv("DELTASPACE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(MissingAssetError, match="deltaspace fetch"):
        check_model("minilm-l6")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="is empty"):
        check_model(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_model(str(tmp_path / "nope"))
    check_model("some-org/some-hub-model")  # not checkable offline: loading reports it


def test_sweep_config_errors(tmp_path, tiny_model_dir):
    path = tmp_path / "sweep.yaml"
    path.write_text("out: x\ntasks: [a\n")
    with pytest.raises(BrokenFileError, match=r"line 3, column 1"):
        SweepConfig.from_file(path)
    path.write_text("out: x\ntasks: rt_sentiment\nmethods: [lora]\n")
    with pytest.raises(UserInputError, match="tasks must be a non-empty list"):
        SweepConfig.from_file(path)
    path.write_text("out: x\ntasks: [rt_sentiment]\nmethods: [lora, 3]\n")
    with pytest.raises(UserInputError, match="methods must be a list of names"):
        SweepConfig.from_file(path)
    sweep = SweepConfig(
        out=str(tmp_path / "out"),
        tasks=[str(tmp_path / "missing.csv")],
        methods=["lora"],
        train={"model": str(tiny_model_dir)},
        method_overrides={"lora": {"method_options": {"r": "x"}}},
    )
    with pytest.raises(UserInputError, match="r must be an integer"):
        sweep.check()
    assert not (tmp_path / "out").exists()
