"""The whole study pipeline on a tiny random BERT and tiny CSV tasks: every stage runs, resumes, reports."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizer

from deltaspace.errors import UserInputError
from deltaspace.rng import seeded
from deltaspace.study import StudyConfig, run_study
from deltaspace.study.config import SHIPPED, load_study_config
from deltaspace.study.records import Stage2Record
from deltaspace.study.report import _stage2_budget, run_results
from deltaspace.tasks import HELDOUT_TASKS, SOURCE_TASKS, V1_TASKS

WORDS = {
    "positive": ["good", "great", "nice"],
    "negative": ["bad", "awful", "poor"],
    "sport": ["goal", "match", "team"],
    "business": ["market", "stock", "bank"],
}
FILLER = ["the", "a", "was", "is", "very", "and", "story", "today"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _checkpoint(directory: Path) -> Path:
    directory.mkdir(parents=True)
    vocab = SPECIAL + FILLER + [w for words in WORDS.values() for w in words] + list(WORDS)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    BertTokenizer(vocab=str(directory / "vocab.txt")).save_pretrained(directory)
    return directory


def _task_csv(
    path: Path, labels: list[str], seed: int, n: int = 160, fillers: tuple[int, int] = (4, 4)
) -> str:
    rng = random.Random(seed)
    lines = ["text,label"]
    for index in range(n):
        label = labels[index % len(labels)]
        words = rng.sample(FILLER, rng.randint(*fillers))
        words.insert(rng.randrange(5), rng.choice(WORDS[label]))
        lines.append(f"{' '.join(words)},{label}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def tiny_study(tmp_path: Path) -> StudyConfig:
    model = _checkpoint(tmp_path / "model")
    return StudyConfig(
        name="tiny",
        out=str(tmp_path / "study"),
        model=str(model),
        source_tasks=[
            _task_csv(tmp_path / "sentiment.csv", ["negative", "positive"], 0),
            _task_csv(tmp_path / "topic.csv", ["sport", "business"], 1),
        ],
        heldout_tasks=[_task_csv(tmp_path / "sentiment2.csv", ["negative", "positive"], 2)],
        methods=["lora", "coeff", "full"],
        train={
            "epochs": 2,
            "batch_size": 16,
            "max_train_examples": 64,
            "max_eval_examples": 32,
            "eval_every": 4,
            "max_length": 16,
        },
        method_overrides={"lora": {"lr": 5e-3}, "coeff": {"lr": 5e-2}, "full": {"lr": 1e-3}},
        # A small dense limit sends full fine-tuning through the structured projection, as on real models.
        fit={
            "dim": 2,
            "steps": 12,
            "lr": 1e-2,
            "optimizer": "adamw",
            "eval_every": 6,
            "progress": False,
            "max_dense_elements": 20_000,
        },
        optimise={"steps": 6, "lr": 5e-2, "eval_every": 3, "optimizer": "adamw", "progress": False},
        fit_train_examples=32,
        eval_examples=32,
        test_examples=32,
        batch_size=16,
        landscape={"resolution": 3},
    )


def test_whole_pipeline_runs_resumes_and_reports(tiny_study: StudyConfig) -> None:
    tiny_study = dataclasses.replace(tiny_study, shared_code=True)
    report = run_study(tiny_study)
    out = Path(tiny_study.out)
    text = report.read_text()
    for heading in ("Original space", "Stage 1", "Stage 2", "Stage 3", "Stage 4", "Compared with the paper"):
        assert heading in text
    assert (out / "landscape.png").stat().st_size > 1000
    fit = json.loads((out / "subspace" / "fit.json").read_text())
    assert set(fit["dims"]) == {"lora", "coeff", "full"} and fit["dims"]["coeff"] == 2 * 16  # 2 layers x 4²
    # the closed-form start: 2 source tasks fill d = 2, so no random extra directions
    assert fit["projection_kinds"]["full"]["up"] == "basis" and fit["closed_form"]["basis_dim"] == 2
    assert max(e for by_task in fit["reconstruction_error"].values() for e in by_task.values()) < 0.1
    assert "Stage 5, full fine-tuning" in text and "Headline" in text
    assert "One code trained through every DET at once" in text and "| one code for all |" in text
    assert (
        "Where the held-out tasks' stage-2 codes lie" in text and "| the source codes (for scale) |" in text
    )
    assert "the best kept" in text and "Source-task validation (accuracy): " in text and "(step 12)." in text
    for task in tiny_study.stage2_tasks:
        record = Stage2Record.from_dict(json.loads((out / "stage2" / f"{Path(task).stem}.json").read_text()))
        assert len(record.transfer["metrics"]) == 3 and len(record.transfer["metrics"][0]) == 3
        assert set(record.runs) == {"learned", "random", "span"}
        for kind, by_det in record.runs.items():
            for name, run in by_det.items():
                assert len(run.z) == 2 and len(run.predictions) == len(record.gold), (kind, name)
                assert run.metric == record.accuracy(run.predictions)
        # the diagonal of the transfer matrix is stage 2 itself, reused rather than evaluated again
        for i, name in enumerate(record.transfer["sources"]):
            assert record.transfer["predictions"][i][i] == record.runs["learned"][name].predictions
        # one code through every DET at once: every DET scored at the same code
        assert set(record.shared["predictions"]) == {"lora", "coeff", "full"} and len(record.shared["z"]) == 2
        assert [len(c.subspace) for c in record.shared_cells()] == [len(record.gold)] * 3
    assert len(list((out / "intrinsic").glob("*.json"))) == 3 * len(tiny_study.stage2_tasks)
    assert not list((out / "stage2" / "parts").glob("*.json"))  # parts are folded into the records
    # every original beside its task's majority class and same-budget probe; stage 2's steps against theirs
    baselines = json.loads((out / "baselines.json").read_text())
    assert set(baselines) == {Path(t).stem for t in tiny_study.tasks}
    for known in baselines.values():
        assert 0 < known["majority"]["test"]["accuracy"] <= 1 and 0 < known["probe"]["test"]["accuracy"] <= 1
    assert "Runs above the probe: " in text and "Every run took 8 optimizer steps" in text
    assert "Stage 2 takes 6 optimizer steps of 16 examples; the originals took 8 steps of 16" in text
    config = json.loads((out / "config.json").read_text())
    steps = [
        data["steps"]
        for data in run_results(tiny_study.runs_dir, tiny_study.tasks, tiny_study.methods, 0).values()
    ]
    longer = _stage2_budget(steps, {**config, "optimise": {"steps": 20}})
    assert "stage 2 gets 12 more steps than the shortest original" in longer[0]

    # Resume: everything is done, so a second call only rewrites the report.
    stamps = {
        p: p.stat().st_mtime_ns for p in out.rglob("*.json") if p.name not in ("timings.json", "config.json")
    }
    run_study(tiny_study)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # a report-only call ran no stage: the worker counts of the last call that did stay in the report
    timings = json.loads((out / "timings.json").read_text())
    (out / "timings.json").write_text(json.dumps({**timings, "workers": 3.0, "threads_per_worker": 1.0}))
    run_study(tiny_study, stages=("report",))
    assert json.loads((out / "timings.json").read_text())["workers"] == 3.0
    assert "3 worker processes x 1 thread each" in (out / "report.md").read_text()


def test_a_study_reuses_an_existing_sweep_only_with_the_same_settings(tiny_study: StudyConfig) -> None:
    run_study(tiny_study, stages=("sweep",))
    runs = Path(tiny_study.out) / "runs"
    stamps = {p: p.stat().st_mtime_ns for p in runs.rglob("result.json")}
    assert len(stamps) == len(tiny_study.tasks) * len(tiny_study.methods)

    other = dataclasses.replace(tiny_study, out=str(Path(tiny_study.out).parent / "other"), runs=str(runs))
    report = run_study(other, stages=("sweep", "report"))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing retrained
    assert not (Path(other.out) / "runs").exists()
    assert (
        "Original space" in report.read_text() and "No finished original-space runs" not in report.read_text()
    )

    changed = dataclasses.replace(other, method_overrides={**other.method_overrides, "lora": {"lr": 1e-3}})
    with pytest.raises(ValueError, match=r"lr=0\.005 but this sweep asks for lr=0\.001"):
        run_study(changed, stages=("sweep",))


def test_shipped_configs_load_and_validate() -> None:
    default = load_study_config()
    assert default.model == "minilm-l6" and len(default.methods) >= 2
    full = load_study_config("full_suite")
    # suite v2's fixed split is the registry's; suite v1's configs keep its 6 / 4
    assert tuple(full.source_tasks) == SOURCE_TASKS and tuple(full.heldout_tasks) == HELDOUT_TASKS
    assert "full" in full.methods
    v1 = load_study_config("full_suite_v1")
    assert len(v1.source_tasks) == 6 and len(v1.heldout_tasks) == 4 and set(v1.tasks) == set(V1_TASKS)
    for name in SHIPPED:
        load_study_config(name).validate()
    # a variant of the study reuses its original-space runs: the same folder and training settings
    fitted = load_study_config("full_suite_fit")
    assert fitted.runs_dir == full.runs_dir and fitted.train == full.train and fitted.fit.steps > 0
    assert (fitted.tasks, fitted.methods, fitted.optimise) == (full.tasks, full.methods, full.optimise)
    random_dirs = load_study_config("full_suite_fit_random")
    assert random_dirs.fit == dataclasses.replace(fitted.fit, gradient_directions=False)
    assert random_dirs.runs_dir == full.runs_dir and random_dirs.out != fitted.out


def test_bad_configs_give_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both source and held-out"):
        StudyConfig(source_tasks=["a"], heldout_tasks=["a"]).validate()
    with pytest.raises(ValueError, match="at least 2 DETs"):
        StudyConfig(methods=["lora"]).validate()
    with pytest.raises(FileNotFoundError, match="not found"):
        load_study_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("nmae: x\n")
    with pytest.raises(ValueError, match="unknown study option"):
        load_study_config(bad)
    with pytest.raises(ValueError, match="mixed_precision must be no or bf16"):
        StudyConfig(mixed_precision="fp16").validate()
    with pytest.raises(ValueError, match="set mixed_precision at the study level"):
        StudyConfig(train={"mixed_precision": "bf16"}).validate()


def test_leave_one_out_never_fits_on_the_task_it_solves(tiny_study: StudyConfig) -> None:
    config = dataclasses.replace(
        tiny_study,
        heldout_mode="leave_one_out",
        methods=["lora", "coeff"],
        method_overrides={k: v for k, v in tiny_study.method_overrides.items() if k != "full"},
        controls=["random"],
        optimise={"steps": 2, "lr": 5e-2, "eval_every": 1, "optimizer": "adamw", "progress": False},
        fit={"dim": 2, "steps": 0, "progress": False},
    )
    assert config.stage2_tasks == config.tasks  # every task is held out in turn
    run_study(config, stages=("sweep", "fit", "optimise", "report"))
    out = Path(config.out)
    for task in config.tasks:
        name = Path(task).stem
        fit = json.loads((out / "subspace-loo" / name / "fit.json").read_text())
        assert task not in fit["source_tasks"] and len(fit["source_tasks"]) == len(config.tasks) - 1
        record = Stage2Record.from_dict(json.loads((out / "stage2" / f"{name}.json").read_text()))
        assert record.heldout and name not in record.source_tasks
    assert "leave-one-out" in (out / "report.md").read_text()


def _epoch_order(batches) -> list[tuple[int, ...]]:
    """One epoch's training examples (their unpadded token ids), in the order they come."""
    return [
        tuple(ids[mask.bool()].tolist())
        for b in batches.train_batches()
        for ids, mask in zip(b["input_ids"], b["attention_mask"], strict=True)
    ]


def test_evaluation_batches_hold_examples_of_similar_length(tiny_study: StudyConfig) -> None:
    from deltaspace.study.pipeline import StudyContext

    folder = Path(tiny_study.out).parent
    varied = [  # texts of 2 to 8 words, so padding matters
        _task_csv(folder / f"varied{i}.csv", ["negative", "positive"], 10 + i, fillers=(1, 7))
        for i in range(3)
    ]
    config = dataclasses.replace(tiny_study, source_tasks=varied[:2], heldout_tasks=varied[2:])
    run_study(config, stages=("sweep",))
    context = StudyContext(config)
    for name, batches in context.batches.items():
        for split in (batches.eval_batches, batches.report_batches):
            lengths = torch.cat([batch["attention_mask"].sum(-1) for batch in split]).tolist()
            assert lengths == sorted(lengths), name  # so each batch pads to little more than its own texts
        train_lengths = torch.cat([b["attention_mask"].sum(-1) for b in batches.train_batches()]).tolist()
        assert (
            train_lengths != sorted(train_lengths) or len(set(train_lengths)) == 1
        )  # training stays shuffled

        with seeded(0):
            first, second = _epoch_order(batches), _epoch_order(batches)
        with seeded(0):  # the order follows from the seed (so a resumed fit replays it)
            assert _epoch_order(batches) == first
        assert first != second and sorted(first) == sorted(second)  # a new order of the same examples


def test_single_task_setting_runs_one_study_per_source_and_reports_tables_1_and_2(
    tiny_study: StudyConfig,
) -> None:
    from deltaspace.study.single_task import SingleTaskConfig, run_single_task

    sentiment, topic = tiny_study.source_tasks
    folder = Path(tiny_study.out).parent
    topic2 = _task_csv(folder / "topic2.csv", ["sport", "business"], 3)
    shared = {
        key: getattr(tiny_study, key)
        for key in ("model", "train", "fit_train_examples", "eval_examples", "test_examples", "batch_size")
    }
    config = SingleTaskConfig.from_dict(
        {
            "name": "tiny-single",
            "out": str(folder / "single"),
            "pairs": {sentiment: [tiny_study.heldout_tasks[0]], topic: [topic2]},
            "study": {
                **shared,
                "methods": ["adapter", "lora", "prefix"],
                "method_overrides": {"lora": {"lr": 5e-3}, "adapter": {"lr": 5e-3}, "prefix": {"lr": 5e-3}},
                "fit": {"dim": 4, "steps": 0, "gradient_directions": True, "gradient_per_batch": True,
                        "gradient_batches": 3, "progress": False},
                "optimise": {"steps": 4, "lr": 5e-2, "eval_every": 2, "optimizer": "adamw", "progress": False},
                "controls": ["random"],
            },
        }
    )  # fmt: skip
    report = run_single_task(config)
    out = Path(config.out)
    for source, target in ((sentiment, "sentiment2"), (topic, "topic2")):
        fit = json.loads((out / Path(source).stem / "subspace" / "fit.json").read_text())
        # one source task: one solution direction, the source's descent directions fill the other d - 1
        assert fit["source_tasks"] == [source] and fit["closed_form"]["basis_dim"] == 1
        record = Stage2Record.from_dict(
            json.loads((out / Path(source).stem / "stage2" / f"{target}.json").read_text())
        )
        assert record.heldout and record.source_tasks == [Path(source).stem]
        assert all(len(run.z) == 4 for run in record.runs["learned"].values())
    # the pairs share one folder of original-space runs
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["sentiment", "sentiment2", "topic", "topic2"]
    text = report.read_text()
    for heading in (
        "Table 1",
        "Table 2",
        "The targets' references",
        "Original space: each DET trained alone",
    ):
        assert heading in text
    for direction in ("A→L", "A→P", "L→A", "L→P", "P→A", "P→L"):
        assert direction in text
    assert "paper, Table 1 average | 88.5 | 80.9 | 85.3 | 84.9 |" in text
    assert "paper, Table 2 average | 81.7 | 80.2 | 85.0 | 81.0 | 85.3 | 82.6 | 82.6 |" in text
    assert "sentiment → sentiment2" in text and "topic → topic2" in text
    # every task's runs beside majority and the same-budget probe (computed, not left blank)
    baselines = json.loads((out / "baselines.json").read_text())
    assert set(baselines) == {"sentiment", "sentiment2", "topic", "topic2"}
    assert all(0 <= b["probe"]["test"]["accuracy"] <= 1 for b in baselines.values())
    assert "| sentiment2 (target) | " in text and "Runs above the probe: " in text

    # a variant with the joint fit trained reuses these runs (no training: its out holds no runs folder);
    # its report says how each pair's fit ran and where source validation was best
    study = config.study
    variant = SingleTaskConfig.from_dict(
        {
            "name": "tiny-single-fit",
            "out": str(folder / "single-fit"),
            "runs": str(out / "runs"),
            "pairs": config.pairs,
            "study": {**study, "fit": {**study["fit"], "steps": 6, "eval_every": 2, "patience": 1,
                                       "metric": "loss", "eval_centroid_only": True}},
        }
    )  # fmt: skip
    text = run_single_task(variant).read_text()
    assert not (folder / "single-fit" / "runs").exists()
    for source in (sentiment, topic):
        fit = json.loads((folder / "single-fit" / Path(source).stem / "subspace" / "fit.json").read_text())
        steps = [check["step"] for check in fit["validation"]]
        assert steps[0] == 0 and fit["steps_run"] == steps[-1] <= 6
        assert fit["best_step"] in steps and all(check["loss"] > 0 for check in fit["validation"])
        assert fit["stopped_early"] == (fit["steps_run"] < 6)
    assert "## Stage 1: the joint fit" in text and "for at most 6 steps" in text
    pair = (folder / "single-fit" / Path(sentiment).stem / "report.md").read_text()
    assert "at most 6 joint-fit steps (" in pair and ", best at " in pair
    assert "Runs above the probe: " in text and "| sentiment2 (target) | " in text
    # d = 4 from one source: 1 shared solution coordinate, so the codes' shared part is decoded too
    assert "| shared coordinates only |" in text

    with pytest.raises(ValueError, match="set per pair"):
        SingleTaskConfig.from_dict({"pairs": {sentiment: [topic2]}, "study": {"source_tasks": [topic]}})
    with pytest.raises(ValueError, match="other than"):
        SingleTaskConfig.from_dict({"pairs": {sentiment: [sentiment]}, "study": shared})


def test_a_bf16_study_trains_and_optimises_under_autocast(tiny_study: StudyConfig) -> None:
    config = dataclasses.replace(tiny_study, mixed_precision="bf16", methods=["lora", "coeff"], controls=[],
                                 method_overrides={k: v for k, v in tiny_study.method_overrides.items()
                                                   if k in ("lora", "coeff")})  # fmt: skip
    report = run_study(config, stages=("sweep", "fit", "optimise", "report"))
    out = Path(config.out)
    run_config = json.loads((out / "runs" / "sentiment" / "lora" / "seed0" / "config.json").read_text())
    assert run_config["mixed_precision"] == "bf16"  # the originals trained under autocast too
    record = Stage2Record.from_dict(json.loads((out / "stage2" / "sentiment2.json").read_text()))
    assert set(record.runs["learned"]) == {"lora", "coeff"}
    assert "every stage under **bfloat16 autocast**" in report.read_text()


def test_shared_code_asked_for_later_joins_the_finished_records(tiny_study: StudyConfig) -> None:
    run_study(tiny_study)
    out = Path(tiny_study.out)
    paths = [out / "stage2" / f"{Path(task).stem}.json" for task in tiny_study.stage2_tasks]
    before = [json.loads(p.read_text()) for p in paths]
    assert all(data["shared"] is None for data in before)
    assert "one code for all" not in (out / "report.md").read_text()
    report = run_study(dataclasses.replace(tiny_study, shared_code=True), stages=("optimise", "report"))
    for path, old in zip(paths, before, strict=True):
        record = json.loads(path.read_text())
        assert set(record["shared"]["predictions"]) == set(tiny_study.methods)
        assert record["runs"] == old["runs"] and record["transfer"] == old["transfer"]  # the rest untouched
        assert "shared_code" in record["seconds"]
    assert not list((out / "stage2" / "parts").glob("*.json"))
    assert "| one code for all |" in report.read_text()


def test_fit_from_continues_another_studys_fit(tiny_study: StudyConfig, tmp_path: Path) -> None:
    from deltaspace.subspace import SubspaceBundle

    def fitted(name: str, steps: int, **fields: Any) -> SubspaceBundle:
        config = dataclasses.replace(
            tiny_study,
            out=str(tmp_path / name),
            runs=str(tmp_path / "runs"),  # one sweep for every study here
            fit={**dataclasses.asdict(tiny_study.fit), "steps": steps},
            **fields,
        )
        run_study(config, stages=("sweep", "fit"))
        return SubspaceBundle.load(Path(config.out) / "subspace")

    whole = fitted("whole", 12)
    fitted("short", 6)
    with pytest.raises(UserInputError, match="holds no fit checkpoint"):
        fitted("orphan", 12, fit_from=str(tmp_path / "none"))
    extended = fitted("extended", 12, fit_from=str(tmp_path / "short"))
    # the continued fit ends where the uninterrupted 12-step fit did
    for name in whole.members:
        for key, value in whole.up(name).state_dict().items():
            assert torch.equal(value, extended.up(name).state_dict()[key]), (name, key)
        for task in whole.tasks():
            assert torch.equal(whole.code(name, task), extended.code(name, task))
    assert extended.metadata["steps_run"] == 12
    log = (tmp_path / "extended" / "subspace" / "fit_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == list(range(1, 13))


def test_a_hull_study_keeps_every_code_a_mixture_of_theta0_and_the_source_codes(
    tiny_study: StudyConfig,
) -> None:
    from deltaspace.subspace.bundle import read_codes
    from deltaspace.subspace.code_geometry import code_geometry

    with pytest.raises(UserInputError, match="shared_code trains one free code"):
        dataclasses.replace(tiny_study, shared_code=True, optimise={"region": "hull"}).validate()
    optimise = {**dataclasses.asdict(tiny_study.optimise), "region": "hull"}
    hull = dataclasses.replace(tiny_study, optimise=optimise, controls=[])
    report = run_study(hull, stages=("sweep", "fit", "optimise", "report"))
    out = Path(hull.out)
    codes = read_codes(out / "subspace")
    record = Stage2Record.from_dict(json.loads((out / "stage2" / "sentiment2.json").read_text()))
    for det, run in record.runs["learned"].items():
        place = code_geometry(run.z, [z.tolist() for z in codes[det].values()])
        assert place.negative_weight < 1e-4 and place.weight_sum <= 1 + 1e-4, det
    assert len(record.transfer["metrics"]) == 3
    rows = [line for line in report.read_text().splitlines() if line.startswith("| **all DETs** |")]
    assert rows and rows[-1].split("|")[-2].strip() == "0.00"  # no negative weight on the source codes


def test_the_agreement_term_runs_on_real_members_and_leaves_the_source_solutions(
    tiny_study: StudyConfig,
) -> None:
    fit = {**dataclasses.asdict(tiny_study.fit), "dim": 4, "steps": 6, "gradient_directions": True}
    fit |= {
        "agreement_weight": 1.0,
        "agreement_scale": 0.5,
        "agreement_space": "embedding",
        "members_per_step": 2,
    }
    config = dataclasses.replace(tiny_study, fit=fit)
    run_study(config, stages=("sweep", "fit"))
    out = Path(config.out) / "subspace"
    steps = [json.loads(line) for line in (out / "fit_log.jsonl").read_text().splitlines()]
    agree = [value for step in steps for value in step.get("agree", {}).values()]
    # full fine-tuning's decoder is fixed (structured projection): it only ever teaches
    assert len(agree) == 6 and all(0 <= value < 100 for value in agree)
    assert all("full" not in step.get("agree", {}) for step in steps)
    summary = json.loads((out / "fit.json").read_text())
    assert max(e for by_task in summary["reconstruction_error"].values() for e in by_task.values()) < 0.1
