"""DeltaModel: delta methods composed over a frozen base model.

``get_delta_model(model, CoeffTuningConfig(), LoraConfig(...))`` freezes the base, attaches each delta in
order (each under ``fork_rng`` + ``manual_seed(seed)``, so a delta's θ0 depends on the seed only, not on
what was attached before it), and trains only the deltas plus the task head. Everything the study needs works
on *solutions*: the ordered mapping name -> tensor of the trained parameters (deltas in config order, then
the head), names relative to the base model.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import types
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from peft import PeftMixedModel, PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file
from torch import nn
from transformers.integrations.peft import PeftAdapterMixin

from deltaspace import attention
from deltaspace.architectures import TASK_HEAD_NAMES
from deltaspace.deltas.base import AttachedDelta, DeltaConfig
from deltaspace.deltas.peft_delta import PeftAttached, PeftDeltaConfig
from deltaspace.errors import MissingFileError, UserInputError
from deltaspace.io import read_json, sha256_file, write_json_atomic, write_safetensors_atomic
from deltaspace.peft_interop import (
    ADAPTER_CONFIG_FILE,
    load_peft_tensors,
    peft_head_modules,
    peft_tensors,
    read_peft_folder,
    split_head_tensors,
    write_peft_folder,
)
from deltaspace.rng import seeded

CONFIG_FILE = "delta_config.json"
WEIGHTS_FILE = "delta_model.safetensors"
FORMAT_VERSION = 1
_FINGERPRINT_CHECKS = {
    "model_type": "model type",
    "num_hidden_layers": "layers",
    "num_attention_heads": "attention heads per layer",
    "hidden_size": "hidden size",
}


# transformers' PEFT integration on the base model (PeftAdapterMixin) manages adapters of its own and, reached
# through DeltaModel.__getattr__, would answer that PEFT is too old or find no adapter: say what to use instead.
_HAS_NO_NAMED_ADAPTERS = (
    "a DeltaModel has no named adapters: all its deltas are always on; switch them off together with "
    "`with model.disable_adapter():`"
)
_PEFT_MIXIN_HINTS = {
    "add_adapter": "a DeltaModel's deltas are fixed when it is built: pass every config to "
    "get_delta_model(base, *configs)",
    "load_adapter": "load saved deltas with DeltaModel.from_pretrained(base_model, directory)",
    "set_adapter": _HAS_NO_NAMED_ADAPTERS,
    "active_adapters": _HAS_NO_NAMED_ADAPTERS,
    "active_adapter": _HAS_NO_NAMED_ADAPTERS,
    "enable_adapters": "the deltas are on except inside `with model.disable_adapter():`",
    "disable_adapters": "switch the deltas off with `with model.disable_adapter():`",
    "delete_adapter": "remove the deltas with unload() (the base model back) or merge_and_unload()",
    "get_adapter_state_dict": "the deltas' tensors are model.solution(); save_pretrained(directory) writes them",
    "enable_peft_hotswap": "to swap in other trained deltas, use load_solution() or DeltaModel.from_pretrained",
}


def _refuse_peft_wrapped(model: nn.Module) -> None:
    """A base that already carries PEFT adapters would have them frozen like any base weight: say what to do."""
    if isinstance(model, PeftModel | PeftMixedModel):
        adapter = next(iter(getattr(model, "peft_config", {}) or {"default": None}))
        raise UserInputError(
            f"get_delta_model got a peft.{type(model).__name__}, whose adapters it would freeze; pass "
            "model.merge_and_unload() to build on its trained adapters, or the plain base and the adapter's config "
            f"to train a fresh one here: get_delta_model(model.unload(), model.peft_config[{adapter!r}], ...)"
        )
    layer = next((n for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)), None)
    if layer is not None:
        raise UserInputError(
            f"{type(model).__name__} already carries PEFT adapter layers (e.g. {layer!r}), which get_delta_model "
            "would freeze; merge them into the base weights first, or pass the plain base and the adapter's "
            "config to get_delta_model to train it here"
        )


def _as_delta_config(config: Any) -> DeltaConfig:
    if isinstance(config, DeltaConfig):
        return config
    from peft import PeftConfig

    if isinstance(config, PeftConfig):
        return PeftDeltaConfig(config)
    raise TypeError(f"expected a deltaspace DeltaConfig or a peft.PeftConfig, got {type(config).__name__}")


def _detect_heads(model: nn.Module) -> list[str]:
    """Fresh task heads among the base model's direct children (pretrained LM heads are never matched)."""
    return [name for name, _ in model.named_children() if name in TASK_HEAD_NAMES]


def fingerprint(model: nn.Module) -> dict[str, Any]:
    """What identifies the base a delta was trained on (from the transformers config when there is one)."""
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return {
        "class": type(model).__name__,
        "model_type": getattr(config, "model_type", None),
        "num_hidden_layers": getattr(text, "num_hidden_layers", None),
        "num_attention_heads": getattr(text, "num_attention_heads", None),
        "hidden_size": getattr(text, "hidden_size", None),
        "name_or_path": getattr(config, "name_or_path", None) or None,
    }


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


# ------------------------------------------------------------------------------------ the forward's signature
# Hugging Face's Trainer reads a model's forward signature twice: `inspect.signature(model.forward)` to keep the
# dataset columns the model accepts (remove_unused_columns), and `find_labels(type(model))`, which reads the
# *class's* forward, for the label names without which evaluate() reports no loss. `forward(*args, **inputs)`
# shows neither, so each DeltaModel becomes an instance of a subclass made once per (DeltaModel class, base
# class) whose forward carries the base class's signature, and whose name holds the base class's name
# (find_labels also reads "QuestionAnswering" in the name).
_SIGNATURE_SOURCE = "_forward_signature_of"
_SPECIALISED: dict[tuple[type, type], type] = {}


def _unspecialised(cls: type) -> type:
    """The DeltaModel class ``cls`` was made from (``cls`` itself when it is not a specialised one)."""
    while _SIGNATURE_SOURCE in vars(cls):
        cls = cls.__bases__[0]
    return cls


def _specialised(cls: type, base_class: type) -> type:
    root = _unspecialised(cls)
    key = (root, base_class)
    if key not in _SPECIALISED:
        try:
            signature = inspect.signature(base_class.forward)
        except (TypeError, ValueError, AttributeError):
            return root  # a forward Python cannot describe: keep (*args, **inputs)
        forward = root.forward
        copy = types.FunctionType(
            forward.__code__, forward.__globals__, forward.__name__, forward.__defaults__, forward.__closure__
        )
        copy.__kwdefaults__ = forward.__kwdefaults__
        copy.__qualname__ = forward.__qualname__
        copy.__doc__ = forward.__doc__
        copy.__signature__ = signature  # the unbound signature, `self` first, as find_labels expects
        _SPECIALISED[key] = type(
            f"{root.__name__}[{base_class.__name__}]",
            (root,),
            {"forward": copy, _SIGNATURE_SOURCE: base_class, "__module__": root.__module__},
        )
    return _SPECIALISED[key]


def _rebuild_specialised(root: type, base_class: type) -> DeltaModel:
    """Unpickling / deepcopy: an empty instance of the specialised class (its state is set afterwards)."""
    cls = _specialised(root, base_class)
    return cls.__new__(cls)


class DeltaModel(nn.Module):
    """A frozen base model with deltas attached; see :func:`get_delta_model`."""

    def __init__(
        self,
        base_model: nn.Module,
        configs: Iterable[Any] = (),
        *,
        seed: int = 0,
        head_modules: list[str] | None = None,
    ) -> None:
        super().__init__()
        _refuse_peft_wrapped(base_model)
        self.__class__ = _specialised(type(self), type(base_model))
        self.base_model = base_model
        self.delta_configs: list[DeltaConfig] = [_as_delta_config(c) for c in configs]
        self.seed = int(seed)
        self.head_modules = list(_detect_heads(base_model) if head_modules is None else head_modules)
        for name in self.head_modules:
            if not name or not isinstance(_get_submodule(base_model, name), nn.Module):
                raise ValueError(f"head module {name!r} not found in {type(base_model).__name__}")
        self.deltas: list[AttachedDelta] = []
        self._original_requires_grad = {n: p.requires_grad for n, p in base_model.named_parameters()}
        self._enabled_attention = False
        self._unloaded = False
        self._switched_off = False  # inside disable_adapter()
        was_enabled = attention.is_enabled(base_model)
        try:
            for config in self.delta_configs:
                with seeded(self.seed, devices=_cuda_devices(base_model)):
                    self.deltas.append(config.attach(base_model))
            # Attention-level deltas route their modules themselves; undo it at unload unless it was on before.
            self._enabled_attention = attention.is_enabled(base_model) and not was_enabled
            self._trainable = self._collect_trainable()
        except BaseException:
            self._restore_base()
            raise
        trainable = set(self._trainable)
        for name, param in base_model.named_parameters():
            param.requires_grad_(name in trainable)

    def __reduce_ex__(self, protocol: Any) -> Any:
        # The specialised class is made at run time and cannot be found by name: rebuild it from its sources.
        reduced = super().__reduce_ex__(protocol)
        base_class = vars(type(self)).get(_SIGNATURE_SOURCE)
        if base_class is None or not isinstance(reduced, tuple):
            return reduced
        return (_rebuild_specialised, (_unspecialised(type(self)), base_class), *reduced[2:])

    # ----------------------------------------------------------------------------------------- structure
    def _collect_trainable(self) -> list[str]:
        names: list[str] = []
        seen: set[str] = set()
        params = dict(self.base_model.named_parameters())
        for delta in self.deltas:
            for name in delta.parameter_names():
                if name in seen:
                    raise ValueError(f"parameter {name!r} is claimed by two deltas; attach each method once")
                if name not in params:
                    raise ValueError(f"delta parameter {name!r} is not a parameter of the base model")
                names.append(name)
                seen.add(name)
        for head in self.head_modules:
            module = _get_submodule(self.base_model, head)
            for name, _ in module.named_parameters(prefix=head):
                # A head layer wrapped by a delta (e.g. LoRA on the classifier) keeps its delta's ownership.
                if name not in seen and name in params:
                    names.append(name)
                    seen.add(name)
        return names

    def _restore_base(self) -> None:
        for delta in reversed(self.deltas):
            delta.detach(self.base_model)
        self.deltas = []
        if self._enabled_attention:
            attention.disable(self.base_model)
            self._enabled_attention = False
        for name, param in self.base_model.named_parameters():
            if name in self._original_requires_grad:
                param.requires_grad_(self._original_requires_grad[name])

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_model" or "base_model" not in self._modules:
                raise
        base = self._modules["base_model"]
        if isinstance(base, PeftAdapterMixin) and not name.startswith("_") and name in vars(PeftAdapterMixin):
            hint = _PEFT_MIXIN_HINTS.get(
                name,
                "transformers' PEFT integration does not manage a DeltaModel's deltas; use get_delta_model, "
                "DeltaModel.from_pretrained, disable_adapter(), unload() or merge_and_unload()",
            )
            # AttributeError, so hasattr() (as Trainer uses it) answers False.
            raise AttributeError(f"DeltaModel has no {name!r}: {hint}")
        try:
            return getattr(base, name)
        except AttributeError:
            raise AttributeError(
                f"'DeltaModel' object has no attribute {name!r} (nor has its base model, {type(base).__name__})"
            ) from None

    def get_base_model(self) -> nn.Module:
        """The base model, with the deltas inside it (as PEFT's ``PeftModel.get_base_model``); ``unload()`` takes
        them out."""
        self._check_loaded()
        return self.base_model

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Inside the block the model computes exactly what its base computed before the deltas were attached
        (PEFT's ``disable_adapter``, e.g. for a DPO reference pass); on exit every delta is back, bit for bit.

        The task head is part of the base model and stays as trained (``unload()`` keeps it too). Nested use is
        harmless: only the outermost block switches. A delta that cannot be switched off (full fine-tuning
        without its pretrained copy) is named in a one-line UserInputError, nothing switched.
        """
        self._check_loaded()
        if self._switched_off:
            yield
            return
        refusals = [
            f"{delta.config.method} ({reason})"
            for delta in self.deltas
            if (reason := delta.disable_refusal(self.base_model)) is not None
        ]
        if refusals:
            raise UserInputError(f"cannot switch the deltas off: {'; '.join(refusals)}")
        # PEFT's switch sets requires_grad itself; the flags are put back as they were.
        requires_grad = {n: p.requires_grad for n, p in self.base_model.named_parameters()}
        switched: list[AttachedDelta] = []
        self._switched_off = True
        try:
            # Off in reverse attach order, on again in attach order: hook modules return to their places.
            for delta in reversed(self.deltas):
                delta.set_enabled(self.base_model, False)
                switched.append(delta)
            yield
        finally:
            for delta in reversed(switched):
                delta.set_enabled(self.base_model, True)
            self._switched_off = False
            for name, param in self.base_model.named_parameters():
                if name in requires_grad:
                    param.requires_grad_(requires_grad[name])

    def _check_switched_on(self, what: str) -> None:
        if self._switched_off:
            raise UserInputError(
                f"{what} is not available inside disable_adapter() (the deltas are switched off); call it after "
                "the with block"
            )

    # ------------------------------------------------------------------------------------------- running
    def _check_loaded(self) -> None:
        if self._unloaded:
            raise RuntimeError("this DeltaModel was unloaded; use the model unload() returned")

    def prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        for delta in self.deltas:
            inputs = delta.prepare_inputs(inputs, self.base_model)
        return inputs

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if not args:
            return dict(kwargs)
        bound = inspect.signature(self.base_model.forward).bind_partial(*args).arguments
        clash = sorted(set(bound) & set(kwargs))
        if clash:
            raise TypeError(f"got multiple values for argument(s) {clash}")
        return {**bound, **kwargs}

    def forward(self, *args: Any, **inputs: Any) -> Any:
        self._check_loaded()
        return self.base_model(**self.prepare_inputs(self._bind(args, inputs)))

    def generate(self, *args: Any, **inputs: Any) -> Any:
        self._check_loaded()
        if args:
            if len(args) > 1 or "input_ids" in inputs:
                raise TypeError("generate takes input_ids as the only positional argument")
            inputs["input_ids"] = args[0]
        return self.base_model.generate(**self.prepare_inputs(inputs))

    # ----------------------------------------------------------------------------------------- solutions
    def _params(self) -> dict[str, nn.Parameter]:
        # Switched off, BitFit / full fine-tuning's names point at stand-ins holding the pretrained values.
        self._check_switched_on("the deltas' parameters (solution, load_solution, functional_call)")
        params = dict(self.base_model.named_parameters())
        return {name: params[name] for name in self._trainable}

    def trainable_parameter_names(self) -> list[str]:
        return list(self._trainable)

    def parameter_shapes(self) -> dict[str, torch.Size]:
        return {name: p.shape for name, p in self._params().items()}

    def num_trainable_parameters(self) -> int:
        """Size of a solution (deltas + head), whatever their ``requires_grad``."""
        return sum(p.numel() for p in self._params().values())

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """(parameters with ``requires_grad``, all parameters), as PEFT counts them."""
        params = list(self.base_model.parameters())
        return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

    def print_trainable_parameters(self) -> None:
        trainable, total = self.get_nb_trainable_parameters()
        print(
            f"trainable params: {trainable:,d} || all params: {total:,d} || "
            f"trainable%: {100 * trainable / max(total, 1):.4f}"
        )

    def solution(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().clone() for name, p in self._params().items()}

    def solution_vector(self) -> torch.Tensor:
        params = list(self._params().values())
        if not params:
            return torch.zeros(0)
        return torch.cat([p.detach().reshape(-1) for p in params])

    def vector_to_solution(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a flat vector into the solution's tensors: views into ``vector``, so gradients flow back."""
        shapes = self.parameter_shapes()
        total = sum(s.numel() for s in shapes.values())
        if vector.dim() != 1 or vector.numel() != total:
            raise ValueError(f"expected a 1-D vector of {total} values, got shape {tuple(vector.shape)}")
        # torch.split, not slicing: each slice's backward allocates a zero tensor of the whole vector
        # (seconds per step for full fine-tuning's 22.7M entries); split's backward is one concatenation.
        pieces = torch.split(vector, [s.numel() for s in shapes.values()])
        return {name: piece.view(shape) for (name, shape), piece in zip(shapes.items(), pieces, strict=True)}

    def _check_solution(self, solution: dict[str, torch.Tensor], *, complete: bool) -> None:
        shapes = self.parameter_shapes()
        unexpected = [n for n in solution if n not in shapes]
        missing = [n for n in shapes if n not in solution] if complete else []
        if unexpected or missing:
            raise ValueError(
                f"solution does not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]} "
                f"({len(missing)} missing, {len(unexpected)} unexpected)"
            )
        for name, tensor in solution.items():
            if tuple(tensor.shape) != tuple(shapes[name]):
                raise ValueError(
                    f"parameter {name!r} has shape {tuple(tensor.shape)} in the solution but "
                    f"{tuple(shapes[name])} in this model"
                )

    def functional_call(self, solution: dict[str, torch.Tensor], *args: Any, **inputs: Any) -> Any:
        """Run the model with ``solution``'s tensors in place of the parameters (nothing is mutated)."""
        self._check_loaded()
        self._check_solution(solution, complete=False)
        params = {f"base_model.{name}": tensor for name, tensor in solution.items()}
        return torch.func.functional_call(self, params, args, inputs, strict=False)

    @torch.no_grad()
    def load_solution(self, solution: dict[str, torch.Tensor]) -> None:
        self._check_solution(solution, complete=True)
        params = self._params()
        for name, tensor in solution.items():
            params[name].copy_(tensor)

    # ------------------------------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write ``delta_config.json`` and ``delta_model.safetensors`` (deltas + head only), each atomically."""
        self._check_loaded()
        self._check_switched_on("save_pretrained")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        weights_path = write_safetensors_atomic(
            directory / WEIGHTS_FILE,
            self.solution(),
            metadata={"format": "pt", "deltaspace_format": str(FORMAT_VERSION)},
        )
        meta = {
            "format_version": FORMAT_VERSION,
            "deltas": [c.to_dict() for c in self.delta_configs],
            "head_modules": self.head_modules,
            "seed": self.seed,
            "base_model": fingerprint(self.base_model),
            "weights_sha256": sha256_file(weights_path),
        }
        write_json_atomic(directory / CONFIG_FILE, meta)

    @classmethod
    def from_pretrained(
        cls, base_model: nn.Module, directory: str | os.PathLike[str], is_trainable: bool = False
    ) -> DeltaModel:
        """Attach the deltas saved in ``directory`` to ``base_model`` and load their values (and the head's)."""
        _check_from_pretrained_arguments(base_model, directory)
        meta, tensors = _read_saved(directory, base_model)
        configs = [DeltaConfig.from_dict(d) for d in meta["deltas"]]
        try:
            model = cls(base_model, configs, seed=meta["seed"], head_modules=meta["head_modules"])
        except (ValueError, KeyError, AttributeError) as error:
            raise ValueError(
                f"the deltas saved in {directory} do not fit this {type(base_model).__name__}: {_first_line(error)}"
            ) from error
        try:
            model._check_solution(tensors, complete=True)
            model.load_solution(tensors)
        except ValueError as error:
            model.unload()
            raise ValueError(
                f"the deltas saved in {directory} do not fit this base model: {error}"
            ) from error
        if not is_trainable:
            model._freeze_for_inference()
        return model

    def _freeze_for_inference(self) -> None:
        for param in self._params().values():
            param.requires_grad_(False)
        self.eval()

    # --------------------------------------------------------------------------------------- PEFT folders
    @classmethod
    def from_peft(
        cls,
        base_model: nn.Module,
        directory: str | os.PathLike[str],
        *configs: Any,
        seed: int = 0,
        is_trainable: bool = False,
    ) -> DeltaModel:
        """A DeltaModel holding the adapter that ``peft`` saved in ``directory`` (``PeftModel.save_pretrained``:
        ``adapter_config.json`` + ``adapter_model.safetensors``), then ``configs`` (e.g. ``CoeffTuningConfig()``)
        attached after it from ``seed``. Alone, it computes exactly what ``PeftModel.from_pretrained(base_model,
        directory)`` computes. The adapter's ``modules_to_save`` (e.g. a classifier PEFT trained) become the
        task head, with their saved values; without them the usual head is detected. ``is_trainable=False``
        (PEFT's default): everything frozen, eval mode.
        """
        _check_from_pretrained_arguments(base_model, directory, "from_peft")
        saved = read_peft_folder(directory)
        heads = peft_head_modules(base_model, saved.modules_to_save) if saved.modules_to_save else None
        try:
            peft_delta = PeftDeltaConfig(saved.config)
        except ValueError as error:
            raise UserInputError(
                f"the PEFT adapter in {directory} uses an option deltaspace cannot attach: {_first_line(error)}"
            ) from error
        model = cls(base_model, [peft_delta, *configs], seed=seed, head_modules=heads)
        try:
            head_tensors, adapter_tensors = split_head_tensors(saved.tensors, model.head_modules)
            attached = model.deltas[0]
            load_peft_tensors(model.base_model, attached.adapter, attached.parameter_names(), adapter_tensors)
            model._check_solution(head_tensors, complete=False)
            with torch.no_grad():
                params = model._params()
                for name, tensor in head_tensors.items():
                    params[name].copy_(tensor)
        except ValueError as error:
            model.unload()
            raise UserInputError(
                f"the PEFT adapter in {directory} does not fit this {type(base_model).__name__}: {_first_line(error)}"
            ) from error
        if not is_trainable:
            model._freeze_for_inference()
        return model

    def save_peft(self, directory: str | os.PathLike[str]) -> None:
        """Write the PEFT delta (LoRA, IA3, ...) and the task head as a folder ``PeftModel.from_pretrained`` reads
        (``adapter_config.json`` + ``adapter_model.safetensors``; the head as ``modules_to_save``).

        Deltas PEFT has no equivalent for (Coeff, prompts, adapters, ...) are not exported: a warning names them,
        and the PeftModel then computes without them (``save_pretrained`` keeps everything).
        """
        self._check_loaded()
        self._check_switched_on("save_peft")
        methods = "+".join(c.method for c in self.delta_configs) or "no deltas"
        peft_deltas = [d for d in self.deltas if isinstance(d, PeftAttached)]
        if not peft_deltas:
            raise UserInputError(
                f"save_peft exports a PEFT delta (LoRA, IA3, ...) but this model has none ({methods}); "
                "use save_pretrained"
            )
        if len(peft_deltas) > 1:
            raise UserInputError(
                f"a PEFT folder holds one adapter but this model has {len(peft_deltas)} PEFT deltas ({methods}); "
                "use save_pretrained, or build the model with one PEFT config"
            )
        left_out = [d.config.method for d in self.deltas if not isinstance(d, PeftAttached)]
        if left_out:
            warnings.warn(
                f"save_peft writes the PEFT delta only; not exported: {', '.join(left_out)} (PEFT has no "
                f"equivalent), so PeftModel.from_pretrained of {directory} computes without them; save_pretrained "
                "keeps every delta",
                UserWarning,
                stacklevel=2,
            )
        delta = peft_deltas[0]
        # A head module whose parameters all belong to a delta (LoRA on the classifier) is exported by that delta.
        heads = [h for h in self.head_modules if any(n.startswith(f"{h}.") for n in self._trainable)]
        head_tensors = {
            name: tensor
            for name, tensor in self.solution().items()
            if any(name.startswith(f"{h}.") for h in heads)
        }
        write_peft_folder(
            directory,
            delta.config.peft_config,
            modules_to_save=heads,
            tensors={**peft_tensors(self.base_model, delta.adapter), **head_tensors},
            base_model_name_or_path=fingerprint(self.base_model)["name_or_path"],
        )

    def read_solution(self, directory: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
        """The solution saved in ``directory`` (by ``save_pretrained`` of a model like this one), checked as
        :meth:`from_pretrained` checks it and against this model's methods, seed and shapes; nothing is loaded
        into the model. Reads many trained runs without rebuilding a base for each."""
        meta, tensors = _read_saved(directory, self.base_model)
        saved = [d.get("method") for d in meta["deltas"]]
        mine = [c.method for c in self.delta_configs]
        if saved != mine or meta["seed"] != self.seed:
            raise ValueError(
                f"the deltas saved in {directory} ({'+'.join(saved)}, seed {meta['seed']}) are not this model's "
                f"({'+'.join(mine)}, seed {self.seed}); point at the run trained with these settings"
            )
        try:
            self._check_solution(tensors, complete=True)
        except ValueError as error:
            raise ValueError(f"the deltas saved in {directory} do not fit this model: {error}") from error
        return {name: tensors[name] for name in self.parameter_shapes()}

    def unload(self) -> nn.Module:
        """Detach every delta, restore the attention implementation and ``requires_grad``; return the base."""
        self._check_loaded()
        self._check_switched_on("unload")
        self._restore_base()
        base = self._modules.pop("base_model")
        self._unloaded = True
        return base

    def merge_and_unload(self) -> nn.Module:
        """Fold every delta into the base weights and return the plain base model (PEFT's name for it).

        LoRA, IA3 (through PEFT's merge), BitFit, full fine-tuning and Coeff-Tuning with a diagonal ΔC fold;
        prompt, prefix, adapters and a non-diagonal ΔC do not: then a one-line UserInputError names them and
        the model is left as it was. The trained head stays in the base model.
        """
        self._check_loaded()
        self._check_switched_on("merge_and_unload")
        refusals = [
            f"{delta.config.method} ({reason})"
            for delta in self.deltas
            if (reason := delta.merge_refusal(self.base_model)) is not None
        ]
        if refusals:
            raise UserInputError(
                f"cannot merge into the base weights: {'; '.join(refusals)}; use unload() instead"
            )
        # PEFT layers add to a weight other deltas may scale (Coeff's value rows): fold them first.
        for delta in sorted(self.deltas, key=lambda d: not isinstance(d, PeftAttached)):
            delta.merge(self.base_model)
        self.deltas = []
        self._restore_base()
        base = self._modules.pop("base_model")
        self._unloaded = True
        return base


def get_delta_model(
    model: nn.Module, *configs: Any, seed: int = 0, head_modules: list[str] | None = None
) -> DeltaModel:
    """Freeze ``model`` and attach ``configs`` (deltaspace configs or ``peft.PeftConfig``s) in order.

    Trains only the deltas plus the task head: ``head_modules`` names it (top-level modules of ``model``);
    by default the fresh heads present among ``classifier``, ``score``, ``qa_outputs``, ``pre_classifier``,
    ``head`` and ``classification_head`` (BART-style).
    """
    return DeltaModel(model, configs, seed=seed, head_modules=head_modules)


def _check_from_pretrained_arguments(
    base_model: Any, directory: Any, method: str = "from_pretrained"
) -> None:
    if isinstance(base_model, str | os.PathLike) and isinstance(directory, nn.Module):
        raise UserInputError(
            f"DeltaModel.{method} takes the base model first, then the folder: "
            f"DeltaModel.{method}(base_model, {str(base_model)!r})"
        )
    if not isinstance(base_model, nn.Module):
        raise UserInputError(
            f"DeltaModel.{method} needs the base model (an nn.Module) first, got {type(base_model).__name__}; "
            f"load the base (e.g. deltaspace.load_model) and call DeltaModel.{method}(base_model, directory)"
        )


def _get_submodule(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _cuda_devices(model: nn.Module) -> list[int]:
    return sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})


def _read_saved(directory: str | os.PathLike[str], base_model: nn.Module) -> tuple[dict[str, Any], dict]:
    """(meta, tensors) of a ``save_pretrained`` directory, checked: files, format, base, checksum."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not config_path.is_file():
        _explain_foreign_folder(directory)
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"no {path.name} in {directory}; pass a directory written by DeltaModel.save_pretrained"
            )
    meta = _read_meta(config_path)
    _check_fingerprint(meta["base_model"], fingerprint(base_model))
    if meta.get("weights_sha256") and sha256_file(weights_path) != meta["weights_sha256"]:
        raise ValueError(f"{weights_path} is damaged (checksum mismatch with {CONFIG_FILE}); save it again")
    try:
        tensors = load_file(str(weights_path))
    except Exception as error:
        raise ValueError(
            f"{weights_path} is damaged or not a safetensors file ({_first_line(error)})"
        ) from error
    return meta, tensors


# What a plain transformers Trainer writes for a model that is not a PreTrainedModel: the whole state dict.
_WHOLE_MODEL_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")


def _explain_foreign_folder(directory: Path) -> None:
    """A folder without our config that another tool wrote: say which tool and how to load or write ours."""
    if (directory / ADAPTER_CONFIG_FILE).is_file():
        raise MissingFileError(
            f"{directory} is a PEFT adapter folder ({ADAPTER_CONFIG_FILE}), not a deltaspace one; load it with "
            f"DeltaModel.from_peft(base_model, {str(directory)!r})"
        )
    whole = next((name for name in _WHOLE_MODEL_FILES if (directory / name).is_file()), None)
    if whole is not None:
        raise MissingFileError(
            f"{directory} holds a whole model's weights ({whole}), as transformers' Trainer checkpoints a model it "
            "does not know, not saved deltas; train with deltaspace.DeltaTrainer, whose checkpoints "
            "DeltaModel.from_pretrained reads (a plain Trainer can still resume from this one)"
        )


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} is damaged (not valid JSON: {_first_line(error)}); save it again"
        ) from error
    if not isinstance(meta, dict) or not {"format_version", "deltas", "head_modules", "base_model"} <= set(
        meta
    ):
        raise ValueError(f"{path} is not a deltaspace delta config; save it with DeltaModel.save_pretrained")
    if meta["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {meta['format_version']}, this deltaspace reads version {FORMAT_VERSION}"
        )
    meta.setdefault("seed", 0)
    return meta


def _check_fingerprint(saved: dict[str, Any], current: dict[str, Any]) -> None:
    for key, what in _FINGERPRINT_CHECKS.items():
        if saved.get(key) is not None and current.get(key) is not None and saved[key] != current[key]:
            origin = f" ({saved['name_or_path']})" if saved.get("name_or_path") else ""
            raise ValueError(
                f"the saved deltas were trained on a base with {what} = {saved[key]!r}, but this base has "
                f"{current[key]!r}; load them into the base model they were trained on{origin}"
            )
