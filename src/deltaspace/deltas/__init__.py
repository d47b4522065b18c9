"""Delta methods: one file per method, each registering its config with ``register_delta``."""

from deltaspace.deltas.adapter import AdapterConfig
from deltaspace.deltas.base import AttachedDelta, DeltaConfig, register_delta, registered_methods
from deltaspace.deltas.bitfit import BitFitConfig
from deltaspace.deltas.coeff import CoeffTuningConfig
from deltaspace.deltas.full import FullFineTuningConfig
from deltaspace.deltas.peft_delta import PeftDeltaConfig
from deltaspace.deltas.prefix import PrefixTuningConfig
from deltaspace.deltas.presets import available_methods, resolve_method
from deltaspace.deltas.prompt import PromptTuningConfig

__all__ = [
    "AdapterConfig",
    "AttachedDelta",
    "BitFitConfig",
    "CoeffTuningConfig",
    "DeltaConfig",
    "FullFineTuningConfig",
    "PeftDeltaConfig",
    "PrefixTuningConfig",
    "PromptTuningConfig",
    "available_methods",
    "register_delta",
    "registered_methods",
    "resolve_method",
]
