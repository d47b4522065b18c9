"""Delta methods: one file per method, each registering its config with ``register_delta``."""

from deltaspace.deltas.base import AttachedDelta, DeltaConfig, register_delta, registered_methods
from deltaspace.deltas.coeff import CoeffTuningConfig
from deltaspace.deltas.peft_delta import PeftDeltaConfig

__all__ = [
    "AttachedDelta",
    "CoeffTuningConfig",
    "DeltaConfig",
    "PeftDeltaConfig",
    "register_delta",
    "registered_methods",
]
