"""Full fine-tuning as a delta: every base parameter is trainable and θ0 is the pretrained weights.

No module is added. By default ``detach`` writes the pretrained values back (a copy is kept at attach, which
costs one model's worth of memory), so unloading returns the untouched base; set ``restore_on_detach=False``
to skip the copy and leave the tuned weights in place.
"""

from __future__ import annotations

import dataclasses
import re

from torch import nn

from deltaspace.deltas.base import DeltaConfig, InPlaceAttached
from deltaspace.deltas.bitfit import embedding_parameter_names, is_head_parameter
from deltaspace.deltas.registry import Preset, register_delta


# lr: the tuned comparison (suite v1, MiniLM-L6) chose 1.58e-4 on 5 of 10 tasks, 5e-5 on 4 (docs/results.md).
@register_delta(Preset("full", "full fine-tuning of every base parameter", seeded_init=False, lr=1.58e-4))
@dataclasses.dataclass
class FullFineTuningConfig(DeltaConfig):
    """Train all base parameters except the excluded ones.

    exclude_head skips task heads (DeltaModel trains them anyway); exclude_embeddings skips the embedding
    block; exclude_patterns are regexes searched in parameter names.
    """

    method = "full"

    exclude_head: bool = True
    exclude_embeddings: bool = False
    exclude_patterns: list[str] = dataclasses.field(default_factory=list)
    restore_on_detach: bool = True

    def trainable_names(self, model: nn.Module) -> list[str]:
        embeddings = embedding_parameter_names(model) if self.exclude_embeddings else set()
        regexes = [re.compile(p) for p in self.exclude_patterns]
        return [
            name
            for name, _ in model.named_parameters()
            if not (self.exclude_head and is_head_parameter(name))
            and name not in embeddings
            and not any(r.search(name) for r in regexes)
        ]

    def attach(self, model: nn.Module) -> AttachedFull:
        names = self.trainable_names(model)
        if not names:
            raise ValueError(
                f"full fine-tuning excluded every parameter of {type(model).__name__}; loosen exclude_patterns "
                "or exclude_embeddings"
            )
        return AttachedFull.capture(self, model, names, keep_originals=self.restore_on_detach)


class AttachedFull(InPlaceAttached):
    """The base parameters full fine-tuning trains, with their pretrained values (unless not kept)."""
