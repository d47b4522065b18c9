"""`deltaspace report studies`: hand-made study folders, the figures and paired differences they give."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deltaspace.errors import UserInputError
from deltaspace.study.compare import compare, load_study_view, write_comparison
from deltaspace.study.records import Stage2Record, SubspaceRun

N = 40
GOLD = [1] * N


def _correct(n: int) -> list[int]:
    return [1] * n + [0] * (N - n)


THETA0 = _correct(10)
ORIGINAL = _correct(30)  # a gain of 20 examples to recover


def _run(predictions: list[int]) -> SubspaceRun:
    return SubspaceRun(
        metric=sum(predictions) / N,
        initial_metric=0.25,
        selection_metric=0.5,
        best_step=5,
        predictions=predictions,
        z=[0.0],
    )


def _study(
    root: Path,
    name: str,
    own: int,
    transfer: int,
    *,
    shared: int | None = None,
    steps: int = 0,
    region: str = "free",
) -> Path:
    """A study whose codes get ``own`` / ``transfer`` / ``shared`` examples right on task t (gold all 1)."""
    out = root / name
    (out / "stage2").mkdir(parents=True)
    config = {
        "name": name,
        "methods": ["lora", "adapter"],
        "source_tasks": ["s1", "s2"],
        "heldout_tasks": ["t"],
        "fit": {"dim": 4, "init": "closed_form", "steps": steps, "keep": "last", "gradient_directions": True},
        "optimise": {"steps": 125, "optimizer": "adamw", "lr": 0.05, "region": region},
    }
    (out / "config.json").write_text(json.dumps(config))
    dets = ["lora", "adapter"]
    record = Stage2Record(
        task="t",
        heldout=True,
        source_tasks=["s1", "s2"],
        gold=GOLD,
        initial={d: THETA0 for d in dets},
        original={d: ORIGINAL for d in dets},
        runs={"learned": {d: _run(_correct(own)) for d in dets}},
        transfer={
            "sources": dets,
            "targets": dets,
            "relative": [[0.0, 0.0], [0.0, 0.0]],
            "predictions": [[_correct(own if i == j else transfer) for j in range(2)] for i in range(2)],
        },
        shared=None
        if shared is None
        else {
            "z": [0.0],
            "best_step": 3,
            "selection_metric": 0.5,
            "predictions": {d: _correct(shared) for d in dets},
        },
    )
    (out / "stage2" / "t.json").write_text(json.dumps(record.to_dict()))
    return out


def test_figures_and_paired_differences(tmp_path: Path) -> None:
    base = _study(tmp_path, "base", own=20, transfer=10)  # own: (20-10)/(30-10) = 50 %, transfer: 0 %
    trained = _study(
        tmp_path, "trained", own=30, transfer=20, shared=25, steps=4000, region="hull"
    )  # 100, 50, 75 %
    text = write_comparison([base, trained], tmp_path / "cmp.md", plot=tmp_path / "cmp.png", resamples=200)
    assert (tmp_path / "cmp.md").read_text() == text and (tmp_path / "cmp.png").stat().st_size > 0
    assert (
        "| `base` | closed_form start, no joint fit, descent extra directions, d = 4, 2 source tasks | "
        "125 steps of adamw at 0.05, any code |" in text
    )
    assert "mixtures of θ0 and the source codes |" in text
    assert "4,000 joint-fit steps (last state kept)" in text
    # the base ran no shared code: its cell says so, and the difference has no value there
    assert "| `base` | 50.0 [" in text and "| `trained` | 100.0 [" in text
    assert "| – | 0.0 [" in text  # base: shared –, transfer 0
    assert "75.0 [" in text and "| 50.0 [" in text
    difference = next(line for line in text.splitlines() if line.startswith("| `trained` |") and "**" in line)
    # own: 100 − 50 and transfer: 50 − 0, paired, intervals above 0; one code for all: the base has none
    cells = [cell.strip() for cell in difference.split("|")[1:-1]]
    assert cells[0] == "`trained`" and cells[2] == "–"
    assert cells[1].startswith("**50.0 [") and cells[3].startswith("**50.0 [")


def test_only_tasks_scored_on_the_same_examples_are_compared(tmp_path: Path) -> None:
    base = _study(tmp_path, "base", own=20, transfer=10)
    other = _study(tmp_path, "other", own=30, transfer=20)
    path = other / "stage2" / "t.json"
    record = json.loads(path.read_text())
    record["gold"] = [0, *GOLD[1:]]  # another test set for the same task name
    path.write_text(json.dumps(record))
    with pytest.raises(UserInputError, match="same test examples"):
        compare([load_study_view(base), load_study_view(other)])


def test_bad_folders_fail_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"no config\.json"):
        load_study_view(tmp_path)
    empty = _study(tmp_path, "empty", own=20, transfer=10)
    (empty / "stage2" / "t.json").unlink()
    with pytest.raises(UserInputError, match="no held-out stage-2 records yet"):
        load_study_view(empty)
    with pytest.raises(UserInputError, match="at least two"):
        compare([load_study_view(_study(tmp_path, "one", own=20, transfer=10))])


def test_cli_prints_the_comparison(tmp_path: Path) -> None:
    from deltaspace.cli import app
    from deltaspace.cli import study as _  # noqa: F401  registers `report studies`

    base = _study(tmp_path, "base", own=20, transfer=10)
    trained = _study(tmp_path, "trained", own=30, transfer=20)
    result = CliRunner().invoke(app, ["report", "studies", str(base), str(trained), "--resamples", "50"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("# Studies compared") and "| `trained` | **50.0 [" in result.output
    result = CliRunner().invoke(app, ["report", "studies", str(base), str(tmp_path / "missing")])
    assert result.exit_code != 0 and "no config.json" in result.output


def test_dets_narrow_the_comparison(tmp_path: Path) -> None:
    base = _study(tmp_path, "base", own=20, transfer=10)
    trained = _study(tmp_path, "trained", own=30, transfer=20)
    views = [load_study_view(base), load_study_view(trained)]
    comparison = compare(views, ["lora"])
    assert comparison.methods == ["lora"]
    # one DET: no pair to transfer between, so the figure is absent; its own code stays
    assert comparison.cells(views[0], "transfer") is None
    assert [c.member for c in comparison.cells(views[0], "learned")] == ["lora"]
    with pytest.raises(UserInputError, match="not trained in every study"):
        compare(views, ["lora", "prefix"])
