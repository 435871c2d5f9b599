"""Corpora: the Hub code path (load_dataset monkeypatched), the local mirror, local text files."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from lmcore.data import corpora, pubmedqa
from lmcore.data.corpora import CORPUS_NAMES, load_corpus, split_text_file
from lmcore.paths import DATA_DIR_ENV


class FakeLoadDataset:
    """Stands in for ``datasets.load_dataset``: records each call, returns the given rows."""

    def __init__(self, rows: dict[str, list]) -> None:
        self.rows = rows
        self.calls: list[tuple[tuple, dict]] = []

    def __call__(self, *args, **kwargs) -> datasets.Dataset:
        self.calls.append((args, kwargs))
        return datasets.Dataset.from_dict(self.rows)


@pytest.fixture
def hub(monkeypatch):
    """Use the Hub code path, with ``load_dataset`` replaced: ``hub(rows)`` installs and returns the fake."""
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)

    def install(rows: dict[str, list]) -> FakeLoadDataset:
        fake = FakeLoadDataset(rows)
        monkeypatch.setattr(corpora, "load_dataset", fake)
        monkeypatch.setattr(pubmedqa, "load_dataset", fake)
        return fake

    return install


# --------------------------------------------------------------------------- bad input


def test_unknown_corpus_name_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown corpus 'penn'.*wikitext-103"):
        load_corpus("penn")


def test_unknown_split_lists_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown split 'validation'.*'valid'"):
        load_corpus("ptb", "validation")


# --------------------------------------------------------------------------- Hub code path


def test_ptb_from_hub_rebuilds_mikolovs_lines(hub):
    fake = hub({"sentence": ["the cat sat", "<unk> rose N N"]})
    text = load_corpus("ptb", "valid")
    assert fake.calls == [
        (("ptb-text-only/ptb_text_only",), {"revision": "refs/convert/parquet", "data_dir": "penn_treebank", "split": "validation"})
    ]
    assert text == " the cat sat \n <unk> rose N N \n"


@pytest.mark.parametrize(
    ("name", "config"),
    [("wikitext-2", "wikitext-2-v1"), ("wikitext-103", "wikitext-103-v1")],
)
def test_tokenized_wikitext_from_hub_restores_blank_lines(hub, name, config):
    fake = hub({"text": ["", " = Title = \n", "", " Some words . \n"]})
    text = load_corpus(name, "test")
    assert fake.calls == [(("Salesforce/wikitext", config), {"split": "test"})]
    assert text == " \n = Title = \n \n Some words . \n"


def test_raw_wikitext_from_hub_joins_rows_as_they_are(hub):
    fake = hub({"text": ["", " = Title = \n", "", " Some words.\n"]})
    text = load_corpus("wikitext-2-raw", "train")
    assert fake.calls == [(("Salesforce/wikitext", "wikitext-2-raw-v1"), {"split": "train"})]
    assert text == " = Title = \n Some words.\n"


def test_tiny_shakespeare_from_hub_is_the_text_of_the_split_row(hub):
    fake = hub({"text": ["First Citizen:\nBefore we proceed"]})
    assert load_corpus("tinyshakespeare", "test") == "First Citizen:\nBefore we proceed"
    assert fake.calls == [
        (("karpathy/tiny_shakespeare",), {"revision": corpora.TINY_SHAKESPEARE_REVISION, "split": "test"})
    ]


def test_pubmedqa_corpus_from_hub_is_one_paragraph_per_record(hub):
    test_ids = pubmedqa.official_test_ids()
    other_ids = [str(10**9 + number) for number in range(500)]
    pubids = [int(pubid) for pubid in test_ids + other_ids]
    fake = hub(
        {
            "pubid": pubids,
            "question": [f"question {pubid}?" for pubid in pubids],
            "context": [{"contexts": [f"background {pubid}.", f"results {pubid}."], "labels": ["B", "R"]} for pubid in pubids],
            "long_answer": [f"conclusion {pubid}." for pubid in pubids],
            "final_decision": ["yes"] * len(pubids),
        }
    )
    text = load_corpus("pubmedqa", "test")
    assert fake.calls == [(("qiaojin/PubMedQA", "pqa_labeled"), {"split": "train"})]
    lines = text.split("\n")
    assert lines[-1] == "" and len(lines) == 501
    first = test_ids[0]
    assert lines[0] == f"background {first}. results {first}. conclusion {first}."
    assert len(load_corpus("pubmedqa", "valid").splitlines()) == 50
    assert len(load_corpus("pubmedqa", "train").splitlines()) == 450


def test_hub_and_mirror_give_the_same_ptb_text(shared_data_dir, hub):
    # ptb_text_only's rows are the stripped lines of Mikolov's files.
    mirror_text = (shared_data_dir / "ptb" / "ptb.valid.txt").read_text(encoding="utf-8")
    hub({"sentence": [line.strip() for line in mirror_text.splitlines()]})
    assert load_corpus("ptb", "valid") == mirror_text


def test_hub_and_mirror_give_the_same_wikitext_2_text(shared_data_dir, hub):
    # The Hub's WikiText rows are the file's lines, with blank lines stored as "".
    mirror_text = (shared_data_dir / "wikitext-2" / "test.txt").read_text(encoding="utf-8")
    hub({"text": [line if line.strip() else "" for line in mirror_text.splitlines(keepends=True)]})
    assert load_corpus("wikitext-2", "test") == mirror_text


# --------------------------------------------------------------------------- local mirror


@pytest.fixture
def mirror(monkeypatch, shared_data_dir):
    monkeypatch.setenv(DATA_DIR_ENV, str(shared_data_dir))
    return shared_data_dir


def test_mirror_tiny_shakespeare_reproduces_the_hub_split(mirror):
    splits = [load_corpus("tinyshakespeare", split) for split in ("train", "valid", "test")]
    assert [len(text) for text in splits] == [1_003_854, 55_770, 55_770]
    assert "".join(splits) == (mirror / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")


def test_mirror_ptb_is_the_file(mirror):
    assert load_corpus("ptb", "test") == (mirror / "ptb" / "ptb.test.txt").read_text(encoding="utf-8")


def test_mirror_wikitext_2_raw_test_has_unix_line_ends(mirror):
    text = load_corpus("wikitext-2-raw", "test")
    assert "\r" not in text
    assert text.startswith(" = Robert Boulter = \n Robert Boulter is an English film")


@pytest.mark.parametrize(("name", "split"), [("wikitext-2", "train"), ("wikitext-2-raw", "valid"), ("wikitext-103", "test")])
def test_mirror_says_which_splits_it_lacks_and_how_to_get_them(mirror, name, split):
    with pytest.raises(ValueError, match=f"lacks the {split} split of {name}.*unset {DATA_DIR_ENV}.*Salesforce/wikitext"):
        load_corpus(name, split)


def test_every_corpus_name_has_a_source():
    assert set(CORPUS_NAMES) == {*corpora.MIRROR_FILES, "pubmedqa"}


# --------------------------------------------------------------------------- local text files


def test_text_file_splits_90_5_5_at_line_ends(tmp_path: Path):
    lines = [f"line {index:03d}\n" for index in range(1000)]  # 9 characters each
    lines[899] = "a longer line 899\n"  # moves the 90% mark into line 899
    path = tmp_path / "corpus.txt"
    path.write_text("".join(lines), encoding="utf-8")
    splits = {split: load_corpus(str(path), split) for split in ("train", "valid", "test")}
    assert splits["train"] + splits["valid"] + splits["test"] == "".join(lines)
    # The 90% mark (character 8,108 of 9,009) is inside line 899 (characters 8,091 to 8,108)
    # and the 95% mark (8,558) is line 949's "\n": both cuts move to the next line start.
    assert splits["train"] == "".join(lines[:900])
    assert splits["valid"] == "".join(lines[900:950])
    assert splits["test"] == "".join(lines[950:])


def test_text_file_without_line_ends_is_cut_at_exact_characters(tmp_path: Path):
    path = tmp_path / "one_line.txt"
    path.write_text("x" * 1000, encoding="utf-8")
    assert [len(text) for text in split_text_file(path).values()] == [900, 50, 50]


def test_text_file_errors(tmp_path: Path):
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        load_corpus(str(empty))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café au lait\n".encode("latin-1") * 10)
    with pytest.raises(ValueError, match="not UTF-8"):
        load_corpus(str(latin1))
    short = tmp_path / "short.txt"
    short.write_text("tiny\n", encoding="utf-8")
    with pytest.raises(ValueError, match="at least 20"):
        load_corpus(str(short))
    with pytest.raises(ValueError, match="unknown corpus"):
        load_corpus(str(tmp_path / "missing.txt"))
