"""The deltaspace attention: attention with prefix keys/values and Coeff-Tuning head mixing.

Importing this package registers the ``"deltaspace"`` implementation (and its mask function) with
transformers; :func:`enable` / :func:`disable` route single attention modules to it and back (the others
keep the model's own implementation). Attention-level deltas put their hooks on modules with
:func:`attach_hooks` (which routes them) and take them off with :func:`detach_hooks`. Two exact paths
compute it: explicit (whole maps) and blocked (query panels, recomputed in backward); see
:mod:`deltaspace.attention.core`.
"""

from deltaspace.attention.core import attend
from deltaspace.attention.discovery import (
    find_attention_modules,
    is_cross_attention,
    is_timm_style,
    layer_index,
    num_query_heads,
)
from deltaspace.attention.function import deltaspace_attention_forward
from deltaspace.attention.hooks import COEFF_HOOK, PREFIX_HOOK, hook_of, register_hook
from deltaspace.attention.mixing import mix_heads, mix_heads_reference
from deltaspace.attention.routing import (
    ATTENTION_NAME,
    attach_hooks,
    detach_hooks,
    disable,
    enable,
    is_enabled,
)

__all__ = [
    "ATTENTION_NAME",
    "COEFF_HOOK",
    "PREFIX_HOOK",
    "attach_hooks",
    "attend",
    "deltaspace_attention_forward",
    "detach_hooks",
    "disable",
    "enable",
    "find_attention_modules",
    "hook_of",
    "is_cross_attention",
    "is_enabled",
    "is_timm_style",
    "layer_index",
    "mix_heads",
    "mix_heads_reference",
    "num_query_heads",
    "register_hook",
]
