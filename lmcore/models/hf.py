"""Use a Hugging Face causal LM wherever an lmcore model goes.

:class:`HFCausalLM` wraps any ``transformers`` causal LM (``GPT2LMHeadModel``,
``LlamaForCausalLM``, ...) behind the lmcore interface, so perplexity and
generation run one code path for models trained here and pretrained ones::

    hf_model = AutoModelForCausalLM.from_pretrained("gpt2")
    model = HFCausalLM(hf_model)  # or as_language_model(hf_model)
    out = model(input_ids, labels=targets)  # targets already shifted, -100 = ignore

Differences from calling the Hugging Face model directly:

- ``labels`` follow the lmcore convention (already shifted, same shape as
  ``input_ids``); the loss is computed here with :func:`lm_loss`, never by the
  wrapped model (which would shift the labels a second time).
- The KV cache (a ``transformers`` ``Cache``, e.g. ``DynamicCache``) travels as
  ``state``: ``forward(ids, use_cache=True)`` returns it, and
  ``forward(next_ids, state=cache, use_cache=True)`` continues the sequence.

The wrapper is not in the lmcore model registry: saving writes the wrapped
model's own Hugging Face folder, which ``HFCausalLM.from_pretrained`` (or
``AutoModelForCausalLM``) reads back. Pretrained models (Hub, offline mirror,
GGUF) load with :func:`lmcore.pretrained.load_pretrained`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from lmcore.models.base import LanguageModel, LMConfig, LMOutput, lm_loss


class HFCausalLM(LanguageModel):
    """A ``transformers`` causal LM behind the lmcore ``forward`` interface."""

    config_class = LMConfig  # model_type "" keeps the wrapper out of MODEL_REGISTRY
    supports_cache = True

    def __init__(self, hf_model: PreTrainedModel) -> None:
        if not isinstance(hf_model, PreTrainedModel):
            raise ValueError(f"HFCausalLM wraps a transformers PreTrainedModel, got {type(hf_model).__name__}")
        text_config = hf_model.config.get_text_config(decoder=True)
        super().__init__(
            LMConfig(
                vocab_size=text_config.vocab_size,
                tie_weights=bool(getattr(text_config, "tie_word_embeddings", False)),
            )
        )
        self.model = hf_model
        self.train(hf_model.training)  # nn.Module starts in train mode; follow the wrapped model instead

    @property
    def max_context(self) -> int | None:
        """``max_position_embeddings`` (``n_positions`` for GPT-2) from the wrapped model's config."""
        text_config = self.model.config.get_text_config(decoder=True)
        for name in ("max_position_embeddings", "n_positions"):
            value = getattr(text_config, name, None)
            if value is not None:
                return int(value)
        return None

    def forward(
        self,
        input_ids: torch.Tensor,
        state: Any = None,
        labels: torch.Tensor | None = None,
        use_cache: bool = False,
    ) -> LMOutput:
        """input_ids, labels: (batch, time); state: a ``transformers`` Cache from an earlier call, or None.

        Returns logits (batch, time, vocab), the mean loss over labels != -100 when
        labels are given, and the updated cache as ``state`` when ``use_cache``.
        """
        output = self.model(input_ids=input_ids, past_key_values=state, use_cache=use_cache)
        logits = output.logits  # (batch, time, vocab)
        loss = lm_loss(logits, labels) if labels is not None else None
        return LMOutput(logits=logits, loss=loss, state=output.past_key_values if use_cache else None)

    def save_pretrained(self, save_directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write the wrapped model's Hugging Face folder (``config.json`` + safetensors weights)."""
        if dtype is not None:
            raise ValueError("HFCausalLM.save_pretrained takes no dtype: cast the model with .to(dtype) first")
        directory = Path(save_directory)
        self.model.save_pretrained(directory)
        return directory

    @classmethod
    def from_pretrained(cls, load_directory: str | Path, map_location: str | torch.device = "cpu") -> HFCausalLM:
        """Read back a folder written by :meth:`save_pretrained` (safetensors weights, no remote code).

        For pretrained models (Hub ids, offline mirrors, GGUF files) use
        :func:`lmcore.pretrained.load_pretrained` and wrap the model it returns.
        """
        hf_model = AutoModelForCausalLM.from_pretrained(
            str(load_directory), use_safetensors=True, trust_remote_code=False
        )
        return cls(hf_model).to(map_location)


def as_language_model(model: LanguageModel | PreTrainedModel) -> LanguageModel:
    """The model itself if it is an lmcore model; a Hugging Face model wrapped in :class:`HFCausalLM`."""
    if isinstance(model, LanguageModel):
        return model
    if isinstance(model, PreTrainedModel):
        return HFCausalLM(model)
    raise ValueError(
        f"expected an lmcore LanguageModel or a transformers PreTrainedModel, got {type(model).__name__}"
    )


def tokenizer_encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` from an lmcore tokenizer, or from a Hugging Face one without added special tokens."""
    if isinstance(tokenizer, PreTrainedTokenizerBase):
        return list(tokenizer.encode(text, add_special_tokens=False))
    return list(tokenizer.encode(text))


def tokenizer_eos_id(tokenizer: Any) -> int | None:
    """The end-of-text id of an lmcore tokenizer (``eos_id``) or a Hugging Face one (``eos_token_id``)."""
    if isinstance(tokenizer, PreTrainedTokenizerBase):
        return tokenizer.eos_token_id
    return getattr(tokenizer, "eos_id", None)
