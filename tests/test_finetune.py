"""PubMedQA fine-tuning data builders and the SFT / LoRA / DPO recipes, on a tiny random GPT-2 (CPU)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from lmcore.data.pubmedqa import PubMedQARecord, official_test_ids
from lmcore.finetune import (
    build_lm_dataset,
    build_preference_dataset,
    build_qa_dataset,
    finetune,
    linear_module_names,
    qa_prompt,
    wrong_decision,
)
from lmcore.io import read_jsonl
from lmcore.paths import MODELS_DIR_ENV, models_dir
from lmcore.pretrained import load_pretrained

REPO = Path(__file__).resolve().parents[1]
TEST_PUBID = official_test_ids()[0]


def make_record(i: int, pubid: str | None = None) -> PubMedQARecord:
    return PubMedQARecord(
        pubid=pubid or str(900_000 + i),
        question=f"Does drug {i} reduce mortality after surgery?",
        contexts=[f"We studied {10 * i + 20} patients given drug {i}.", "Mortality fell from 9% to 4%."],
        long_answer=f"Drug {i} reduced mortality.",
        decision=("yes", "no", "maybe")[i % 3],
    )


TRAIN = [make_record(i) for i in range(8)]
DEV = [make_record(i) for i in range(8, 10)]
FAST = {"max_steps": 2, "batch_size": 2, "logging_steps": 1, "max_length": 96, "use_cpu": True, "report_to": "none"}


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer, 32-wide GPT-2 with the real GPT-2 tokenizer, saved to a folder."""
    root = models_dir()
    if root is None or not (root / "gpt2-tokenizer").is_dir():
        pytest.skip(f"needs the GPT-2 tokenizer mirror: set {MODELS_DIR_ENV} to a folder like ../shared/models")
    tokenizer_dir = root / "gpt2-tokenizer"
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=128)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
    return folder


@pytest.fixture
def gpt2_tokenizer(gpt2_tokenizer_dir):
    return AutoTokenizer.from_pretrained(gpt2_tokenizer_dir)


# ----------------------------------------------------------------------------- data builders


def test_qa_rows_are_prompt_and_decision_first_completion():
    row = build_qa_dataset([TRAIN[1]])[0]
    assert row["prompt"] == (
        "Question: Does drug 1 reduce mortality after surgery?\n"
        "Context: We studied 30 patients given drug 1. Mortality fell from 9% to 4%.\nAnswer:"
    )
    assert row["completion"] == " no. Drug 1 reduced mortality."
    assert row["pubid"] == "900001"
    question_last = build_qa_dataset([TRAIN[1]], prompt_format="question-last")[0]
    assert question_last["prompt"] == (
        "Context: We studied 30 patients given drug 1. Mortality fell from 9% to 4%.\n"
        "Question: Does drug 1 reduce mortality after surgery?\nAnswer:"
    )
    assert question_last["completion"] == row["completion"]
    with pytest.raises(ValueError, match=r"unknown QA prompt format 'context-first'; allowed: \['question-first'"):
        qa_prompt(TRAIN[1], "context-first")


def test_preference_pairs_differ_only_in_a_wrong_decision_fixed_by_seed_and_pubid():
    rows = build_preference_dataset(TRAIN, seed=3)
    for record, row in zip(TRAIN, rows, strict=True):
        assert row["prompt"] == qa_prompt(record)
        assert row["chosen"] == f" {record.decision}. {record.long_answer}"
        rejected_decision = row["rejected"].split(".")[0].strip()
        assert rejected_decision in {"yes", "no", "maybe"} - {record.decision}
        assert row["rejected"] == f" {rejected_decision}. {record.long_answer}"
    # Independent of the order of the records.
    reversed_rows = {row["pubid"]: row["rejected"] for row in build_preference_dataset(TRAIN[::-1], seed=3)}
    assert all(reversed_rows[row["pubid"]] == row["rejected"] for row in rows)
    # Over many pubids both wrong labels occur, so the choice is not a fixed rule.
    assert {wrong_decision("yes", str(pubid), seed=0) for pubid in range(50)} == {"no", "maybe"}


def test_lm_chunks_have_fixed_length_and_cover_the_token_stream(gpt2_tokenizer):
    rows = build_lm_dataset(TRAIN, gpt2_tokenizer, chunk_length=16)
    documents = "".join(
        " ".join([*record.contexts, record.long_answer]) + gpt2_tokenizer.eos_token for record in TRAIN
    )
    stream = gpt2_tokenizer(documents)["input_ids"]
    assert len(rows) == len(stream) // 16
    assert all(len(row["input_ids"]) == 16 for row in rows)
    assert [token for row in rows for token in row["input_ids"]] == stream[: 16 * len(rows)]


def test_lm_builder_refuses_too_little_text(gpt2_tokenizer):
    with pytest.raises(ValueError, match="fewer than one chunk"):
        build_lm_dataset(TRAIN[:1], gpt2_tokenizer, chunk_length=4096)


@pytest.mark.parametrize("builder", ["lm", "qa", "dpo"])
def test_official_test_questions_are_refused(builder, gpt2_tokenizer):
    leaked = [*TRAIN, make_record(99, pubid=TEST_PUBID)]
    build = {
        "lm": lambda records, **options: build_lm_dataset(records, gpt2_tokenizer, chunk_length=16, **options),
        "qa": build_qa_dataset,
        "dpo": build_preference_dataset,
    }[builder]
    with pytest.raises(ValueError, match=TEST_PUBID):
        build(leaked)
    with pytest.raises(ValueError, match="900003"):  # extra ids can be excluded too
        build(TRAIN, exclude_pubids={"900003"})


def test_real_train_and_dev_splits_build_without_test_questions(shared_data_dir):
    from lmcore.data.pubmedqa import load_pubmedqa

    rows = build_preference_dataset(load_pubmedqa("train") + load_pubmedqa("dev"))
    assert len(rows) == 500
    assert not set(rows["pubid"]) & set(official_test_ids())
    with pytest.raises(ValueError, match="test questions"):
        build_qa_dataset(load_pubmedqa("test")[:1])


@pytest.mark.parametrize("field", ["question", "contexts", "long_answer", "decision"])
def test_a_missing_field_is_named(field):
    record = {"pubid": "1", "question": "Q?", "contexts": ["C."], "long_answer": "A.", "decision": "yes"}
    del record[field]
    with pytest.raises(ValueError, match=f"'{field}'"):
        build_preference_dataset([record])


def test_an_unknown_decision_is_refused():
    record = {"pubid": "1", "question": "Q?", "contexts": ["C."], "long_answer": "A.", "decision": "perhaps"}
    with pytest.raises(ValueError, match="yes"):
        build_qa_dataset([record])


# ----------------------------------------------------------------------------- recipes


def _logits(model, input_ids):
    with torch.no_grad():
        return model(input_ids).logits


def test_full_sft_language_modelling_trains_saves_and_logs(tiny_gpt2, tmp_path):
    result = finetune("sft", str(tiny_gpt2), TRAIN, tmp_path / "run", mode="lm", chunk_length=32, **FAST)

    assert result.model_dir == tmp_path / "run" / "model" and result.adapter_dir is None
    trained, tokenizer = load_pretrained(result.model_dir)
    base, _ = load_pretrained(tiny_gpt2)
    assert not torch.equal(trained.transformer.h[0].attn.c_attn.weight, base.transformer.h[0].attn.c_attn.weight)

    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [row["step"] for row in rows] == [1, 2] and {row["split"] for row in rows} == {"train"}
    for row in rows:
        assert row["ppl"] == pytest.approx(math.exp(row["loss"]))
        assert {"epoch", "lr", "time"} <= set(row)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["method"] == "sft" and config["mode"] == "lm"
    assert config["settings"]["learning_rate"] == 5e-5 and config["settings"]["lora"] is False
    assert config["result"]["global_step"] == 2
    assert {"torch", "transformers", "trl", "peft"} <= set(config["versions"]) and "command" in config
    assert config["hardware"]["device"] == "cpu" and config["hardware"]["cpu_count"] >= 1
    assert config["git_commit"] is None or len(config["git_commit"].removesuffix("-dirty")) == 40


def test_lora_qa_evaluates_and_merged_model_matches_the_adapter(tiny_gpt2, tmp_path):
    from peft import PeftModel

    result = finetune(
        "lora", str(tiny_gpt2), TRAIN, tmp_path / "run", eval_records=DEV, eval_steps=1, learning_rate=1e-2, **FAST
    )

    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [row["step"] for row in rows if row["split"] == "valid"] == [1, 2]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["lora"]["r"] == 16 and config["settings"]["lora_targets"] == ["c_attn"]
    assert config["result"]["best_eval_loss"] == min(row["loss"] for row in rows if row["split"] == "valid")

    base, tokenizer = load_pretrained(tiny_gpt2)
    input_ids = torch.tensor([tokenizer(qa_prompt(DEV[0]))["input_ids"]])
    base_logits = _logits(base, input_ids)
    adapted = PeftModel.from_pretrained(base, result.adapter_dir).eval()
    merged, _ = load_pretrained(result.model_dir)
    adapter_logits = _logits(adapted, input_ids)
    assert (adapter_logits - base_logits).abs().max() > 1e-4  # the adapter learned something
    torch.testing.assert_close(_logits(merged, input_ids), adapter_logits, rtol=0, atol=1e-5)
    # The adapter folder alone loads as its base (named in adapter_config.json) with the adapter merged in.
    from_adapter, adapter_tokenizer = load_pretrained(result.adapter_dir)
    torch.testing.assert_close(_logits(from_adapter, input_ids), adapter_logits, rtol=0, atol=1e-5)
    assert adapter_tokenizer.pad_token is not None and not from_adapter.training


def test_dpo_trains_all_weights_against_a_frozen_reference(tiny_gpt2, tmp_path):
    result = finetune("dpo", str(tiny_gpt2), TRAIN, tmp_path / "run", learning_rate=1e-3, **FAST)

    trained, _ = load_pretrained(result.model_dir)
    base, _ = load_pretrained(tiny_gpt2)
    assert not torch.equal(trained.transformer.h[1].mlp.c_fc.weight, base.transformer.h[1].mlp.c_fc.weight)
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference at the first step
    assert all(row["ppl"] is None and "reward_accuracy" in row for row in rows)


def test_unknown_lora_target_lists_the_linear_modules(tiny_gpt2, tmp_path):
    with pytest.raises(ValueError, match=r"q_proj.*c_attn") as error:
        finetune("lora", str(tiny_gpt2), TRAIN, tmp_path / "run", lora_targets=["q_proj"], **FAST)
    model, _ = load_pretrained(tiny_gpt2)
    assert all(name in str(error.value) for name in linear_module_names(model))


def test_records_without_needed_fields_are_refused_before_training(tiny_gpt2, tmp_path):
    records = [{"pubid": str(i), "question": "Q?", "contexts": ["C."], "decision": "yes"} for i in range(4)]
    with pytest.raises(ValueError, match="'long_answer'"):
        finetune("sft", str(tiny_gpt2), records, tmp_path / "run", **FAST)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"max_length": 512}, "exceeds the 128 positions"), ({"max_length": 8}, "no room for the answer")],
)
def test_sequence_lengths_are_checked_against_model_and_prompts(options, message, tiny_gpt2, tmp_path):
    with pytest.raises(ValueError, match=message):
        finetune("lora", str(tiny_gpt2), TRAIN, tmp_path / "run", **{**FAST, **options})


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("ppo", {}, "method must be one of"),
        ("dpo", {"mode": "lm"}, "mode='qa'"),
        ("sft", {"lora": True}, "method 'lora'"),
        ("sft", {"learning_rte": 1e-4}, "unknown fine-tuning setting"),
        ("sft", {"qa_prompt": "question-middle"}, "qa_prompt must be one of"),
    ],
)
def test_bad_options_are_refused(method, options, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        finetune(method, "unused", TRAIN, tmp_path / "run", **options)


# ----------------------------------------------------------------------------- command line


def _cli():
    spec = importlib.util.spec_from_file_location("finetune_cli", REPO / "training" / "finetune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "argv",
    [
        ["--method", "rlhf", "--out", "x"],
        ["--method", "sft"],  # no --out
        ["--method", "sft", "--lora", "--out", "x"],
        ["--method", "lora", "--mode", "chat", "--out", "x"],
    ],
)
def test_cli_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _cli().main(argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_cli_bad_lora_target_exits_2_with_the_reason(tiny_gpt2, tmp_path, shared_data_dir, capsys):
    argv = ["--method", "lora", "--base", str(tiny_gpt2), "--out", str(tmp_path / "run"), "--lora-targets", "q_proj"]
    argv += ["--max-length", "128"]
    with pytest.raises(SystemExit) as exit_info:
        _cli().main([*argv, "--max-train-records", "4", "--max-eval-records", "2", "--cpu"])
    assert exit_info.value.code == 2
    assert "c_attn" in capsys.readouterr().err
