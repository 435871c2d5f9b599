"""Generation comparison: the text measures on hand-made texts, the reference score on a uniform model,
and training/sample.py writing every run x prompt x strategy."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from lmcore.data import CharTokenizer, build_tokenizer
from lmcore.eval.crossdomain import DECODING_STRATEGIES, DEFAULT_PROMPTS, load_run_model
from lmcore.eval.text_metrics import distinct_n, reference_log_prob, repeated_ngram_rate, text_measures, words
from lmcore.generate import generate
from lmcore.io import atomic_write_json
from lmcore.models import build_model
from lmcore.models.base import LanguageModel, LMConfig, LMOutput
from lmcore.runs import read_run

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- measures with known values


def test_distinct_n_on_known_texts() -> None:
    assert distinct_n(words("a b a b"), 1) == 2 / 4
    assert distinct_n(words("a b a b"), 2) == 2 / 3  # (a b), (b a), (a b)
    assert distinct_n(words("x y z"), 2) == 1.0
    assert distinct_n(words("the the the the"), 1) == 1 / 4
    assert distinct_n(words("one"), 2) is None  # no bigram at all


def test_repeated_ngram_rate_on_known_texts() -> None:
    assert repeated_ngram_rate(words("a b c a b c"), 3) == 1 / 4  # abc, bca, cab, abc (repeated)
    assert repeated_ngram_rate(words("a a a a a"), 3) == 2 / 3  # every trigram after the first repeats it
    assert repeated_ngram_rate(words("x y z w"), 3) == 0.0
    assert repeated_ngram_rate(words("a b"), 3) is None
    with pytest.raises(ValueError, match="n must be at least 1"):
        repeated_ngram_rate(["a"], 0)


def test_text_measures_split_on_whitespace() -> None:
    measures = text_measures("the cat\nthe  cat\tsat", repeat_n=2)
    assert measures == {"num_words": 5, "distinct_1": 3 / 5, "distinct_2": 3 / 4, "repeated_ngram_rate": 1 / 4}


class UniformLM(LanguageModel):
    """Equal logits for every token: log-probability -ln(V) per token."""

    is_recurrent = True

    def __init__(self, vocab_size: int) -> None:
        super().__init__(LMConfig(vocab_size=vocab_size))

    def forward(self, input_ids, state=None, labels=None, use_cache=False):
        return LMOutput(logits=torch.zeros(*input_ids.shape, self.config.vocab_size))


def test_reference_log_prob_of_a_uniform_model() -> None:
    tokenizer = CharTokenizer.train("abc")  # <eos>, <unk>, a, b, c
    score = reference_log_prob(UniformLM(tokenizer.vocab_size), tokenizer, "abcab")
    assert score.num_tokens == 5  # every character, the first predicted from <eos>
    assert score.log_prob_per_token == pytest.approx(-math.log(5), rel=1e-6)
    assert score.bits_per_byte == pytest.approx(math.log2(5), rel=1e-6)  # one byte per character
    assert reference_log_prob(UniformLM(tokenizer.vocab_size), tokenizer, "  ") is None


# ----------------------------------------------------------------------------- sample.py


def make_run(folder: Path, model_type: str, train_text: str, **model_config) -> Path:
    """A run folder as training/train_lm.py lays it out, with an untrained model (enough for sampling)."""
    tokenizer = build_tokenizer("word", train_text=train_text)
    torch.manual_seed(0)
    model = build_model(model_type, vocab_size=tokenizer.vocab_size, **model_config)
    model.save_pretrained(folder / "checkpoints" / "best")
    tokenizer.save(folder / "tokenizer")
    atomic_write_json(folder / "config.json", {"config": {"model": model_type, "tokenizer": "word", "data": "toy.txt"}})
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("runs")
    text = "the meaning of life is a cat that sees the ball\nthe dog likes food\n"
    return [make_run(folder / "lstm", "lstm", text, hidden_size=16, num_layers=1),
            make_run(folder / "gpt", "gpt", text, n_layer=1, n_head=2, n_embd=16, block_size=24)]


def load_cli(name: str):
    spec = importlib.util.spec_from_file_location(f"cli_{name}", REPO / "training" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sample_cli_writes_every_run_prompt_and_strategy(runs: list[Path], tmp_path: Path) -> None:
    argv = ["--runs", *map(str, runs), "--out", str(tmp_path), "--prompts", "the dog", "--reference", str(runs[0])]
    assert load_cli("sample").main(argv) == 0
    saved = json.loads((tmp_path / "samples.json").read_text())
    prompts = [*DEFAULT_PROMPTS, "the dog"]
    assert saved["meta"]["prompts"] == prompts and saved["meta"]["strategies"] == DECODING_STRATEGIES
    assert {"command", "git_commit", "versions", "hardware", "date", "measures"} <= set(saved["meta"])
    samples = saved["samples"]
    assert [(s["run"], s["prompt"], s["strategy"]) for s in samples] == [
        (run.name, prompt, strategy) for run in runs for prompt in prompts for strategy in DECODING_STRATEGIES
    ]
    for sample in samples:
        assert sample["seed"] == 0 and sample["text"]
        # 60 new tokens, or as many as the GPT's 24-token window leaves after the prompt.
        room = 60 if sample["run"] == "lstm" else 24 - max(1, len(sample["prompt"].split())) + 1
        assert sample["num_tokens"] == room
        assert sample["distinct_1"] == distinct_n(words(sample["text"]), 1)
        assert sample["repeated_ngram_rate"] == repeated_ngram_rate(words(sample["text"]), 3)
        assert sample["ref_log_prob_per_token"] < 0 and sample["ref_bits_per_byte"] > 0

    # The texts are those of lmcore.generate with the same settings and seed.
    model, tokenizer = load_run_model(read_run(runs[1]))
    for sample in (s for s in samples if s["run"] == "gpt" and s["prompt"] == "the dog"):
        expected = generate(model, tokenizer, "the dog", max_new_tokens=sample["num_tokens"], seed=0,
                            stop_at_eos=False, **DECODING_STRATEGIES[sample["strategy"]])
        assert sample["text"] == expected.text
    greedy, top_p = (next(s["text"] for s in samples if s["run"] == "lstm" and s["prompt"] == "" and s["strategy"] == name)
                     for name in ("greedy", "top_p"))
    assert greedy != top_p


def test_sample_cli_without_reference_leaves_the_scores_null(runs: list[Path], tmp_path: Path) -> None:
    assert load_cli("sample").main(["--runs", str(runs[0]), "--out", str(tmp_path), "--max-new-tokens", "5"]) == 0
    samples = json.loads((tmp_path / "samples.json").read_text())["samples"]
    assert len(samples) == len(DEFAULT_PROMPTS) * len(DECODING_STRATEGIES)
    assert all(s["num_tokens"] == 5 and s["ref_log_prob_per_token"] is None for s in samples)


def test_sample_cli_names_a_missing_run(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        load_cli("sample").main(["--runs", str(tmp_path / "gone"), "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert f"run folder '{tmp_path / 'gone'}' does not exist" in capsys.readouterr().err
