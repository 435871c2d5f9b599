"""Where lmcore finds local copies of corpora and pretrained models.

Every corpus and pretrained model loads from the Hugging Face Hub by default.
Two environment variables point lmcore at offline mirrors instead (laid out like
``../shared/data`` and ``../shared/models``):

- ``LMCORE_DATA_DIR``: a folder with ``ptb/``, ``wikitext-2/``, ``wikitext-2-raw/``,
  ``tinyshakespeare/`` and ``pubmedqa/``.
- ``LMCORE_MODELS_DIR``: a folder with ``gpt2-tokenizer/`` and
  ``smollm2-135m-instruct/``.

When a mirror is configured and holds the requested item, it is used; otherwise
the Hub code path runs unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "LMCORE_DATA_DIR"
MODELS_DIR_ENV = "LMCORE_MODELS_DIR"

# Hub id -> (folder under LMCORE_MODELS_DIR, file inside it or None for a whole folder).
PRETRAINED_MIRRORS: dict[str, tuple[str, str | None]] = {
    "gpt2": ("gpt2-tokenizer", None),
    "openai-community/gpt2": ("gpt2-tokenizer", None),
    "HuggingFaceTB/SmolLM2-135M-Instruct": (
        "smollm2-135m-instruct",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}


def _env_dir(variable: str) -> Path | None:
    value = os.environ.get(variable)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ValueError(f"{variable}={value!r} is not a directory; unset it or point it at a folder like ../shared/{variable.split('_')[1].lower()}")
    return path


def data_dir() -> Path | None:
    """The local corpus mirror (``$LMCORE_DATA_DIR``), or None to use the Hub."""
    return _env_dir(DATA_DIR_ENV)


def models_dir() -> Path | None:
    """The local pretrained-model mirror (``$LMCORE_MODELS_DIR``), or None to use the Hub."""
    return _env_dir(MODELS_DIR_ENV)


def local_mirror(hub_id: str) -> tuple[Path, str | None] | None:
    """The mirrored folder (and file, for GGUF) of a Hub model id, if configured and present."""
    root = models_dir()
    if root is None or hub_id not in PRETRAINED_MIRRORS:
        return None
    folder, filename = PRETRAINED_MIRRORS[hub_id]
    path = root / folder
    if not path.is_dir() or (filename is not None and not (path / filename).is_file()):
        return None
    return path, filename
