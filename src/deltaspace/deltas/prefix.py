"""Prefix tuning (Li & Liang 2021) in the unified-subspace paper's form.

Every self-attention layer gets ``num_virtual_tokens`` (P) trainable key and value vectors per key/value
head, which the registered attention function "deltaspace" concatenates in front of the layer's keys and
values (padding the mask so every query may attend to them). Nothing is added to the token sequence.

With ``reparameterize=True`` (the paper's setting) all layers' prefixes come from one shared generator on the
model root, ``ds_prefix_generator``: an embedding E (P×D, init N(0, 0.02)) -> Linear(D -> r, no bias) -> tanh
-> Linear(r -> Σ_l 2·H_kv·head_dim, no bias). The trainable tensors, hence the solution, are E and the two
weight matrices (the paper's flattening: embedding, W1, W2). With ``reparameterize=False`` each layer owns
its key and value tensors directly (H_kv×P×head_dim each).

Each attention module gets the prefix hook (``deltaspace.attention.PREFIX_HOOK``), a small submodule called as
``hook(batch_size) -> (key, value)``, each of shape
(B, H_kv, P, head_dim); in the reparameterised case it computes only its own slice of the generator's output
(its rows of the up-projection). PEFT's prefix tuning is not used: it only works through ``PeftModel`` and
past_key_values, which do not fit the attach contract or encoders without a cache.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from deltaspace.attention.discovery import (
    find_attention_modules,
    is_cross_attention,
    kv_shape,
    num_query_heads,
)
from deltaspace.attention.hooks import PREFIX_HOOK, hook_of
from deltaspace.attention.routing import attach_hooks, detach_hooks, switch_hooks
from deltaspace.deltas.base import AttachedDelta, DeltaConfig
from deltaspace.deltas.registry import Preset, register_delta

GENERATOR_ATTR = f"{PREFIX_HOOK}_generator"


def self_attention_modules(model: nn.Module) -> list[str]:
    """Qualified names of the self-attention modules (the ones Coeff-Tuning targets), cross-attention excluded."""
    return [name for name, module in find_attention_modules(model) if not is_cross_attention(name, module)]


class PrefixGenerator(nn.Module):
    """E -> Linear(D, r) -> tanh -> Linear(r, Σ_l 2·H_kv·head_dim), shared by all layers."""

    def __init__(
        self, num_tokens: int, embed_dim: int, hidden: int, out_features: int, init_std: float
    ) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.randn(num_tokens, embed_dim) * init_std)
        self.down = nn.Linear(embed_dim, hidden, bias=False)
        self.up = nn.Linear(hidden, out_features, bias=False)

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Columns [start, stop) of the full output ``up(tanh(down(E)))``, shape (P, stop - start)."""
        return torch.tanh(self.down(self.embedding)) @ self.up.weight[start:stop].T


class LayerPrefix(nn.Module):
    """A layer's prefix hook: own key/value tensors, or a slice of the shared generator."""

    def __init__(self, kv_heads: int, head_dim: int, num_tokens: int) -> None:
        super().__init__()
        self.kv_heads, self.head_dim, self.num_tokens = kv_heads, head_dim, num_tokens
        self.offset = 0
        self.__dict__["_generator"] = None  # plain reference: the generator is registered on the model root

    @classmethod
    def direct(cls, kv_heads: int, head_dim: int, num_tokens: int, init_std: float) -> LayerPrefix:
        layer = cls(kv_heads, head_dim, num_tokens)
        layer.key = nn.Parameter(torch.randn(kv_heads, num_tokens, head_dim) * init_std)
        layer.value = nn.Parameter(torch.randn(kv_heads, num_tokens, head_dim) * init_std)
        return layer

    @classmethod
    def sliced(cls, kv_heads: int, head_dim: int, num_tokens: int, generator: PrefixGenerator, offset: int):
        layer = cls(kv_heads, head_dim, num_tokens)
        layer.__dict__["_generator"] = generator
        layer.offset = offset
        return layer

    @property
    def size(self) -> int:
        return 2 * self.kv_heads * self.head_dim

    def forward(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = self.__dict__["_generator"]
        if generator is None:
            key, value = self.key, self.value
        else:
            flat = generator.rows(self.offset, self.offset + self.size)  # (P, 2·H_kv·head_dim)
            kv = flat.view(self.num_tokens, 2, self.kv_heads, self.head_dim).permute(1, 2, 0, 3)
            key, value = kv[0], kv[1]
        shape = (batch_size, self.kv_heads, self.num_tokens, self.head_dim)
        return key.unsqueeze(0).expand(shape), value.unsqueeze(0).expand(shape)


# lr: the tuned comparison (suite v1, MiniLM-L6) chose 1.58e-2 on 7 of 10 tasks (docs/results.md).
@register_delta(
    Preset(
        "prefix",
        "prefix tuning, 10 virtual tokens, tanh-MLP reparameterisation r=64",
        changes_output_at_init=True,
        lr=1.58e-2,
    )
)
@dataclasses.dataclass
class PrefixTuningConfig(DeltaConfig):
    """Key/value prefixes of ``num_virtual_tokens`` on every self-attention layer.

    reparameterize: generate all prefixes from an embedding through a tanh MLP with ``hidden_size`` units
    (the paper); otherwise train them directly. ``embed_dim`` defaults to the model's hidden size.
    """

    method = "prefix"

    num_virtual_tokens: int = 10
    reparameterize: bool = True
    hidden_size: int = 64
    embed_dim: int | None = None
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.num_virtual_tokens < 1:
            raise ValueError(f"num_virtual_tokens must be >= 1, got {self.num_virtual_tokens}")
        if self.reparameterize and self.hidden_size < 1:
            raise ValueError(f"prefix hidden_size must be >= 1, got {self.hidden_size}")

    def attach(self, model: nn.Module) -> AttachedPrefix:
        names = self_attention_modules(model)
        if not names:
            raise ValueError(
                f"found no attention module of {type(model).__name__} that uses transformers' attention "
                "interface; prefix tuning needs one (e.g. BERT, LLaMA, ViT)"
            )
        modules = [model.get_submodule(n) for n in names]
        if hasattr(model, GENERATOR_ATTR) or any(hook_of(m, PREFIX_HOOK) is not None for m in modules):
            raise ValueError("the model already carries prefixes; detach them before attaching another")
        reference = next(model.parameters())
        # Trainable tensors stay float32 under a half-precision base (the attention casts the prefixes).
        dtype = torch.float32 if reference.dtype in (torch.float16, torch.bfloat16) else reference.dtype
        shapes = [kv_shape(m) for m in modules]
        num = self.num_virtual_tokens
        if self.reparameterize:
            # D: the model's hidden size (for models without a config, the first layer's heads × head size).
            embed_dim = self.embed_dim or getattr(getattr(model, "config", None), "hidden_size", None)
            embed_dim = embed_dim or num_query_heads(modules[0]) * shapes[0][1]
            total = sum(2 * h * d for h, d in shapes)
            generator = PrefixGenerator(num, embed_dim, self.hidden_size, total, self.init_std)
            generator.to(device=reference.device, dtype=dtype)
            model.add_module(GENERATOR_ATTR, generator)
            offset, layers = 0, []
            for h, d in shapes:
                layers.append(LayerPrefix.sliced(h, d, num, generator, offset))
                offset += 2 * h * d
            param_names = [f"{GENERATOR_ATTR}.{p}" for p, _ in generator.named_parameters()]
        else:
            layers = [
                LayerPrefix.direct(h, d, num, self.init_std).to(device=reference.device, dtype=dtype)
                for h, d in shapes
            ]
            param_names = [f"{n}.{PREFIX_HOOK}.{p}" for n in names for p in ("key", "value")]
        # The prefixes only take effect through the deltaspace attention: attach_hooks routes these modules
        # (only these), so detach leaves the model exactly as it found it.
        try:
            attach_hooks(model, PREFIX_HOOK, list(zip(modules, layers, strict=True)))
        except ValueError:
            if self.reparameterize:
                delattr(model, GENERATOR_ATTR)
            raise
        return AttachedPrefix(self, names, param_names)


@dataclasses.dataclass
class AttachedPrefix(AttachedDelta):
    """The prefixes on ``module_names`` and the names of their trainable tensors."""

    config: PrefixTuningConfig
    module_names: list[str]
    param_names: list[str]
    _parked: list[nn.Module] | None = dataclasses.field(default=None, init=False, repr=False)

    def parameter_names(self) -> list[str]:
        return list(self.param_names)

    def disable_refusal(self, model: nn.Module) -> str | None:
        return None

    def set_enabled(self, model: nn.Module, enabled: bool) -> None:
        # Off = the layer hooks taken off (modules back on their own attention); the shared generator stays on
        # the root, unused, so the same objects go back on.
        modules = [model.get_submodule(name) for name in self.module_names]
        self._parked = switch_hooks(model, PREFIX_HOOK, modules, self._parked, enabled)

    def detach(self, model: nn.Module) -> None:
        # Another attention-level delta (e.g. Coeff-Tuning) may still need the route on some of them.
        detach_hooks(PREFIX_HOOK, [model.get_submodule(name) for name in self.module_names])
        if hasattr(model, GENERATOR_ATTR):
            delattr(model, GENERATOR_ATTR)

    def merge_refusal(self, model: nn.Module) -> str | None:
        return "prefix keys and values are extra attention positions, not a weight of the base model"
