"""The Accelerate training loop on a tiny random BERT and a synthetic task."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from deltaspace.deltas.presets import resolve_method
from deltaspace.io import read_jsonl
from deltaspace.model import get_delta_model
from deltaspace.train import TrainConfig, build_classifier, evaluate_model, evaluate_run, load_result, train
from deltaspace.train.data import make_loader, tokenize_split
from deltaspace.train.loop import param_groups


def _config(model_dir, out, **changes) -> TrainConfig:
    fields = dict(
        task="tiny",
        model=str(model_dir),
        method="lora",
        lr=5e-2,
        batch_size=16,
        epochs=4,
        log_every=1,
        output_dir=str(out),
        cpu=True,
    )
    return TrainConfig(**{**fields, **changes})


def _prebuilt(config: TrainConfig, task):
    classifier, tokenizer = build_classifier(config.model, task, config.head, config.seed)
    delta_model = get_delta_model(
        classifier, *resolve_method(config.method, classifier, **config.method_options), seed=config.seed
    )
    return delta_model, tokenizer


def _train_loss(delta_model, tokenizer, task) -> float:
    loader = make_loader(
        tokenize_split(task.train, tokenizer, is_pair=task.is_pair, max_length=task.max_length),
        tokenizer,
        batch_size=64,
        shuffle=False,
    )
    return evaluate_model(delta_model, loader, task.num_labels)["loss"]


def test_delta_trains_base_stays_bit_identical(tiny_model_dir, tiny_task, tmp_path):
    config = _config(tiny_model_dir, tmp_path / "run")
    delta_model, tokenizer = _prebuilt(config, tiny_task)
    trainable = set(delta_model.trainable_parameter_names())
    base_before = {
        name: p.detach().clone()
        for name, p in delta_model.base_model.named_parameters()
        if name not in trainable
    }
    theta0 = delta_model.solution()
    loss_before = _train_loss(delta_model, tokenizer, tiny_task)

    result = train(config, task=tiny_task, prebuilt=(delta_model, tokenizer))

    loss_after = _train_loss(delta_model, tokenizer, tiny_task)
    assert loss_after < loss_before - 0.05, (loss_before, loss_after)
    base_after = dict(delta_model.base_model.named_parameters())
    assert all(torch.equal(base_after[name], tensor) for name, tensor in base_before.items())
    # The encoder on disk is still what the frozen base holds (the prototypes came from it as well).
    on_disk = load_file(str(tiny_model_dir / "model.safetensors"))
    for name, tensor in on_disk.items():
        key = f"encoder.{name}"
        if key in base_after:
            assert torch.equal(base_after[key], tensor), key
    solution = delta_model.solution()
    assert solution.keys() == theta0.keys() and all(name.startswith("encoder.") for name in solution)
    assert all(not torch.equal(solution[name], theta0[name]) for name in solution)
    assert result.trainable_params == delta_model.num_trainable_parameters() > 0
    assert result.total_params > result.trainable_params
    assert 1 <= result.best_step <= result.steps == 16


def test_lr_overrides_give_coeff_its_own_learning_rate(tiny_model_dir, tiny_task, tmp_path):
    config = _config(tiny_model_dir, tmp_path / "run", method="coeff+lora", lr=1e-3, weight_decay=0.1)
    delta_model, _ = _prebuilt(config, tiny_task)
    groups = param_groups(delta_model, 1e-3, 0.1, {"ds_coeff": 2e-2})
    by_lr = {}
    for group in groups:
        by_lr.setdefault(group["lr"], set()).update(id(p) for p in group["params"])
    named = {id(p): name for name, p in delta_model.named_parameters() if p.requires_grad}
    assert {named[i] for i in by_lr[2e-2]} == {n for n in named.values() if "ds_coeff" in n} != set()
    assert all("ds_coeff" not in named[i] for i in by_lr[1e-3])
    assert all(g["weight_decay"] == (0.1 if g["params"][0].ndim >= 2 else 0.0) for g in groups)
    with pytest.raises(ValueError, match=r"lr_overrides \['no_such'\] match no trainable parameter"):
        param_groups(delta_model, 1e-3, 0.0, {"no_such": 1e-2})

    # In training, the override moves ΔC further than the base lr does in the same steps.
    def coeff_shift(**changes) -> float:
        run = _config(tiny_model_dir, tmp_path / str(len(changes)), method="coeff+lora", lr=1e-3, max_steps=3)
        model, tokenizer = _prebuilt(run, tiny_task)
        train(run.replace(**changes), task=tiny_task, prebuilt=(model, tokenizer))
        return sum(float(v.abs().sum()) for k, v in model.solution().items() if "ds_coeff" in k)

    assert coeff_shift(lr_overrides={"ds_coeff": 3e-2}) > 5 * coeff_shift()


def test_run_directory_and_result_written_last(tiny_model_dir, tiny_task, tmp_path):
    run_dir = tmp_path / "run"
    result = train(_config(tiny_model_dir, run_dir, epochs=2, eval_every=3), task=tiny_task)

    names = {path.relative_to(run_dir).as_posix() for path in run_dir.rglob("*") if path.is_file()}
    assert {"config.json", "metrics.jsonl", "result.json", "delta/delta_config.json"} <= names
    assert any(name.startswith("tb/") and "tfevents" in name for name in names)
    assert not any(name.endswith(".tmp") for name in names)
    result_time = os.stat(run_dir / "result.json").st_mtime_ns
    assert all(os.stat(run_dir / name).st_mtime_ns <= result_time for name in names)

    saved = json.loads((run_dir / "result.json").read_text())
    assert saved["seed"] == 0 and saved["task"] == "tiny" and saved["method"] == "lora"
    for key in ("trainable_params", "total_params", "best_step", "train_time_s", "peak_rss_mb"):
        assert saved[key] is not None and saved[key] > 0
    assert set(saved["validation"]) == set(saved["test"]) == {"accuracy", "macro_f1", "loss"}
    assert load_result(run_dir).validation == result.validation
    # The final validation metrics are those of the best checkpoint seen during training.
    assert result.validation == pytest.approx(result.best_validation_during_training)

    records = read_jsonl(run_dir / "metrics.jsonl")
    evals = [r for r in records if r.get("split") == "validation"]
    assert [r["step"] for r in evals] == [3, 6, 8]  # every 3 steps, plus the last step
    assert [r["step"] for r in records if "lr" in r] == list(range(1, 9))
    assert max(evals, key=lambda r: r["accuracy"])["step"] == result.best_step

    config = json.loads((run_dir / "config.json").read_text())
    assert config["max_length"] == tiny_task.max_length  # resolved from the task
    # A fresh base + the saved delta reproduce the recorded metrics exactly.
    for split in ("validation", "test"):
        assert evaluate_run(run_dir, split, task=tiny_task) == pytest.approx(getattr(result, split), abs=1e-6)


def test_linear_head_is_seeded_trained_and_saved(tiny_model_dir, tiny_task, tmp_path):
    config = _config(tiny_model_dir, tmp_path / "run", method="bitfit", head="linear", max_steps=4)
    delta_model, tokenizer = _prebuilt(config, tiny_task)
    again, _ = _prebuilt(config, tiny_task)
    assert all(
        torch.equal(a, b)
        for a, b in zip(delta_model.solution().values(), again.solution().values(), strict=True)
    )
    head = [name for name in delta_model.trainable_parameter_names() if name.startswith("classifier.")]
    assert head, "the linear head must be trained with the delta"

    result = train(config, task=tiny_task, prebuilt=(delta_model, tokenizer))
    assert result.trainable_params == delta_model.num_trainable_parameters()
    assert evaluate_run(tmp_path / "run", "test", task=tiny_task) == pytest.approx(result.test, abs=1e-6)


def test_same_seed_same_run_other_seed_other_init(tiny_model_dir, tiny_task, tmp_path):
    def run(name, seed):
        config = _config(tiny_model_dir, tmp_path / name, seed=seed, max_steps=3, method="coeff+lora")
        delta_model, tokenizer = _prebuilt(config, tiny_task)
        theta0 = delta_model.solution()
        train(config, task=tiny_task, prebuilt=(delta_model, tokenizer))
        return theta0, delta_model.solution()

    init_a, final_a = run("a", 0)
    init_b, final_b = run("b", 0)
    init_c, _ = run("c", 1)
    assert all(torch.equal(final_a[name], final_b[name]) for name in final_a)
    assert all(torch.equal(init_a[name], init_b[name]) for name in init_a)
    assert any(not torch.equal(init_a[name], init_c[name]) for name in init_a)


def test_early_stopping_and_grad_accumulation(tiny_model_dir, tiny_task, tmp_path):
    # A learning rate too small to change any prediction: accuracy never improves after the first evaluation.
    config = _config(
        tiny_model_dir,
        tmp_path / "run",
        lr=1e-9,
        eval_every=1,
        early_stopping_patience=2,
        grad_accum=2,
        epochs=10,
    )
    result = train(config, task=tiny_task)
    assert result.stopped_early
    assert result.best_step == 1 and result.steps == 3
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records if r.get("split") == "validation"] == [1, 2, 3]
    # 64 examples / batch 16 = 4 batches per epoch = 2 optimizer steps with grad_accum 2.
    assert result.epochs == pytest.approx(1.5)


def test_patience_counts_only_evaluations_where_neither_metric_nor_loss_improved():
    from deltaspace.best import BestCheckpoint
    from deltaspace.train.loop import LoopState

    state = LoopState(best=BestCheckpoint(), running_loss=torch.zeros(()))
    # (accuracy, loss) per evaluation: accuracy flat after the first, the loss still falling until the 4th.
    # A fall below 0.1 % (0.8 -> 0.7995) is noise, not progress.
    evaluations = [(0.5, 1.0), (0.5, 0.9), (0.5, 0.8), (0.5, 0.85), (0.5, 0.7995), (0.5, 0.79)]
    stale = []
    for step, (accuracy, loss) in enumerate(evaluations, 1):
        improved = state.best.offer(step, accuracy, dict)
        state.count_patience(improved, loss, patience=2)
        stale.append((state.stale_evals, state.stopped_early))
    assert stale == [(0, False), (0, False), (0, False), (1, False), (2, True), (0, False)]


def test_pair_task_is_encoded_as_a_pair(tiny_model_dir, make_tiny_task, tmp_path):
    task = make_tiny_task(pair=True)
    _, tokenizer = build_classifier(str(tiny_model_dir), task)
    encoded = tokenize_split(task.train, tokenizer, is_pair=True, max_length=16)
    assert set(encoded.column_names) >= {"input_ids", "attention_mask", "labels"}
    assert all(1 in row for row in encoded["token_type_ids"])  # the second segment is there
    result = train(_config(tiny_model_dir, tmp_path / "run", max_steps=2), task=task)
    assert result.steps == 2


def test_run_directory_guards(tiny_model_dir, tiny_task, tmp_path):
    config = _config(tiny_model_dir, tmp_path / "run", max_steps=1)
    train(config, task=tiny_task)
    with pytest.raises(FileExistsError, match="finished run"):
        train(config, task=tiny_task)
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(FileExistsError, match="files a run does not write"):
        train(config.replace(output_dir=str(foreign)), task=tiny_task)
    assert (foreign / "thesis.tex").read_text() == "keep me"
    with pytest.raises(ValueError, match="fp16' needs a GPU"):
        train(config.replace(mixed_precision="fp16", output_dir=str(tmp_path / "mp")), task=tiny_task)


def test_bf16_autocast_trains_on_cpu_and_keeps_float32_weights(tiny_model_dir, tiny_task, tmp_path):
    config = _config(tiny_model_dir, tmp_path / "run", mixed_precision="bf16")
    delta_model, tokenizer = _prebuilt(config, tiny_task)
    loss_before = _train_loss(delta_model, tokenizer, tiny_task)
    seen: list[torch.dtype] = []
    linear = next(m for m in delta_model.modules() if isinstance(m, torch.nn.Linear))
    hook = linear.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    try:
        result = train(config, task=tiny_task, prebuilt=(delta_model, tokenizer))
    finally:
        hook.remove()
    assert torch.bfloat16 in seen  # the products ran in bfloat16 under autocast
    assert all(p.dtype == torch.float32 for p in delta_model.parameters())  # master weights stay float32
    assert _train_loss(delta_model, tokenizer, tiny_task) < loss_before - 0.05
    assert result.steps == 16
