"""Corpora, PubMedQA, tokenizers and batching of token streams."""

from lmcore.data.batching import batchify, bptt_blocks, random_windows, sequential_windows
from lmcore.data.corpora import CORPUS_NAMES, SPLITS, load_corpus, split_text_file
from lmcore.data.pubmedqa import PUBMEDQA_SPLITS, PubMedQARecord, load_pubmedqa, official_test_ids, pubmedqa_corpus_text
from lmcore.data.tokenizers import (
    NORMALIZATIONS,
    TOKENIZER_KINDS,
    CharTokenizer,
    HFTokenizer,
    Tokenizer,
    WordTokenizer,
    build_tokenizer,
    load_tokenizer,
    normalize_text,
    train_bpe,
)

__all__ = [
    "CORPUS_NAMES",
    "NORMALIZATIONS",
    "PUBMEDQA_SPLITS",
    "SPLITS",
    "TOKENIZER_KINDS",
    "CharTokenizer",
    "HFTokenizer",
    "PubMedQARecord",
    "Tokenizer",
    "WordTokenizer",
    "batchify",
    "bptt_blocks",
    "build_tokenizer",
    "load_corpus",
    "load_pubmedqa",
    "load_tokenizer",
    "normalize_text",
    "official_test_ids",
    "pubmedqa_corpus_text",
    "random_windows",
    "sequential_windows",
    "split_text_file",
    "train_bpe",
]
