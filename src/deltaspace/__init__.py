"""deltaspace: delta tuning (PEFT) for transformers."""

from deltaspace.deltas import CoeffTuningConfig, DeltaConfig, PeftDeltaConfig, register_delta
from deltaspace.model import DeltaModel, get_delta_model

__version__ = "0.1.0"

__all__ = [
    "CoeffTuningConfig",
    "DeltaConfig",
    "DeltaModel",
    "PeftDeltaConfig",
    "__version__",
    "get_delta_model",
    "register_delta",
]
