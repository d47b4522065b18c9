"""TrainConfig: JSON round trip and one-line validation errors."""

from __future__ import annotations

import json

import pytest

from deltaspace.train.config import TrainConfig


def test_json_round_trip(tmp_path):
    config = TrainConfig(
        task="rt_sentiment",
        method="coeff+lora",
        method_options={"r": 4, "target_modules": ["query", "value"]},
        seed=3,
        lr=5e-4,
        max_steps=100,
        early_stopping_patience=2,
        schedule="cosine",
    )
    path = tmp_path / "config.json"
    config.to_json(path)
    assert TrainConfig.from_json(path) == config
    assert json.loads(path.read_text())["method_options"] == {"r": 4, "target_modules": ["query", "value"]}
    assert config.replace(seed=4).seed == 4 and config.seed == 3


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"head": "mlp"}, "head must be one of prototype, linear"),
        ({"lr": -1.0}, "lr must be a positive number"),
        ({"lr": float("nan")}, "lr must be a positive number"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"grad_accum": 1.5}, "grad_accum must be an integer >= 1"),
        ({"warmup_ratio": 1.0}, r"warmup_ratio must be in \[0, 1\)"),
        ({"schedule": "step"}, "schedule must be one of linear, cosine, constant"),
        ({"mixed_precision": "fp8"}, "mixed_precision must be one of no, bf16, fp16"),
        ({"metric_for_best": "f1"}, "metric_for_best must be one of accuracy, macro_f1, loss"),
        ({"epochs": 0}, "epochs must be a positive number"),
        ({"max_steps": 0}, "max_steps must be an integer >= 1 or null"),
        ({"early_stopping_patience": 0}, "early_stopping_patience must be an integer >= 1 or null"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"seed": True}, "seed must be an integer >= 0"),
        ({"method_options": ["r=4"]}, "method_options must be a mapping"),
        ({"task": ""}, "task must be"),
        ({"max_grad_norm": 0}, "max_grad_norm must be a positive number or null"),
        ({"lr_overrides": {"ds_coeff": 0}}, "lr_overrides must map parameter-name substrings"),
        ({"lr_overrides": ["ds_coeff"]}, "lr_overrides must map parameter-name substrings"),
        ({"label_words": "bad,good"}, "label_words is for head 'verbalizer'"),
        ({"verbalizer_prompt": "Answer:"}, "verbalizer_prompt is for head 'verbalizer'"),
        (
            {"head": "verbalizer", "model": "smollm2-135m", "label_words": "good"},
            "two or more comma-separated",
        ),
        ({"head": "verbalizer", "model": "smollm2-135m", "label_words": "bad,,good"}, "none empty"),
        ({"head": "verbalizer", "model": "smollm2-135m", "label_words": ["bad", "good"]}, "must be text"),
        (
            {"head": "verbalizer", "model": "smollm2-135m", "verbalizer_prompt": ""},
            "verbalizer_prompt is empty",
        ),
        (
            {"head": "verbalizer"},
            "needs a causal LM and 'minilm-l6' is an encoder; pass --model smollm2-135m",
        ),
    ],
)
def test_validation_errors_are_one_line(changes, message):
    with pytest.raises(ValueError, match=message) as error:
        TrainConfig(**{"task": "rt_sentiment", **changes})
    assert "\n" not in str(error.value)


def test_label_words_are_split_at_the_commas():
    config = TrainConfig(
        task="rt_sentiment", model="smollm2-135m", head="verbalizer", label_words=" bad, good "
    )
    assert config.label_word_list == ["bad", "good"]
    assert TrainConfig(task="rt_sentiment").label_word_list is None


def test_max_steps_makes_epochs_irrelevant():
    with pytest.raises(ValueError, match="epochs must be a positive number"):
        TrainConfig(task="t", epochs=0)
    TrainConfig(task="t", epochs=0, max_steps=10)  # accepted once max_steps bounds the run


def test_from_dict_and_from_json_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown train config field\(s\) \['learning_rate'\]"):
        TrainConfig.from_dict({"task": "t", "learning_rate": 1e-3})
    with pytest.raises(ValueError, match="missing the required field 'task'"):
        TrainConfig.from_dict({"lr": 1e-3})
    with pytest.raises(FileNotFoundError, match="not found"):
        TrainConfig.from_json(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        TrainConfig.from_json(tmp_path / "bad.json")
