"""GPT-2, written out in the style of nanoGPT's model.py.

A decoder-only Transformer (Radford et al., 2019) with

- learned token and position embeddings (``wte``, ``wpe``),
- pre-LayerNorm blocks: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``,
- a 4x-wide MLP with GELU in its tanh approximation (GPT-2's ``gelu_new``),
- a final LayerNorm and an output projection tied to the token embedding,
- GPT-2's initialisation: normal(0, 0.02), with the two residual projections of
  each block scaled down by ``1/sqrt(2 * n_layer)``.

Module and parameter names match Hugging Face's ``GPT2LMHeadModel``, so its
weights load with :meth:`GPT.from_hf_state_dict` (the only change: GPT-2's
``Conv1D`` stores linear weights as (in, out), ``nn.Linear`` as (out, in)).

Shapes in comments: B = batch, T = new tokens, P = cached tokens, C = n_embd,
nh = n_head, hd = C // nh (head size), V = vocab_size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lmcore.models.base import (
    LanguageModel, LMConfig, LMOutput, check_dropout, check_positive_int, check_tokens, lm_loss,
)

if TYPE_CHECKING:
    from transformers import GPT2Config, GPT2LMHeadModel

# One layer's cache: (keys, values), each (B, nh, P, hd). The model's cache is a tuple of these, one per layer.
LayerCache = tuple[torch.Tensor, torch.Tensor]
KVCache = tuple[LayerCache, ...]

# Architectures by name. "tiny" is for tests and quick experiments; the others are OpenAI's GPT-2 sizes.
NAMED_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=64, block_size=64),
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024),  # 124M parameters
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024, block_size=1024),  # 355M
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280, block_size=1024),  # 774M
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600, block_size=1024),  # 1558M
}

# GPT-2's Conv1D layers, whose weights are stored transposed relative to nn.Linear.
_HF_CONV1D_SUFFIXES = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")
# Buffers that older GPT-2 checkpoints carry (a causal mask and its fill value); not weights.
_HF_MASK_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")


@dataclass
class GPTConfig(LMConfig):
    """GPT-2 hyper-parameters. The defaults are GPT-2 small (124M) with the GPT-2 tokenizer's vocabulary."""

    model_type: ClassVar[str] = "gpt"

    vocab_size: int = 50_257
    block_size: int = 1024  # longest sequence (in tokens) the position embedding covers
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768  # model width C; each head has C // n_head dimensions
    dropout: float = 0.0  # on embeddings, attention probabilities and residual branches (GPT-2 trained with 0.1)
    bias: bool = True  # biases in Linear and LayerNorm layers, as in GPT-2; False is a little faster
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("block_size", "n_layer", "n_head", "n_embd"):
            check_positive_int(name, getattr(self, name))
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}) to split it into heads"
            )
        check_dropout(self.dropout)
        if self.layer_norm_eps <= 0:
            raise ValueError(f"layer_norm_eps must be positive, got {self.layer_norm_eps}")

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> GPTConfig:
        """A named size (``"tiny"``, ``"gpt2"``, ``"gpt2-medium"``, ...), with fields overridden by keyword.

        Example: ``GPTConfig.from_name("tiny", vocab_size=65, dropout=0.1)``.
        """
        if name not in NAMED_SIZES:
            raise ValueError(f"unknown GPT size {name!r}; allowed: {', '.join(NAMED_SIZES)}")
        return cls.from_dict({**NAMED_SIZES[name], **overrides})

    @classmethod
    def from_hf_config(cls, hf_config: GPT2Config, **overrides: Any) -> GPTConfig:
        """The config matching a Hugging Face ``transformers.GPT2Config``.

        ValueError when the HF config uses an option this implementation does not have.
        """
        dropouts = {hf_config.resid_pdrop, hf_config.embd_pdrop, hf_config.attn_pdrop}
        unsupported = {
            "activation_function must be 'gelu_new' or 'gelu_pytorch_tanh'": hf_config.activation_function
            not in ("gelu_new", "gelu_pytorch_tanh"),
            "n_inner must be None or 4 * n_embd": hf_config.n_inner not in (None, 4 * hf_config.n_embd),
            "resid_pdrop, embd_pdrop and attn_pdrop must be equal": len(dropouts) != 1,
            "scale_attn_weights must be True": not hf_config.scale_attn_weights,
            "scale_attn_by_inverse_layer_idx must be False": hf_config.scale_attn_by_inverse_layer_idx,
            "add_cross_attention must be False": hf_config.add_cross_attention,
        }
        problems = [rule for rule, broken in unsupported.items() if broken]
        if problems:
            raise ValueError(f"this GPT2Config cannot be represented by lmcore's GPT: {'; '.join(problems)}")
        values = dict(
            vocab_size=hf_config.vocab_size,
            block_size=hf_config.n_positions,
            n_layer=hf_config.n_layer,
            n_head=hf_config.n_head,
            n_embd=hf_config.n_embd,
            dropout=float(hf_config.resid_pdrop),
            bias=True,
            layer_norm_eps=hf_config.layer_norm_epsilon,
            tie_weights=hf_config.tie_word_embeddings,
        )
        return cls.from_dict({**values, **overrides})


class CausalSelfAttention(nn.Module):
    """Multi-head masked self-attention; each position attends to itself and earlier positions."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # query, key, value at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)  # residual projection
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, past: LayerCache | None = None, attn_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, LayerCache]:
        """x: (B, T, C); past: cached (keys, values) of earlier tokens, each (B, nh, P, hd).

        ``attn_mask`` (T, P + T), True where a query may attend, is needed when ``past`` is given
        and T > 1. Returns the output (B, T, C) and the keys/values of all P + T tokens.
        """
        B, T, C = x.shape
        head_size = C // self.n_head
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # each (B, T, C)
        q = q.view(B, T, self.n_head, head_size).transpose(1, 2)  # (B, nh, T, hd)
        k = k.view(B, T, self.n_head, head_size).transpose(1, 2)  # (B, nh, T, hd)
        v = v.view(B, T, self.n_head, head_size).transpose(1, 2)  # (B, nh, T, hd)
        if past is not None:
            past_k, past_v = past
            k = torch.cat([past_k, k], dim=2)  # (B, nh, P + T, hd)
            v = torch.cat([past_v, v], dim=2)  # (B, nh, P + T, hd)
        # softmax(q k^T / sqrt(hd)) v. Without a cache, is_causal masks the future; with one, the
        # caller's attn_mask does (is_causal would align the triangle top-left, hiding the cache).
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0, is_causal=past is None
        )  # (B, nh, T, hd)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side
        return self.resid_dropout(self.c_proj(y)), (k, v)


class MLP(nn.Module):
    """Position-wise feed-forward network: C -> 4C -> GELU -> C."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's "gelu_new"
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)  # residual projection
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C)."""
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """One pre-LayerNorm Transformer block."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, past: LayerCache | None = None, attn_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, LayerCache]:
        """x: (B, T, C) -> (B, T, C), plus this layer's keys/values (see CausalSelfAttention)."""
        attended, kv = self.attn(self.ln_1(x), past, attn_mask)
        x = x + attended
        x = x + self.mlp(self.ln_2(x))
        return x, kv


class GPT(LanguageModel):
    """GPT-2 language model. ``forward(input_ids (B, T)) -> LMOutput(logits (B, T, V))``."""

    config_class: ClassVar[type[LMConfig]] = GPTConfig
    supports_cache: ClassVar[bool] = True
    config: GPTConfig

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embedding
                wpe=nn.Embedding(config.block_size, config.n_embd),  # position embedding
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.transformer.wte.weight  # one (V, C) tensor for both
        self.apply(self._init_weights)
        # GPT-2: scale the projections that write into the residual stream by 1/sqrt(number of residual layers).
        residual_std = 0.02 / math.sqrt(2 * config.n_layer)
        for block in self.transformer.h:
            nn.init.normal_(block.attn.c_proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.mlp.c_proj.weight, mean=0.0, std=residual_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def max_context(self) -> int:
        return self.config.block_size

    def forward(
        self,
        input_ids: torch.Tensor,
        state: KVCache | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool = False,
    ) -> LMOutput:
        """Next-token logits for every position.

        input_ids: (B, T) token ids in [0, vocab_size).
        state: a KV cache from an earlier call with ``use_cache=True``; ``input_ids`` then continue
            that sequence (positions start after the cached tokens).
        labels: (B, T) already-shifted targets, -100 = no target; gives ``loss``.
        use_cache: return the KV cache of all tokens so far as ``state``: a tuple with one
            (keys, values) pair per layer, each (B, n_head, P + T, n_embd // n_head).
        """
        check_tokens(input_ids, labels, self.config.vocab_size)
        B, T = input_ids.shape
        past_length = self._cache_length(state, B)
        if past_length + T > self.config.block_size:
            raise ValueError(
                f"sequence of {past_length + T} tokens ({past_length} cached + {T} new) is longer than "
                f"block_size={self.config.block_size}, the most this GPT can attend to"
            )
        positions = torch.arange(past_length, past_length + T, device=input_ids.device)  # (T,)
        x = self.transformer.wte(input_ids) + self.transformer.wpe(positions)  # (B, T, C)
        x = self.transformer.drop(x)

        # New token t sits at position past_length + t and may see keys 0 .. past_length + t.
        attn_mask = None
        if state is not None and T > 1:
            attn_mask = torch.ones(T, past_length + T, dtype=torch.bool, device=input_ids.device)
            attn_mask = attn_mask.tril(diagonal=past_length)  # (T, P + T)

        new_cache: list[LayerCache] = []
        for layer, block in enumerate(self.transformer.h):
            x, kv = block(x, None if state is None else state[layer], attn_mask)  # (B, T, C)
            if use_cache:
                new_cache.append(kv)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)  # (B, T, V)

        loss = lm_loss(logits, labels) if labels is not None else None
        return LMOutput(logits=logits, loss=loss, state=tuple(new_cache) if use_cache else None)

    def _cache_length(self, state: KVCache | None, batch_size: int) -> int:
        """Number of cached tokens P in a KV cache (0 without one); ValueError for a malformed cache."""
        if state is None:
            return 0
        head_size = self.config.n_embd // self.config.n_head
        if len(state) != self.config.n_layer:
            raise ValueError(
                f"state must be the KV cache returned with use_cache=True: {self.config.n_layer} (keys, values) "
                f"pairs, one per layer; got {len(state)} entries"
            )
        keys = state[0][0]
        expected = (batch_size, self.config.n_head, keys.size(2), head_size)
        if keys.dim() != 4 or tuple(keys.shape) != expected:
            raise ValueError(
                f"cached keys must have shape (batch, n_head, cached_tokens, head_size) = {expected}, "
                f"got {tuple(keys.shape)}"
            )
        return keys.size(2)

    # ------------------------------------------------------------------ Hugging Face GPT-2 weights
    @classmethod
    def from_hf_state_dict(cls, config: GPTConfig, state_dict: dict[str, torch.Tensor]) -> GPT:
        """A GPT holding the weights of a Hugging Face ``GPT2LMHeadModel`` state dict.

        GPT-2's ``Conv1D`` layers keep weights as (in, out); they are transposed into ``nn.Linear``'s
        (out, in). ValueError when the weights do not fit ``config``.
        """
        model = cls(config)
        ours = model.state_dict()
        converted: dict[str, torch.Tensor] = {}
        for name, tensor in state_dict.items():
            if name.endswith(_HF_MASK_BUFFER_SUFFIXES):
                continue
            if name.endswith(_HF_CONV1D_SUFFIXES):
                tensor = tensor.t()
            converted[name] = tensor
        if config.tie_weights:
            converted.pop("lm_head.weight", None)  # the same tensor as transformer.wte.weight
        expected = set(ours) - ({"lm_head.weight"} if config.tie_weights else set())
        missing, unexpected = sorted(expected - set(converted)), sorted(set(converted) - expected)
        mismatched = [
            f"{name}: {tuple(converted[name].shape)} vs {tuple(ours[name].shape)}"
            for name in sorted(expected & set(converted))
            if converted[name].shape != ours[name].shape
        ]
        if missing or unexpected or mismatched:
            raise ValueError(
                "not a GPT2LMHeadModel state dict for this config: "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}, shape mismatches {mismatched[:5]}"
            )
        model.load_state_dict(converted, strict=False)
        return model

    @classmethod
    def from_hf(cls, model_name_or_path: str | Path = "openai-community/gpt2", **config_overrides: Any) -> GPT:
        """Load pretrained GPT-2 weights through ``transformers.GPT2LMHeadModel.from_pretrained``.

        ``model_name_or_path`` is a Hub id (``"openai-community/gpt2"``, ``"gpt2-medium"``, ...) or a
        local folder. ``config_overrides`` change fields that do not affect weight shapes, e.g. ``dropout``.
        """
        from transformers import GPT2LMHeadModel

        hf_model: GPT2LMHeadModel = GPT2LMHeadModel.from_pretrained(model_name_or_path, dtype=torch.float32)
        config = GPTConfig.from_hf_config(hf_model.config, **config_overrides)
        return cls.from_hf_state_dict(config, hf_model.state_dict())
