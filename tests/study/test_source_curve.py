"""The source curve: one study per (k, d, draw) on nested source subsets, one shared sweep, a pooled table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.study.test_study_pipeline import _task_csv, tiny_study  # noqa: F401 (the fixture)

from deltaspace.study import StudyConfig, load_study_config
from deltaspace.study.pipeline import StudyContext, plan_studies
from deltaspace.study.records import Stage2Record
from deltaspace.study.source_curve import (
    SourceCurveConfig,
    finishing_order,
    run_source_curve,
    write_source_curve_report,
)
from deltaspace.subspace.evaluate import predictions
from deltaspace.subspace.gain import pooled_gain


def _curve(tiny_study: StudyConfig, **changes) -> SourceCurveConfig:  # noqa: F811
    folder = Path(tiny_study.out).parent
    sentiment, topic = tiny_study.source_tasks
    topic2 = _task_csv(folder / "topic2.csv", ["sport", "business"], 3)
    shared = {
        key: getattr(tiny_study, key)
        for key in ("model", "train", "fit_train_examples", "eval_examples", "test_examples", "batch_size")
    }
    data = {
        "name": "tiny-curve",
        "out": str(folder / "curve"),
        "source_tasks": [sentiment, topic, topic2],
        "heldout_tasks": list(tiny_study.heldout_tasks),
        "ks": [1, 3],
        "dims": [2],
        "draws": 2,
        "study": {
            **shared,
            # long enough that training gains over θ0 on the tiny held-out task (the pooled ratio's denominator)
            "train": {**shared["train"], "epochs": 8},
            "methods": ["lora", "coeff"],
            "method_overrides": {"lora": {"lr": 3e-2}, "coeff": {"lr": 2e-1}},
            "fit": {"steps": 0, "gradient_directions": True, "gradient_per_batch": True, "progress": False},
            "optimise": {"steps": 4, "lr": 5e-2, "eval_every": 2, "optimizer": "adamw", "progress": False},
            "controls": ["random", "span"],
        },
    }
    return SourceCurveConfig.from_dict({**data, **changes})


def test_points_are_nested_draws_and_all_is_drawn_once(tiny_study: StudyConfig) -> None:  # noqa: F811
    config = _curve(tiny_study, ks=[1, 2, 3], dims=[2, 3], draws=2)
    points = config.points()
    assert [(p.k, p.dim, p.draw) for p in points] == [
        (k, d, j) for k in (1, 2, 3) for d in (2, 3) for j in ((0, 1) if k < 3 else (0,))
    ]
    for draw in (0, 1):  # each draw's k = 1 sources lie inside its k = 2 sources
        one, two = ({p.sources for p in points if p.k == k and p.draw == draw} for k in (1, 2))
        assert len(one) == len(two) == 1 and set(one.pop()) < set(two.pop())
    assert [p.sources for p in points] == [p.sources for p in config.points()]  # deterministic
    # finished draw by draw: the whole (k, d) grid of draw 0 first, then draw 1's points
    assert [(p.k, p.dim, p.draw) for p in finishing_order(points)] == [
        (1, 2, 0), (2, 2, 0), (3, 2, 0), (1, 3, 0), (2, 3, 0), (3, 3, 0), (1, 2, 1), (2, 2, 1), (1, 3, 1), (2, 3, 1)
    ]  # fmt: skip
    studies = config.studies()
    assert [s.fit.dim for s in studies] == [p.dim for p in points]
    assert [s.controls for s in studies] == [["span"] if p.k < 3 else ["random", "span"] for p in points]
    assert len({s.out for s in studies}) == len(points) and len({str(s.runs_dir) for s in studies}) == 1


def test_a_source_curve_runs_every_point_on_one_sweep_and_pools_the_draws(
    tiny_study: StudyConfig,  # noqa: F811
) -> None:
    config = _curve(tiny_study)
    stages = ("sweep", "fit", "optimise", "report")
    # before: 4 tasks x 2 DETs trained once for all 3 points; per point its fit, its (task, subspace, DET)
    # stage-2 parts (learned + span; + random at k = 3) and its transfer
    assert plan_studies(config.studies(), stages) == {
        "sweep": 8,
        "fit": 3,
        "optimise": 4 + 4 + 6,
        "transfer": 3,
    }
    report = run_source_curve(config)
    assert set(plan_studies(config.studies(), stages).values()) == {0}
    out = Path(config.out)
    # one sweep for every point: 4 tasks x 2 DETs, each trained once
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["sentiment", "sentiment2", "topic", "topic2"]
    assert all(len(list(task.iterdir())) == 2 for task in (out / "runs").iterdir())
    rows = {(row["k"], row["d"]): row for row in json.loads((out / "curve.json").read_text())}
    assert set(rows) == {(1, 2), (3, 2)}
    # held-out task x DETs x draws; the random control only at the largest k
    assert rows[(1, 2)]["learned"]["cells"] == 1 * 2 * 2 and rows[(3, 2)]["learned"]["cells"] == 1 * 2
    assert rows[(1, 2)]["random"]["cells"] == 0 and rows[(3, 2)]["random"]["cells"] == 2
    assert rows[(1, 2)]["transfer"]["cells"] == 2 * 2  # two off-diagonal directions per draw
    # the shared part exists where k < d: at k = 1 (1 solution coordinate of 2), not at k = 3 (2 of 2)
    assert rows[(1, 2)]["shared_own"]["cells"] == rows[(1, 2)]["shared_transfer"]["cells"] == 4
    assert rows[(3, 2)]["shared_own"]["cells"] == rows[(3, 2)]["shared_transfer"]["cells"] == 0
    # the pooled figure is the gain over both draws' records, recomputed here from the records
    cells = []
    for draw in (0, 1):
        path = out / f"k1-d2-draw{draw}" / "stage2" / "sentiment2.json"
        record = Stage2Record.from_dict(json.loads(path.read_text()))
        assert len(record.source_tasks) == 1
        cells += [record.gain_cell("learned", det) for det in ("lora", "coeff")]
    assert rows[(1, 2)]["learned"]["gain"] == pytest.approx(pooled_gain(cells))
    # a shared-part cell recomputed by hand: LoRA's code with its second (descent) coordinate set to 0,
    # decoded by Coeff, on the report's test batches
    study = next(s for s in config.studies() if s.out.endswith("k1-d2-draw1"))
    context = StudyContext(study)
    shared = record.transfer_shared
    i, j = shared["sources"].index("lora"), shared["targets"].index("coeff")
    cut = torch.tensor([record.runs["learned"]["lora"].z[0], 0.0])
    coeff = next(m for m in context.members if m.name == "coeff")
    theta = context.bundle(None).up("coeff")(cut)
    expected, _ = predictions(coeff, theta, context.batches[study.heldout_tasks[0]].report_batches)
    assert shared["predictions"][i][j] == expected.tolist()
    low, high = rows[(1, 2)]["learned"]["interval"]
    assert low <= pooled_gain(cells) <= high
    text = report.read_text()
    # d = 2: one source solution and one descent direction at k = 1; at k = 3 the solutions fill d
    assert rows[(1, 2)]["directions"] == {"solution": 1, "descent": 1, "random": 0}
    assert rows[(3, 2)]["directions"] == {"solution": 2, "descent": 0, "random": 0}
    assert "| 1 | 2 | 2 | 1 / 1 / 0 |" in text and "| 3 | 2 | 1 | 2 / 0 / 0 |" in text
    assert (out / "source_curve.png").stat().st_size > 5000
    # at k = 3 the source codes span all d = 2 coordinates: no held-out code can leave their span
    assert rows[(3, 2)]["code_geometry"]["outside_span"] < 1e-6
    assert 0 <= rows[(1, 2)]["code_geometry"]["outside_span"] <= 1
    assert "## Where the held-out codes lie" in text
    # the change from k = 1 to k = 3, paired: the difference of the two rows' pooled gains
    (trend,) = [line for line in text.splitlines() if line.startswith("| 3 − 1 | 2 |")]
    change = rows[(3, 2)]["learned"]["gain"] - rows[(1, 2)]["learned"]["gain"]
    assert trend.split("|")[3].strip().strip("*").startswith(f"{change:.1f}")
    # learned − span at each point, paired: the difference of the row's two pooled gains
    (point,) = [line for line in text.splitlines() if line.startswith("| 1 | 2 | 2 |")]
    above = rows[(1, 2)]["learned"]["gain"] - rows[(1, 2)]["span"]["gain"]
    assert point.split("|")[-2].strip().strip("*").startswith(f"{above:.1f}")
    assert (out / "k3-d2-draw0" / "report.md").is_file() and (
        out / "k3-d2-draw0" / "baselines.json"
    ).is_file()
    # stopped part way (one held-out record of draw 1 missing): that draw leaves the pool whole
    (out / "k1-d2-draw1" / "stage2" / "sentiment2.json").unlink()
    text = write_source_curve_report(out).read_text()
    rows = {(row["k"], row["d"]): row for row in json.loads((out / "curve.json").read_text())}
    assert rows[(1, 2)]["draws"] == 1 and rows[(1, 2)]["learned"]["cells"] == 1 * 2
    assert "Part way: 2 of 3 points finished" in text and "| 1 | 2 | 1 | 1 / 1 / 0 |" in text


def test_bad_source_curves_give_one_line_errors(tiny_study: StudyConfig) -> None:  # noqa: F811
    with pytest.raises(ValueError, match="from 1 to the pool's 3"):
        _curve(tiny_study, ks=[4])
    with pytest.raises(ValueError, match="both a source and a held-out task"):
        _curve(tiny_study, heldout_tasks=list(tiny_study.source_tasks[:1]))
    with pytest.raises(ValueError, match="set per point"):
        _curve(tiny_study, study={"source_tasks": ["x"]})
    with pytest.raises(ValueError, match="draws must be a positive integer"):
        _curve(tiny_study, draws=0)


def test_the_shipped_source_curve_reuses_the_full_suite_runs() -> None:
    curve, full = load_study_config("source_curve"), load_study_config("full_suite")
    assert isinstance(curve, SourceCurveConfig)
    assert curve.source_tasks == full.source_tasks and curve.heldout_tasks == full.heldout_tasks
    assert curve.runs_dir == full.runs_dir and curve.study["train"] == full.train
    assert max(curve.ks) == len(curve.source_tasks)


def test_the_shipped_hull_curve_is_the_source_curve_with_stage_2_inside_the_fitted_region() -> None:
    curve, hull = load_study_config("source_curve"), load_study_config("source_curve_hull")
    hull.validate()
    assert hull.source_tasks == curve.source_tasks and hull.heldout_tasks == curve.heldout_tasks
    assert hull.runs_dir == curve.runs_dir and hull.study["train"] == curve.study["train"]
    assert {(p.k, p.draw, p.sources) for p in hull.points()} <= {
        (p.k, p.draw, p.sources) for p in curve.points()
    }
    assert all(s.optimise.region == "hull" and s.controls == [] for s in hull.studies())
