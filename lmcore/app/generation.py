"""Prompt comparison: one prompt, several models side by side, streamed.

:func:`check_decoding` validates the page's decoding controls (capping, with a message,
what is too large); :func:`stream_side_by_side` runs every chosen model in its own thread
(:func:`lmcore.generate.stream_generate`) and yields a snapshot of all outputs whenever
one of them grows, so a fast model's text shows while a slow one is still loading.
Closing the generator (Gradio's Stop button cancels it) stops every thread after its
current token. :func:`token_probabilities` and :func:`render_outputs` colour each token by
the probability the model gives it.
"""

from __future__ import annotations

import dataclasses
import html
import math
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lmcore.app.registry import ModelRegistry, ModelUnavailable
from lmcore.generate import stream_generate
from lmcore.models.hf import as_language_model, tokenizer_encode, tokenizer_eos_id

STRATEGIES = ("greedy", "sample")
MAX_PROMPT_CHARS = 4000
MAX_MODELS = 6


@dataclass
class Decoding:
    """Checked decoding settings."""

    do_sample: bool
    temperature: float
    top_k: int
    top_p: float
    max_new_tokens: int
    seed: int | None

    def as_kwargs(self) -> dict[str, Any]:
        return {
            "do_sample": self.do_sample, "temperature": self.temperature, "top_k": self.top_k,
            "top_p": self.top_p, "max_new_tokens": self.max_new_tokens, "seed": self.seed,
        }  # fmt: skip


def check_decoding(
    strategy: str,
    temperature: float,
    top_k: float,
    top_p: float,
    max_new_tokens: float,
    seed: float | None,
    *,
    cap: int,
) -> tuple[Decoding, list[str]]:
    """Checked settings and the notes to show (e.g. max new tokens capped); ValueError with what is allowed."""
    notes: list[str] = []
    if strategy not in STRATEGIES:
        raise ValueError(f"decoding must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    numbers = {"temperature": temperature, "top-k": top_k, "top-p": top_p, "max new tokens": max_new_tokens}
    for name, value in numbers.items():
        if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a number, got {value!r}")
    do_sample = strategy == "sample"
    if do_sample and temperature <= 0:
        raise ValueError(f"temperature must be above 0 when sampling (choose greedy for the most likely token), got {temperature}")
    if top_k < 0 or int(top_k) != top_k:
        raise ValueError(f"top-k must be a whole number >= 0 (0 = off), got {top_k}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top-p must be in (0, 1] (1 = off), got {top_p}")
    if max_new_tokens < 1 or int(max_new_tokens) != max_new_tokens:
        raise ValueError(f"max new tokens must be a whole number >= 1, got {max_new_tokens}")
    new_tokens = int(max_new_tokens)
    if new_tokens > cap:
        notes.append(f"Max new tokens capped at {cap} (asked for {new_tokens}).")
        new_tokens = cap
    if seed is not None and (not isinstance(seed, (int, float)) or not math.isfinite(seed) or int(seed) != seed):
        raise ValueError(f"seed must be a whole number (or empty for a random one), got {seed!r}")
    decoding = Decoding(
        do_sample=do_sample,
        temperature=float(temperature) if do_sample else 1.0,
        top_k=int(top_k) if do_sample else 0,
        top_p=float(top_p) if do_sample else 1.0,
        max_new_tokens=new_tokens,
        seed=int(seed) if seed is not None else None,
    )
    return decoding, notes


def check_prompt(prompt: str | None) -> tuple[str, list[str]]:
    """The prompt to use and notes; ValueError for an empty one. Over-long prompts keep their end."""
    if prompt is None or not prompt.strip():
        raise ValueError("The prompt is empty: type a few words for the models to continue.")
    notes = []
    if len(prompt) > MAX_PROMPT_CHARS:
        notes.append(f"The prompt was cut to its last {MAX_PROMPT_CHARS:,} characters (it had {len(prompt):,}).")
        prompt = prompt[-MAX_PROMPT_CHARS:]
    return prompt, notes


def check_models(registry: ModelRegistry, names: Sequence[str] | None) -> list[str]:
    """The chosen model names, checked against the registry; ValueError when none or unknown."""
    names = [name for name in (names or []) if name]
    if not names:
        raise ValueError("Choose at least one model.")
    if len(names) > MAX_MODELS:
        raise ValueError(f"Choose at most {MAX_MODELS} models at once (got {len(names)}).")
    for name in names:
        registry.spec(name)  # ValueError for a name that is not in the list
    return list(dict.fromkeys(names))


@dataclass
class ModelOutput:
    """One model's card in the comparison."""

    name: str
    state: str = "waiting"  # waiting | loading | generating | done | stopped | unavailable | error
    text: str = ""
    note: str = ""  # e.g. "capped at 48 new tokens by the 64-token context"
    first_token_s: float | None = None  # seconds from the request to the first text piece
    seconds: float | None = None
    num_pieces: int = 0
    token_probs: list[tuple[str, float]] | None = None  # (token text, probability) when colouring is on
    description: str = ""


@dataclass
class _Event:
    name: str
    kind: str  # state | piece | note | probs | error
    value: Any = None


def fitting_new_tokens(model: Any, tokenizer: Any, prompt: str, wanted: int) -> tuple[int, str]:
    """``wanted`` or fewer so that a fixed-context model's window holds prompt + new tokens; (tokens, note).

    ValueError when the prompt alone does not fit.
    """
    window = as_language_model(model).max_context
    if window is None:
        return wanted, ""
    prompt_tokens = max(1, len(tokenizer_encode(tokenizer, prompt)))
    room = window - prompt_tokens + 1
    if room < 1:
        raise ValueError(f"the prompt is {prompt_tokens} tokens; this model reads at most {window}")
    if wanted > room:
        return room, f"capped at {room} new tokens by its {window}-token context"
    return wanted, ""


def _run_one(
    registry: ModelRegistry,
    name: str,
    prompt: str,
    decoding: Decoding,
    colour: bool,
    events: queue.Queue,
    stop: threading.Event,
) -> None:
    """Load one model and stream its continuation into ``events`` (a thread's body)."""
    try:
        events.put(_Event(name, "state", "loading"))
        loaded = registry.get(name)
        new_tokens, note = fitting_new_tokens(loaded.model, loaded.tokenizer, prompt, decoding.max_new_tokens)
        if note:
            events.put(_Event(name, "note", note))
        settings = {**decoding.as_kwargs(), "max_new_tokens": new_tokens}
        events.put(_Event(name, "state", "generating"))
        pieces = []
        with torch.inference_mode():
            for piece in stream_generate(loaded.model, loaded.tokenizer, prompt, **settings):
                if stop.is_set():
                    events.put(_Event(name, "state", "stopped"))
                    return
                pieces.append(piece)
                events.put(_Event(name, "piece", piece))
        if colour and pieces and not stop.is_set():
            events.put(_Event(name, "probs", token_probabilities(loaded.model, loaded.tokenizer, prompt, "".join(pieces))))
        events.put(_Event(name, "state", "done"))
    except ModelUnavailable as error:
        events.put(_Event(name, "error", ("unavailable", str(error))))
    except Exception as error:  # shown on the model's card; the other models go on
        events.put(_Event(name, "error", ("error", f"{type(error).__name__}: {error}" if not isinstance(error, ValueError) else str(error))))


def stream_side_by_side(
    registry: ModelRegistry,
    names: Sequence[str],
    prompt: str,
    decoding: Decoding,
    *,
    colour: bool = False,
    poll_seconds: float = 0.05,
) -> Iterator[list[ModelOutput]]:
    """Yield a snapshot (copies) of every model's :class:`ModelOutput` each time one changes, until all are finished.

    Each model runs in a thread of its own; closing this generator stops them after their current token.
    """
    start = time.perf_counter()
    outputs = {name: ModelOutput(name=name, description=registry.spec(name).description) for name in names}
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    threads = [
        threading.Thread(target=_run_one, args=(registry, name, prompt, decoding, colour, events, stop), daemon=True,
                         name=f"generate-{name}")
        for name in names
    ]
    for thread in threads:
        thread.start()
    finished = {"done", "stopped", "unavailable", "error"}

    def snapshot() -> list[ModelOutput]:
        return [dataclasses.replace(output) for output in outputs.values()]

    try:
        yield snapshot()
        while any(output.state not in finished for output in outputs.values()):
            try:
                batch = [events.get(timeout=poll_seconds * 4)]
            except queue.Empty:
                if not any(thread.is_alive() for thread in threads) and events.empty():
                    break
                continue
            while True:  # everything that arrived meanwhile goes into one snapshot
                try:
                    batch.append(events.get_nowait())
                except queue.Empty:
                    break
            for event in batch:
                _apply(outputs[event.name], event, time.perf_counter() - start)
            yield snapshot()
    finally:
        stop.set()


def _apply(output: ModelOutput, event: _Event, elapsed: float) -> None:
    if event.kind == "state":
        output.state = event.value
        if event.value in ("done", "stopped"):
            output.seconds = elapsed
    elif event.kind == "piece":
        if output.first_token_s is None:
            output.first_token_s = elapsed
        output.text += event.value
        output.num_pieces += 1
    elif event.kind == "note":
        output.note = event.value
    elif event.kind == "probs":
        output.token_probs = event.value
    elif event.kind == "error":
        output.state, output.note = event.value
        output.seconds = elapsed


# ----------------------------------------------------------------------------- token probabilities


@torch.inference_mode()
def token_probabilities(model: Any, tokenizer: Any, prompt: str, continuation: str) -> list[tuple[str, float]]:
    """Each token of ``continuation`` (tokenized after ``prompt``) with its probability under the model.

    The text is the one shown; it is re-tokenized, so the tokens are the model's reading of
    the text (for byte-level BPE almost always the tokens it generated). Probabilities are
    the model's own distribution (temperature 1, no top-k/top-p). Returns (text piece, p)
    pairs whose pieces concatenate to ``continuation`` (up to the tokenizer's normalization).
    """
    lm = as_language_model(model)
    prompt_ids = tokenizer_encode(tokenizer, prompt) if prompt else []
    if not prompt_ids:
        eos = tokenizer_eos_id(tokenizer)
        prompt_ids = [eos] if eos is not None else []
    full_ids = tokenizer_encode(tokenizer, prompt + continuation)
    # Keep the prompt's tokens as the model saw them when they are a prefix of the full text's tokens.
    if full_ids[: len(prompt_ids)] == prompt_ids:
        new_ids = full_ids[len(prompt_ids) :]
    else:
        new_ids = tokenizer_encode(tokenizer, continuation)
    if not new_ids or not prompt_ids:
        return []
    ids = prompt_ids + new_ids
    window = lm.max_context
    if window is not None and len(ids) - 1 > window:
        ids = ids[-(window + 1) :]
    device = next(lm.parameters()).device
    was_training = lm.training
    lm.eval()
    try:
        logits = lm(torch.tensor([ids[:-1]], device=device)).logits[0]  # (T - 1, V)
    finally:
        lm.train(was_training)
    probs = logits.float().softmax(dim=-1)
    targets = torch.tensor(ids[1:], device=device)
    chosen = probs.gather(1, targets[:, None])[:, 0].tolist()[-len(new_ids) :]
    pieces, previous = [], tokenizer.decode(prompt_ids)
    for index in range(len(new_ids)):
        text = tokenizer.decode(prompt_ids + new_ids[: index + 1])
        piece = text[len(previous) :] if text.startswith(previous) else tokenizer.decode([new_ids[index]])
        pieces.append(piece)
        previous = text
    return list(zip(pieces, chosen))


# ----------------------------------------------------------------------------- HTML cards

STATE_LABELS = {
    "waiting": "waiting", "loading": "loading…", "generating": "generating…", "done": "done",
    "stopped": "stopped", "unavailable": "unavailable", "error": "error",
}  # fmt: skip


def probability_colour(probability: float) -> str:
    """A background colour from red (unlikely) through amber to green (likely), on a log scale of p."""
    p = min(max(probability, 1e-4), 1.0)
    position = 1.0 + math.log10(p) / 4.0  # 1e-4 -> 0, 1 -> 1
    hue = 120.0 * position
    return f"hsl({hue:.0f}, 75%, 84%)"


def _card_text(output: ModelOutput, prompt: str) -> str:
    prompt_html = f'<span class="lm-prompt">{html.escape(prompt)}</span>'
    if output.token_probs:
        tokens = "".join(
            f'<span class="lm-token" style="background:{probability_colour(p)}" title="p = {p:.3g}">{html.escape(piece)}</span>'
            for piece, p in output.token_probs
        )
        return prompt_html + tokens
    cursor = '<span class="lm-cursor">▍</span>' if output.state == "generating" else ""
    return prompt_html + f'<span class="lm-generated">{html.escape(output.text)}</span>' + cursor


def render_outputs(outputs: Sequence[ModelOutput], prompt: str) -> str:
    """The comparison as HTML: one card per model, with its state, timing and (optionally coloured) text."""
    if not outputs:
        return '<div class="lm-empty">Choose models, type a prompt and press Generate.</div>'
    cards = []
    for output in outputs:
        state = STATE_LABELS.get(output.state, output.state)
        facts = []
        if output.first_token_s is not None:
            facts.append(f"first text after {output.first_token_s:.2f} s")
        if output.seconds is not None and output.state == "done":
            facts.append(f"{output.seconds:.1f} s in all")
        if output.note and output.state not in ("unavailable", "error"):
            facts.append(output.note)
        if output.state in ("unavailable", "error"):
            body = f'<div class="lm-error">{html.escape(state)}: {html.escape(output.note)}</div>'
        else:
            body = f'<div class="lm-text">{_card_text(output, prompt)}</div>'
        cards.append(
            f'<div class="lm-card lm-state-{html.escape(output.state)}" data-model="{html.escape(output.name)}">'
            f'<div class="lm-card-head"><span class="lm-name">{html.escape(output.name)}</span>'
            f'<span class="lm-badge">{html.escape(state)}</span></div>'
            f'<div class="lm-desc">{html.escape(output.description)}</div>'
            f"{body}"
            f'<div class="lm-facts">{html.escape(" · ".join(facts))}</div></div>'
        )
    legend = ""
    if any(output.token_probs for output in outputs):
        stops = "".join(
            f'<span class="lm-token" style="background:{probability_colour(p)}">p={p:g}</span>'
            for p in (0.0001, 0.001, 0.01, 0.1, 1.0)
        )
        legend = f'<div class="lm-legend">Token probability under the model (hover a token for its value): {stops}</div>'
    return f'<div class="lm-grid">{"".join(cards)}</div>{legend}'


def outputs_as_dict(outputs: Sequence[ModelOutput]) -> dict[str, dict[str, Any]]:
    """The comparison as JSON for the API: model -> state, text, note, timing."""
    return {
        output.name: {
            "state": output.state, "text": output.text, "note": output.note,
            "first_token_s": output.first_token_s, "seconds": output.seconds,
        }  # fmt: skip
        for output in outputs
    }


@dataclass
class GenerationRequest:
    """Everything one press of Generate asks for, checked."""

    names: list[str]
    prompt: str
    decoding: Decoding
    colour: bool
    notes: list[str] = field(default_factory=list)


def prepare_request(
    registry: ModelRegistry,
    names: Sequence[str] | None,
    prompt: str | None,
    strategy: str,
    temperature: float,
    top_k: float,
    top_p: float,
    max_new_tokens: float,
    seed: float | None,
    colour: bool,
    *,
    cap: int,
) -> GenerationRequest:
    """Check every input of the Prompt comparison tab; ValueError with a message for the page."""
    prompt, prompt_notes = check_prompt(prompt)
    names = check_models(registry, names)
    decoding, notes = check_decoding(strategy, temperature, top_k, top_p, max_new_tokens, seed, cap=cap)
    return GenerationRequest(names=names, prompt=prompt, decoding=decoding, colour=bool(colour),
                             notes=prompt_notes + notes)
