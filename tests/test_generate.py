"""Generation: logits processors, samplers, cached vs uncached decoding, streaming, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from lmcore.data.tokenizers import HFTokenizer
from lmcore.data.tokenizers import WordTokenizer as LmcoreWordTokenizer
from lmcore.generate import (
    apply_repetition_penalty,
    generate,
    generate_tokens,
    next_token_probs,
    stream_generate,
    top_k_filter,
    top_p_filter,
)
from lmcore.models import GPT, LSTMLM, RNNLM, GPTConfig, LSTMConfig, RNNConfig
from lmcore.models.base import LanguageModel, LMConfig, LMOutput
from lmcore.models.hf import HFCausalLM

# ----------------------------------------------------------------------------- toys


class FixedDistributionLM(LanguageModel):
    """Whatever the context, the next token has the distribution ``probs``. Recurrent, so decoding is incremental."""

    is_recurrent = True

    def __init__(self, probs: list[float]) -> None:
        super().__init__(LMConfig(vocab_size=len(probs)))
        self.log_probs = torch.tensor(probs).log()

    def forward(self, input_ids, state=None, labels=None, use_cache=False):
        return LMOutput(logits=self.log_probs.expand(*input_ids.shape, -1), state=state)


class ScriptedLM(LanguageModel):
    """At absolute position i, predicts ``script[i + 1]`` with near certainty (script[0] is the prompt).

    Recurrent (the state counts the tokens read), so it decodes incrementally and, with
    use_cache=False, by re-reading the whole sequence.
    """

    is_recurrent = True

    def __init__(self, script: list[int], vocab_size: int) -> None:
        super().__init__(LMConfig(vocab_size=vocab_size))
        self.script = script

    def forward(self, input_ids, state=None, labels=None, use_cache=False):
        start = 0 if state is None else state
        positions = range(start + 1, start + input_ids.size(1) + 1)
        targets = torch.tensor([self.script[min(i, len(self.script) - 1)] for i in positions])
        logits = 50.0 * F.one_hot(targets, self.config.vocab_size).float()
        return LMOutput(logits=logits.expand(input_ids.size(0), -1, -1), state=start + input_ids.size(1))


class ByteTokenizer:
    """lmcore-style byte-level tokenizer: ids 0-255 are bytes, 256 is end-of-text."""

    eos_id = 256
    vocab_size = 257

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class WordTokenizer:
    """lmcore-style word-level tokenizer; decode joins words with spaces."""

    def __init__(self, words: list[str]) -> None:
        self.words = words + ["<eos>"]
        self.eos_id = len(words)
        self.vocab_size = len(self.words)

    def encode(self, text: str) -> list[int]:
        return [self.words.index(w) for w in text.split()]

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.words[i] for i in ids)


def tiny_gpt(vocab_size: int = 60, block_size: int = 32) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.from_name("tiny", vocab_size=vocab_size, block_size=block_size)).eval()


def tiny_hf_gpt2(vocab_size: int = 60, n_positions: int = 32) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=32, n_layer=2, n_head=2)
    return GPT2LMHeadModel(config).eval()


def with_large_weights(model: LanguageModel) -> LanguageModel:
    """Re-draw the weights from N(0, 0.5): small initial weights make greedy decoding repeat one token."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.5)
    return model.eval()


# ----------------------------------------------------------------------------- logits processors


def test_top_p_keeps_smallest_set_reaching_the_mass():
    probs = torch.tensor([0.1, 0.4, 0.05, 0.3, 0.15])  # sorted: 0.4, 0.3, 0.15, 0.1, 0.05
    logits = probs.log()
    for p, kept in [(0.3, {1}), (0.4 - 1e-4, {1}), (0.5, {1, 3}), (0.69, {1, 3}), (0.72, {1, 3, 4}),
                    (0.9, {1, 3, 4, 0}), (0.96, {0, 1, 2, 3, 4}), (1.0, {0, 1, 2, 3, 4})]:  # fmt: skip
        filtered = top_p_filter(logits, p)
        assert set(torch.isfinite(filtered).nonzero().flatten().tolist()) == kept, p
        assert torch.equal(filtered[list(kept)], logits[list(kept)])  # kept logits untouched


def test_top_p_stops_as_soon_as_the_mass_is_reached():
    logits = torch.zeros(4)  # probabilities exactly 0.25 each: the cumulative mass hits 0.5 exactly
    assert int(torch.isfinite(top_p_filter(logits, 0.5)).sum()) == 2
    assert int(torch.isfinite(top_p_filter(logits, 0.75)).sum()) == 3


def test_top_p_works_row_by_row():
    logits = torch.tensor([[0.0, 5.0, 0.0], [3.0, 0.0, 2.9]])
    kept = torch.isfinite(top_p_filter(logits, 0.6))
    assert kept.tolist() == [[False, True, False], [True, False, True]]


def test_top_k_keeps_k_highest():
    logits = torch.tensor([1.0, 4.0, 2.0, 3.0, 0.0])
    assert torch.isfinite(top_k_filter(logits, 2)).tolist() == [False, True, False, True, False]
    assert torch.equal(top_k_filter(logits, 0), logits)
    assert torch.equal(top_k_filter(logits, 5), logits)


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    logits = torch.tensor([2.0, -1.0, 0.5, 3.0])
    penalised = apply_repetition_penalty(logits, torch.tensor([0, 1, 0]), 2.0)
    assert penalised.tolist() == [1.0, -2.0, 0.5, 3.0]
    assert torch.equal(apply_repetition_penalty(logits, torch.tensor([0, 1]), 1.0), logits)


def test_next_token_probs_temperature():
    logits = torch.tensor([1.0, 2.0, 0.5])
    assert torch.allclose(next_token_probs(logits), logits.softmax(-1))
    assert torch.allclose(next_token_probs(logits, temperature=0.5), (2 * logits).softmax(-1))
    top1 = next_token_probs(logits, temperature=3.0, top_k=1)
    assert top1.tolist() == [0.0, 1.0, 0.0]


# ----------------------------------------------------------------------------- sampling


def chi_square(samples: list[int], probs: list[float]) -> float:
    counts = torch.bincount(torch.tensor(samples), minlength=len(probs)).double()
    expected = torch.tensor(probs, dtype=torch.double) * len(samples)
    return float(((counts - expected) ** 2 / expected).sum())


def test_sampling_with_top_p_one_and_temperature_one_follows_the_model_distribution():
    probs = [0.4, 0.3, 0.15, 0.1, 0.05]
    model = FixedDistributionLM(probs)
    samples = list(
        generate_tokens(model, [0], max_new_tokens=4000, do_sample=True, temperature=1.0, top_p=1.0, seed=0)
    )
    # The model ignores its context, so the 4000 tokens are independent draws from `probs`.
    # Chi-square with 4 degrees of freedom: P(> 25) < 1e-4 for a correct sampler.
    assert chi_square(samples, probs) < 25
    # The same bound rejects a sampler that is off by a little, e.g. temperature 0.8 instead of 1.
    sharper = torch.tensor(probs).pow(1 / 0.8)
    assert chi_square(samples, (sharper / sharper.sum()).tolist()) > 25


def test_top_k_one_equals_greedy():
    model = tiny_gpt()
    greedy = list(generate_tokens(model, [1, 2, 3], max_new_tokens=20))
    for seed in (0, 1):
        assert list(generate_tokens(model, [1, 2, 3], max_new_tokens=20, do_sample=True, top_k=1, seed=seed)) == greedy


def test_same_seed_same_text_different_seed_different_text():
    tokenizer = ByteTokenizer()
    model = FixedDistributionLM([1 / 257] * 257)
    texts = {seed: generate(model, tokenizer, "Once", max_new_tokens=20, do_sample=True, seed=seed, stop_at_eos=False)
             for seed in (0, 1)}  # fmt: skip
    again = generate(model, tokenizer, "Once", max_new_tokens=20, do_sample=True, seed=0, stop_at_eos=False)
    assert again.token_ids == texts[0].token_ids and again.text == texts[0].text
    assert texts[1].token_ids != texts[0].token_ids


def test_sampling_does_not_touch_the_global_random_state():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    list(generate_tokens(FixedDistributionLM([0.5, 0.5]), [0], max_new_tokens=10, do_sample=True, seed=5))
    assert torch.equal(torch.rand(3), expected)


# ----------------------------------------------------------------------------- cached vs uncached


@pytest.mark.parametrize("model_name", ["gpt", "hf-gpt2", "hf-llama", "rnn", "lstm"])
def test_cached_and_uncached_decoding_give_the_same_tokens(model_name):
    torch.manual_seed(0)
    model = {
        "gpt": lambda: tiny_gpt(),
        "hf-gpt2": lambda: HFCausalLM(tiny_hf_gpt2()),
        "hf-llama": lambda: HFCausalLM(LlamaForCausalLM(LlamaConfig(
            vocab_size=60, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64)).eval()),  # fmt: skip
        "rnn": lambda: with_large_weights(RNNLM(RNNConfig(vocab_size=60, hidden_size=32))),
        "lstm": lambda: with_large_weights(LSTMLM(LSTMConfig(vocab_size=60, hidden_size=32))),
    }[model_name]()
    prompt = [5, 17, 42, 8]
    cached = list(generate_tokens(model, prompt, max_new_tokens=25, use_cache=True))
    uncached = list(generate_tokens(model, prompt, max_new_tokens=25, use_cache=False))
    assert cached == uncached
    assert len(set(cached)) > 1  # not a degenerate constant output
    sampled = [list(generate_tokens(model, prompt, max_new_tokens=25, do_sample=True, seed=3, use_cache=use_cache))
               for use_cache in (True, False)]  # fmt: skip
    assert sampled[0] == sampled[1]


def test_hf_model_is_wrapped_on_the_fly():
    hf_model = tiny_hf_gpt2()
    assert list(generate_tokens(hf_model, [1, 2], max_new_tokens=5)) == list(
        generate_tokens(HFCausalLM(hf_model), [1, 2], max_new_tokens=5)
    )


# ----------------------------------------------------------------------------- text, eos, streaming


def test_stops_at_eos_and_leaves_it_out():
    tokenizer = WordTokenizer(["the", "cat", "sat", "down"])
    script = [0, 1, 2, 3, tokenizer.eos_id, 0, 1]
    model = ScriptedLM(script, tokenizer.vocab_size)
    result = generate(model, tokenizer, "the", max_new_tokens=10)
    assert result.token_ids == [1, 2, 3]
    assert result.text == " cat sat down"  # decoded after the prompt: keeps the joining space
    assert result.finish_reason == "eos"
    assert result.prompt_ids == [0]
    longer = generate(model, tokenizer, "the", max_new_tokens=5, stop_at_eos=False)
    assert longer.token_ids == [1, 2, 3, tokenizer.eos_id, 0]
    assert longer.finish_reason == "length"


def test_empty_prompt_starts_from_eos():
    tokenizer = WordTokenizer(["a", "b"])
    model = ScriptedLM([tokenizer.eos_id, 0, 1, 1], tokenizer.vocab_size)
    result = generate(model, tokenizer, "", max_new_tokens=3)
    assert result.prompt_ids == [tokenizer.eos_id]
    assert result.token_ids == [0, 1, 1]


def test_stream_pieces_concatenate_to_generated_text_without_broken_characters():
    tokenizer = ByteTokenizer()
    continuation = " wörld ✓ 日本語 🙂!"
    script = tokenizer.encode("Hi") + tokenizer.encode(continuation) + [tokenizer.eos_id]
    model = ScriptedLM(script, tokenizer.vocab_size)
    result = generate(model, tokenizer, "Hi", max_new_tokens=100)
    assert result.text == continuation and result.finish_reason == "eos"
    pieces = list(stream_generate(model, tokenizer, "Hi", max_new_tokens=100))
    assert "".join(pieces) == continuation
    assert len(pieces) > 5 and all("\ufffd" not in piece for piece in pieces)


def test_stream_flushes_an_unfinished_character_at_the_end():
    tokenizer = ByteTokenizer()
    script = tokenizer.encode("a") + list("é".encode("utf-8"))[:1] + [0x41]
    model = ScriptedLM(script, tokenizer.vocab_size)
    pieces = list(stream_generate(model, tokenizer, "a", max_new_tokens=1))
    assert "".join(pieces) == generate(model, tokenizer, "a", max_new_tokens=1).text == "\ufffd"


def test_stream_with_gpt2_tokenizer_matches_generate(gpt2_tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(str(gpt2_tokenizer_dir))
    model = tiny_hf_gpt2(vocab_size=tokenizer.vocab_size, n_positions=64)
    options = dict(max_new_tokens=40, do_sample=True, temperature=1.5, seed=7)
    result = generate(model, tokenizer, "The meaning of life is", **options)
    pieces = list(stream_generate(model, tokenizer, "The meaning of life is", **options))
    assert "".join(pieces) == result.text
    assert result.text == tokenizer.decode(result.token_ids)  # byte-level BPE decodes the same with or without prompt


def test_generation_restores_training_mode():
    model = tiny_gpt().train()
    list(generate_tokens(model, [1], max_new_tokens=3))
    assert model.training


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens must be at least 1"),
        ({"do_sample": True, "temperature": 0.0}, "temperature must be a positive number when sampling"),
        ({"do_sample": True, "temperature": -1.0}, "temperature must be a positive number when sampling"),
        ({"top_k": -1}, r"top_k must be >= 0 \(0 = no top-k filtering\)"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
        ({"repetition_penalty": 0.0}, "repetition_penalty must be a positive number"),
    ],
)
def test_bad_settings_raise_value_error(options, message):
    options = {"max_new_tokens": 5, **options}
    with pytest.raises(ValueError, match=message):
        generate_tokens(tiny_gpt(), [1, 2], **options)  # checked on the call, before iterating
    with pytest.raises(ValueError, match=message):
        stream_generate(tiny_gpt(), ByteTokenizer(), "x", **options)


def test_greedy_ignores_temperature():
    model = tiny_gpt()
    assert list(generate_tokens(model, [1], max_new_tokens=4, temperature=0.0)) == list(
        generate_tokens(model, [1], max_new_tokens=4)
    )


def test_prompt_and_new_tokens_must_fit_the_context_window():
    model = tiny_gpt(block_size=16)
    with pytest.raises(ValueError, match="prompt is 17 tokens, longer than the model's context window of 16"):
        generate_tokens(model, [1] * 17, max_new_tokens=1)
    with pytest.raises(ValueError, match="room for at most 7 new tokens in the model's context window of 16"):
        generate_tokens(model, [1] * 10, max_new_tokens=8)
    # The last new token is predicted from the full window, never fed back: 10 + 7 - 1 = 16 fits.
    for use_cache in (True, False):
        assert len(list(generate_tokens(model, [1] * 10, max_new_tokens=7, use_cache=use_cache))) == 7
    assert len(list(generate_tokens(model, [1] * 16, max_new_tokens=1))) == 1


def test_bad_prompts():
    with pytest.raises(ValueError, match=r"prompt token ids must be in \[0, 60\)"):
        generate_tokens(tiny_gpt(), [60], max_new_tokens=1)
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        generate_tokens(tiny_gpt(), [], max_new_tokens=1)

    class NoEosTokenizer(ByteTokenizer):
        eos_id = None

    with pytest.raises(ValueError, match="no end-of-text token"):
        generate(tiny_gpt(vocab_size=257), NoEosTokenizer(), "", max_new_tokens=1)


def test_recurrent_models_have_no_length_limit():
    model = LSTMLM(LSTMConfig(vocab_size=20, hidden_size=8, num_layers=1)).eval()
    assert model.max_context is None
    assert len(list(generate_tokens(model, [1] * 300, max_new_tokens=300))) == 300


# ----------------------------------------------------------------------------- lmcore tokenizers


def test_word_level_continuation_decodes_after_the_prompt():
    tokenizer = LmcoreWordTokenizer.train("the cat sat on the mat\nthe dog sat on a log\n")
    model = with_large_weights(LSTMLM(LSTMConfig(vocab_size=tokenizer.vocab_size, hidden_size=16)))
    options = dict(max_new_tokens=15, do_sample=True, seed=1, stop_at_eos=False)
    result = generate(model, tokenizer, "the cat", **options)
    # Prompt text + continuation = the decoded whole: words stay separated by spaces.
    assert tokenizer.decode(result.prompt_ids + result.token_ids) == "the cat" + result.text
    assert "".join(stream_generate(model, tokenizer, "the cat", **options)) == result.text


def test_stream_with_lmcore_gpt2_tokenizer_matches_generate(gpt2_tokenizer_dir):
    tokenizer = HFTokenizer.from_pretrained(gpt2_tokenizer_dir)
    model = HFCausalLM(tiny_hf_gpt2(vocab_size=tokenizer.vocab_size, n_positions=64))
    options = dict(max_new_tokens=40, do_sample=True, temperature=1.5, seed=8)
    result = generate(model, tokenizer, "Über", **options)
    assert "".join(stream_generate(model, tokenizer, "Über", **options)) == result.text
    assert result.prompt_ids == tokenizer.encode("Über")
