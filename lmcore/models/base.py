"""The interface every lmcore language model shares.

A model is a config dataclass plus an ``nn.Module``:

- ``forward(input_ids, state=None, labels=None, use_cache=False) -> LMOutput``
  with ``input_ids`` and ``labels`` of shape ``(batch, time)``.
  ``labels[b, t]`` is the target for position ``t`` (already shifted: the token
  that follows ``input_ids[b, t]``); ``-100`` marks positions without a target.
  This differs from transformers' convention (which shifts inside the model) so
  that a token stream cut into blocks loses no targets at block boundaries.
- Recurrent models (``is_recurrent``) return their new hidden ``state`` on every
  call; the caller carries it to the next block and detaches it for truncated
  back-propagation through time.
- Models with a KV cache (``supports_cache``) return it as ``state`` when
  ``use_cache=True``; passing it back continues the sequence.
- ``save_pretrained(dir)`` writes ``config.json`` + ``model.safetensors`` (+ a
  model card); ``from_pretrained(dir)`` reads them back, for the matching class,
  and ``lmcore.models.load_model(dir)`` for any type.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from lmcore.io import atomic_write, atomic_write_json, atomic_write_text

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
IGNORE_INDEX = -100

# model_type -> model class, filled in by LanguageModel.__init_subclass__.
MODEL_REGISTRY: dict[str, type[LanguageModel]] = {}


# ---------------------------------------------------------------------------- input and config checks
def check_positive_int(name: str, value: Any) -> None:
    """ValueError unless ``value`` is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_dropout(value: Any) -> None:
    """ValueError unless ``value`` is a probability in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"dropout must be a number in [0, 1), got {value!r}")


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    """ValueError unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}")


def check_tokens(input_ids: Any, labels: Any, vocab_size: int) -> None:
    """ValueError unless ``input_ids`` is a non-empty (batch, time) tensor of int64 or int32 ids in
    ``[0, vocab_size)`` and ``labels`` is None or an int64 tensor of the same shape."""
    is_token_matrix = isinstance(input_ids, torch.Tensor) and input_ids.dim() == 2
    if not is_token_matrix or input_ids.dtype not in (torch.long, torch.int32):
        described = (
            f"shape {tuple(input_ids.shape)} and dtype {input_ids.dtype}" if isinstance(input_ids, torch.Tensor)
            else type(input_ids).__name__
        )
        raise ValueError(f"input_ids must be a (batch, time) tensor of int64 or int32 token ids, got {described}")
    if input_ids.numel() == 0:
        raise ValueError(f"input_ids must hold at least one token, got shape {tuple(input_ids.shape)}")
    # A data-dependent check: skipped under torch.compile, where it would break the graph.
    if not torch.compiler.is_compiling():
        low, high = (int(v) for v in torch.aminmax(input_ids))
        if low < 0 or high >= vocab_size:
            raise ValueError(
                f"token ids must be in [0, {vocab_size}) (vocab_size), got ids in [{low}, {high}]"
            )
    if labels is not None and (
        not isinstance(labels, torch.Tensor) or labels.shape != input_ids.shape or labels.dtype != torch.long
    ):
        described = (
            f"shape {tuple(labels.shape)} and dtype {labels.dtype}" if isinstance(labels, torch.Tensor)
            else type(labels).__name__
        )
        raise ValueError(
            f"labels must be an int64 tensor with the shape of input_ids {tuple(input_ids.shape)}, got {described}"
        )


@dataclass
class LMConfig:
    """Fields every model config has. Subclasses add their own and set ``model_type``."""

    model_type: ClassVar[str] = ""

    vocab_size: int = 10_000
    tie_weights: bool = True  # share the input embedding and the output projection

    def __post_init__(self) -> None:
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size must be at least 2, got {self.vocab_size}")

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": self.model_type, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LMConfig:
        values = dict(values)
        model_type = values.pop("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ValueError(
                f"config is for model type {model_type!r}, not {cls.model_type!r}; "
                f"load it with lmcore.models.load_model or the {model_type!r} class"
            )
        allowed = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise ValueError(
                f"unknown {cls.model_type} config field(s) {unknown}; allowed: {sorted(allowed)}"
            )
        return cls(**values)


@dataclass
class LMOutput:
    """What ``forward`` returns."""

    logits: torch.Tensor  # (batch, time, vocab): unnormalised next-token scores
    loss: torch.Tensor | None = None  # scalar: mean cross-entropy (nats) over labels != -100
    state: Any = None  # recurrent hidden state, or KV cache when use_cache=True


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy in nats.

    logits: (batch, time, vocab); labels: (batch, time), already shifted, -100 = ignore.
    """
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=IGNORE_INDEX
    )


class LanguageModel(nn.Module):
    """Base class: registry, parameter count, save/load. Subclasses implement ``forward``."""

    config_class: ClassVar[type[LMConfig]] = LMConfig
    is_recurrent: ClassVar[bool] = False  # carries a hidden state across blocks
    supports_cache: ClassVar[bool] = False  # forward(use_cache=True) returns a KV cache

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        model_type = cls.config_class.model_type
        if model_type:
            MODEL_REGISTRY[model_type] = cls

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise ValueError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config

    @property
    def device(self) -> torch.device:
        """Where the model's parameters are (the CPU for a model without any)."""
        for tensor in self.parameters():
            return tensor.device
        return torch.device("cpu")

    @property
    def max_context(self) -> int | None:
        """Longest input (in tokens) the model can attend to; None when unbounded (recurrent)."""
        return None

    def forward(
        self,
        input_ids: torch.Tensor,
        state: Any = None,
        labels: torch.Tensor | None = None,
        use_cache: bool = False,
    ) -> LMOutput:
        raise NotImplementedError

    def detach_state(self, state: Any) -> Any:
        """Cut the autograd graph behind a recurrent state (truncated BPTT)."""
        if state is None:
            return None
        if isinstance(state, torch.Tensor):
            return state.detach()
        return type(state)(self.detach_state(item) for item in state)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters; tied weights are counted once."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, save_directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write ``config.json``, ``model.safetensors`` and a model card, each atomically.

        ``dtype`` (e.g. ``torch.float16``) stores the weights in a smaller type;
        ``from_pretrained`` casts them back to float32.
        """
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        state_dict = {name: tensor.detach().to("cpu") for name, tensor in self.state_dict().items()}
        if dtype is not None:
            state_dict = {
                name: tensor.to(dtype) if tensor.is_floating_point() else tensor
                for name, tensor in state_dict.items()
            }
        state_dict = _drop_tied_duplicates(self, state_dict)
        atomic_write(
            directory / WEIGHTS_NAME,
            lambda tmp: safetensors.torch.save_file(
                {k: v.contiguous() for k, v in state_dict.items()}, str(tmp), metadata={"format": "pt"}
            ),
        )
        atomic_write_json(directory / CONFIG_NAME, self.config.to_dict())
        atomic_write_text(directory / "README.md", self.model_card())
        return directory

    @classmethod
    def from_pretrained(cls, load_directory: str | Path, map_location: str | torch.device = "cpu") -> LanguageModel:
        """Load a folder written by ``save_pretrained`` (weights via safetensors only)."""
        directory = Path(load_directory)
        config_path = directory / CONFIG_NAME
        weights_path = directory / WEIGHTS_NAME
        if not config_path.is_file() or not weights_path.is_file():
            raise FileNotFoundError(
                f"{directory} is not an lmcore model folder: it needs {CONFIG_NAME} and {WEIGHTS_NAME}"
            )
        values = json.loads(config_path.read_text(encoding="utf-8"))
        config = cls.config_class.from_dict(values)
        model = cls(config)
        state_dict = safetensors.torch.load_file(str(weights_path), device=str(map_location))
        reference = model.state_dict()
        state_dict = {name: tensor.to(reference[name].dtype) for name, tensor in state_dict.items() if name in reference}
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        missing = [name for name in missing if not _is_tied_alias(model, name)]
        if missing or unexpected:
            raise ValueError(
                f"weights in {weights_path} do not fit a {cls.config_class.model_type} model with this config: "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        return model.to(map_location)

    def model_card(self) -> str:
        config = json.dumps(self.config.to_dict(), indent=2)
        return (
            f"---\nlibrary_name: lmcore\ntags:\n- lmcore\n- {self.config.model_type}\n- text-generation\n---\n\n"
            f"# {self.config.model_type} language model\n\n"
            f"A `{type(self).__name__}` trained with lmcore (Train Your Own GPT), "
            f"{self.num_parameters():,} parameters.\n\n"
            "```python\nfrom lmcore.models import load_model\nmodel = load_model(\"<this folder>\")\n```\n\n"
            f"## Config\n\n```json\n{config}\n```\n"
        )


def _tied_groups(model: nn.Module) -> list[list[str]]:
    """Names of state-dict entries that share storage (tied weights)."""
    by_pointer: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        by_pointer.setdefault(tensor.data_ptr(), []).append(name)
    return [names for names in by_pointer.values() if len(names) > 1]


def _drop_tied_duplicates(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for names in _tied_groups(model):
        for alias in names[1:]:
            state_dict.pop(alias, None)
    return state_dict


def _is_tied_alias(model: nn.Module, name: str) -> bool:
    return any(name in names[1:] for names in _tied_groups(model))
