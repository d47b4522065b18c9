"""Task heads that are not Hugging Face's, one module each; neither adds task-specific trainable parameters.

- :mod:`~deltaspace.heads.prototype`: :class:`PrototypeClassifier`, an encoder's mean-pooled text against
  fixed embeddings of the label names (the subspace study's head).
- :mod:`~deltaspace.heads.verbalizer`: :class:`VerbalizerClassifier`, a causal LM's log-probability of each
  label's word after the text and a prompt.
"""

from deltaspace.assets.embed import mean_pool
from deltaspace.heads.labels import label_text
from deltaspace.heads.prototype import (
    DEFAULT_TEMPERATURE,
    PrototypeClassifier,
    encode_mean_pooled,
    label_prototypes,
)
from deltaspace.heads.verbalizer import DEFAULT_PROMPT, VerbalizerClassifier, label_token_ids

__all__ = [
    "DEFAULT_PROMPT",
    "DEFAULT_TEMPERATURE",
    "PrototypeClassifier",
    "VerbalizerClassifier",
    "encode_mean_pooled",
    "label_prototypes",
    "label_text",
    "label_token_ids",
    "mean_pool",
]
