"""The training monitor: run discovery and path safety, metrics series, summaries, figures."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from app_fixtures import tiny_run

from lmcore.app import plots
from lmcore.app.runs import (
    check_run_name,
    curves,
    discover_runs,
    latest_samples,
    load_metrics,
    metrics_signature,
    run_summary,
    safe_child,
    summary_table,
)
from lmcore.io import append_jsonl
from lmcore.runs import read_run


def fake_run(folder: Path, records: list[dict], config: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config or {"config": {"model": "lstm", "data": "ptb"}}))
    for record in records:
        append_jsonl(folder / "metrics.jsonl", record)
    return folder


RECORDS = [
    {"step": 5, "epoch": 0.5, "split": "train", "event": "step", "loss": 3.0, "lr": 1.0},
    {"step": 10, "epoch": 1.0, "split": "train", "event": "step", "loss": 2.0, "lr": 1.0},
    {"step": 10, "epoch": 1.0, "split": "train", "event": "epoch", "loss": 2.5, "lr": 0.25},
    {"step": 10, "epoch": 1.0, "split": "valid", "event": "epoch", "loss": math.log(9.0), "lr": 0.25},
    {"step": 20, "epoch": 2.0, "split": "valid", "event": "epoch", "loss": math.log(7.0), "lr": 0.25},
    {"step": 20, "epoch": 2.0, "split": "test", "event": "final", "loss": math.log(8.0), "lr": 0.25},
]


def test_run_names_that_could_leave_the_folder_are_refused(tmp_path: Path) -> None:
    for bad in ("../etc", "..", "a/b", "/abs", "", ".hidden", "x" * 65, "a\\b", "a b"):
        with pytest.raises(ValueError, match="not allowed"):
            check_run_name(bad)
    assert check_run_name("ptb-lstm_small.v2") == "ptb-lstm_small.v2"
    assert safe_child(tmp_path, "run-1") == (tmp_path / "run-1").resolve()


def test_discovery_finds_runs_names_clashes_and_ignores_links_out_of_the_root(tmp_path: Path) -> None:
    reference, local, outside = tmp_path / "assets" / "runs", tmp_path / "runs", tmp_path / "elsewhere"
    fake_run(reference / "ptb-lstm", RECORDS)
    fake_run(local / "ptb-lstm", RECORDS)
    fake_run(local / "mine", [])
    (local / "not-a-run").mkdir()  # no config.json or metrics.jsonl
    fake_run(outside / "secret", RECORDS)
    os.symlink(outside / "secret", local / "link-out")
    found = discover_runs([("reference", reference), ("local", local), ("missing", tmp_path / "nope")])
    assert list(found) == ["ptb-lstm", "mine", "ptb-lstm (local)"]
    assert found["ptb-lstm"].root == "reference" and found["ptb-lstm (local)"].path == local / "ptb-lstm"


def test_curves_split_train_steps_validation_epochs_and_learning_rate() -> None:
    series = curves([*RECORDS, {"step": 3, "loss": float("nan"), "split": "train"}, {"bad": 1}])
    assert series.train_steps == [(5, 3.0), (10, 2.0)]
    assert series.valid_steps == [(10, pytest.approx(math.log(9.0))), (20, pytest.approx(math.log(7.0)))]
    assert [entry["epoch"] for entry in series.epochs] == [1.0, 2.0]
    assert series.epochs[0]["train_ppl"] == pytest.approx(math.exp(2.5))
    assert series.epochs[1]["valid_ppl"] == pytest.approx(7.0)
    assert series.lr == [(5, 1.0), (10, 0.25), (10, 1.0), (20, 0.25)]
    assert series.test_ppl == pytest.approx(8.0)


def test_summary_of_an_unfinished_run_and_signature_that_follows_the_file(tmp_path: Path) -> None:
    run = read_run(fake_run(tmp_path / "r", RECORDS[:4], {"config": {"model": "gpt", "data": "/x/toy.txt",
                                                                       "tokenizer": "char", "max_steps": 50}}))
    before = metrics_signature([run])
    summary = run_summary(run)
    assert summary["model"] == "gpt" and summary["data"] == "toy.txt" and summary["steps"] == "10 / 50"
    assert summary["best valid ppl"] == pytest.approx(9.0) and summary["status"] == "in progress or stopped"
    append_jsonl(run.metrics_path, RECORDS[4])
    assert metrics_signature([run]) != before
    assert len(load_metrics(run)) == 5
    assert list(summary_table([summary]).columns)[:2] == ["run", "model"]


def test_a_real_tiny_run_is_read_completely() -> None:
    run = read_run(tiny_run("lstm"))
    assert run.kind == "lm" and run.model_type == "lstm" and run.finished
    assert run.checkpoint == run.path / "checkpoints" / "best"
    assert run.command.startswith("python training/train_lm.py --model lstm")
    assert "lstm 1×32" in run.describe()
    summary = run_summary(run)
    assert summary["status"] == "finished" and summary["test ppl"] == pytest.approx(run.results["test_ppl"], abs=0.01)
    assert latest_samples(run)[0]["prompt"] == "the cat"


def test_figures_label_their_axes_with_units_and_explain_missing_data(tmp_path: Path) -> None:
    series = {"a": curves(RECORDS), "b": curves(RECORDS[:2])}
    loss = plots.loss_figure(series)
    axis = loss.axes[0]
    assert axis.get_xlabel() == "optimizer step" and "nats / token" in axis.get_ylabel()
    assert any("perplexity" in ax.get_ylabel() for ax in axis.child_axes)  # the secondary axis
    epoch_axis = plots.epoch_figure(series).axes[0]  # perplexities 7 to 12: a linear axis
    assert epoch_axis.get_yscale() == "linear" and epoch_axis.get_xlabel() == "epoch"
    wide = [{**RECORDS[3], "loss": math.log(900.0)}, {**RECORDS[4], "loss": math.log(90.0)}]
    assert plots.epoch_figure({"w": curves(wide)}).axes[0].get_yscale() == "log"
    assert plots.lr_figure(series).axes[0].get_ylabel() == "learning rate"
    empty = plots.loss_figure({"c": curves([])})
    assert "No loss recorded yet" in empty.texts[0].get_text()


def test_perplexity_axis_ticks_are_round_numbers() -> None:
    assert plots.nice_ticks(2.7, 12_000) == [3, 10, 30, 100, 300, 1000, 3000, 10_000]
    assert plots.nice_ticks(2, 18) == [2, 5, 10]
    assert plots.nice_ticks(9, 16) == [9, 10.5, 12, 13.5, 15]
    assert plots.nice_ticks(5, 5) == [] and plots.nice_ticks(1, float("inf")) == []
