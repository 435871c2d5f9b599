"""The RNN and LSTM language models: shapes, loss, state carrying, equivalence with
nn.RNN / nn.LSTM, weight tying, save/load, bad input, and a tiny overfitting run."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lmcore.models.base import IGNORE_INDEX
from lmcore.models.lstm import HandwrittenLSTM, LSTMConfig, LSTMLM
from lmcore.models.rnn import RNNLM, ElmanRNN, RNNConfig

VOCAB = 13
TINY = dict(vocab_size=VOCAB, hidden_size=8, num_layers=2)

# (model class, config class, extra config fields): every recurrent variant.
VARIANTS = {
    "rnn": (RNNLM, RNNConfig, {}),
    "lstm-torch": (LSTMLM, LSTMConfig, {"cell": "torch"}),
    "lstm-handwritten": (LSTMLM, LSTMConfig, {"cell": "handwritten"}),
}


def build(variant: str, seed: int = 0, **fields) -> RNNLM | LSTMLM:
    model_class, config_class, extra = VARIANTS[variant]
    torch.manual_seed(seed)
    return model_class(config_class(**{**TINY, **extra, **fields}))


def state_parts(state) -> tuple[torch.Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def random_tokens(batch: int, time: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, time), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("variant", VARIANTS)
def test_output_and_state_shapes(variant):
    model = build(variant)
    out = model(random_tokens(3, 5))
    assert out.logits.shape == (3, 5, VOCAB)
    assert out.loss is None
    parts = state_parts(out.state)
    assert len(parts) == (2 if variant.startswith("lstm") else 1)
    assert all(part.shape == (2, 3, 8) for part in parts)
    assert model.is_recurrent and model.max_context is None


@pytest.mark.parametrize("variant", VARIANTS)
def test_loss_is_mean_cross_entropy_over_labelled_positions(variant):
    model = build(variant)
    input_ids = random_tokens(2, 6)
    labels = random_tokens(2, 6, seed=2)
    labels[0, :3] = IGNORE_INDEX
    out = model(input_ids, labels=labels)
    log_probs = out.logits.log_softmax(dim=-1)
    keep = labels != IGNORE_INDEX
    manual = -log_probs[keep].gather(1, labels[keep].unsqueeze(1)).mean()
    torch.testing.assert_close(out.loss, manual)


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_carried_across_two_halves_equals_one_pass(variant):
    model = build(variant, dropout=0.3).eval()  # eval: dropout off, so the passes are comparable
    input_ids = random_tokens(3, 10)
    full = model(input_ids)
    first = model(input_ids[:, :4])
    second = model(input_ids[:, 4:], state=model.detach_state(first.state))
    torch.testing.assert_close(torch.cat([first.logits, second.logits], dim=1), full.logits)
    for carried, direct in zip(state_parts(second.state), state_parts(full.state)):
        torch.testing.assert_close(carried, direct)


@pytest.mark.parametrize("variant", VARIANTS)
def test_explicit_zero_state_equals_no_state(variant):
    model = build(variant)
    input_ids = random_tokens(2, 4)
    torch.testing.assert_close(model(input_ids, state=model.initial_state(2)).logits, model(input_ids).logits)


def test_detach_state_cuts_the_graph_and_keeps_the_structure():
    model = build("lstm-torch")
    state = model(random_tokens(2, 3)).state
    assert all(part.requires_grad for part in state)
    detached = model.detach_state(state)
    assert isinstance(detached, tuple) and not any(part.requires_grad for part in detached)


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def test_handwritten_rnn_matches_nn_rnn_forward_and_backward():
    model = build("rnn", dropout=0.0)
    reference_rnn = nn.RNN(8, 8, num_layers=2, nonlinearity="tanh")
    reference_rnn.load_state_dict(model.rnn.state_dict())  # same names and layout as nn.RNN
    input_ids = random_tokens(3, 7)
    h0 = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(3))

    out = model(input_ids, state=h0)
    hidden, reference_state = reference_rnn(model.embedding(input_ids.t()), h0)  # time-major
    reference_logits = model.decoder(hidden.transpose(0, 1))
    torch.testing.assert_close(out.logits, reference_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.state, reference_state, atol=1e-5, rtol=1e-5)

    out.logits.square().sum().backward()
    ours = {name: p.grad.clone() for name, p in model.rnn.named_parameters()}
    model.zero_grad()
    reference_rnn.zero_grad()
    reference_logits.square().sum().backward()
    for name, p in reference_rnn.named_parameters():
        torch.testing.assert_close(ours[name], p.grad, atol=1e-5, rtol=1e-5)


def test_elman_cell_computes_the_written_equation():
    # One layer, one step, by hand: h_1 = tanh(x W_ih^T + b_ih + h_0 W_hh^T + b_hh).
    rnn = ElmanRNN(input_size=3, hidden_size=2, num_layers=1)
    x = torch.randn(1, 4, 3)
    h0 = torch.randn(1, 4, 2)
    expected = torch.tanh(x[0] @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + h0[0] @ rnn.weight_hh_l0.T + rnn.bias_hh_l0)
    output, h1 = rnn(x, h0)
    torch.testing.assert_close(output[0], expected)
    torch.testing.assert_close(h1[0], expected)


def test_lstm_cells_share_one_state_dict_and_compute_the_same_function():
    torch_cell = build("lstm-torch", dropout=0.2)
    handwritten = build("lstm-handwritten", seed=1, dropout=0.2)
    assert isinstance(torch_cell.rnn, nn.LSTM) and isinstance(handwritten.rnn, HandwrittenLSTM)
    assert torch_cell.state_dict().keys() == handwritten.state_dict().keys()
    handwritten.load_state_dict(torch_cell.state_dict())
    torch_cell.eval()
    handwritten.eval()

    input_ids = random_tokens(3, 7)
    generator = torch.Generator().manual_seed(4)
    state = (torch.randn(2, 3, 8, generator=generator), torch.randn(2, 3, 8, generator=generator))
    labels = random_tokens(3, 7, seed=5)
    a = torch_cell(input_ids, state=state, labels=labels)
    b = handwritten(input_ids, state=state, labels=labels)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)
    for part_a, part_b in zip(a.state, b.state):
        torch.testing.assert_close(part_a, part_b, atol=1e-5, rtol=1e-5)

    a.loss.backward()
    b.loss.backward()
    grads_a, grads_b = _grads(torch_cell), _grads(handwritten)
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_weight_tying_shares_one_tensor(variant):
    tied = build(variant, tie_weights=True)
    untied = build(variant, tie_weights=False)
    assert tied.decoder.weight is tied.embedding.weight
    assert untied.decoder.weight is not untied.embedding.weight
    assert untied.num_parameters() - tied.num_parameters() == VOCAB * 8
    with torch.no_grad():
        tied.embedding.weight[3].fill_(0.5)
    assert torch.equal(tied.decoder.weight[3], torch.full((8,), 0.5))


@pytest.mark.parametrize("config_class", [RNNConfig, LSTMConfig])
def test_tying_needs_equal_embedding_and_hidden_sizes(config_class):
    with pytest.raises(ValueError, match="embedding_size == hidden_size"):
        config_class(vocab_size=VOCAB, hidden_size=8, embedding_size=6, tie_weights=True)
    model_class = RNNLM if config_class is RNNConfig else LSTMLM
    model = model_class(config_class(vocab_size=VOCAB, hidden_size=8, embedding_size=6, tie_weights=False))
    assert model(random_tokens(2, 3)).logits.shape == (2, 3, VOCAB)
    assert config_class(vocab_size=VOCAB, hidden_size=8).embedding_size == 8  # None means hidden_size


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"hidden_size": 0}, "hidden_size must be a positive integer"),
        ({"num_layers": -1}, "num_layers must be a positive integer"),
        ({"embedding_size": 0, "tie_weights": False}, "embedding_size must be a positive integer"),
        ({"hidden_size": 8.5}, "hidden_size must be a positive integer"),
        ({"dropout": 1.0}, r"dropout must be a number in \[0, 1\)"),
        ({"dropout": -0.1}, r"dropout must be a number in \[0, 1\)"),
        ({"vocab_size": 1}, "vocab_size must be at least 2"),
    ],
)
@pytest.mark.parametrize("config_class", [RNNConfig, LSTMConfig])
def test_bad_config_values_are_rejected(config_class, fields, message):
    with pytest.raises(ValueError, match=message):
        config_class(**{**TINY, **fields})


def test_unknown_lstm_cell_is_rejected_with_the_allowed_names():
    with pytest.raises(ValueError, match="cell must be one of 'torch', 'handwritten'"):
        LSTMConfig(**TINY, cell="cudnn")


@pytest.mark.parametrize("variant", ["rnn", "lstm-torch"])
@pytest.mark.parametrize(
    ("make_inputs", "message"),
    [
        (lambda: (torch.tensor([1, 2, 3]), None), r"\(batch, time\) tensor"),
        (lambda: (torch.ones(2, 3), None), "int64 or int32"),
        (lambda: (torch.full((2, 3), VOCAB), None), rf"token ids must be in \[0, {VOCAB}\)"),
        (lambda: (torch.full((2, 3), -1), None), "token ids must be in"),
        (lambda: (torch.zeros(2, 0, dtype=torch.long), None), "at least one token"),
        (lambda: (torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long)), "labels must be"),
    ],
)
def test_bad_inputs_are_rejected(variant, make_inputs, message):
    input_ids, labels = make_inputs()
    with pytest.raises(ValueError, match=message):
        build(variant)(input_ids, labels=labels)


@pytest.mark.parametrize(
    ("variant", "bad_state"),
    [
        ("rnn", torch.zeros(2, 5, 8)),  # batch 5, not 3
        ("rnn", (torch.zeros(2, 3, 8), torch.zeros(2, 3, 8))),  # an LSTM state
        ("lstm-torch", torch.zeros(2, 3, 8)),  # h without c
        ("lstm-torch", (torch.zeros(1, 3, 8), torch.zeros(1, 3, 8))),  # 1 layer, not 2
    ],
)
def test_malformed_state_is_rejected_with_the_expected_shape(variant, bad_state):
    with pytest.raises(ValueError, match=r"state must be None or .*\(2, 3, 8\)"):
        build(variant)(random_tokens(3, 4), state=bad_state)


def _fp16_rounded(model: nn.Module) -> nn.Module:
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in rounded.parameters():
            parameter.copy_(parameter.half().float())
    return rounded


@pytest.mark.parametrize("tie_weights", [True, False])
@pytest.mark.parametrize("variant", VARIANTS)
def test_save_and_load_round_trip(tmp_path, variant, tie_weights):
    model = build(variant, tie_weights=tie_weights, dropout=0.1).eval()
    model_class = type(model)
    input_ids = random_tokens(2, 6)

    loaded = model_class.from_pretrained(model.save_pretrained(tmp_path / "fp32")).eval()
    assert loaded.config == model.config
    assert torch.equal(loaded(input_ids).logits, model(input_ids).logits)
    assert (loaded.decoder.weight is loaded.embedding.weight) == tie_weights

    loaded16 = model_class.from_pretrained(model.save_pretrained(tmp_path / "fp16", dtype=torch.float16)).eval()
    assert loaded16.embedding.weight.dtype == torch.float32
    assert torch.equal(loaded16(input_ids).logits, _fp16_rounded(model)(input_ids).logits)
    assert (loaded16.decoder.weight is loaded16.embedding.weight) == tie_weights


def test_lstm_weights_saved_with_one_cell_load_into_the_other(tmp_path):
    model = build("lstm-torch").eval()
    model.save_pretrained(tmp_path)
    config_path = tmp_path / "config.json"
    config_path.write_text(config_path.read_text().replace('"torch"', '"handwritten"'))
    loaded = LSTMLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded.rnn, HandwrittenLSTM)
    input_ids = random_tokens(2, 5)
    torch.testing.assert_close(loaded(input_ids).logits, model(input_ids).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("saved", "loader"), [("rnn", LSTMLM), ("lstm-torch", RNNLM)])
def test_loading_a_folder_with_the_wrong_class_is_rejected(tmp_path, saved, loader):
    build(saved).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="config is for model type"):
        loader.from_pretrained(tmp_path)


@pytest.mark.parametrize("variant", VARIANTS)
def test_tiny_model_overfits_a_repeated_sequence(variant):
    # The pattern repeats every 6 tokens; token 1 is followed by 4 once and by 5 once, so the
    # model must use more than the current token to get the loss near zero.
    model = build(variant, hidden_size=32, num_layers=1)
    pattern = torch.tensor([3, 1, 4, 1, 5, 9])
    stream = pattern.repeat(6)
    input_ids, labels = stream[:-1].unsqueeze(0), stream[1:].unsqueeze(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    initial = model(input_ids, labels=labels).loss.item()
    for _ in range(40):
        optimizer.zero_grad()
        loss = model(input_ids, labels=labels).loss
        loss.backward()
        optimizer.step()
    final = model(input_ids, labels=labels).loss.item()
    assert initial > 2.0 and final < 0.2, (initial, final)
