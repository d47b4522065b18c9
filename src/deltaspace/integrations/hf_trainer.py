"""Hugging Face's ``Trainer`` with checkpoints that hold the deltas only, as PEFT's do.

A plain ``Trainer`` already trains and evaluates a DeltaModel with default arguments (the DeltaModel shows its
base's forward signature, so the dataset columns and label names are found). What it cannot do is checkpoint
one: ``Trainer._save`` calls ``save_pretrained`` only on a ``PreTrainedModel`` or a ``peft.PeftModel`` (an
``isinstance`` check, no hook) and otherwise writes the whole state dict, base included, in a file
``DeltaModel.from_pretrained`` cannot read. ``DeltaTrainerMixin`` answers the three places a checkpoint is
written or read: ``_save`` (``DeltaModel.save_pretrained``: ``delta_config.json`` + ``delta_model.safetensors``,
beside the Trainer's own optimizer / scheduler / RNG / state files), ``_load_from_checkpoint``
(``resume_from_checkpoint``) and ``_load_best_model`` (``load_best_model_at_end``). Any other model passes
through to the Trainer untouched. Mix it into another Trainer subclass (e.g. TRL's) in front of it:
``class MyTrainer(DeltaTrainerMixin, SFTTrainer)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Trainer
from transformers.trainer import TRAINING_ARGS_NAME

from deltaspace.model import CONFIG_FILE, DeltaModel


class DeltaTrainerMixin:
    """Checkpoints of a DeltaModel as ``DeltaModel.save_pretrained`` folders; see the module's docstring."""

    def _delta_model(self, model: nn.Module | None = None) -> DeltaModel | None:
        model = self.model if model is None else model  # type: ignore[attr-defined]
        unwrapped = self.accelerator.unwrap_model(model, keep_torch_compile=False)  # type: ignore[attr-defined]
        return unwrapped if isinstance(unwrapped, DeltaModel) else None

    def _save(self, output_dir: str | None = None, state_dict: dict[str, Any] | None = None) -> None:
        model = self._delta_model()
        if model is None:
            super()._save(output_dir, state_dict)  # type: ignore[misc]
            return
        args = self.args  # type: ignore[attr-defined]
        if not args.should_save:  # the main process writes
            return
        output_dir = output_dir if output_dir is not None else args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        # `state_dict` (what FSDP / DeepSpeed gather for a whole model) is not needed: the deltas are the solution.
        model.save_pretrained(output_dir)
        # The rest of what Trainer._save writes beside the weights: the tokenizer / processor and the arguments.
        processing_class = getattr(self, "processing_class", None)
        tokenizer = getattr(getattr(self, "data_collator", None), "tokenizer", None)
        if processing_class is not None:
            processing_class.save_pretrained(output_dir)
        elif tokenizer is not None:
            tokenizer.save_pretrained(output_dir)
        torch.save(args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        delta_model = self._delta_model(model)
        if delta_model is None or not (Path(resume_from_checkpoint) / CONFIG_FILE).is_file():
            # Not ours, or a checkpoint a plain Trainer wrote (the whole state dict): the Trainer reads it.
            super()._load_from_checkpoint(resume_from_checkpoint, model)  # type: ignore[misc]
            return
        delta_model.load_solution(delta_model.read_solution(resume_from_checkpoint))

    def _load_best_model(self) -> None:
        delta_model = self._delta_model()
        best = self.state.best_model_checkpoint  # type: ignore[attr-defined]
        if delta_model is None or best is None or not (Path(best) / CONFIG_FILE).is_file():
            super()._load_best_model()  # type: ignore[misc]
            return
        delta_model.load_solution(delta_model.read_solution(best))


class DeltaTrainer(DeltaTrainerMixin, Trainer):
    """``transformers.Trainer`` whose checkpoints of a DeltaModel hold the deltas only (``delta_config.json`` +
    ``delta_model.safetensors``), load with ``DeltaModel.from_pretrained(base, checkpoint)`` and resume with
    ``train(resume_from_checkpoint=...)``. Same arguments as ``Trainer``."""
