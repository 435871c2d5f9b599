"""Learning-rate schedules, stepped by the training loop.

- ``constant``: the peak lr.
- ``plateau``: divide the lr by ``factor`` after ``patience`` epochs without a
  better validation loss (factor 4, patience 1: the classic word-level LM schedule
  of Zaremba et al. and PyTorch's word_language_model; factor 2, patience 2:
  halve-on-plateau).
- ``cosine``: cosine decay from the peak to ``peak * min_lr_ratio`` over the run.

Every schedule starts with ``warmup_steps`` of linear warmup from 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class LRSchedule:
    kind: str
    peak_lr: float
    total_steps: int
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    factor: float = 4.0
    patience: int = 1
    # State that changes during training (saved in checkpoints).
    plateau_scale: float = 1.0
    best_valid_loss: float = math.inf
    epochs_without_improvement: int = 0

    def lr_at(self, step: int) -> float:
        """Learning rate for optimizer step ``step`` (0-based)."""
        warmup = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        if self.kind == "cosine":
            progress = min(1.0, max(0, step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
            floor = self.min_lr_ratio
            decay = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
            return self.peak_lr * warmup * decay
        return self.peak_lr * warmup * self.plateau_scale

    def end_epoch(self, valid_loss: float) -> bool:
        """Record an epoch's validation loss; True if it is the best so far."""
        improved = valid_loss < self.best_valid_loss
        if improved:
            self.best_valid_loss = valid_loss
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
            if self.kind == "plateau" and self.epochs_without_improvement % self.patience == 0:
                self.plateau_scale /= self.factor
        return improved

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("plateau_scale", "best_valid_loss", "epochs_without_improvement"):
            setattr(self, key, state[key])
