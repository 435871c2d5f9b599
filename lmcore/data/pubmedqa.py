"""PubMedQA PQA-L: 1,000 expert-labelled yes/no/maybe questions about PubMed abstracts.

Each record holds a question (an article title or derived from one), the
abstract without its conclusion (``contexts``, one string per labelled
section), the conclusion (``long_answer``) and the answer (``decision``).

Splits, the same from the Hub and from the local mirror:

- ``"test"``: the official 500 test questions of the PubMedQA paper, in the
  order of its ``test_ground_truth.json``. The Hub's ``pqa_labeled`` config is
  one split of 1,000 with no test marker, so their PubMed ids ship with lmcore
  as ``pubmedqa_test_ids.txt`` (ids only, no labels). Majority class: yes,
  276/500 = 55.2%.
- ``"train"`` (450) and ``"dev"`` (50): the other 500 questions, sorted by
  PubMed id, shuffled with ``random.Random(SPLIT_SEED)``; the first 50 are dev,
  the rest train. Each split is returned sorted by PubMed id. (The paper uses
  10-fold cross-validation over these 500 instead; one fixed fold keeps runs
  comparable.)

Sources: ``qiaojin/PubMedQA``, config ``pqa_labeled``, on the Hub; or
``$LMCORE_DATA_DIR/pubmedqa/ori_pqal.json`` when ``LMCORE_DATA_DIR`` is set.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from importlib import resources

from datasets import load_dataset

from lmcore.paths import DATA_DIR_ENV, data_dir

PUBMEDQA_SPLITS = ("train", "dev", "test")
DECISIONS = ("yes", "no", "maybe")
HUB_ID = "qiaojin/PubMedQA"
HUB_CONFIG = "pqa_labeled"
SPLIT_SEED = 0
DEV_SIZE = 50
TEST_IDS_FILE = "pubmedqa_test_ids.txt"


@dataclass
class PubMedQARecord:
    """One PubMedQA question with its abstract and answer."""

    pubid: str  # PubMed id, decimal digits
    question: str
    contexts: list[str]  # the abstract's sections, conclusion excluded
    long_answer: str  # the abstract's conclusion
    decision: str  # "yes", "no" or "maybe"

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise ValueError(f"PubMedQA record {self.pubid}: decision {self.decision!r} is not one of {DECISIONS}")


def official_test_ids() -> list[str]:
    """The PubMed ids of the official 500 test questions, in the official order."""
    text = resources.files(__package__).joinpath(TEST_IDS_FILE).read_text(encoding="utf-8")
    return text.split()


def load_pubmedqa(split: str) -> list[PubMedQARecord]:
    """The records of one split: ``"train"`` (450), ``"dev"`` (50) or ``"test"`` (500)."""
    if split not in PUBMEDQA_SPLITS:
        raise ValueError(f"unknown PubMedQA split {split!r}; allowed: {PUBMEDQA_SPLITS}")
    records = _load_all_records()
    official_test = official_test_ids()
    missing = [pubid for pubid in official_test if pubid not in records]
    if missing:
        raise ValueError(f"PubMedQA source lacks {len(missing)} of the official test ids (e.g. {missing[0]}); it is not PQA-L")
    if split == "test":
        return [records[pubid] for pubid in official_test]
    test_set = set(official_test)
    rest = sorted((pubid for pubid in records if pubid not in test_set), key=int)
    random.Random(SPLIT_SEED).shuffle(rest)
    chosen = rest[:DEV_SIZE] if split == "dev" else rest[DEV_SIZE:]
    return [records[pubid] for pubid in sorted(chosen, key=int)]


def _load_all_records() -> dict[str, PubMedQARecord]:
    """All 1,000 PQA-L records by PubMed id, from the local mirror or the Hub."""
    root = data_dir()
    if root is not None:
        path = root / "pubmedqa" / "ori_pqal.json"
        if not path.is_file():
            raise ValueError(f"the local mirror lacks {path}; unset {DATA_DIR_ENV} to load PubMedQA from the Hub ({HUB_ID})")
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {
            pubid: PubMedQARecord(
                pubid=pubid,
                question=item["QUESTION"],
                contexts=list(item["CONTEXTS"]),
                long_answer=item["LONG_ANSWER"],
                decision=item["final_decision"],
            )
            for pubid, item in raw.items()
        }
    dataset = load_dataset(HUB_ID, HUB_CONFIG, split="train")
    records = {}
    for row in dataset:
        pubid = str(row["pubid"])
        records[pubid] = PubMedQARecord(
            pubid=pubid,
            question=row["question"],
            contexts=list(row["context"]["contexts"]),
            long_answer=row["long_answer"],
            decision=row["final_decision"],
        )
    return records


def pubmedqa_corpus_text(records: list[PubMedQARecord]) -> str:
    """Language-modelling text of records: one line per record.

    Each line is the record's contexts followed by its long answer, joined by
    single spaces and ended by ``"\\n"`` (the abstract as one paragraph). The
    question and the yes/no/maybe decision are left out.
    """
    return "".join(" ".join([*record.contexts, record.long_answer]).replace("\n", " ") + "\n" for record in records)
