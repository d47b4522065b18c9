"""Sweeps: grid expansion, shard assignment, resume after a kill, failures, result collection."""

from __future__ import annotations

import json
import os
import random

import pandas as pd
import pytest

from deltaspace.report.results_table import results_table
from deltaspace.train.result import collect_results
from deltaspace.train.sweep import (
    SweepConfig,
    parse_shard,
    run_sweep,
    shard_runs,
    slug,
)


def _sweep(out, model_dir, **changes) -> SweepConfig:
    fields = dict(
        out=str(out),
        tasks=["tiny"],
        methods=["bitfit", "lora"],
        seeds=[0],
        train=dict(model=str(model_dir), max_steps=2, batch_size=16, lr=1e-2, cpu=True),
    )
    return SweepConfig(**{**fields, **changes})


@pytest.mark.parametrize("count", [1, 2, 3, 5, 7])
def test_shards_partition_the_runs(tmp_path, count):
    tasks, methods, seeds = ["rt_sentiment", "data/my task.csv", "bbc"], ["coeff+lora", "lora"], [0, 1, 2]
    sweep = SweepConfig(out=str(tmp_path), tasks=tasks, methods=methods, seeds=seeds, train={"model": "m"})
    runs = sweep.runs()
    keys = [run.key for run in runs]
    assert len(set(keys)) == len(keys) == 18
    shards = [[run.key for run in shard_runs(runs, index, count)] for index in range(count)]
    assert sorted(key for shard in shards for key in shard) == sorted(keys)  # covered exactly once
    assert max(map(len, shards)) - min(map(len, shards)) <= 1  # balanced
    # The assignment depends on the set of runs only, not on the order of the lists.
    rng = random.Random(count)
    shuffled = SweepConfig(
        out=str(tmp_path),
        tasks=rng.sample(tasks, len(tasks)),
        methods=rng.sample(methods, len(methods)),
        seeds=rng.sample(seeds, len(seeds)),
        train={"model": "m"},
    )
    again = [[run.key for run in shard_runs(shuffled.runs(), index, count)] for index in range(count)]
    assert again == shards


def test_grid_configs_and_overrides(tmp_path):
    sweep = SweepConfig(
        out=str(tmp_path),
        tasks=["a", "b"],
        methods=["lora", "coeff"],
        seeds=[0, 1],
        train={"model": "m", "lr": 1e-3, "method_options": {"r": 4}},
        method_overrides={"lora": {"lr": 5e-4, "method_options": {"lora_alpha": 8}}},
        task_overrides={"b": {"lr": 1e-2, "max_train_examples": 100}},
    )
    configs = {run.key: run.config for run in sweep.runs()}
    assert configs["a/lora/seed1"].lr == 5e-4
    assert configs["a/lora/seed1"].method_options == {"r": 4, "lora_alpha": 8}
    assert configs["a/coeff/seed0"].lr == 1e-3 and configs["a/coeff/seed0"].method_options == {"r": 4}
    assert configs["b/lora/seed0"].lr == 1e-2 and configs["b/lora/seed0"].max_train_examples == 100
    assert configs["b/coeff/seed1"].output_dir == str(tmp_path / "b" / "coeff" / "seed1")
    assert configs["b/coeff/seed1"].seed == 1


def test_sweep_config_file_and_errors(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("out: x\ntasks: [a]\nmethods: [lora]\nseeds: [0, 1]\ntrain: {model: m, epochs: 2}\n")
    sweep = SweepConfig.from_file(path, out=str(tmp_path / "y"), train={"lr": 0.1})
    assert sweep.out == str(tmp_path / "y") and sweep.train == {"model": "m", "epochs": 2, "lr": 0.1}
    assert [run.key for run in sweep.runs()] == ["a/lora/seed0", "a/lora/seed1"]

    # Narrowing the methods from the command line keeps only the overrides of the methods still run.
    path.write_text(
        "out: x\ntasks: [a]\nmethods: [lora, coeff]\nmethod_overrides: {lora: {lr: 0.5}, coeff: {lr: 2}}\n"
    )
    narrowed = SweepConfig.from_file(path, methods=["lora"])
    assert narrowed.method_overrides == {"lora": {"lr": 0.5}}
    assert [run.config.lr for run in narrowed.runs()] == [0.5]

    path.write_text("out: x\ntasks: [a]\nmethods: [lora]\nlearning_rate: 1\n")
    with pytest.raises(ValueError, match="unknown key"):
        SweepConfig.from_file(path)
    with pytest.raises(ValueError, match="may not set"):
        SweepConfig(out="x", tasks=["a"], methods=["m"], train={"seed": 3})
    with pytest.raises(ValueError, match="lr must be a positive number"):
        SweepConfig(out="x", tasks=["a"], methods=["m"], train={"lr": -1})
    with pytest.raises(ValueError, match="does not run"):
        SweepConfig(out="x", tasks=["a"], methods=["m"], method_overrides={"lora": {"lr": 1.0}})
    with pytest.raises(ValueError, match="twice"):
        SweepConfig(out="x", tasks=["a", "a"], methods=["m"])
    for bad in ("2/2", "1", "a/b", "-1/3", "0/0"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    assert parse_shard(" 1 / 4 ") == (1, 4)
    assert slug("data/my task.csv") == "my_task" and slug("coeff+lora") == "coeff+lora"


def test_resume_skips_finished_and_restarts_killed_runs(tmp_path, tiny_model_dir, tiny_task):
    out = tmp_path / "sweep"
    sweep = _sweep(out, tiny_model_dir)
    loads = []

    def load(spec, seed):
        loads.append(spec)
        return tiny_task

    first = run_sweep(sweep, task_loader=load, show=False)
    assert [(o.spec.key, o.status) for o in first] == [
        ("tiny/bitfit/seed0", "done"),
        ("tiny/lora/seed0", "done"),
    ]
    assert loads == ["tiny"]  # loaded once per sweep
    bitfit, lora = out / "tiny" / "bitfit" / "seed0", out / "tiny" / "lora" / "seed0"
    stamps = {run: os.stat(run / "result.json").st_mtime_ns for run in (bitfit, lora)}

    second = run_sweep(sweep, task_loader=load, show=False)
    assert [o.status for o in second] == ["skipped", "skipped"]
    assert second[0].result.test == first[0].result.test
    assert {run: os.stat(run / "result.json").st_mtime_ns for run in (bitfit, lora)} == stamps

    # Simulate a kill in the middle of the lora run: no result.json, a half-written temp file, a cut-off log.
    (lora / "result.json").unlink()
    (lora / ".result.json.abc123.tmp").write_text('{"task": "ti')
    with open(lora / "metrics.jsonl", "a") as handle:
        handle.write('{"loss": 0.6, "st')
    third = run_sweep(sweep, task_loader=load, show=False)
    assert [o.status for o in third] == ["skipped", "done"]
    assert not (lora / ".result.json.abc123.tmp").exists()
    lines = (lora / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # restarted from scratch: no cut-off line left
    assert os.stat(bitfit / "result.json").st_mtime_ns == stamps[bitfit]
    # Deterministic: the restarted run reproduces the killed one's result.
    assert third[1].result.test == first[1].result.test

    frame = collect_results(out)
    assert list(frame["method"]) == ["bitfit", "lora"] and set(frame["task"]) == {"tiny"}
    assert {"val_accuracy", "test_accuracy", "test_macro_f1", "trainable_params", "train_time_s"} <= set(
        frame.columns
    )
    table = results_table(frame)
    assert "| bitfit |" in table and "| lora |" in table


def test_finished_runs_are_reused_only_with_the_same_settings(tmp_path, tiny_model_dir, tiny_task):
    out = tmp_path / "sweep"
    load = lambda spec, seed: tiny_task  # noqa: E731
    run_sweep(_sweep(out, tiny_model_dir, methods=["bitfit"]), task_loader=load, show=False)
    # Bookkeeping (logging cadence) does not change what a run learns: the run is reused.
    relogged = _sweep(out, tiny_model_dir, methods=["bitfit"])
    relogged.train["log_every"] = 1
    assert [o.status for o in run_sweep(relogged, task_loader=load, show=False)] == ["skipped"]
    # A different learning rate would silently report the old run: refused, naming the field.
    changed = _sweep(out, tiny_model_dir, methods=["bitfit"])
    changed.train["lr"] = 5e-3
    with pytest.raises(ValueError, match=r"trained with lr=0\.01 but this sweep asks for lr=0\.005"):
        run_sweep(changed, task_loader=load, show=False)


def test_sharded_sweep_runs_its_share(tmp_path, tiny_model_dir, tiny_task):
    out = tmp_path / "sweep"
    sweep = _sweep(out, tiny_model_dir, methods=["bitfit", "lora", "coeff"])
    done_by_shard = []
    for index in range(2):
        outcomes = run_sweep(sweep, shard=(index, 2), task_loader=lambda spec, seed: tiny_task, show=False)
        done_by_shard.append({o.spec.key for o in outcomes if o.status == "done"})
    assert done_by_shard[0].isdisjoint(done_by_shard[1])
    assert done_by_shard[0] | done_by_shard[1] == {run.key for run in sweep.runs()}
    assert len(collect_results(out)) == 3


def test_failed_run_is_reported_and_the_sweep_goes_on(tmp_path, tiny_model_dir, tiny_task):
    out = tmp_path / "sweep"
    sweep = _sweep(out, tiny_model_dir, methods=["no-such-method", "bitfit"])
    outcomes = run_sweep(sweep, task_loader=lambda spec, seed: tiny_task, show=False)
    status = {o.spec.method: o.status for o in outcomes}
    assert status == {"no-such-method": "failed", "bitfit": "done"}
    failed = next(o for o in outcomes if o.status == "failed")
    assert "unknown delta method" in failed.error
    assert "unknown delta method" in (out / "tiny" / "no-such-method" / "seed0" / "error.txt").read_text()
    assert not (out / "tiny" / "no-such-method" / "seed0" / "result.json").exists()
    with pytest.raises(ValueError, match="unknown delta method"):
        run_sweep(sweep, task_loader=lambda spec, seed: tiny_task, show=False, fail_fast=True)


def test_results_table_mean_std_average_params():
    rows = []
    for method, params, scores in (
        ("lora", 100, {"a": [0.8, 0.9], "b": [0.6, 0.7]}),
        ("coeff", 10, {"a": [0.5]}),
    ):
        for task, values in scores.items():
            for seed, value in enumerate(values):
                rows.append(
                    dict(
                        task=task,
                        method=method,
                        seed=seed,
                        test_accuracy=value,
                        trainable_params=params,
                        total_params=1000,
                    )
                )
    table = results_table(pd.DataFrame(rows))
    lines = table.splitlines()
    assert lines[0] == "| Method | a | b | Avg | Params |"
    # lora: a = 85.0 ± 7.1, b = 65.0 ± 7.1; Avg = 75.0, ± std over seeds of (80+60)/2=70 and (90+70)/2=80 -> 7.1
    assert lines[2] == "| lora | 85.0 ± 7.1 | 65.0 ± 7.1 | 75.0 ± 7.1 | 100 (10%) |"
    assert lines[3] == "| coeff | 50.0 | – | 50.0* | 10 (1%) |"
    assert "averaged over the tasks" in table
    with pytest.raises(ValueError, match="lack column"):
        results_table(pd.DataFrame([{"task": "a"}]))
