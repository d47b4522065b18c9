"""PEFT adapter folders in and out: what ``PeftModel.save_pretrained`` writes and ``PeftModel.from_pretrained``
reads (``adapter_config.json`` + ``adapter_model.safetensors``), for ``DeltaModel.from_peft`` / ``save_peft``.

Key layout. PEFT saves each tensor under its name inside the ``PeftModel``, ``base_model.model.<module path>``,
with the adapter's name taken out (``...query.lora_A.weight``; inside the model it is ``...lora_A.default.weight``)
and ``modules_to_save`` copies under the wrapped module's own name (``classifier.weight``). A DeltaModel holds
the same PEFT layers, injected into the base itself, so its names are the base's: ``<module path>.lora_A.
<adapter>.weight``. The adapter-name mapping is method specific (DoRA, embeddings, ...), so it is left to PEFT's
own ``get_peft_model_state_dict`` / ``set_peft_model_state_dict``, which work on any model PEFT injected into;
this module adds the ``base_model.model.`` prefix, the ``modules_to_save`` tensors and the checks.

Weights load from safetensors only: a folder holding only the pickled ``adapter_model.bin`` is refused.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path

import torch
from peft import PeftConfig
from peft.utils.save_and_load import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file
from torch import nn

from deltaspace.deltas.base import matches_target
from deltaspace.deltas.peft_delta import peft_config_dict
from deltaspace.errors import BrokenFileError, MissingFileError, UserInputError
from deltaspace.io import read_json, write_json_atomic, write_safetensors_atomic

ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
_PICKLED_WEIGHTS_FILE = "adapter_model.bin"
# PeftModel's path to the wrapped model (PeftModel.base_model is the tuner, whose .model is the base).
PREFIX = "base_model.model."


@dataclasses.dataclass
class PeftAdapterFolder:
    """A PEFT adapter folder, read: its config (``modules_to_save`` taken out), those modules, its tensors."""

    config: PeftConfig
    modules_to_save: list[str]
    tensors: dict[str, torch.Tensor]  # keys as saved: base_model.model.<...>


def read_peft_folder(directory: str | os.PathLike[str]) -> PeftAdapterFolder:
    directory = Path(directory)
    config_path, weights_path = directory / ADAPTER_CONFIG_FILE, directory / ADAPTER_WEIGHTS_FILE
    if not config_path.is_file():
        raise MissingFileError(
            f"no {ADAPTER_CONFIG_FILE} in {directory}; pass a folder written by PeftModel.save_pretrained"
        )
    if not weights_path.is_file():
        if (directory / _PICKLED_WEIGHTS_FILE).is_file():
            raise UserInputError(
                f"{directory} holds {_PICKLED_WEIGHTS_FILE} (pickle), which deltaspace never loads; re-save the "
                "adapter with PeftModel.save_pretrained(directory, safe_serialization=True)"
            )
        raise MissingFileError(
            f"no {ADAPTER_WEIGHTS_FILE} in {directory}; pass a folder written by PeftModel.save_pretrained"
        )
    try:
        data = read_json(config_path)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BrokenFileError(f"{config_path} is not valid JSON ({error}); save the adapter again") from error
    if not isinstance(data, dict) or "peft_type" not in data:
        raise BrokenFileError(f"{config_path} has no 'peft_type'; it is not a PEFT adapter config")
    data.pop("runtime_config", None)  # PEFT ignores it when loading too: it only holds while training
    try:
        config = PeftConfig.from_peft_type(**data)
    except (TypeError, ValueError, KeyError) as error:
        raise BrokenFileError(
            f"{config_path} is not a config this peft reads ({type(error).__name__}: {error}); save it with this "
            "peft version"
        ) from error
    modules_to_save = list(getattr(config, "modules_to_save", None) or [])
    if modules_to_save:
        # deltaspace trains these as the task head itself (DeltaModel.head_modules).
        config = copy.deepcopy(config)
        config.modules_to_save = None
    config.inference_mode = False
    try:
        tensors = load_file(str(weights_path))
    except Exception as error:
        raise BrokenFileError(f"{weights_path} is damaged or not a safetensors file ({error})") from error
    return PeftAdapterFolder(config, modules_to_save, tensors)


def peft_head_modules(model: nn.Module, modules_to_save: list[str]) -> list[str]:
    """The modules of ``model`` that PEFT wraps for ``modules_to_save`` (by PEFT's rule: the name or its end);
    entries matching nothing are skipped, as PEFT skips them (a SEQ_CLS config names "classifier" and "score")."""
    names = [name for name, _ in model.named_modules() if name and matches_target(name, modules_to_save)]
    # The outermost module of a match only: its parameters include its children's.
    return [n for n in names if not any(n.startswith(f"{other}.") for other in names)]


def split_head_tensors(
    tensors: dict[str, torch.Tensor], heads: list[str]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(head tensors under their names in the base, the adapter's tensors as saved)."""
    head, adapter = {}, {}
    for key, tensor in tensors.items():
        name = key.removeprefix(PREFIX)
        if any(name.startswith(f"{h}.") for h in heads):
            head[name] = tensor
        else:
            adapter[key] = tensor
    return head, adapter


def load_peft_tensors(
    model: nn.Module, adapter: str, parameter_names: list[str], tensors: dict[str, torch.Tensor]
) -> None:
    """Load PEFT-saved ``tensors`` into the adapter ``adapter`` injected in ``model``: each tensor must land on
    one of ``parameter_names`` (the adapter's own parameters), and each of those must get one."""
    try:
        result = set_peft_model_state_dict(model, tensors, adapter_name=adapter)
    except RuntimeError as error:  # load_state_dict's size mismatch
        detail = next(
            (line.strip() for line in str(error).splitlines() if "size mismatch" in line), str(error)
        )
        raise UserInputError(f"the saved adapter's shapes differ from this model's: {detail}") from error
    missing = sorted(set(parameter_names) & set(result.missing_keys))
    if result.unexpected_keys or missing:
        raise UserInputError(
            f"the saved adapter's tensors do not match the adapter built from its config: {len(missing)} missing "
            f"(e.g. {missing[:2]}), {len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:2]})"
        )


def peft_tensors(model: nn.Module, adapter: str) -> dict[str, torch.Tensor]:
    """The adapter ``adapter`` injected in ``model``, keyed as PEFT saves it (``base_model.model.`` + ...)."""
    # Embedding layers are saved by PEFT only when resized or targeted for training; a DeltaModel's base is frozen.
    tensors = get_peft_model_state_dict(model, adapter_name=adapter, save_embedding_layers=False)
    return {f"{PREFIX}{name}": tensor for name, tensor in tensors.items()}


def write_peft_folder(
    directory: str | os.PathLike[str],
    config: PeftConfig,
    *,
    modules_to_save: list[str],
    tensors: dict[str, torch.Tensor],
    base_model_name_or_path: str | None,
) -> None:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` as ``PeftModel.save_pretrained`` does.

    ``tensors``: the adapter's (from :func:`peft_tensors`) and the ``modules_to_save`` ones under their names in
    the base model (the prefix is added here).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(config)
    config.modules_to_save = list(modules_to_save) or None
    config.inference_mode = True  # as PeftModel.save_pretrained writes it
    if base_model_name_or_path and not config.base_model_name_or_path:
        config.base_model_name_or_path = base_model_name_or_path
    keyed = {key if key.startswith(PREFIX) else f"{PREFIX}{key}": value for key, value in tensors.items()}
    write_safetensors_atomic(directory / ADAPTER_WEIGHTS_FILE, keyed, metadata={"format": "pt"})
    data = peft_config_dict(config)
    data.pop("runtime_config", None)
    write_json_atomic(directory / ADAPTER_CONFIG_FILE, data)
