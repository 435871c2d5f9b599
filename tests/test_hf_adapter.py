"""HFCausalLM: a transformers causal LM behind the lmcore interface."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from lmcore.models import GPT, GPTConfig
from lmcore.models.base import IGNORE_INDEX, MODEL_REGISTRY
from lmcore.models.hf import HFCausalLM, as_language_model


def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=24, n_embd=32, n_layer=2, n_head=2)).eval()


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=40,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def test_logits_match_and_loss_uses_shifted_labels():
    hf_model = tiny_gpt2()
    model = HFCausalLM(hf_model)
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(0))
    # lmcore labels are the next tokens, -100 where there is none; HF shifts `labels=ids` itself.
    labels = torch.cat([ids[:, 1:], torch.full((2, 1), IGNORE_INDEX)], dim=1)
    with torch.no_grad():
        ours = model(ids, labels=labels)
        theirs = hf_model(ids, labels=ids)
    assert torch.equal(ours.logits, theirs.logits)
    assert ours.loss == pytest.approx(theirs.loss.item(), rel=1e-6)
    assert ours.state is None


@pytest.mark.parametrize("make_model", [tiny_gpt2, tiny_llama], ids=["gpt2", "llama"])
def test_cache_continues_the_sequence(make_model):
    model = HFCausalLM(make_model())
    ids = torch.randint(0, 50, (1, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids).logits
        first = model(ids[:, :6], use_cache=True)
        second = model(ids[:, 6:8], state=first.state, use_cache=True)
        third = model(ids[:, 8:], state=second.state, use_cache=True)
    assert third.state.get_seq_length() == 10
    stepwise = torch.cat([first.logits, second.logits, third.logits], dim=1)
    assert torch.allclose(stepwise, full, atol=1e-5)


def test_interface_properties():
    gpt2, llama = HFCausalLM(tiny_gpt2()), HFCausalLM(tiny_llama())
    assert gpt2.max_context == 24 and llama.max_context == 40  # n_positions / max_position_embeddings
    assert gpt2.supports_cache and not gpt2.is_recurrent
    assert gpt2.config.vocab_size == 50
    assert gpt2.num_parameters() == tiny_gpt2().num_parameters()
    assert HFCausalLM not in MODEL_REGISTRY.values()


def test_as_language_model():
    gpt = GPT(GPTConfig.from_name("tiny", vocab_size=50))
    assert as_language_model(gpt) is gpt
    hf_model = tiny_gpt2()
    wrapped = as_language_model(hf_model)
    assert isinstance(wrapped, HFCausalLM) and wrapped.model is hf_model
    with pytest.raises(ValueError, match="expected an lmcore LanguageModel or a transformers PreTrainedModel"):
        as_language_model(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="wraps a transformers PreTrainedModel"):
        HFCausalLM(gpt)


def test_save_and_load_round_trip(tmp_path):
    model = HFCausalLM(tiny_gpt2())
    model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "model.safetensors").is_file()
    loaded = HFCausalLM.from_pretrained(tmp_path / "saved").eval()
    ids = torch.arange(10)[None]
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    with pytest.raises(ValueError, match="takes no dtype"):
        model.save_pretrained(tmp_path / "half", dtype=torch.float16)
