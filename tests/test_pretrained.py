"""lmcore.pretrained.load_pretrained: local folders, offline mirrors, GGUF de-quantization, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel
from transformers.utils.quantization_config import QuantizationMethod

from lmcore import pretrained
from lmcore.paths import MODELS_DIR_ENV
from lmcore.pretrained import load_pretrained

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"


def save_tiny_gpt2(folder: Path, tokenizer_dir: Path) -> GPT2LMHeadModel:
    """A randomly initialised 2-layer, 32-wide GPT-2 with the real GPT-2 tokenizer, saved to ``folder``."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=128)).eval()
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
    return model


def test_local_folder_loads_back_with_same_logits_and_a_pad_token(tmp_path, gpt2_tokenizer_dir):
    original = save_tiny_gpt2(tmp_path / "tiny", gpt2_tokenizer_dir)
    model, tokenizer = load_pretrained(tmp_path / "tiny")

    assert not model.training
    assert model.dtype == torch.float32
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"  # GPT-2 defines no pad token
    input_ids = torch.tensor([tokenizer("The patients improved.")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids).logits, original(input_ids).logits, rtol=0, atol=0)


def test_mirror_is_used_for_a_mirrored_hub_id(tmp_path, gpt2_tokenizer_dir, monkeypatch):
    # A mirror folder with weights stands in for the Hub: "gpt2" must load from it without any download.
    original = save_tiny_gpt2(tmp_path / "models" / "gpt2-tokenizer", gpt2_tokenizer_dir)
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "models"))
    model, _ = load_pretrained("gpt2")
    assert model.config.n_embd == 32
    torch.testing.assert_close(model.transformer.wte.weight, original.transformer.wte.weight, rtol=0, atol=0)


def test_missing_model_says_what_was_tried(tmp_path):
    with pytest.raises(OSError) as error:
        load_pretrained(str(tmp_path / "no-such-model"))
    message = str(error.value)
    assert "no-such-model" in message and "Tried:" in message
    assert MODELS_DIR_ENV in message and SMOLLM2 in message


def test_a_file_that_is_not_gguf_is_refused(tmp_path):
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"\.gguf"):
        load_pretrained(weights)


@pytest.mark.parametrize(
    ("adapter_config", "message"),
    [
        ('{"peft_type": "LORA"}', "names no base model"),
        ('{"peft_type": "LORA", "base_model_name_or_path": "BASE/missing"}', "could not load pretrained model"),
        ("not json", "not a readable adapter config"),
    ],
)
def test_an_adapter_folder_without_a_loadable_base_is_refused(adapter_config, message, tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text(adapter_config.replace("BASE", str(tmp_path)))
    with pytest.raises((ValueError, OSError), match=message):
        load_pretrained(tmp_path / "adapter")


@pytest.mark.slow
def test_smollm2_gguf_mirror_becomes_an_ordinary_float32_model(tmp_path, shared_models_dir, monkeypatch):
    # Keep the model transformers loads from the GGUF file, to compare against it without a second ~25 s load.
    loaded_from_gguf = []
    dequantized_copy = pretrained._dequantized_copy
    monkeypatch.setattr(
        pretrained, "_dequantized_copy", lambda model, dtype: loaded_from_gguf.append(model) or dequantized_copy(model, dtype)
    )

    model, tokenizer = load_pretrained(SMOLLM2)  # resolved through $LMCORE_MODELS_DIR to the GGUF file

    (gguf,) = loaded_from_gguf
    assert gguf.config.quantization_config.quant_method == QuantizationMethod.GGUF  # why we rebuild
    assert getattr(model.config, "quantization_config", None) is None
    assert getattr(model, "hf_quantizer", None) is None
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert tokenizer.pad_token is not None

    input_ids = torch.tensor([tokenizer("Aspirin lowers the risk of")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids).logits, gguf(input_ids).logits, rtol=0, atol=0)

    model.save_pretrained(tmp_path / "smollm2")
    assert (tmp_path / "smollm2" / "model.safetensors").is_file()
