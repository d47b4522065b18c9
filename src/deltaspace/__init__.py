"""deltaspace: delta tuning (PEFT) for transformers.

The public names are imported lazily, so ``import deltaspace.tasks`` (or the CLI's ``--help``) does not pay
for torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "AdapterConfig": "deltaspace.deltas.adapter",
    "BitFitConfig": "deltaspace.deltas.bitfit",
    "CoeffTuningConfig": "deltaspace.deltas.coeff",
    "DeltaConfig": "deltaspace.deltas.base",
    "DeltaModel": "deltaspace.model",
    "FullFineTuningConfig": "deltaspace.deltas.full",
    "PeftDeltaConfig": "deltaspace.deltas.peft_delta",
    "PrefixTuningConfig": "deltaspace.deltas.prefix",
    "PromptTuningConfig": "deltaspace.deltas.prompt",
    "available_methods": "deltaspace.deltas.presets",
    "get_delta_model": "deltaspace.model",
    "load_model": "deltaspace.assets",
    "load_task": "deltaspace.tasks",
    "register_delta": "deltaspace.deltas.base",
    "resolve_method": "deltaspace.deltas.presets",
}

__all__ = [
    "AdapterConfig",
    "BitFitConfig",
    "CoeffTuningConfig",
    "DeltaConfig",
    "DeltaModel",
    "FullFineTuningConfig",
    "PeftDeltaConfig",
    "PrefixTuningConfig",
    "PromptTuningConfig",
    "__version__",
    "available_methods",
    "get_delta_model",
    "load_model",
    "load_task",
    "register_delta",
    "resolve_method",
]

if TYPE_CHECKING:
    from deltaspace.assets import load_model
    from deltaspace.deltas.adapter import AdapterConfig
    from deltaspace.deltas.base import DeltaConfig, register_delta
    from deltaspace.deltas.bitfit import BitFitConfig
    from deltaspace.deltas.coeff import CoeffTuningConfig
    from deltaspace.deltas.full import FullFineTuningConfig
    from deltaspace.deltas.peft_delta import PeftDeltaConfig
    from deltaspace.deltas.prefix import PrefixTuningConfig
    from deltaspace.deltas.presets import available_methods, resolve_method
    from deltaspace.deltas.prompt import PromptTuningConfig
    from deltaspace.model import DeltaModel, get_delta_model
    from deltaspace.tasks import load_task


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'deltaspace' has no attribute {name!r}")
    # Importing deltaspace.deltas registers every method, so saved configs of any method load.
    importlib.import_module("deltaspace.deltas")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
