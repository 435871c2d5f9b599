"""Exact, token-weighted perplexity for lmcore and Hugging Face models.

Perplexity is ``exp(total NLL / number of predicted tokens)``: every scored token
counts once, whatever block or window it falls in (never an average of
per-batch averages). Models run through one function, by kind:

- **Recurrent models** (``model.is_recurrent``) read the token stream in blocks
  of ``block_length`` tokens, carrying their hidden state, so every prediction
  sees the whole history. ``batch_size`` cuts the stream into that many
  contiguous parallel streams; the first token of each stream has no history
  and is not scored, so ``batch_size=B`` scores ``n - B`` of ``n`` tokens
  (``batch_size=1``: all but the first).
- **Fixed-context models** (``model.max_context`` is not None, e.g. GPT) slide a
  window of ``context_length`` tokens (default: the model's ``max_context``) by
  ``stride`` tokens, as in the Hugging Face perplexity guide: each window scores
  only its last ``end - prev_end`` targets, so every token but the first is
  scored exactly once, with as much context as the window allows (at least
  ``context_length - stride``). ``stride = context_length`` means disjoint
  windows (fast, less context); ``stride=1`` gives every token the full window
  (exact, one forward pass per token). ``batch_size`` windows run per forward pass.

  Inputs and targets are shifted (see :mod:`lmcore.models.base`), so a window of
  ``L`` inputs predicts ``L`` targets and the last one sees ``L`` tokens of context
  (the HF guide's windows hold ``L`` tokens including the target, so ``L - 1``).

``start_token`` (e.g. the end-of-text id) is put in front of the text so that its
first token is scored too: needed for bits per byte over the whole text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmcore.models.base import IGNORE_INDEX, LanguageModel
from lmcore.models.hf import as_language_model, tokenizer_encode, tokenizer_eos_id


@dataclass
class PerplexityResult:
    """Totals of one evaluation; the rates are derived from them."""

    nll: float  # total negative log-likelihood of the scored tokens, in nats
    num_tokens: int  # number of scored (predicted) tokens
    num_bytes: int | None = None  # UTF-8 bytes of the evaluated text, when known
    num_unk: int | None = None  # scored tokens whose target is <unk>, when an unk id was given
    unk_nll: float | None = None  # the part of ``nll`` on those <unk> targets, in nats

    @property
    def mean_nll(self) -> float:
        """Cross-entropy per token, in nats (the usual "loss")."""
        return self.nll / self.num_tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_nll)

    @property
    def bits_per_byte(self) -> float | None:
        """Total NLL in bits over the text's UTF-8 bytes; comparable across tokenizers."""
        if self.num_bytes is None:
            return None
        return self.nll / math.log(2) / self.num_bytes

    @property
    def unk_rate(self) -> float | None:
        """Fraction of scored targets that are <unk>."""
        if self.num_unk is None:
            return None
        return self.num_unk / self.num_tokens

    @property
    def perplexity_without_unk(self) -> float | None:
        """Perplexity over the targets that are not <unk> (None when there are none, or no unk id)."""
        if self.num_unk is None or self.unk_nll is None or self.num_unk == self.num_tokens:
            return None
        return math.exp((self.nll - self.unk_nll) / (self.num_tokens - self.num_unk))

    def to_dict(self) -> dict[str, Any]:
        """The totals and the derived rates, for JSON reports."""
        return {
            **asdict(self),
            "mean_nll": self.mean_nll,
            "perplexity": self.perplexity,
            "bits_per_byte": self.bits_per_byte,
            "unk_rate": self.unk_rate,
            "perplexity_without_unk": self.perplexity_without_unk,
        }


class _Totals:
    """Running sums over scored targets (float64, so long texts lose no precision)."""

    def __init__(self, unk_id: int | None) -> None:
        self.unk_id = unk_id
        self.nll = 0.0
        self.num_tokens = 0
        self.unk_nll = 0.0
        self.num_unk = 0

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """logits: (B, T, V); labels: (B, T), -100 where nothing is scored."""
        token_nll = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
        ).double()  # (B*T,), 0 at ignored positions
        labels = labels.reshape(-1)
        self.nll += token_nll.sum().item()
        self.num_tokens += int((labels != IGNORE_INDEX).sum())
        if self.unk_id is not None:
            is_unk = labels == self.unk_id
            self.unk_nll += token_nll[is_unk].sum().item()
            self.num_unk += int(is_unk.sum())

    def result(self, num_bytes: int | None) -> PerplexityResult:
        has_unk = self.unk_id is not None
        return PerplexityResult(
            nll=self.nll,
            num_tokens=self.num_tokens,
            num_bytes=num_bytes,
            num_unk=self.num_unk if has_unk else None,
            unk_nll=self.unk_nll if has_unk else None,
        )


def evaluate_perplexity(
    model: LanguageModel | PreTrainedModel,
    token_ids: Sequence[int] | torch.Tensor,
    *,
    batch_size: int = 1,
    context_length: int | None = None,
    stride: int | None = None,
    block_length: int = 256,
    start_token: int | None = None,
    unk_id: int | None = None,
    num_bytes: int | None = None,
) -> PerplexityResult:
    """Perplexity of ``model`` on one token stream (see the module docstring for the method).

    token_ids: the text's token ids, a list or a 1-D tensor; at least 2 tokens
        (1 with ``start_token``).
    batch_size: parallel streams (recurrent models) or windows per forward pass (fixed-context).
    context_length, stride: window length and step for fixed-context models; defaults
        ``model.max_context`` and half the window. Not used by recurrent models.
    block_length: tokens per forward pass for recurrent models; does not change the result.
    start_token: an id put before the text so its first token is scored (e.g. eos).
    unk_id: the <unk> id of a word-level vocabulary, to report the unk rate and the
        perplexity without unk targets.
    num_bytes: UTF-8 bytes of the text, to report bits per byte.
    """
    model = as_language_model(model)
    ids = torch.as_tensor(token_ids, dtype=torch.long).reshape(-1).cpu()
    if start_token is not None:
        ids = torch.cat([torch.tensor([start_token], dtype=torch.long), ids])
    if ids.numel() < 2:
        raise ValueError(
            f"need at least 2 tokens to score a prediction (1 text token with a start_token), got {ids.numel()} "
            "in all"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if num_bytes is not None and num_bytes < 1:
        raise ValueError(f"num_bytes must be a positive byte count, got {num_bytes}")

    totals = _Totals(unk_id)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            if model.is_recurrent:
                if context_length is not None or stride is not None:
                    raise ValueError(
                        "context_length and stride apply to fixed-context models; a recurrent model reads the "
                        "whole history (set block_length and batch_size instead)"
                    )
                _score_recurrent(model, ids, totals, batch_size=batch_size, block_length=block_length)
            else:
                window = context_length if context_length is not None else model.max_context
                if window is None:
                    raise ValueError(
                        f"{type(model).__name__} is neither recurrent nor has a max_context: pass context_length"
                    )
                _score_sliding_window(model, ids, totals, window=window, stride=stride, batch_size=batch_size)
    finally:
        model.train(was_training)
    return totals.result(num_bytes)



def _score_recurrent(
    model: LanguageModel, ids: torch.Tensor, totals: _Totals, *, batch_size: int, block_length: int
) -> None:
    """Stream ``ids`` through a recurrent model as ``batch_size`` contiguous streams, carrying its state."""
    if block_length < 1:
        raise ValueError(f"block_length must be at least 1, got {block_length}")
    n = ids.numel()
    if n < 2 * batch_size:
        raise ValueError(
            f"batch_size={batch_size} streams need at least 2 tokens each ({2 * batch_size}); the text has {n}: "
            f"use batch_size <= {n // 2}"
        )
    # Streams of n // B or n // B + 1 tokens cover the whole text; shorter ones are padded at the end,
    # after all of their real tokens, with targets -100 (the padding is never scored nor seen).
    lengths = [n // batch_size + (1 if b < n % batch_size else 0) for b in range(batch_size)]
    steps = max(lengths) - 1  # predictions per stream
    inputs = torch.zeros(batch_size, steps, dtype=torch.long)  # (B, S)
    labels = torch.full((batch_size, steps), IGNORE_INDEX, dtype=torch.long)  # (B, S)
    start = 0
    for b, length in enumerate(lengths):
        stream = ids[start : start + length]
        inputs[b, : length - 1] = stream[:-1]
        labels[b, : length - 1] = stream[1:]
        start += length

    device = model.device
    inputs, labels = inputs.to(device), labels.to(device)
    state = None
    for begin in range(0, steps, block_length):
        output = model(inputs[:, begin : begin + block_length], state=state)
        totals.add(output.logits, labels[:, begin : begin + block_length])
        state = output.state


def _score_sliding_window(
    model: LanguageModel, ids: torch.Tensor, totals: _Totals, *, window: int, stride: int | None, batch_size: int
) -> None:
    """Slide a ``window``-token context over ``ids`` by ``stride``, scoring each target exactly once."""
    if window < 1:
        raise ValueError(f"context_length must be at least 1, got {window}")
    max_context = model.max_context
    if max_context is not None and window > max_context:
        raise ValueError(f"context_length={window} is longer than the model's max_context={max_context}")
    if stride is None:
        stride = max(1, window // 2)
    if not 1 <= stride <= window:
        raise ValueError(f"stride must be in [1, context_length={window}], got {stride}")

    # Input position i predicts target i + 1; there are n - 1 predictions.
    num_inputs = ids.numel() - 1
    windows: list[tuple[int, int, int]] = []  # (begin, end, scored): inputs ids[begin:end], last `scored` targets
    prev_end = 0
    for begin in range(0, num_inputs, stride):
        end = min(begin + window, num_inputs)
        windows.append((begin, end, end - prev_end))
        prev_end = end
        if end == num_inputs:
            break

    device = model.device
    for first in range(0, len(windows), batch_size):
        group = windows[first : first + batch_size]
        width = max(end - begin for begin, end, _ in group)
        # Shorter (final) windows are padded on the right; causal attention keeps padding out of real positions.
        inputs = torch.zeros(len(group), width, dtype=torch.long)  # (b, L)
        labels = torch.full((len(group), width), IGNORE_INDEX, dtype=torch.long)  # (b, L)
        for row, (begin, end, scored) in enumerate(group):
            length = end - begin
            inputs[row, :length] = ids[begin:end]
            labels[row, length - scored : length] = ids[end - scored + 1 : end + 1]
        output = model(inputs.to(device))
        totals.add(output.logits, labels.to(device))


def evaluate_text(
    model: LanguageModel | PreTrainedModel,
    tokenizer: Any,
    text: str,
    *,
    prepend_eos: bool = True,
    unk_id: int | None = None,
    **options: Any,
) -> PerplexityResult:
    """Tokenize ``text``, score it with :func:`evaluate_perplexity`, and add bytes and <unk> statistics.

    tokenizer: an lmcore tokenizer (``encode``, ``eos_id``, optionally ``unk_id``) or a
        Hugging Face tokenizer (``encode``, ``eos_token_id``; its special tokens are not added).
    prepend_eos: start from the end-of-text token so the first token is scored too,
        making ``bits_per_byte`` cover the whole text (with ``batch_size=B`` on a recurrent
        model, the first tokens of the other B - 1 streams stay unscored).
    unk_id: the <unk> id; default: the tokenizer's ``unk_id`` attribute if it has one
        (Hugging Face tokenizers are not asked: GPT-2's unk token is its eos token).
    options: passed to :func:`evaluate_perplexity` (batch_size, context_length, stride, block_length).
    """
    if not text:
        raise ValueError("text is empty: nothing to score")
    token_ids = tokenizer_encode(tokenizer, text)
    eos_id = tokenizer_eos_id(tokenizer)
    if unk_id is None and not isinstance(tokenizer, PreTrainedTokenizerBase):  # lmcore tokenizer: ask for <unk>
        unk_id = getattr(tokenizer, "unk_id", None)
    start_token = None
    if prepend_eos:
        if eos_id is None:
            raise ValueError("the tokenizer has no end-of-text token to prepend: pass prepend_eos=False")
        start_token = eos_id
    return evaluate_perplexity(
        model, token_ids, start_token=start_token, unk_id=unk_id, num_bytes=len(text.encode("utf-8")), **options
    )
