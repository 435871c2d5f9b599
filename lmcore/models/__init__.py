"""Language models written from scratch: ``rnn``, ``lstm``, ``transformer``, ``gpt``.

All share the interface in :mod:`lmcore.models.base`. Build one by type name with
:func:`build_model`, load any saved one with :func:`load_model`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmcore.models.base import CONFIG_NAME, MODEL_REGISTRY, LanguageModel, LMConfig, LMOutput, lm_loss
from lmcore.models.gpt import GPT, GPTConfig
from lmcore.models.lstm import LSTMLM, LSTMConfig
from lmcore.models.rnn import RNNLM, RNNConfig
from lmcore.models.transformer import TransformerConfig, TransformerLM

MODEL_TYPES: tuple[str, ...] = ("rnn", "lstm", "transformer", "gpt")


def model_class(model_type: str) -> type[LanguageModel]:
    """The class for a model type name; ValueError listing the allowed names otherwise."""
    if model_type not in MODEL_REGISTRY:
        raise ValueError(f"unknown model type {model_type!r}; allowed: {', '.join(MODEL_TYPES)}")
    return MODEL_REGISTRY[model_type]


def build_model(model_type: str, **config: Any) -> LanguageModel:
    """A freshly initialised model, e.g. ``build_model("lstm", vocab_size=10000, hidden_size=200)``."""
    cls = model_class(model_type)
    return cls(cls.config_class.from_dict(config))


def load_model(path: str | Path, map_location: str = "cpu") -> LanguageModel:
    """Load any folder written by ``save_pretrained``, whatever its model type."""
    config_path = Path(path) / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{path} is not an lmcore model folder: no {CONFIG_NAME}")
    model_type = json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    return model_class(model_type).from_pretrained(path, map_location=map_location)


__all__ = [
    "GPT", "GPTConfig", "LSTMLM", "LSTMConfig", "RNNLM", "RNNConfig", "TransformerConfig", "TransformerLM",
    "LanguageModel", "LMConfig", "LMOutput", "MODEL_TYPES", "build_model", "load_model", "lm_loss", "model_class",
]
