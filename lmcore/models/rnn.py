"""Elman RNN language model, written out step by step (no ``nn.RNN`` inside).

The architecture is PyTorch's ``word_language_model`` example (after Zaremba et al.,
2014, "Recurrent Neural Network Regularization")::

    embedding -> dropout -> recurrent layers (dropout between layers) -> dropout -> decoder

Each recurrent layer is an Elman cell::

    h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)

The parameters are stored exactly like ``nn.RNN``'s (``rnn.weight_ih_l0`` of shape
``(hidden, input)``, ...), so weights copy one-to-one between the two; the tests
use that to check this cell against ``nn.RNN``.

This file also holds what the RNN and LSTM language models share
(:class:`RecurrentConfig`, :class:`RecurrentLM`); ``lstm.py`` builds on them.

Initialisation: embedding and decoder uniform in ±0.1 (Zaremba et al.; word_language_model),
recurrent weights uniform in ±1/sqrt(hidden_size) (``nn.RNN`` / ``nn.LSTM``'s default).

State: ``h`` of shape ``(num_layers, batch, hidden_size)``; ``state=None`` means zeros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from lmcore.models.base import (
    LanguageModel, LMConfig, LMOutput, check_dropout, check_positive_int, check_tokens, lm_loss,
)

# Zaremba et al. / word_language_model: embeddings and decoder start uniform in ±0.1.
EMBEDDING_INIT_RANGE = 0.1


# ---------------------------------------------------------------------------- shared recurrent LM
@dataclass
class RecurrentConfig(LMConfig):
    """Fields shared by the RNN and LSTM language models."""

    hidden_size: int = 200  # units per recurrent layer
    embedding_size: int | None = None  # token embedding width; None: same as hidden_size
    num_layers: int = 2
    dropout: float = 0.0  # on embeddings, between recurrent layers and before the decoder

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.embedding_size is None:
            self.embedding_size = self.hidden_size
        check_positive_int("hidden_size", self.hidden_size)
        check_positive_int("embedding_size", self.embedding_size)
        check_positive_int("num_layers", self.num_layers)
        check_dropout(self.dropout)
        if self.tie_weights and self.embedding_size != self.hidden_size:
            raise ValueError(
                f"tie_weights=True needs embedding_size == hidden_size (the decoder reuses the embedding "
                f"matrix), got {self.embedding_size} and {self.hidden_size}; set tie_weights=False or make them equal"
            )


class RecurrentLM(LanguageModel):
    """embedding -> dropout -> ``self.rnn`` -> dropout -> decoder, as in word_language_model.

    Subclasses build ``self.rnn``: a module called as ``rnn(x, state) -> (output, new_state)``
    on time-major ``x`` of shape ``(time, batch, embedding_size)`` (the ``nn.RNN`` / ``nn.LSTM``
    calling convention), and say how a zero state looks in :meth:`initial_state`.
    """

    config_class: ClassVar[type[LMConfig]] = RecurrentConfig
    is_recurrent: ClassVar[bool] = True
    state_description: ClassVar[str] = ""  # how the state looks, for error messages
    config: RecurrentConfig

    def __init__(self, config: RecurrentConfig) -> None:
        super().__init__(config)
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_size)
        self.dropout = nn.Dropout(config.dropout)
        self.rnn = self.build_rnn()
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        nn.init.uniform_(self.embedding.weight, -EMBEDDING_INIT_RANGE, EMBEDDING_INIT_RANGE)
        nn.init.uniform_(self.decoder.weight, -EMBEDDING_INIT_RANGE, EMBEDDING_INIT_RANGE)
        nn.init.zeros_(self.decoder.bias)
        if config.tie_weights:  # Press & Wolf 2017 / Inan et al. 2017: one (vocab, hidden) matrix
            self.decoder.weight = self.embedding.weight

    def build_rnn(self) -> nn.Module:
        """The recurrent layers for ``self.config``."""
        raise NotImplementedError

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> Any:
        """The all-zero state for ``batch_size`` sequences."""
        raise NotImplementedError

    def _state_tensors(self, state: Any) -> tuple[Any, ...] | None:
        """The parts of ``state`` (each should be a (num_layers, batch, hidden) tensor);
        None when ``state`` does not have this model's structure."""
        raise NotImplementedError

    def _check_state(self, state: Any, batch_size: int) -> None:
        expected = (self.config.num_layers, batch_size, self.config.hidden_size)
        parts = self._state_tensors(state)
        if parts is None or any(not isinstance(p, torch.Tensor) or tuple(p.shape) != expected for p in parts):
            raise ValueError(
                f"state must be None or {self.state_description} of shape (num_layers, batch, hidden_size) "
                f"= {expected}, as returned by the previous call"
            )

    def forward(
        self,
        input_ids: torch.Tensor,
        state: Any = None,
        labels: torch.Tensor | None = None,
        use_cache: bool = False,
    ) -> LMOutput:
        """Run ``input_ids`` (batch, time) from ``state`` (None: zeros).

        Returns logits (batch, time, vocab), the loss when ``labels`` (batch, time) are
        given, and the new state to pass to the next call (detach it for truncated BPTT).
        ``use_cache`` is ignored: a recurrent model always returns its state.
        """
        check_tokens(input_ids, labels, self.config.vocab_size)
        batch_size = input_ids.size(0)
        if state is None:
            state = self.initial_state(batch_size, device=input_ids.device)
        else:
            self._check_state(state, batch_size)
        # Time-major inside, so that each step reads one contiguous (batch, features) slice.
        x = self.dropout(self.embedding(input_ids.t()))  # (time, batch, embedding_size)
        output, state = self.rnn(x, state)  # (time, batch, hidden_size)
        # Back to batch-major, contiguous so that the decoder is one fused matmul + bias (addmm).
        output = self.dropout(output).transpose(0, 1).contiguous()  # (batch, time, hidden_size)
        logits = self.decoder(output)  # (batch, time, vocab)
        loss = lm_loss(logits, labels) if labels is not None else None
        return LMOutput(logits=logits, loss=loss, state=state)


# ---------------------------------------------------------------------------- Elman RNN
class ElmanRNN(nn.Module):
    """A multi-layer tanh RNN with ``nn.RNN``'s parameters and calling convention.

    ``forward(x, h0)``: x (time, batch, input_size), h0 (num_layers, batch, hidden_size)
    -> output (time, batch, hidden_size) of the top layer, h_n (num_layers, batch, hidden_size).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = nn.Dropout(dropout)  # between layers, not after the top one (as nn.RNN)
        bound = 1.0 / math.sqrt(hidden_size)  # nn.RNN's initialisation: uniform(-1/sqrt(H), 1/sqrt(H))
        for layer in range(num_layers):
            layer_input_size = input_size if layer == 0 else hidden_size
            for name, shape in (
                (f"weight_ih_l{layer}", (hidden_size, layer_input_size)),
                (f"weight_hh_l{layer}", (hidden_size, hidden_size)),
                (f"bias_ih_l{layer}", (hidden_size,)),
                (f"bias_hh_l{layer}", (hidden_size,)),
            ):
                self.register_parameter(name, nn.Parameter(torch.empty(shape).uniform_(-bound, bound)))

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        time, batch, _ = x.shape
        final_states = []
        for layer in range(self.num_layers):
            w_ih = getattr(self, f"weight_ih_l{layer}")  # (H, input)
            w_hh = getattr(self, f"weight_hh_l{layer}")  # (H, H)
            bias = getattr(self, f"bias_ih_l{layer}") + getattr(self, f"bias_hh_l{layer}")  # (H,)
            # The input part x_t W_ih^T + b_ih + b_hh does not depend on h, so do all steps in
            # one matmul: (time * batch, input) @ (input, H) -> (time, batch, H).
            projected = torch.addmm(bias, x.reshape(time * batch, -1), w_ih.t()).view(time, batch, -1)
            w_hh_t = w_hh.t()
            h = h0[layer]  # (batch, H)
            outputs = []
            # Only the recurrence is sequential. (unbind, not projected[t]: its backward is one
            # stack, where indexing would build a zero (time, batch, H) gradient per step.)
            for projected_t in projected.unbind(0):  # (batch, H)
                h = torch.tanh(torch.addmm(projected_t, h, w_hh_t))  # h_t = tanh(proj_t + h_{t-1} W_hh^T)
                outputs.append(h)
            final_states.append(h)
            x = torch.stack(outputs)  # (time, batch, H)
            if layer < self.num_layers - 1:
                x = self.dropout(x)
        return x, torch.stack(final_states)


@dataclass
class RNNConfig(RecurrentConfig):
    """Elman (tanh) RNN language model. Defaults: PTB "small" sizes (200 units, 2 layers)."""

    model_type: ClassVar[str] = "rnn"


class RNNLM(RecurrentLM):
    """Elman RNN language model. State: h, a tensor (num_layers, batch, hidden_size)."""

    config_class: ClassVar[type[LMConfig]] = RNNConfig
    state_description: ClassVar[str] = "a tensor h"

    def build_rnn(self) -> nn.Module:
        config = self.config
        return ElmanRNN(config.embedding_size, config.hidden_size, config.num_layers, config.dropout)

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> torch.Tensor:
        """Zeros of shape (num_layers, batch_size, hidden_size)."""
        weight = self.decoder.weight
        return weight.new_zeros(
            self.config.num_layers, batch_size, self.config.hidden_size, device=device or weight.device
        )

    def _state_tensors(self, state: Any) -> tuple[Any, ...] | None:
        return (state,) if isinstance(state, torch.Tensor) else None
