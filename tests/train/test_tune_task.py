"""`deltaspace tune --task`: the rate grid around the preset, the choice on validation, seeds, the table."""

from __future__ import annotations

import json
import os

import pytest

from deltaspace.deltas.registry import presets
from deltaspace.errors import UserInputError
from deltaspace.train import tune_task
from deltaspace.train.result import RunResult


def _result(accuracy: float, loss: float) -> RunResult:
    return RunResult(
        task="t", method="m", seed=0, model="x", head="prototype", trainable_params=1, total_params=1,
        best_step=1, steps=1, epochs=1.0, stopped_early=False, validation={"accuracy": accuracy, "loss": loss},
        test={}, train_time_s=0.0, total_time_s=0.0, peak_rss_mb=0.0,
    )  # fmt: skip


def test_the_grid_moves_every_rate_of_a_method_together(tmp_path):
    specs, configs = tune_task.plan("t", ["coeff+lora"], out=tmp_path, grid=[1.0, 3.16])
    lora, coeff = presets()["lora"], presets()["coeff"]
    low, high = configs["coeff+lora"]["prototype", 1.0], configs["coeff+lora"]["prototype", 3.16]
    assert (low.lr, low.lr_overrides) == (lora.lr, {coeff.lr_key: coeff.combined_lr})
    assert high.lr == pytest.approx(3.16 * lora.lr, rel=1e-2)
    assert high.lr_overrides[coeff.lr_key] == pytest.approx(3.16 * coeff.combined_lr, rel=1e-2)
    assert [spec.run_dir for spec in specs] == [
        tmp_path / "grid" / "coeff+lora" / head / multiple / "seed0"
        for head in ("prototype", "linear")
        for multiple in ("x1", "x3.16")
    ]
    assert {config.head for config in configs["coeff+lora"].values()} == {"prototype", "linear"}
    # Around a rate the user gave, not the preset's; the head the user set is the only one tried.
    _, given = tune_task.plan("t", ["lora"], out=tmp_path, grid=[0.5], train={"lr": 0.01, "head": "linear"})
    assert list(given["lora"]) == [("linear", 0.5)] and given["lora"]["linear", 0.5].lr == 0.005
    _, one = tune_task.plan("t", ["lora"], out=tmp_path, grid=[1.0], heads=["prototype"])
    assert list(one["lora"]) == [("prototype", 1.0)]


def test_choice_is_the_best_validation_then_lower_loss_then_nearer_the_preset_then_the_first_head():
    def choose(scores, heads=None):
        return tune_task.choose("m", {point: _result(*score) for point, score in scores.items()}, heads)

    p, lin = "prototype", "linear"
    assert choose({(p, 0.316): (0.7, 0.5), (p, 1.0): (0.8, 0.6), (p, 3.16): (0.6, 0.1)}) == (p, 1.0)
    assert choose({(p, 0.316): (0.8, 0.4), (p, 1.0): (0.8, 0.6)}) == (p, 0.316)
    assert choose({(p, 0.316): (0.8, 0.4), (p, 3.16): (0.8, 0.4), (p, 1.0): (0.8, 0.4)}) == (p, 1.0)
    # A head wins on validation, whichever comes first; a full tie goes to the first head.
    assert choose({(p, 1.0): (0.45, 1.0), (lin, 1.0): (0.47, 1.1)}, [p, lin]) == (lin, 1.0)
    assert choose({(p, 1.0): (0.47, 1.0), (lin, 1.0): (0.47, 1.0)}, [p, lin]) == (p, 1.0)
    assert choose({(p, 1.0): (0.47, 1.0), (lin, 1.0): (0.47, 1.0)}, [lin, p]) == (lin, 1.0)
    with pytest.raises(UserInputError, match="no grid run"):
        tune_task.choose("m", {})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"methods": []}, "one or more distinct methods"),
        ({"grid": [0.0]}, "positive multiples"),
        ({"seeds": [1, 1]}, "distinct integers"),
        ({"train": {"seed": 3}}, "tune sets"),
        ({"heads": ["prototype", "softmax"]}, "distinct heads among"),
        ({"heads": []}, "distinct heads among"),
        ({"heads": ["linear"], "train": {"head": "linear"}}, "give the head once"),
    ],
)
def test_bad_plans_are_one_line(tmp_path, kwargs, message):
    arguments = {"methods": ["lora"], **kwargs}
    with pytest.raises(UserInputError, match=message):
        tune_task.plan("t", arguments.pop("methods"), out=tmp_path, **arguments)


def test_tune_end_to_end_resumes_and_reports(tmp_path, tiny_model_dir, make_tiny_task, monkeypatch):
    task = make_tiny_task()
    monkeypatch.setattr("deltaspace.tasks.load_task", lambda spec, seed=0: task)
    train = {"model": str(tiny_model_dir), "max_steps": 3, "batch_size": 8, "cpu": True, "save_delta": False}
    out = tmp_path / "tune"
    result = tune_task.tune("tiny", ["bitfit", "coeff+bitfit"], out=out, grid=[0.5, 2.0], seeds=[0, 1],
                            train=train, show=False)  # fmt: skip
    assert [m.method for m in result.methods] == ["bitfit", "coeff+bitfit"] and not result.failed
    for tuning in result.methods:
        assert set(tuning.grid) == {(h, m) for h in ("prototype", "linear") for m in (0.5, 2.0)}
        assert tuning.grid[tuning.head, tuning.multiple] == max(tuning.grid.values())
        assert [r.seed for r in tuning.results] == [0, 1]
        assert {r.head for r in tuning.results} == {tuning.head}
        assert {tuple(r.run_dir.split("/")[-3:-1]) for r in tuning.results} == {
            (tuning.head, f"x{tuning.multiple:g}")
        }
    assert set(result.baselines) == {"majority", "probe"}
    saved = json.loads((out / "tune.json").read_text())
    assert saved["methods"][0]["test_accuracy"] == result.methods[0].test()
    assert set(saved["methods"][0]["validation_by_head"]) == {"prototype", "linear"}
    table = (out / "results.md").read_text()
    assert "| bitfit |" in table and "| majority (" in table and "| frozen probe (C=" in table

    # The same call again trains nothing and gives the same table.
    stamps = {p: os.stat(p).st_mtime_ns for p in out.rglob("result.json")}
    again = tune_task.tune("tiny", ["bitfit", "coeff+bitfit"], out=out, grid=[0.5, 2.0], seeds=[0, 1],
                           train=train, show=False)  # fmt: skip
    assert {p: os.stat(p).st_mtime_ns for p in out.rglob("result.json")} == stamps
    assert again.rows() == result.rows()


def test_cli_one_task_errors_are_one_line(tmp_path):
    from typer.testing import CliRunner

    import deltaspace.cli.tune  # noqa: F401  (registers `tune`)
    from deltaspace.cli.app import app

    runner = CliRunner()
    for arguments, message in [
        ([], "give --task and --method"),
        (["--task", "a,b", "--method", "lora"], "takes one task"),
        (["--task", "a", "--method", "lora", "--phase", "grid"], "--phase belong to tuned sweeps"),
        (["--task", "a", "--method", "lora", "--grid", "x"], "--grid takes numbers"),
        (["--task", "a", "--method", "lora", "--head", "softmax"], "distinct heads among"),
        (
            ["--task", "a", "--method", "lora", "--head", "linear", "--set", "head=linear"],
            "give the head once",
        ),
        (["--config", "configs/sweep_tuned.yaml", "--head", "linear"], "--head belongs to tune --task"),
    ]:
        result = runner.invoke(app, ["tune", *arguments])
        assert result.exit_code != 0 and message in result.output, (arguments, result.output)


def test_the_table_shows_the_zero_shot_score_of_a_verbalizer_run():
    baselines = {
        "majority": {"label": "neg", "test": {"accuracy": 0.5, "macro_f1": 0.33}},
        "probe": {"C": 1.0, "test": {"accuracy": 0.7, "macro_f1": 0.7}},
        "zero_shot": {"test": {"accuracy": 0.62, "macro_f1": 0.6}},
    }
    result = tune_task.TuneResult("t", "out", [], baselines, [], 1.0)
    rows = {row["method"]: row for row in result.rows()}
    assert rows["zero-shot (frozen LM)"]["test accuracy"] == "62.0"
    assert rows["zero-shot (frozen LM)"]["vs probe"] == "-8.0"
    del baselines["zero_shot"]
    assert "zero-shot (frozen LM)" not in {row["method"] for row in result.rows()}
