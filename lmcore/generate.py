"""Text generation for lmcore and Hugging Face models, one token at a time.

Three entry points share one decoding loop:

- :func:`generate` returns the continuation of a prompt (text and token ids);
- :func:`stream_generate` yields it as text pieces while tokens arrive (for a UI);
- :func:`generate_tokens` works on token ids, without a tokenizer.

Each step picks the next token from the last position's logits: greedy (argmax)
or sampled after the logits processors below, in this order: repetition
penalty, temperature, top-k, top-p. Sampling draws from a dedicated
``torch.Generator`` seeded with ``seed``, so one seed always gives one text.

Only the new token is fed to the model after the prompt: recurrent models carry
their hidden state, models with a KV cache (``supports_cache``) carry the cache.
``use_cache=False`` re-runs the whole sequence every step instead (same tokens,
slower; for benchmarks and equivalence tests).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from transformers import PreTrainedModel

from lmcore.models.base import LanguageModel
from lmcore.models.hf import as_language_model, tokenizer_encode, tokenizer_eos_id

# ----------------------------------------------------------------------------- logits processors
# Each takes next-token logits of shape (..., V) and returns new logits of that shape.


def apply_repetition_penalty(logits: torch.Tensor, previous_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty (Keskar et al., 2019): make tokens already in the sequence less likely.

    The logit of every token in ``previous_ids`` (shape (..., N)) is divided by ``penalty``
    when positive and multiplied by it when negative. ``penalty=1`` changes nothing.
    """
    if penalty == 1.0 or previous_ids.numel() == 0:
        return logits
    seen = logits.gather(-1, previous_ids)  # (..., N)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(-1, previous_ids, seen)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` highest logits (and any tied with the k-th), set the rest to -inf; ``k=0`` keeps all."""
    if k == 0 or k >= logits.size(-1):
        return logits
    kth_highest = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth_highest, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering (Holtzman et al., 2020): keep the smallest set of most likely tokens whose
    probability mass is at least ``p``; set the rest to -inf. ``p=1`` keeps all."""
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (..., V)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # mass of the more likely tokens; 0 for the most likely
    drop_sorted = mass_before >= p  # already enough mass without this token
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def next_token_probs(
    logits: torch.Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> torch.Tensor:
    """The sampling distribution (..., V) for next-token logits (..., V): temperature, then top-k, then top-p."""
    logits = logits.float() / temperature
    logits = top_k_filter(logits, top_k)
    logits = top_p_filter(logits, top_p)
    return logits.softmax(dim=-1)


# ----------------------------------------------------------------------------- decoding loop


@dataclass
class GenerationOutput:
    """What :func:`generate` returns."""

    text: str  # the continuation, without the prompt and without a final end-of-text token
    token_ids: list[int]  # the generated ids (no end-of-text token when generation stopped there)
    prompt_ids: list[int]  # the ids the model was conditioned on ([eos] for an empty prompt)
    finish_reason: Literal["eos", "length"]  # stopped at the end-of-text token, or after max_new_tokens


def generate_tokens(
    model: LanguageModel | PreTrainedModel,
    prompt_ids: Sequence[int],
    *,
    max_new_tokens: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    seed: int | None = None,
    eos_id: int | None = None,
    use_cache: bool = True,
) -> Iterator[int]:
    """Yield up to ``max_new_tokens`` new token ids continuing ``prompt_ids``.

    do_sample: sample (with temperature, top_k, top_p) or pick the most likely token (greedy;
        temperature, top_k and top_p are then unused).
    temperature: > 0; below 1 sharpens the distribution, above 1 flattens it.
    top_k: sample among the k most likely tokens; 0 = no limit.
    top_p: sample among the most likely tokens holding at least this probability mass, in (0, 1].
    repetition_penalty: > 0; above 1 discourages tokens already in the sequence; 1 = off.
    seed: seeds the sampler's own torch.Generator (None: a random seed).
    eos_id: stop (without yielding it) when this token is chosen; None never stops early.
    use_cache: feed only the new token each step, carrying the model's state or KV cache.

    Raises ValueError for settings outside those ranges, and when the prompt and the new
    tokens do not fit a fixed-context model's window. Arguments are checked on the call,
    before the first token is asked for.
    """
    model = as_language_model(model)
    prompt_ids = [int(token) for token in prompt_ids]
    _check_settings(model, prompt_ids, max_new_tokens, do_sample, temperature, top_k, top_p, repetition_penalty)
    device = model.device
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)

    def pick(logits: torch.Tensor, sequence: torch.Tensor) -> int:
        """logits: (V,) for the next position; sequence: (T,) all ids so far."""
        logits = apply_repetition_penalty(logits.float(), sequence, repetition_penalty)
        if not do_sample:
            return int(logits.argmax())
        probs = next_token_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p)
        return int(torch.multinomial(probs, 1, generator=generator))

    return _decode_loop(model, prompt_ids, max_new_tokens, pick, eos_id, use_cache, device)


def _check_settings(
    model: LanguageModel,
    prompt_ids: list[int],
    max_new_tokens: int,
    do_sample: bool,
    temperature: float,
    top_k: int,
    top_p: float,
    repetition_penalty: float,
) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if do_sample and not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(
            f"temperature must be a positive number when sampling (use do_sample=False for greedy), got {temperature}"
        )
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = no top-k filtering), got {top_k}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (1 = no nucleus filtering), got {top_p}")
    if not (repetition_penalty > 0 and math.isfinite(repetition_penalty)):
        raise ValueError(f"repetition_penalty must be a positive number (1 = off), got {repetition_penalty}")
    if not prompt_ids:
        raise ValueError("prompt_ids is empty: start from at least one token (e.g. the end-of-text id)")
    vocab_size = model.config.vocab_size
    if min(prompt_ids) < 0 or max(prompt_ids) >= vocab_size:
        raise ValueError(f"prompt token ids must be in [0, {vocab_size}) (the model's vocab_size)")
    window = model.max_context
    if window is not None:
        if len(prompt_ids) > window:
            raise ValueError(
                f"the prompt is {len(prompt_ids)} tokens, longer than the model's context window of {window} tokens"
            )
        # The last new token is only predicted, never fed back: m new tokens need a context of n + m - 1.
        most_new_tokens = window - len(prompt_ids) + 1
        if max_new_tokens > most_new_tokens:
            raise ValueError(
                f"a {len(prompt_ids)}-token prompt leaves room for at most {most_new_tokens} new tokens in the "
                f"model's context window of {window} tokens; got max_new_tokens={max_new_tokens}"
            )



@torch.inference_mode()
def _decode_loop(
    model: LanguageModel,
    prompt_ids: list[int],
    max_new_tokens: int,
    pick: Callable[[torch.Tensor, torch.Tensor], int],
    eos_id: int | None,
    use_cache: bool,
    device: torch.device,
) -> Iterator[int]:
    """Run the model over the prompt, then pick and feed back one token at a time."""
    incremental = use_cache and (model.is_recurrent or model.supports_cache)
    sequence = torch.tensor(prompt_ids, dtype=torch.long, device=device)  # (T,) every id so far
    was_training = model.training
    model.eval()
    try:
        output = model(sequence[None], use_cache=incremental and model.supports_cache)
        for step in range(max_new_tokens):
            next_id = pick(output.logits[0, -1], sequence)
            if next_id == eos_id:
                return
            yield next_id
            if step == max_new_tokens - 1:
                return
            sequence = torch.cat([sequence, sequence.new_tensor([next_id])])
            if incremental:  # feed only the new token, with the hidden state or KV cache
                output = model(sequence[None, -1:], state=output.state, use_cache=model.supports_cache)
            else:  # re-read the whole sequence
                output = model(sequence[None])
    finally:
        model.train(was_training)


# ----------------------------------------------------------------------------- text in, text out


def _prompt_ids(tokenizer: Any, prompt: str) -> tuple[list[int], int | None]:
    """The prompt's ids ([eos] for an empty prompt) and the tokenizer's end-of-text id."""
    eos_id = tokenizer_eos_id(tokenizer)
    prompt_ids = tokenizer_encode(tokenizer, prompt) if prompt else []
    if not prompt_ids:
        if eos_id is None:
            raise ValueError("the prompt is empty and the tokenizer has no end-of-text token to start from")
        prompt_ids = [eos_id]
    return prompt_ids, eos_id


class _ContinuationDecoder:
    """Decodes generated ids as the continuation of the prompt ids.

    Decoding them after the prompt keeps what a tokenizer derives from the preceding
    token (the space between words of a word-level vocabulary, a leading-space marker).
    """

    def __init__(self, tokenizer: Any, prompt_ids: list[int]) -> None:
        self.tokenizer = tokenizer
        self.prompt_ids = prompt_ids
        self.prompt_text = tokenizer.decode(prompt_ids)

    def decode(self, new_ids: list[int]) -> str:
        text = self.tokenizer.decode(self.prompt_ids + new_ids)
        if text.startswith(self.prompt_text):
            return text[len(self.prompt_text) :]
        return self.tokenizer.decode(new_ids)


def generate(
    model: LanguageModel | PreTrainedModel,
    tokenizer: Any,
    prompt: str,
    *,
    max_new_tokens: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    seed: int | None = None,
    stop_at_eos: bool = True,
    use_cache: bool = True,
) -> GenerationOutput:
    """Continue ``prompt`` with up to ``max_new_tokens`` tokens; see :func:`generate_tokens` for the settings.

    tokenizer: an lmcore tokenizer (``encode``, ``decode``, ``eos_id``) or a Hugging Face one.
    prompt: text to continue; an empty prompt starts from the end-of-text token.
    stop_at_eos: stop when the model produces the end-of-text token (it is left out of the output).
    """
    prompt_ids, eos_id = _prompt_ids(tokenizer, prompt)
    new_ids = list(
        generate_tokens(
            model, prompt_ids, max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
            top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty, seed=seed,
            eos_id=eos_id if stop_at_eos else None, use_cache=use_cache,
        )
    )  # fmt: skip
    return GenerationOutput(
        text=_ContinuationDecoder(tokenizer, prompt_ids).decode(new_ids),
        token_ids=new_ids,
        prompt_ids=prompt_ids,
        finish_reason="length" if len(new_ids) == max_new_tokens else "eos",
    )


def stream_generate(
    model: LanguageModel | PreTrainedModel,
    tokenizer: Any,
    prompt: str,
    *,
    max_new_tokens: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    seed: int | None = None,
    stop_at_eos: bool = True,
    use_cache: bool = True,
) -> Iterator[str]:
    """Like :func:`generate`, but yield the continuation's text in pieces as tokens arrive.

    The pieces concatenate to ``generate(...).text`` (same arguments and seed). A token that
    ends inside a multi-byte character (byte-level BPE) is held back until the character is
    complete, so no piece carries a half character. Settings are checked on the call.
    """
    prompt_ids, eos_id = _prompt_ids(tokenizer, prompt)
    tokens = generate_tokens(
        model, prompt_ids, max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
        top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty, seed=seed,
        eos_id=eos_id if stop_at_eos else None, use_cache=use_cache,
    )  # fmt: skip
    return _text_pieces(_ContinuationDecoder(tokenizer, prompt_ids), tokens)


def _text_pieces(decoder: _ContinuationDecoder, tokens: Iterator[int]) -> Iterator[str]:
    """Yield the growth of the decoded text after each token; flush what is held back at the end."""
    new_ids: list[int] = []
    emitted = ""
    for token in tokens:
        new_ids.append(token)
        text = decoder.decode(new_ids)
        # U+FFFD at the end: the last token stopped inside a multi-byte character; wait for the rest.
        if not text.endswith("\ufffd") and text.startswith(emitted) and len(text) > len(emitted):
            yield text[len(emitted) :]
            emitted = text
    text = decoder.decode(new_ids)
    if text.startswith(emitted) and len(text) > len(emitted):
        yield text[len(emitted) :]
