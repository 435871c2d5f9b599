"""Shared fixtures.

Tests that need the offline mirrors (``../shared``) use the ``shared_data_dir`` /
``shared_models_dir`` fixtures, which skip with the reason when the mirror is not
configured. ``.ci/run`` sets ``LMCORE_DATA_DIR`` and ``LMCORE_MODELS_DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lmcore.paths import DATA_DIR_ENV, MODELS_DIR_ENV

# The tests are small; one thread each keeps them fast and repeatable on 2 cores.
torch.set_num_threads(1)


def _mirror(variable: str) -> Path:
    value = os.environ.get(variable)
    if not value or not Path(value).is_dir():
        pytest.skip(f"needs the offline mirror: set {variable} to a folder like ../shared/{variable.split('_')[1].lower()}")
    return Path(value)


@pytest.fixture
def shared_data_dir() -> Path:
    """``$LMCORE_DATA_DIR`` (e.g. ../shared/data); skips the test when it is not set."""
    return _mirror(DATA_DIR_ENV)


@pytest.fixture
def shared_models_dir() -> Path:
    """``$LMCORE_MODELS_DIR`` (e.g. ../shared/models); skips the test when it is not set."""
    return _mirror(MODELS_DIR_ENV)


@pytest.fixture
def gpt2_tokenizer_dir(shared_models_dir: Path) -> Path:
    path = shared_models_dir / "gpt2-tokenizer"
    if not path.is_dir():
        pytest.skip(f"needs the GPT-2 tokenizer mirror at {path}")
    return path
