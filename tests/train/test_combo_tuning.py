"""Combination tuning in the tuned sweep (issue 20 item 1): ΔC's rate in Coeff + X (X's rate, the paper's one
rate, or multiples of Coeff's own chosen rate), then Coeff dropout at that rate, chosen on validation; the
seeds at the choice; folders naming every choice; the one-line errors; shards, resume and the CLI's plan."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tests.train.test_tuned import _fake_result, _tuned

from deltaspace.train.tuned import (
    ComboTuning,
    IncompleteGridError,
    TunedSweepConfig,
    run_tuned,
)

COMBO = "coeff+bitfit"
TUNING = {"rates": ["one_rate", 1.0, 0.2], "option": {"coeff_dropout": [0.0, 0.2, 0.3]}}


def _combo_tuned(out: Path, model_dir, **changes) -> TunedSweepConfig:
    return _tuned(out, model_dir, probe=None, combo_tuning=TUNING, **changes)


def _grid(config: TunedSweepConfig, task: str = "tiny") -> None:
    """Grid results choosing bitfit 1e-3 (its lower rate) and coeff 5e-2 (its preset) on ``task``."""
    for method, best in (("bitfit", 1e-3), ("coeff", 5e-2)):
        for lr in config.grid_rates(method):
            _fake_result(config.grid_dir(task, method, lr), 0.9 if lr == best else 0.6)


def _rates(bitfit: float, coeff: float) -> dict[str, float]:
    return {"bitfit": bitfit, "coeff": coeff}


def test_without_combo_tuning_the_combo_phases_are_empty_and_refused(tmp_path):
    config = _tuned(tmp_path, "m")
    assert config.combo_tuning is None
    assert config.phase_runs("combo_lr") == [] and config.phase_runs("combo_option") == []
    with pytest.raises(
        ValueError, match=r"^phase combo_lr tunes the combinations as a whole .* no combo_tuning"
    ):
        run_tuned(config, "combo_lr", show=False)


def test_runs_keys_and_folders_before_and_after_the_grid(tmp_path):
    config = _combo_tuned(tmp_path, "m")
    assert config.combo_tuning == ComboTuning(("one_rate", 1.0, 0.2), "coeff_dropout", (0.0, 0.2, 0.3))
    # Before the grid (counting, shards): every label and every non-default dropout, at the presets.
    assert [s.key for s in config.phase_runs("combo_lr")] == [
        f"combo_lr/tiny/{COMBO}/one_rate",
        f"combo_lr/tiny/{COMBO}/x0.2",
        f"combo_lr/tiny/{COMBO}/x1",
    ]
    assert [s.key for s in config.phase_runs("combo_option")] == [
        f"combo_option/tiny/{COMBO}/coeff_dropout0",
        f"combo_option/tiny/{COMBO}/coeff_dropout0.3",
    ]
    # The seeds phase runs the combination's other seeds only: seed 0 is its combo-grid run.
    assert [s.key for s in config.phase_runs("seeds")] == [
        "seeds/tiny/bitfit/seed1",
        f"seeds/tiny/{COMBO}/seed1",
        "seeds/tiny/coeff/seed1",
    ]

    _grid(config)
    chosen = config.choose_rates()
    runs = {s.key: s.config for s in config.phase_runs("combo_lr", chosen)}
    # ΔC at X's chosen rate (1e-3), Coeff's own chosen rate (5e-2) and 0.2 of it (1e-2); X always at 1e-3;
    # the default Coeff dropout (the preset's 0.2) set explicitly, and named by the folder.
    assert {key.rsplit("/", 1)[1]: c.lr_overrides["ds_coeff"] for key, c in runs.items()} == {
        "one_rate": 1e-3,
        "x1": 5e-2,
        "x0.2": 1e-2,
    }
    assert {c.lr for c in runs.values()} == {1e-3}
    assert {c.method_options["coeff_dropout"] for c in runs.values()} == {0.2}
    one = runs[f"combo_lr/tiny/{COMBO}/one_rate"]
    assert (
        Path(one.output_dir)
        == tmp_path / "combo_grid/tiny" / COMBO / "lr0.001-coeff0.001-coeff_dropout0.2/seed0"
    )
    assert Path(one.output_dir) == config.combo_dir("tiny", COMBO, _rates(1e-3, 1e-3), 0.2)


def test_a_rate_listed_twice_is_run_once(tmp_path):
    # X's rate (1e-2) is also 0.2 x Coeff's (5e-2): one run, under the first label (one_rate).
    config = _combo_tuned(tmp_path, "m")
    for method, best in (("bitfit", 1e-2), ("coeff", 5e-2)):
        for lr in config.grid_rates(method):
            _fake_result(config.grid_dir("tiny", method, lr), 0.9 if lr == best else 0.6)
    runs = config.phase_runs("combo_lr", config.choose_rates())
    assert [(s.key.rsplit("/", 1)[1], s.config.lr_overrides["ds_coeff"]) for s in runs] == [
        ("one_rate", 1e-2),
        ("x1", 5e-2),
    ]


def test_the_choice_follows_validation_and_the_seeds_use_it(tmp_path):
    config = _combo_tuned(tmp_path, "m")
    _grid(config)
    chosen = config.choose_rates()
    # Rate stage: one_rate (1e-3) and x0.2 (1e-2) tie on accuracy and loss; x0.2 is nearer Coeff's own 5e-2.
    for rate, accuracy in ((1e-3, 0.8), (1e-2, 0.8), (5e-2, 0.7)):
        _fake_result(config.combo_dir("tiny", COMBO, _rates(1e-3, rate), 0.2), accuracy)
    combo_rates = config.choose_combo_rates(chosen)
    assert combo_rates[("tiny", COMBO)].lr == 1e-2
    assert combo_rates[("tiny", COMBO)].scores == {1e-3: 0.8, 1e-2: 0.8, 5e-2: 0.7}
    # Dropout stage at 1e-2: 0 and 0.3 tie with the default on accuracy, 0.3 has the lower validation loss.
    option_runs = {
        s.key: s.config for s in config.phase_runs("combo_option", chosen, combo_rates=combo_rates)
    }
    assert {c.lr_overrides["ds_coeff"] for c in option_runs.values()} == {1e-2}
    assert sorted(c.method_options["coeff_dropout"] for c in option_runs.values()) == [0.0, 0.3]
    _fake_result(config.combo_dir("tiny", COMBO, _rates(1e-3, 1e-2), 0.0), 0.8, val_loss=0.5)
    _fake_result(config.combo_dir("tiny", COMBO, _rates(1e-3, 1e-2), 0.3), 0.8, val_loss=0.3)
    combos = config.choose_combos(chosen, combo_rates)
    choice = combos[("tiny", COMBO)]
    assert (choice.lr, choice.first_lr, choice.own_lr, choice.value) == (1e-3, 1e-2, 5e-2, 0.3)
    assert choice.option_scores == {0.2: 0.8, 0.0: 0.8, 0.3: 0.8}
    assert not choice.one_rate and choice.rate_label == "×0.2"
    assert choice.run_dir == str(config.combo_dir("tiny", COMBO, _rates(1e-3, 1e-2), 0.3))

    seeds = {s.key: s.config for s in config.phase_runs("seeds", chosen, combos=combos)}
    combo = seeds[f"seeds/tiny/{COMBO}/seed1"]
    assert (combo.lr, combo.lr_overrides, combo.method_options) == (
        1e-3,
        {"ds_coeff": 1e-2},
        {"coeff_dropout": 0.3},
    )
    assert Path(combo.output_dir).parent.name == "lr0.001-coeff0.01-coeff_dropout0.3"
    final = {(m, s): d for _, m, s, d in config.final_runs(chosen)}
    assert final[(COMBO, 0)] == Path(choice.run_dir)  # seed 0: the chosen combo-grid run
    assert final[(COMBO, 1)] == Path(combo.output_dir)
    assert final[("bitfit", 0)] == config.grid_dir("tiny", "bitfit", 1e-3)
    # The default wins a full tie (nearest the default value).
    _fake_result(config.combo_dir("tiny", COMBO, _rates(1e-3, 1e-2), 0.3), 0.8, val_loss=0.5)
    assert config.choose_combos(chosen, combo_rates)[("tiny", COMBO)].value == 0.2


def test_later_phases_before_their_inputs_have_finished_are_one_line(tmp_path):
    config = _combo_tuned(tmp_path, "m")
    with pytest.raises(
        IncompleteGridError, match=r"^the combo_lr phase needs the finished grid, but 4 grid run"
    ):
        run_tuned(config, "combo_lr", show=False)
    _grid(config)
    with pytest.raises(
        IncompleteGridError,
        match=r"^the combo_option phase needs the finished combo_lr phase, but 3 combo_lr run\(s\) .*--phase combo_lr",
    ):
        run_tuned(config, "combo_option", show=False)
    for rate in (1e-3, 1e-2, 5e-2):
        _fake_result(config.combo_dir("tiny", COMBO, _rates(1e-3, rate), 0.2), 0.8 if rate == 5e-2 else 0.7)
    with pytest.raises(
        IncompleteGridError,
        match=r"^the seeds phase needs the finished combo_option phase, but 2 combo_option",
    ) as raised:
        run_tuned(config, "seeds", show=False)
    assert "\n" not in str(raised.value)
    # Reports skip what is missing: the combination has no choice yet.
    assert (
        config.choose_combos(
            config.choose_rates(), config.choose_combo_rates(config.choose_rates()), strict=False
        )
        == {}
    )


def test_combo_tuning_errors_are_one_line(tmp_path):
    bad = [
        ("nope", "combo_tuning must be a mapping like"),
        ({"rates": [1.0], "dropout": [0.1]}, r"unknown key\(s\) \['dropout'\]; valid keys: rates, option"),
        ({"rates": []}, "combo_tuning rates must list distinct entries"),
        ({"rates": ["one", 1.0]}, "each 'one_rate'"),
        ({"rates": [1.0, -2.0]}, "positive multiple"),
        (
            {"rates": [1.0], "option": {"coeff_dropout": [0.1, 0.1]}},
            "combo_tuning option must name one numeric",
        ),
        ({"rates": [1.0], "option": {"a": [0.1], "b": [0.2]}}, "combo_tuning option must name one"),
        (
            {"rates": [1.0], "option": {"dropout": [0.1]}},
            "'dropout' is not a numeric option of 'coeff'.*coeff_dropout",
        ),
    ]
    for tuning, message in bad:
        with pytest.raises(ValueError, match=message) as raised:
            _tuned(tmp_path, "m", combo_tuning=tuning)
        assert "\n" not in str(raised.value)
    with pytest.raises(ValueError, match="combo_tuning tunes the combinations, but combos is empty"):
        _tuned(tmp_path, "m", combos=[], combo_tuning=TUNING)
    scoped = {"coeff+bitfit": {"method_options": {"coeff.coeff_dropout": 0.1}}}
    with pytest.raises(ValueError, match="would override the tuned 'coeff_dropout'"):
        _tuned(tmp_path, "m", combo_tuning=TUNING, method_overrides={"bitfit": {"lr": 1e-2}, **scoped})
    # The combination's own setting is the default the rate stage uses.
    own = {
        "coeff+bitfit": {"method_options": {"coeff_dropout": 0.1}},
        "bitfit": {"lr": 1e-2},
        "coeff": {"lr": 5e-2},
    }
    config = _tuned(tmp_path, "m", combo_tuning=TUNING, method_overrides=own)
    assert config.option_default("tiny", COMBO) == 0.1
    assert len(config.phase_runs("combo_option")) == 3  # 0.1 is not listed: every listed value runs
    # Narrowing to no combination drops the tuning with it; a file without combos but with tuning is refused.
    path = tmp_path / "tuned.yaml"
    path.write_text(
        "out: x\ntasks: [a]\nmethods: [bitfit, coeff]\ncombos: [coeff+bitfit]\ntrain: {model: m}\n"
        "combo_tuning: {rates: [one_rate, 1.0]}\n"
    )
    assert TunedSweepConfig.from_file(path).combo_tuning == ComboTuning(("one_rate", 1.0))
    assert TunedSweepConfig.from_file(path, combos=[]).combo_tuning is None
    assert TunedSweepConfig.from_file(path, methods=["bitfit"]).combo_tuning is None


def test_phases_end_to_end_with_shards_and_resume(tmp_path, tiny_model_dir, tiny_task):
    out = tmp_path / "tuned"
    config = _combo_tuned(out, tiny_model_dir)
    load = lambda spec, seed: tiny_task  # noqa: E731
    run_tuned(config, "grid", task_loader=load, show=False)
    chosen = config.choose_rates()
    for phase in ("combo_lr", "combo_option", "seeds"):
        done = [run_tuned(config, phase, shard=(i, 2), task_loader=load, show=False) for i in range(2)]
        keys = [{o.spec.key for o in outcomes} for outcomes in done]
        assert keys[0].isdisjoint(keys[1]), phase  # every run on one shard only
        assert all(o.status == "done" for outcomes in done for o in outcomes), phase
        if phase == "combo_lr":
            assert len(keys[0] | keys[1]) == len(config.phase_runs(phase, chosen))
    combos = config.choose_combos(chosen, config.choose_combo_rates(chosen))
    choice = combos[("tiny", COMBO)]
    # The seeds phase trained the chosen configuration, as its config.json records.
    saved = json.loads(
        (
            config.seed_dir("tiny", COMBO, 1, choice.rates, ("coeff_dropout", choice.value)) / "config.json"
        ).read_text()
    )
    assert saved["lr"] == chosen[("tiny", "bitfit")].lr
    assert saved["lr_overrides"] == {"ds_coeff": choice.first_lr}
    assert saved["method_options"] == {"coeff_dropout": choice.value}
    listed = json.loads((out / "combo_selection.json").read_text())["chosen"]
    assert [(c["combo"], c["first_lr"], c["coeff_dropout"]) for c in listed] == [
        (COMBO, choice.first_lr, choice.value)
    ]
    finals = config.final_runs(chosen)
    assert len(finals) == 3 * 2 and all((d / "result.json").is_file() for *_, d in finals)

    # Rerunning every phase trains nothing and changes nothing.
    stamps = {p: os.stat(p).st_mtime_ns for p in out.rglob("result.json")}
    again = run_tuned(config, "all", task_loader=load, show=False)
    assert {o.status for o in again} == {"skipped"}
    assert {p: os.stat(p).st_mtime_ns for p in out.rglob("result.json")} == stamps


def test_plan_counts_the_combo_phases(tmp_path, tiny_model_dir):
    from typer.testing import CliRunner

    import deltaspace.cli.tune  # noqa: F401  (registers `tune`)
    from deltaspace.cli.app import app

    config = tmp_path / "tuned.yaml"
    config.write_text(
        f"out: {tmp_path / 'runs'}\ntasks: [a, b]\nmethods: [bitfit, coeff]\ncombos: [coeff+bitfit]\n"
        f"seeds: [0, 1, 2]\nlr_grid: [0.5, 1.0]\nprobe: null\ntrain: {{model: '{tiny_model_dir}'}}\n"
        "combo_tuning: {rates: [one_rate, 0.316, 1.0, 3.16], option: {coeff_dropout: [0.0, 0.1, 0.2, 0.3]}}\n"
    )
    plan = CliRunner().invoke(app, ["tune", "--config", str(config), "--plan"])
    assert plan.exit_code == 0, plan.output
    # grid 2 x 2 x 2 = 8; combo_lr 4 rates x 2 tasks; combo_option 3 dropouts x 2; seeds 2 x 2 x 2 + 2 x 2.
    assert (
        "grid phase 8 runs (incl. 0 probes), combo_lr phase 8 runs (at most), combo_option phase 6 runs, "
        "seeds phase 12 runs; 34 in all" in plan.output
    )


def test_the_configs_of_issue_20_load_and_validate():
    from deltaspace.train.sweep import SweepConfig

    root = Path(__file__).resolve().parents[2] / "configs"
    tuned = TunedSweepConfig.from_file(root / "coeff_adds.yaml")
    assert (
        tuned.combos == ["coeff+lora", "coeff+adapter", "coeff+ia3"]
        and tuned.combo_tuning.option == "coeff_dropout"
    )
    counts = {phase: len(tuned.phase_runs(phase)) for phase in ("grid", "combo_lr", "combo_option", "seeds")}
    assert counts == {"grid": 240, "combo_lr": 240, "combo_option": 180, "seeds": 280}  # the header's 940
    # Its grid and the methods' seeds are configs/sweep_tuned_v2.yaml's own runs, so they are trained once.
    v2 = TunedSweepConfig.from_file(root / "sweep_tuned_v2.yaml")
    assert tuned.out == v2.out
    for phase in ("grid", "seeds"):
        mine = {s.config.output_dir: s.config for s in tuned.phase_runs(phase) if "+" not in s.method}
        theirs = {s.config.output_dir: s.config for s in v2.phase_runs(phase)}
        assert all(theirs[d] == c for d, c in mine.items())
    paper = SweepConfig.from_file(root / "coeff_paper_regime.yaml")
    runs = paper.runs()
    assert len(runs) == 120 and len(paper.tasks) >= 6  # the header's 8 x 5 x 3
    assert {s.method for s in runs} == {"coeff", "lora", "coeff+lora", "adapter", "coeff+adapter"}
    for spec in runs:  # one AdamW rate for every parameter, as the paper
        c = spec.config
        assert (c.lr, c.lr_overrides, c.weight_decay, c.schedule, c.max_train_examples) == (
            1e-3,
            {},
            1e-4,
            "cosine",
            1000,
        )
        assert c.early_stopping_patience is not None and c.epochs >= 50
