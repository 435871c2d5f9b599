"""PubMedQA records -> ``datasets.Dataset`` objects in the formats TRL 1.x trainers read.

Three builders, one per kind of fine-tuning data:

- :func:`build_lm_dataset` (domain language modelling, for ``SFTTrainer``): the
  contexts and expert long answers of every record, each document followed by
  the eos token, concatenated into one token stream and cut into fixed
  ``chunk_length`` blocks -> pre-tokenized rows ``{"input_ids": [...]}``. The
  last partial block is dropped, so every row has exactly ``chunk_length``
  tokens. SFTTrainer recognises the ``input_ids`` column, adds no eos and
  trains on every token.
- :func:`build_qa_dataset` (question answering, for ``SFTTrainer``): standard
  prompt-completion rows ``{"prompt": "Question: {q}\\nContext: {contexts}\\nAnswer:",
  "completion": " {decision}. {long answer}"}``. That prompt is the ``"question-first"``
  format (the course's); ``"question-last"`` puts the question after the context,
  ``"Context: {contexts}\\nQuestion: {q}\\nAnswer:"``, next to the answer it asks for
  (:data:`QA_PROMPT_FORMATS`). SFTTrainer appends eos to the
  completion, and with ``completion_only_loss`` (its default for this format)
  the prompt tokens get label -100: the loss is on the completion only.
- :func:`build_preference_dataset` (for ``DPOTrainer``): rows ``{"prompt",
  "chosen", "rejected"}`` with the same prompt as above,
  ``chosen = " {right decision}. {expert long answer}"`` and
  ``rejected = " {wrong decision}. {same long answer}"``. The wrong decision is
  one of the two other labels of {yes, no, maybe}, picked by a random generator
  seeded with ``(seed, pubid)``: the same pair for the same record whatever the
  record order. Chosen and rejected differ only in the decision token(s), so
  the preference signal is exactly "which decision follows from the context".
  (Using the base model's own generated answer as the rejected completion is a
  possible later addition; it is not implemented here.)

Records are :class:`lmcore.data.pubmedqa.PubMedQARecord` objects or mappings
with the same fields (``pubid``, ``question``, ``contexts``, ``long_answer``,
``decision``). A missing or empty field raises ``ValueError`` naming it.

The 500 official PubMedQA test questions must never reach training or
preference data: every builder raises ``ValueError`` when a record's pubid is
one of them (``lmcore.data.pubmedqa.official_test_ids()``, shipped with lmcore,
so the check needs no data download) or in ``exclude_pubids``.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from lmcore.data.pubmedqa import DECISIONS, official_test_ids

QA_PROMPT_FORMATS = {
    "question-first": "Question: {question}\nContext: {context}\nAnswer:",
    "question-last": "Context: {context}\nQuestion: {question}\nAnswer:",
}
DEFAULT_QA_PROMPT = "question-first"


def qa_prompt(record: Any, prompt_format: str = DEFAULT_QA_PROMPT) -> str:
    """The question-answering prompt of a record (also used for DPO and for evaluation).

    prompt_format: a key of :data:`QA_PROMPT_FORMATS`; the contexts are joined by spaces.
    """
    template = QA_PROMPT_FORMATS.get(prompt_format)
    if template is None:
        raise ValueError(f"unknown QA prompt format {prompt_format!r}; allowed: {sorted(QA_PROMPT_FORMATS)}")
    question = _text_field(record, "question")
    context = " ".join(_contexts(record))
    return template.format(question=question, context=context)


def qa_completion(decision: str, long_answer: str) -> str:
    """``" {decision}. {long_answer}"``: the decision first, so it can be scored from the first tokens."""
    return f" {decision}. {long_answer}"


def build_lm_dataset(
    records: Iterable[Any],
    tokenizer: PreTrainedTokenizerBase,
    *,
    chunk_length: int = 256,
    exclude_pubids: Collection[str] = (),
) -> Dataset:
    """Domain language-modelling rows ``{"input_ids": list[int]}``, each exactly ``chunk_length`` tokens.

    Each record contributes one document, its contexts and long answer joined by
    spaces (the abstract as one paragraph, as in ``pubmedqa_corpus_text``) and
    followed by ``tokenizer.eos_token``.
    """
    if chunk_length < 2:
        raise ValueError(f"chunk_length must be at least 2 tokens, got {chunk_length}")
    if tokenizer.eos_token is None:
        raise ValueError("the tokenizer has no eos token; documents need one as separator")
    records = _checked(records, exclude_pubids)
    stream: list[int] = []
    for record in records:
        document = " ".join([*_contexts(record), _text_field(record, "long_answer")]) + tokenizer.eos_token
        stream.extend(tokenizer(document, add_special_tokens=False)["input_ids"])
    num_chunks = len(stream) // chunk_length
    if num_chunks == 0:
        raise ValueError(
            f"{len(records)} record(s) give {len(stream)} tokens, fewer than one chunk of {chunk_length}; "
            "pass more records or a smaller chunk_length"
        )
    chunks = [stream[i * chunk_length : (i + 1) * chunk_length] for i in range(num_chunks)]
    return Dataset.from_list([{"input_ids": chunk} for chunk in chunks])


def build_qa_dataset(
    records: Iterable[Any], *, prompt_format: str = DEFAULT_QA_PROMPT, exclude_pubids: Collection[str] = ()
) -> Dataset:
    """Prompt-completion rows ``{"prompt", "completion", "pubid"}`` (loss on the completion only)."""
    rows = [
        {
            "prompt": qa_prompt(record, prompt_format),
            "completion": qa_completion(_decision(record), _text_field(record, "long_answer")),
            "pubid": str(_field(record, "pubid")),
        }
        for record in _checked(records, exclude_pubids)
    ]
    return Dataset.from_list(rows)


def build_preference_dataset(
    records: Iterable[Any],
    *,
    seed: int = 0,
    prompt_format: str = DEFAULT_QA_PROMPT,
    exclude_pubids: Collection[str] = (),
) -> Dataset:
    """DPO rows ``{"prompt", "chosen", "rejected", "pubid"}``: right vs. a seeded wrong decision, same long answer."""
    rows = []
    for record in _checked(records, exclude_pubids):
        pubid = str(_field(record, "pubid"))
        decision = _decision(record)
        long_answer = _text_field(record, "long_answer")
        rows.append(
            {
                "prompt": qa_prompt(record, prompt_format),
                "chosen": qa_completion(decision, long_answer),
                "rejected": qa_completion(wrong_decision(decision, pubid, seed), long_answer),
                "pubid": pubid,
            }
        )
    return Dataset.from_list(rows)


def wrong_decision(decision: str, pubid: str, seed: int) -> str:
    """One of the two labels other than ``decision``, fixed by ``(seed, pubid)``."""
    others = [label for label in DECISIONS if label != decision]
    return random.Random(f"{seed}:{pubid}").choice(others)


def _checked(records: Iterable[Any], exclude_pubids: Collection[str]) -> list[Any]:
    """The records as a list, after refusing official test questions and ``exclude_pubids``."""
    records = list(records)
    if not records:
        raise ValueError("no records given; pass at least one PubMedQA record")
    forbidden = set(official_test_ids()) | {str(pubid) for pubid in exclude_pubids}
    leaked = sorted({str(_field(record, "pubid")) for record in records} & forbidden)
    if leaked:
        raise ValueError(
            f"{len(leaked)} record(s) are PubMedQA test questions or excluded (pubids {leaked[:5]}); "
            "test questions must never be used for training or preference data: use the train/dev splits"
        )
    return records


def _field(record: Any, name: str) -> Any:
    value = record.get(name) if isinstance(record, Mapping) else getattr(record, name, None)
    if value is None or (isinstance(value, (str, list, tuple)) and len(value) == 0):
        pubid = record.get("pubid") if isinstance(record, Mapping) else getattr(record, "pubid", None)
        raise ValueError(
            f"PubMedQA record {pubid!r} has no {name!r} field (or it is empty); records need the fields "
            "pubid, question, contexts, long_answer, decision"
        )
    return value


def _text_field(record: Any, name: str) -> str:
    value = _field(record, name)
    if not isinstance(value, str):
        raise ValueError(f"field {name!r} must be a string, got {type(value).__name__}")
    return value.strip()


def _contexts(record: Any) -> list[str]:
    contexts = _field(record, "contexts")
    if isinstance(contexts, str) or not isinstance(contexts, Sequence):
        raise ValueError(f"field 'contexts' must be a list of strings, got {type(contexts).__name__}")
    return [str(context).strip() for context in contexts]


def _decision(record: Any) -> str:
    decision = _text_field(record, "decision").lower()
    if decision not in DECISIONS:
        raise ValueError(f"field 'decision' must be one of {DECISIONS}, got {decision!r}")
    return decision
