"""Tokenizers: PTB word vocabulary, PTB normalization, char, trained BPE, GPT-2, save/load."""

from __future__ import annotations

import re

import pytest
import torch

from lmcore.data.tokenizers import (
    END_OF_TEXT,
    CharTokenizer,
    HFTokenizer,
    WordTokenizer,
    build_tokenizer,
    load_tokenizer,
    normalize_text,
)
from lmcore.paths import DATA_DIR_ENV, data_dir

SAMPLE = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 20


# --------------------------------------------------------------------------- word level, PTB


@pytest.fixture(scope="module")
def ptb_texts() -> dict[str, str]:
    """PTB's three splits from the mirror (module scope: the vocabulary is built once)."""
    root = data_dir()
    if root is None:
        pytest.skip(f"needs the offline mirror: set {DATA_DIR_ENV} to a folder like ../shared/data")
    return {split: (root / "ptb" / f"ptb.{split}.txt").read_text(encoding="utf-8") for split in ("train", "valid", "test")}


@pytest.fixture(scope="module")
def ptb_tokenizer(ptb_texts) -> WordTokenizer:
    return build_tokenizer("word", ptb_texts["train"])


def test_ptb_vocabulary_is_its_10000_words(ptb_tokenizer):
    assert ptb_tokenizer.vocab_size == 10_000
    assert ptb_tokenizer.vocab[:2] == ["<eos>", "<unk>"]
    assert ptb_tokenizer.eos_id == 0 and ptb_tokenizer.unk_id == 1


@pytest.mark.parametrize(("split", "num_tokens"), [("train", 929_589), ("valid", 73_760), ("test", 82_430)])
def test_ptb_token_counts_and_no_oov(ptb_tokenizer, ptb_texts, split, num_tokens):
    ids, num_oov = ptb_tokenizer.encode_with_stats(ptb_texts[split])
    assert len(ids) == num_tokens
    assert num_oov == 0
    assert ids.count(ptb_tokenizer.eos_id) == ptb_texts[split].count("\n")


def test_ptb_normalization_leaves_ptb_unchanged(ptb_tokenizer, ptb_texts):
    normalized = build_tokenizer("word", ptb_texts["train"], normalization="ptb")
    assert normalized.vocab == ptb_tokenizer.vocab
    assert normalized.encode(ptb_texts["valid"]) == ptb_tokenizer.encode(ptb_texts["valid"])


def test_ptb_decode_round_trip(ptb_tokenizer, ptb_texts):
    lines = ptb_texts["valid"].splitlines()[:200]
    canonical = "".join(" ".join(line.split()) + "\n" for line in lines)
    assert ptb_tokenizer.decode(ptb_tokenizer.encode(canonical)) == canonical


def test_ptb_normalization_rules():
    wikitext = " The game 's role @-@ playing parts , released in 2011 for 1 @,@ 000 yen ( 3 @.@ 5 % ) \n"
    assert normalize_text(wikitext, "ptb") == "the game 's role-playing parts released in N for N yen N N\n"
    assert normalize_text("He didn 't go ; they CAN 'T stay -- $ 5 & co. 's A/B * <unk> = =", "ptb") == (
        "he did n't go they ca n't stay $ N & co. 's a\\/b \\* <unk>"
    )
    assert normalize_text("the 1980s , 30-year bonds , 13th", "ptb") == "the 1980s 30-year bonds 13th"
    assert normalize_text("in 1986, 1 @,@ <unk> of 4 @.@ 8 @-@ <unk> guns", "ptb") == "in N N of <unk> guns"


def test_wikitext_2_in_ptb_form(shared_data_dir, ptb_tokenizer):
    # Every word of normalized WikiText-2 looks like a PTB word: lowercase or N, no bare
    # number, no punctuation-only word beyond PTB's symbols; OOV counts only unknown words.
    text = (shared_data_dir / "wikitext-2" / "valid.txt").read_text(encoding="utf-8")
    normalized_words = normalize_text(text, "ptb").split()
    for word in set(normalized_words) - {"<unk>", "N"}:
        assert word == word.lower(), word
        assert not re.fullmatch(r"[\d.,]+", word), word
        assert any(character.isalnum() for character in word) or word in {"$", "&", "'", "#"} or set(word) <= {"\\", "*"}, word
    tokenizer = WordTokenizer(ptb_tokenizer.vocab, normalization="ptb")
    ids, num_oov = tokenizer.encode_with_stats(text)
    vocabulary = set(tokenizer.vocab)
    assert num_oov == sum(word not in vocabulary for word in normalized_words)
    assert len(ids) == len(normalized_words) + text.count("\n")


# --------------------------------------------------------------------------- word level, small


def test_word_vocabulary_order_is_by_count_then_alphabetical():
    tokenizer = build_tokenizer("word", "b a c a b a\ny x\n")
    assert tokenizer.vocab == ["<eos>", "<unk>", "a", "b", "c", "x", "y"]


def test_word_encode_eos_per_line_end_and_oov_count():
    tokenizer = build_tokenizer("word", "the cat sat\nthe dog <unk>\n")
    ids, num_oov = tokenizer.encode_with_stats("the bird sat <unk>\nthe cow")
    index = {word: number for number, word in enumerate(tokenizer.vocab)}
    assert ids == [index["the"], 1, index["sat"], 1, 0, index["the"], 1]
    assert num_oov == 2  # bird, cow; the literal <unk> is in the vocabulary
    assert tokenizer.decode(ids) == "the <unk> sat <unk>\nthe <unk>"
    tensor = tokenizer.encode_to_tensor("the bird sat <unk>\nthe cow")
    assert tensor.dtype == torch.long and tensor.tolist() == ids
    assert tokenizer.decode(tensor) == tokenizer.decode(ids)
    assert tokenizer.encode("") == []


def test_word_vocabulary_limits():
    text = "a a a a b b b c c d\n"
    assert build_tokenizer("word", text, max_vocab_size=4).vocab == ["<eos>", "<unk>", "a", "b"]
    assert build_tokenizer("word", text, min_frequency=2).vocab == ["<eos>", "<unk>", "a", "b", "c"]


def test_word_save_load_keeps_vocabulary_and_normalization(tmp_path):
    tokenizer = build_tokenizer("word", "Hello , World 42 !\n", normalization="ptb")
    tokenizer.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, WordTokenizer)
    assert loaded.vocab == tokenizer.vocab == ["<eos>", "<unk>", "N", "hello", "world"]
    assert loaded.normalization == "ptb"
    assert loaded.encode("HELLO 7 world\n") == tokenizer.encode("HELLO 7 world\n") == [3, 2, 4, 0]


# --------------------------------------------------------------------------- character level


def test_char_round_trip_and_unseen_characters(tmp_path):
    tokenizer = build_tokenizer("char", SAMPLE)
    assert tokenizer.vocab_size == len(set(SAMPLE)) + 2
    assert tokenizer.decode(tokenizer.encode(SAMPLE)) == SAMPLE
    ids, num_oov = tokenizer.encode_with_stats("speak é.")
    assert num_oov == 1 and ids[6] == tokenizer.unk_id
    tokenizer.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, CharTokenizer)
    assert loaded.vocab == tokenizer.vocab
    assert loaded.encode(SAMPLE) == tokenizer.encode(SAMPLE)


def test_char_tiny_shakespeare_has_65_characters(shared_data_dir):
    text = (shared_data_dir / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    tokenizer = build_tokenizer("char", text[:1_003_854])
    assert tokenizer.vocab_size == 65 + 2
    valid = text[1_003_854:]
    assert tokenizer.encode_with_stats(valid)[1] == 0
    assert tokenizer.decode(tokenizer.encode(valid)) == valid


# --------------------------------------------------------------------------- byte-level BPE


def test_trained_bpe_is_lossless_and_loads_with_auto_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    tokenizer = build_tokenizer("bpe", SAMPLE, vocab_size=300)
    assert isinstance(tokenizer, HFTokenizer)
    assert 257 <= tokenizer.vocab_size <= 300
    assert tokenizer.eos_id == 0 and tokenizer.decode([tokenizer.eos_id]) == END_OF_TEXT
    unseen = "Ünïcode 🙂 text\n\n\tnever seen, with  double spaces "
    assert tokenizer.decode(tokenizer.encode(SAMPLE)) == SAMPLE
    assert tokenizer.decode(tokenizer.encode(unseen)) == unseen
    assert len(tokenizer.encode(SAMPLE)) < len(SAMPLE.encode()) / 2  # merges learned
    tokenizer.save(tmp_path)
    auto = AutoTokenizer.from_pretrained(tmp_path)
    assert auto.encode(SAMPLE, add_special_tokens=False) == tokenizer.encode(SAMPLE)
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, HFTokenizer)
    assert loaded.encode(unseen) == tokenizer.encode(unseen)
    assert loaded.eos_id == 0 and loaded.vocab_size == tokenizer.vocab_size


def test_long_text_in_pieces_gives_the_same_ids():
    tokenizer = build_tokenizer("bpe", SAMPLE, vocab_size=300)
    long_text = "\n".join(f"{index} {SAMPLE[index % 50:]}  \n \n" for index in range(120))  # > 64K characters
    assert len(long_text) > 1 << 16
    backend = tokenizer.hf_tokenizer.backend_tokenizer
    assert tokenizer.encode(long_text) == backend.encode(long_text, add_special_tokens=False).ids


# --------------------------------------------------------------------------- GPT-2


@pytest.fixture
def gpt2(gpt2_tokenizer_dir) -> HFTokenizer:
    return build_tokenizer("gpt2")  # from the mirror: LMCORE_MODELS_DIR is set


def test_gpt2_known_ids(gpt2):
    assert gpt2.vocab_size == 50_257
    assert gpt2.eos_id == 50_256
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.encode_with_stats("Hello world") == ([15496, 995], 0)


def test_gpt2_long_text_round_trip_and_pieces(gpt2, shared_data_dir):
    text = (shared_data_dir / "wikitext-2-raw" / "wiki.test.raw").read_text(encoding="utf-8")[:200_000]
    ids = gpt2.encode(text)
    assert ids == gpt2.hf_tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids
    assert gpt2.decode(ids) == text
    tensor = gpt2.encode_to_tensor(text[:1000])
    assert tensor.dtype == torch.long and tensor.tolist() == gpt2.encode(text[:1000])


def test_load_tokenizer_reads_a_hugging_face_folder(gpt2_tokenizer_dir):
    assert load_tokenizer(gpt2_tokenizer_dir).encode("Hello world") == [15496, 995]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kind", ["word", "char", "bpe"])
def test_empty_training_text_is_rejected(kind):
    with pytest.raises(ValueError, match="empty text"):
        build_tokenizer(kind, "")


def test_build_tokenizer_errors():
    with pytest.raises(ValueError, match=r"unknown tokenizer kind 'sentencepiece'.*'word', 'char', 'bpe', 'gpt2'"):
        build_tokenizer("sentencepiece", SAMPLE)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['vocab_size'\] for a word tokenizer"):
        build_tokenizer("word", SAMPLE, vocab_size=100)
    with pytest.raises(ValueError, match="pretrained"):
        build_tokenizer("gpt2", SAMPLE)
    with pytest.raises(ValueError, match="train_text"):
        build_tokenizer("char")
    with pytest.raises(ValueError, match=r"unknown normalization 'lower'.*'ptb'"):
        build_tokenizer("word", SAMPLE, normalization="lower")
    with pytest.raises(ValueError, match="at least 257"):
        build_tokenizer("bpe", SAMPLE, vocab_size=100)


def test_decode_rejects_ids_outside_the_vocabulary():
    tokenizer = build_tokenizer("char", "abc")
    with pytest.raises(ValueError, match=r"token id 5 is outside the vocabulary range \[0, 5\)"):
        tokenizer.decode([2, 5])


def test_load_tokenizer_from_a_folder_without_one(tmp_path):
    with pytest.raises(ValueError, match="no tokenizer in"):
        load_tokenizer(tmp_path)
