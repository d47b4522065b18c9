"""The deltaspace attention: attention with prefix keys/values and Coeff-Tuning head mixing.

Importing this package registers the ``"deltaspace"`` implementation (and its mask function) with
transformers; :func:`enable` / :func:`disable` route single attention modules to it and back (the others
keep the model's own implementation). Two exact paths compute it: explicit (whole maps) and blocked
(query panels, recomputed in backward); see :mod:`deltaspace.attention.core`.
"""

from deltaspace.attention.core import attend
from deltaspace.attention.discovery import (
    find_attention_modules,
    is_cross_attention,
    is_timm_style,
    layer_index,
    num_query_heads,
)
from deltaspace.attention.function import (
    ATTENTION_NAME,
    deltaspace_attention_forward,
    disable,
    enable,
    is_enabled,
)
from deltaspace.attention.mixing import mix_heads, mix_heads_reference

__all__ = [
    "ATTENTION_NAME",
    "attend",
    "deltaspace_attention_forward",
    "disable",
    "enable",
    "find_attention_modules",
    "is_cross_attention",
    "is_enabled",
    "is_timm_style",
    "layer_index",
    "mix_heads",
    "mix_heads_reference",
    "num_query_heads",
]
