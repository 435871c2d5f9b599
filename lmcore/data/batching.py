"""Cutting a token stream into (inputs, targets) batches, batch first.

``targets`` are the next tokens, already shifted: ``targets[b, t]`` is the
token that follows ``inputs[b, t]`` (lmcore's ``labels`` convention), so
every batch here has ``inputs.shape == targets.shape``.

- Recurrent models carry their state across blocks: ``batchify`` cuts the
  stream into ``batch_size`` contiguous streams, ``bptt_blocks`` walks them in
  order (PyTorch's word_language_model, batch first).
- Attention models see independent windows: ``random_windows`` samples them
  (nanoGPT's ``get_batch``), ``sequential_windows`` walks the stream in order
  without overlap (evaluation, epoch-based training).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def _check_stream(ids: torch.Tensor, minimum_length: int, reason: str) -> None:
    if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        description = f"a tensor of shape {tuple(ids.shape)} and dtype {ids.dtype}" if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise ValueError(f"token ids must be a 1-D integer tensor (N,), got {description}")
    if len(ids) < minimum_length:
        raise ValueError(f"token stream too short: {len(ids)} tokens; {reason} needs at least {minimum_length}")


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut a token stream into ``batch_size`` contiguous streams.

    ids: (N,) integer tensor. Returns shape ``(batch_size, N // batch_size)``
    (a view of ``ids`` when it is contiguous) whose row ``b`` is
    ``ids[b * L : (b + 1) * L]`` with ``L = N // batch_size``; the last
    ``N % batch_size`` tokens are dropped. Needs ``N >= 2 * batch_size`` (each
    stream at least one input and its target).
    """
    _check_positive("batch_size", batch_size)
    _check_stream(ids, 2 * batch_size, f"batchify into {batch_size} streams of at least 2 tokens")
    length = len(ids) // batch_size
    return ids[: batch_size * length].reshape(batch_size, length)


def bptt_blocks(streams: torch.Tensor, bptt: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Walk ``batchify``'s streams in order, ``bptt`` steps at a time.

    streams: (B, L). Yields ``(inputs, targets)``, each (B, T) with
    ``T = min(bptt, L - 1 - start)``: ``inputs = streams[:, start:start + T]``
    and ``targets = streams[:, start + 1:start + 1 + T]`` for
    ``start = 0, bptt, 2 * bptt, ...``. The blocks' inputs concatenate to
    ``streams[:, :-1]`` and their targets to ``streams[:, 1:]``, so a recurrent
    model that carries its state from block to block sees each stream whole.
    """
    _check_positive("bptt", bptt)
    if not isinstance(streams, torch.Tensor) or streams.dim() != 2 or streams.shape[1] < 2:
        shape = tuple(streams.shape) if isinstance(streams, torch.Tensor) else type(streams).__name__
        raise ValueError(f"streams must be a (batch, length) tensor with length >= 2 (see batchify), got {shape}")
    length = streams.shape[1]
    for start in range(0, length - 1, bptt):
        steps = min(bptt, length - 1 - start)
        yield streams[:, start : start + steps], streams[:, start + 1 : start + 1 + steps]


def random_windows(
    ids: torch.Tensor,
    block_size: int,
    batch_size: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of windows at random positions (uniform over all starts).

    ids: (N,) integer tensor. Returns ``(inputs, targets)``, each
    ``(batch_size, block_size)``: ``inputs[i] = ids[s_i : s_i + block_size]``,
    ``targets[i] = ids[s_i + 1 : s_i + 1 + block_size]`` with ``s_i`` drawn
    uniformly from ``0 .. N - block_size - 1`` using ``generator`` (the same
    seed gives the same batches). Needs ``N >= block_size + 1``.
    """
    _check_positive("block_size", block_size)
    _check_positive("batch_size", batch_size)
    _check_stream(ids, block_size + 1, f"a window of block_size={block_size} plus its next token")
    starts = torch.randint(len(ids) - block_size, (batch_size,), generator=generator, device=generator.device if generator is not None else "cpu")
    positions = starts.to(ids.device)[:, None] + torch.arange(block_size, device=ids.device)  # (batch, block)
    return ids[positions], ids[positions + 1]


def sequential_windows(ids: torch.Tensor, block_size: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Non-overlapping windows in stream order, ``batch_size`` windows per batch.

    ids: (N,) integer tensor. Window ``k`` has inputs
    ``ids[k * block_size : (k + 1) * block_size]`` and the targets one token
    later. Yields ``(inputs, targets)`` of shape ``(batch_size, block_size)``,
    the last full-length batch possibly with fewer rows; when
    ``(N - 1) % block_size`` tokens remain they come last as a ``(1, remainder)``
    batch. Every token but the first is a target exactly once, in order. Needs
    ``N >= 2``.
    """
    _check_positive("block_size", block_size)
    _check_positive("batch_size", batch_size)
    _check_stream(ids, 2, "one input and its target")
    num_windows = (len(ids) - 1) // block_size
    full = num_windows * block_size
    inputs = ids[:full].reshape(num_windows, block_size)  # (windows, block)
    targets = ids[1 : full + 1].reshape(num_windows, block_size)
    for first in range(0, num_windows, batch_size):
        yield inputs[first : first + batch_size], targets[first : first + batch_size]
    if full < len(ids) - 1:
        yield ids[full:-1].unsqueeze(0), ids[full + 1 :].unsqueeze(0)
