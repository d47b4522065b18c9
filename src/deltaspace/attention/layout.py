"""Which keys each query may see, kept in the form the model handed over (nothing new of size N×N).

transformers gives the attention function a mask in the format of the implementation the model was loaded
with: a 4D additive float mask (eager), a 4D boolean mask or ``None`` plus ``is_causal`` (SDPA), or a 2D
padding mask plus ``sliding_window`` (FlashAttention-style). :class:`KeyLayout` keeps that mask as given and
adds causality / a sliding window only where the mask does not already encode them, so both attention paths
can ask for the additive mask of any (query rows × key columns) block, and the blocked path can skip key
columns no query of a block can see. Prefix keys (prefix tuning) sit in front of the model's keys and are
visible to every query.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# The additive value of a masked score: the finfo.min transformers' eager masks use (float32 compute).
MASKED = torch.finfo(torch.float32).min


def _rows(tensor: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Rows [start, stop) of a (..., rows, cols) tensor whose row dimension may be broadcast (size 1)."""
    return tensor if tensor.shape[-2] == 1 else tensor[..., start:stop, :]


@dataclass(frozen=True)
class KeyLayout:
    """Visibility of ``num_prefix + kv_len`` keys (prefix first) from ``q_len`` queries.

    ``mask``: (B|1, 1|H, Lq, Lk) boolean (True = attend) or additive float over the model's keys, or None.
    ``causal_offset``: if set, key j (model coordinates) is visible from query i only when j <= i + offset.
    ``window``: with ``causal_offset``, key j is visible only when j > i + offset - window.
    ``bias``: additive (B|1, H|1, Lq, Lk) scores (T5 position bias) over the model's keys, or None.
    """

    q_len: int
    kv_len: int
    num_prefix: int = 0
    mask: torch.Tensor | None = None
    causal_offset: int | None = None
    window: int | None = None
    bias: torch.Tensor | None = None

    @property
    def total_keys(self) -> int:
        return self.num_prefix + self.kv_len

    @classmethod
    def build(
        cls,
        attention_mask: torch.Tensor | None,
        *,
        q_len: int,
        kv_len: int,
        num_prefix: int,
        causal: bool,
        sliding_window: int | None,
        bias: torch.Tensor | None,
    ) -> KeyLayout:
        """Normalise what transformers passed (see the module docstring) without expanding it."""
        if attention_mask is not None and not isinstance(attention_mask, torch.Tensor):
            raise ValueError(
                f"the deltaspace attention needs a tensor attention mask, got {type(attention_mask).__name__} "
                "(flex attention's BlockMask?); load the model with attn_implementation='sdpa' or 'eager'"
            )
        mask = attention_mask
        structural = mask is None or mask.dim() == 2
        if mask is not None and mask.dim() == 2:  # (B, Lk) padding mask, 1 = attend
            mask = mask[:, None, None, :].bool()
        if mask is not None:
            if mask.dim() != 4:
                raise ValueError(f"attention mask must be 2D or 4D, got shape {tuple(mask.shape)}")
            # Some callers hand over a mask sized for the whole cache; only the first kv_len columns apply.
            mask = mask[..., -q_len:, :kv_len] if mask.shape[-2] > q_len else mask[..., :kv_len]
        if bias is not None:
            bias = bias[..., -q_len:, :kv_len] if bias.shape[-2] > q_len else bias[..., :kv_len]
        offset = kv_len - q_len if structural and causal and q_len > 1 else None
        window = int(sliding_window) if offset is not None and sliding_window else None
        return cls(q_len, kv_len, num_prefix, mask, offset, window, bias)

    def columns(self, row_start: int, row_stop: int) -> tuple[int, int]:
        """Key columns [lo, hi) (prefix included) outside which rows [row_start, row_stop) see nothing.

        Prefix columns are always visible, so with a prefix the range starts at 0. A block whose rows see no
        key at all keeps the full range (such rows are padding queries; they come out uniform, as in eager).
        """
        lo, hi = 0, self.kv_len
        if self.causal_offset is not None:
            hi = min(hi, row_stop + self.causal_offset)
            if self.window is not None:
                lo = max(0, row_start + self.causal_offset - self.window + 1)
        if self.mask is not None and hi > lo:
            block = _rows(self.mask, row_start, row_stop)[..., lo:hi]
            visible = block if block.dtype == torch.bool else block > MASKED / 2
            cols = visible.flatten(0, -2).any(0).nonzero()
            if len(cols):
                lo, hi = lo + int(cols[0]), lo + int(cols[-1]) + 1
        if hi <= lo:
            lo, hi = 0, self.kv_len
        return (0 if self.num_prefix else self.num_prefix + lo), self.num_prefix + hi

    def apply(
        self, scores: torch.Tensor, row_start: int, col_start: int, *, inplace: bool = True
    ) -> torch.Tensor:
        """Add bias and mask to ``scores`` (B, H, rows, cols), a block at (row_start, col_start) (prefix-first
        coordinates). ``inplace=False`` leaves ``scores`` untouched (for autograd-recorded tensors)."""
        rows, cols = scores.shape[-2:]
        row_stop = row_start + rows
        skip = max(self.num_prefix - col_start, 0)  # leading prefix columns of the block: always visible
        if skip >= cols:
            return scores
        start, stop = col_start + skip - self.num_prefix, col_start + cols - self.num_prefix
        target = scores if inplace else scores.clone()
        view = target[..., skip:]
        if self.bias is not None:
            view.add_(_rows(self.bias, row_start, row_stop)[..., start:stop])
        if self.mask is not None:
            block = _rows(self.mask, row_start, row_stop)[..., start:stop]
            if block.dtype == torch.bool:
                view.masked_fill_(~block, MASKED)
            else:
                view.add_(block)
        if self.causal_offset is not None:
            query_pos = torch.arange(row_start, row_stop, device=scores.device)[:, None] + self.causal_offset
            key_pos = torch.arange(start, stop, device=scores.device)[None, :]
            hidden = key_pos > query_pos
            if self.window is not None:
                hidden |= key_pos <= query_pos - self.window
            view.masked_fill_(hidden, MASKED)
        return target
