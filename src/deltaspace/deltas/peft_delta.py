"""Any PEFT method that ``peft.inject_adapter_in_model`` supports (LoRA, DoRA, IA3, LoHa, ...) as a delta.

PEFT does the injection and owns the layers; this wrapper only records which parameters the injected adapter
trains and undoes the injection exactly (each tuner layer is replaced by the layer it wraps, PEFT's
``model.peft_config`` attribute and the ``requires_grad`` flags are put back). Options that would make exact
undoing impossible or that overlap with deltaspace's own machinery are refused up front.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from typing import Any, ClassVar

from peft import IA3Config, LoraConfig, PeftConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer, cast_adapter_dtype
from peft.utils.error import NoMatchingPeftModuleError
from torch import nn
from transformers.pytorch_utils import Conv1D

from deltaspace.architectures import FAMILIES, family_of, projection_names, sublayer_outputs
from deltaspace.deltas.base import AttachedDelta, DeltaConfig
from deltaspace.deltas.registry import Preset, register_delta
from deltaspace.errors import UserInputError

_EXACT_LORA_INITS = (True, False, "gaussian")
_MISSING = object()


def peft_config_dict(config: PeftConfig) -> dict[str, Any]:
    """``config.to_dict()`` as plain JSON (sets sorted into lists): what a saved config holds."""
    return _jsonable(config.to_dict())


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _check_supported(config: PeftConfig) -> None:
    name = type(config).__name__
    if config.is_prompt_learning or config.is_adaption_prompt:
        raise ValueError(
            f"{name} is a PEFT prompt-learning method, which works on PeftModel only; use deltaspace's "
            "PromptTuningConfig or PrefixTuningConfig instead"
        )
    if getattr(config, "modules_to_save", None):
        raise ValueError(
            f"{name}.modules_to_save is not supported: deltaspace trains the task head itself "
            "(auto-detected, or get_delta_model(..., head_modules=[...]))"
        )
    if getattr(config, "trainable_token_indices", None):
        raise ValueError(f"{name}.trainable_token_indices is not supported by deltaspace; leave it unset")
    if getattr(config, "bias", "none") != "none":
        raise ValueError(
            f"{name}.bias={config.bias!r} is not supported; use bias='none' (and BitFit for biases)"
        )
    if getattr(config, "layer_replication", None):
        raise ValueError(f"{name}.layer_replication rewrites the base model's layers; leave it unset")
    init = getattr(config, "init_lora_weights", True)
    if init not in _EXACT_LORA_INITS:
        raise ValueError(
            f"{name}.init_lora_weights={init!r} changes the base weights, so detaching could not restore the "
            f"model; use one of {list(_EXACT_LORA_INITS)}"
        )


def _projections(model: nn.Module, which: str) -> list[str]:
    """The query/value or key/value projection names of ``model``'s family (deltaspace.architectures)."""
    linear = [n for n, m in model.named_modules() if n and isinstance(m, nn.Linear | Conv1D)]
    family = family_of(linear)
    if family is None:
        tried = [list(projection_names(f, which)) for f in FAMILIES]
        raise ValueError(
            f"cannot find the {which} projections of {type(model).__name__} (tried {tried}); "
            "build the config yourself with explicit target_modules"
        )
    return list(projection_names(family, which))


def _lora(model: nn.Module) -> LoraConfig:
    targets = _projections(model, "query/value")
    return LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets)


def _ia3(model: nn.Module) -> IA3Config:
    key_value = _projections(model, "key/value")
    ffn = sublayer_outputs(model, attention=False)
    if not ffn:
        raise ValueError(f"cannot find the feed-forward output projections of {type(model).__name__} for IA3")
    return IA3Config(target_modules=key_value + ffn, feedforward_modules=ffn)


# lr: the tuned comparison (suite v1, MiniLM-L6, 2,000 examples x 2 epochs) chose 3.16e-3 for LoRA on 10 of
# 10 tasks and 5e-2 for IA3 on 8 of 10 (docs/results.md, "Chosen learning rates").
@register_delta(
    Preset(
        "lora",
        "LoRA r=8, alpha=16 on the query and value projections (PEFT)",
        _lora,
        config_class=LoraConfig,
        lr=3.16e-3,
    ),
    Preset(
        "ia3",
        "IA3 on keys, values and the feed-forward output (PEFT)",
        _ia3,
        config_class=IA3Config,
        seeded_init=False,
        lr=5e-2,
    ),
)
@dataclasses.dataclass
class PeftDeltaConfig(DeltaConfig):
    """Wraps a ``peft.PeftConfig`` (e.g. ``LoraConfig(r=8, target_modules=[...])``)."""

    method: ClassVar[str] = "peft"

    peft_config: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.peft_config, PeftConfig):
            raise ValueError(
                f"PeftDeltaConfig needs a peft.PeftConfig (e.g. LoraConfig), got {type(self.peft_config).__name__}"
            )
        _check_supported(self.peft_config)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "peft_config": peft_config_dict(self.peft_config)}

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> PeftDeltaConfig:
        unknown = sorted(set(fields) - {"peft_config"})
        if unknown or not isinstance(fields.get("peft_config"), dict):
            raise ValueError(
                f"saved PEFT delta must be {{'peft_config': {{...}}}}; got keys {sorted(fields)}"
            )
        data = dict(fields["peft_config"])
        if "peft_type" not in data:
            raise ValueError("saved PEFT config has no 'peft_type'; re-save it with deltaspace")
        return cls(PeftConfig.from_peft_type(**data))

    def attach(self, model: nn.Module) -> PeftAttached:
        config = copy.deepcopy(self.peft_config)
        taken = set().union(*(m._all_available_adapter_names() for m in _tuner_layers(model).values()))
        adapter = next(
            n for n in ("default", *(f"default_{i}" for i in range(1, len(taken) + 2))) if n not in taken
        )
        requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
        # PEFT keeps a {adapter: config} dict on the model and would extend an existing one in place.
        previous = model.__dict__.pop("peft_config", _MISSING)
        try:
            inject_adapter_in_model(config, model, adapter_name=adapter)
        except ValueError as error:
            # Undo whatever PEFT injected before it stopped, then say which option to fix in one line.
            PeftAttached(
                self, adapter, list(_adapter_layers(model, adapter)), [], requires_grad, previous
            ).detach(model)
            raise UserInputError(_peft_error(config, model, error)) from error
        if isinstance(previous, dict):
            model.__dict__["peft_config"] = {**previous, **model.__dict__.get("peft_config", {})}
        # On a half-precision base PEFT creates the adapter in that precision; PeftModel then upcasts it to
        # float32 (autocast_adapter_dtype=True) so small updates are not rounded away: do the same. The LoRA and
        # IA3 layers cast their input to the adapter's dtype and the result back.
        cast_adapter_dtype(model, adapter_name=adapter)
        layers = _adapter_layers(model, adapter)
        for layer in layers.values():
            # A layer PEFT already wrapped keeps only its newest adapter active; every delta must stay on.
            _activate_all(layer)
        # The adapter's own parameters: everything on its tuner layers outside the wrapped base layer that is
        # keyed by this adapter's name (another delta's adapter may share the same layer).
        names = [
            f"{layer_name}.{n}"
            for layer_name, layer in layers.items()
            for n, _ in layer.named_parameters()
            if not n.startswith("base_layer.") and adapter in n.split(".")
        ]
        return PeftAttached(self, adapter, list(layers), names, requires_grad, previous)


def _activate_all(layer: BaseTunerLayer) -> None:
    names = list(layer._all_available_adapter_names())
    if names and sorted(layer.active_adapters) != sorted(names):
        layer.set_adapter(names)


def _tuner_layers(model: nn.Module) -> dict[str, BaseTunerLayer]:
    return {n: m for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)}


def _adapter_layers(model: nn.Module, adapter: str) -> dict[str, BaseTunerLayer]:
    return {n: m for n, m in _tuner_layers(model).items() if adapter in m._all_available_adapter_names()}


def _peft_error(config: PeftConfig, model: nn.Module, error: ValueError) -> str:
    """PEFT's refusal as one line naming the option; for unmatched targets, the module names there are."""
    name = type(config).__name__
    lines = str(error).strip().splitlines()
    if not isinstance(error, NoMatchingPeftModuleError):
        return f"PEFT refused {name}: {lines[0] if lines else type(error).__name__}; fix that option"
    targets = getattr(config, "target_modules", None)
    targets = sorted(targets) if isinstance(targets, (set, frozenset)) else targets
    options = f"target_modules={targets!r}"
    for option in ("exclude_modules", "layers_to_transform", "layers_pattern"):
        if getattr(config, option, None) is not None:
            options += f", {option}={getattr(config, option)!r}"
    layers = [n for n, m in model.named_modules() if n and isinstance(m, nn.Linear | Conv1D)]
    if not layers:
        return f"{name}({options}) matches no module of {type(model).__name__}, which has no linear layer"
    suffixes = list(dict.fromkeys(n.rpartition(".")[2] for n in layers))
    shown = ", ".join(suffixes[:12]) + (" ..." if len(suffixes) > 12 else "")
    return (
        f"{name}({options}) matches no module of {type(model).__name__}; its linear layers end in {shown} "
        f"(e.g. {layers[0]!r}); pass some of those as target_modules"
    )


class PeftAttached(AttachedDelta):
    def __init__(
        self,
        config: PeftDeltaConfig,
        adapter: str,
        layer_names: list[str],
        param_names: list[str],
        requires_grad: dict[str, bool],
        previous_peft_config: Any,
    ) -> None:
        self.config = config
        self.adapter = adapter
        self.layer_names = layer_names
        self._param_names = param_names
        self._requires_grad = requires_grad
        self._previous_peft_config = previous_peft_config

    def parameter_names(self) -> list[str]:
        return list(self._param_names)

    def detach(self, model: nn.Module) -> None:
        for layer_name in reversed(self.layer_names):
            layer = model.get_submodule(layer_name)
            if set(layer._all_available_adapter_names()) - {self.adapter}:
                with warnings.catch_warnings():
                    # PEFT warns that the deleted adapter was active; the others are re-activated just below.
                    warnings.simplefilter("ignore", UserWarning)
                    layer.delete_adapter(self.adapter)
                _activate_all(layer)
                continue
            parent_name, _, child = layer_name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, layer.base_layer)
        if self._previous_peft_config is _MISSING:
            model.__dict__.pop("peft_config", None)
        else:
            model.__dict__["peft_config"] = self._previous_peft_config
        # inject_adapter_in_model froze every non-adapter parameter; put the flags back.
        for name, param in model.named_parameters():
            if name in self._requires_grad:
                param.requires_grad_(self._requires_grad[name])

    def disable_refusal(self, model: nn.Module) -> str | None:
        return None

    def set_enabled(self, model: nn.Module, enabled: bool) -> None:
        # PEFT's own switch (what PeftModel.disable_adapter uses): a disabled tuner layer returns its base layer's
        # output untouched. It also sets requires_grad; DeltaModel puts the flags back afterwards.
        for layer_name in self.layer_names:
            model.get_submodule(layer_name).enable_adapters(enabled)

    def merge_refusal(self, model: nn.Module) -> str | None:
        for layer_name in self.layer_names:
            layer = model.get_submodule(layer_name)
            if type(layer).merge is BaseTunerLayer.merge:
                return f"PEFT's {type(layer).__name__} has no merge"
        return None

    def merge(self, model: nn.Module) -> None:
        # PEFT folds the adapter into each wrapped base layer; detach then unwraps those layers.
        for layer_name in self.layer_names:
            with warnings.catch_warnings():
                # PEFT warns when a layer already holds another (merged) adapter; each delta merges its own.
                warnings.simplefilter("ignore", UserWarning)
                model.get_submodule(layer_name).merge(adapter_names=[self.adapter])
        self.detach(model)
