"""The reference artefacts shipped in assets/: fp16 safetensors within the app's 25 MB budget,
runs that load and generate, summaries that agree with the runs' own results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmcore.data import load_tokenizer
from lmcore.generate import generate
from lmcore.models import load_model
from lmcore.runs import read_run

ASSETS = Path(__file__).resolve().parents[1] / "assets"
WEIGHTS_BUDGET_BYTES = 25_000_000  # the app issue: reference checkpoints and adapter, at most 25 MB in all
REFERENCE_RUNS = sorted(path for path in (ASSETS / "runs").iterdir() if path.is_dir())


def test_reference_weights_are_fp16_safetensors_within_the_budget() -> None:
    weights = sorted(ASSETS.rglob("*.safetensors"))
    assert weights, "assets/ ships no reference weights"
    assert not [path for pattern in ("*.bin", "*.pt", "*.pth", "*.pkl") for path in ASSETS.rglob(pattern)]
    for path in weights:
        dtypes = {tensor.dtype for tensor in load_file(path).values() if tensor.is_floating_point()}
        assert dtypes == {torch.float16}, f"{path} holds {dtypes}"
    assert sum(path.stat().st_size for path in weights) <= WEIGHTS_BUDGET_BYTES


@pytest.mark.parametrize("run_dir", REFERENCE_RUNS, ids=[path.name for path in REFERENCE_RUNS])
def test_each_reference_run_loads_generates_and_matches_the_summary(run_dir: Path) -> None:
    run = read_run(run_dir)
    assert run.finished and run.checkpoint == run_dir / "checkpoints" / "best"
    model = load_model(run.checkpoint).eval()
    assert model.num_parameters() == run.num_parameters
    output = generate(model, load_tokenizer(run_dir / "tokenizer"), "the meaning of life is", max_new_tokens=5,
                      stop_at_eos=False)
    assert output.finish_reason == "length" and len(output.token_ids) == 5 and output.text.strip()
    summary = {row["run"]: row for row in json.loads((ASSETS / "runs" / "summary.json").read_text())}
    assert summary[run.name]["test_ppl"] == run.results["test_ppl"]
    assert summary[run.name]["git_commit"] == run.config["git_commit"]


def test_published_adapters_name_a_hub_base_model() -> None:
    """An adapter's base must be loadable on another machine: a Hub id, not a path on the machine that trained it."""
    for adapter_config in (ASSETS / "finetune").glob("*/adapter/adapter_config.json"):
        base = json.loads(adapter_config.read_text())["base_model_name_or_path"]
        assert len(base.split("/")) == 2 and not base.startswith((".", "/")), f"{adapter_config}: base {base!r}"
