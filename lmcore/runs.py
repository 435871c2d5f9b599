"""Run folders after training: export a small reference copy, summarise results.

``export_run`` copies what the app and the reports read (``config.json``,
``metrics.jsonl``, ``results.json``, ``samples.jsonl``, ``tokenizer/``) and re-saves the
best checkpoint with fp16 weights, so reference runs fit in the repository's assets.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from lmcore.models import load_model

RUN_FILES = ("config.json", "metrics.jsonl", "results.json", "samples.jsonl")


def export_run(run_dir: str | Path, out_dir: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Copy a finished run's records and its best checkpoint (weights in ``dtype``) to ``out_dir``."""
    run, out = Path(run_dir), Path(out_dir)
    if not (run / "results.json").is_file():
        raise ValueError(f"{run} is not a finished run folder (no results.json)")
    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if (run / name).is_file():
            shutil.copy2(run / name, out / name)
    shutil.copytree(run / "tokenizer", out / "tokenizer", dirs_exist_ok=True)
    load_model(run / "checkpoints" / "best").save_pretrained(out / "checkpoints" / "best", dtype=dtype)
    return out


def summarize_run(run_dir: str | Path) -> dict[str, Any]:
    """One row: model, data, parameters, epochs, final train/valid and best test perplexity, time, hardware."""
    run = Path(run_dir)
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    epochs = results["epochs"]
    best = min(epochs, key=lambda epoch: epoch["valid_ppl"])
    hardware = config["hardware"]
    return {
        "run": run.name,
        "model": config["config"]["model"],
        "preset": config["config"].get("preset"),
        "data": config["config"]["data"],
        "parameters": results["num_parameters"],
        "epochs": epochs[-1]["epoch"],
        "best_epoch": best["epoch"],
        "train_ppl": best["train_ppl"],
        "valid_ppl": best["valid_ppl"],
        "test_ppl": results["test_ppl"],
        "hours": results["train_seconds"] / 3600,
        "hardware": hardware.get("gpu") or f"{hardware['cpu_count']} CPU cores, {hardware['torch_threads']} threads",
        "command": " ".join(config["command"]),
        "git_commit": config["git_commit"],
        "resumes": [
            f"`{' '.join(resume['command'])}` at step {resume['at_step']} (commit {resume['git_commit']})"
            for resume in config.get("resumes", [])
        ],
        "seed": config["config"]["seed"],
    }


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The summary rows as a markdown table (perplexities at the best validation epoch)."""
    lines = [
        "| run | model | parameters | epochs | train ppl | valid ppl | test ppl | hours | hardware |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['run']} | {row['model']} | {row['parameters'] / 1e6:.2f}M | {row['epochs']:g} | "
            f"{row['train_ppl']:.1f} | {row['valid_ppl']:.1f} | {row['test_ppl']:.1f} | {row['hours']:.2f} | {row['hardware']} |"
        )
    return "\n".join(lines)


def replace_marked_block(text: str, marker: str, content: str) -> str:
    """Replace what stands between ``<!-- marker -->`` and ``<!-- /marker -->`` in ``text``."""
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    if start not in text or end not in text:
        raise ValueError(f"the file has no {start} ... {end} block to fill")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{content}\n{end}{tail}"
