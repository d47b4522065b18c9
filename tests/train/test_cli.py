"""`deltaspace train | eval | sweep` end to end on a user JSONL task and a tiny checkpoint."""

from __future__ import annotations

import json
import random

import pytest
import typer
from typer.testing import CliRunner

import deltaspace.cli.train as cli_train
from deltaspace.cli.app import app


def _write_jsonl(path, n=120):
    rng = random.Random(0)
    good, bad = ["good", "great", "fine", "nice", "superb"], ["bad", "awful", "poor", "dull", "weak"]
    filler = ["the", "a", "movie", "film", "was", "is", "plot", "cast", "very", "quite", "and", "story"]
    texts, rows = set(), []
    while len(rows) < n:
        label = len(rows) % 2
        words = rng.sample(filler, 4)
        words.insert(rng.randrange(5), rng.choice(good if label else bad))
        text = " ".join(words)
        if text not in texts:
            texts.add(text)
            rows.append({"text": text, "label": "positive" if label else "negative"})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_parse_values_and_assignments():
    assert cli_train.parse_value("1e-3") == 1e-3
    assert cli_train.parse_value("true") is True
    assert cli_train.parse_value("[query, value]") == ["query", "value"]
    assert cli_train.parse_value('["q"]') == ["q"]
    assert cli_train.parse_value("lora_only") == "lora_only"
    assert cli_train.parse_assignments(["r=8", "lora.alpha = 16"], "-O") == {"r": 8, "lora.alpha": 16}
    with pytest.raises(typer.BadParameter, match="key=value"):
        cli_train.parse_assignments(["r8"], "--method-option")


def test_train_options_are_the_config_fields():
    """Each TrainConfig field is a `deltaspace train` option whose help is the field's (written once)."""
    import dataclasses

    from typer.main import get_command

    from deltaspace.train.config import TrainConfig

    params = {param.name: param for param in get_command(app).commands["train"].params}
    for field in dataclasses.fields(TrainConfig):
        assert params[field.name].help == field.metadata["help"] != "", field.name
    assert params["method_options"].opts == ["--method-option", "-O"]
    assert params["output_dir"].opts == ["--out", "-o"] and params["lr_overrides"].opts == ["--lr-override"]
    assert params["cpu"].secondary_opts == ["--no-cpu"]


def test_train_eval_sweep_commands(tiny_model_dir, tmp_path):
    data = _write_jsonl(tmp_path / "reviews.jsonl")
    runner = CliRunner()
    run_dir = tmp_path / "run"
    common = ["--model", str(tiny_model_dir), "--cpu", "--batch-size", "8", "--lr", "0.01"]
    args = ["train", "--task", str(data), "--method", "coeff+lora", "-O", "lora.r=2", "--max-steps", "3"]
    args += ["--lr-override", "ds_coeff=0.02"]
    result = runner.invoke(app, [*args, *common, "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    saved = json.loads((run_dir / "result.json").read_text())
    assert saved["task"] == "reviews" and saved["steps"] == 3 and saved["method_options"] == {"lora.r": 2}
    assert json.loads((run_dir / "config.json").read_text())["lr_overrides"] == {"ds_coeff": 0.02}

    result = runner.invoke(app, ["eval", str(run_dir), "--split", "test", "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics == pytest.approx(saved["test"], abs=1e-6)

    # The run's config.json reproduces it; options on the command line override it.
    result = runner.invoke(
        app, ["train", "--config", str(run_dir / "config.json"), "--out", str(tmp_path / "again")]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "again" / "result.json").read_text())["test"] == saved["test"]
    result = runner.invoke(app, ["train", "--config", str(run_dir / "config.json"), "--head", "mlp"])
    assert result.exit_code != 0 and "head must be one of" in result.output

    out = tmp_path / "sweep"
    sweep = ["sweep", "--task", str(data), "--methods", "bitfit,coeff", "--seeds", "0", "--out", str(out)]
    sweep += [
        "--model",
        str(tiny_model_dir),
        "--set",
        "max_steps=2",
        "--set",
        "cpu=true",
        "--set",
        "batch_size=8",
    ]
    result = runner.invoke(app, sweep)
    assert result.exit_code == 0, result.output
    assert (out / "reviews" / "bitfit" / "seed0" / "result.json").is_file()
    assert (out / "reviews" / "coeff" / "seed0" / "result.json").is_file()
    assert "| bitfit |" in (out / "results.md").read_text()
    result = runner.invoke(app, [*sweep, "--shard", "1/2"])
    assert result.exit_code == 0 and "skipped" in result.output
    result = runner.invoke(app, [*sweep, "--shard", "2/2"])
    assert result.exit_code != 0 and "numbered from 0" in result.output
    # Rerunning into the same directory with another setting: one line naming the field, no traceback.
    result = runner.invoke(app, [*sweep, "--set", "lr=0.5"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "error:" in result.output and "but this sweep asks for lr=0.5" in result.output
    assert (out / "reviews" / "bitfit" / "seed0" / "result.json").is_file()  # nothing was deleted


def test_help_does_not_load_torch():
    """The options come from TrainConfig, which must stay importable without torch (a fast --help)."""
    import subprocess
    import sys

    code = "import sys; from deltaspace.cli import main; sys.argv = ['deltaspace', 'train', '--help']\n"
    code += "try:\n    main()\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"
