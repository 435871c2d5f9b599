"""LSTM language model (Zaremba et al., 2014; PyTorch's ``word_language_model``).

::

    embedding -> dropout -> LSTM layers (dropout between layers) -> dropout -> decoder

Two interchangeable implementations of the LSTM layers, chosen by ``LSTMConfig.cell``:

- ``"torch"`` (default): ``nn.LSTM``, i.e. the fused cuDNN kernel on NVIDIA GPUs and
  PyTorch's native kernel on CPU. Use it for training.
- ``"handwritten"``: :class:`HandwrittenLSTM`, the same equations written out below. Use it
  to read, step through or modify the cell.

Both keep their weights in ``nn.LSTM``'s layout (``rnn.weight_ih_l0`` of shape
``(4 * hidden, input)``, gates stacked in the order input, forget, cell, output), so
one state dict loads into either and they compute the same function. Initialisation as
in ``rnn.py``: embedding and decoder uniform in ±0.1, LSTM weights in ±1/sqrt(hidden_size).

State: a tuple ``(h, c)``, each of shape ``(num_layers, batch, hidden_size)``;
``state=None`` means zeros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from lmcore.models.base import LMConfig, check_choice
from lmcore.models.rnn import RecurrentConfig, RecurrentLM

LSTM_CELLS: tuple[str, ...] = ("torch", "handwritten")


class HandwrittenLSTM(nn.Module):
    """A multi-layer LSTM with ``nn.LSTM``'s parameters and calling convention.

    ``forward(x, (h0, c0))``: x (time, batch, input_size), h0 and c0 (num_layers, batch, hidden_size)
    -> output (time, batch, hidden_size) of the top layer, (h_n, c_n) each (num_layers, batch, hidden_size).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = nn.Dropout(dropout)  # between layers, not after the top one (as nn.LSTM)
        bound = 1.0 / math.sqrt(hidden_size)  # nn.LSTM's initialisation: uniform(-1/sqrt(H), 1/sqrt(H))
        for layer in range(num_layers):
            layer_input_size = input_size if layer == 0 else hidden_size
            for name, shape in (
                (f"weight_ih_l{layer}", (4 * hidden_size, layer_input_size)),
                (f"weight_hh_l{layer}", (4 * hidden_size, hidden_size)),
                (f"bias_ih_l{layer}", (4 * hidden_size,)),
                (f"bias_hh_l{layer}", (4 * hidden_size,)),
            ):
                self.register_parameter(name, nn.Parameter(torch.empty(shape).uniform_(-bound, bound)))

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        h0, c0 = state
        time, batch, _ = x.shape
        final_h, final_c = [], []
        for layer in range(self.num_layers):
            w_ih = getattr(self, f"weight_ih_l{layer}")  # (4H, input)
            w_hh = getattr(self, f"weight_hh_l{layer}")  # (4H, H)
            bias = getattr(self, f"bias_ih_l{layer}") + getattr(self, f"bias_hh_l{layer}")  # (4H,)
            # Input part of all four gates for all steps in one matmul -> (time, batch, 4H).
            projected = torch.addmm(bias, x.reshape(time * batch, -1), w_ih.t()).view(time, batch, -1)
            w_hh_t = w_hh.t()
            h, c = h0[layer], c0[layer]  # (batch, H) each
            outputs = []
            for projected_t in projected.unbind(0):  # (batch, 4H); unbind: see ElmanRNN.forward
                gates = torch.addmm(projected_t, h, w_hh_t)  # (batch, 4H)
                i, f, g, o = gates.chunk(4, dim=1)  # nn.LSTM's gate order
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)  # c_t = f*c_{t-1} + i*g
                h = torch.sigmoid(o) * torch.tanh(c)  # h_t = o * tanh(c_t)
                outputs.append(h)
            final_h.append(h)
            final_c.append(c)
            x = torch.stack(outputs)  # (time, batch, H)
            if layer < self.num_layers - 1:
                x = self.dropout(x)
        return x, (torch.stack(final_h), torch.stack(final_c))


@dataclass
class LSTMConfig(RecurrentConfig):
    """LSTM language model. Defaults: PTB "small" sizes (200 units, 2 layers)."""

    model_type: ClassVar[str] = "lstm"

    cell: str = "torch"  # "torch" (nn.LSTM, fast) or "handwritten" (HandwrittenLSTM, readable)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("cell", self.cell, LSTM_CELLS)


class LSTMLM(RecurrentLM):
    """LSTM language model. State: a tuple (h, c), each (num_layers, batch, hidden_size)."""

    config_class: ClassVar[type[LMConfig]] = LSTMConfig
    state_description: ClassVar[str] = "a tuple (h, c) of two tensors, each"
    config: LSTMConfig

    def build_rnn(self) -> nn.Module:
        config = self.config
        if config.cell == "torch":
            # nn.LSTM warns when dropout > 0 with a single layer (it only drops between layers).
            dropout = config.dropout if config.num_layers > 1 else 0.0
            return nn.LSTM(config.embedding_size, config.hidden_size, config.num_layers, dropout=dropout)
        return HandwrittenLSTM(config.embedding_size, config.hidden_size, config.num_layers, config.dropout)

    def initial_state(
        self, batch_size: int, device: torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, c) zeros, each of shape (num_layers, batch_size, hidden_size)."""
        weight = self.decoder.weight
        shape = (self.config.num_layers, batch_size, self.config.hidden_size)
        device = device or weight.device
        return weight.new_zeros(shape, device=device), weight.new_zeros(shape, device=device)

    def _state_tensors(self, state: Any) -> tuple[Any, ...] | None:
        return state if isinstance(state, tuple) and len(state) == 2 else None
