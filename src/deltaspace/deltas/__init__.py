"""Delta methods: one file per method, each registering its config and presets with ``register_delta``.

Every module of this folder is imported here, so a new method's file registers itself: nothing else lists
the methods (the registry in :mod:`deltaspace.deltas.registry` is the one list).
"""

import importlib
import pkgutil

from deltaspace.deltas.base import AttachedDelta, DeltaConfig
from deltaspace.deltas.presets import available_methods, resolve_method
from deltaspace.deltas.registry import Preset, exported_configs, register_delta, registered_methods

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

globals().update(exported_configs())

__all__ = [
    "AttachedDelta",
    "DeltaConfig",
    "Preset",
    "available_methods",
    "register_delta",
    "registered_methods",
    "resolve_method",
    *sorted(exported_configs()),
]
