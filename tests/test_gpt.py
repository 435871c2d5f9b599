"""GPT-2 (lmcore.models.gpt): equivalence with transformers, KV cache, loss, init, save/load, errors."""

from __future__ import annotations

import math

import pytest
import torch

from lmcore.models.base import IGNORE_INDEX
from lmcore.models.gpt import GPT, NAMED_SIZES, GPTConfig

VOCAB = 97


def tiny_model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig.from_name("tiny", vocab_size=VOCAB, **overrides)).eval()


def random_ids(batch: int, time: int, seed: int = 1, vocab: int = VOCAB) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, time), generator=torch.Generator().manual_seed(seed))


def shifted_labels(input_ids: torch.Tensor) -> torch.Tensor:
    """Targets for next-token prediction within the block: the next id, -100 at the last position."""
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[:, :-1] = input_ids[:, 1:]
    return labels


# ---------------------------------------------------------------- configs and sizes
def test_named_sizes_and_overrides():
    config = GPTConfig.from_name("tiny", vocab_size=VOCAB, dropout=0.1)
    assert (config.n_layer, config.n_head, config.n_embd, config.block_size) == (2, 2, 64, 64)
    assert (config.vocab_size, config.dropout, config.tie_weights) == (VOCAB, 0.1, True)
    assert GPT(config).max_context == 64
    assert GPTConfig.from_name("gpt2") == GPTConfig()  # the defaults are GPT-2 small


def test_unknown_size_lists_the_names():
    with pytest.raises(ValueError, match="tiny.*gpt2.*gpt2-medium"):
        GPTConfig.from_name("gpt5")


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(n_embd=65), "divisible by n_head"),
        (dict(n_layer=0), "n_layer must be a positive"),
        (dict(block_size=0), "block_size must be a positive"),
        (dict(dropout=1.0), r"dropout must be a number in \[0, 1\)"),
        (dict(vocab_size=1), "vocab_size must be at least 2"),
        (dict(n_embdd=64), "unknown gpt config field"),
    ],
)
def test_bad_config_raises(bad, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig.from_name("tiny", **bad)


def test_config_dict_round_trip():
    config = GPTConfig.from_name("tiny", vocab_size=VOCAB, bias=False)
    values = config.to_dict()
    assert values["model_type"] == "gpt"
    assert GPTConfig.from_dict(values) == config


def test_gpt2_small_has_124m_parameters():
    with torch.device("meta"):  # shapes only, no memory
        model = GPT(GPTConfig.from_name("gpt2"))
    assert model.num_parameters() == 124_439_808  # the published size of GPT-2 small (tied embeddings)


@pytest.mark.parametrize("name", ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"])
def test_parameter_counts_match_transformers(name):
    from transformers import GPT2Config, GPT2LMHeadModel

    size = NAMED_SIZES[name]
    hf_config = GPT2Config(n_layer=size["n_layer"], n_head=size["n_head"], n_embd=size["n_embd"])
    with torch.device("meta"):
        hf_model = GPT2LMHeadModel(hf_config)
        ours = GPT(GPTConfig.from_name(name))
    assert ours.num_parameters() == hf_model.num_parameters()
    if name == "gpt2-medium":
        assert ours.num_parameters() == 354_823_168


# ---------------------------------------------------------------- equivalence with transformers
def _tiny_hf_model(seed: int = 0, **overrides):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    values = dict(
        vocab_size=VOCAB, n_positions=64, n_embd=64, n_layer=2, n_head=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
        attn_implementation="eager",  # the plain matmul-softmax path, independent of our SDPA call
    )
    return GPT2LMHeadModel(GPT2Config(**{**values, **overrides})).eval()


def test_hf_config_conversion():
    hf_model = _tiny_hf_model()
    config = GPTConfig.from_hf_config(hf_model.config)
    assert config == GPTConfig.from_name("tiny", vocab_size=VOCAB)


@pytest.mark.parametrize(
    "unsupported, message",
    [
        (dict(activation_function="relu"), "activation_function"),
        (dict(n_inner=100), "n_inner"),
        (dict(attn_pdrop=0.2), "must be equal"),
        (dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
    ],
)
def test_unsupported_hf_config_raises(unsupported, message):
    from transformers import GPT2Config

    with pytest.raises(ValueError, match=message):
        GPTConfig.from_hf_config(GPT2Config(**unsupported))


def test_same_logits_and_loss_as_transformers_gpt2():
    hf_model = _tiny_hf_model()
    # Larger random weights than GPT-2's init (LayerNorms and biases included), so that activations are
    # of order one and every weight matters: e.g. exact GELU instead of the tanh form would show.
    with torch.no_grad():
        for parameter in hf_model.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    hf_model.transformer.h[0].attn.register_buffer("bias", torch.ones(1, 1, 64, 64).tril())  # as in old checkpoints
    ours = GPT.from_hf_state_dict(GPTConfig.from_hf_config(hf_model.config), hf_model.state_dict()).eval()
    assert ours.lm_head.weight is ours.transformer.wte.weight

    input_ids = random_ids(3, 64)
    with torch.no_grad():
        expected = hf_model(input_ids, labels=input_ids)  # transformers shifts labels inside the model
        output = ours(input_ids, labels=shifted_labels(input_ids))
    torch.testing.assert_close(output.logits, expected.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(output.loss, expected.loss, atol=1e-5, rtol=0)


def test_from_hf_loads_a_saved_transformers_folder(tmp_path):
    hf_model = _tiny_hf_model()
    hf_model.save_pretrained(tmp_path)
    ours = GPT.from_hf(tmp_path, dropout=0.1).eval()
    assert ours.config == GPTConfig.from_name("tiny", vocab_size=VOCAB, dropout=0.1)
    input_ids = random_ids(2, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids).logits, hf_model(input_ids).logits, atol=1e-4, rtol=0)


def test_hf_state_dict_that_does_not_fit_raises():
    hf_model = _tiny_hf_model()
    with pytest.raises(ValueError, match="shape mismatches"):
        GPT.from_hf_state_dict(GPTConfig.from_name("tiny", vocab_size=VOCAB + 1), hf_model.state_dict())
    with pytest.raises(ValueError, match="missing"):
        GPT.from_hf_state_dict(GPTConfig.from_name("tiny", vocab_size=VOCAB, n_layer=3), hf_model.state_dict())


# ---------------------------------------------------------------- forward, loss, causality
def test_loss_is_mean_cross_entropy_over_labelled_positions():
    model = tiny_model()
    input_ids = random_ids(2, 16)
    labels = random_ids(2, 16, seed=2)
    labels[0, :5] = IGNORE_INDEX
    output = model(input_ids, labels=labels)
    assert output.logits.shape == (2, 16, VOCAB)
    assert output.state is None
    kept = labels != IGNORE_INDEX
    log_probs = output.logits.log_softmax(dim=-1)
    manual = -log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)[kept].mean()
    torch.testing.assert_close(output.loss, manual)


def test_untrained_loss_is_near_uniform():
    # Small init: an untrained model predicts nearly uniformly, loss ~ ln(vocab).
    output = tiny_model()(random_ids(4, 64), labels=random_ids(4, 64, seed=3))
    assert abs(output.loss.item() - math.log(VOCAB)) < 0.1


def test_causal_future_tokens_do_not_change_past_logits():
    model = tiny_model()
    input_ids = random_ids(1, 20)
    changed = input_ids.clone()
    changed[0, 12] = (changed[0, 12] + 1) % VOCAB
    with torch.no_grad():
        before, after = model(input_ids).logits, model(changed).logits
    torch.testing.assert_close(before[:, :12], after[:, :12], atol=0, rtol=0)
    assert not torch.allclose(before[:, 12:], after[:, 12:])


# ---------------------------------------------------------------- KV cache
def test_cached_greedy_decoding_matches_full_forward():
    model = tiny_model()
    sequence = random_ids(2, 5)
    with torch.no_grad():
        output = model(sequence, use_cache=True)
        cached_logits = [output.logits]
        for _ in range(20):
            next_token = output.logits[:, -1].argmax(dim=-1, keepdim=True)  # (B, 1)
            sequence = torch.cat([sequence, next_token], dim=1)
            output = model(next_token, state=output.state, use_cache=True)
            cached_logits.append(output.logits)
        full = model(sequence).logits
    assert sequence.shape == (2, 25)
    keys, values = output.state[0]
    assert len(output.state) == 2 and keys.shape == values.shape == (2, 2, 25, 32)
    torch.testing.assert_close(torch.cat(cached_logits, dim=1), full, atol=1e-5, rtol=0)


def test_multi_token_chunks_after_a_cache_are_causal():
    # Feeding several tokens at once after a cache needs the offset causal mask, not SDPA's top-left one.
    model = tiny_model()
    sequence = random_ids(2, 30)
    with torch.no_grad():
        full = model(sequence).logits
        first = model(sequence[:, :7], use_cache=True)
        second = model(sequence[:, 7:16], state=first.state, use_cache=True)
        third = model(sequence[:, 16:], state=second.state)  # no use_cache: no state returned
    assert third.state is None
    chunked = torch.cat([first.logits, second.logits, third.logits], dim=1)
    torch.testing.assert_close(chunked, full, atol=1e-5, rtol=0)


def test_cache_overflow_and_bad_cache_raise():
    model = tiny_model()
    with torch.no_grad():
        state = model(random_ids(1, 60), use_cache=True).state
        model(random_ids(1, 4), state=state)  # exactly block_size = 64 tokens: allowed
        with pytest.raises(ValueError, match="60 cached \\+ 5 new.*block_size=64"):
            model(random_ids(1, 5), state=state)
        with pytest.raises(ValueError, match="one per layer"):
            model(random_ids(1, 1), state=state[:1])
        with pytest.raises(ValueError, match="cached keys must have shape"):
            model(random_ids(2, 1), state=state)  # cache for batch 1, input batch 2


# ---------------------------------------------------------------- input errors
def test_too_long_input_raises():
    with pytest.raises(ValueError, match="block_size=64"):
        tiny_model()(random_ids(1, 65))


@pytest.mark.parametrize(
    "input_ids, message",
    [
        (torch.tensor([[0, VOCAB]]), rf"\[0, {VOCAB}\)"),
        (torch.tensor([[-1, 3]]), rf"\[0, {VOCAB}\)"),
        (torch.zeros(4, dtype=torch.long), r"\(batch, time\)"),
        (torch.zeros(1, 4), "int64 or int32"),
        (torch.zeros(1, 0, dtype=torch.long), "at least one token"),
    ],
)
def test_bad_input_ids_raise(input_ids, message):
    with pytest.raises(ValueError, match=message):
        tiny_model()(input_ids)


def test_labels_of_wrong_shape_raise():
    with pytest.raises(ValueError, match="labels must be an int64 tensor with the shape of input_ids"):
        tiny_model()(random_ids(2, 8), labels=random_ids(2, 7))


# ---------------------------------------------------------------- init, tying, bias option
def test_gpt2_initialisation():
    torch.manual_seed(0)
    config = GPTConfig.from_name("tiny", vocab_size=1000, n_layer=8, n_embd=256, n_head=4)
    model = GPT(config)
    residual_std = 0.02 / math.sqrt(2 * config.n_layer)
    for block in model.transformer.h:
        assert block.attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.05)
        assert block.mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
        assert block.attn.c_proj.weight.std().item() == pytest.approx(residual_std, rel=0.05)
        assert block.mlp.c_proj.weight.std().item() == pytest.approx(residual_std, rel=0.05)
        assert torch.all(block.attn.c_attn.bias == 0) and torch.all(block.ln_1.weight == 1)
    assert model.transformer.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.transformer.wpe.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_tied_weights_are_one_tensor_and_untied_are_two():
    tied = tiny_model()
    assert tied.lm_head.weight is tied.transformer.wte.weight
    untied = tiny_model(tie_weights=False)
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    assert untied.num_parameters() == tied.num_parameters() + VOCAB * 64


def test_bias_false_has_no_biases():
    model = tiny_model(bias=False)
    assert not [name for name, _ in model.named_parameters() if name.endswith("bias")]
    assert model(random_ids(1, 8)).logits.shape == (1, 8, VOCAB)


# ---------------------------------------------------------------- save / load
def test_save_load_round_trip(tmp_path):
    model = tiny_model()
    input_ids = random_ids(2, 16)
    model.save_pretrained(tmp_path / "fp32")
    loaded = GPT.from_pretrained(tmp_path / "fp32").eval()
    assert loaded.config == model.config
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids).logits, model(input_ids).logits, atol=0, rtol=0)


def test_save_in_float16_loads_rounded_weights(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "fp16", dtype=torch.float16)
    loaded = GPT.from_pretrained(tmp_path / "fp16").eval()
    assert loaded.transformer.wte.weight.dtype == torch.float32
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    for (name, original), restored in zip(model.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(restored, original.half().float(), atol=0, rtol=0, msg=name)
    input_ids = random_ids(2, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids).logits, model(input_ids).logits, atol=1e-2, rtol=0)


# ---------------------------------------------------------------- training
def test_tiny_model_overfits_a_repeated_sequence():
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("tiny", vocab_size=16, block_size=32))
    pattern = torch.randint(0, 16, (8,), generator=torch.Generator().manual_seed(0))
    stream = pattern.repeat(5)  # 40 tokens: the same 8-token phrase over and over
    input_ids, labels = stream[:32].unsqueeze(0), stream[1:33].unsqueeze(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(100):
        loss = model(input_ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        final = model(input_ids, labels=labels)
    # Untrained the loss is ln(16) = 2.77; 100 steps memorise the 32 targets.
    assert final.loss.item() < 0.05
    assert torch.equal(final.logits.argmax(dim=-1), labels)


def test_dropout_is_active_only_in_training():
    model = tiny_model(dropout=0.5)
    input_ids = random_ids(1, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids).logits, model(input_ids).logits, atol=0, rtol=0)
        model.train()
        assert not torch.allclose(model(input_ids).logits, model(input_ids).logits)


def test_gradients_reach_every_parameter():
    model = tiny_model().train()
    input_ids = random_ids(2, 16)
    model(input_ids, labels=shifted_labels(input_ids)).loss.backward()
    no_grad = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad
