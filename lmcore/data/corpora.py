"""Language-modelling corpora by name, as raw text per split.

``load_corpus(name_or_path, split)`` returns the whole text of one split
(``"train"``, ``"valid"`` or ``"test"``) of a named corpus or a local file:

- ``ptb``: Hub ``ptb-text-only/ptb_text_only`` (its parquet export), field
  ``sentence``; mirror ``ptb/ptb.{train,valid,test}.txt``.
- ``wikitext-2``: Hub ``Salesforce/wikitext``, config ``wikitext-2-v1``, field
  ``text``; mirror ``wikitext-2/{valid,test}.txt``.
- ``wikitext-2-raw``: Hub config ``wikitext-2-raw-v1``; mirror
  ``wikitext-2-raw/wiki.test.raw``.
- ``wikitext-103``: Hub config ``wikitext-103-v1``; not mirrored.
- ``tinyshakespeare``: Hub ``karpathy/tiny_shakespeare`` (its parquet
  conversion), field ``text``, one row per split; mirror
  ``tinyshakespeare/input.txt``, split like the Hub.
- ``pubmedqa``: Hub ``qiaojin/PubMedQA``, config ``pqa_labeled``; mirror
  ``pubmedqa/ori_pqal.json`` (see ``lmcore.data.pubmedqa``).

The Hub is used unless ``LMCORE_DATA_DIR`` is set; then only the mirror is
read, and a split the mirror lacks (WikiText-2 train, WikiText-2-raw train and
valid, all of WikiText-103) raises a ValueError that says so.

Both sources give the same text:

- PTB: the Hub's rows are the stripped lines of Mikolov's files; each becomes
  ``" " + sentence + " \\n"``, which reproduces ``ptb.*.txt`` byte for byte.
- WikiText (tokenized, v1): the Hub stores each blank line of the original
  ``wiki.*.tokens`` file as ``""``; those rows are restored to ``" \\n"`` and all
  rows joined, which reproduces the original file (and its blank-line ``<eos>``
  tokens, counted by the usual word-level benchmarks).
- WikiText raw: the rows are joined as they are (``"".join``), blank rows
  vanishing, which is the mirrored ``wiki.test.raw`` (read with universal
  newlines: its ``"\\r\\n"`` line ends become ``"\\n"``).
- Tiny Shakespeare: the Hub's split of ``input.txt`` (1,115,394 characters):
  train = the first ``int(0.9 * n)`` = 1,003,854 characters, then the rest is
  halved: valid = 55,770, test = 55,770.
- PubMedQA: the records of ``lmcore.data.pubmedqa.load_pubmedqa`` (splits
  train 450 / dev 50 / test 500; ``"valid"`` reads ``"dev"``), one line per
  record: its contexts and long answer as one paragraph
  (see ``pubmedqa_corpus_text``).

Any other ``name_or_path`` is read as a UTF-8 text file (universal newlines)
and split by characters: train = the first 90%, valid = the next 5%, test =
the last 5%. Each cut moves forward from the 90% (95%) mark to the next line
start (a mark already at a line start stays), so that no line is split, unless
no line starts before the next mark; then the cut is at the exact character.
"""

from __future__ import annotations

from pathlib import Path

from datasets import load_dataset

from lmcore.data.pubmedqa import load_pubmedqa, pubmedqa_corpus_text
from lmcore.paths import DATA_DIR_ENV, data_dir

CORPUS_NAMES = ("ptb", "wikitext-2", "wikitext-2-raw", "wikitext-103", "tinyshakespeare", "pubmedqa")
SPLITS = ("train", "valid", "test")

HUB_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
PUBMEDQA_SPLIT_OF = {"train": "train", "valid": "dev", "test": "test"}  # corpus split -> PubMedQA split

# ptb_text_only on the Hub is a loading script, which datasets>=4 refuses to run;
# its automatic parquet export holds the same rows.
PTB_HUB_ID = "ptb-text-only/ptb_text_only"
PTB_HUB_REVISION = "refs/convert/parquet"
PTB_HUB_DATA_DIR = "penn_treebank"
WIKITEXT_HUB_ID = "Salesforce/wikitext"
WIKITEXT_CONFIGS = {"wikitext-2": "wikitext-2-v1", "wikitext-2-raw": "wikitext-2-raw-v1", "wikitext-103": "wikitext-103-v1"}
# karpathy/tiny_shakespeare's main branch is a loading script too; this commit (its
# "Convert dataset to Parquet" pull request, refs/pr/2) holds the same three splits as parquet.
TINY_SHAKESPEARE_HUB_ID = "karpathy/tiny_shakespeare"
TINY_SHAKESPEARE_REVISION = "fe12e06d82fe3af4291b90426557387520d81385"

# Files of the local mirror, relative to $LMCORE_DATA_DIR, per corpus and split.
MIRROR_FILES: dict[str, dict[str, str]] = {
    "ptb": {split: f"ptb/ptb.{split}.txt" for split in SPLITS},
    "wikitext-2": {"valid": "wikitext-2/valid.txt", "test": "wikitext-2/test.txt"},
    "wikitext-2-raw": {"test": "wikitext-2-raw/wiki.test.raw"},
    "wikitext-103": {},
    "tinyshakespeare": {split: "tinyshakespeare/input.txt" for split in SPLITS},
}

TRAIN_FRACTION = 0.9
VALID_FRACTION = 0.05


def load_corpus(name_or_path: str, split: str = "train") -> str:
    """The raw text of one split (``"train"``, ``"valid"``, ``"test"``) of a corpus.

    ``name_or_path`` is one of ``CORPUS_NAMES`` or the path of a UTF-8 text file
    (split 90/5/5 by characters at line ends; see the module docstring).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {SPLITS}")
    if name_or_path == "pubmedqa":
        return pubmedqa_corpus_text(load_pubmedqa(PUBMEDQA_SPLIT_OF[split]))
    if name_or_path in CORPUS_NAMES:
        root = data_dir()
        if root is None:
            return _load_from_hub(name_or_path, split)
        return _load_from_mirror(root, name_or_path, split)
    return split_text_file(name_or_path)[split]


def _load_from_hub(name: str, split: str) -> str:
    hub_split = HUB_SPLITS[split]
    if name == "ptb":
        rows = load_dataset(PTB_HUB_ID, revision=PTB_HUB_REVISION, data_dir=PTB_HUB_DATA_DIR, split=hub_split)
        return "".join(f" {sentence} \n" for sentence in rows["sentence"])
    if name in WIKITEXT_CONFIGS:
        config = WIKITEXT_CONFIGS[name]
        lines = load_dataset(WIKITEXT_HUB_ID, config, split=hub_split)["text"]
        if name == "wikitext-2-raw":
            return "".join(lines)
        return "".join(line or " \n" for line in lines)
    rows = load_dataset(TINY_SHAKESPEARE_HUB_ID, revision=TINY_SHAKESPEARE_REVISION, split=hub_split)
    return rows[0]["text"]


def _load_from_mirror(root: Path, name: str, split: str) -> str:
    relative = MIRROR_FILES[name].get(split)
    hub_source = f"{WIKITEXT_HUB_ID}, config {WIKITEXT_CONFIGS[name]}" if name in WIKITEXT_CONFIGS else "the Hub"
    if relative is None:
        raise ValueError(
            f"the local mirror {DATA_DIR_ENV}={root} lacks the {split} split of {name} "
            f"(it has: {sorted(MIRROR_FILES[name]) or 'nothing'}); unset {DATA_DIR_ENV} to load it from {hub_source}"
        )
    path = root / relative
    if not path.is_file():
        raise ValueError(f"the local mirror lacks {path}; unset {DATA_DIR_ENV} to load {name} from {hub_source}")
    text = path.read_text(encoding="utf-8")
    if name == "tinyshakespeare":
        return dict(zip(SPLITS, _split_like_tiny_shakespeare_hub(text)))[split]
    return text


def _split_like_tiny_shakespeare_hub(text: str) -> tuple[str, str, str]:
    """The Hub's 90/5/5 split: the first ``int(0.9 n)`` characters, then the rest halved."""
    cut = int(len(text) * TRAIN_FRACTION)
    train, rest = text[:cut], text[cut:]
    half = int(len(rest) * 0.5)
    return train, rest[:half], rest[half:]


def split_text_file(path: str | Path) -> dict[str, str]:
    """A UTF-8 text file split 90/5/5 by characters at line ends: ``{"train", "valid", "test"} -> text``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"unknown corpus {str(path)!r}: use one of {CORPUS_NAMES} or the path of a UTF-8 text file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error}); convert it to UTF-8") from error
    if not text:
        raise ValueError(f"{path} is empty; a corpus file needs text to split into train/valid/test")
    length = len(text)
    train_mark = int(length * TRAIN_FRACTION)
    valid_mark = int(length * (TRAIN_FRACTION + VALID_FRACTION))
    if not 0 < train_mark < valid_mark < length:
        raise ValueError(f"{path} has {length} characters; splitting it 90/5/5 needs at least 20")
    train_end = _cut_at_line_start(text, train_mark, valid_mark)
    valid_end = _cut_at_line_start(text, valid_mark, length)
    return {"train": text[:train_end], "valid": text[train_end:valid_end], "test": text[valid_end:]}


def _cut_at_line_start(text: str, mark: int, limit: int) -> int:
    """The first line start at or after ``mark`` if ``text[cut:limit]`` stays non-empty, else ``mark``."""
    newline = text.find("\n", mark - 1, limit - 1)
    return mark if newline == -1 else newline + 1
