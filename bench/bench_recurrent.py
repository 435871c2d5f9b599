"""Training throughput of lmcore's LSTM and RNN language models against PyTorch's
``word_language_model`` example, timed in the same process.

The baseline below is that example's ``RNNModel`` (nn.LSTM / nn.RNN with tanh between an
embedding "encoder" and a linear "decoder", time-major input, log-softmax + NLLLoss) and
its training step (hidden state carried and detached, backward, gradient-norm clipping,
plain SGD ``p -= lr * grad``). lmcore's models take the same step through their own
interface (batch-major ``input_ids``/``labels``, ``out.loss``, ``detach_state``).

Contenders run interleaved in rounds (their order rotating), after warm-up steps; each
step is timed, and a contender's tokens/s is tokens per step / its median step time.
Each ratio is ours / baseline of those tokens/s.
Targets: lmcore LSTM (cell="torch") >= 1.0x nn.LSTM; lmcore's hand-written RNN >= 0.5x nn.RNN.

    python bench/bench_recurrent.py                  # PTB "small" sizes
    python bench/bench_recurrent.py --hidden-size 650 --dropout 0.5 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from lmcore.models.base import LanguageModel  # noqa: E402
from lmcore.models.lstm import LSTMConfig, LSTMLM  # noqa: E402
from lmcore.models.rnn import RNNLM, RNNConfig  # noqa: E402


# ---------------------------------------------------------------------------- baseline
class BaselineRNNModel(nn.Module):
    """pytorch/examples word_language_model/model.py ``RNNModel``, for LSTM and RNN_TANH."""

    def __init__(
        self, rnn_type: str, ntoken: int, ninp: int, nhid: int, nlayers: int, dropout: float, tie_weights: bool
    ) -> None:
        super().__init__()
        self.ntoken = ntoken
        self.rnn_type = rnn_type
        self.nhid = nhid
        self.nlayers = nlayers
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        if rnn_type == "LSTM":
            self.rnn: nn.Module = nn.LSTM(ninp, nhid, nlayers, dropout=dropout)
        else:
            self.rnn = nn.RNN(ninp, nhid, nlayers, nonlinearity="tanh", dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        if tie_weights:
            self.decoder.weight = self.encoder.weight
        initrange = 0.1
        nn.init.uniform_(self.encoder.weight, -initrange, initrange)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -initrange, initrange)

    def forward(self, input: torch.Tensor, hidden: Any) -> tuple[torch.Tensor, Any]:
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output).view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz: int) -> Any:
        weight = next(self.parameters())
        if self.rnn_type == "LSTM":
            return (weight.new_zeros(self.nlayers, bsz, self.nhid), weight.new_zeros(self.nlayers, bsz, self.nhid))
        return weight.new_zeros(self.nlayers, bsz, self.nhid)


def repackage_hidden(h: Any) -> Any:
    """Wraps hidden states in new Tensors, to detach them from their history."""
    if isinstance(h, torch.Tensor):
        return h.detach()
    return tuple(repackage_hidden(v) for v in h)


def sgd_step(model: nn.Module, lr: float, clip: float) -> None:
    """word_language_model's update: clip the gradient norm, then p -= lr * grad."""
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    for p in model.parameters():
        p.data.add_(p.grad, alpha=-lr)


# ---------------------------------------------------------------------------- contenders
class Contender:
    """A model plus a ``step(i)`` that trains it on batch ``i`` and carries its hidden state."""

    def __init__(self, name: str, step: Callable[[int], None]) -> None:
        self.name = name
        self.step = step
        self.step_seconds: list[float] = []  # wall-clock time of each timed step


def baseline_contender(name: str, model: BaselineRNNModel, batches: list[tuple[torch.Tensor, torch.Tensor]],
                       lr: float, clip: float) -> Contender:
    criterion = nn.NLLLoss()
    # word_language_model layout: data (bptt, batch), targets (bptt * batch,).
    time_major = [(x.t().contiguous(), y.t().reshape(-1).contiguous()) for x, y in batches]
    hidden = model.init_hidden(batches[0][0].size(0))

    def step(i: int) -> None:
        nonlocal hidden
        data, targets = time_major[i % len(time_major)]
        hidden = repackage_hidden(hidden)
        model.zero_grad()
        output, hidden = model(data, hidden)
        loss = criterion(output, targets)
        loss.backward()
        sgd_step(model, lr, clip)

    return Contender(name, step)


def lmcore_contender(name: str, model: LanguageModel, batches: list[tuple[torch.Tensor, torch.Tensor]],
                     lr: float, clip: float) -> Contender:
    state = None

    def step(i: int) -> None:
        nonlocal state
        input_ids, labels = batches[i % len(batches)]
        state = model.detach_state(state)
        model.zero_grad()
        out = model(input_ids, state=state, labels=labels)
        out.loss.backward()
        sgd_step(model, lr, clip)
        state = out.state

    return Contender(name, step)


def make_batches(args: argparse.Namespace, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive (input_ids, labels) blocks of a random token stream, each (batch, bptt)."""
    generator = torch.Generator().manual_seed(0)
    length = args.num_batches * args.bptt + 1
    stream = torch.randint(0, args.vocab_size, (args.batch_size, length), generator=generator).to(device)
    return [
        (stream[:, i * args.bptt : (i + 1) * args.bptt].contiguous(),
         stream[:, i * args.bptt + 1 : (i + 1) * args.bptt + 1].contiguous())
        for i in range(args.num_batches)
    ]


def run(contenders: list[Contender], args: argparse.Namespace, device: torch.device) -> None:
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for contender in contenders:
        for i in range(args.warmup_steps):
            contender.step(i)
    synchronize()
    for round_index in range(args.rounds):
        shift = round_index % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            for i in range(args.steps):
                start = time.perf_counter()
                contender.step(i)
                synchronize()
                contender.step_seconds.append(time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab-size", type=int, default=10_000)
    parser.add_argument("--hidden-size", type=int, default=200, help="embedding and hidden size")
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--bptt", type=int, default=35, help="time steps per training step")
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--tied", action="store_true", help="tie embedding and decoder weights in every model")
    parser.add_argument("--lr", type=float, default=20.0)
    parser.add_argument("--clip", type=float, default=0.25)
    parser.add_argument("--models", nargs="+", choices=("lstm", "rnn"), default=["lstm", "rnn"])
    parser.add_argument("--handwritten-lstm", action="store_true",
                        help="also time LSTMConfig(cell='handwritten') (for information; it has no target)")
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per contender per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--num-batches", type=int, default=10, help="distinct batches cycled through")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    batches = make_batches(args, device)
    sizes = dict(vocab_size=args.vocab_size, hidden_size=args.hidden_size, num_layers=args.num_layers,
                 dropout=args.dropout, tie_weights=args.tied)

    def baseline(rnn_type: str) -> BaselineRNNModel:
        return BaselineRNNModel(rnn_type, args.vocab_size, args.hidden_size, args.hidden_size, args.num_layers,
                                args.dropout, args.tied).to(device).train()

    pairs: list[tuple[Contender, Contender]] = []  # (ours, baseline)
    if "lstm" in args.models:
        base = baseline_contender("nn.LSTM baseline", baseline("LSTM"), batches, args.lr, args.clip)
        ours = LSTMLM(LSTMConfig(**sizes)).to(device).train()
        pairs.append((lmcore_contender("lmcore lstm (cell=torch)", ours, batches, args.lr, args.clip), base))
        if args.handwritten_lstm:
            handwritten = LSTMLM(LSTMConfig(**sizes, cell="handwritten")).to(device).train()
            pairs.append((lmcore_contender("lmcore lstm (cell=handwritten)", handwritten, batches, args.lr,
                                           args.clip), base))
    if "rnn" in args.models:
        base = baseline_contender("nn.RNN baseline", baseline("RNN_TANH"), batches, args.lr, args.clip)
        ours = RNNLM(RNNConfig(**sizes)).to(device).train()
        pairs.append((lmcore_contender("lmcore rnn (handwritten Elman)", ours, batches, args.lr, args.clip), base))
    contenders = list({id(c): c for pair in pairs for c in pair}.values())

    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}")
    print(f"sizes: vocab {args.vocab_size}, emb = hidden {args.hidden_size}, layers {args.num_layers}, "
          f"batch {args.batch_size}, bptt {args.bptt}, dropout {args.dropout}, tied {args.tied}")
    print(f"{args.warmup_steps} warm-up steps, then {args.rounds} rounds of {args.steps} steps per contender\n")
    run(contenders, args, device)

    # Medians of per-step times shrug off the bursts when other processes share the machine.
    tokens_per_step = args.batch_size * args.bptt
    throughput = {c.name: tokens_per_step / statistics.median(c.step_seconds) for c in contenders}
    width = max(len(c.name) for c in contenders)
    for c in contenders:
        quartiles = statistics.quantiles(c.step_seconds, n=4)
        print(f"{c.name:<{width}}  {throughput[c.name]:>9,.0f} tokens/s  "
              f"(step median {statistics.median(c.step_seconds) * 1e3:.1f} ms, "
              f"quartiles {quartiles[0] * 1e3:.1f} .. {quartiles[2] * 1e3:.1f} ms)")
    print()
    for ours, base in pairs:
        print(f"{ours.name} / {base.name}: {throughput[ours.name] / throughput[base.name]:.2f}x")


if __name__ == "__main__":
    main()
