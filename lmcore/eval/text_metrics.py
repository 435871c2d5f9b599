"""Simple measures of generated text: diversity, repetition, likelihood under a reference model.

Diversity and repetition count **whitespace-separated words** (``text.split()``),
not model tokens, so texts from word, character and BPE models are measured the
same way (a word model's ``<unk>`` counts as a word; its ``<eos>`` is a line break,
i.e. whitespace).

- ``distinct_n(words, n)``: distinct n-grams / all n-grams (Li et al., 2016); 1 when
  no n-gram repeats, near 0 for a text stuck in a loop.
- ``repeated_ngram_rate(words, n)``: the fraction of n-grams that already occurred
  earlier in the same text (the n-gram starting at word i counts when the same
  n-gram starts at some j < i); 0 for no repetition, near 1 for a loop.

Both are None for a text with fewer than ``n`` words (no n-gram to count).

``reference_log_prob(model, tokenizer, text)`` scores a text with another model:
the mean log-probability per token (nats, in the reference's own tokens, the first
token predicted from its end-of-text token) and bits per byte. Per-token values
compare texts under one reference model; bits per byte also across references.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lmcore.eval.perplexity import evaluate_text


def words(text: str) -> list[str]:
    """The whitespace-separated words of ``text``."""
    return text.split()


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(tokens: Sequence[str], n: int) -> float | None:
    """Distinct n-grams / total n-grams of ``tokens``; None when there are fewer than ``n`` tokens."""
    grams = _ngrams(tokens, n)
    if not grams:
        return None
    return len(set(grams)) / len(grams)


def repeated_ngram_rate(tokens: Sequence[str], n: int = 3) -> float | None:
    """Fraction of the n-grams of ``tokens`` that occurred earlier in them; None with fewer than ``n`` tokens."""
    grams = _ngrams(tokens, n)
    if not grams:
        return None
    seen: set[tuple[str, ...]] = set()
    repeated = 0
    for gram in grams:
        repeated += gram in seen
        seen.add(gram)
    return repeated / len(grams)


@dataclass
class ReferenceScore:
    """How likely a reference model finds a text."""

    log_prob_per_token: float  # mean log-probability per reference token, in nats (<= 0)
    bits_per_byte: float  # total negative log-likelihood in bits / UTF-8 bytes of the text
    num_tokens: int  # reference tokens scored (all of the text's tokens)


def reference_log_prob(model: Any, tokenizer: Any, text: str) -> ReferenceScore | None:
    """Score ``text`` under a reference model (lmcore or Hugging Face) and its tokenizer.

    Every token of the text is scored, the first one predicted from the end-of-text
    token; a text longer than a fixed-context model's window is scored with a sliding
    window (see :func:`lmcore.eval.evaluate_text`). None for an empty text.
    """
    if not text.strip():
        return None
    result = evaluate_text(model, tokenizer, text, batch_size=1)
    return ReferenceScore(
        log_prob_per_token=-result.mean_nll, bits_per_byte=result.bits_per_byte, num_tokens=result.num_tokens
    )


def text_measures(text: str, repeat_n: int = 3) -> dict[str, float | int | None]:
    """``num_words``, ``distinct_1``, ``distinct_2`` and ``repeated_ngram_rate`` (of ``repeat_n``-grams) of ``text``."""
    tokens = words(text)
    return {
        "num_words": len(tokens),
        "distinct_1": distinct_n(tokens, 1),
        "distinct_2": distinct_n(tokens, 2),
        "repeated_ngram_rate": repeated_ngram_rate(tokens, repeat_n),
    }
