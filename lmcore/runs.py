"""Run folders: read them, export a small reference copy, summarise results.

A run folder (see README.md, "The run folder") holds ``config.json``, ``metrics.jsonl``,
``results.json``, ``samples.jsonl``, ``checkpoints/{best,last}/`` and ``tokenizer/``.
:func:`read_run` reads what a folder holds so far into a :class:`RunInfo` (a run still
training may lack ``results.json``, even ``config.json``); the app, the cross-domain
evaluation and the publishing script all read runs through it.

``export_run`` copies what the app and the reports read (``config.json``,
``metrics.jsonl``, ``results.json``, ``samples.jsonl``, ``tokenizer/``) and re-saves the
best checkpoint with fp16 weights, so reference runs fit in the repository's assets.
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmcore.io import read_json_object
from lmcore.models import CONFIG_NAME, load_model
from lmcore.train.checkpoint import find_checkpoint

RUN_FILES = ("config.json", "metrics.jsonl", "results.json", "samples.jsonl")


@dataclass
class RunInfo:
    """What a run folder's records say about it (the model is not loaded)."""

    name: str  # the folder name, or a label the caller made unique (root label or path added)
    path: Path
    root: str  # label of the root the app found it in ("reference" for assets/runs); "" elsewhere
    config: dict[str, Any]  # config.json (empty when not written yet)
    results: dict[str, Any] | None  # results.json once the run finished

    @property
    def kind(self) -> str:
        """``"lm"`` (trained from scratch by train_lm.py), ``"finetune"`` (training/finetune.py) or ``"unknown"``."""
        if "method" in self.config:
            return "finetune"
        if isinstance(self.config.get("config"), dict):
            return "lm"
        return "unknown"

    @property
    def train_config(self) -> dict[str, Any]:
        """The training settings (config.json ``config``; empty when absent)."""
        settings = self.config.get("config")
        return settings if isinstance(settings, dict) else {}

    @property
    def model_type(self) -> str | None:
        return self.train_config.get("model") or (self.config.get("model_config") or {}).get("model_type")

    @property
    def tokenizer(self) -> str | None:
        """The tokenizer kind the run trained with: ``word``, ``char``, ``bpe`` or ``gpt2`` (config ``tokenizer``)."""
        return self.train_config.get("tokenizer")

    @property
    def training_corpus(self) -> str | None:
        """What the run trained on (config ``data``): a corpus name or a text file path."""
        return self.train_config.get("data")

    @property
    def num_parameters(self) -> int | None:
        value = self.config.get("num_parameters") or (self.results or {}).get("num_parameters")
        return int(value) if value is not None else None

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoint(self) -> Path | None:
        """The checkpoint to load: ``best``, else ``last`` (None while there is none).

        A folder counts when it holds a saved model (a training checkpoint, or an exported
        copy without trainer state), or when an interrupted swap left its previous copy.
        """
        checkpoints = self.path / "checkpoints"
        for folder in (checkpoints / "best", checkpoints / "last"):
            found = folder if (folder / CONFIG_NAME).is_file() else find_checkpoint(folder)
            if found is not None:
                return found
        return None

    @property
    def finished(self) -> bool:
        return self.results is not None

    @property
    def command(self) -> str | None:
        """The command line that reproduces the run, from config.json."""
        command = self.config.get("command")
        if not command:
            return None
        if isinstance(command, str):
            return command
        words = [str(word) for word in command]
        if words[0].endswith(".py"):
            words = ["python", *words]
        return shlex.join(words)

    @property
    def architecture(self) -> str:
        """The model's shape from config.json, e.g. ``lstm 2×200`` or ``gpt 3 layers × 192, 4 heads, context 64``."""
        config = self.config.get("model_config") or {}
        kind = self.model_type or self.kind
        if "hidden_size" in config:
            return f"{kind} {config.get('num_layers', '?')}×{config['hidden_size']}"
        if "n_embd" in config:
            layers = config.get("n_layer", "?")
            return (f"{kind} {layers} layer{'' if layers == 1 else 's'} × {config['n_embd']}, "
                    f"{config.get('n_head', '?')} heads, context {config.get('block_size', '?')}")
        return kind

    def describe(self) -> str:
        """One line: architecture, size, data, tokenizer."""
        parts = [self.architecture]
        if self.num_parameters:
            parts.append(format_count(self.num_parameters) + " parameters")
        if self.training_corpus:
            parts.append(f"data {Path(str(self.training_corpus)).name}")
        if self.tokenizer:
            parts.append(f"{self.tokenizer} tokens")
        return ", ".join(parts)


def format_count(number: int) -> str:
    """12_345_678 -> '12.3M'; 45_000 -> '45.0k'."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if number >= size:
            return f"{number / size:.1f}{suffix}"
    return str(number)


def read_run(path: str | Path, name: str | None = None, root: str = "") -> RunInfo:
    """The RunInfo of one folder (config.json and results.json may still be missing or unreadable)."""
    path = Path(path)
    return RunInfo(
        name=name or path.name,
        path=path,
        root=root,
        config=read_json_object(path / "config.json") or {},
        results=read_json_object(path / "results.json"),
    )


def _finished_run(run_dir: str | Path) -> RunInfo:
    run = read_run(run_dir)
    if not run.finished:
        raise ValueError(f"{run.path} is not a finished run folder (no results.json)")
    return run


def export_run(
    run_dir: str | Path, out_dir: str | Path, dtype: torch.dtype = torch.float16, with_model: bool = True
) -> Path:
    """Copy a finished run's records and (``with_model``) its tokenizer and best checkpoint, weights in
    ``dtype``, to ``out_dir``. Records only (``with_model=False``) suit runs kept for their numbers alone."""
    run, out = _finished_run(run_dir).path, Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if (run / name).is_file():
            shutil.copy2(run / name, out / name)
    if not with_model:
        return out
    shutil.copytree(run / "tokenizer", out / "tokenizer", dirs_exist_ok=True)
    load_model(run / "checkpoints" / "best").save_pretrained(out / "checkpoints" / "best", dtype=dtype)
    return out


def summarize_run(run_dir: str | Path) -> dict[str, Any]:
    """One row: model, data, parameters, epochs, final train/valid and best test perplexity, time, hardware."""
    run = _finished_run(run_dir)
    config, results = run.config, run.results
    epochs = results["epochs"]
    best = min(epochs, key=lambda epoch: epoch["valid_ppl"])
    hardware = config["hardware"]
    return {
        "run": run.name,
        "model": run.model_type,
        "preset": run.train_config.get("preset"),
        "data": run.training_corpus,
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
        "seed": run.train_config["seed"],
    }


def markdown_table(rows: list[dict[str, Any]], compare_to_first: bool = False) -> str:
    """The summary rows as a markdown table (perplexities at the best validation epoch).

    ``compare_to_first`` adds a column with each run's test perplexity relative to the first row's
    (``100 * (test / first test - 1)`` percent), for ablations listed after the run they change.
    """
    header = "| run | model | parameters | epochs | train ppl | valid ppl | test ppl |"
    rule = "|---|---|---:|---:|---:|---:|---:|"
    if compare_to_first:
        header += f" test vs {rows[0]['run']} |"
        rule += "---:|"
    lines = [header + " hours | hardware |", rule + "---:|---|"]
    for row in rows:
        line = (
            f"| {row['run']} | {row['model']} | {row['parameters'] / 1e6:.2f}M | {row['epochs']:g} | "
            f"{row['train_ppl']:.1f} | {row['valid_ppl']:.1f} | {row['test_ppl']:.1f} |"
        )
        if compare_to_first:
            line += f" {100 * (row['test_ppl'] / rows[0]['test_ppl'] - 1):+.1f}% |"
        lines.append(line + f" {row['hours']:.2f} | {row['hardware']} |")
    return "\n".join(lines)


def replace_marked_block(text: str, marker: str, content: str) -> str:
    """Replace what stands between ``<!-- marker -->`` and ``<!-- /marker -->`` in ``text``."""
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    if start not in text or end not in text:
        raise ValueError(f"the file has no {start} ... {end} block to fill")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{content}\n{end}{tail}"
