"""The data side of a training run: tokenizer, token ids of each split, batches, evaluation.

Recurrent models read the training stream as ``batch_size`` contiguous streams cut
into ``bptt``-token blocks, in order, carrying their state from block to block.
Attention models read random context windows of ``block_size`` tokens; the windows
of step ``s`` are drawn with a generator seeded by ``(seed, s)``, so a resumed run
sees exactly the windows the uninterrupted one would have.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator

from lmcore.data import Tokenizer, batchify, bptt_blocks, build_tokenizer, load_corpus, random_windows
from lmcore.eval import evaluate_perplexity
from lmcore.models import LanguageModel, model_class
from lmcore.train.config import TrainConfig

SPLITS = ("train", "valid", "test")


@dataclass
class TrainingData:
    config: TrainConfig
    tokenizer: Tokenizer
    ids: dict[str, torch.Tensor]  # split -> (tokens,) LongTensor
    recurrent: bool
    block_size: int | None  # attention models: context window

    @property
    def batches_per_epoch(self) -> int:
        """Optimizer steps in one pass over the training split."""
        tokens = self.ids["train"].numel()
        if self.recurrent:
            stream_length = tokens // self.config.batch_size
            return max(1, math.ceil((stream_length - 1) / self.config.bptt))
        return max(1, tokens // (self.config.batch_size * self.block_size))

    def train_batches(self, epoch: int, skip: int, accelerator: Accelerator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's (inputs, targets) for each step of ``epoch``, from batch ``skip`` on.

        Each is (batch_size / processes, time) on the accelerator's device.
        """
        rows = self.config.batch_size // accelerator.num_processes
        first_row = accelerator.process_index * rows
        device = accelerator.device
        if self.recurrent:
            streams = batchify(self.ids["train"], self.config.batch_size)[first_row:first_row + rows]
            for index, (inputs, targets) in enumerate(bptt_blocks(streams, self.config.bptt)):
                if index >= skip:
                    yield inputs.to(device), targets.to(device)
            return
        for index in range(skip, self.batches_per_epoch):
            step = epoch * self.batches_per_epoch + index
            generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + step)
            inputs, targets = random_windows(self.ids["train"], self.block_size, self.config.batch_size, generator)
            yield inputs[first_row:first_row + rows].to(device), targets[first_row:first_row + rows].to(device)

    def evaluate(self, model: LanguageModel, split: str, device: torch.device) -> dict[str, float]:
        """Exact perplexity of ``split``: {"loss" (nats/token), "ppl", "tokens"}."""
        options: dict[str, Any] = {"batch_size": self.config.eval_batch_size}
        if not self.recurrent:
            options["stride"] = self.config.eval_stride
        result = evaluate_perplexity(model.to(device), self.ids[split], **options)
        return {"loss": result.mean_nll, "ppl": result.perplexity, "tokens": result.num_tokens}


def prepare_data(config: TrainConfig, tokenizer: Tokenizer | None = None) -> TrainingData:
    """Load the corpus splits, encode them with ``tokenizer`` (a resumed run's) or with a
    tokenizer built from the training split (word: PTB normalization for ``ptb``)."""
    texts = {split: load_corpus(config.data, split) for split in SPLITS}
    if tokenizer is None:
        tokenizer = _build_tokenizer(config, texts["train"])
    ids = {split: tokenizer.encode_to_tensor(text) for split, text in texts.items()}
    cls = model_class(config.model)
    block_size = None if cls.is_recurrent else config.model_config.get("block_size", cls.config_class().block_size)
    return TrainingData(config=config, tokenizer=tokenizer, ids=ids, recurrent=cls.is_recurrent, block_size=block_size)


def _build_tokenizer(config: TrainConfig, train_text: str) -> Tokenizer:
    if config.tokenizer == "gpt2":
        return build_tokenizer("gpt2")
    options: dict[str, Any] = {}
    if config.tokenizer == "word":
        options["normalization"] = "ptb" if config.data == "ptb" else "none"
    elif config.tokenizer == "bpe":
        options["vocab_size"] = config.bpe_vocab_size
    return build_tokenizer(config.tokenizer, train_text=train_text, **options)
