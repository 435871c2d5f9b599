"""Where a result came from: the git commit of the code and the hardware it ran on.

Every record that carries numbers (a training run's ``config.json``, a fine-tuning run's
``config.json``, evaluation reports, benchmark reports) stores these two next to its command,
so that anyone can reproduce it.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> str | None:
    """The checkout's HEAD commit, with ``-dirty`` when tracked files have uncommitted changes;
    None outside a git checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def hardware(device: str | torch.device | None = None) -> dict[str, Any]:
    """Platform, processor, CPU count, torch threads, the device used and the GPU's name (None without one)."""
    device = str(device) if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "gpu": torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None,
    }
