"""PubMedQA by likelihood: which of "yes", "no", "maybe" does the model find most likely?

For a record, the prompt is the fine-tuning QA prompt (:func:`lmcore.finetune.data.qa_prompt`,
``"Question: ...\\nContext: ...\\nAnswer:"``, or with ``prompt_format="question-last"``
``"Context: ...\\nQuestion: ...\\nAnswer:"``: score a model with the format it was trained on) and each option is scored as the
completion the QA fine-tuning trains on, which starts with ``" {decision}"``:

    log p(option | prompt) = sum over the option's tokens t_i of log p(t_i | prompt, t_1 .. t_{i-1})

(the summed log-likelihood, so an option of several tokens is scored by all of them).
The three log-likelihoods are renormalised into probabilities over the options
(a softmax over them) and the prediction is the most likely option. A base model
is thus evaluated zero-shot, with no generation and no answer parsing.

Tokenization follows TRL's SFTTrainer for prompt-completion rows, so scoring sees
the same tokens as training: ``prompt`` and ``prompt + " " + option`` are tokenized
(Hugging Face tokenizers with their special tokens, e.g. a BOS), and the option's
tokens are those after the two token lists' common prefix. For byte-level BPE
tokenizers (GPT-2, SmolLM2) this is the prompt's tokens followed by the option's.

Efficiency: an option's log-likelihood needs one forward pass over
``prompt + option[:-1]``; options whose inputs are prefixes of another option's
input share its pass, so single-token options (GPT-2's " yes", " no", " maybe")
cost one forward pass of the prompt per record. Passes of several records run
as a right-padded batch (causal attention keeps padding out of real positions),
longest first. A prompt longer than the model's context window keeps its last
tokens (the end of the context and "Answer:"); the number of such records is reported.

Metrics (:func:`evaluate_pubmedqa`): accuracy and macro-F1 as the official PubMedQA
evaluation script computes them (scikit-learn's ``accuracy_score`` and
``f1_score(average="macro")``), from the ``evaluate`` metric modules shipped in
``lmcore/metrics`` (loaded from their local path, so they work offline), the
majority-class baseline of the same records (55.2% = 276/500 on the test split:
"yes"), the confusion matrix, and the yes/no AUC (:func:`yes_no_auc`): whether the
model's preference for "yes" over "no" depends on the question and abstract at all,
whatever its bias towards one answer.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmcore.data.pubmedqa import DECISIONS
from lmcore.finetune.data import DEFAULT_QA_PROMPT, qa_prompt
from lmcore.models.base import LanguageModel
from lmcore.models.hf import as_language_model

METRICS_DIR = Path(__file__).resolve().parents[1] / "metrics"
ACCURACY_METRIC = "pubmedqa_accuracy"
F1_METRIC = "pubmedqa_f1"


@functools.cache
def load_metric(name: str):
    """The ``evaluate`` metric module ``lmcore/metrics/<name>`` (``pubmedqa_accuracy`` or ``pubmedqa_f1``)."""
    import evaluate

    path = METRICS_DIR / name
    if not (path / f"{name}.py").is_file():
        available = sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())
        raise ValueError(f"no metric module {name!r} in {METRICS_DIR}; available: {available}")
    return evaluate.load(str(path), keep_in_memory=True)


# ----------------------------------------------------------------------------- scoring


def score_decisions(
    model: LanguageModel | PreTrainedModel,
    tokenizer: Any,
    question: str,
    contexts: str | Sequence[str],
    *,
    options: Sequence[str] = DECISIONS,
    prompt_format: str = DEFAULT_QA_PROMPT,
) -> dict[str, float]:
    """Probabilities ``{"yes": p, "no": p, "maybe": p}`` (summing to 1) that the answer starts with each option.

    model: a Hugging Face causal LM, an :class:`~lmcore.models.hf.HFCausalLM` or any lmcore model.
    tokenizer: its Hugging Face tokenizer (or an lmcore tokenizer).
    question: the question; contexts: the abstract, one string or a list of section strings.
    options: the answers to compare (each scored after a space, as the QA completion starts).
    prompt_format: the QA prompt format (a key of ``lmcore.finetune.data.QA_PROMPT_FORMATS``).
    """
    if isinstance(contexts, str):
        contexts = [contexts]
    record = {"pubid": None, "question": question, "contexts": list(contexts)}
    predictions = predict_decisions(model, tokenizer, [record], batch_size=1, options=options, prompt_format=prompt_format)
    return predictions[0]["probabilities"]


def predict_decisions(
    model: LanguageModel | PreTrainedModel,
    tokenizer: Any,
    records: Iterable[Any],
    *,
    batch_size: int = 4,
    options: Sequence[str] = DECISIONS,
    prompt_format: str = DEFAULT_QA_PROMPT,
) -> list[dict[str, Any]]:
    """Score every option for every record; one dict per record, in order.

    records: :class:`~lmcore.data.pubmedqa.PubMedQARecord` objects or mappings with at least
        ``question`` and ``contexts`` (``pubid`` and ``decision`` are copied when present).
    batch_size: forward passes (sequences) per batch.
    prompt_format: the QA prompt format (a key of ``lmcore.finetune.data.QA_PROMPT_FORMATS``).

    Each dict holds ``pubid``, ``decision`` (the gold label, or None), ``prediction`` (the most
    likely option; the first of ``options`` on a tie), ``probabilities`` and ``log_likelihoods``
    (option -> value, nats) and ``prompt_truncated`` (the prompt lost tokens to the context window).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    options = list(options)
    well_formed = all(isinstance(option, str) and option.strip() for option in options)
    if len(options) < 2 or len(set(options)) != len(options) or not well_formed:
        raise ValueError(f"options must be at least two distinct non-empty strings, got {options}")
    records = list(records)
    if not records:
        raise ValueError("no records given; pass at least one PubMedQA record")
    lm = as_language_model(model)
    queries = [
        _record_queries(tokenizer, qa_prompt(record, prompt_format), options, lm.max_context) for record in records
    ]
    # The mode is restored on `model` itself: a fresh HFCausalLM wrapper does not know the wrapped model's mode.
    was_training = model.training
    try:
        log_likelihoods = _option_log_likelihoods(lm.eval(), queries, batch_size)  # (records, options), float64
    finally:
        model.train(was_training)

    results = []
    for record, query, scores in zip(records, queries, log_likelihoods, strict=True):
        probabilities = scores.softmax(dim=0)
        results.append(
            {
                "pubid": _optional_field(record, "pubid"),
                "decision": _optional_field(record, "decision"),
                "prediction": options[int(scores.argmax())],
                "probabilities": dict(zip(options, probabilities.tolist(), strict=True)),
                "log_likelihoods": dict(zip(options, scores.tolist(), strict=True)),
                "prompt_truncated": query.truncated,
            }
        )
    return results


@dataclass
class _OptionTarget:
    """Where one option is read: ``sequence[start:start + len(tokens)]`` predicts ``tokens``."""

    sequence: int  # index into the record's sequences
    start: int  # input position whose logits predict the option's first token
    tokens: list[int]


@dataclass
class _RecordQueries:
    """The forward passes one record needs, and where each option is read from them."""

    sequences: list[list[int]]
    targets: list[_OptionTarget]  # one per option, in the order of the options
    truncated: bool


def _record_queries(tokenizer: Any, prompt: str, options: list[str], window: int | None) -> _RecordQueries:
    """Tokenize ``prompt`` and ``prompt + " " + option`` as TRL does; share passes between options."""
    prompt_ids = _encode(tokenizer, prompt)
    full_ids = [_encode(tokenizer, f"{prompt} {option}") for option in options]
    prefix_lengths = [_common_prefix_length(prompt_ids, ids) for ids in full_ids]
    for option, ids, prefix in zip(options, full_ids, prefix_lengths, strict=True):
        if prefix == len(ids) or prefix == 0:
            raise ValueError(
                f"the option {option!r} adds no token after the prompt, or the prompt has no token before it; "
                "use options that tokenize to at least one token and a non-empty prompt"
            )
    # Inputs are full_ids[:-1]; keep their last `window` tokens, the same cut for every option.
    cut = 0 if window is None else max(0, max(len(ids) - 1 for ids in full_ids) - window)
    if cut >= min(prefix_lengths):
        raise ValueError(
            f"an option is longer than the model's context window of {window} tokens; use shorter options"
        )

    sequences: list[list[int]] = []
    targets: list[_OptionTarget | None] = [None] * len(options)
    # Longest inputs first, so a shorter input finds the longer one it is a prefix of.
    for index in sorted(range(len(options)), key=lambda i: -len(full_ids[i])):
        inputs = full_ids[index][cut:-1]
        owner = next((s for s, seq in enumerate(sequences) if seq[: len(inputs)] == inputs), None)
        if owner is None:
            sequences.append(inputs)
            owner = len(sequences) - 1
        prefix = prefix_lengths[index] - cut
        targets[index] = _OptionTarget(sequence=owner, start=prefix - 1, tokens=full_ids[index][cut + prefix :])
    return _RecordQueries(sequences=sequences, targets=targets, truncated=cut > 0)


def _option_log_likelihoods(lm: LanguageModel, queries: list[_RecordQueries], batch_size: int) -> torch.Tensor:
    """(records, options) float64 summed log-likelihoods, from right-padded batches of sequences (lm in eval mode)."""
    num_options = len(queries[0].targets)
    scores = torch.zeros(len(queries), num_options, dtype=torch.float64)
    # Every sequence of every record, longest first (little padding within a batch).
    flat = [(r, s) for r, query in enumerate(queries) for s in range(len(query.sequences))]
    flat.sort(key=lambda item: -len(queries[item[0]].sequences[item[1]]))
    readers: dict[tuple[int, int], list[int]] = {}  # (record, sequence) -> options read from it
    for r, query in enumerate(queries):
        for o, target in enumerate(query.targets):
            readers.setdefault((r, target.sequence), []).append(o)

    device = lm.device
    with torch.inference_mode():
        for first in range(0, len(flat), batch_size):
            group = flat[first : first + batch_size]
            width = max(len(queries[r].sequences[s]) for r, s in group)
            inputs = torch.zeros(len(group), width, dtype=torch.long)  # (b, T); padding id 0, never read
            for row, (r, s) in enumerate(group):
                sequence = queries[r].sequences[s]
                inputs[row, : len(sequence)] = torch.tensor(sequence)
            logits = lm(inputs.to(device)).logits  # (b, T, V)
            for row, (r, s) in enumerate(group):
                for o in readers[(r, s)]:
                    target = queries[r].targets[o]
                    positions = slice(target.start, target.start + len(target.tokens))
                    log_probs = logits[row, positions].float().log_softmax(dim=-1)  # (len(tokens), V)
                    tokens = torch.tensor(target.tokens, device=log_probs.device)
                    scores[r, o] = log_probs.gather(1, tokens[:, None]).sum().double()
    return scores


def _encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids as TRL's SFTTrainer makes them: Hugging Face tokenizers add their special tokens (e.g. BOS)."""
    if isinstance(tokenizer, PreTrainedTokenizerBase):
        return list(tokenizer(text)["input_ids"])
    return list(tokenizer.encode(text))


def _common_prefix_length(a: list[int], b: list[int]) -> int:
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length


def _optional_field(record: Any, name: str) -> Any:
    value = record.get(name) if isinstance(record, Mapping) else getattr(record, name, None)
    return None if value is None else str(value)


# ----------------------------------------------------------------------------- metrics


def evaluate_pubmedqa(
    model: LanguageModel | PreTrainedModel,
    tokenizer: Any,
    records: Iterable[Any],
    *,
    batch_size: int = 4,
    prompt_format: str = DEFAULT_QA_PROMPT,
) -> dict[str, Any]:
    """Accuracy, macro-F1, majority baseline and confusion matrix of the likelihood predictions.

    records: labelled PubMedQA records (``question``, ``contexts``, ``decision``), e.g.
        ``lmcore.data.load_pubmedqa("test")``.
    prompt_format: the QA prompt format (see :func:`predict_decisions`).

    Returns a JSON-ready dict: ``n``; ``accuracy`` and ``macro_f1`` (in [0, 1]) and ``f1_per_label``;
    ``majority_label``, ``majority_baseline`` (the accuracy of always answering the most frequent
    gold label; 0.552 on the test split) and ``majority_macro_f1``; ``confusion_matrix``
    ``{gold: {prediction: count}}`` over yes/no/maybe; ``prediction_counts``; ``yes_no_auc``
    (:func:`yes_no_auc`, None without both a gold "yes" and a gold "no"); ``truncated_prompts``;
    and ``predictions`` (the :func:`predict_decisions` dicts).
    """
    records = list(records)
    if not records:
        raise ValueError("no records given; pass at least one labelled PubMedQA record")
    golds = [_gold_decision(record) for record in records]  # checked before the model runs
    predictions = predict_decisions(model, tokenizer, records, batch_size=batch_size, prompt_format=prompt_format)
    predicted = [prediction["prediction"] for prediction in predictions]

    accuracy_metric, f1_metric = load_metric(ACCURACY_METRIC), load_metric(F1_METRIC)
    f1 = f1_metric.compute(predictions=predicted, references=golds)
    gold_counts = Counter(golds)
    majority_label = max(DECISIONS, key=lambda label: gold_counts[label])  # the first of DECISIONS on a tie
    majority = [majority_label] * len(golds)
    confusion = {gold: {label: 0 for label in DECISIONS} for gold in DECISIONS}
    for gold, prediction in zip(golds, predicted, strict=True):
        confusion[gold][prediction] += 1
    return {
        "n": len(records),
        "accuracy": accuracy_metric.compute(predictions=predicted, references=golds)["accuracy"],
        "macro_f1": f1["macro_f1"],
        "f1_per_label": f1["f1_per_label"],
        "majority_label": majority_label,
        "majority_baseline": accuracy_metric.compute(predictions=majority, references=golds)["accuracy"],
        "majority_macro_f1": f1_metric.compute(predictions=majority, references=golds)["macro_f1"],
        "confusion_matrix": confusion,
        "prediction_counts": {label: predicted.count(label) for label in DECISIONS},
        "yes_no_auc": yes_no_auc(predictions),
        "truncated_prompts": sum(prediction["prompt_truncated"] for prediction in predictions),
        "predictions": predictions,
    }


def yes_no_auc(predictions: Sequence[Mapping[str, Any]]) -> float | None:
    """How well ``log p(yes) - log p(no)`` ranks the gold-"yes" records above the gold-"no" ones.

    predictions: :func:`predict_decisions` dicts (``decision`` and ``log_likelihoods`` are used;
        "maybe" records are left out).

    Returns the area under the ROC curve: the share of (gold-yes, gold-no) pairs whose yes record
    scores higher, ties counting half. 0.5 means the score does not depend on the record (any
    constant bias, e.g. always answering "yes", gives 0.5); 1.0 separates the two classes
    perfectly. None without at least one gold "yes" and one gold "no".
    """
    margins: dict[str, list[float]] = {"yes": [], "no": []}
    for prediction in predictions:
        if prediction["decision"] in margins:
            scores = prediction["log_likelihoods"]
            margins[prediction["decision"]].append(scores["yes"] - scores["no"])
    if not margins["yes"] or not margins["no"]:
        return None
    wins = sum((yes > no) + 0.5 * (yes == no) for yes in margins["yes"] for no in margins["no"])
    return wins / (len(margins["yes"]) * len(margins["no"]))


def _gold_decision(record: Any) -> str:
    decision = _optional_field(record, "decision")
    if decision not in DECISIONS:
        pubid = _optional_field(record, "pubid")
        raise ValueError(
            f"PubMedQA record {pubid!r} has decision {decision!r}; evaluation needs labelled records whose "
            f"'decision' is one of {DECISIONS}"
        )
    return decision

