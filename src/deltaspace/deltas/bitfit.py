"""BitFit (Ben Zaken et al. 2022): train the base model's existing bias terms, nothing else.

PEFT has no plain BitFit (only LoRA's ``bias="all"`` and BEFT's value-bias tuner), so it lives here. No module
is added: the delta is the set of bias parameters, θ0 being their pretrained values. ``detach`` writes those
pretrained values back (kept at attach; biases are small), so unloading returns the untouched base model.
"""

from __future__ import annotations

import dataclasses
import re

from torch import nn

from deltaspace.architectures import EMBEDDING_NAMES, TASK_HEAD_NAMES
from deltaspace.deltas.base import DeltaConfig, InPlaceAttached
from deltaspace.deltas.registry import Preset, register_delta


def is_head_parameter(name: str, head_modules: tuple[str, ...] = TASK_HEAD_NAMES) -> bool:
    # Fresh heads are trained by DeltaModel itself; pretrained LM heads are part of the base.
    return name.split(".", 1)[0] in head_modules


def embedding_parameter_names(model: nn.Module) -> set[str]:
    """Parameters of embedding tables and of the embedding block (e.g. BERT's ``embeddings.LayerNorm``)."""
    names = set()
    for module_name, module in model.named_modules():
        parts = module_name.split(".") if module_name else []
        if isinstance(module, nn.Embedding) or any(p in EMBEDDING_NAMES for p in parts):
            prefix = f"{module_name}." if module_name else ""
            names.update(prefix + p for p, _ in module.named_parameters())
    return names


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm | nn.GroupNorm) or "norm" in type(module).__name__.lower()


@register_delta(
    # lr: the tuned comparison (suite v1, MiniLM-L6) chose 6.32e-3 on 7 of 10 tasks (docs/results.md).
    Preset(
        "bitfit", "BitFit: all bias terms of the base model", seeded_init=False, needs_bias=True, lr=6.32e-3
    )
)
@dataclasses.dataclass
class BitFitConfig(DeltaConfig):
    """Train bias parameters: all of them, or those whose name matches ``pattern`` (regex, searched).

    exclude_head skips biases of task heads (DeltaModel trains the head anyway); exclude_embeddings and
    exclude_layernorm skip the embedding block's and normalisation layers' biases.
    """

    method = "bitfit"

    pattern: str | None = None
    exclude_head: bool = True
    exclude_embeddings: bool = False
    exclude_layernorm: bool = False

    def bias_names(self, model: nn.Module) -> list[str]:
        embeddings = embedding_parameter_names(model) if self.exclude_embeddings else set()
        regex = re.compile(self.pattern) if self.pattern is not None else None
        names = []
        all_params = dict(model.named_parameters())
        for module_name, module in model.named_modules():
            bias = module._parameters.get("bias")
            if bias is None:
                continue
            name = f"{module_name}.bias" if module_name else "bias"
            if all_params.get(name) is not bias:  # shared (tied) bias listed under its first name only
                continue
            if self.exclude_head and is_head_parameter(name):
                continue
            if name in embeddings or (self.exclude_layernorm and _is_norm(module)):
                continue
            if regex is not None and not regex.search(name):
                continue
            names.append(name)
        if not names:
            what = f" matching {self.pattern!r}" if self.pattern else ""
            raise ValueError(
                f"BitFit found no bias parameters{what} in {type(model).__name__} (models like LLaMA have no "
                "biases); pick another method, e.g. lora or ia3"
            )
        return names

    def attach(self, model: nn.Module) -> AttachedBitFit:
        return AttachedBitFit.capture(self, model, self.bias_names(model))


class AttachedBitFit(InPlaceAttached):
    """The biases BitFit trains, with their pretrained values."""
