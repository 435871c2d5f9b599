"""The model registry: lazy loading, caching, "unavailable: reason", LoRA adapters, finding fine-tuned models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from app_fixtures import tiny_hf_models, tiny_run

from lmcore.app import AppConfig, AppState
from lmcore.app.registry import (
    ModelRegistry,
    ModelUnavailable,
    find_finetuned,
    finetuned_spec,
    model_family,
    pretrained_spec,
    run_spec,
)
from lmcore.models import load_model
from lmcore.runs import read_run


def test_a_run_loads_on_first_use_and_is_then_cached() -> None:
    run = read_run(tiny_run("gpt"))
    registry = ModelRegistry([run_spec(run)])
    assert registry.status("toy-gpt") == "not loaded yet"
    loaded = registry.get("toy-gpt")
    assert registry.status("toy-gpt") == "loaded"
    assert registry.get("toy-gpt") is loaded
    reference = load_model(run.path / "checkpoints" / "best")
    ids = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(loaded.model(ids).logits, reference(ids).logits)
    assert loaded.num_parameters == reference.num_parameters()


def test_a_changed_checkpoint_is_reloaded(tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(tiny_run("rnn"), folder)
    registry = ModelRegistry([run_spec(read_run(folder))])
    first = registry.get("copy")
    model = load_model(folder / "checkpoints" / "best")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    model.save_pretrained(folder / "checkpoints" / "best")
    second = registry.get("copy")
    assert second is not first
    assert not torch.equal(next(second.model.parameters()), next(first.model.parameters()))


def test_missing_models_are_unavailable_with_a_reason_never_a_crash(tmp_path: Path) -> None:
    no_checkpoint = tmp_path / "fresh"
    no_checkpoint.mkdir()
    (no_checkpoint / "config.json").write_text(json.dumps({"config": {"model": "lstm"}}))
    registry = ModelRegistry([run_spec(read_run(no_checkpoint)), pretrained_spec(str(tmp_path / "nothing-here"))])
    assert registry.status("fresh").startswith("unavailable: no checkpoint yet")
    with pytest.raises(ModelUnavailable, match="no checkpoint yet"):
        registry.get("fresh")
    missing = str(tmp_path / "nothing-here")
    with pytest.raises(ModelUnavailable, match="could not load pretrained model"):
        registry.get(missing)
    assert registry.status(missing).startswith("unavailable: OSError: could not load")  # remembered, not retried
    registry.forget(missing)
    assert registry.status(missing) == "not loaded yet"
    with pytest.raises(ValueError, match="unknown model '../etc'; available: fresh"):
        registry.spec("../etc")


def test_a_lora_adapter_is_merged_into_a_copy_of_its_base(gpt2_tokenizer_dir: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_dir, adapter_dir = tiny_hf_models(str(gpt2_tokenizer_dir))
    registry = ModelRegistry([pretrained_spec(str(base_dir)), finetuned_spec(adapter_dir, str(base_dir), name="tuned")])
    tuned = registry.get("tuned")
    base = registry.get(str(base_dir))
    expected = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), str(adapter_dir)).eval()
    ids = torch.tensor([[464, 3290, 318]])
    with torch.no_grad():
        torch.testing.assert_close(tuned.model(ids).logits, expected(ids).logits, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(tuned.model(ids).logits, base.model(ids).logits)  # the base was not modified
        assert not any("lora" in name for name, _ in base.model.named_parameters())
    assert tuned.tokenizer is base.tokenizer


def test_an_adapter_whose_base_is_unavailable_says_so(tmp_path: Path, gpt2_tokenizer_dir: Path) -> None:
    _, adapter_dir = tiny_hf_models(str(gpt2_tokenizer_dir))
    registry = ModelRegistry([pretrained_spec("missing-base"), finetuned_spec(adapter_dir, "missing-base", name="t")])
    with pytest.raises(ModelUnavailable, match="its base model 'missing-base' is unavailable"):
        registry.get("t")


def test_fine_tuned_models_are_matched_to_their_base_family(tmp_path: Path) -> None:
    assert model_family("HuggingFaceTB/SmolLM2-135M-Instruct") == model_family("/m/smollm2-135m-instruct") == "smollm2"
    assert model_family("openai-community/gpt2") == "gpt2"
    finetune = tmp_path / "finetune"
    smol_run = finetune / "smollm2-lora"  # a training/finetune.py run folder: adapter/ + merged/
    (smol_run / "adapter").mkdir(parents=True)
    (smol_run / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/x/y.gguf"}))
    (smol_run / "config.json").write_text(json.dumps({"method": "lora", "base": "HuggingFaceTB/SmolLM2-135M-Instruct"}))
    gpt2_merged = finetune / "gpt2-sft" / "model"
    gpt2_merged.mkdir(parents=True)
    (gpt2_merged / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (gpt2_merged / "model.safetensors").write_bytes(b"")
    (finetune / "gpt2-sft" / "config.json").write_text(json.dumps({"method": "sft", "base": "gpt2"}))
    assert find_finetuned(finetune, "HuggingFaceTB/SmolLM2-135M-Instruct") == smol_run / "adapter"
    assert find_finetuned(finetune, "gpt2") == gpt2_merged
    assert find_finetuned(finetune, "Qwen/Qwen2-0.5B") is None
    assert find_finetuned(tmp_path / "absent", "gpt2") is None


def test_app_state_collects_runs_pretrained_and_fine_tuned_models(tmp_path: Path, gpt2_tokenizer_dir: Path) -> None:
    base_dir, adapter_dir = tiny_hf_models(str(gpt2_tokenizer_dir))
    runs_dir = tiny_run("lstm").parent
    config = AppConfig.from_env({
        "HF_HUB_OFFLINE": "1", "LMCORE_ASSETS_DIR": str(adapter_dir.parents[1]), "LMCORE_RUN_DIRS": str(runs_dir),
        "LMCORE_APP_MODELS": "", "LMCORE_PUBMEDQA_BASE": str(base_dir),
    })  # fmt: skip
    state = AppState.create(config)
    assert state.pubmedqa_base == "tiny-gpt2"
    assert state.pubmedqa_finetuned == "tiny-gpt2 + PubMedQA fine-tuning"  # found under assets/finetune
    assert "toy-lstm" in state.registry.names("run")
    assert state.registry.spec(state.pubmedqa_finetuned).source == str(adapter_dir)
    missing = AppState.create(AppConfig.from_env({**{"HF_HUB_OFFLINE": "1", "LMCORE_APP_MODELS": ""},
                                                  "LMCORE_ASSETS_DIR": str(tmp_path), "LMCORE_RUN_DIRS": str(tmp_path)}))
    assert missing.pubmedqa_finetuned is None and "no fine-tuned model" in missing.finetuned_missing_reason
    assert missing.pubmedqa_base == "HuggingFaceTB/SmolLM2-135M-Instruct"  # offline default


def test_online_the_pubmedqa_tab_uses_gpt2_only_when_its_fine_tuned_version_is_shipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lmcore.app import config as app_config

    monkeypatch.setattr(app_config, "_can_connect", lambda host, port, timeout: True)  # the Hub answers
    assets = tmp_path / "assets"
    (assets / "finetune").mkdir(parents=True)
    online = AppConfig.from_env({"LMCORE_ASSETS_DIR": str(assets)})
    assert online.online and online.pretrained_models == ["gpt2"]
    assert online.pubmedqa_base == "HuggingFaceTB/SmolLM2-135M-Instruct"  # no fine-tuned GPT-2 to compare with
    adapter = assets / "finetune" / "gpt2-lora-qa" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "gpt2"}))
    assert AppConfig.from_env({"LMCORE_ASSETS_DIR": str(assets)}).pubmedqa_base == "gpt2"


def test_configuration_from_environment_variables(tmp_path: Path) -> None:
    config = AppConfig.from_env({
        "HF_HUB_OFFLINE": "1", "LMCORE_RUN_DIRS": f"{tmp_path / 'a'}:{tmp_path / 'b'}", "LMCORE_SPACE": "1",
        "LMCORE_APP_MODELS": "gpt2, /m/x ,", "LMCORE_APP_MAX_NEW_TOKENS": "32", "LMCORE_DEVICE": "auto",
    })  # fmt: skip
    assert config.run_dirs == [tmp_path / "a", tmp_path / "b"] and config.train_dir == tmp_path / "a"
    assert config.space_mode and config.pretrained_models == ["gpt2", "/m/x"] and config.max_new_tokens == 32
    assert config.device == "cpu" and not config.online
    assert AppConfig.from_env({"HF_HUB_OFFLINE": "1", "SPACE_ID": "user/space"}).space_mode
    assert not AppConfig.from_env({"HF_HUB_OFFLINE": "1", "SPACE_ID": "user/space", "LMCORE_SPACE": "0"}).space_mode
    for variable, value in (("LMCORE_APP_MAX_TEXT_CHARS", "-3"), ("LMCORE_SPACE", "maybe"), ("LMCORE_DEVICE", "gpu9")):
        with pytest.raises(ValueError, match=variable):
            AppConfig.from_env({"HF_HUB_OFFLINE": "1", variable: value})


def test_fp16_reference_checkpoints_load_as_float32(tmp_path: Path) -> None:
    """The shipped reference runs store fp16 weights; the app computes in float32."""
    folder = tmp_path / "fp16-run"
    shutil.copytree(tiny_run("lstm"), folder)
    full = load_model(folder / "checkpoints" / "best")
    full.save_pretrained(folder / "checkpoints" / "best", dtype=torch.float16)
    loaded = ModelRegistry([run_spec(read_run(folder))]).get("fp16-run")
    assert {parameter.dtype for parameter in loaded.model.parameters()} == {torch.float32}
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, full(ids).logits, rtol=0, atol=2e-2)
