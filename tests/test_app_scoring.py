"""Cross-domain tab: reading pasted and uploaded text, scoring it now, the shipped results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from app_fixtures import tiny_run

from lmcore.app.registry import ModelRegistry, pretrained_spec, run_spec
from lmcore.app.scoring import (
    crossdomain_figures,
    load_crossdomain,
    read_text_input,
    score_text,
    scores_figure,
    scores_table,
)
from lmcore.data import load_tokenizer
from lmcore.eval import evaluate_text
from lmcore.models import load_model
from lmcore.runs import read_run


def test_pasted_text_is_capped_with_a_message() -> None:
    text, notes = read_text_input("abcdef", None, max_chars=4)
    assert text == "abcd" and notes == ["The text was capped at its first 4 characters (it has 6)."]
    assert read_text_input("fine", None, max_chars=10) == ("fine", [])
    for empty in (None, "", "  \n "):
        with pytest.raises(ValueError, match="There is no text to score"):
            read_text_input(empty, None, max_chars=10)


def test_an_uploaded_text_file_wins_over_the_pasted_text(tmp_path: Path) -> None:
    path = tmp_path / "note.txt"
    path.write_text("héllo wörld\n", encoding="utf-8")
    text, notes = read_text_input("pasted", str(path), max_chars=100)
    assert text == "héllo wörld\n" and "the pasted text was left aside" in notes[0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is not a text file \\(it contains NUL bytes\\)"),
        ("café".encode("latin-1") + b" ok", "is not UTF-8 text \\(byte 3 cannot be decoded\\)"),
        (b"\x01\x02\x03\x04 mostly control", "does not look like text"),
    ],
)
def test_a_file_that_is_not_text_gets_a_message(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "upload.bin"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"upload.bin {message}"):
        read_text_input("", str(path), max_chars=100)


def test_scores_are_those_of_evaluate_text_and_failures_are_rows(tmp_path: Path) -> None:
    run = tiny_run("lstm")
    registry = ModelRegistry([run_spec(read_run(run)), pretrained_spec(str(tmp_path / "missing"))])
    text = "the cat sees a dog .\na dog likes the ball .\n"
    scores = score_text(registry, ["toy-lstm", str(tmp_path / "missing")], text)
    expected = evaluate_text(load_model(run / "checkpoints" / "best"), load_tokenizer(run / "tokenizer"), text)
    assert scores[0].status == "ok"
    assert scores[0].perplexity == pytest.approx(expected.perplexity)
    assert scores[0].bits_per_byte == pytest.approx(expected.bits_per_byte)
    assert scores[0].tokens == expected.num_tokens and scores[0].unk_rate == 0.0
    assert scores[1].status.startswith("unavailable: OSError") and scores[1].perplexity is None
    table = scores_table(scores)
    assert table["model"].tolist() == ["toy-lstm", str(tmp_path / "missing")]
    assert table["bits per byte"][0] == pytest.approx(round(expected.bits_per_byte, 3))
    figure = scores_figure(scores)
    assert "bits per byte" in figure.axes[0].get_xlabel()
    with pytest.raises(ValueError, match="Choose at least one model"):
        score_text(registry, [], text)


def row(run: str, corpus: str, perplexity: float, bits: float, tokenizer: str = "word") -> dict:
    return {"run": run, "model_type": "lstm", "tokenizer": tokenizer, "num_parameters": 2_653_200, "corpus": corpus,
            "split": "test", "perplexity": perplexity, "bits_per_byte": bits, "tokens": 1000, "oov_rate": 0.05,
            "unk_rate": 0.07, "perplexity_without_unk": perplexity * 0.9, "relative_increase": 0.5}


def test_shipped_cross_domain_results_become_a_table_and_charts(tmp_path: Path) -> None:
    from lmcore.eval.crossdomain import write_results

    results = {"meta": {"split": "test", "command": ["training/evaluate_lm.py", "--runs", "a"]},
               "rows": [row("a", "ptb", 120.0, 1.6), row("a", "/data/shakespeare.txt", 900.0, 2.4)]}
    write_results(results, tmp_path)
    (tmp_path / "bits.png").write_bytes(b"png")
    loaded = load_crossdomain(tmp_path / "results.json")
    assert loaded.available and "2 results (1 models × 2 corpora, test split)" in loaded.message
    assert loaded.table["corpus"].tolist() == ["ptb", "shakespeare.txt"]
    assert loaded.table["bits per byte"].tolist() == [1.6, 2.4]
    assert loaded.table["OOV %"].tolist() == [5.0, 5.0] and loaded.table["vs. own corpus"][0] == "+50%"
    assert loaded.images == [str(tmp_path / "bits.png")]
    bits, perplexity = crossdomain_figures(loaded)
    assert "bits per byte" in bits.axes[0].get_ylabel() and perplexity.axes[0].get_yscale() == "log"


def test_missing_or_broken_results_give_a_message(tmp_path: Path) -> None:
    missing = load_crossdomain(tmp_path / "results.json")
    assert not missing.available and missing.message.startswith("Cross-domain results: not available yet")
    (tmp_path / "results.json").write_text(json.dumps({"rows": []}))
    broken = load_crossdomain(tmp_path / "results.json")
    assert not broken.available and "could not be read" in broken.message
    assert "not available yet" in crossdomain_figures(broken)[0].texts[0].get_text()
