"""Prompt comparison: input checks, side-by-side streaming, cancellation, token probabilities, HTML."""

from __future__ import annotations

import math
import threading
import time

import pytest
import torch
from app_fixtures import tiny_run

from lmcore.app.generation import (
    Decoding,
    ModelOutput,
    check_decoding,
    fitting_new_tokens,
    prepare_request,
    render_outputs,
    stream_side_by_side,
    token_probabilities,
)
from lmcore.app.registry import ModelRegistry, pretrained_spec, run_spec
from lmcore.data import load_tokenizer
from lmcore.generate import generate
from lmcore.models import load_model
from lmcore.runs import read_run


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    return ModelRegistry([run_spec(read_run(tiny_run("lstm"))), run_spec(read_run(tiny_run("gpt")))])


def final(stream) -> list[ModelOutput]:
    outputs = None
    for outputs in stream:
        pass
    return outputs


def test_decoding_settings_are_checked_and_capped_with_a_message() -> None:
    decoding, notes = check_decoding("sample", 0.7, 40, 0.9, 999, 3, cap=64)
    assert decoding == Decoding(do_sample=True, temperature=0.7, top_k=40, top_p=0.9, max_new_tokens=64, seed=3)
    assert notes == ["Max new tokens capped at 64 (asked for 999)."]
    greedy, notes = check_decoding("greedy", 0.0, 40, 0.5, 10, None, cap=64)
    assert (greedy.do_sample, greedy.top_k, greedy.top_p, greedy.seed, notes) == (False, 0, 1.0, None, [])
    for args, message in [
        (("beam", 1.0, 0, 1.0, 10, 0), "decoding must be one of greedy, sample"),
        (("sample", 0.0, 0, 1.0, 10, 0), "temperature must be above 0"),
        (("sample", 1.0, -1, 1.0, 10, 0), "top-k must be a whole number"),
        (("sample", 1.0, 0, 1.5, 10, 0), r"top-p must be in \(0, 1\]"),
        (("sample", 1.0, 0, 1.0, 0, 0), "max new tokens must be a whole number >= 1"),
        (("sample", 1.0, 0, 1.0, float("nan"), 0), "max new tokens must be a number"),
        (("sample", 1.0, 0, 1.0, 5, 1.5), "seed must be a whole number"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_decoding(*args, cap=64)


def test_empty_prompt_no_model_and_unknown_model_are_refused(registry: ModelRegistry) -> None:
    args = ("greedy", 1.0, 0, 1.0, 5, 0, False)
    with pytest.raises(ValueError, match="The prompt is empty"):
        prepare_request(registry, ["toy-lstm"], "   ", *args, cap=10)
    with pytest.raises(ValueError, match="Choose at least one model"):
        prepare_request(registry, [], "the cat", *args, cap=10)
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        prepare_request(registry, ["nope"], "the cat", *args, cap=10)
    request = prepare_request(registry, ["toy-lstm", "toy-lstm"], "x" * 5000 + " the cat", *args, cap=10)
    assert request.names == ["toy-lstm"] and request.prompt.endswith("the cat") and len(request.prompt) == 4000
    assert "cut to its last 4,000 characters" in request.notes[0]


def test_side_by_side_streams_give_the_same_text_as_generate(registry: ModelRegistry) -> None:
    decoding = Decoding(do_sample=True, temperature=1.0, top_k=0, top_p=0.9, max_new_tokens=10, seed=7)
    snapshots = list(stream_side_by_side(registry, ["toy-lstm", "toy-gpt"], "the cat", decoding))
    outputs = {output.name: output for output in snapshots[-1]}
    assert snapshots[0][0].state in ("waiting", "loading")
    for name in ("toy-lstm", "toy-gpt"):
        loaded = registry.get(name)
        window_new, _ = fitting_new_tokens(loaded.model, loaded.tokenizer, "the cat", 10)
        expected = generate(loaded.model, loaded.tokenizer, "the cat", max_new_tokens=window_new, do_sample=True,
                            top_p=0.9, seed=7).text
        assert outputs[name].state == "done" and outputs[name].text == expected
        assert outputs[name].first_token_s is not None or expected == ""
    # Texts grow piece by piece across snapshots.
    lengths = [len({o.name: o for o in snapshot}["toy-gpt"].text) for snapshot in snapshots]
    assert lengths == sorted(lengths)


def test_a_fixed_context_model_gets_fewer_new_tokens_with_a_note(registry: ModelRegistry) -> None:
    loaded = registry.get("toy-gpt")  # block_size 16
    assert fitting_new_tokens(loaded.model, loaded.tokenizer, "the cat", 100) == (15, "capped at 15 new tokens by its 16-token context")
    with pytest.raises(ValueError, match="the prompt is 20 tokens; this model reads at most 16"):
        fitting_new_tokens(loaded.model, loaded.tokenizer, " ".join(["the"] * 20), 5)
    lstm = registry.get("toy-lstm")
    assert fitting_new_tokens(lstm.model, lstm.tokenizer, "the cat", 100) == (100, "")


def test_an_unavailable_model_shows_its_reason_while_the_others_finish(registry: ModelRegistry, tmp_path) -> None:
    registry.add(pretrained_spec(str(tmp_path / "missing")))
    decoding = Decoding(do_sample=False, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=4, seed=0)
    outputs = {o.name: o for o in final(stream_side_by_side(registry, ["toy-lstm", str(tmp_path / "missing")], "a dog", decoding))}
    assert outputs["toy-lstm"].state == "done"
    missing = outputs[str(tmp_path / "missing")]
    assert missing.state == "unavailable" and "could not load pretrained model" in missing.note
    assert "unavailable: OSError: could not load pretrained model" in render_outputs(list(outputs.values()), "a dog")


def test_closing_the_stream_stops_generation() -> None:
    """The Stop button cancels the request, which closes the generator: every model thread ends."""
    run = read_run(tiny_run("lstm"))
    registry = ModelRegistry([run_spec(run)])
    decoding = Decoding(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=100_000, seed=0)
    before = {thread.name for thread in threading.enumerate()}
    stream = stream_side_by_side(registry, ["toy-lstm"], "the cat", decoding)
    for outputs in stream:
        if outputs[0].num_pieces >= 3:
            break
    stream.close()
    deadline = time.time() + 10
    while any(t.name == "generate-toy-lstm" for t in threading.enumerate()) and time.time() < deadline:
        time.sleep(0.05)
    assert "generate-toy-lstm" not in {thread.name for thread in threading.enumerate()} - before


def test_token_probabilities_are_the_models_probabilities_of_the_shown_tokens() -> None:
    run = tiny_run("lstm")
    model, tokenizer = load_model(run / "checkpoints" / "best"), load_tokenizer(run / "tokenizer")
    pairs = token_probabilities(model, tokenizer, "the cat", " sees a dog")
    assert [piece for piece, _ in pairs] == [" sees", " a", " dog"]
    ids = tokenizer.encode("the cat sees a dog")
    with torch.no_grad():
        log_probs = model(torch.tensor([ids[:-1]])).logits[0].log_softmax(-1)
    expected = [math.exp(log_probs[i, ids[i + 1]].item()) for i in range(1, 4)]
    assert [p for _, p in pairs] == pytest.approx(expected, rel=1e-5)


def test_cards_escape_html_and_colour_tokens() -> None:
    outputs = [
        ModelOutput(name="<b>m</b>", state="done", text="<script>", token_probs=[(" a", 0.9), ("<x>", 0.001)]),
        ModelOutput(name="broken", state="error", note="the prompt is 20 tokens; this model reads at most 16"),
    ]
    page = render_outputs(outputs, "<prompt>")
    assert "<script>" not in page and "&lt;b&gt;m&lt;/b&gt;" in page and "&lt;prompt&gt;" in page
    assert 'title="p = 0.9"' in page and 'title="p = 0.001"' in page and "Token probability" in page
    assert "error: the prompt is 20 tokens" in page
