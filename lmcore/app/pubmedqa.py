"""PubMedQA Q&A: a base model and its fine-tuned version answer the same question side by side.

- :func:`load_test_questions` lists the official test questions (Hub or ``$LMCORE_DATA_DIR``),
  or says why it cannot.
- :func:`decision_probabilities` asks one model for P(yes), P(no), P(maybe) after the QA
  prompt (:func:`lmcore.eval.pubmedqa.score_decisions`, the method of the evaluation);
  the answers themselves stream through :func:`lmcore.app.generation.stream_side_by_side`.
- :func:`find_evaluation` and :func:`evaluation_summary` read the evaluation report of
  ``training/evaluate_finetune.py`` (or a bare :func:`lmcore.eval.pubmedqa.evaluate_pubmedqa`
  result) for the accuracy summary.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from lmcore.app.registry import ModelRegistry
from lmcore.data import load_pubmedqa
from lmcore.eval.pubmedqa import score_decisions
from lmcore.finetune.data import DEFAULT_QA_PROMPT, QA_PROMPT_FORMATS, qa_prompt
from lmcore.io import read_json_object
from lmcore.paths import DATA_DIR_ENV, data_dir

DECISIONS = ("yes", "no", "maybe")
MAX_QUESTION_CHARS = 500
MAX_CONTEXT_CHARS = 6000
ANSWER_TOKENS = 48


@dataclass
class Question:
    """A question to answer: from the test split (with its gold label) or typed."""

    question: str
    contexts: list[str]
    pubid: str | None = None
    gold: str | None = None  # yes / no / maybe, when the question is a labelled test question
    long_answer: str | None = None  # the abstract's conclusion, for labelled questions


@lru_cache(maxsize=2)
def load_test_questions(online: bool = True) -> tuple[list[Question], str]:
    """(the 500 official test questions, a message); no questions and the reason when they cannot be loaded.

    ``online``: whether the Hub may be asked (without a local mirror). The outcome is cached,
    a failure too, so page loads do not retry a download that cannot succeed.
    """
    typed = "type a question and its context instead."
    try:
        if not online and data_dir() is None:
            return [], f"The PubMedQA test questions need the Hub or a local mirror ({DATA_DIR_ENV}); {typed}"
        records = load_pubmedqa("test")
    except Exception as error:  # no mirror and no Hub: the tab still works with typed questions
        return [], f"The PubMedQA test questions could not be loaded ({type(error).__name__}: {error}); {typed}"
    questions = [
        Question(question=r.question, contexts=list(r.contexts), pubid=r.pubid, gold=r.decision, long_answer=r.long_answer)
        for r in records
    ]
    return questions, f"{len(questions)} test questions of PubMedQA (PQA-L, the official test split)."


def question_choices(questions: list[Question]) -> list[tuple[str, str]]:
    """Dropdown choices (label, pubid)."""
    return [(f"{q.pubid} · {_shorten(q.question, 110)}", q.pubid) for q in questions if q.pubid]


def _shorten(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1].rstrip() + "…"


def check_question(question: str | None, context: str | None, chosen: Question | None = None) -> tuple[Question, list[str]]:
    """The question to answer, from the text boxes; ValueError when the question or context is empty.

    The gold label of ``chosen`` (the test question picked from the list) is kept only while
    the boxes still hold that question unchanged.
    """
    notes = []
    question = (question or "").strip()
    context = (context or "").strip()
    if not question:
        raise ValueError("The question is empty: pick a test question or type one.")
    if not context:
        raise ValueError("The context is empty: paste the abstract (or a few sentences) the answer should rest on.")
    if len(question) > MAX_QUESTION_CHARS:
        notes.append(f"The question was cut to {MAX_QUESTION_CHARS} characters.")
        question = question[:MAX_QUESTION_CHARS]
    if len(context) > MAX_CONTEXT_CHARS:
        notes.append(f"The context was cut to its first {MAX_CONTEXT_CHARS:,} characters (it had {len(context):,}).")
        context = context[:MAX_CONTEXT_CHARS]
    contexts = [part.strip() for part in context.split("\n\n") if part.strip()]
    if chosen is not None and question == chosen.question.strip() and contexts == [c.strip() for c in chosen.contexts]:
        return Question(question, contexts, chosen.pubid, chosen.gold, chosen.long_answer), notes
    return Question(question, contexts), notes


def context_text(question: Question) -> str:
    """The contexts as the text box shows them (sections separated by blank lines)."""
    return "\n\n".join(question.contexts)


def qa_prompt_text(question: Question, prompt_format: str = DEFAULT_QA_PROMPT) -> str:
    """The fine-tuning QA prompt (``Question: ...\\nContext: ...\\nAnswer:``, or another format of
    ``lmcore.finetune.data.QA_PROMPT_FORMATS``)."""
    return qa_prompt({"question": question.question, "contexts": question.contexts}, prompt_format)


def prompt_outline(prompt_format: str | None = None) -> str:
    """The QA prompt format (None: the default) on one line with "…" for the texts, e.g.
    ``Question: … Context: … Answer:``."""
    return QA_PROMPT_FORMATS[prompt_format or DEFAULT_QA_PROMPT].format(question="…", context="…").replace("\n", " ")


def finetuned_prompt_format(finetuned: Path | None) -> str | None:
    """The QA prompt format the fine-tuned model at ``finetuned`` was trained with, from the settings in
    the ``config.json`` of its run folder (``finetuned`` or its parent); None when no run record says."""
    if finetuned is None:
        return None
    for folder in (finetuned, finetuned.parent):
        record = read_json_object(folder / "config.json")
        if isinstance(record, dict) and "method" in record and isinstance(record.get("settings"), dict):
            prompt_format = record["settings"].get("qa_prompt")
            return prompt_format if isinstance(prompt_format, str) else None
    return None


def decision_probabilities(
    registry: ModelRegistry, name: str, question: Question, prompt_format: str = DEFAULT_QA_PROMPT
) -> dict[str, float]:
    """P(yes), P(no), P(maybe) from model ``name``; ModelUnavailable with a reason."""
    loaded = registry.get(name)
    probabilities = score_decisions(loaded.model, loaded.tokenizer, question.question, question.contexts,
                                    prompt_format=prompt_format)  # fmt: skip
    return {decision: float(probabilities[decision]) for decision in DECISIONS if decision in probabilities}


def verdict(probabilities: dict[str, float] | None, gold: str | None) -> str:
    """A short line: the model's pick, and whether it matches the gold label when known."""
    if not probabilities:
        return ""
    pick = max(probabilities, key=probabilities.get)
    text = f"Answers **{pick}** ({probabilities[pick]:.0%})"
    if gold is not None:
        text += " — ✓ correct" if pick == gold else f" — ✗ wrong (gold: {gold})"
    return text


@dataclass
class AnswerState:
    """Where answering one question stands, for each model (base first, then fine-tuned)."""

    stage: str  # "scoring <model>", "writing" or "done"
    probabilities: list[dict[str, float] | None]  # P(yes/no/maybe) per model, None until scored or if unavailable
    verdicts: list[str]  # the pick and whether it is right, or "unavailable: <reason>"
    outputs: list[Any]  # lmcore.app.generation.ModelOutput snapshots of the written answers


def answer_side_by_side(
    registry: ModelRegistry,
    names: list[str | None],
    question: Question,
    missing_reasons: list[str] | None = None,
    prompt_format: str = DEFAULT_QA_PROMPT,
) -> Iterator[AnswerState]:
    """Score yes/no/maybe with each model, then stream their greedy answers side by side.

    names: the base model and the fine-tuned one (None when there is none; ``missing_reasons``
    says why). prompt_format: the QA prompt format for both (the fine-tuned model's). Yields after each model is scored and whenever an answer grows; closing the
    generator stops the answers being written.
    """
    from lmcore.app.generation import Decoding, stream_side_by_side

    missing_reasons = missing_reasons or [""] * len(names)
    probabilities: list[dict[str, float] | None] = [None] * len(names)
    verdicts = [""] * len(names)
    for index, name in enumerate(names):
        if name is None:
            verdicts[index] = f"unavailable: {missing_reasons[index]}"
            continue
        yield AnswerState(f"scoring {name}", list(probabilities), list(verdicts), [])
        try:
            probabilities[index] = decision_probabilities(registry, name, question, prompt_format)
            verdicts[index] = verdict(probabilities[index], question.gold)
        except Exception as error:  # an unavailable model or scorer is reported in its column
            verdicts[index] = f"unavailable: {error}"
    settings = Decoding(do_sample=False, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=ANSWER_TOKENS, seed=0)
    available = [name for name in names if name is not None]
    stream = stream_side_by_side(registry, available, qa_prompt_text(question, prompt_format), settings)
    with contextlib.closing(stream):
        for outputs in stream:
            running = any(output.state in ("waiting", "loading", "generating") for output in outputs)
            yield AnswerState("writing" if running else "done", list(probabilities), list(verdicts), outputs)


# ----------------------------------------------------------------------------- evaluation summary


def find_evaluation(finetune_dir: Path, configured: Path | None = None, finetuned: Path | None = None) -> Path | None:
    """The evaluation JSON to summarise: ``configured``; else the ``evaluation.json`` of the shown fine-tuned
    model ``finetuned`` (in its folder, or in the run folder that holds its ``adapter/``); else the first JSON
    under ``finetune_dir`` (two levels) that holds PubMedQA accuracies."""
    if configured is not None:
        return configured
    if not finetune_dir.is_dir():
        return None
    own = [folder / "evaluation.json" for folder in (finetuned, finetuned.parent)] if finetuned is not None else []
    candidates = own + sorted(finetune_dir.glob("*.json")) + sorted(finetune_dir.glob("*/*.json"))
    root = finetune_dir.resolve()
    for path in candidates:
        if path.is_file() and path.resolve().is_relative_to(root) and path.stat().st_size < 50_000_000 and _accuracy_entries(read_json_object(path)):
            return path
    return None


def _accuracy_entries(report: Any) -> list[tuple[str, dict[str, Any], float | None]]:
    """(label, metrics dict, majority baseline) for each model result in a report."""
    if not isinstance(report, dict):
        return []
    pubmedqa = report.get("pubmedqa")
    if isinstance(pubmedqa, dict):  # training/evaluate_finetune.py: pubmedqa.{base,finetuned}
        baseline = pubmedqa.get("majority_baseline")
        return [(role, pubmedqa[role], baseline) for role in ("base", "finetuned")
                if isinstance(pubmedqa.get(role), dict) and isinstance(pubmedqa[role].get("accuracy"), (int, float))]
    if isinstance(report.get("accuracy"), (int, float)):  # a bare evaluate_pubmedqa() result
        return [("model", report, report.get("majority_baseline"))]
    entries = []
    for key, value in report.items():  # {name: evaluate_pubmedqa() result, ...}
        if isinstance(value, dict) and isinstance(value.get("accuracy"), (int, float)):
            entries.append((str(key), value, value.get("majority_baseline")))
    return entries


def evaluation_summary(path: Path | None, model_labels: dict[str, str] | None = None) -> str:
    """Markdown: accuracy, macro-F1 and the majority baseline of each evaluated model, and the confusion matrices."""
    if path is None:
        return "**Accuracy summary:** not available yet (no PubMedQA evaluation JSON under assets/finetune; see the About tab for the command)."
    report = read_json_object(path)
    entries = _accuracy_entries(report)
    if not entries:
        return f"**Accuracy summary:** `{path}` holds no PubMedQA accuracies."
    model_labels = model_labels or {}
    n = (report.get("pubmedqa") or {}).get("n") if isinstance(report.get("pubmedqa"), dict) else None
    lines = [
        f"**Accuracy on {n or entries[0][1].get('n', '?')} PubMedQA test questions** (yes/no/maybe by likelihood; from `{path.name}`)",
        "",
        "| model | accuracy | macro-F1 | majority baseline |",
        "|---|---:|---:|---:|",
    ]
    for label, metrics, baseline in entries:
        shown = model_labels.get(label, label)
        lines.append(
            f"| {shown} | {metrics['accuracy']:.1%} | {_percent(metrics.get('macro_f1'))} | {_percent(baseline)} |"
        )
    for label, metrics, _ in entries:
        matrix = metrics.get("confusion_matrix")
        if isinstance(matrix, dict):
            lines += ["", f"Confusion matrix, {model_labels.get(label, label)} (rows: gold, columns: predicted)", "",
                      "| gold \\ predicted | " + " | ".join(DECISIONS) + " |", "|---|" + "---:|" * len(DECISIONS)]
            for gold in DECISIONS:
                row = matrix.get(gold, {})
                lines.append(f"| {gold} | " + " | ".join(str(row.get(p, 0)) for p in DECISIONS) + " |")
    command = (report.get("meta") or {}).get("command") if isinstance(report.get("meta"), dict) else None
    if command:
        lines += ["", f"Reproduce: `{command if isinstance(command, str) else ' '.join(map(str, command))}`"]
    return "\n".join(lines)


def _percent(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) else "–"
