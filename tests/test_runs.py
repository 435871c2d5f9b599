"""Publishing runs: fp16 export that loads back, summary rows, README block."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch

from lmcore.models import load_model
from lmcore.runs import read_run, replace_marked_block
from lmcore.train import resolve_config, train
from lmcore.train.checkpoint import TRAINER_STATE

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def finished_run(tmp_path: Path) -> Path:
    from accelerate.state import AcceleratorState

    corpus = tmp_path / "toy.txt"
    corpus.write_text("the cat sat on the mat .\n" * 300, encoding="utf-8")
    train(resolve_config({"model": "lstm", "preset": "tiny", "data": str(corpus), "out": str(tmp_path / "run"),
                          "sample_prompts": []}), command=["train_lm.py", "--model", "lstm"])
    AcceleratorState._reset_state(reset_partial_state=True)
    return tmp_path / "run"


def test_publish_exports_fp16_checkpoints_and_fills_the_readme(finished_run: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:ptb -->\nSTALE TABLE\n<!-- /results:ptb -->\nend\n", encoding="utf-8")
    result = subprocess.run([sys.executable, str(REPO / "training" / "publish_runs.py"), "--runs", str(finished_run),
                             "--out", str(tmp_path / "assets"), "--readme", str(readme)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    exported = tmp_path / "assets" / "run"
    weights = safetensors.torch.load_file(exported / "checkpoints" / "best" / "model.safetensors")
    assert all(t.dtype == torch.float16 for t in weights.values())
    assert read_run(exported).checkpoint == exported / "checkpoints" / "best"  # no trainer state, still a model
    original, copy = load_model(finished_run / "checkpoints" / "best"), load_model(exported / "checkpoints" / "best")
    ids = torch.randint(0, original.config.vocab_size, (1, 12))
    torch.testing.assert_close(copy(ids).logits, original(ids).logits, atol=5e-2, rtol=1e-2)
    summary = json.loads((tmp_path / "assets" / "summary.json").read_text())
    results = json.loads((finished_run / "results.json").read_text())
    assert summary[0]["test_ppl"] == results["test_ppl"] and summary[0]["model"] == "lstm"
    text = readme.read_text()
    assert "STALE TABLE" not in text and f"{results['test_ppl']:.1f}" in text and text.endswith("end\n")


def test_publish_records_only_compares_each_run_to_the_first(finished_run: Path, tmp_path: Path) -> None:
    changed = tmp_path / "changed"
    shutil.copytree(finished_run, changed)
    results = json.loads((changed / "results.json").read_text())
    results["test_ppl"] *= 1.5
    (changed / "results.json").write_text(json.dumps(results))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:ablations -->\n<!-- /results:ablations -->\n", encoding="utf-8")
    result = subprocess.run([sys.executable, str(REPO / "training" / "publish_runs.py"), "--runs", str(finished_run),
                             str(changed), "--out", str(tmp_path / "assets"), "--records-only", "--compare-to-first",
                             "--block", "results:ablations", "--readme", str(readme)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "assets" / "changed").iterdir()) == sorted(
        p.name for p in changed.iterdir() if p.is_file())  # the records, no checkpoints or tokenizer
    rows = [line for line in readme.read_text().splitlines() if line.startswith("| ")]
    assert "test vs run" in rows[0]
    assert "| +0.0% |" in rows[1] and "| +50.0% |" in rows[2]


def test_publish_refuses_an_unfinished_run(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    result = subprocess.run([sys.executable, str(REPO / "training" / "publish_runs.py"), "--runs", str(tmp_path / "run"),
                             "--out", str(tmp_path / "assets")], capture_output=True, text=True)
    assert result.returncode == 2 and "not a finished run folder" in result.stderr


def test_an_unfinished_run_is_read_leniently_and_its_checkpoint_found(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{truncated", encoding="utf-8")
    run = read_run(tmp_path, "mine")
    assert (run.name, run.config, run.kind, run.model_type, run.tokenizer) == ("mine", {}, "unknown", None, None)
    assert not run.finished and run.checkpoint is None
    previous = tmp_path / "checkpoints" / "last.previous"  # left by a swap that was interrupted
    previous.mkdir(parents=True)
    (previous / TRAINER_STATE).write_text("{}", encoding="utf-8")
    assert read_run(tmp_path).checkpoint == previous
    (tmp_path / "checkpoints" / "best").mkdir()
    (tmp_path / "checkpoints" / "best" / "config.json").write_text("{}", encoding="utf-8")
    assert read_run(tmp_path).checkpoint == tmp_path / "checkpoints" / "best"


def test_marked_block_must_exist() -> None:
    with pytest.raises(ValueError, match="results:ptb"):
        replace_marked_block("no markers", "results:ptb", "x")
