"""Evaluation: exact token-weighted perplexity and bits per byte (:mod:`lmcore.eval.perplexity`),
PubMedQA yes/no/maybe scoring with accuracy and macro-F1 (:mod:`lmcore.eval.pubmedqa`)."""

from lmcore.eval.perplexity import PerplexityResult, evaluate_perplexity, evaluate_text
from lmcore.eval.pubmedqa import evaluate_pubmedqa, load_metric, predict_decisions, score_decisions

__all__ = [
    "PerplexityResult", "evaluate_perplexity", "evaluate_pubmedqa", "evaluate_text", "load_metric",
    "predict_decisions", "score_decisions",
]
