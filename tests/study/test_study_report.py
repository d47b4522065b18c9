"""report.md from hand-made stage outputs: the numbers it prints are the ones the stages wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deltaspace.study.records import Stage2Record, SubspaceRun
from deltaspace.study.report import write_report


def _run(predictions: list[int]) -> SubspaceRun:
    # every gold label below is 1, so the accuracy is the mean prediction
    accuracy = sum(predictions) / len(predictions)
    return SubspaceRun(
        metric=accuracy,
        initial_metric=0.5,
        selection_metric=0.0,
        best_step=10,
        predictions=predictions,
        z=[0.0],
    )


def _record(task: str, gold, initial, original, runs, transfer=None) -> Stage2Record:
    return Stage2Record(
        task=task,
        heldout=True,
        source_tasks=["a"],
        gold=gold,
        initial=initial,
        original=original,
        runs={kind: {det: _run(p) for det, p in by_det.items()} for kind, by_det in runs.items()},
        transfer=transfer,
    )


def test_headline_is_pooled_gain_recovered_beside_the_controls(tmp_path: Path) -> None:
    config = {
        "name": "t",
        "model": "m",
        "methods": ["lora", "full"],
        "source_tasks": ["a"],
        "heldout_tasks": ["b", "c"],
        "seed": 0,
        "optimise": {"steps": 200, "optimizer": "adamw", "lr": 0.05, "init": "normal"},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "stage2").mkdir()
    gold = [1, 1, 1, 1]
    # task b: θ0 gets 1/4, originals 3/4; learned subspace 2/4 (lora) and 3/4 (full); random: θ0 again
    b = _record(
        "b",
        gold,
        initial={"lora": [1, 0, 0, 0], "full": [1, 0, 0, 0]},
        original={"lora": [1, 1, 1, 0], "full": [1, 1, 1, 0]},
        runs={
            "learned": {"lora": [1, 1, 0, 0], "full": [1, 1, 1, 0]},
            "random": {"lora": [1, 0, 0, 0], "full": [1, 0, 0, 0]},
        },
        transfer={
            "sources": ["lora", "full"],
            "targets": ["lora", "full"],
            "relative": [[100, 100], [50, 100]],
            "predictions": [[[1, 1, 0, 0], [1, 1, 1, 0]], [[1, 0, 0, 0], [1, 1, 1, 0]]],
        },
    )
    # task c: θ0 2/4, originals 4/4 (lora) and 2/4 (full: gained nothing); learned 4/4 and 2/4
    c = _record(
        "c",
        gold,
        initial={"lora": [1, 1, 0, 0], "full": [1, 1, 0, 0]},
        original={"lora": [1, 1, 1, 1], "full": [1, 1, 0, 0]},
        runs={
            "learned": {"lora": [1, 1, 1, 1], "full": [1, 1, 0, 0]},
            "random": {"lora": [1, 1, 1, 0], "full": [1, 1, 0, 0]},
        },
    )
    for record in (b, c):
        (tmp_path / "stage2" / f"{record.task}.json").write_text(json.dumps(record.to_dict()))
    text = write_report(tmp_path).read_text()
    # lora: (0.25 + 0.5) / (0.5 + 0.5) = 75 %; full: (0.5 + 0) / (0.5 + 0) = 100 %;
    # all: (0.25 + 0.5 + 0.5 + 0) / (0.5 + 0.5 + 0.5 + 0) = 83.3 %; random: (0 + 0.25) / 1.5 = 16.7 %
    lines = [line for line in text.splitlines() if line.startswith("| lora |") or line.startswith("| full |")]
    assert lines[0].startswith("| lora | 75.0 [") and "| 25.0 [" in lines[0]  # random: (0 + 0.25) / 1
    assert lines[1].startswith("| full | 100.0 [")
    assert "| **all DETs** | 83.3 [" in text and "] | 16.7 [" in text
    # learned − random, paired: lora 75.0 − 25.0, all DETs 83.3 − 16.7 (the last column of each row)
    assert "| DET | learned (stage 1) | random control | learned − random |" in text
    assert lines[0].split("|")[-2].strip().strip("*").startswith("50.0 [")
    all_row = next(line for line in text.splitlines() if line.startswith("| **all DETs** |"))
    assert all_row.split("|")[-2].strip().strip("*").startswith("66.7 [")
    # transfer: lora->full 0.5/0.5 on b; full->lora 0/0.5 on b -> pooled (0.5 + 0) / (0.5 + 0.5) = 50 %
    assert "gain recovered **50.0 [" in text
    assert "Stage 5, full fine-tuning" in text
    # relative performance stays, as the second table: lora on b: 0.5 / 0.75 = 66.7 %
    assert "| b (held-out) | 66.7 (0.500 / 0.750)" in text
    assert "| b (held-out) | 50.0 (val 0.500 → 0.000 at step 10)" in text  # lora: 0.25 of 0.5 gained
    assert "Relative performance (%)" in text and "Compared with the paper" in text


def test_record_round_trips_through_json() -> None:
    record = _record("b", [0, 1], {"x": [0, 0]}, {"x": [0, 1]}, {"learned": {"x": [0, 1]}})
    again = Stage2Record.from_dict(json.loads(json.dumps(record.to_dict())))
    assert again == record
    assert again.gain_cell("learned", "x").subspace.tolist() == [1.0, 1.0]


def _coded(task: str, codes: dict[str, list[float]], sources: int, stored: int | None) -> Stage2Record:
    runs = {det: SubspaceRun(0.5, 0.4, 0.5, 10, [0, 1], z) for det, z in codes.items()}
    shared = {"sources": list(codes), "targets": list(codes), "predictions": []}
    if stored is not None:
        shared["coordinates"] = stored
    return Stage2Record(
        task=task,
        heldout=True,
        source_tasks=[f"s{i}" for i in range(sources)],
        gold=[0, 1],
        initial={},
        original={},
        runs={"learned": runs},
        transfer_shared=shared,
    )


def test_code_agreement_compares_the_shared_coordinates_only() -> None:
    from deltaspace.study.report import code_agreement, shared_coordinates

    # two shared coordinates (stored), then the per-DET ones, which must not count
    a = _coded("a", {"lora": [1, 0, 5, 5], "adapter": [1, 1, -5, 9]}, sources=3, stored=2)
    # no stored count (an older record): one per source task
    b = _coded("b", {"lora": [0, 1, 7, 0], "adapter": [0, -1, 0, 3]}, sources=2, stored=None)
    assert shared_coordinates(a) == 2 and shared_coordinates(b) == 2
    same, pairs, across, other = code_agreement([a, b])
    # task a: cos((1, 0), (1, 1)) = 1/√2; task b: cos((0, 1), (0, −1)) = −1
    assert pairs == 2 and same == pytest.approx((2**-0.5 - 1) / 2)
    # lora: cos((1, 0), (0, 1)) = 0; adapter: cos((1, 1), (0, −1)) = −1/√2
    assert other == 2 and across == pytest.approx((0 - 2**-0.5) / 2)
    assert code_agreement([_coded("c", {"lora": [1, 0]}, sources=1, stored=1)]) is None
