"""Training checkpoints: everything needed to continue a run exactly.

A checkpoint folder (``<out>/checkpoints/{last,best,step-N}``) holds

- the model, via ``save_pretrained`` (``config.json``, ``model.safetensors``);
- ``trainer_state.json``: step, epoch, position in the epoch, schedule state;
- ``optimizer.pt``: the optimizer state dict (tensors and numbers only);
- ``rank-<r>.pt``: each process's random-number-generator states and its
  recurrent hidden state (tensors and numbers only).

``.pt`` files are read with ``torch.load(weights_only=True)``: no pickled code.
A folder is written under a temporary name and swapped in with renames, so an
interruption leaves either the old or the new checkpoint, never half of one.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import torch

from lmcore.io import atomic_write, atomic_write_json

TRAINER_STATE = "trainer_state.json"
OPTIMIZER_STATE = "optimizer.pt"


def rank_file(rank: int) -> str:
    return f"rank-{rank}.pt"


def rng_state() -> dict[str, Any]:
    """This process's random-number-generator states."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_torch(path: Path, obj: Any) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_torch(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


def staging_dir(final: Path) -> Path:
    """A fresh temporary folder beside ``final`` to write a checkpoint into."""
    staging = final.with_name(final.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def commit_dir(staging: Path, final: Path) -> None:
    """Swap a fully written ``staging`` folder in place of ``final``."""
    previous = final.with_name(final.name + ".previous")
    shutil.rmtree(previous, ignore_errors=True)
    if final.exists():
        final.rename(previous)
    staging.rename(final)
    shutil.rmtree(previous, ignore_errors=True)


def find_checkpoint(final: Path) -> Path | None:
    """``final`` if it exists, else the previous copy left by an interrupted swap."""
    for candidate in (final, final.with_name(final.name + ".previous")):
        if (candidate / TRAINER_STATE).is_file():
            return candidate
    return None


def write_trainer_state(folder: Path, state: dict[str, Any]) -> None:
    atomic_write_json(folder / TRAINER_STATE, state)


def read_trainer_state(folder: Path) -> dict[str, Any]:
    return json.loads((folder / TRAINER_STATE).read_text(encoding="utf-8"))
