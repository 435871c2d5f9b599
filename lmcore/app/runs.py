"""Run folders in the app: find them under the configured roots, read their metrics, summarise them.

A run folder (see README.md, "The run folder") is read by :func:`lmcore.runs.read_run`.
Only the direct sub-folders of a configured root are runs; a name must match
:data:`RUN_NAME_PATTERN`, and a folder (or link) that resolves outside its root is
ignored, so no name a visitor types can reach another part of the disk.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmcore.io import read_jsonl
from lmcore.runs import RunInfo, format_count, read_run

RUN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RUN_MARKERS = ("config.json", "metrics.jsonl", "train.log")  # train.log: a run the app just started


def check_run_name(name: str) -> str:
    """``name`` if it is a safe run folder name (letters, digits, ``.``, ``_``, ``-``; at most 64); else ValueError."""
    if not isinstance(name, str) or not RUN_NAME_PATTERN.match(name) or ".." in name:
        raise ValueError(
            f"run name {name!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def safe_child(root: Path, name: str) -> Path:
    """``root / name`` for a checked ``name``, refusing anything that resolves outside ``root``."""
    check_run_name(name)
    path = (root / name).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ValueError(f"run {name!r} resolves outside its folder {root}")
    return path


def discover_runs(roots: list[tuple[str, Path]]) -> dict[str, RunInfo]:
    """Every run folder directly under the given ``(label, folder)`` roots, by unique name.

    A folder counts as a run when it holds ``config.json``, ``metrics.jsonl`` or ``train.log``
    (written by a run started from the page before the trainer writes anything). When two
    roots hold the same folder name, the later one is named ``<name> (<root label>)``.
    """
    runs: dict[str, RunInfo] = {}
    for label, root in roots:
        if not root.is_dir():
            continue
        resolved_root = root.resolve()
        for path in sorted(root.iterdir()):
            if not RUN_NAME_PATTERN.match(path.name) or not path.is_dir():
                continue
            if not path.resolve().is_relative_to(resolved_root):  # a link out of the root
                continue
            if not any((path / marker).is_file() for marker in RUN_MARKERS):
                continue
            name = path.name if path.name not in runs else f"{path.name} ({label})"
            runs[name] = read_run(path, name, label)
    return runs


# ----------------------------------------------------------------------------- metrics


def load_metrics(run: RunInfo) -> list[dict[str, Any]]:
    """The run's metrics.jsonl records (a truncated last line is skipped; none when the file is missing)."""
    if not run.metrics_path.is_file():
        return []
    return read_jsonl(run.metrics_path)


def metrics_signature(runs: list[RunInfo]) -> tuple:
    """Changes whenever one of the runs' metrics.jsonl or results.json changes (for live refresh)."""
    signature = []
    for run in runs:
        for path in (run.metrics_path, run.path / "results.json", run.path / "config.json"):
            try:
                stat = path.stat()
                signature.append((str(path), stat.st_mtime_ns, stat.st_size))
            except OSError:
                signature.append((str(path), None, None))
    return tuple(signature)


@dataclass
class Curves:
    """A run's metrics split into the series the training monitor plots."""

    train_steps: list[tuple[int, float]]  # (step, train loss in nats/token), every log_every steps
    valid_steps: list[tuple[int, float]]  # (step, validation loss) at each epoch end
    epochs: list[dict[str, float]]  # per epoch: epoch, train_ppl, valid_ppl
    lr: list[tuple[int, float]]  # (step, learning rate)
    test_ppl: float | None


def curves(records: list[dict[str, Any]]) -> Curves:
    """Sort metrics records into :class:`Curves` (records of unknown shape are skipped)."""
    train_steps, valid_steps, lr = [], [], []
    epochs: dict[float, dict[str, float]] = {}
    test_ppl = None
    for record in records:
        loss, step, split = record.get("loss"), record.get("step"), record.get("split")
        if not isinstance(loss, (int, float)) or not isinstance(step, int) or not math.isfinite(loss):
            continue
        event = record.get("event", "step")
        if isinstance(record.get("lr"), (int, float)):
            lr.append((step, float(record["lr"])))
        if split == "train" and event == "step":
            train_steps.append((step, float(loss)))
        elif split == "valid":
            valid_steps.append((step, float(loss)))
        if event == "epoch" and split in ("train", "valid") and record.get("epoch") is not None:
            entry = epochs.setdefault(round(float(record["epoch"]), 6), {"epoch": float(record["epoch"])})
            entry[f"{split}_ppl"] = math.exp(min(float(loss), 700.0))
        if split == "test":
            test_ppl = math.exp(min(float(loss), 700.0))
    return Curves(
        train_steps=train_steps,
        valid_steps=valid_steps,
        epochs=[epochs[key] for key in sorted(epochs)],
        lr=sorted(set(lr)),
        test_ppl=test_ppl,
    )


def run_summary(run: RunInfo, records: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One row of the runs table: what, how far, how good."""
    records = load_metrics(run) if records is None else records
    series = curves(records)
    last_step = max((record.get("step", 0) for record in records if isinstance(record.get("step"), int)), default=0)
    valid_ppls = [entry["valid_ppl"] for entry in series.epochs if "valid_ppl" in entry]
    results = run.results or {}
    seconds = results.get("train_seconds") or max((record.get("time") or 0 for record in records), default=0)
    max_steps = run.train_config.get("max_steps")
    return {
        "run": run.name,
        "model": run.model_type or run.kind,
        "parameters": format_count(run.num_parameters) if run.num_parameters else "",
        "data": Path(str(run.training_corpus or "")).name,
        "tokenizer": run.tokenizer or "",
        "steps": f"{last_step}" + (f" / {max_steps}" if max_steps and not run.finished else ""),
        "epochs": len(series.epochs),
        "best valid ppl": round(min(valid_ppls), 2) if valid_ppls else None,
        "test ppl": round(results["test_ppl"], 2) if "test_ppl" in results else None,
        "minutes": round(seconds / 60, 1) if seconds else None,
        "status": "finished" if run.finished else ("in progress or stopped" if records else "no metrics yet"),
    }


SUMMARY_COLUMNS = ["run", "model", "parameters", "data", "tokenizer", "steps", "epochs", "best valid ppl", "test ppl",
                   "minutes", "status"]


def summary_table(rows: list[dict[str, Any]]):
    """The runs table as a DataFrame (the columns of :func:`run_summary`)."""
    import pandas as pd

    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def latest_samples(run: RunInfo, limit: int = 4) -> list[dict[str, Any]]:
    """The generations written after the last epoch (samples.jsonl), at most ``limit``."""
    path = run.path / "samples.jsonl"
    if not path.is_file():
        return []
    samples = read_jsonl(path)
    if not samples:
        return []
    last_step = samples[-1].get("step")
    return [sample for sample in samples if sample.get("step") == last_step][:limit]
