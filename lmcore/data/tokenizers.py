"""Tokenizers behind one interface: text <-> token ids.

Every tokenizer is a ``Tokenizer``: ``encode(text) -> list[int]``,
``decode(ids) -> str``, ``vocab_size``, ``eos_id``, ``save(directory)``;
``load_tokenizer(directory)`` reads any of them back. Four kinds, made by
``build_tokenizer(kind, train_text, **options)``:

- ``"word"``: ``WordTokenizer``, whitespace-separated words with a vocabulary
  built from a training split; ``<eos>`` at each line end, ``<unk>`` for other
  words (the classic PTB / WikiText word-level setup).
- ``"char"``: ``CharTokenizer``, one id per character seen in training
  (Tiny Shakespeare), plus ``<eos>`` and ``<unk>``.
- ``"bpe"``: a byte-level BPE trained on the training split with the
  ``tokenizers`` library, saved as a Hugging Face tokenizer folder.
- ``"gpt2"``: GPT-2's pretrained byte-level BPE (50,257 tokens) via
  ``transformers.AutoTokenizer``.

The last two are ``HFTokenizer``, a wrapper around any Hugging Face tokenizer
(``HFTokenizer.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")`` too).
Lossless tokenizers (char on seen characters, bpe, gpt2) satisfy
``decode(encode(text)) == text``.

``encode_with_stats(text) -> (ids, num_oov)`` also counts what fell outside the
vocabulary; ``encode_to_tensor(text)`` gives a LongTensor ``(num_tokens,)``.
Training on empty text raises a ValueError; encoding it gives ``[]``.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from tokenizers import pre_tokenizers

from lmcore.io import atomic_write_json
from lmcore.paths import local_mirror

TOKENIZER_KINDS = ("word", "char", "bpe", "gpt2")
NORMALIZATIONS = ("none", "ptb")
LMCORE_TOKENIZER_FILE = "lmcore_tokenizer.json"  # word and char tokenizers; HF ones use their own files
HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
EOS_TOKEN = "<eos>"
UNK_TOKEN = "<unk>"
END_OF_TEXT = "<|endoftext|>"  # the end-of-text token of byte-level BPEs, as in GPT-2


class Tokenizer(ABC):
    """Text <-> token ids. Subclasses define the five abstract members."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""

    @abstractmethod
    def decode(self, ids: list[int] | torch.Tensor) -> str:
        """Text of token ids (a list, or a 1-D tensor)."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of token ids; every id is in ``range(vocab_size)``."""

    @property
    @abstractmethod
    def eos_id(self) -> int:
        """The end-of-sequence (end-of-text) token id."""

    @abstractmethod
    def save(self, directory: str | Path) -> None:
        """Write the tokenizer into ``directory``; ``load_tokenizer(directory)`` reads it back."""

    def encode_with_stats(self, text: str) -> tuple[list[int], int]:
        """``(ids, num_oov)``: the ids and how many input units fell outside the vocabulary.

        Byte-level tokenizers cover every input, so this base version reports 0.
        """
        return self.encode(text), 0

    def encode_to_tensor(self, text: str) -> torch.Tensor:
        """``encode(text)`` as a LongTensor of shape ``(num_tokens,)``."""
        return torch.tensor(self.encode(text), dtype=torch.long)

    def _checked_ids(self, ids: list[int] | torch.Tensor) -> list[int]:
        """``ids`` as a list (a 1-D tensor is accepted too), each checked to be in ``range(vocab_size)``."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        size = self.vocab_size
        for token_id in ids:
            if not 0 <= token_id < size:
                raise ValueError(f"token id {token_id} is outside the vocabulary range [0, {size})")
        return ids


# --------------------------------------------------------------------------- word level

_NUMBER = re.compile(r"[+-]?(?:\d+(?:[.,:]\d+)*|\.\d+)(?:\\?/\d+)?")
_UNESCAPED = re.compile(r"(?<!\\)([/*])")
_KEPT_SYMBOLS = frozenset({"$", "&", "'", "#"})
_ESCAPED_STARS = re.compile(r"(?:\\\*)+")
_WIKITEXT_JOINER = re.compile(r" @(\S)@ ")
_SPLIT_NEGATION = re.compile(r"(\S)n '(t)(?=\s|$)", re.IGNORECASE)


def normalize_text(text: str, normalization: str) -> str:
    """``text`` normalized as ``WordTokenizer`` does before splitting into words.

    ``"none"`` returns ``text`` unchanged. ``"ptb"`` rewrites any text into the
    form of Mikolov's Penn Treebank (the rules below are derived from its
    vocabulary and leave ``ptb.*.txt`` itself unchanged, word for word):

    1. WikiText's ``@x@`` separators rejoin their neighbours:
       ``role @-@ playing`` -> ``role-playing``, ``1 @,@ 000`` -> ``1,000``,
       ``3 @.@ 5`` -> ``3.5``.
    2. Negations split the PTB way: ``didn 't`` -> ``did n't``, ``can 't`` -> ``ca n't``.
    3. Each whitespace-separated word other than ``<unk>`` and ``N`` loses any
       trailing ``,;:!?`` (WikiText leaves a few attached: ``1986,``) and then
       - is ``N`` if it is a number (digits with ``.``, ``,`` or ``:`` inside,
         optionally a fraction ``1/2`` or ``1\\/2``) or ``%`` (PTB writes
         ``8.45 %`` as ``N N``); words with digits and letters (``1980s``,
         ``30-year``, ``13th``) stay words;
       - is ``<unk>`` if rule 1 glued a ``<unk>`` into it (``4.8-<unk>``), or ``N``
         when it reads as a number with that part (``1,<unk>``);
       - is dropped if it has no letter or digit (``,`` ``.`` ``"`` ``(`` ``--``
         ``=`` ...), except the symbols PTB keeps: ``$``, ``&``, ``'``, ``#`` and
         runs of ``\\*``;
       - is lowercased otherwise, with ``/`` and ``*`` escaped as ``\\/`` and ``\\*``.

    Line structure is kept (a line may become empty); words are re-joined by
    single spaces.
    """
    if normalization == "none":
        return text
    if normalization != "ptb":
        raise ValueError(f"unknown normalization {normalization!r}; allowed: {NORMALIZATIONS}")
    text = _WIKITEXT_JOINER.sub(r"\1", text)
    text = _SPLIT_NEGATION.sub(r"\1 n'\2", text)
    lines = []
    for line in text.split("\n"):
        words = (_ptb_word(word) for word in line.split())
        lines.append(" ".join(word for word in words if word is not None))
    return "\n".join(lines)


@functools.cache
def _ptb_word(word: str) -> str | None:
    """One word in PTB form, or None to drop it (see ``normalize_text``)."""
    if word in (UNK_TOKEN, "N"):
        return word
    core = word.rstrip(",;:!?")
    if UNK_TOKEN in core:
        return "N" if _NUMBER.fullmatch(core.replace(UNK_TOKEN, "0")) else UNK_TOKEN
    if core == "%" or _NUMBER.fullmatch(core):
        return "N"
    word = _UNESCAPED.sub(r"\\\1", core.lower())
    if any(character.isalnum() for character in word):
        return word
    if word in _KEPT_SYMBOLS or _ESCAPED_STARS.fullmatch(word):
        return word
    return None


class _VocabularyTokenizer(Tokenizer):
    """A tokenizer with an explicit vocabulary list: ``<eos>`` is id 0, ``<unk>`` id 1."""

    vocab: list[str]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def eos_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    def encode(self, text: str) -> list[int]:
        return self.encode_with_stats(text)[0]


class WordTokenizer(_VocabularyTokenizer):
    """Whitespace-separated words; ``<eos>`` for each line end, ``<unk>`` for unknown words.

    Vocabulary: ``<eos>`` (id 0), ``<unk>`` (id 1), then the training words by
    decreasing count, ties in alphabetical (code point) order. Trained on
    Mikolov's PTB it has exactly the 10,000 PTB tokens.

    ``normalization`` (``"none"`` or ``"ptb"``, see ``normalize_text``) is
    applied to the training text and to every text encoded later, so another
    corpus is rewritten the way the training corpus was.

    ``encode``: each ``"\\n"`` becomes ``<eos>`` (text after the last ``"\\n"`` gets
    none, so a prompt does not end a line); a word outside the vocabulary becomes
    ``<unk>`` and counts as out-of-vocabulary in ``encode_with_stats``. A literal
    ``<unk>`` in the text (PTB and WikiText replaced their rare words by it) is the
    vocabulary's own token and is not counted. ``decode`` joins words with single
    spaces and ``<eos>`` with ``"\\n"``, so ``decode(encode(text)) == text`` for
    normalized text of in-vocabulary words separated by single spaces.
    """

    kind = "word"

    def __init__(self, vocab: list[str], normalization: str = "none") -> None:
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {normalization!r}; allowed: {NORMALIZATIONS}")
        if vocab[:2] != [EOS_TOKEN, UNK_TOKEN] or len(set(vocab)) != len(vocab):
            raise ValueError(f"a word vocabulary starts with {[EOS_TOKEN, UNK_TOKEN]} and has no duplicates")
        self.vocab = list(vocab)
        self.normalization = normalization
        self._index = {word: index for index, word in enumerate(self.vocab)}

    @classmethod
    def train(
        cls,
        text: str,
        normalization: str = "none",
        max_vocab_size: int | None = None,
        min_frequency: int = 1,
    ) -> WordTokenizer:
        """Vocabulary of the words of ``text`` (after normalization).

        ``max_vocab_size`` (specials included) keeps the most frequent words;
        ``min_frequency`` drops rarer ones. Dropped words encode as ``<unk>``.
        """
        if not text.strip():
            raise ValueError("cannot build a word vocabulary from empty text; pass the training split")
        if max_vocab_size is not None and max_vocab_size < 3:
            raise ValueError(f"max_vocab_size must be at least 3 (<eos>, <unk> and one word), got {max_vocab_size}")
        if min_frequency < 1:
            raise ValueError(f"min_frequency must be at least 1, got {min_frequency}")
        counts = Counter(normalize_text(text, normalization).split())
        for special in (EOS_TOKEN, UNK_TOKEN):
            counts.pop(special, None)
        words = sorted((word for word, count in counts.items() if count >= min_frequency), key=lambda word: (-counts[word], word))
        if max_vocab_size is not None:
            words = words[: max_vocab_size - 2]
        return cls([EOS_TOKEN, UNK_TOKEN, *words], normalization)

    def encode_with_stats(self, text: str) -> tuple[list[int], int]:
        """``(ids, num_oov)``; ``num_oov`` counts words outside the vocabulary (not literal ``<unk>``)."""
        index, unk_id, eos_id = self._index, self.unk_id, self.eos_id
        lines = normalize_text(text, self.normalization).split("\n")
        ids: list[int] = []
        num_oov = 0
        for line_number, line in enumerate(lines):
            if line_number:
                ids.append(eos_id)
            line_ids = [index.get(word, -1) for word in line.split()]
            if -1 in line_ids:
                num_oov += line_ids.count(-1)
                line_ids = [unk_id if token_id == -1 else token_id for token_id in line_ids]
            ids.extend(line_ids)
        return ids, num_oov

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        ids = self._checked_ids(ids)
        lines, words = [], []
        for token_id in ids:
            if token_id == self.eos_id:
                lines.append(" ".join(words))
                words = []
            else:
                words.append(self.vocab[token_id])
        lines.append(" ".join(words))
        return "\n".join(lines)

    def save(self, directory: str | Path) -> None:
        atomic_write_json(
            Path(directory) / LMCORE_TOKENIZER_FILE,
            {"kind": self.kind, "normalization": self.normalization, "vocab": self.vocab},
        )


# --------------------------------------------------------------------------- character level


class CharTokenizer(_VocabularyTokenizer):
    """One id per character: ``<eos>`` (id 0), ``<unk>`` (id 1), then the training characters sorted.

    A character not seen in training encodes as ``<unk>`` and counts as
    out-of-vocabulary in ``encode_with_stats``. ``encode`` never emits
    ``<eos>`` (``"\\n"`` is an ordinary character); ``decode`` writes the
    specials as ``<eos>`` and ``<unk>``. Lossless on seen characters.
    """

    kind = "char"

    def __init__(self, vocab: list[str]) -> None:
        characters = vocab[2:]
        single = all(len(character) == 1 for character in characters)
        if vocab[:2] != [EOS_TOKEN, UNK_TOKEN] or not single or len(set(characters)) != len(characters):
            raise ValueError(f"a character vocabulary is {[EOS_TOKEN, UNK_TOKEN]} followed by distinct single characters")
        self.vocab = list(vocab)
        self._index = {character: index for index, character in enumerate(self.vocab) if index >= 2}

    @classmethod
    def train(cls, text: str) -> CharTokenizer:
        """Vocabulary of the distinct characters of ``text``."""
        if not text:
            raise ValueError("cannot build a character vocabulary from empty text; pass the training split")
        return cls([EOS_TOKEN, UNK_TOKEN, *sorted(set(text))])

    def encode_with_stats(self, text: str) -> tuple[list[int], int]:
        """``(ids, num_oov)``; ``num_oov`` counts characters not seen in training."""
        index, unk_id = self._index, self.unk_id
        ids = [index.get(character, unk_id) for character in text]
        return ids, ids.count(unk_id)

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        return "".join(self.vocab[token_id] for token_id in self._checked_ids(ids))

    def save(self, directory: str | Path) -> None:
        atomic_write_json(Path(directory) / LMCORE_TOKENIZER_FILE, {"kind": self.kind, "vocab": self.vocab})


# --------------------------------------------------------------------------- Hugging Face

# Pieces of a ``"\n"`` followed by a non-space: GPT-2's pre-tokenizer regex always
# splits there, so byte-level BPE ids of the pieces concatenate to the ids of the whole.
_CHUNK_BOUNDARY = re.compile(r"\n(?=\S)")
_CHUNK_CHARACTERS = 1 << 16


class HFTokenizer(Tokenizer):
    """Any Hugging Face tokenizer (GPT-2, a trained byte-level BPE, SmolLM2, ...).

    ``encode`` adds no special tokens. Long texts with a plain byte-level
    pre-tokenizer (GPT-2 style) are encoded in pieces cut at line starts, in
    parallel, with the same ids as in one piece.
    """

    def __init__(self, hf_tokenizer: Any) -> None:
        if hf_tokenizer.eos_token_id is None:
            raise ValueError(f"{type(hf_tokenizer).__name__} has no end-of-sequence token; lmcore needs one (eos_token)")
        self.hf_tokenizer = hf_tokenizer
        self._backend = getattr(hf_tokenizer, "backend_tokenizer", None)
        self._chunkable = self._backend is not None and _is_plain_byte_level(self._backend)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path) -> HFTokenizer:
        """Load by Hub id (from ``$LMCORE_MODELS_DIR`` when it mirrors that id) or from a folder."""
        from transformers import AutoTokenizer  # imported here: transformers takes seconds to import

        mirror = local_mirror(str(name_or_path))
        if mirror is None:
            return cls(AutoTokenizer.from_pretrained(str(name_or_path)))
        folder, gguf_file = mirror
        if gguf_file is None:
            return cls(AutoTokenizer.from_pretrained(folder))
        return cls(AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file))

    @property
    def vocab_size(self) -> int:
        return len(self.hf_tokenizer)

    @property
    def eos_id(self) -> int:
        return self.hf_tokenizer.eos_token_id

    def encode(self, text: str) -> list[int]:
        if self._backend is None:
            return self.hf_tokenizer.encode(text, add_special_tokens=False, verbose=False)
        if not self._chunkable or len(text) <= _CHUNK_CHARACTERS:
            return self._backend.encode(text, add_special_tokens=False).ids
        encodings = self._backend.encode_batch_fast(list(_line_chunks(text)), add_special_tokens=False)
        return list(itertools.chain.from_iterable(encoding.ids for encoding in encodings))

    def encode_with_stats(self, text: str) -> tuple[list[int], int]:
        """``(ids, num_oov)``; ``num_oov`` counts unknown-token ids (0 for byte-level BPEs, which have none)."""
        ids = self.encode(text)
        unk_id = self.hf_tokenizer.unk_token_id
        return ids, (0 if unk_id is None else ids.count(unk_id))

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        ids = self._checked_ids(ids)
        if self._backend is None:
            return self.hf_tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        return self._backend.decode(ids, skip_special_tokens=False)

    def save(self, directory: str | Path) -> None:
        self.hf_tokenizer.save_pretrained(str(directory))


def _is_plain_byte_level(backend: Any) -> bool:
    """Whether the tokenizer pre-tokenizes with GPT-2's ByteLevel regex alone, without prefix space or normalizer."""
    pre_tokenizer = backend.pre_tokenizer
    return (
        backend.normalizer is None
        and isinstance(pre_tokenizer, pre_tokenizers.ByteLevel)
        and not pre_tokenizer.add_prefix_space
        and pre_tokenizer.use_regex
    )


def _line_chunks(text: str) -> Iterator[str]:
    """``text`` in pieces of about ``_CHUNK_CHARACTERS``, each cut after a ``"\\n"`` that precedes a non-space."""
    start = 0
    while start < len(text):
        boundary = _CHUNK_BOUNDARY.search(text, start + _CHUNK_CHARACTERS)
        end = len(text) if boundary is None else boundary.end()
        yield text[start:end]
        start = end


def train_bpe(text: str, vocab_size: int = 32_000, min_frequency: int = 2) -> HFTokenizer:
    """A byte-level BPE trained on ``text`` (GPT-2's scheme), with ``<|endoftext|>`` as id 0.

    The 256 byte symbols are always in the vocabulary, so any text encodes
    losslessly; ``vocab_size`` (at least 257) is an upper bound, reached when the
    text has enough distinct pairs occurring ``min_frequency`` times. The result
    saves as a Hugging Face folder that ``AutoTokenizer.from_pretrained`` loads.
    """
    from tokenizers import Tokenizer as BackendTokenizer
    from tokenizers import decoders, models, trainers
    from transformers import PreTrainedTokenizerFast  # imported here: transformers takes seconds to import

    if not text:
        raise ValueError("cannot train a BPE on empty text; pass the training split")
    minimum = len(pre_tokenizers.ByteLevel.alphabet()) + 1
    if vocab_size < minimum:
        raise ValueError(f"vocab_size must be at least {minimum} (256 bytes + {END_OF_TEXT}), got {vocab_size}")
    backend = BackendTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_line_chunks(text), trainer=trainer)
    return HFTokenizer(PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=END_OF_TEXT, bos_token=END_OF_TEXT))


# --------------------------------------------------------------------------- factory and loading

_OPTIONS = {
    "word": ("normalization", "max_vocab_size", "min_frequency"),
    "char": (),
    "bpe": ("vocab_size", "min_frequency"),
    "gpt2": (),
}


def build_tokenizer(kind: str, train_text: str | None = None, **options: Any) -> Tokenizer:
    """A new tokenizer of ``kind`` (one of ``TOKENIZER_KINDS``).

    ``"word"``, ``"char"`` and ``"bpe"`` learn their vocabulary from
    ``train_text``; ``"gpt2"`` is pretrained and takes none. Options:
    word: ``normalization``, ``max_vocab_size``, ``min_frequency``
    (``WordTokenizer.train``); bpe: ``vocab_size``, ``min_frequency``
    (``train_bpe``).
    """
    if kind not in TOKENIZER_KINDS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; allowed: {TOKENIZER_KINDS}")
    unknown = sorted(set(options) - set(_OPTIONS[kind]))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for a {kind} tokenizer; allowed: {list(_OPTIONS[kind])}")
    if kind == "gpt2":
        if train_text is not None:
            raise ValueError("the gpt2 tokenizer is pretrained; it takes no train_text")
        return HFTokenizer.from_pretrained("gpt2")
    if train_text is None:
        raise ValueError(f"a {kind} tokenizer learns its vocabulary from train_text; pass the training split")
    if kind == "word":
        return WordTokenizer.train(train_text, **options)
    if kind == "char":
        return CharTokenizer.train(train_text)
    return train_bpe(train_text, **options)


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """The tokenizer saved in ``directory`` (by ``save``), or a Hugging Face tokenizer folder."""
    directory = Path(directory)
    lmcore_file = directory / LMCORE_TOKENIZER_FILE
    if lmcore_file.is_file():
        saved = json.loads(lmcore_file.read_text(encoding="utf-8"))
        if saved.get("kind") == WordTokenizer.kind:
            return WordTokenizer(saved["vocab"], saved["normalization"])
        if saved.get("kind") == CharTokenizer.kind:
            return CharTokenizer(saved["vocab"])
        raise ValueError(f"{lmcore_file} holds tokenizer kind {saved.get('kind')!r}; allowed: {[WordTokenizer.kind, CharTokenizer.kind]}")
    if any((directory / name).is_file() for name in HF_TOKENIZER_FILES):
        return HFTokenizer.from_pretrained(directory)
    raise ValueError(
        f"no tokenizer in {directory}: expected {LMCORE_TOKENIZER_FILE} (word/char) or one of {HF_TOKENIZER_FILES} (Hugging Face)"
    )
