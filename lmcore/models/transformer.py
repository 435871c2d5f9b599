"""The Transformer of Vaswani et al. (2017), "Attention Is All You Need", as a decoder-only LM.

The decoder stack of the paper without the encoder-decoder attention:

- token embedding multiplied by sqrt(d_model), plus fixed sinusoidal position encodings,
- ``n_layer`` blocks of causal multi-head self-attention and a position-wise ReLU
  feed-forward network (``ffn_ratio`` x wider than d_model; the paper's 2048 = 4 x 512),
- dropout on the embedding sum, the attention probabilities and each residual branch,
- LayerNorm placement by ``norm_position``:

  * ``"post"`` (the paper): ``x = LayerNorm(x + sublayer(x))``. Needs learning-rate
    warm-up to train stably, more so the deeper the stack.
  * ``"pre"`` (Xiong et al., 2020, "On Layer Normalization in the Transformer
    Architecture"; GPT-2): ``x = x + sublayer(LayerNorm(x))`` with a final LayerNorm
    before the output. The residual path stays an identity, so it trains stably
    without warm-up.

- an output projection tied to the token embedding (``tie_weights``, as in the paper).

There is no KV cache: each call attends over its own ``input_ids`` (at most ``block_size`` tokens).

Shapes in comments: B = batch, T = time, C = n_embd (d_model), nh = n_head,
hd = C // nh (head size, d_k), V = vocab_size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lmcore.models.base import (
    LanguageModel, LMConfig, LMOutput, check_choice, check_dropout, check_positive_int, check_tokens, lm_loss,
)

NORM_POSITIONS: tuple[str, ...] = ("post", "pre")


@dataclass
class TransformerConfig(LMConfig):
    """Decoder-only Transformer hyper-parameters (names as in nanoGPT / lmcore's GPT)."""

    model_type: ClassVar[str] = "transformer"

    block_size: int = 256  # longest input in tokens (the context the model can attend to)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256  # d_model; each head has n_embd // n_head dimensions
    ffn_ratio: float = 4.0  # feed-forward width d_ff = ffn_ratio * n_embd
    dropout: float = 0.1  # P_drop of the paper
    norm_position: str = "post"  # "post" (the paper) or "pre" (stable without warm-up)
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("block_size", "n_layer", "n_head", "n_embd"):
            check_positive_int(name, getattr(self, name))
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}) to split it into heads"
            )
        if isinstance(self.ffn_ratio, bool) or not isinstance(self.ffn_ratio, (int, float)) or self.ffn_ratio <= 0:
            raise ValueError(f"ffn_ratio must be a positive number, got {self.ffn_ratio!r}")
        if self.ffn_hidden_size < 1:
            raise ValueError(f"ffn_ratio * n_embd must be at least 1, got {self.ffn_ratio} * {self.n_embd}")
        check_dropout(self.dropout)
        check_choice("norm_position", self.norm_position, NORM_POSITIONS)
        if self.layer_norm_eps <= 0:
            raise ValueError(f"layer_norm_eps must be positive, got {self.layer_norm_eps}")

    @property
    def ffn_hidden_size(self) -> int:
        """d_ff, the width of the feed-forward network's hidden layer."""
        return round(self.ffn_ratio * self.n_embd)


def sinusoidal_position_encoding(length: int, dim: int) -> torch.Tensor:
    """(length, dim) table: PE[pos, 2i] = sin(pos / 10000^(2i/dim)), PE[pos, 2i+1] = cos(same angle)."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)  # (length, 1)
    inverse_wavelength = torch.exp(
        torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10_000.0) / dim)
    )  # (ceil(dim / 2),): 1 / 10000^(2i/dim)
    angle = position * inverse_wavelength  # (length, ceil(dim / 2))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : dim // 2])
    return table


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position t sees positions 0..t only."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)  # W^Q, W^K, W^V of all heads at once
        self.proj = nn.Linear(config.n_embd, config.n_embd)  # W^O
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C)."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # each (B, T, C)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hd)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hd)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hd)
        # Per head: softmax(q k^T / sqrt(hd) + M) v, with the causal mask M[i, j] = -inf for j > i
        # (so row i of the (T, T) weights is a distribution over positions 0..i), and dropout on
        # those weights while training. scaled_dot_product_attention computes exactly this, with
        # a fused kernel when one is available.
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )  # (B, nh, T, hd)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # Concat(head_1, ..., head_nh): (B, T, C)
        return self.resid_dropout(self.proj(y))


class FeedForward(nn.Module):
    """FFN(x) = max(0, x W_1 + b_1) W_2 + b_2, applied at each position: C -> d_ff -> C."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.n_embd, config.ffn_hidden_size)
        self.fc2 = nn.Linear(config.ffn_hidden_size, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C)."""
        return self.dropout(self.fc2(torch.relu(self.fc1(x))))


class Block(nn.Module):
    """Self-attention then feed-forward, each a residual branch with LayerNorm after ("post") or before ("pre")."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.pre_norm = config.norm_position == "pre"
        self.attn = CausalSelfAttention(config)
        self.norm1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)
        self.norm2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C)."""
        if self.pre_norm:
            x = x + self.attn(self.norm1(x))
            x = x + self.ffn(self.norm2(x))
        else:
            x = self.norm1(x + self.attn(x))
            x = self.norm2(x + self.ffn(x))
        return x


class TransformerLM(LanguageModel):
    """Decoder-only Transformer LM. ``forward(input_ids (B, T)) -> LMOutput(logits (B, T, V))``, T <= block_size."""

    config_class: ClassVar[type[LMConfig]] = TransformerConfig
    config: TransformerConfig

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config)
        self.token_embedding = nn.Embedding(config.vocab_size, config.n_embd)
        self.register_buffer(  # fixed, so not saved: rebuilt from the config
            "position_encoding", sinusoidal_position_encoding(config.block_size, config.n_embd), persistent=False
        )
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        # Pre-LN leaves the residual stream unnormalised, so it gets a final LayerNorm; post-LN
        # blocks already end with one.
        self.final_norm = (
            nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps) if config.norm_position == "pre" else nn.Identity()
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self._init_weights()
        if config.tie_weights:
            self.lm_head.weight = self.token_embedding.weight  # one (V, C) tensor for both

    def _init_weights(self) -> None:
        # Xavier-uniform projections with zero biases (as the reference tensor2tensor code); the
        # embedding ~ N(0, 1/C), so that sqrt(C) * embedding has unit variance like the position
        # encodings, and tied logits h . e start at unit scale.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.token_embedding.weight, mean=0.0, std=self.config.n_embd**-0.5)
        nn.init.normal_(self.lm_head.weight, mean=0.0, std=self.config.n_embd**-0.5)

    @property
    def max_context(self) -> int:
        return self.config.block_size

    def forward(
        self,
        input_ids: torch.Tensor,
        state: Any = None,
        labels: torch.Tensor | None = None,
        use_cache: bool = False,
    ) -> LMOutput:
        """Next-token logits for every position.

        input_ids: (B, T) token ids in [0, vocab_size), T <= block_size.
        state: must be None (this model has no recurrent state or KV cache).
        labels: (B, T) already-shifted targets, -100 = no target; gives ``loss``.
        use_cache: accepted for the shared interface; there is no cache, so ``state`` stays None.
        """
        check_tokens(input_ids, labels, self.config.vocab_size)
        if state is not None:
            raise ValueError("TransformerLM has no recurrent state or KV cache: pass state=None")
        T = input_ids.size(1)
        if T > self.config.block_size:
            raise ValueError(
                f"input of {T} tokens is longer than block_size={self.config.block_size}, "
                "the most this Transformer can attend to"
            )
        x = self.token_embedding(input_ids) * math.sqrt(self.config.n_embd)  # (B, T, C)
        x = self.dropout(x + self.position_encoding[:T])  # (B, T, C)
        for block in self.blocks:
            x = block(x)  # (B, T, C)
        logits = self.lm_head(self.final_norm(x))  # (B, T, V)
        loss = lm_loss(logits, labels) if labels is not None else None
        return LMOutput(logits=logits, loss=loss)
