"""A DeltaModel under Hugging Face's Trainer with default arguments (issue 21, item 2): the dataset's columns
and the label names are found from the base model's forward, evaluate() reports the loss and the metrics, and
DeltaTrainer's checkpoints hold the deltas only, load with DeltaModel.from_pretrained and resume training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

from deltaspace import DeltaModel, DeltaTrainer
from deltaspace.deltas.presets import resolve_method
from deltaspace.model import CONFIG_FILE, WEIGHTS_FILE, get_delta_model
from deltaspace.train import build_classifier
from deltaspace.train.data import tokenize_split

WHOLE_MODEL_FILES = {"model.safetensors", "pytorch_model.bin", "adapter_model.safetensors"}


def test_delta_model_trains_under_hf_trainer(tiny_model_dir, tiny_task, tmp_path):
    classifier, tokenizer = build_classifier(str(tiny_model_dir), tiny_task, "prototype", seed=0)
    model = get_delta_model(classifier, *resolve_method("lora", classifier), seed=0)
    trainable = set(model.trainable_parameter_names())
    frozen = {n: p.detach().clone() for n, p in model.base_model.named_parameters() if n not in trainable}
    dataset = tokenize_split(tiny_task.train, tokenizer, is_pair=False, max_length=16)
    args = TrainingArguments(
        output_dir=str(tmp_path / "hf"),
        max_steps=24,
        per_device_train_batch_size=16,
        learning_rate=5e-2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=dataset, data_collator=DataCollatorWithPadding(tokenizer)
    )
    trainer.train()

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 24
    assert sum(losses[-6:]) / 6 < sum(losses[:6]) / 6 - 0.05, losses
    base = dict(model.base_model.named_parameters())
    assert all(torch.equal(base[name], tensor) for name, tensor in frozen.items())


# ------------------------------------------------------------------------ a PEFT user's script, default args
def _user_setup(model_dir, task):
    """A BertForSequenceClassification with Coeff + LoRA, and the splits tokenised as a user would: the raw
    ``text`` column kept beside the tokenizer's (the Trainer must drop it by the forward's signature)."""
    base, tokenizer = build_classifier(str(model_dir), task, "linear", seed=0)
    model = get_delta_model(base, *resolve_method("coeff+lora", base), seed=0)

    def encode(split):
        return split.map(lambda b: tokenizer(b["text"], truncation=True, max_length=16), batched=True)

    return model, tokenizer, encode(task.train), encode(task.validation)


def _accuracy(prediction) -> dict[str, float]:
    return {"accuracy": float(np.mean(prediction.predictions.argmax(-1) == prediction.label_ids))}


def _args(tmp_path, name, **overrides):
    # Default TrainingArguments: nothing but where to write, no loggers, the CPU, and a short run.
    return TrainingArguments(output_dir=str(tmp_path / name), report_to=[], use_cpu=True, **overrides)


def _logits(model, tokenizer, texts):
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**batch).logits


def test_plain_trainer_with_default_arguments(tiny_model_dir, tiny_task, tmp_path):
    model, tokenizer, train, validation = _user_setup(tiny_model_dir, tiny_task)
    trainer = Trainer(
        model=model,
        args=_args(tmp_path, "plain", max_steps=4),
        train_dataset=train,
        eval_dataset=validation,
        processing_class=tokenizer,
        compute_metrics=_accuracy,
    )
    # The columns and labels come from the base's forward (input_ids, ..., labels), not from (*args, **inputs).
    assert trainer.label_names == ["labels"]
    trainer.train()
    assert trainer.state.global_step == 4
    metrics = trainer.evaluate()
    assert {"eval_loss", "eval_accuracy"} <= set(metrics), metrics
    assert np.isfinite(metrics["eval_loss"])
    # A plain Trainer checkpoints a model it does not know as its whole state dict: from_pretrained says so.
    base, _ = build_classifier(str(tiny_model_dir), tiny_task, "linear", seed=0)
    with pytest.raises(FileNotFoundError, match=r"whole model's weights .*deltaspace\.DeltaTrainer"):
        DeltaModel.from_pretrained(base, tmp_path / "plain" / "checkpoint-4")


def test_delta_trainer_checkpoints_hold_the_deltas_only(tiny_model_dir, tiny_task, tmp_path):
    model, tokenizer, train, validation = _user_setup(tiny_model_dir, tiny_task)
    trainer = DeltaTrainer(
        model=model,
        args=_args(tmp_path, "run", max_steps=4),
        train_dataset=train,
        eval_dataset=validation,
        processing_class=tokenizer,
        compute_metrics=_accuracy,
    )
    trainer.train()
    metrics = trainer.evaluate()
    assert {"eval_loss", "eval_accuracy"} <= set(metrics), metrics

    checkpoint = tmp_path / "run" / "checkpoint-4"  # saved at the end of training by default
    files = {p.name for p in checkpoint.iterdir()}
    assert {CONFIG_FILE, WEIGHTS_FILE, "optimizer.pt", "trainer_state.json"} <= files
    assert not files & WHOLE_MODEL_FILES, files
    saved = load_file(str(checkpoint / WEIGHTS_FILE))
    assert sorted(saved) == sorted(
        model.trainable_parameter_names()
    )  # the deltas and the head, nothing frozen

    base, _ = build_classifier(str(tiny_model_dir), tiny_task, "linear", seed=1)  # another head draw: loaded
    restored = DeltaModel.from_pretrained(base, checkpoint)
    texts = list(tiny_task.test["text"][:8])
    trained = _logits(model, tokenizer, texts)
    assert torch.equal(_logits(restored, tokenizer, texts), trained)
    assert not torch.equal(trained, _logits(restored.unload(), tokenizer, texts))  # the deltas did train


def test_delta_trainer_resumes_from_its_checkpoint(tiny_model_dir, tiny_task, tmp_path):
    def run(name, **train_kwargs):
        model, tokenizer, train, _ = _user_setup(tiny_model_dir, tiny_task)
        trainer = DeltaTrainer(
            model=model,
            args=_args(tmp_path, name, max_steps=4, save_steps=2),
            train_dataset=train,
            processing_class=tokenizer,
        )
        trainer.train(**train_kwargs)
        return model, trainer

    whole, _ = run("whole")
    resumed, trainer = run("resumed", resume_from_checkpoint=str(tmp_path / "whole" / "checkpoint-2"))
    assert trainer.state.global_step == 4
    # Steps 3 and 4 ran from checkpoint-2's deltas, optimizer, schedule, data position and RNG: the same result.
    expected, got = whole.solution(), resumed.solution()
    assert list(got) == list(expected)
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
    fresh, _, _, _ = _user_setup(tiny_model_dir, tiny_task)
    assert not torch.equal(fresh.solution_vector(), resumed.solution_vector())


def test_delta_trainer_loads_the_best_checkpoint_at_end(tiny_model_dir, tiny_task, tmp_path):
    model, tokenizer, train, validation = _user_setup(tiny_model_dir, tiny_task)
    trainer = DeltaTrainer(
        model=model,
        args=_args(
            tmp_path,
            "best",
            max_steps=4,
            eval_strategy="steps",
            eval_steps=2,
            save_steps=2,
            load_best_model_at_end=True,
        ),
        train_dataset=train,
        eval_dataset=validation,
        processing_class=tokenizer,
    )
    trainer.train()
    best = trainer.state.best_model_checkpoint
    assert best is not None
    assert all(torch.equal(model.solution()[n], t) for n, t in model.read_solution(best).items())
    # The hook itself, on a checkpoint that is not the last one: the model gets exactly its deltas back.
    trainer.state.best_model_checkpoint = str(tmp_path / "best" / "checkpoint-2")
    model.load_solution({n: torch.zeros_like(t) for n, t in model.solution().items()})
    trainer._load_best_model()
    saved = model.read_solution(tmp_path / "best" / "checkpoint-2")
    assert all(torch.equal(model.solution()[n], t) for n, t in saved.items())
    assert not torch.equal(
        saved["classifier.weight"],
        model.read_solution(tmp_path / "best" / "checkpoint-4")["classifier.weight"],
    )


# ------------------------------------------------------------------------------ mixed precision (item 1)
@pytest.mark.parametrize("path", ["explicit", "blocked"])
def test_trainer_bf16_trains_coeff_lora(tiny_model_dir, tiny_task, tmp_path, path):
    """``Trainer(bf16=True)`` (CPU autocast) trains Coeff + LoRA on both attention paths; before the fix the
    backward stopped with a float/bf16 dtype mismatch inside the Coeff attention."""
    base, tokenizer = build_classifier(str(tiny_model_dir), tiny_task, "linear", seed=0)
    model = get_delta_model(base, *resolve_method("coeff+lora", base, attention_path=path), seed=0)
    train = tokenize_split(tiny_task.train, tokenizer, is_pair=False, max_length=16)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer = DeltaTrainer(
        model=model,
        args=_args(
            tmp_path, "bf16", max_steps=12, bf16=True, learning_rate=5e-2, logging_steps=1, save_strategy="no"
        ),
        train_dataset=train,
        processing_class=tokenizer,
    )
    assert trainer.accelerator.mixed_precision == "bf16"
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 12 and all(np.isfinite(losses)), losses
    after = dict(model.named_parameters())
    moved = {n for n, p in before.items() if not torch.equal(after[n].detach(), p)}
    assert any("ds_coeff" in n for n in moved) and any("lora_" in n for n in moved), sorted(moved)
    assert all(
        after[n].dtype == torch.float32 for n in before
    )  # autocast computes in bf16, keeps fp32 weights


def test_accelerator_bf16_trains_coeff_lora(tiny_model_dir, tiny_task):
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    base, tokenizer = build_classifier(str(tiny_model_dir), tiny_task, "linear", seed=0)
    model = get_delta_model(base, *resolve_method("coeff+lora", base), seed=0)
    train = tokenize_split(tiny_task.train, tokenizer, is_pair=False, max_length=16)
    loader = DataLoader(
        train,
        batch_size=16,
        shuffle=True,
        collate_fn=DataCollatorWithPadding(tokenizer),
        generator=torch.Generator().manual_seed(0),
    )
    accelerator = Accelerator(mixed_precision="bf16", cpu=True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    losses = []
    for _ in range(3):
        for batch in loader:
            loss = model(**batch).loss
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(float(loss.detach()))
    assert all(np.isfinite(losses)), losses
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4, losses
