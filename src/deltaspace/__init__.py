"""deltaspace: delta tuning (PEFT) for transformers.

The public names are imported lazily, so ``import deltaspace.tasks`` (or the CLI's ``--help``) does not pay
for torch and transformers. Besides the names below, every registered delta method's config class is
exported under its class name (``deltaspace.CoeffTuningConfig``, ...): the list comes from the registry
(:mod:`deltaspace.deltas.registry`), so a new method's file is all it takes.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "DeltaConfig": "deltaspace.deltas.base",
    "DeltaModel": "deltaspace.model",
    "DeltaTrainer": "deltaspace.integrations.hf_trainer",
    "DeltaTrainerMixin": "deltaspace.integrations.hf_trainer",
    "Preset": "deltaspace.deltas.registry",
    "available_methods": "deltaspace.deltas.presets",
    "get_delta_model": "deltaspace.model",
    "load_model": "deltaspace.assets",
    "load_task": "deltaspace.tasks",
    "register_delta": "deltaspace.deltas.registry",
    "resolve_method": "deltaspace.deltas.presets",
}


def _config_exports() -> dict[str, Any]:
    # Importing deltaspace.deltas registers every method, so saved configs of any method load.
    return importlib.import_module("deltaspace.deltas").exported_configs()


def __getattr__(name: str) -> Any:
    if name == "__all__":
        return sorted({*_EXPORTS, *_config_exports(), "__version__"})
    if name not in _EXPORTS:
        if name.startswith("_"):  # probes for dunders must not import torch
            raise AttributeError(f"module 'deltaspace' has no attribute {name!r}")
        config = _config_exports().get(name)  # looked up each time: the registry is the one list
        if config is None:
            raise AttributeError(f"module 'deltaspace' has no attribute {name!r}")
        return config
    _config_exports()
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__getattr__("__all__")})
