"""The tuned sweep: the grid phase, the rate chosen per task on validation, the seeds phase at that rate
(reusing the seed-0 grid run), combinations getting both parts' rates, baselines, resume and shards."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from deltaspace.train.result import RunResult, load_predictions
from deltaspace.train.tuned import IncompleteGridError, TunedSweepConfig, run_tuned


def _tuned(out: Path, model_dir: Path, **changes) -> TunedSweepConfig:
    fields = dict(
        out=str(out),
        tasks=["tiny"],
        methods=["bitfit", "coeff"],
        combos=["coeff+bitfit"],
        seeds=[0, 1],
        lr_grid=[0.1, 1.0],
        train=dict(model=str(model_dir), max_steps=2, batch_size=16, cpu=True, save_delta=False),
        method_overrides={"bitfit": {"lr": 1e-2}, "coeff": {"lr": 5e-2}},
        probe={"C": [0.1, 10.0]},
    )
    return TunedSweepConfig(**{**fields, **changes})


def _fake_result(run_dir: Path, val_accuracy: float, val_loss: float = 0.5) -> None:
    """A finished run as the grid phase leaves it (result.json only)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    result = RunResult(
        task="tiny", method="m", seed=0, model="x", head="prototype", trainable_params=1, total_params=2,
        best_step=1, steps=1, epochs=1.0, stopped_early=False,
        validation={"accuracy": val_accuracy, "loss": val_loss}, test={"accuracy": 0.5},
        train_time_s=0.0, total_time_s=0.0, peak_rss_mb=0.0,
    )  # fmt: skip
    result.save(run_dir)


def test_grid_rates_span_the_multiples_and_runs_are_laid_out(tmp_path):
    config = _tuned(tmp_path, "m", tasks=["a", "b"], lr_grid=[0.316, 1.0, 3.16])
    assert config.grid_rates("bitfit") == [0.00316, 0.01, 0.0316]
    grid = config.phase_runs("grid")
    # 2 tasks x 2 methods x 3 rates + a probe per task, all at the grid's seed.
    assert len(grid) == 2 * 2 * 3 + 2
    assert {spec.seed for spec in grid if spec.kind == "train"} == {0}
    lrs = {spec.key: spec.config.lr for spec in grid if spec.kind == "train"}
    assert lrs["grid/a/bitfit/lr0.0316"] == 0.0316
    assert Path(grid[0].config.output_dir).relative_to(tmp_path).parts[0] in ("grid", "probe")
    seeds = config.phase_runs("seeds")
    # Methods alone: the other seed only (seed 0 is the grid run); the combination: every seed.
    assert sorted(spec.key for spec in seeds if spec.task == "a") == [
        "seeds/a/bitfit/seed1",
        "seeds/a/coeff+bitfit/seed0",
        "seeds/a/coeff+bitfit/seed1",
        "seeds/a/coeff/seed1",
    ]


def test_the_best_validation_rate_is_chosen_per_task_and_the_seeds_phase_uses_it(tmp_path):
    config = _tuned(tmp_path, "m", tasks=["a", "b"])
    # Task a: bitfit best at the low rate, coeff at the preset; task b the other way round.
    scores = {
        ("a", "bitfit"): {1e-3: 0.8, 1e-2: 0.7},
        ("a", "coeff"): {5e-3: 0.6, 5e-2: 0.9},
        ("b", "bitfit"): {1e-3: 0.5, 1e-2: 0.75},
        ("b", "coeff"): {5e-3: 0.9, 5e-2: 0.9},  # a tie: the lower validation loss wins
    }
    for (task, method), by_rate in scores.items():
        for lr, accuracy in by_rate.items():
            loss = 0.2 if (task, method, lr) == ("b", "coeff", 5e-3) else 0.4
            _fake_result(config.grid_dir(task, method, lr), accuracy, loss)
    chosen = config.choose_rates()
    assert {key: s.lr for key, s in chosen.items()} == {
        ("a", "bitfit"): 1e-3,
        ("a", "coeff"): 5e-2,
        ("b", "bitfit"): 1e-2,
        ("b", "coeff"): 5e-3,
    }
    assert chosen[("a", "bitfit")].at_edge and chosen[("a", "bitfit")].scores == {1e-3: 0.8, 1e-2: 0.7}
    runs = {spec.key: spec.config for spec in config.phase_runs("seeds", chosen)}
    assert runs["seeds/a/bitfit/seed1"].lr == 1e-3 and runs["seeds/b/coeff/seed1"].lr == 5e-3
    # The combination: the second part's chosen rate, and Coeff's own chosen rate for its ΔC.
    assert runs["seeds/a/coeff+bitfit/seed0"].lr == 1e-3
    assert runs["seeds/a/coeff+bitfit/seed0"].lr_overrides == {"ds_coeff": 5e-2}
    assert runs["seeds/b/coeff+bitfit/seed1"].lr == 1e-2
    assert runs["seeds/b/coeff+bitfit/seed1"].lr_overrides == {"ds_coeff": 5e-3}
    # Seed 0 of a method alone is its grid run at the chosen rate.
    final = {(t, m, s): d for t, m, s, d in config.final_runs(chosen)}
    assert final[("a", "bitfit", 0)] == config.grid_dir("a", "bitfit", 1e-3)
    assert final[("a", "bitfit", 1)] == config.seed_dir("a", "bitfit", 1, {"bitfit": 1e-3})
    assert final[("a", "bitfit", 1)].parent.name == "lr0.001"
    assert final[("b", "coeff+bitfit", 1)].parent.name == "lr0.01-coeff0.005"
    assert final[("a", "probe", 0)] == config.probe_dir("a")


def test_the_seeds_phase_before_the_grid_has_finished_is_one_line(tmp_path):
    config = _tuned(tmp_path, "m")
    _fake_result(config.grid_dir("tiny", "bitfit", 1e-3), 0.8)
    with pytest.raises(
        IncompleteGridError, match=r"^the seeds phase needs the finished grid, but 3 grid run"
    ):
        run_tuned(config, "seeds", show=False)
    with pytest.raises(IncompleteGridError) as raised:
        config.choose_rates()
    assert "\n" not in str(raised.value)
    assert config.choose_rates(strict=False) == {}  # reports skip what is missing


def test_config_errors_are_one_line(tmp_path):
    bad = [
        (dict(combos=["coeff+lora"]), r"must be A\+B \(no spaces\) with A and B both in methods"),
        (dict(combos=["bitfit+coeff"]), "lr_keys names no parameter substring for 'bitfit'"),
        (dict(combos=["coeff + bitfit"]), r"must be A\+B \(no spaces\)"),
        (dict(lr_grid=[1.0, -2.0]), "lr_grid holds multiples"),
        (dict(select="f1"), "select must be one of"),
        (dict(method_overrides={"coeff+bitfit": {"lr": 1e-3}}), "may not set lr"),
        (dict(methods=["bitfit", "probe"], combos=[]), "baseline the tuned sweep adds itself"),
        (dict(train=dict(model="m", lr_overrides={"x": 1.0})), "may not set"),
    ]
    for changes, message in bad:
        with pytest.raises(ValueError, match=message):
            _tuned(tmp_path, "m", **changes)
    path = tmp_path / "tuned.yaml"
    path.write_text("out: x\ntasks: [a]\nmethods: [bitfit]\nlr_grids: [1]\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['lr_grids'\]"):
        TunedSweepConfig.from_file(path)
    # Narrowing the methods drops the combinations and overrides that no longer apply.
    path.write_text(
        "out: x\ntasks: [a]\nmethods: [bitfit, coeff, lora]\ncombos: [coeff+bitfit, coeff+lora]\n"
        "method_overrides: {lora: {lr: 1.0e-3}}\ntrain: {model: m}\n"
    )
    narrowed = TunedSweepConfig.from_file(path, methods=["bitfit", "coeff"])
    assert narrowed.combos == ["coeff+bitfit"] and narrowed.method_overrides == {}


def test_two_phases_end_to_end_with_shards_and_resume(tmp_path, tiny_model_dir, tiny_task):
    out = tmp_path / "tuned"
    config = _tuned(out, tiny_model_dir)
    load = lambda spec, seed: tiny_task  # noqa: E731
    # Grid phase on two shards: every grid run and the probe exactly once between them.
    done = [run_tuned(config, "grid", shard=(i, 2), task_loader=load, show=False) for i in range(2)]
    keys = [{o.spec.key for o in outcomes if o.status == "done"} for outcomes in done]
    assert keys[0].isdisjoint(keys[1])
    assert keys[0] | keys[1] == {spec.key for spec in config.phase_runs("grid")}
    assert all(o.status == "done" for outcomes in done for o in outcomes)
    probe_dir = config.probe_dir("tiny")
    probe = json.loads((probe_dir / "result.json").read_text())
    assert probe["method"] == "probe" and probe["method_options"]["C"] in (0.1, 10.0)
    assert len(load_predictions(probe_dir)[0]) == len(tiny_task.test)

    # Seeds phase on two shards, after the grid: reuses seed 0, runs the rest at the chosen rates.
    chosen = config.choose_rates()
    seeds = [run_tuned(config, "seeds", shard=(i, 2), task_loader=load, show=False) for i in range(2)]
    ran = {o.spec.key: o.spec.config for outcomes in seeds for o in outcomes}
    assert set(ran) == {
        "seeds/tiny/bitfit/seed1",
        "seeds/tiny/coeff/seed1",
        "seeds/tiny/coeff+bitfit/seed0",
        "seeds/tiny/coeff+bitfit/seed1",
    }
    assert ran["seeds/tiny/bitfit/seed1"].lr == chosen[("tiny", "bitfit")].lr
    combo = ran["seeds/tiny/coeff+bitfit/seed1"]
    assert (combo.lr, combo.lr_overrides) == (
        chosen[("tiny", "bitfit")].lr,
        {"ds_coeff": chosen[("tiny", "coeff")].lr},
    )
    combo_rates = {m: chosen[("tiny", m)].lr for m in ("coeff", "bitfit")}
    saved = json.loads((config.seed_dir("tiny", "coeff+bitfit", 1, combo_rates) / "config.json").read_text())
    assert saved["lr_overrides"] == {"ds_coeff": chosen[("tiny", "coeff")].lr}
    selection = json.loads((out / "selection.json").read_text())
    assert {(c["method"], c["lr"]) for c in selection["chosen"]} == {
        (m, s.lr) for (_, m), s in chosen.items()
    }
    # Every final run stores its per-example test predictions, on the same examples; no weights were kept.
    for _, method, seed, run_dir in config.final_runs(chosen):
        predictions, labels = load_predictions(run_dir)
        assert labels == list(tiny_task.test["label"]), (method, seed)
        assert len(predictions) == len(labels)
        assert not (run_dir / "delta").exists()

    # Rerunning everything skips every finished run and changes nothing.
    stamps = {p: os.stat(p).st_mtime_ns for p in out.rglob("result.json")}
    again = run_tuned(config, "all", task_loader=load, show=False)
    assert {o.status for o in again} == {"skipped"} and len(again) == len(stamps)
    assert {p: os.stat(p).st_mtime_ns for p in out.rglob("result.json")} == stamps
    # A killed seeds-phase run is redone, with the same result.
    killed = config.seed_dir("tiny", "coeff+bitfit", 0, combo_rates)
    before = json.loads((killed / "result.json").read_text())["test"]
    (killed / "result.json").unlink()
    redone = run_tuned(config, "seeds", task_loader=load, show=False)
    assert [o.status for o in redone if o.status != "skipped"] == ["done"]
    assert json.loads((killed / "result.json").read_text())["test"] == before


def test_head_only_trains_the_prototypes_alone(tmp_path, tiny_model_dir, tiny_task):
    from deltaspace.train.config import TrainConfig
    from deltaspace.train.evaluate import evaluate_run
    from deltaspace.train.loop import train
    from deltaspace.train.preflight import check_method

    config = TrainConfig(
        task="tiny", model=str(tiny_model_dir), method="head", max_steps=3, batch_size=16, lr=1e-2,
        cpu=True, output_dir=str(tmp_path / "head"),
    )  # fmt: skip
    result = train(config, task=tiny_task)
    assert result.trainable_params == 2 * 32  # two label prototypes of the 32-wide encoder, nothing else
    # The saved head restores the run's scores exactly.
    assert evaluate_run(tmp_path / "head", task=tiny_task)["accuracy"] == result.test["accuracy"]
    with pytest.raises(ValueError, match="does not combine"):
        check_method("head+lora")
    with pytest.raises(ValueError, match="takes no options"):
        check_method("head", {"r": 4})


def test_cli_runs_both_phases_and_writes_the_report(tmp_path, tiny_model_dir, write_reviews_file):
    from typer.testing import CliRunner

    import deltaspace.cli.tune  # noqa: F401  (registers `tune` and `report`)
    from deltaspace.cli.app import app

    data = write_reviews_file(tmp_path / "reviews.jsonl")
    config = tmp_path / "tuned.yaml"
    config.write_text(
        f"out: {tmp_path / 'runs'}\ntasks: ['{data}']\nmethods: [bitfit, coeff]\ncombos: [coeff+bitfit]\n"
        f"seeds: [0, 1]\nlr_grid: [0.5, 1.0]\nprobe: {{C: [1.0]}}\n"
        f"train: {{model: '{tiny_model_dir}', max_steps: 2, batch_size: 8, cpu: true, save_delta: false}}\n"
        "method_overrides: {bitfit: {lr: 1.0e-2}, coeff: {lr: 1.0e-2}}\n"
    )
    runner = CliRunner()
    plan = runner.invoke(app, ["tune", "--config", str(config), "--plan"])
    assert plan.exit_code == 0 and "grid phase 5 runs (incl. 1 probes), seeds phase 4 runs" in plan.output
    early = runner.invoke(app, ["tune", "--config", str(config), "--phase", "seeds"])
    assert (
        early.exit_code == 1
        and "error: the seeds phase needs the finished grid, but 4 grid run" in early.output
    )
    done = runner.invoke(app, ["tune", "--config", str(config)])
    assert done.exit_code == 0, done.output
    output = tmp_path / "results.md"
    report = runner.invoke(app, ["report", "results", "--config", str(config), "--output", str(output)])
    assert report.exit_code == 0, report.output
    text = output.read_text()
    assert (
        "from 7 of the 7 runs" in text and "| coeff+bitfit |" in text and "## Chosen learning rates" in text
    )
