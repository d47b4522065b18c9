"""A battery of bad inputs to the command line.

Every case must: exit non-zero, print exactly one line (``error: ...``) naming the problem, show no
traceback, leave no run folder behind and leave every pre-existing file untouched (the whole workspace is
fingerprinted before and after each case). Runs in-process through typer's CliRunner; only the case
whose error needs the loaded model gets as far as loading one.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import deltaspace.cli.study
import deltaspace.cli.train  # noqa: F401  (registers the commands)
from deltaspace.cli.app import app

GOOD, BAD = ["good", "great", "fine"], ["bad", "awful", "poor"]
FILLER = ["the", "a", "movie", "film", "was", "is", "plot"]


def _rows(n: int) -> list[dict]:
    rng, seen, rows = random.Random(0), set(), []
    while len(rows) < n:
        label = len(rows) % 2
        words = rng.sample(FILLER, 4)
        words.insert(rng.randrange(5), rng.choice(GOOD if label else BAD))
        text = " ".join(words)
        if text not in seen:
            seen.add(text)
            rows.append({"text": text, "label": "positive" if label else "negative"})
    return rows


def _csv(rows: list[dict], header: str = "text,label") -> str:
    return header + "\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, cli_model_dir) -> Path:
    """Data files good and bad, configs, a finished run, a folder of someone's notes, an empty model."""
    ws = tmp_path_factory.mktemp("workspace")
    rows = _rows(40)
    (ws / "good.csv").write_text(_csv(rows))
    (ws / "good.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (ws / "empty.csv").write_text("")
    (ws / "header.csv").write_text("text,label\n")
    (ws / "binary.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 20)
    (ws / "latin1.csv").write_bytes(_csv(rows).encode() + "caf\xe9 good,positive\n".encode("latin-1"))
    lines = [json.dumps(r) for r in rows]
    lines[2] = '{"text": "good film", "label": '
    (ws / "bad.jsonl").write_text("\n".join(lines) + "\n")
    (ws / "array.jsonl").write_text('["good film", "positive"]\n' * 12)
    (ws / "nolabel.csv").write_text("text,stars\n" + "".join(f"{r['text']},5\n" for r in rows))
    (ws / "blank_text.csv").write_text("text,label\n" + ",positive\n,negative\n" * 10)
    (ws / "oneclass.csv").write_text(_csv([{**r, "label": "positive"} for r in rows]))
    (ws / "few.csv").write_text(_csv(rows[:5]))
    (ws / "data.txt").write_text(_csv(rows))
    (ws / "broken.json").write_text('{"task": "x",\n "lr": }\n')
    (ws / "unknown_field.json").write_text(json.dumps({"task": str(ws / "good.csv"), "learning_rate": 1}))
    (ws / "bad.yaml").write_text("tasks: [a, b\nmethods: [lora]\n")
    (ws / "methods_string.yaml").write_text(f"out: {ws}/s1\ntasks: [{ws}/good.csv]\nmethods: lora\n")
    (ws / "unknown_key.yaml").write_text(f"out: {ws}/s2\ntasks: [{ws}/good.csv]\nmethods: [lora]\nfitt: 1\n")
    (ws / "train_list.yaml").write_text(
        f"out: {ws}/s3\ntasks: [{ws}/good.csv]\nmethods: [lora]\ntrain: [1]\n"
    )
    (ws / "notes").mkdir()
    (ws / "notes" / "thesis.tex").write_text("keep me")
    (ws / "fake_run" / "delta").mkdir(parents=True)
    (ws / "fake_run" / "config.json").write_text("{}")
    (ws / "fake_run" / "delta" / "README").write_text("notes")
    (ws / "a_file").write_text("not a directory")
    (ws / "empty_model").mkdir()
    (ws / "outs").mkdir()
    runner = CliRunner()
    finished = ws / "finished"
    args = ["train", "--task", str(ws / "good.csv"), "--model", str(cli_model_dir), "--method", "lora"]
    args += ["--max-steps", "1", "--cpu", "--batch-size", "8", "--out", str(finished)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    shutil.copytree(finished, ws / "damaged")
    (ws / "damaged" / "delta" / "delta_model.safetensors").write_bytes(b"junk")
    return ws


# (id, arguments with {ws} / {model} / {out} placeholders, exit code, text the one line must contain)
T = ["train", "--model", "{model}", "--cpu", "--max-steps", "1", "--out", "{out}"]
GOOD_TASK = ["--task", "{ws}/good.csv"]
CASES = [
    ("task-missing-file", [*T, "--task", "{ws}/nope.csv"], 1, "does not exist"),
    ("task-unknown-name", [*T, "--task", "rt_sentimnt"], 1, "unknown task 'rt_sentimnt'"),
    ("task-empty-csv", [*T, "--task", "{ws}/empty.csv"], 1, "empty.csv is empty"),
    ("task-header-only", [*T, "--task", "{ws}/header.csv"], 1, "has no examples"),
    ("task-binary", [*T, "--task", "{ws}/binary.csv"], 1, "is binary"),
    ("task-not-utf8", [*T, "--task", "{ws}/latin1.csv"], 1, "not UTF-8"),
    ("task-malformed-jsonl", [*T, "--task", "{ws}/bad.jsonl"], 1, "bad.jsonl line 3: not valid JSON"),
    ("task-jsonl-not-objects", [*T, "--task", "{ws}/array.jsonl"], 1, "line 1: expected a JSON object"),
    ("task-no-label-column", [*T, "--task", "{ws}/nolabel.csv"], 1, "no label column"),
    ("task-missing-column", [*T, "--task", "{ws}/good.csv?text=review"], 1, "text column 'review'"),
    ("task-unknown-option", [*T, "--task", "{ws}/good.csv?txt=a"], 1, "unknown option 'txt'"),
    ("task-blank-texts", [*T, "--task", "{ws}/blank_text.csv"], 1, "no usable examples"),
    ("task-one-class", [*T, "--task", "{ws}/oneclass.csv"], 1, "single class"),
    ("task-too-few", [*T, "--task", "{ws}/few.csv"], 1, "at least 10"),
    ("task-bad-suffix", [*T, "--task", "{ws}/data.txt"], 1, "expected a .csv"),
    ("method-typo", [*T, *GOOD_TASK, "--method", "lorra"], 1, "unknown delta method(s) ['lorra']"),
    ("method-twice", [*T, *GOOD_TASK, "--method", "lora+lora"], 1, "names a method twice"),
    ("option-type", [*T, *GOOD_TASK, "--method", "lora", "-O", "r=abc"], 1, "r must be an integer"),
    ("option-range", [*T, *GOOD_TASK, "--method", "lora", "-O", "r=0"], 1, "must be >= 1"),
    ("option-unknown", [*T, *GOOD_TASK, "--method", "lora", "-O", "rr=4"], 1, "matches no option"),
    ("option-other-method", [*T, *GOOD_TASK, "--method", "coeff", "-O", "lora.r=4"], 1, "not in 'coeff'"),
    ("option-dropout", [*T, *GOOD_TASK, "--method", "lora", "-O", "lora_dropout=1.5"], 1, "[0, 1)"),
    (  # only the loaded model can tell: the folder must still not be created
        "option-target-missing",
        [*T, *GOOD_TASK, "--method", "lora", "-O", "target_modules=[nope]"],
        1,
        "matches no module of PrototypeClassifier",
    ),
    ("task-directory", [*T, "--task", "{ws}/notes"], 1, "is not a dataset saved with datasets"),
    ("option-syntax", [*T, *GOOD_TASK, "--method", "lora", "-O", "r8"], 2, "takes key=value"),
    ("lr-negative", [*T, *GOOD_TASK, "--lr", "-1"], 1, "lr must be a positive number"),
    ("lr-not-number", [*T, *GOOD_TASK, "--lr", "abc"], 2, "Invalid value for '--lr'"),
    ("batch-size-zero", [*T, *GOOD_TASK, "--batch-size", "0"], 1, "batch_size must be an integer >= 1"),
    ("head-unknown", [*T, *GOOD_TASK, "--head", "mlp"], 1, "head must be one of"),
    ("schedule-unknown", [*T, *GOOD_TASK, "--schedule", "warm"], 1, "schedule must be one of"),
    ("warmup-range", [*T, *GOOD_TASK, "--warmup-ratio", "1.5"], 1, "warmup_ratio must be in [0, 1)"),
    ("checkpoint-minutes", [*T, *GOOD_TASK, "--checkpoint-minutes", "0"], 1, "checkpoint_minutes"),
    ("mixed-precision-cpu", [*T, *GOOD_TASK, "--mixed-precision", "fp16"], 1, "needs a GPU"),
    ("model-empty-dir", [*T, *GOOD_TASK, "--model", "{ws}/empty_model"], 1, "empty_model' is empty"),
    ("model-missing-dir", [*T, *GOOD_TASK, "--model", "./no/such/model"], 1, "does not exist"),
    ("config-missing", [*T, "--config", "{ws}/nope.json"], 1, "not found"),
    ("config-broken", [*T, "--config", "{ws}/broken.json"], 1, "not valid JSON (line 2"),
    ("config-unknown-field", [*T, "--config", "{ws}/unknown_field.json"], 1, "unknown train config field"),
    ("no-task", ["train", "--method", "lora", "--out", "{out}"], 1, "--task is required"),
    ("max-steps-not-int", [*T, *GOOD_TASK, "--max-steps", "x"], 2, "Invalid value for '--max-steps'"),
    ("unknown-command", ["trian", "--task", "x"], 2, "No such command 'trian'"),
    ("debug-after-command", ["train", "--debug"], 2, "--debug goes before the command"),
    ("out-finished-run", [*T, *GOOD_TASK, "--out", "{ws}/finished"], 1, "holds a finished run"),
    ("out-foreign-folder", [*T, *GOOD_TASK, "--out", "{ws}/notes"], 1, "(thesis.tex)"),
    ("out-fake-run", [*T, *GOOD_TASK, "--method", "lora", "--out", "{ws}/fake_run"], 1, "delta/README"),
    ("out-is-a-file", [*T, *GOOD_TASK, "--out", "{ws}/a_file"], 1, "is a file"),
    (
        "overwrite-typo",  # the case: the finished run must survive a failed --overwrite
        [*T, *GOOD_TASK, "--method", "lorra", "--overwrite", "--out", "{ws}/finished"],
        1,
        "unknown delta method",
    ),
    ("sweep-yaml-syntax", ["sweep", "--config", "{ws}/bad.yaml"], 1, "not valid YAML (line 2"),
    ("sweep-methods-string", ["sweep", "--config", "{ws}/methods_string.yaml"], 1, "methods must be a"),
    ("sweep-unknown-key", ["sweep", "--config", "{ws}/unknown_key.yaml"], 1, "unknown key(s) ['fitt']"),
    ("sweep-train-not-mapping", ["sweep", "--config", "{ws}/train_list.yaml"], 1, "train must be a mapping"),
    ("sweep-config-missing", ["sweep", "--config", "{ws}/nope.yaml"], 1, "not found"),
    ("sweep-method-typo", ["sweep", *GOOD_TASK, "--method", "lorra", "--out", "{out}"], 1, "lorra"),
    (
        "sweep-bad-task-file",
        ["sweep", "--task", "{ws}/header.csv", "--method", "lora", "--out", "{out}"],
        1,
        "no examples",
    ),
    ("sweep-no-out", ["sweep", *GOOD_TASK, "--method", "lora"], 1, "give --out"),
    (
        "sweep-shard",
        ["sweep", *GOOD_TASK, "--method", "lora", "--out", "{out}", "--shard", "2/2"],
        1,
        "numbered from 0",
    ),
    (
        "sweep-seed",
        ["sweep", *GOOD_TASK, "--method", "lora", "--out", "{out}", "--seed", "a"],
        1,
        "takes integers",
    ),
    (
        "sweep-set-unknown",
        ["sweep", *GOOD_TASK, "--method", "lora", "--out", "{out}", "--set", "lrr=1"],
        1,
        "unknown train config field",
    ),
    (
        "sweep-empty-model",
        ["sweep", *GOOD_TASK, "--method", "lora", "--out", "{out}", "--model", "{ws}/empty_model"],
        1,
        "is empty",
    ),
    (
        "sweep-option-type",
        ["sweep", *GOOD_TASK, "--method", "lora", "--out", "{out}", "--set", "method_options={{r: x}}"],
        1,
        "must be an integer",
    ),
    ("eval-damaged-delta", ["eval", "{ws}/damaged"], 1, "cannot be loaded"),
    ("eval-missing", ["eval", "{ws}/no_run"], 1, "not a run directory"),
    ("eval-foreign", ["eval", "{ws}/notes"], 1, "not a run directory"),
    ("eval-split", ["eval", "{ws}/finished", "--split", "dev"], 1, "unknown split 'dev'"),
    ("study-missing-config", ["study", "{ws}/nope.yaml", "--no-fetch"], 1, "not found"),
    (
        "study-precision",
        ["study", "--mixed-precision", "fp16", "--no-fetch", "--out", "{out}"],
        1,
        "mixed_precision must be no or bf16",
    ),
    ("study-workers", ["study", "--workers", "0", "--no-fetch", "--out", "{out}"], 1, "workers must be >= 1"),
]


def _fingerprint(root: Path) -> dict[str, tuple]:
    return {
        str(path.relative_to(root)): (
            path.is_dir(),
            path.stat().st_mtime_ns,
            None if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest(),
        )
        for path in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize(("args", "code", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_fails_cleanly(workspace, cli_model_dir, args, code, expected):
    out = workspace / "outs" / "run"
    args = [a.format(ws=workspace, model=cli_model_dir, out=out) for a in args]
    before = _fingerprint(workspace)
    result = CliRunner().invoke(app, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not an uncaught error
    assert "Traceback" not in result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert expected in lines[0]
    assert _fingerprint(workspace) == before  # nothing created (no run folder), nothing touched


def test_battery_is_large_enough():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


def test_debug_shows_the_traceback(workspace, monkeypatch):
    args = ["train", "--task", str(workspace / "nope.csv"), "--out", str(workspace / "outs" / "d")]
    result = CliRunner().invoke(app, ["--debug", *args])
    assert result.exit_code == 1 and isinstance(result.exception, FileNotFoundError)
    monkeypatch.setenv("DELTASPACE_DEBUG", "1")
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, FileNotFoundError)


def test_unexpected_errors_keep_their_traceback(workspace, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("deltaspace.train.loop.train", broken)
    args = ["train", "--task", str(workspace / "good.csv"), "--out", str(workspace / "outs" / "u")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)
