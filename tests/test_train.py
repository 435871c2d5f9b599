"""The training recipe: convergence, run folder, determinism, exact resume, multi-process, bad input."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmcore.io import read_jsonl
from lmcore.models import load_model
from lmcore.train import RunExists, TrainingDiverged, resolve_config, train

REPO = Path(__file__).resolve().parents[1]
TRAIN_LM = REPO / "training" / "train_lm.py"


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Each in-process run builds its own Accelerator."""
    from accelerate.state import AcceleratorState, PartialState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    PartialState._reset_state()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small regular language: learnable in a few dozen steps."""
    rng = random.Random(0)
    subjects, verbs, objects = ["the cat", "a dog", "my friend", "the bird"], ["sees", "likes", "finds"], ["the ball", "a tree", "some food"]
    lines = [f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} ." for _ in range(1500)]
    path = tmp_path_factory.mktemp("corpus") / "toy.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tiny(model: str, corpus: Path, out: Path, **overrides) -> dict:
    values = {"model": model, "preset": "tiny", "data": str(corpus), "tokenizer": "word", "out": str(out),
              "sample_prompts": ["the cat"], **overrides}
    return train(resolve_config(values), command=["test"])


def step_losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_jsonl(out / "metrics.jsonl") if r["event"] == "step"}


@pytest.mark.parametrize("model", ["rnn", "lstm", "transformer", "gpt"])
def test_tiny_run_learns_and_writes_a_complete_run_folder(model: str, corpus: Path, tmp_path: Path) -> None:
    summary = tiny(model, corpus, tmp_path / model, max_steps=40)
    records = read_jsonl(tmp_path / model / "metrics.jsonl")
    for record in records:
        assert {"step", "epoch", "split", "loss", "ppl", "lr", "tokens_per_s", "time"} <= set(record)
        assert math.isclose(record["ppl"], math.exp(record["loss"]), rel_tol=1e-9)
    steps = [r for r in records if r["event"] == "step"]
    assert steps[-1]["loss"] < steps[0]["loss"] - 0.5, "training loss should fall on a regular toy language"
    # The vocabulary has ~16 words; a model that learned the grammar is far below a uniform guess.
    assert summary["test_ppl"] < 8
    assert {r["split"] for r in records} == {"train", "valid", "test"}
    run = tmp_path / model
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["seed"] == 1234 and config["command"] == ["test"]
    assert {"git_commit", "versions", "hardware", "model_config"} <= set(config)
    best = load_model(run / "checkpoints" / "best")
    assert best.config.model_type == model
    assert (run / "checkpoints" / "last" / "optimizer.pt").is_file()
    samples = read_jsonl(run / "samples.jsonl")
    assert {s["strategy"] for s in samples} == {"greedy", "top_p"} and all(isinstance(s["text"], str) for s in samples)
    assert (run / "tokenizer").is_dir()
    assert json.loads((run / "results.json").read_text())["test_ppl"] == summary["test_ppl"]


def test_same_seed_gives_the_same_losses(corpus: Path, tmp_path: Path) -> None:
    tiny("lstm", corpus, tmp_path / "a", max_steps=10, log_every=1, dropout=0.3)
    tiny("lstm", corpus, tmp_path / "b", max_steps=10, log_every=1, dropout=0.3)
    tiny("lstm", corpus, tmp_path / "c", max_steps=10, log_every=1, dropout=0.3, seed=7)
    assert step_losses(tmp_path / "a") == step_losses(tmp_path / "b")
    assert step_losses(tmp_path / "a") != step_losses(tmp_path / "c")


def test_carry_state_false_starts_every_bptt_block_from_zeros(corpus: Path, tmp_path: Path) -> None:
    # Same seed, same weights after step 1: the first loss is the same (both start from zeros), and the
    # second differs only because one run feeds block 2 the state left by block 1 and the other zeros.
    tiny("lstm", corpus, tmp_path / "carry", max_steps=4, log_every=1)
    tiny("lstm", corpus, tmp_path / "reset", max_steps=4, log_every=1, carry_state=False)
    carried, reset = step_losses(tmp_path / "carry"), step_losses(tmp_path / "reset")
    assert carried[1] == reset[1]
    assert all(carried[step] != reset[step] for step in (2, 3, 4))


def test_existing_run_folder_needs_resume(corpus: Path, tmp_path: Path) -> None:
    tiny("rnn", corpus, tmp_path / "run", max_steps=2)
    with pytest.raises(RunExists, match="--resume"):
        tiny("rnn", corpus, tmp_path / "run", max_steps=2)


def test_nan_loss_stops_with_the_step_and_checkpoint(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingDiverged, match=r"at step \d+.*Last good checkpoint"):
        tiny("lstm", corpus, tmp_path / "run", max_steps=20, lr=float("inf"), grad_clip=0.0)


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "LMCORE_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(TRAIN_LM), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.parametrize("model", ["lstm", "gpt"])
def test_interrupted_run_resumes_with_the_same_losses(model: str, corpus: Path, tmp_path: Path) -> None:
    common = ["--model", model, "--preset", "tiny", "--data", str(corpus), "--max-steps", "400", "--log-every", "1",
              "--dropout", "0.2", "--sample-prompts"]
    whole = _cli(*common, "--out", str(tmp_path / "whole"))
    assert whole.wait(timeout=300) == 0, whole.stderr.read()

    run = tmp_path / "cut"
    cut = _cli(*common, "--out", str(run))
    deadline = time.time() + 120
    while time.time() < deadline and len(step_losses(run) if (run / "metrics.jsonl").exists() else {}) < 5:
        time.sleep(0.02)
    cut.send_signal(signal.SIGINT)
    assert cut.wait(timeout=120) == 130, cut.stderr.read()
    stopped_at = max(step_losses(run))
    assert stopped_at < 400, "the interrupt should land before the end"

    resumed = _cli("--resume", "--out", str(run))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    expected, got = step_losses(tmp_path / "whole"), step_losses(run)
    assert got == expected  # every step, before and after the interruption, identical


def test_bad_settings_exit_2_with_the_allowed_values(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(TRAIN_LM), "--model", "mamba"], capture_output=True, text=True)
    assert result.returncode == 2 and "allowed: rnn, lstm, transformer, gpt" in result.stderr
    result = subprocess.run([sys.executable, str(TRAIN_LM), "--model", "gpt", "--hidden-size", "10"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "not settings of the gpt model" in result.stderr
    result = subprocess.run([sys.executable, str(TRAIN_LM), "--resume", "--out", str(tmp_path / "none")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "holds no run" in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_one_and_two_cpu_processes_agree(corpus: Path, tmp_path: Path) -> None:
    """Same global batch on 1 and 2 gloo processes: DDP averages the two halves' gradients,
    which equals the 1-process gradient up to float summation order, so the validation
    perplexities agree to ~1e-5 relative; 1e-3 leaves room for that order over 30 steps."""
    common = ["training/train_lm.py", "--model", "lstm", "--preset", "tiny", "--data", str(corpus), "--cpu", "true",
              "--dropout", "0.0", "--sample-prompts"]
    env = {**os.environ, "LMCORE_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    for processes in (1, 2):
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                        "--master_port", str(_free_port()), *common, "--out", str(tmp_path / f"p{processes}")],
                       cwd=REPO, env=env, check=True, capture_output=True, timeout=300)
    results = [json.loads((tmp_path / f"p{p}" / "results.json").read_text()) for p in (1, 2)]
    config = json.loads((tmp_path / "p2" / "config.json").read_text())
    assert config["hardware"]["num_processes"] == 2
    assert math.isclose(results[0]["best_valid_ppl"], results[1]["best_valid_ppl"], rel_tol=1e-3)
    assert math.isclose(results[0]["test_ppl"], results[1]["test_ppl"], rel_tol=1e-3)


def test_tensorboard_logs_through_accelerate_trackers(corpus: Path, tmp_path: Path) -> None:
    tiny("gpt", corpus, tmp_path / "run", max_steps=10, report_to=["tensorboard"])
    event_files = list((tmp_path / "run" / "logs").rglob("events.out.tfevents.*"))
    assert event_files and event_files[0].stat().st_size > 0
