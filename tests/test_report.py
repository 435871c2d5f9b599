"""The markdown report: built from the JSON files alone, every row in its table, no number that is not
in (or derived into summary.json from) those files, the answers computed from the numbers."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from lmcore.eval.crossdomain import COMPARABILITY, ROW_KEYS, load_results, write_results
from lmcore.reporting import FORMATS, format_value, summarize, write_report

REPO = Path(__file__).resolve().parents[1]
CORPORA = ["ptb", "wikitext-2", "tinyshakespeare"]


def make_row(run: str, model_type: str, tokenizer: str, corpus: str, perplexity: float, bpb: float,
             in_domain_ppl: float, oov: float | None) -> dict[str, Any]:
    word = tokenizer == "word"
    return dict(zip(ROW_KEYS, [
        run, model_type, tokenizer, 2_653_200 if word else 7_435_776, corpus, "test", perplexity, bpb,
        82_431 if word else 117_310, oov, oov * 1.25 if word else None, perplexity * 1.37 if word else None,
        perplexity / in_domain_ppl - 1,
    ]))


@pytest.fixture
def results() -> dict[str, Any]:
    """Two PTB runs with different tokenizers on three corpora, and a run trained on a text file."""
    rows = [
        make_row("lstm-word", "lstm", "word", "ptb", 118.25, 1.431, 118.25, 0.0),
        make_row("lstm-word", "lstm", "word", "wikitext-2", 365.5, 2.112, 118.25, 0.0523),
        make_row("lstm-word", "lstm", "word", "tinyshakespeare", 1489.75, 3.237, 118.25, 0.1718),
        make_row("gpt-bpe", "gpt", "gpt2", "ptb", 61.5, 1.518, 61.5, None),
        make_row("gpt-bpe", "gpt", "gpt2", "wikitext-2", 244.0, 1.906, 61.5, None),
        make_row("gpt-bpe", "gpt", "gpt2", "tinyshakespeare", 402.25, 2.655, 61.5, None),
        make_row("char-notes", "rnn", "char", "ptb", 6.75, 2.871, 3.25, 0.0312),
        make_row("char-notes", "rnn", "char", "notes.txt", 3.25, 1.766, 3.25, 0.0),
    ]
    curve = {"epochs": [{"epoch": 1.0, "train_ppl": 310.5, "valid_ppl": 190.25},
                        {"epoch": 2.0, "train_ppl": 150.75, "valid_ppl": 140.5}], "test_ppl": 133.75}
    meta = {
        "command": ["training/evaluate_lm.py", "--runs", "runs/lstm-word", "runs/gpt-bpe", "runs/char-notes"],
        "git_commit": "abcdef", "versions": {"python": "3.11.7", "torch": "2.13.0"},
        "hardware": {"platform": "Linux", "gpu": None}, "date": "2026-11-22T11:00:00+0000", "split": "test",
        "corpora": CORPORA, "warnings": [], "comparable_across_tokenizers": COMPARABILITY,
        "runs": {
            "lstm-word": {"in_domain_corpus": "ptb", "learning_curve": curve},
            "gpt-bpe": {"in_domain_corpus": "ptb", "learning_curve": {"epochs": [], "test_ppl": None}},
            "char-notes": {"in_domain_corpus": "notes.txt", "learning_curve": {"epochs": [], "test_ppl": None}},
        },
    }
    return {"meta": meta, "rows": rows}


@pytest.fixture
def samples() -> dict[str, Any]:
    strategies = {"greedy": {"do_sample": False}, "top_p": {"do_sample": True, "top_p": 0.9}}
    records = []
    for index, (run, strategy) in enumerate([(r, s) for r in ("lstm-word", "gpt-bpe") for s in strategies]):
        records.append({
            "run": run, "model_type": "lstm", "tokenizer": "word", "prompt": "the meaning of life is",
            "strategy": strategy, "seed": 0, "text": " the company said\nit was n't", "num_tokens": 60,
            "num_words": 55 + index, "distinct_1": 0.25 + index / 16, "distinct_2": 0.375 + index / 32,
            "repeated_ngram_rate": 0.625 - index / 8, "ref_log_prob_per_token": -4.125 - index,
            "ref_bits_per_byte": 1.75 + index / 4,
        })
    meta = {"command": ["training/sample.py"], "git_commit": "abcdef", "versions": {}, "hardware": {}, "date": "d",
            "prompts": ["the meaning of life is"], "strategies": strategies, "seed": 0, "max_new_tokens": 60,
            "repeat_n": 3, "reference": "HuggingFaceTB/SmolLM2-135M-Instruct"}
    return {"meta": meta, "samples": records}


def test_summary_numbers(results: dict, samples: dict) -> None:
    summary = summarize(results, samples)
    lstm = summary["runs"]["lstm-word"]
    ratios = [365.5 / 118.25, 1489.75 / 118.25]
    assert lstm["mean_relative_increase"] == pytest.approx(math.sqrt(ratios[0] * ratios[1]) - 1, rel=1e-12)
    assert lstm["mean_bits_per_byte_increase"] == pytest.approx((2.112 + 3.237) / 2 - 1.431, rel=1e-12)
    assert lstm["out_of_domain_corpora"] == ["wikitext-2", "tinyshakespeare"]
    assert summary["runs"]["char-notes"]["out_of_domain_corpora"] == ["ptb"]
    # char-notes: x2.08 on ptb; gpt-bpe: x4.0 and x6.5 (geometric mean x5.1); lstm-word: x3.1 and x12.6.
    assert summary["least_degraded"]["mean_relative_increase"] == "char-notes"
    assert summary["most_degraded"]["mean_relative_increase"] == "lstm-word"
    assert summary["least_degraded"]["mean_bits_per_byte_increase"] == "gpt-bpe"
    assert summary["corpora"]["tinyshakespeare"] == {"least_increase": "gpt-bpe", "most_increase": "lstm-word"}
    assert summary["corpora"]["wikitext-2"] == {"least_increase": "lstm-word", "most_increase": "gpt-bpe"}
    assert "ptb" not in summary["corpora"]  # out of domain for char-notes only: nothing to rank
    assert summary["strategies"]["greedy"]["distinct_1"] == pytest.approx((0.25 + 0.25 + 2 / 16) / 2)


def test_report_holds_every_row_and_the_answers(results: dict, samples: dict, tmp_path: Path) -> None:
    report = write_report(results, tmp_path, samples).read_text()
    for row in results["rows"]:
        in_domain = results["meta"]["runs"][row["run"]]["in_domain_corpus"] == row["corpus"]
        cells = [row["run"], row["model_type"], row["tokenizer"], format_value(row["num_parameters"], "count"),
                 row["corpus"] + (" (in-domain)" if in_domain else ""), format_value(row["perplexity"], "ppl"),
                 format_value(row["bits_per_byte"], "bpb"), format_value(row["tokens"], "count"),
                 format_value(row["oov_rate"], "rate"), format_value(row["unk_rate"], "rate"),
                 format_value(row["perplexity_without_unk"], "ppl"), format_value(row["relative_increase"], "change")]
        assert "| " + " | ".join(cells) + " |" in report
    assert "| gpt-bpe | gpt | gpt2 | 7,435,776 | ptb (in-domain) | 61.50 | 1.518 | 117,310 | — | — | — | +0.0% |" in report
    assert "**Rises least:** `char-notes`" in report and "**Degrades most:** `lstm-word`" in report
    assert "by bits per byte, the comparable measure across tokenizers, it is `gpt-bpe`" in report
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report):
        assert (tmp_path / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(summarize(results, samples)))
    assert "> the meaning of life is the company said" in report  # an excerpt, after its prompt


def _leaves(value: Any, numbers: list[float], strings: set[str]) -> None:
    if isinstance(value, dict):
        strings.update(value)
        for item in value.values():
            _leaves(item, numbers, strings)
    elif isinstance(value, list):
        for item in value:
            _leaves(item, numbers, strings)
    elif isinstance(value, str):
        strings.add(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        numbers.append(value)


def test_every_number_in_the_report_comes_from_the_json(results: dict, samples: dict, tmp_path: Path) -> None:
    report = write_report(results, tmp_path, samples).read_text()
    numbers: list[float] = []
    strings: set[str] = set()
    for document in (results, samples, json.loads((tmp_path / "summary.json").read_text())):
        _leaves(document, numbers, strings)
    allowed = {str(number) for number in numbers}
    for number in numbers:
        for kind, fmt in FORMATS.items():
            if kind != "count" or isinstance(number, int):
                allowed.add(fmt(number))
    strings |= {string.replace("<unk>", "`<unk>`") for string in strings}  # the report shows <unk> as code
    text = report
    for string in sorted(strings, key=len, reverse=True):  # names, prompts, commands, dates, versions, notes
        text = text.replace(string, " ")
    found = re.findall(r"[+-]?\d+(?:,\d{3})*(?:\.\d+)?%?", text)
    assert found, "the report shows numbers"
    assert [number for number in found if number not in allowed] == []


def test_results_written_by_evaluate_feed_the_report_cli(results: dict, samples: dict, tmp_path: Path) -> None:
    write_results(results, tmp_path)
    (tmp_path / "samples.json").write_text(json.dumps(samples))
    spec = importlib.util.spec_from_file_location("cli_report", REPO / "training" / "report.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = tmp_path / "report"
    assert cli.main(["--results", str(tmp_path / "results.json"), "--samples", str(tmp_path / "samples.json"),
                     "--out", str(out)]) == 0
    assert load_results(tmp_path / "results.json") == results
    assert {"report.md", "summary.json", "bits_per_byte.png", "perplexity_ratio.png", "learning_curves.png"} <= {
        path.name for path in out.iterdir()
    }


def test_report_cli_names_a_bad_results_file(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    bad = tmp_path / "results.json"
    bad.write_text('{"rows": []}')
    spec = importlib.util.spec_from_file_location("cli_report", REPO / "training" / "report.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--results", str(bad), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and f"results file '{bad}'" in capsys.readouterr().err
