"""Batching: streams and windows reproduce the token stream, targets are the next tokens."""

from __future__ import annotations

import pytest
import torch

from lmcore.data.batching import batchify, bptt_blocks, random_windows, sequential_windows


def test_batchify_cuts_contiguous_streams_in_order():
    streams = batchify(torch.arange(11), batch_size=3)
    assert streams.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


def test_batchify_rejects_short_or_non_integer_streams():
    with pytest.raises(ValueError, match="at least 8"):
        batchify(torch.arange(7), batch_size=4)
    with pytest.raises(ValueError, match="1-D integer tensor"):
        batchify(torch.zeros(10), batch_size=2)
    with pytest.raises(ValueError, match="1-D integer tensor"):
        batchify(torch.arange(10).view(2, 5), batch_size=2)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        batchify(torch.arange(10), batch_size=0)


@pytest.mark.parametrize("bptt", [1, 5, 7, 100])
def test_bptt_blocks_reproduce_the_streams_and_shift_targets(bptt):
    streams = batchify(torch.arange(1000) * 3 % 101, batch_size=4)  # (4, 250)
    blocks = list(bptt_blocks(streams, bptt))
    assert torch.equal(torch.cat([inputs for inputs, _ in blocks], dim=1), streams[:, :-1])
    assert torch.equal(torch.cat([targets for _, targets in blocks], dim=1), streams[:, 1:])
    lengths = [inputs.shape[1] for inputs, _ in blocks]
    assert lengths[:-1] == [bptt] * (len(blocks) - 1) and 1 <= lengths[-1] <= bptt
    for inputs, targets in blocks:
        assert inputs.shape == targets.shape
        assert torch.equal(targets[:, :-1], inputs[:, 1:])


def test_bptt_blocks_rejects_bad_streams():
    with pytest.raises(ValueError, match="length >= 2"):
        list(bptt_blocks(torch.arange(5), bptt=2))
    with pytest.raises(ValueError, match="bptt must be a positive integer"):
        list(bptt_blocks(torch.arange(10).view(2, 5), bptt=0))


def test_random_windows_targets_are_next_tokens_and_cover_the_stream():
    ids = torch.arange(100, 120)
    inputs, targets = random_windows(ids, block_size=4, batch_size=500, generator=torch.Generator().manual_seed(0))
    assert inputs.shape == targets.shape == (500, 4)
    assert torch.equal(targets, inputs + 1)
    assert torch.equal(inputs[:, 1:], inputs[:, :-1] + 1)  # contiguous windows
    assert set(inputs[:, 0].tolist()) == set(range(100, 116))  # every start 0 .. N - block_size - 1
    assert targets.max().item() == 119


def test_random_windows_are_deterministic_given_the_seed():
    ids = torch.randint(0, 50, (1000,), generator=torch.Generator().manual_seed(1))
    first = random_windows(ids, 16, 8, torch.Generator().manual_seed(42))
    again = random_windows(ids, 16, 8, torch.Generator().manual_seed(42))
    other = random_windows(ids, 16, 8, torch.Generator().manual_seed(43))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def test_random_windows_minimum_length():
    inputs, targets = random_windows(torch.arange(9), block_size=8, batch_size=2)
    assert inputs.tolist() == [list(range(8))] * 2 and targets.tolist() == [list(range(1, 9))] * 2
    with pytest.raises(ValueError, match="8 tokens; .* needs at least 9"):
        random_windows(torch.arange(8), block_size=8, batch_size=2)


@pytest.mark.parametrize(("length", "block_size", "batch_size"), [(101, 10, 3), (103, 10, 3), (11, 10, 4), (2, 10, 1)])
def test_sequential_windows_reproduce_the_stream_in_order(length, block_size, batch_size):
    ids = torch.arange(length) * 7 % 13
    batches = list(sequential_windows(ids, block_size, batch_size))
    assert torch.equal(torch.cat([inputs.reshape(-1) for inputs, _ in batches]), ids[:-1])
    assert torch.equal(torch.cat([targets.reshape(-1) for _, targets in batches]), ids[1:])
    for inputs, targets in batches:
        assert inputs.shape == targets.shape and inputs.shape[0] <= batch_size and inputs.shape[1] <= block_size


def test_sequential_windows_shapes():
    shapes = [inputs.shape for inputs, _ in sequential_windows(torch.arange(104), block_size=10, batch_size=4)]
    assert shapes == [(4, 10), (4, 10), (2, 10), (1, 3)]
    with pytest.raises(ValueError, match="at least 2"):
        list(sequential_windows(torch.arange(1), block_size=10, batch_size=4))
