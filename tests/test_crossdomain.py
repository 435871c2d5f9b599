"""Cross-domain evaluation: known orderings on tiny runs, the results schema, OOV counts, bits per byte,
one model in memory at a time, and clear errors (exit code 2) for bad runs and corpora."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import random
import re
import weakref
from pathlib import Path

import pytest

import lmcore.eval.crossdomain as crossdomain
from lmcore.data import load_corpus
from lmcore.eval.crossdomain import ROW_KEYS, evaluate_runs, load_results, write_results
from lmcore.train import resolve_config, train

REPO = Path(__file__).resolve().parents[1]


def load_cli(name: str):
    """A training/<name>.py script as a module, to call its main() in-process."""
    spec = importlib.util.spec_from_file_location(f"cli_{name}", REPO / "training" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """toy.txt: a small regular language (the training corpus); other.txt: other words and word order;
    unseen.txt: one line repeated, two of its six words unseen in toy.txt."""
    folder = tmp_path_factory.mktemp("corpora")
    rng = random.Random(0)
    subjects, verbs, objects = ["the cat", "a dog", "my friend", "the bird"], ["sees", "likes", "finds"], ["the ball", "a tree", "some food"]
    toy = [f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} ." for _ in range(1500)]
    (folder / "toy.txt").write_text("\n".join(toy) + "\n", encoding="utf-8")
    other = [" ".join(rng.sample(["food", "ball", "tree", "bird", "sees", "likes", "a", "the", "my", "."], 6)) for _ in range(800)]
    (folder / "other.txt").write_text("\n".join(other) + "\n", encoding="utf-8")
    (folder / "unseen.txt").write_text("the cat sees zebra quokka .\n" * 200, encoding="utf-8")
    return {path.stem: path for path in folder.iterdir()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, corpora: dict[str, Path]) -> dict[str, Path]:
    """Tiny LSTM and GPT runs (word tokenizer) trained on toy.txt."""
    from accelerate.state import AcceleratorState, PartialState

    folder = tmp_path_factory.mktemp("runs")
    made = {}
    for model in ("lstm", "gpt"):
        out = folder / model
        train(resolve_config({"model": model, "preset": "tiny", "data": str(corpora["toy"]), "out": str(out),
                              "max_steps": 40, "sample_prompts": []}), command=["test"])
        AcceleratorState._reset_state(reset_partial_state=True)
        PartialState._reset_state()
        made[model] = out
    return made


@pytest.fixture(scope="module")
def results(runs: dict[str, Path], corpora: dict[str, Path]) -> dict:
    """Both runs on other.txt and unseen.txt; their training corpus (toy.txt) is added by evaluate_runs."""
    return evaluate_runs([runs["lstm"], runs["gpt"]], [str(corpora["other"]), str(corpora["unseen"])], "test",
                         streams=2, command=["test"])


def row(results: dict, run: str, corpus: Path) -> dict:
    return next(r for r in results["rows"] if r["run"] == run and Path(r["corpus"]) == corpus)


def test_memorised_corpus_scores_better_than_a_different_one(results: dict, corpora: dict[str, Path]) -> None:
    for run in ("lstm", "gpt"):
        own, other = row(results, run, corpora["toy"]), row(results, run, corpora["other"])
        # ~16 words in a regular grammar: a model that learned it is far below a uniform guess.
        assert own["perplexity"] < 8
        assert other["perplexity"] > 2 * own["perplexity"]
        assert other["bits_per_byte"] > own["bits_per_byte"]
        assert own["relative_increase"] == 0.0
        assert other["relative_increase"] == pytest.approx(other["perplexity"] / own["perplexity"] - 1, rel=1e-12)


def test_rows_have_the_schema_and_the_training_corpus_is_added(results: dict, corpora: dict[str, Path]) -> None:
    assert [r["run"] for r in results["rows"]] == ["lstm"] * 3 + ["gpt"] * 3
    assert [Path(r["corpus"]).stem for r in results["rows"][:3]] == ["other", "unseen", "toy"]
    for r in results["rows"]:
        assert tuple(r) == ROW_KEYS
        assert r["tokenizer"] == "word" and r["split"] == "test" and r["num_parameters"] > 0
    meta = results["meta"]
    assert meta["command"] == ["test"] and {"git_commit", "versions", "hardware", "date"} <= set(meta)
    assert "comparable across tokenizers" in meta["comparable_across_tokenizers"]["bits_per_byte"]
    assert "only between models with the same tokenizer" in meta["comparable_across_tokenizers"]["perplexity"]
    assert Path(meta["runs"]["gpt"]["in_domain_corpus"]) == corpora["toy"]
    curve = meta["runs"]["lstm"]["learning_curve"]
    assert curve["epochs"] and curve["epochs"][0]["valid_ppl"] > 1 and curve["test_ppl"] > 1


def test_oov_and_unk_rates_count_the_unseen_words(results: dict, corpora: dict[str, Path]) -> None:
    # Each line "the cat sees zebra quokka ." + <eos> is 7 tokens, of which zebra and quokka are unseen.
    gpt = row(results, "gpt", corpora["unseen"])
    assert gpt["oov_rate"] == pytest.approx(2 / 7, abs=1e-12)
    assert gpt["unk_rate"] == pytest.approx(2 / 7, abs=1e-12)  # a fixed-context model scores every token
    assert gpt["perplexity_without_unk"] is not None
    assert row(results, "lstm", corpora["toy"])["oov_rate"] == 0.0


def test_bits_per_byte_agree_with_perplexity_and_bytes(results: dict, corpora: dict[str, Path]) -> None:
    for r in results["rows"]:
        num_bytes = len(load_corpus(r["corpus"], "test").encode("utf-8"))
        assert results["meta"]["corpus_bytes"][r["corpus"]] == num_bytes
        assert r["bits_per_byte"] * num_bytes == pytest.approx(r["tokens"] * math.log2(r["perplexity"]), rel=1e-9)


def test_recurrent_streams_leave_the_first_token_of_each_other_stream_unscored(
    results: dict, runs: dict[str, Path], corpora: dict[str, Path]
) -> None:
    lstm, gpt = row(results, "lstm", corpora["unseen"]), row(results, "gpt", corpora["unseen"])
    assert lstm["tokens"] == gpt["tokens"] - 1  # streams=2: one stream start is not scored


def test_results_files_round_trip(results: dict, tmp_path: Path) -> None:
    json_path, csv_path = write_results(results, tmp_path)
    assert load_results(json_path) == json.loads(json.dumps(results))
    with open(csv_path, encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    assert tuple(table[0]) == ROW_KEYS and len(table) == len(results["rows"])
    assert float(table[0]["perplexity"]) == results["rows"][0]["perplexity"]


def test_load_results_rejects_other_keys(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"meta": {}, "rows": [{"run": "a"}]}))
    with pytest.raises(ValueError, match=r"results.json.*row 0 must have exactly the keys"):
        load_results(path)


def test_models_are_loaded_one_at_a_time(
    monkeypatch: pytest.MonkeyPatch, runs: dict[str, Path], corpora: dict[str, Path]
) -> None:
    alive: list[weakref.ref] = []
    load = crossdomain.load_model

    def tracked_load(*args, **kwargs):
        assert all(ref() is None for ref in alive), "the previous run's model is still in memory"
        model = load(*args, **kwargs)
        alive.append(weakref.ref(model))
        return model

    monkeypatch.setattr(crossdomain, "load_model", tracked_load)
    evaluate_runs([runs["lstm"], runs["gpt"]], [str(corpora["toy"])], streams=2)
    assert len(alive) == 2


# ----------------------------------------------------------------------------- bad input: clear errors, exit code 2


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        load_cli("evaluate_lm").main(list(argv))
    return exit_info.value.code, capsys.readouterr().err


def test_missing_run_folder_is_named(capsys, tmp_path: Path, corpora: dict[str, Path]) -> None:
    missing = tmp_path / "no-such-run"
    code, error = run_cli(capsys, "--runs", str(missing), "--corpora", str(corpora["toy"]), "--out", str(tmp_path / "o"))
    assert code == 2 and f"run folder '{missing}' does not exist" in error


def test_a_run_that_cannot_be_evaluated_is_refused_with_what_it_lacks(tmp_path: Path) -> None:
    run = tmp_path / "run"

    def refused(message: str) -> None:
        with pytest.raises(ValueError, match=re.escape(f"run folder '{run}' ") + ".*" + re.escape(message)):
            crossdomain.read_runs([run])

    run.mkdir()
    refused("has no readable config.json with config.model/tokenizer/data "
            "(config.json is missing or not a JSON object)")
    (run / "config.json").write_text(json.dumps({"config": {"model": "lstm"}}))
    refused("(no config.tokenizer, config.data)")
    (run / "config.json").write_text(json.dumps({"config": {"model": "lstm", "tokenizer": "word", "data": "ptb"}}))
    refused("lacks checkpoints/best/config.json (a run writes checkpoints/best after its first evaluation)")
    (run / "checkpoints" / "best").mkdir(parents=True)
    (run / "checkpoints" / "best" / "config.json").write_text("{}")
    refused("lacks tokenizer")
    (run / "tokenizer").mkdir()
    (found,) = crossdomain.read_runs([run])
    assert (found.name, found.model_type, found.tokenizer, found.training_corpus) == ("run", "lstm", "word", "ptb")
    assert found.checkpoint == run / "checkpoints" / "best"  # a saved model without trainer state counts


@pytest.mark.parametrize("kind", ["empty", "not-utf8", "folder"])
def test_unreadable_or_empty_corpus_is_named(capsys, kind: str, tmp_path: Path, runs: dict[str, Path]) -> None:
    corpus = tmp_path / f"{kind}.txt"
    if kind == "empty":
        corpus.write_text("")
    elif kind == "not-utf8":
        corpus.write_bytes("caf\u00e9 cr\u00e8me\n".encode("latin-1") * 20)
    else:
        corpus.mkdir()
    code, error = run_cli(capsys, "--runs", str(runs["lstm"]), "--corpora", str(corpus), "--out", str(tmp_path / "o"))
    assert code == 2 and f"corpus '{corpus}'" in error
    assert {"empty": "is empty", "not-utf8": "not UTF-8", "folder": "UTF-8 text file"}[kind] in error
    assert not (tmp_path / "o" / "results.json").exists()


@pytest.mark.parametrize("model, needed", [("gpt", "one context window"), ("lstm", "2 per stream x 10 streams")])
def test_corpus_too_short_is_named(capsys, model: str, needed: str, tmp_path: Path, runs: dict[str, Path]) -> None:
    corpus = tmp_path / "short.txt"
    corpus.write_text("the cat sees the ball .\n" * 40)  # its test split (the last 5%) is 2 lines: 14 tokens
    code, error = run_cli(capsys, "--runs", str(runs[model]), "--corpora", str(corpus), "--out", str(tmp_path / "o"))
    assert code == 2
    assert f"corpus '{corpus}' (test split) for run '{model}' is too short" in error and needed in error


def test_cli_writes_results_and_charts(capsys, tmp_path: Path, runs: dict[str, Path], corpora: dict[str, Path]) -> None:
    out = tmp_path / "out"
    assert load_cli("evaluate_lm").main(["--runs", str(runs["gpt"]), "--corpora", f"{corpora['other']},{corpora['toy']}",
                                      "--out", str(out)]) == 0
    results = load_results(out / "results.json")
    assert [Path(r["corpus"]).stem for r in results["rows"]] == ["other", "toy"]
    for name in ("results.csv", "bits_per_byte.png", "perplexity_ratio.png", "learning_curves.png"):
        assert (out / name).is_file()
    assert (out / "bits_per_byte.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
