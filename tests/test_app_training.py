"""Training from the page: settings checks, Space mode, a real background run stopped with its checkpoint."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from app_fixtures import tiny_run

from lmcore.app import AppConfig, AppState
from lmcore.app.about import about_markdown
from lmcore.app.scoring import load_crossdomain
from lmcore.app.training import TrainingManager


def test_bad_settings_are_refused_before_anything_starts(tmp_path: Path) -> None:
    manager = TrainingManager(tmp_path)
    good = {"name": "run-1", "model": "lstm", "data": "ptb", "tokenizer": "word", "preset": "tiny", "max_steps": 10}
    for change, message in [
        ({"name": "../escape"}, "run name '../escape' is not allowed"),
        ({"name": ""}, "run name '' is not allowed"),
        ({"model": "mamba"}, "unknown model 'mamba'; allowed: rnn, lstm, transformer, gpt"),
        ({"data": "/etc/passwd"}, "unknown data '/etc/passwd'"),
        ({"preset": "medium"}, "unknown preset 'medium'; allowed: tiny, small"),
        ({"max_steps": 0}, "max steps must be a whole number from 1 to 20,000"),
        ({"max_steps": 2.5}, "max steps must be a whole number"),
    ]:
        with pytest.raises(ValueError, match=message):
            manager.start(**{**good, **change})
    assert list(tmp_path.iterdir()) == [] and manager.status()["state"] == "idle"
    (tmp_path / "taken").mkdir()
    with pytest.raises(ValueError, match="A run called 'taken' already exists"):
        manager.start(**{**good, "name": "taken"})


def test_space_mode_turns_training_off(tmp_path: Path) -> None:
    manager = TrainingManager(tmp_path, enabled=False, disabled_reason="shared Space")
    with pytest.raises(ValueError, match="Training from the page is off: shared Space"):
        manager.start("run-1", "lstm", "ptb", "word", "tiny", 10)
    assert manager.stop() == "No training run is in progress."


def test_a_background_run_reports_progress_and_stops_with_a_checkpoint(tmp_path: Path, shared_data_dir: Path) -> None:
    manager = TrainingManager(tmp_path / "runs")
    job = manager.start("bg-lstm", "lstm", "ptb", "word", "tiny", 20_000)
    try:
        deadline = time.time() + 120
        while manager.status()["step"] == 0 and job.running and time.time() < deadline:
            time.sleep(0.3)
        status = manager.status()
        assert status["state"] == "running", manager.log_tail()
        assert status["step"] > 0 and 0 < status["progress"] < 1 and "train loss" in status["text"]
        with pytest.raises(ValueError, match="still training"):
            manager.start("another", "lstm", "ptb", "word", "tiny", 10)
        assert "Stopping 'bg-lstm'" in manager.stop()
        job.process.wait(timeout=60)
    finally:
        if job.running:
            job.process.kill()
    assert job.returncode == 130, manager.log_tail()
    assert manager.status()["state"] == "stopped (checkpoint saved)"
    assert (job.out / "checkpoints" / "last" / "model.safetensors").is_file()
    assert (job.out / "train.log").is_file()


def test_about_lists_every_model_and_the_commands_that_reproduce_results(tmp_path: Path) -> None:
    config = AppConfig.from_env({"HF_HUB_OFFLINE": "1", "LMCORE_APP_MODELS": "", "LMCORE_ASSETS_DIR": str(tmp_path),
                                 "LMCORE_RUN_DIRS": str(tiny_run("gpt").parent), "LMCORE_SPACE": "1"})
    state = AppState.create(config)
    text = about_markdown(config, state.registry, load_crossdomain(config.crossdomain_results), None)
    assert "| toy-gpt | run | gpt 1 layer × 32, 2 heads, context 16" in text
    assert "python training/train_lm.py --model gpt --preset tiny" in text
    assert "| HuggingFaceTB/SmolLM2-135M-Instruct | pretrained |" in text
    assert "off (Space mode)" in text and "not available yet" in text
