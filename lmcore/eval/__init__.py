"""Evaluation: exact token-weighted perplexity and bits per byte (:mod:`lmcore.eval.perplexity`)."""

from lmcore.eval.perplexity import PerplexityResult, evaluate_perplexity, evaluate_text

__all__ = ["PerplexityResult", "evaluate_perplexity", "evaluate_text"]
