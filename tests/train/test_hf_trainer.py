"""A DeltaModel-wrapped classifier also trains under Hugging Face's Trainer (forward accepts labels)."""

from __future__ import annotations

import torch
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

from deltaspace.deltas.presets import resolve_method
from deltaspace.model import get_delta_model
from deltaspace.train import build_classifier
from deltaspace.train.data import tokenize_split


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
        remove_unused_columns=False,  # DeltaModel.forward takes **inputs; keep the tokenised columns
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
