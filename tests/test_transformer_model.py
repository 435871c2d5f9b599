"""The Vaswani-style decoder-only Transformer: shapes, loss, causality, the block math for
post- and pre-LayerNorm, position encodings, weight tying, save/load, bad input, and a tiny
overfitting run."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmcore.models.base import IGNORE_INDEX
from lmcore.models.rnn import RNNLM, RNNConfig
from lmcore.models.transformer import Block, TransformerConfig, TransformerLM, sinusoidal_position_encoding

VOCAB = 11
TINY = dict(vocab_size=VOCAB, block_size=12, n_layer=2, n_head=2, n_embd=8, dropout=0.0)


def build(seed: int = 0, **fields) -> TransformerLM:
    torch.manual_seed(seed)
    return TransformerLM(TransformerConfig(**{**TINY, **fields}))


def random_tokens(batch: int, time: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, time), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("norm_position", ["post", "pre"])
def test_output_shapes(norm_position):
    model = build(norm_position=norm_position)
    out = model(random_tokens(3, 12))
    assert out.logits.shape == (3, 12, VOCAB)
    assert out.loss is None and out.state is None
    assert model.max_context == 12 and not model.is_recurrent and not model.supports_cache


def test_loss_is_mean_cross_entropy_over_labelled_positions():
    model = build()
    input_ids, labels = random_tokens(2, 7), random_tokens(2, 7, seed=2)
    labels[1, 4:] = IGNORE_INDEX
    out = model(input_ids, labels=labels)
    log_probs = out.logits.log_softmax(dim=-1)
    keep = labels != IGNORE_INDEX
    manual = -log_probs[keep].gather(1, labels[keep].unsqueeze(1)).mean()
    torch.testing.assert_close(out.loss, manual)


@pytest.mark.parametrize("norm_position", ["post", "pre"])
def test_changing_a_future_token_leaves_earlier_logits_unchanged(norm_position):
    model = build(norm_position=norm_position).eval()
    input_ids = random_tokens(2, 10)
    changed = input_ids.clone()
    changed[:, 6] = (changed[:, 6] + 1) % VOCAB
    before, after = model(input_ids).logits, model(changed).logits
    torch.testing.assert_close(after[:, :6], before[:, :6])
    assert not torch.allclose(after[:, 6:], before[:, 6:])  # the change does reach later positions


def _reference_block(block: Block, x: torch.Tensor, pre_norm: bool) -> torch.Tensor:
    """One block written out with explicit masked softmax attention (no dropout)."""
    B, T, C = x.shape
    n_head = block.attn.n_head

    def attention(h: torch.Tensor) -> torch.Tensor:
        q, k, v = (block.attn.qkv(h)).split(C, dim=2)
        q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(C // n_head)  # (B, nh, T, T)
        future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        return block.attn.proj((weights @ v).transpose(1, 2).reshape(B, T, C))

    def ffn(h: torch.Tensor) -> torch.Tensor:
        return block.ffn.fc2(F.relu(block.ffn.fc1(h)))

    if pre_norm:
        x = x + attention(block.norm1(x))
        return x + ffn(block.norm2(x))
    x = F.layer_norm(x + attention(x), (C,), block.norm1.weight, block.norm1.bias)
    return F.layer_norm(x + ffn(x), (C,), block.norm2.weight, block.norm2.bias)


@pytest.mark.parametrize("norm_position", ["post", "pre"])
def test_block_matches_the_written_out_equations(norm_position):
    model = build(norm_position=norm_position).eval()
    block = model.blocks[0]
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(block(x), _reference_block(block, x, pre_norm=norm_position == "pre"))


@pytest.mark.parametrize("norm_position", ["post", "pre"])
def test_model_is_scaled_embedding_plus_positions_then_blocks(norm_position):
    model = build(norm_position=norm_position).eval()
    input_ids = random_tokens(2, 5)
    x = model.token_embedding(input_ids) * math.sqrt(8) + sinusoidal_position_encoding(12, 8)[:5]
    for block in model.blocks:
        x = _reference_block(block, x, pre_norm=norm_position == "pre")
    if norm_position == "pre":
        x = F.layer_norm(x, (8,), model.final_norm.weight, model.final_norm.bias)
    torch.testing.assert_close(model(input_ids).logits, x @ model.token_embedding.weight.T)


def test_sinusoidal_position_encoding_known_values():
    table = sinusoidal_position_encoding(50, 6)
    assert table.shape == (50, 6)
    torch.testing.assert_close(table[0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]))
    position = torch.arange(50, dtype=torch.float32)
    for i in range(3):  # PE[pos, 2i] = sin(pos / 10000^(2i/6)), PE[pos, 2i+1] = cos(same)
        angle = position / 10_000 ** (2 * i / 6)
        torch.testing.assert_close(table[:, 2 * i], torch.sin(angle))
        torch.testing.assert_close(table[:, 2 * i + 1], torch.cos(angle))
    assert sinusoidal_position_encoding(4, 5).shape == (4, 5)  # odd widths work too


def test_position_encoding_is_not_saved_as_a_weight():
    model = build()
    assert "position_encoding" not in model.state_dict()
    assert model.position_encoding.shape == (12, 8)


def test_ffn_width_follows_ffn_ratio():
    assert build().blocks[0].ffn.fc1.out_features == 32
    assert build(ffn_ratio=2.5).blocks[0].ffn.fc1.out_features == 20


def test_weight_tying_shares_one_tensor():
    tied, untied = build(tie_weights=True), build(tie_weights=False)
    assert tied.lm_head.weight is tied.token_embedding.weight
    assert untied.lm_head.weight is not untied.token_embedding.weight
    assert untied.num_parameters() - tied.num_parameters() == VOCAB * 8
    with torch.no_grad():
        tied.token_embedding.weight[2].fill_(0.25)
    assert torch.equal(tied.lm_head.weight[2], torch.full((8,), 0.25))


def test_inputs_longer_than_block_size_are_rejected_naming_the_limit():
    model = build()
    assert model(random_tokens(1, 12)).logits.shape == (1, 12, VOCAB)
    with pytest.raises(ValueError, match="block_size=12"):
        model(random_tokens(1, 13))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"n_embd": 0}, "n_embd must be a positive integer"),
        ({"n_layer": -2}, "n_layer must be a positive integer"),
        ({"block_size": 0}, "block_size must be a positive integer"),
        ({"n_head": 3}, "divisible by n_head"),
        ({"ffn_ratio": 0}, "ffn_ratio must be a positive number"),
        ({"dropout": 1.0}, r"dropout must be a number in \[0, 1\)"),
        ({"norm_position": "sandwich"}, "norm_position must be one of 'post', 'pre'"),
        ({"layer_norm_eps": 0.0}, "layer_norm_eps must be positive"),
    ],
)
def test_bad_config_values_are_rejected(fields, message):
    with pytest.raises(ValueError, match=message):
        TransformerConfig(**{**TINY, **fields})


@pytest.mark.parametrize(
    ("input_ids", "state", "message"),
    [
        (torch.tensor([1, 2]), None, r"\(batch, time\) tensor"),
        (torch.ones(1, 3), None, "int64 or int32"),
        (torch.full((1, 3), VOCAB), None, rf"token ids must be in \[0, {VOCAB}\)"),
        (torch.zeros(1, 3, dtype=torch.long), torch.zeros(1), "pass state=None"),
    ],
)
def test_bad_inputs_are_rejected(input_ids, state, message):
    with pytest.raises(ValueError, match=message):
        build()(input_ids, state=state)


def _fp16_rounded(model: nn.Module) -> nn.Module:
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in rounded.parameters():
            parameter.copy_(parameter.half().float())
    return rounded


@pytest.mark.parametrize("tie_weights", [True, False])
@pytest.mark.parametrize("norm_position", ["post", "pre"])
def test_save_and_load_round_trip(tmp_path, norm_position, tie_weights):
    model = build(norm_position=norm_position, tie_weights=tie_weights, dropout=0.1).eval()
    input_ids = random_tokens(2, 9)

    loaded = TransformerLM.from_pretrained(model.save_pretrained(tmp_path / "fp32")).eval()
    assert loaded.config == model.config
    assert torch.equal(loaded(input_ids).logits, model(input_ids).logits)
    assert (loaded.lm_head.weight is loaded.token_embedding.weight) == tie_weights

    loaded16 = TransformerLM.from_pretrained(model.save_pretrained(tmp_path / "fp16", dtype=torch.float16)).eval()
    assert torch.equal(loaded16(input_ids).logits, _fp16_rounded(model)(input_ids).logits)
    assert (loaded16.lm_head.weight is loaded16.token_embedding.weight) == tie_weights


def test_loading_a_folder_with_the_wrong_class_is_rejected(tmp_path):
    build().save_pretrained(tmp_path / "transformer")
    with pytest.raises(ValueError, match="config is for model type 'transformer'"):
        RNNLM.from_pretrained(tmp_path / "transformer")
    RNNLM(RNNConfig(vocab_size=VOCAB, hidden_size=8)).save_pretrained(tmp_path / "rnn")
    with pytest.raises(ValueError, match="config is for model type 'rnn'"):
        TransformerLM.from_pretrained(tmp_path / "rnn")


@pytest.mark.parametrize("norm_position", ["post", "pre"])
def test_tiny_model_overfits_a_repeated_sequence(norm_position):
    # Period 6, and token 1 is followed by 4 once and by 5 once: attention must look back.
    model = build(norm_position=norm_position, n_embd=32, n_head=4, n_layer=2, block_size=35)
    stream = torch.tensor([3, 1, 4, 1, 5, 9]).repeat(6)
    input_ids, labels = stream[:-1].unsqueeze(0), stream[1:].unsqueeze(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    initial = model(input_ids, labels=labels).loss.item()
    for _ in range(40):
        optimizer.zero_grad()
        loss = model(input_ids, labels=labels).loss
        loss.backward()
        optimizer.step()
    final = model(input_ids, labels=labels).loss.item()
    assert initial > 2.0 and final < 0.2, (initial, final)
