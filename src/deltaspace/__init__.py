"""deltaspace: delta tuning (PEFT) for transformers."""

from deltaspace.deltas import CoeffTuningConfig, DeltaConfig, PeftDeltaConfig, register_delta
from deltaspace.deltas.adapter import AdapterConfig
from deltaspace.deltas.bitfit import BitFitConfig
from deltaspace.deltas.full import FullFineTuningConfig
from deltaspace.deltas.prefix import PrefixTuningConfig
from deltaspace.deltas.presets import available_methods, resolve_method
from deltaspace.deltas.prompt import PromptTuningConfig
from deltaspace.model import DeltaModel, get_delta_model

__version__ = "0.1.0"

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
    "register_delta",
    "resolve_method",
]
