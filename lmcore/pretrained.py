"""Load a pretrained Hugging Face causal language model and its tokenizer.

``load_pretrained`` accepts, in this order of precedence:

1. a local path: a folder written by ``save_pretrained`` (``config.json`` +
   weights), a folder holding a single ``.gguf`` file, a ``.gguf`` file, or a
   PEFT (LoRA) adapter folder (``adapter_config.json``), whose base model
   (``base_model_name_or_path``, resolved by these same rules) is loaded and the
   adapter merged into it (:func:`merge_adapter`);
2. a Hub id with an offline mirror under ``$LMCORE_MODELS_DIR`` (see
   :mod:`lmcore.paths`; e.g. ``HuggingFaceTB/SmolLM2-135M-Instruct`` -> the GGUF
   file in ``smollm2-135m-instruct/``);
3. the Hub id itself (``gpt2``, ``gpt2-medium``, ``Qwen/Qwen2-0.5B``, ...), via
   the ordinary ``from_pretrained`` code path.

A GGUF model comes back from transformers flagged as quantized
(``QuantizationMethod.GGUF``) even though its weights were de-quantized on load;
Trainer/TRL refuse to train such a model and ``save_pretrained`` refuses to save
it. We therefore rebuild the same architecture from its config without the
``quantization_config`` and copy the de-quantized weights in: the result is an
ordinary model with identical logits.

Remote code is never trusted (``trust_remote_code=False``).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from lmcore.paths import MODELS_DIR_ENV, PRETRAINED_MIRRORS, local_mirror

GGUF_SUFFIX = ".gguf"
ADAPTER_CONFIG = "adapter_config.json"
OFFLINE_HINT = (
    f"Offline, a real pretrained model is mirrored: set {MODELS_DIR_ENV} to a folder like ../shared/models "
    "and load 'HuggingFaceTB/SmolLM2-135M-Instruct'."
)


def load_pretrained(
    name_or_path: str | os.PathLike,
    *,
    gguf_file: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` for a causal LM from a local path, an offline mirror or the Hub.

    Args:
        name_or_path: a Hub id (``"gpt2"``), a folder, or a ``.gguf`` file path.
        gguf_file: the GGUF file name inside the folder / Hub repo, when not implied by the path.
        dtype: parameter dtype of the returned model (float32 by default, also for GGUF).
        device: where to put the model.

    Returns:
        The model in eval mode (never flagged as quantized) and its tokenizer, which always
        has a pad token (the eos token when the checkpoint defines none). For an adapter
        folder: the base with the adapter merged in, and the adapter folder's tokenizer
        when it has one, else the base's.

    Raises:
        OSError: nothing loadable was found; the message lists what was tried.
    """
    adapter_dir = Path(name_or_path).expanduser()
    if (adapter_dir / ADAPTER_CONFIG).is_file():
        return _load_with_adapter(adapter_dir, dtype=dtype, device=device)
    source, gguf_file, tried = _resolve(str(name_or_path), gguf_file)
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, **extra)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, trust_remote_code=False, **extra)
    except (OSError, ValueError) as error:
        raise OSError(
            f"could not load pretrained model {str(name_or_path)!r}. Tried: {'; '.join(tried)}. "
            f"Last error: {type(error).__name__}: {error}. {OFFLINE_HINT}"
        ) from error
    if getattr(model.config, "quantization_config", None) is not None:
        model = _dequantized_copy(model, dtype)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device).eval(), tokenizer


def merge_adapter(model: PreTrainedModel, adapter_dir: str | os.PathLike) -> PreTrainedModel:
    """``model`` with the PEFT adapter saved in ``adapter_dir`` merged into its weights.

    The result is an ordinary transformers model of the same class (no PEFT wrapper), in eval
    mode. ``model``'s own modules are changed: pass ``copy.deepcopy(model)`` to keep it.
    """
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload().eval()


def _load_with_adapter(
    adapter_dir: Path, *, dtype: torch.dtype, device: str | torch.device
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The adapter's base model (``base_model_name_or_path``) with the adapter merged in, and a tokenizer."""
    try:
        base = json.loads((adapter_dir / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError) as error:
        raise ValueError(f"{adapter_dir / ADAPTER_CONFIG} is not a readable adapter config: {error}") from None
    if not isinstance(base, str) or not base:
        raise ValueError(
            f"the adapter {adapter_dir} names no base model (base_model_name_or_path in {ADAPTER_CONFIG}); "
            "load the base with load_pretrained and apply the adapter with merge_adapter"
        )
    model, tokenizer = load_pretrained(base, dtype=dtype)
    if (adapter_dir / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(adapter_dir, trust_remote_code=False)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    return merge_adapter(model, adapter_dir).to(device), tokenizer


def _resolve(name: str, gguf_file: str | None) -> tuple[str, str | None, list[str]]:
    """(what to pass to from_pretrained, GGUF file name or None, human-readable list of what was tried)."""
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix != GGUF_SUFFIX:
            raise ValueError(f"{name!r} is a file but not a {GGUF_SUFFIX} file; pass a model folder, a .gguf file or a Hub id")
        return str(path.parent), path.name, [f"local GGUF file {path}"]
    if path.is_dir():
        if gguf_file is None and not (path / "config.json").is_file():
            ggufs = sorted(p.name for p in path.glob(f"*{GGUF_SUFFIX}"))
            if len(ggufs) == 1:
                gguf_file = ggufs[0]
            elif len(ggufs) > 1:
                raise ValueError(f"{path} holds several GGUF files {ggufs}; choose one with gguf_file=")
        return str(path), gguf_file, [f"local folder {path}"]

    tried = [f"local path {name!r} (does not exist)"]
    mirror = local_mirror(name)
    if mirror is not None:
        folder, mirrored_file = mirror
        if mirrored_file is not None:
            return str(folder), mirrored_file, [*tried, f"offline mirror {folder / mirrored_file}"]
        if (folder / "config.json").is_file():
            return str(folder), gguf_file, [*tried, f"offline mirror {folder}"]
        tried.append(f"offline mirror {folder} (holds only a tokenizer, no weights)")
    elif name in PRETRAINED_MIRRORS:
        tried.append(f"offline mirror (not configured or missing: set {MODELS_DIR_ENV})")
    else:
        tried.append(f"offline mirror (none for this id; mirrored ids: {sorted(PRETRAINED_MIRRORS)})")
    tried.append(f"Hugging Face Hub id {name!r}")
    return name, gguf_file, tried


def _dequantized_copy(quantized: PreTrainedModel, dtype: torch.dtype) -> PreTrainedModel:
    """The same architecture and weights, rebuilt without the quantization flag (trainable, saveable)."""
    config = copy.deepcopy(quantized.config)
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=False)
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.generation_config = copy.deepcopy(quantized.generation_config)
    return model
