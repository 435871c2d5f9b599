"""PubMedQA tab: questions and gold labels, yes/no/maybe probabilities, the accuracy summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from app_fixtures import tiny_hf_models

from lmcore.app.pubmedqa import (
    answer_side_by_side,
    Question,
    check_question,
    decision_probabilities,
    evaluation_summary,
    find_evaluation,
    finetuned_prompt_format,
    load_test_questions,
    prompt_outline,
    qa_prompt_text,
    question_choices,
    verdict,
)
from lmcore.app.registry import ModelRegistry, pretrained_spec

CHOSEN = Question("Does X help?", ["Part one.", "Part two."], pubid="123", gold="no", long_answer="It does not.")


def test_the_gold_label_stays_only_while_the_test_question_is_unchanged() -> None:
    question, notes = check_question("Does X help?", "Part one.\n\nPart two.", CHOSEN)
    assert (question.gold, question.pubid, question.contexts, notes) == ("no", "123", ["Part one.", "Part two."], [])
    edited, _ = check_question("Does X help a lot?", "Part one.\n\nPart two.", CHOSEN)
    assert edited.gold is None and edited.pubid is None
    assert qa_prompt_text(edited) == "Question: Does X help a lot?\nContext: Part one. Part two.\nAnswer:"


def test_empty_or_huge_questions_get_messages() -> None:
    with pytest.raises(ValueError, match="The question is empty"):
        check_question(" ", "context", None)
    with pytest.raises(ValueError, match="The context is empty"):
        check_question("Why?", "", None)
    question, notes = check_question("Why?", "word " * 2000, None)
    assert len(question.contexts[0]) == 6000 - 1 and "cut to its first 6,000 characters" in notes[0]


def test_the_test_questions_come_with_their_gold_labels(shared_data_dir: Path) -> None:
    questions, message = load_test_questions()
    assert len(questions) == 500 and message.startswith("500 test questions")
    assert sum(q.gold == "yes" for q in questions) == 276  # the majority class of the official test split
    label, pubid = question_choices(questions)[0]
    assert pubid == questions[0].pubid and label.startswith(f"{pubid} · ")


def test_without_mirror_or_hub_the_questions_are_unavailable_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LMCORE_DATA_DIR", raising=False)
    load_test_questions.cache_clear()
    try:
        questions, message = load_test_questions(online=False)
    finally:
        load_test_questions.cache_clear()
    assert questions == [] and "need the Hub or a local mirror (LMCORE_DATA_DIR)" in message


def test_probabilities_are_those_of_the_evaluation_scorer(gpt2_tokenizer_dir: Path) -> None:
    from lmcore.eval.pubmedqa import score_decisions

    base_dir, _ = tiny_hf_models(str(gpt2_tokenizer_dir))
    registry = ModelRegistry([pretrained_spec(str(base_dir))])
    probabilities = decision_probabilities(registry, str(base_dir), CHOSEN)
    loaded = registry.get(str(base_dir))
    assert probabilities == pytest.approx(score_decisions(loaded.model, loaded.tokenizer, CHOSEN.question, CHOSEN.contexts))
    assert sum(probabilities.values()) == pytest.approx(1.0) and set(probabilities) == {"yes", "no", "maybe"}


def test_verdict_names_the_pick_and_checks_it_against_the_gold_label() -> None:
    assert verdict({"yes": 0.2, "no": 0.7, "maybe": 0.1}, "no") == "Answers **no** (70%) — ✓ correct"
    assert verdict({"yes": 0.6, "no": 0.3, "maybe": 0.1}, "maybe") == "Answers **yes** (60%) — ✗ wrong (gold: maybe)"
    assert verdict({"yes": 0.6, "no": 0.3, "maybe": 0.1}, None) == "Answers **yes** (60%)"
    assert verdict(None, "yes") == ""


def evaluation_report() -> dict:
    """The shape training/evaluate_finetune.py writes (numbers made up for the test)."""
    matrix = {"yes": {"yes": 250, "no": 20, "maybe": 6}, "no": {"yes": 60, "no": 100, "maybe": 2},
              "maybe": {"yes": 40, "no": 15, "maybe": 7}}
    return {
        "meta": {"command": "training/evaluate_finetune.py --base gpt2 --finetuned runs/gpt2-lora --out e.json"},
        "pubmedqa": {"n": 500, "majority_baseline": 0.552,
                     "base": {"accuracy": 0.45, "macro_f1": 0.30, "confusion_matrix": matrix},
                     "finetuned": {"accuracy": 0.714, "macro_f1": 0.52, "confusion_matrix": matrix}},
    }


def test_accuracy_summary_from_the_evaluation_report(tmp_path: Path) -> None:
    (tmp_path / "other.json").write_text(json.dumps({"not": "an evaluation"}))
    (tmp_path / "gpt2-lora").mkdir()
    (tmp_path / "gpt2-lora" / "evaluation.json").write_text(json.dumps(evaluation_report()))
    path = find_evaluation(tmp_path)
    assert path == tmp_path / "gpt2-lora" / "evaluation.json"
    # Several evaluated runs: the one of the fine-tuned model the tab shows wins over the first by name.
    (tmp_path / "gpt2-lora-qa" / "adapter").mkdir(parents=True)
    (tmp_path / "gpt2-lora-qa" / "evaluation.json").write_text(json.dumps(evaluation_report()))
    shown = tmp_path / "gpt2-lora-qa" / "adapter"
    assert find_evaluation(tmp_path, finetuned=shown) == tmp_path / "gpt2-lora-qa" / "evaluation.json"
    summary = evaluation_summary(path, {"base": "base (gpt2)", "finetuned": "fine-tuned (gpt2 + LoRA)"})
    assert "**Accuracy on 500 PubMedQA test questions**" in summary
    assert "| base (gpt2) | 45.0% | 30.0% | 55.2% |" in summary
    assert "| fine-tuned (gpt2 + LoRA) | 71.4% | 52.0% | 55.2% |" in summary
    assert "| no | 60 | 100 | 2 |" in summary
    assert "Reproduce: `training/evaluate_finetune.py --base gpt2" in summary


def test_a_bare_evaluation_result_and_absent_files(tmp_path: Path) -> None:
    bare = tmp_path / "eval.json"
    bare.write_text(json.dumps({"n": 10, "accuracy": 0.6, "macro_f1": 0.4, "majority_baseline": 0.5}))
    assert "| model | 60.0% | 40.0% | 50.0% |" in evaluation_summary(bare)
    assert evaluation_summary(None).startswith("**Accuracy summary:** not available yet")
    assert find_evaluation(tmp_path / "absent") is None
    assert find_evaluation(tmp_path / "absent", configured=bare) == bare


def test_base_and_fine_tuned_answer_side_by_side(gpt2_tokenizer_dir: Path) -> None:
    from lmcore.app.registry import finetuned_spec

    base_dir, adapter_dir = tiny_hf_models(str(gpt2_tokenizer_dir))
    base = str(base_dir)
    registry = ModelRegistry([pretrained_spec(base), finetuned_spec(adapter_dir, base, name="tuned")])
    steps = list(answer_side_by_side(registry, [base, "tuned"], CHOSEN))
    assert [step.stage for step in steps[:2]] == [f"scoring {base}", "scoring tuned"]
    last = steps[-1]
    assert last.stage == "done" and [output.state for output in last.outputs] == ["done", "done"]
    for index, name in enumerate([base, "tuned"]):
        assert last.probabilities[index] == pytest.approx(decision_probabilities(registry, name, CHOSEN))
        assert last.verdicts[index] == verdict(last.probabilities[index], "no")
    assert last.probabilities[0] != pytest.approx(last.probabilities[1])  # the adapter changes the model
    without = list(answer_side_by_side(registry, [base, None], CHOSEN, ["", "no adapter in assets"]))[-1]
    assert without.verdicts[1] == "unavailable: no adapter in assets" and len(without.outputs) == 1
    # A model fine-tuned on question-last prompts is scored and prompted with them.
    last_first = list(answer_side_by_side(registry, [base, "tuned"], CHOSEN, prompt_format="question-last"))[-1]
    assert last_first.probabilities[1] == pytest.approx(decision_probabilities(registry, "tuned", CHOSEN, "question-last"))
    assert last_first.probabilities[1] != pytest.approx(last.probabilities[1])


def test_the_prompt_format_comes_from_the_fine_tuned_run_record(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    assert finetuned_prompt_format(run / "adapter") is None and finetuned_prompt_format(None) is None
    (run / "config.json").write_text(json.dumps({"method": "lora", "settings": {"lr": 1e-4}}))
    assert finetuned_prompt_format(run / "adapter") is None  # a run from before the setting existed: the default
    (run / "config.json").write_text(json.dumps({"method": "lora", "settings": {"qa_prompt": "question-last"}}))
    assert finetuned_prompt_format(run / "adapter") == "question-last"
    assert prompt_outline(None) == "Question: … Context: … Answer:"
    assert prompt_outline("question-last") == "Context: … Question: … Answer:"
    assert qa_prompt_text(CHOSEN, "question-last") == "Context: Part one. Part two.\nQuestion: Does X help?\nAnswer:"
