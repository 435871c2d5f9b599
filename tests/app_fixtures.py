"""Builders shared by the app tests (tests/test_app_*.py): tiny run folders and tiny Hugging Face models.

Each builder caches its result for the whole test session (in a temporary folder), so the
test modules that import it train each tiny run once.
"""

from __future__ import annotations

import random
import tempfile
from functools import cache
from pathlib import Path

TOY_SUBJECTS = ["the cat", "a dog", "my friend", "the bird"]
TOY_VERBS = ["sees", "likes", "finds"]
TOY_OBJECTS = ["the ball", "a tree", "some food"]


def gpt2_tokenizer_path() -> Path:
    """The GPT-2 tokenizer mirror, for module-scoped fixtures (conftest's ``gpt2_tokenizer_dir`` is per test);
    skips with the same reason when the mirror is not configured."""
    import os

    import pytest

    folder = Path(os.environ.get("LMCORE_MODELS_DIR") or "/nonexistent") / "gpt2-tokenizer"
    if not folder.is_dir():
        pytest.skip("needs the offline mirror: set LMCORE_MODELS_DIR to a folder like ../shared/models")
    return folder


@cache
def session_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="lmcore-app-tests-"))


@cache
def toy_corpus() -> Path:
    """A small regular language (a few hundred short sentences), learnable in a few steps."""
    rng = random.Random(0)
    lines = [f"{rng.choice(TOY_SUBJECTS)} {rng.choice(TOY_VERBS)} {rng.choice(TOY_OBJECTS)} ." for _ in range(600)]
    path = session_dir() / "toy.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@cache
def tiny_run(model: str, steps: int = 12) -> Path:
    """``<session>/runs/toy-<model>``: a finished tiny run of lmcore.train on the toy corpus."""
    from accelerate.state import AcceleratorState, PartialState

    from lmcore.train import resolve_config, train

    out = session_dir() / "runs" / f"toy-{model}"
    values = {"model": model, "preset": "tiny", "data": str(toy_corpus()), "tokenizer": "word", "out": str(out),
              "sample_prompts": ["the cat"], "max_steps": steps, "log_every": 4}
    try:
        train(resolve_config(values), command=["training/train_lm.py", "--model", model, "--preset", "tiny"])
    finally:  # the next in-process run builds its own Accelerator
        AcceleratorState._reset_state(reset_partial_state=True)
        PartialState._reset_state()
    return out


@cache
def tiny_hf_models(tokenizer_dir: str) -> tuple[Path, Path]:
    """(a tiny random GPT-2 folder with the real GPT-2 tokenizer, a LoRA adapter folder for it).

    The adapter's weights are random (not zero), so the fine-tuned model differs from the base.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    base_dir = session_dir() / "models" / "tiny-gpt2"
    adapter_dir = session_dir() / "assets" / "finetune" / "pubmedqa-tiny-gpt2-lora"
    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, n_positions=1024))
    model.save_pretrained(base_dir)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(base_dir)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(adapter_dir)
    return base_dir, adapter_dir
