"""Exact perplexity: known values on toy models, equivalence with brute force and manual loops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from lmcore.data.tokenizers import HFTokenizer
from lmcore.data.tokenizers import WordTokenizer as LmcoreWordTokenizer
from lmcore.eval import PerplexityResult, evaluate_perplexity, evaluate_text
from lmcore.models import GPT, LSTMLM, RNNLM, GPTConfig, LSTMConfig, RNNConfig
from lmcore.models.base import LanguageModel, LMConfig, LMOutput
from lmcore.models.hf import HFCausalLM

# ----------------------------------------------------------------------------- toy models


class ToyLM(LanguageModel):
    """A model with a settable ``max_context``; subclasses give ``logits(input_ids) -> (B, T, V)``."""

    def __init__(self, vocab_size: int, max_context: int | None = None) -> None:
        super().__init__(LMConfig(vocab_size=vocab_size))
        self._max_context = max_context

    @property
    def max_context(self) -> int | None:
        return self._max_context

    def forward(self, input_ids, state=None, labels=None, use_cache=False):
        if self._max_context is not None:
            assert input_ids.size(1) <= self._max_context, "fed more tokens than max_context"
        return LMOutput(logits=self.logits(input_ids))


class UniformLM(ToyLM):
    def logits(self, input_ids):
        return torch.zeros(*input_ids.shape, self.config.vocab_size)


def next_by_rule(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    return (3 * ids + 1) % vocab_size


class RuleLM(ToyLM):
    """Puts (nearly) all probability on next_by_rule(current token)."""

    def logits(self, input_ids):
        return 60.0 * F.one_hot(next_by_rule(input_ids, self.config.vocab_size), self.config.vocab_size).float()


class BigramLM(ToyLM):
    """Logits depend on the current token only: a fixed random (V, V) table."""

    def __init__(self, vocab_size: int, max_context: int | None = None) -> None:
        super().__init__(vocab_size, max_context)
        self.table = nn.Parameter(torch.randn(vocab_size, vocab_size, generator=torch.Generator().manual_seed(0)))

    def logits(self, input_ids):
        return self.table[input_ids]


class BagOfWordsLM(ToyLM):
    """Logits at t depend on every input token up to t (the mean of their one-hot vectors)."""

    def __init__(self, vocab_size: int, max_context: int | None = None) -> None:
        super().__init__(vocab_size, max_context)
        self.weight = nn.Parameter(3 * torch.randn(vocab_size, vocab_size, generator=torch.Generator().manual_seed(1)))

    def logits(self, input_ids):
        counts = F.one_hot(input_ids, self.config.vocab_size).float().cumsum(dim=1)  # (B, T, V)
        mean = counts / torch.arange(1, input_ids.size(1) + 1).view(1, -1, 1)
        return mean @ self.weight


class DecayingRecurrentLM(LanguageModel):
    """A recurrent toy: h_t = 0.5 h_{t-1} + onehot(x_t), logits_t = h_t W."""

    is_recurrent = True

    def __init__(self, vocab_size: int) -> None:
        super().__init__(LMConfig(vocab_size=vocab_size))
        self.weight = nn.Parameter(2 * torch.randn(vocab_size, vocab_size, generator=torch.Generator().manual_seed(2)))

    def forward(self, input_ids, state=None, labels=None, use_cache=False):
        h = torch.zeros(input_ids.size(0), self.config.vocab_size) if state is None else state
        outputs = []
        for t in range(input_ids.size(1)):
            h = 0.5 * h + F.one_hot(input_ids[:, t], self.config.vocab_size).float()
            outputs.append(h @ self.weight)
        return LMOutput(logits=torch.stack(outputs, dim=1), state=h)


class UniformRecurrentLM(DecayingRecurrentLM):
    def forward(self, input_ids, state=None, labels=None, use_cache=False):
        return LMOutput(logits=torch.zeros(*input_ids.shape, self.config.vocab_size), state=state)


class CharTokenizer:
    """lmcore-style tokenizer over a fixed character set; the last id is the end-of-text token."""

    def __init__(self, chars: str) -> None:
        self.chars = chars
        self.eos_id = len(chars)
        self.vocab_size = len(chars) + 1

    def encode(self, text: str) -> list[int]:
        return [self.chars.index(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids if i != self.eos_id)


class WordTokenizer:
    """lmcore-style word-level tokenizer with an <unk> id for words outside its vocabulary."""

    def __init__(self, words: list[str]) -> None:
        self.words = words + ["<unk>", "<eos>"]
        self.unk_id = len(words)
        self.eos_id = len(words) + 1
        self.vocab_size = len(self.words)

    def encode(self, text: str) -> list[int]:
        return [self.words.index(w) if w in self.words[: self.unk_id] else self.unk_id for w in text.split()]


def random_ids(n: int, vocab_size: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab_size, (n,), generator=torch.Generator().manual_seed(seed))


def brute_force_nll(model: LanguageModel, ids: torch.Tensor, context_start) -> tuple[float, int]:
    """Sum of -log p(ids[t] | ids[context_start(t):t]) over t = 1 .. n-1, one forward pass per token."""
    total = 0.0
    with torch.no_grad():
        for t in range(1, ids.numel()):
            logits = model(ids[context_start(t) : t][None]).logits[0, -1]
            total -= F.log_softmax(logits.double(), dim=-1)[ids[t]].item()
    return total, ids.numel() - 1


# ----------------------------------------------------------------------------- known values


@pytest.mark.parametrize("model", [UniformLM(37, max_context=8), UniformRecurrentLM(37)], ids=["window", "recurrent"])
def test_uniform_model_perplexity_is_vocab_size(model):
    result = evaluate_perplexity(model, random_ids(101, 37), batch_size=3)
    assert result.perplexity == pytest.approx(37, rel=1e-4)
    assert result.mean_nll == pytest.approx(math.log(37), rel=1e-6)


def test_model_that_always_predicts_the_next_token_has_perplexity_one():
    vocab = 16
    ids = [5]
    for _ in range(60):
        ids.append(int(next_by_rule(torch.tensor(ids[-1]), vocab)))
    result = evaluate_perplexity(RuleLM(vocab, max_context=8), ids, stride=3)
    assert result.num_tokens == 60
    assert result.perplexity == pytest.approx(1.0, abs=1e-6)
    # ...while the uniform model on the same text is as unsure as its vocabulary is large.
    assert evaluate_perplexity(UniformLM(vocab, max_context=8), ids).perplexity == pytest.approx(vocab, rel=1e-4)


def test_bits_per_byte_of_uniform_model():
    tokenizer = CharTokenizer("abcdeéè z")
    text = "éa zèbé dae"  # 11 characters, 14 UTF-8 bytes
    num_bytes = len(text.encode("utf-8"))
    assert num_bytes > len(text)  # the accents make bytes and tokens differ
    model = UniformLM(tokenizer.vocab_size, max_context=4)
    result = evaluate_text(model, tokenizer, text)  # prepends eos: every character is scored
    assert result.num_tokens == len(text)
    assert result.num_bytes == num_bytes
    expected = math.log2(tokenizer.vocab_size) * len(text) / num_bytes
    assert result.bits_per_byte == pytest.approx(expected, rel=1e-5)
    # Without the start token the first character is not scored.
    assert evaluate_text(model, tokenizer, text, prepend_eos=False).num_tokens == len(text) - 1


def test_unk_rate_and_perplexity_without_unk():
    tokenizer = WordTokenizer(["the", "cat", "sat", "on", "mat"])
    text = "the cat sat on the zebra mat the dog sat on the mat"
    model = BigramLM(tokenizer.vocab_size, max_context=4)
    result = evaluate_text(model, tokenizer, text, stride=4)  # unk id taken from the tokenizer

    ids = [tokenizer.eos_id] + tokenizer.encode(text)
    log_probs = F.log_softmax(model.table.detach().double(), dim=-1)
    token_nll = [-log_probs[ids[t - 1], ids[t]].item() for t in range(1, len(ids))]
    is_unk = [ids[t] == tokenizer.unk_id for t in range(1, len(ids))]
    assert result.num_tokens == 13 and result.num_unk == 2 == sum(is_unk)
    assert result.unk_rate == pytest.approx(2 / 13)
    assert result.perplexity == pytest.approx(math.exp(sum(token_nll) / 13), rel=1e-5)
    known_nll = sum(nll for nll, unk in zip(token_nll, is_unk) if not unk)
    assert result.perplexity_without_unk == pytest.approx(math.exp(known_nll / 11), rel=1e-5)
    assert result.to_dict()["perplexity_without_unk"] == result.perplexity_without_unk


def test_result_without_bytes_or_unk_reports_none():
    result = PerplexityResult(nll=10.0, num_tokens=5)
    assert result.perplexity == pytest.approx(math.exp(2.0))
    assert result.bits_per_byte is None and result.unk_rate is None and result.perplexity_without_unk is None


# ----------------------------------------------------------------------------- sliding window


def test_stride_one_equals_brute_force_with_full_window():
    window, ids = 6, random_ids(30, 11, seed=3)
    model = BagOfWordsLM(11, max_context=window)
    expected_nll, expected_tokens = brute_force_nll(model, ids, lambda t: max(0, t - window))
    result = evaluate_perplexity(model, ids, stride=1, batch_size=4)
    assert result.num_tokens == expected_tokens
    assert result.nll == pytest.approx(expected_nll, rel=1e-5)


def test_stride_equal_to_window_scores_disjoint_chunks():
    window, ids = 6, random_ids(30, 11, seed=4)
    model = BagOfWordsLM(11, max_context=window)
    # Input i predicts token i + 1; chunks of inputs [0, 6), [6, 12), ... each start from scratch.
    expected_nll, expected_tokens = brute_force_nll(model, ids, lambda t: (t - 1) // window * window)
    result = evaluate_perplexity(model, ids, stride=window, batch_size=2)
    assert result.num_tokens == expected_tokens
    assert result.nll == pytest.approx(expected_nll, rel=1e-5)


@pytest.mark.parametrize("stride", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_every_token_is_scored_exactly_once_for_any_stride(stride, batch_size):
    # A bigram model gives each token the same probability whatever its context,
    # so any correct stride and batching gives exactly the direct sum.
    ids = random_ids(41, 9, seed=5)
    model = BigramLM(9, max_context=8)
    log_probs = F.log_softmax(model.table.detach().double(), dim=-1)
    expected = -sum(log_probs[ids[t - 1], ids[t]].item() for t in range(1, 41))
    result = evaluate_perplexity(model, ids, stride=stride, batch_size=batch_size)
    assert result.num_tokens == 40
    assert result.nll == pytest.approx(expected, rel=1e-6)


def test_more_overlap_gives_context_dependent_model_more_context():
    ids = random_ids(60, 11, seed=6)
    model = BagOfWordsLM(11, max_context=8)
    disjoint = evaluate_perplexity(model, ids, stride=8)
    overlapping = evaluate_perplexity(model, ids, stride=2)
    assert disjoint.num_tokens == overlapping.num_tokens == 59
    assert disjoint.nll != pytest.approx(overlapping.nll, rel=1e-3)
    # A shorter context_length than the model's window is the same as a model with that window.
    short = evaluate_perplexity(model, ids, context_length=4, stride=4)
    assert short.nll == pytest.approx(evaluate_perplexity(BagOfWordsLM(11, max_context=4), ids, stride=4).nll)


def test_gpt_stride_one_equals_brute_force():
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("tiny", vocab_size=23, block_size=8)).eval()
    ids = random_ids(20, 23, seed=7)
    expected_nll, _ = brute_force_nll(model, ids, lambda t: max(0, t - 8))
    result = evaluate_perplexity(model, ids, stride=1, batch_size=5)
    assert result.nll == pytest.approx(expected_nll, rel=1e-5)


def test_wrapped_hf_gpt2_matches_perplexity_computed_from_its_logits():
    torch.manual_seed(0)
    hf_model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=2)).eval()
    ids = random_ids(40, 50, seed=8)
    # By hand: disjoint windows of 16 inputs, HF logits, log-softmax at the next token.
    total, count = 0.0, 0
    with torch.no_grad():
        for begin in range(0, 39, 16):
            inputs, targets = ids[begin : min(begin + 16, 39)], ids[begin + 1 : min(begin + 16, 39) + 1]
            log_probs = F.log_softmax(hf_model(inputs[None]).logits[0].double(), dim=-1)
            total -= log_probs.gather(1, targets[:, None]).sum().item()
            count += targets.numel()
    for model in (HFCausalLM(hf_model), hf_model):  # wrapped, or wrapped on the fly
        result = evaluate_perplexity(model, ids, stride=16, batch_size=2)
        assert result.num_tokens == count == 39
        assert result.perplexity == pytest.approx(math.exp(total / count), rel=1e-5)


# ----------------------------------------------------------------------------- recurrent streams


def stream_nll(model: LanguageModel, ids: torch.Tensor) -> float:
    """One token at a time through a recurrent model, carrying its state."""
    total, state = 0.0, None
    with torch.no_grad():
        for t in range(ids.numel() - 1):
            output = model(ids[t : t + 1][None], state=state)
            state = output.state
            total -= F.log_softmax(output.logits[0, -1].double(), dim=-1)[ids[t + 1]].item()
    return total


@pytest.mark.parametrize("model_name", ["toy", "rnn", "lstm"])
def test_recurrent_batched_streams_equal_manual_loop(model_name):
    torch.manual_seed(0)
    vocab = 13
    model = {
        "toy": lambda: DecayingRecurrentLM(vocab),
        "rnn": lambda: RNNLM(RNNConfig(vocab_size=vocab, hidden_size=16, num_layers=2)),
        "lstm": lambda: LSTMLM(LSTMConfig(vocab_size=vocab, hidden_size=16, num_layers=2)),
    }[model_name]().eval()
    ids = random_ids(47, vocab, seed=9)

    one_stream = evaluate_perplexity(model, ids, block_length=10)
    assert one_stream.num_tokens == 46
    assert one_stream.nll == pytest.approx(stream_nll(model, ids), rel=1e-5)

    # 4 streams of 12, 12, 12, 11 tokens (longer ones first); each stream's first token is not scored.
    four_streams = evaluate_perplexity(model, ids, batch_size=4, block_length=5)
    bounds = [0, 12, 24, 36, 47]
    expected = sum(stream_nll(model, ids[bounds[i] : bounds[i + 1]]) for i in range(4))
    assert four_streams.num_tokens == 47 - 4
    assert four_streams.nll == pytest.approx(expected, rel=1e-5)


def test_evaluation_restores_training_mode():
    model = LSTMLM(LSTMConfig(vocab_size=10, hidden_size=8, num_layers=1, dropout=0.5)).train()
    first = evaluate_perplexity(model, random_ids(30, 10))
    assert model.training
    assert evaluate_perplexity(model, random_ids(30, 10)).nll == first.nll  # dropout was off both times


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("ids", "options", "message"),
    [
        ([], {}, "at least 2 tokens"),
        ([3], {}, "at least 2 tokens"),
        ([], {"start_token": 0}, "at least 2 tokens"),
        (list(range(10)), {"stride": 0}, r"stride must be in \[1, context_length=8\]"),
        (list(range(10)), {"stride": 9}, r"stride must be in \[1, context_length=8\]"),
        (list(range(10)), {"context_length": 4, "stride": 5}, r"stride must be in \[1, context_length=4\]"),
        (list(range(10)), {"context_length": 9}, "longer than the model's max_context=8"),
        (list(range(10)), {"batch_size": 0}, "batch_size must be at least 1"),
        (list(range(10)), {"num_bytes": 0}, "num_bytes"),
    ],
)
def test_bad_input_raises_value_error(ids, options, message):
    with pytest.raises(ValueError, match=message):
        evaluate_perplexity(UniformLM(10, max_context=8), ids, **options)


def test_bad_input_for_recurrent_and_unbounded_models():
    with pytest.raises(ValueError, match=r"use batch_size <= 5"):
        evaluate_perplexity(UniformRecurrentLM(10), list(range(10)), batch_size=6)
    with pytest.raises(ValueError, match="stride apply to fixed-context models"):
        evaluate_perplexity(UniformRecurrentLM(10), list(range(10)), stride=2)
    with pytest.raises(ValueError, match="pass context_length"):
        evaluate_perplexity(UniformLM(10), list(range(10)))
    assert evaluate_perplexity(UniformLM(10), list(range(10)), context_length=4).num_tokens == 9
    with pytest.raises(ValueError, match="text is empty"):
        evaluate_text(UniformLM(10, max_context=8), CharTokenizer("abc"), "")


# ----------------------------------------------------------------------------- lmcore tokenizers


def test_evaluate_text_takes_unk_id_from_an_lmcore_word_tokenizer():
    tokenizer = LmcoreWordTokenizer.train("the cat sat on the mat\nthe dog sat\n")
    text = "the cat sat on the zebra\nthe dog ran\n"
    ids = [tokenizer.eos_id, *tokenizer.encode(text)]
    model = BigramLM(tokenizer.vocab_size, max_context=4)
    result = evaluate_text(model, tokenizer, text)
    assert result.num_tokens == len(ids) - 1 == 11
    assert result.num_unk == ids[1:].count(tokenizer.unk_id) == 2  # zebra, ran
    assert result.num_bytes == len(text)


def test_bits_per_byte_with_gpt2_tokenizer(gpt2_tokenizer_dir):
    tokenizer = HFTokenizer.from_pretrained(gpt2_tokenizer_dir)
    text = "Perplexity in bits per byte — comparable across tokenizers. Ünïcödé too."
    model = UniformLM(tokenizer.vocab_size, max_context=16)
    result = evaluate_text(model, tokenizer, text)
    num_tokens = len(tokenizer.encode(text))
    assert result.num_tokens == num_tokens and result.num_unk is None
    expected = math.log2(tokenizer.vocab_size) * num_tokens / len(text.encode("utf-8"))
    assert result.bits_per_byte == pytest.approx(expected, rel=1e-5)
