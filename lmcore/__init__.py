"""lmcore: corpora, tokenizers, from-scratch language models, training, perplexity and generation."""

__version__ = "0.1.0"
