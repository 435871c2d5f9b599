"""PubMedQA: the official test split, the fixed train/dev split, Hub and mirror agreeing."""

from __future__ import annotations

import json
from collections import Counter

import datasets
import pytest

from lmcore.data import pubmedqa
from lmcore.data.pubmedqa import PubMedQARecord, load_pubmedqa, official_test_ids, pubmedqa_corpus_text
from lmcore.paths import DATA_DIR_ENV


@pytest.fixture
def mirror(monkeypatch, shared_data_dir):
    monkeypatch.setenv(DATA_DIR_ENV, str(shared_data_dir))
    return shared_data_dir


@pytest.fixture
def mirror_splits(mirror) -> dict[str, list[PubMedQARecord]]:
    return {split: load_pubmedqa(split) for split in ("train", "dev", "test")}


def test_shipped_test_ids_are_500_distinct_pubmed_ids():
    ids = official_test_ids()
    assert len(ids) == len(set(ids)) == 500
    assert all(pubid.isdigit() for pubid in ids)


def test_shipped_test_ids_are_the_official_test_split(mirror):
    ground_truth = json.loads((mirror / "pubmedqa" / "test_ground_truth.json").read_text(encoding="utf-8"))
    assert official_test_ids() == list(ground_truth)


def test_split_sizes_and_official_test_labels(mirror, mirror_splits):
    assert {split: len(records) for split, records in mirror_splits.items()} == {"train": 450, "dev": 50, "test": 500}
    ground_truth = json.loads((mirror / "pubmedqa" / "test_ground_truth.json").read_text(encoding="utf-8"))
    assert {record.pubid: record.decision for record in mirror_splits["test"]} == ground_truth


def test_test_majority_class_is_yes_276_of_500(mirror_splits):
    assert Counter(record.decision for record in mirror_splits["test"]).most_common(1) == [("yes", 276)]


def test_no_test_question_in_train_or_dev(mirror_splits):
    test = mirror_splits["test"]
    for split in ("train", "dev"):
        records = mirror_splits[split]
        assert not {record.pubid for record in records} & {record.pubid for record in test}
        assert not {record.question for record in records} & {record.question for record in test}
    assert not {record.pubid for record in mirror_splits["train"]} & {record.pubid for record in mirror_splits["dev"]}
    assert len({record.pubid for records in mirror_splits.values() for record in records}) == 1000


def test_train_dev_split_is_fixed(mirror, mirror_splits):
    assert [record.pubid for record in load_pubmedqa("dev")] == [record.pubid for record in mirror_splits["dev"]]


def test_hub_gives_the_same_splits_as_the_mirror(mirror, mirror_splits, monkeypatch):
    # Rows shaped like qiaojin/PubMedQA pqa_labeled (one "train" split of 1,000, int pubids), built from the mirror.
    raw = json.loads((mirror / "pubmedqa" / "ori_pqal.json").read_text(encoding="utf-8"))
    rows = {
        "pubid": [int(pubid) for pubid in raw],
        "question": [item["QUESTION"] for item in raw.values()],
        "context": [{"contexts": item["CONTEXTS"], "labels": item["LABELS"]} for item in raw.values()],
        "long_answer": [item["LONG_ANSWER"] for item in raw.values()],
        "final_decision": [item["final_decision"] for item in raw.values()],
    }
    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return datasets.Dataset.from_dict(rows)

    monkeypatch.delenv(DATA_DIR_ENV)
    monkeypatch.setattr(pubmedqa, "load_dataset", fake_load_dataset)
    for split, records in mirror_splits.items():
        assert load_pubmedqa(split) == records
    assert calls[0] == (("qiaojin/PubMedQA", "pqa_labeled"), {"split": "train"})


def test_unknown_split_lists_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown PubMedQA split 'valid'.*'dev'"):
        load_pubmedqa("valid")


def test_record_rejects_an_unknown_decision():
    with pytest.raises(ValueError, match="not one of"):
        PubMedQARecord(pubid="1", question="q?", contexts=["c"], long_answer="a", decision="Yes")


def test_corpus_text_is_one_paragraph_per_record():
    records = [
        PubMedQARecord(pubid="1", question="Q1?", contexts=["Background one.", "Results one."], long_answer="So yes.", decision="yes"),
        PubMedQARecord(pubid="2", question="Q2?", contexts=["Only context."], long_answer="Maybe.", decision="maybe"),
    ]
    assert pubmedqa_corpus_text(records) == "Background one. Results one. So yes.\nOnly context. Maybe.\n"
