"""PubMedQA scoring by option likelihood, its metric modules, and training/evaluate_finetune.py (tiny models, CPU)."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from lmcore.data.pubmedqa import PubMedQARecord, official_test_ids
from lmcore.eval.pubmedqa import (
    METRICS_DIR,
    evaluate_pubmedqa,
    load_metric,
    predict_decisions,
    score_decisions,
    yes_no_auc,
)
from lmcore.finetune import qa_prompt
from lmcore.models.hf import HFCausalLM

REPO = Path(__file__).resolve().parents[1]
QUESTION = "Does drug X reduce mortality after surgery?"
CONTEXTS = ["We studied 120 patients given drug X.", "Mortality fell from 9% to 4%."]


def make_record(i: int, decision: str) -> PubMedQARecord:
    return PubMedQARecord(
        pubid=str(900_000 + i),
        question=f"Does drug {i} reduce mortality?",
        contexts=[f"We studied {10 * i + 20} patients given drug {i}."],
        long_answer=f"Drug {i} reduced mortality.",
        decision=decision,
    )


@pytest.fixture(scope="module")
def tokenizer():
    from lmcore.paths import MODELS_DIR_ENV, models_dir

    root = models_dir()
    if root is None or not (root / "gpt2-tokenizer").is_dir():
        pytest.skip(f"needs the GPT-2 tokenizer mirror: set {MODELS_DIR_ENV} to a folder like ../shared/models")
    return AutoTokenizer.from_pretrained(root / "gpt2-tokenizer")


def tiny_gpt2(n_positions: int = 256) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=n_positions)).eval()


def brute_force_log_likelihood(model, tokenizer, prompt: str, option: str, window: int | None = None) -> float:
    """log p(" option" | prompt): one full forward pass of the prompt + option tokens, read token by token."""
    prompt_length = len(tokenizer(prompt)["input_ids"])
    ids = tokenizer(f"{prompt} {option}")["input_ids"]
    assert ids[:prompt_length] == tokenizer(prompt)["input_ids"]  # GPT-2 BPE: the prompt's tokens come first
    cut = 0 if window is None else max(0, len(ids) - 1 - window)
    ids, prompt_length = ids[cut:], prompt_length - cut
    with torch.no_grad():
        log_probs = model(torch.tensor([ids[:-1]])).logits[0].log_softmax(dim=-1)  # (T - 1, V)
    return sum(float(log_probs[i - 1, ids[i]]) for i in range(prompt_length, len(ids)))


# ----------------------------------------------------------------------------- scoring


@pytest.mark.parametrize("prompt_format", ["question-first", "question-last"])
def test_probabilities_sum_to_one_and_match_a_brute_force_computation(prompt_format, tokenizer):
    model = tiny_gpt2()
    options = ("yes", "no", "maybe", "hippopotamus", "not sure")  # the last two are several GPT-2 tokens
    assert len(tokenizer(" hippopotamus")["input_ids"]) == 3 and len(tokenizer(" not sure")["input_ids"]) == 2
    probabilities = score_decisions(model, tokenizer, QUESTION, CONTEXTS, options=options, prompt_format=prompt_format)
    assert not model.training  # left in eval mode, as it came

    prompt = qa_prompt({"question": QUESTION, "contexts": CONTEXTS}, prompt_format)
    expected = torch.tensor([brute_force_log_likelihood(model, tokenizer, prompt, o) for o in options]).softmax(0)
    assert list(probabilities) == list(options)
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(torch.tensor(list(probabilities.values())), expected, rtol=0, atol=1e-5)


def test_plain_and_wrapped_models_and_batch_sizes_give_the_same_predictions(tokenizer):
    model = tiny_gpt2()
    records = [make_record(i, "yes") for i in range(5)]
    options = ("yes", "no", "maybe so")  # a two-token option: two forward passes per record
    one_by_one = predict_decisions(model, tokenizer, records, batch_size=1, options=options)
    batched = predict_decisions(HFCausalLM(model), tokenizer, records, batch_size=4, options=options)
    for single, batch in zip(one_by_one, batched, strict=True):
        assert single["prediction"] == batch["prediction"] and single["pubid"] == batch["pubid"]
        for option in options:
            assert single["log_likelihoods"][option] == pytest.approx(batch["log_likelihoods"][option], abs=1e-4)
    first = one_by_one[0]
    assert first["decision"] == "yes" and not first["prompt_truncated"]
    assert first["prediction"] == max(options, key=first["probabilities"].get)


def test_a_prompt_longer_than_the_context_window_keeps_its_end(tokenizer):
    model = tiny_gpt2(n_positions=64)
    contexts = [" ".join(["The patients were followed for five years."] * 20)]  # well over 64 tokens
    prediction = predict_decisions(model, tokenizer, [{"question": QUESTION, "contexts": contexts}])[0]
    assert prediction["prompt_truncated"] and prediction["pubid"] is None

    prompt = qa_prompt({"question": QUESTION, "contexts": contexts})
    for option in ("yes", "no", "maybe"):
        expected = brute_force_log_likelihood(model, tokenizer, prompt, option, window=64)
        assert prediction["log_likelihoods"][option] == pytest.approx(expected, abs=1e-4)


def rigged_to_say_no(tokenizer) -> GPT2LMHeadModel:
    """A tiny GPT-2 whose next-token distribution, whatever the input, puts almost all mass on " no"."""
    model = tiny_gpt2()
    (no_id,) = tokenizer(" no")["input_ids"]
    direction = torch.zeros(32)
    direction[0] = 1.0
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()  # the final hidden state becomes ln_f.bias, for every input
        model.transformer.ln_f.bias.copy_(direction)
        model.lm_head.weight[no_id] = 20 * direction  # tied with the input embedding; logit 20 vs ~0.02
    return model


def test_accuracy_macro_f1_and_confusion_on_a_model_that_always_says_no(tokenizer):
    golds = ["yes", "yes", "yes", "yes", "no", "no", "maybe"]
    records = [make_record(i, gold) for i, gold in enumerate(golds)]
    result = evaluate_pubmedqa(rigged_to_say_no(tokenizer), tokenizer, records, batch_size=3)

    assert result["n"] == 7 and result["prediction_counts"] == {"yes": 0, "no": 7, "maybe": 0}
    assert result["accuracy"] == pytest.approx(2 / 7)  # the share of "no" among the gold labels
    # F1(no) = 2 TP / (2 TP + FP + FN) = 4 / (4 + 5 + 0); F1(yes) = F1(maybe) = 0; macro = mean over 3 labels.
    assert result["f1_per_label"] == pytest.approx({"yes": 0.0, "no": 4 / 9, "maybe": 0.0})
    assert result["macro_f1"] == pytest.approx(4 / 27)
    assert result["confusion_matrix"] == {
        "yes": {"yes": 0, "no": 4, "maybe": 0},
        "no": {"yes": 0, "no": 2, "maybe": 0},
        "maybe": {"yes": 0, "no": 1, "maybe": 0},
    }
    # Majority baseline: always "yes" -> 4/7; its macro-F1 = F1(yes) / 3 = (8 / 11) / 3.
    assert result["majority_label"] == "yes" and result["majority_baseline"] == pytest.approx(4 / 7)
    assert result["majority_macro_f1"] == pytest.approx(8 / 33)
    assert all(p["probabilities"]["no"] > 0.99 for p in result["predictions"])


def test_yes_no_auc_ranks_yes_questions_above_no_questions():
    def prediction(gold, margin):  # log p(yes) - log p(no) = margin
        return {"decision": gold, "log_likelihoods": {"yes": -1.0 + margin, "no": -1.0, "maybe": -9.0}}

    separated = [prediction("yes", 2.0), prediction("yes", 1.0), prediction("no", 0.5), prediction("maybe", 5.0)]
    assert yes_no_auc(separated) == 1.0  # "maybe" records are left out
    assert yes_no_auc([prediction("yes", -1.0), prediction("no", 1.0)]) == 0.0
    # A constant score (any bias, e.g. always "yes") carries no information: 0.5.
    assert yes_no_auc([prediction("yes", 3.0), prediction("yes", 3.0), prediction("no", 3.0)]) == 0.5
    # 2 yes x 2 no pairs: (2 > 1), (2 > 3 no), (0 > 1 no), (0 > 3 no) -> 1 of 4.
    assert yes_no_auc([prediction("yes", 2.0), prediction("yes", 0.0), prediction("no", 1.0), prediction("no", 3.0)]) == 0.25
    assert yes_no_auc([prediction("yes", 1.0), prediction("maybe", 0.0)]) is None


def test_records_without_the_needed_fields_are_refused(tokenizer):
    model = tiny_gpt2()
    with pytest.raises(ValueError, match="'contexts'"):
        predict_decisions(model, tokenizer, [{"pubid": "1", "question": "Q?"}])
    with pytest.raises(ValueError, match="labelled records"):
        evaluate_pubmedqa(model, tokenizer, [{"pubid": "1", "question": "Q?", "contexts": ["C."]}])
    with pytest.raises(ValueError, match="batch_size"):
        predict_decisions(model, tokenizer, [make_record(0, "yes")], batch_size=0)
    with pytest.raises(ValueError, match="distinct"):
        score_decisions(model, tokenizer, QUESTION, CONTEXTS, options=("yes", "yes"))


# ----------------------------------------------------------------------------- metric modules


def test_metric_modules_load_from_their_local_path():
    """A local path never reaches the Hub (run with HF_HUB_OFFLINE=1, as CI does, to see it)."""
    import evaluate

    accuracy = evaluate.load(str(METRICS_DIR / "pubmedqa_accuracy"), keep_in_memory=True)
    f1 = evaluate.load(str(METRICS_DIR / "pubmedqa_f1"), keep_in_memory=True)
    predictions, references = ["yes", "no", "no", "maybe"], ["yes", "maybe", "no", "no"]
    assert accuracy.compute(predictions=predictions, references=references) == {"accuracy": 0.5}
    # yes: 2*1/(2+0+0) = 1; no: 2*1/(2+1+1) = 0.5; maybe: 0/(0+1+1) = 0 -> macro 0.5.
    scores = f1.compute(predictions=predictions, references=references)
    assert scores["macro_f1"] == pytest.approx(0.5)
    assert scores["f1_per_label"] == pytest.approx({"maybe": 0.0, "no": 0.5, "yes": 1.0})
    # Like scikit-learn, only labels that occur are averaged, unless labels are given.
    assert f1.compute(predictions=["no"], references=["no"])["macro_f1"] == 1.0
    all_labels = ["yes", "no", "maybe"]
    assert f1.compute(predictions=["no"], references=["no"], labels=all_labels)["macro_f1"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="yes"):
        accuracy.compute(predictions=["Yes"], references=["yes"])


def test_unknown_metric_module_lists_the_available_ones():
    with pytest.raises(ValueError, match="pubmedqa_accuracy"):
        load_metric("pubmedqa_bleu")


# ----------------------------------------------------------------------------- command line


def _cli():
    spec = importlib.util.spec_from_file_location("evaluate_finetune_cli", REPO / "training" / "evaluate_finetune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_base_and_lora_run(tokenizer, tmp_path_factory) -> tuple[Path, Path]:
    """A tiny GPT-2 folder and a 2-step LoRA fine-tuning run of it."""
    from lmcore.finetune import finetune

    base = tmp_path_factory.mktemp("tiny-base")
    tiny_gpt2(n_positions=128).save_pretrained(base)
    tokenizer.save_pretrained(base)
    run = tmp_path_factory.mktemp("lora-run") / "run"
    records = [make_record(i, ("yes", "no", "maybe")[i % 3]) for i in range(6)]
    finetune("lora", str(base), records, run, max_steps=2, batch_size=2, logging_steps=1, max_length=96,
             learning_rate=1e-2, use_cpu=True)  # fmt: skip
    return base, run


def test_cli_compares_base_and_finetuned_end_to_end(tiny_base_and_lora_run, shared_data_dir, tmp_path):
    base, run = tiny_base_and_lora_run
    out = tmp_path / "evaluation.json"
    argv = ["--base", str(base), "--finetuned", str(run), "--out", str(out), "--limit", "6", "--max-chars", "1500"]
    assert _cli().main([*argv, "--max-new-tokens", "4", "--context-length", "64", "--stride", "32"]) == 0

    report = json.loads(out.read_text())
    assert set(report) == {"meta", "models", "perplexity", "pubmedqa", "generations", "comparison"}
    assert {"command", "git_commit", "date", "versions", "hardware", "settings"} <= set(report["meta"])
    assert report["meta"]["settings"] | {"limit": 6, "max_chars": 1500, "context_length": 64, "stride": 32} == (
        report["meta"]["settings"]
    )
    finetuned = report["models"]["finetuned"]
    assert finetuned["model_path"] == str(run / "merged") and finetuned["run"]["method"] == "lora"
    parameters = finetuned["run"]["parameters"]
    assert 0 < parameters["trainable"] < parameters["total"]  # LoRA trains a small share
    assert finetuned["run"]["result"]["train_seconds"] > 0 and finetuned["run"]["result"]["peak_rss_bytes"] > 0
    assert report["models"]["base"]["run"] is None

    for part, corpus in (("in_domain", "pubmedqa"), ("general", "wikitext-2-raw")):
        perplexity = report["perplexity"][part]
        assert perplexity["corpus"] == corpus and perplexity["chars"] <= 1500 < perplexity["total_chars"]
        change = 100 * (perplexity["finetuned"]["perplexity"] / perplexity["base"]["perplexity"] - 1)
        assert report["comparison"][f"{part}_ppl_change_percent"] == pytest.approx(change)

    pubmedqa = report["pubmedqa"]
    test_ids = official_test_ids()
    pubids = [prediction["pubid"] for prediction in pubmedqa["base"]["predictions"]]
    assert pubids == sorted(pubids, key=test_ids.index)  # a sample of test questions, in the official order
    assert [p["pubid"] for p in pubmedqa["finetuned"]["predictions"]] == pubids
    golds = Counter(prediction["decision"] for prediction in pubmedqa["base"]["predictions"])
    majority_label, majority_count = golds.most_common(1)[0]
    assert pubmedqa["n"] == 6 and pubmedqa["majority_baseline"] == pytest.approx(majority_count / 6)
    assert pubmedqa["majority_label"] == majority_label
    for role in ("base", "finetuned"):
        confusion = pubmedqa[role]["confusion_matrix"]
        assert {gold: sum(row.values()) for gold, row in confusion.items() if sum(row.values())} == dict(golds)
    assert report["comparison"]["accuracy_change_points"] == pytest.approx(
        100 * (pubmedqa["finetuned"]["accuracy"] - pubmedqa["base"]["accuracy"])
    )
    covid = report["generations"][0]
    assert covid["prompt"].startswith("Question: What causes COVID-19?") and {"base", "finetuned"} <= set(covid)


def test_cli_reuses_the_base_results_of_an_earlier_report_with_the_same_settings(
    tiny_base_and_lora_run, shared_data_dir, tmp_path, capsys
):
    base, run = tiny_base_and_lora_run
    settings = ["--limit", "4", "--max-chars", "800", "--max-new-tokens", "3", "--context-length", "64", "--stride", "32"]
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    assert _cli().main(["--base", str(base), "--finetuned", str(run), "--out", str(first), *settings]) == 0
    argv = ["--base", str(base), "--finetuned", str(base), "--out", str(second), "--reuse-base", str(first)]
    assert _cli().main([*argv, *settings]) == 0

    earlier, report = json.loads(first.read_text()), json.loads(second.read_text())
    for part in ("in_domain", "general"):
        assert report["perplexity"][part]["base"] == earlier["perplexity"][part]["base"]
        # The base model evaluated again as the "fine-tuned" one reproduces the reused results.
        assert report["perplexity"][part]["finetuned"]["perplexity"] == pytest.approx(
            earlier["perplexity"][part]["base"]["perplexity"], rel=1e-5
        )
    assert report["pubmedqa"]["base"] == earlier["pubmedqa"]["base"]
    assert [p["prediction"] for p in report["pubmedqa"]["finetuned"]["predictions"]] == [
        p["prediction"] for p in earlier["pubmedqa"]["base"]["predictions"]
    ]
    assert [row["base"] for row in report["generations"]] == [row["base"] for row in earlier["generations"]]
    assert report["models"]["base"]["reused_from"] == str(first)

    assert earlier["meta"]["settings"]["qa_prompt"] == "question-first"  # the LoRA run's, the default

    changed = [arg if arg != "4" else "5" for arg in settings]  # --limit 5
    with pytest.raises(SystemExit) as exit_info:
        _cli().main([*argv[:-2], "--reuse-base", str(first), *changed])
    assert exit_info.value.code == 2 and "settings differ (limit)" in capsys.readouterr().err
    # Base results scored with another prompt format are not reused either.
    with pytest.raises(SystemExit) as exit_info:
        _cli().main([*argv, *settings, "--qa-prompt", "question-last"])
    assert exit_info.value.code == 2 and "settings differ (qa_prompt)" in capsys.readouterr().err
    # A report from before --qa-prompt existed (no qa_prompt setting) was scored with the default format.
    legacy = json.loads(first.read_text())
    del legacy["meta"]["settings"]["qa_prompt"]
    first.write_text(json.dumps(legacy))
    assert _cli().main([*argv[:-2], "--reuse-base", str(first), "--out", str(tmp_path / "third.json"), *settings]) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--base", "no/such-model-anywhere", "--finetuned", "x"], "could not load pretrained model"),
        (["--base", "gpt2", "--finetuned", "x", "--limit", "0"], "--limit must be a positive integer"),
        (["--base", "gpt2", "--finetuned", "x", "--stride", "2048"], "must not exceed --context-length"),
    ],
)
def test_cli_bad_input_exits_2_with_a_message(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _cli().main([*argv, "--out", str(tmp_path / "out.json")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


def test_limit_draws_a_fixed_sample_of_the_test_questions_not_the_first_ones():
    cli = _cli()
    records = list(range(500))
    sample = cli.sample_records(records, 20)
    assert sample == cli.sample_records(records, 20) and sample == sorted(sample) and len(set(sample)) == 20
    assert sample != records[:20] and max(sample) > 250
    assert cli.sample_records(records, None) == records == cli.sample_records(records, 600)


def test_cli_run_folder_without_its_model_exits_2(tiny_base_and_lora_run, tmp_path, capsys):
    base, run = tiny_base_and_lora_run
    broken = tmp_path / "broken-run"
    broken.mkdir()
    config = json.loads((run / "config.json").read_text())
    del config["result"]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit) as exit_info:
        _cli().main(["--base", str(base), "--finetuned", str(broken), "--out", str(tmp_path / "out.json")])
    assert exit_info.value.code == 2
    assert "did not finish" in capsys.readouterr().err


def test_publishing_a_lora_run_ships_an_fp16_adapter_that_reproduces_it(
    tiny_base_and_lora_run, shared_data_dir, tmp_path
):
    """publish_finetune.py: the fp16 adapter on the base gives the run's merged model's logits (to fp16
    precision), names the run's base, and the summary row repeats the evaluation's figures."""
    import shutil

    from peft import PeftModel

    base, run = tiny_base_and_lora_run
    run_copy = tmp_path / "lora-run"
    shutil.copytree(run, run_copy)
    settings = ["--limit", "3", "--max-chars", "600", "--max-new-tokens", "2", "--context-length", "64", "--stride", "32"]
    assert _cli().main(["--base", str(base), "--finetuned", str(run_copy),
                        "--out", str(run_copy / "evaluation.json"), *settings]) == 0  # fmt: skip
    readme = tmp_path / "README.md"
    readme.write_text("# Results\n<!-- results:finetune -->\nSTALE TABLE\n<!-- /results:finetune -->\nend\n")
    spec = importlib.util.spec_from_file_location("publish_finetune_cli", REPO / "training" / "publish_finetune.py")
    publish = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(publish)
    out = tmp_path / "assets"
    assert publish.main(["--runs", str(run_copy), "--out", str(out), "--readme", str(readme)]) == 0

    adapter = out / "lora-run" / "adapter"
    assert sorted(p.name for p in adapter.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base)
    from safetensors.torch import load_file

    assert {tensor.dtype for tensor in load_file(adapter / "adapter_model.safetensors").values()} == {torch.float16}
    ids = torch.tensor([[464, 3290, 318, 257, 1332, 13]])
    with torch.no_grad():
        merged = GPT2LMHeadModel.from_pretrained(run / "merged").eval()(ids).logits
        published = PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(base), adapter).eval()(ids).logits
    torch.testing.assert_close(published, merged, atol=2e-3, rtol=0)

    # The published run (adapter, no merged/) evaluates as the run did: its adapter merged into the base.
    republished = tmp_path / "republished.json"
    assert _cli().main(["--base", str(base), "--finetuned", str(out / "lora-run"), "--out", str(republished),
                        *settings]) == 0  # fmt: skip
    again, first = json.loads(republished.read_text()), json.loads((run_copy / "evaluation.json").read_text())
    assert again["models"]["finetuned"]["model_path"] == str(adapter)
    assert again["models"]["finetuned"]["run"] == first["models"]["finetuned"]["run"]
    for part in ("in_domain", "general"):
        assert again["perplexity"][part]["finetuned"]["perplexity"] == pytest.approx(
            first["perplexity"][part]["finetuned"]["perplexity"], rel=1e-3
        )

    evaluation = json.loads((run_copy / "evaluation.json").read_text())
    (row,) = json.loads((out / "summary.json").read_text())
    assert row["method"] == "lora" and row["steps"] == 2 and row["pubmedqa_n"] == 3
    assert row["accuracy_finetuned"] == evaluation["pubmedqa"]["finetuned"]["accuracy"]
    assert row["yes_no_auc_finetuned"] == evaluation["pubmedqa"]["finetuned"]["yes_no_auc"]
    assert row["qa_prompt"] == "question-first"
    assert row["in_domain_ppl_change_percent"] == evaluation["comparison"]["in_domain_ppl_change_percent"]
    assert 0 < row["trainable_parameters"] < row["total_parameters"]

    # --no-adapter: the same records and row, no adapter; a name that is not among --runs is refused.
    assert publish.main(["--runs", str(run_copy), "--out", str(tmp_path / "records"), "--no-adapter", "lora-run"]) == 0
    assert sorted(p.name for p in (tmp_path / "records" / "lora-run").iterdir()) == [
        "config.json", "evaluation.json", "metrics.jsonl"]
    (records_row,) = json.loads((tmp_path / "records" / "summary.json").read_text())
    assert row["adapter_exported"] and not records_row["adapter_exported"]
    assert records_row | {"adapter_exported": True} == row
    with pytest.raises(SystemExit) as exit_info:
        publish.main(["--runs", str(run_copy), "--out", str(tmp_path / "records"), "--no-adapter", "other"])
    assert exit_info.value.code == 2
    text = readme.read_text()
    assert "STALE TABLE" not in text and "| lora-run | lora (qa) | 2 × 2 |" in text and text.endswith("end\n")
