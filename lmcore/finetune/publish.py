"""Fine-tuning runs after training: export a small reference copy, summarise and compare them.

``export_finetune_run`` copies what the app and the README read from a
``training/finetune.py`` run folder (``config.json``, ``metrics.jsonl`` and the
``evaluation.json`` of ``training/evaluate_finetune.py``) and, for a LoRA run whose base
is a Hub model, the adapter with fp16 weights and without the tokenizer (the base's
tokenizer is used): about 2 MB for SmolLM2-135M at rank 16, where the merged model
would be 540 MB. ``summarize_finetune_run`` gives one comparison row per run: method,
steps, trainable parameters, time, memory, and the evaluation's perplexities,
PubMedQA accuracy, macro-F1 and yes/no AUC for the base and the fine-tuned model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lmcore.eval.pubmedqa import yes_no_auc
from lmcore.finetune.data import DEFAULT_QA_PROMPT
from lmcore.io import atomic_write_json
from lmcore.pretrained import ADAPTER_CONFIG

RUN_FILES = ("config.json", "metrics.jsonl", "evaluation.json")
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read {path} ({type(error).__name__}: {error})") from None


def export_finetune_run(run_dir: str | Path, out_dir: str | Path, with_adapter: bool = True) -> Path:
    """Copy a finished fine-tuning run's records, evaluation and (when portable) fp16 LoRA adapter to ``out_dir``.

    The adapter is not exported when ``with_adapter`` is false (records only, e.g. to keep the
    repository's weights within budget) or when the run's base is the model of another fine-tuning
    run (e.g. DPO on top of a merged SFT model): that base is not published, so the adapter could
    not be applied. Its ``adapter_config.json`` names the run's ``--base`` as its base model.
    """
    run, out = Path(run_dir), Path(out_dir)
    config = _read_json(run / "config.json")
    if "method" not in config or "result" not in config:
        raise ValueError(f"{run} is not a finished training/finetune.py run (config.json has no 'method' / 'result')")
    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if (run / name).is_file():
            shutil.copy2(run / name, out / name)
    adapter = run / "adapter"
    if with_adapter and (adapter / ADAPTER_WEIGHTS).is_file() and not _is_finetuned_model(Path(config["base"])):
        exported = out / "adapter"
        exported.mkdir(exist_ok=True)
        weights = {name: tensor.to(torch.float16) if tensor.is_floating_point() else tensor
                   for name, tensor in load_file(adapter / ADAPTER_WEIGHTS).items()}
        save_file(weights, exported / ADAPTER_WEIGHTS, metadata={"format": "pt"})
        adapter_config = _read_json(adapter / ADAPTER_CONFIG)
        adapter_config["base_model_name_or_path"] = config["base"]
        atomic_write_json(exported / ADAPTER_CONFIG, adapter_config)
    return out


def _is_finetuned_model(path: Path) -> bool:
    """Whether ``path`` is the ``model/`` or ``merged/`` folder of a training/finetune.py run."""
    run_config = path.parent / "config.json"
    if not (path.is_dir() and run_config.is_file()):
        return False
    try:
        return "method" in json.loads(run_config.read_text(encoding="utf-8"))
    except ValueError:
        return False


def summarize_finetune_run(run_dir: str | Path) -> dict[str, Any]:
    """One comparison row for a (published) fine-tuning run folder; evaluation fields are None without evaluation.json."""
    run = Path(run_dir)
    config = _read_json(run / "config.json")
    result, parameters, settings = config["result"], config["parameters"], config["settings"]
    steps = result["global_step"]
    method = config["method"] + (" + LoRA" if config["method"] == "dpo" and settings.get("lora") else "")
    row: dict[str, Any] = {
        "run": run.name, "method": method, "mode": config["mode"],
        "qa_prompt": settings.get("qa_prompt", DEFAULT_QA_PROMPT) if config["mode"] == "qa" else None,
        "base": config["base"], "steps": steps,
        "batch_size": settings["batch_size"] * settings["gradient_accumulation_steps"], "train_examples": config["train_examples"],
        "trainable_parameters": parameters["trainable"], "total_parameters": parameters["total"],
        "trainable_percent": parameters["trainable_percent"], "train_seconds": result["train_seconds"],
        "seconds_per_step": result["train_seconds"] / max(steps, 1),
        "peak_memory_gib": (result.get("cuda_max_memory_allocated_bytes") or result["peak_rss_bytes"]) / 2**30,
        "memory_kind": "GPU allocated" if result.get("cuda_max_memory_allocated_bytes") else "process peak RSS",
        "device": result["device"], "command": config["command"], "adapter_exported": (run / "adapter").is_dir(),
    }
    evaluation_path = run / "evaluation.json"
    evaluation = _read_json(evaluation_path) if evaluation_path.is_file() else None
    for part in ("in_domain", "general"):
        for role in ("base", "finetuned"):
            row[f"{part}_ppl_{role}"] = evaluation["perplexity"][part][role]["perplexity"] if evaluation else None
        row[f"{part}_ppl_change_percent"] = evaluation["comparison"][f"{part}_ppl_change_percent"] if evaluation else None
    for role in ("base", "finetuned"):
        for metric in ("accuracy", "macro_f1"):
            row[f"{metric}_{role}"] = evaluation["pubmedqa"][role][metric] if evaluation else None
        # From the predictions, so reports written before the AUC was part of them have it too.
        row[f"yes_no_auc_{role}"] = yes_no_auc(evaluation["pubmedqa"][role]["predictions"]) if evaluation else None
    row["pubmedqa_n"] = evaluation["pubmedqa"]["n"] if evaluation else None
    row["majority_baseline"] = evaluation["pubmedqa"]["majority_baseline"] if evaluation else None
    row["evaluation_command"] = evaluation["meta"]["command"] if evaluation else None
    return row


def finetune_table(rows: list[dict[str, Any]]) -> str:
    """The comparison rows as a markdown table (perplexity and accuracy as base → fine-tuned)."""

    def change(row: dict[str, Any], key: str, digits: int, scale: float = 1.0) -> str:
        base, tuned = row[f"{key}_base"], row[f"{key}_finetuned"]
        if base is None or tuned is None:
            return "not evaluated"
        return f"{scale * base:.{digits}f} → {scale * tuned:.{digits}f}"

    lines = [
        "| run | method | steps × batch | trainable params | time | s/step | peak memory | in-domain ppl | "
        "general ppl | PubMedQA accuracy % (n) | macro-F1 % | yes/no AUC |",
        "|---|---|---:|---:|---:|---:|---:|---|---|---|---|---|",
    ]
    for row in rows:
        n = f" ({row['pubmedqa_n']}; majority {100 * row['majority_baseline']:.1f})" if row["pubmedqa_n"] else ""
        mode = row["mode"] if row["qa_prompt"] in (None, DEFAULT_QA_PROMPT) else f"{row['mode']}, {row['qa_prompt']}"
        lines.append(
            f"| {row['run']} | {row['method']} ({mode}) | {row['steps']} × {row['batch_size']} | "
            f"{row['trainable_parameters'] / 1e6:.2f}M ({row['trainable_percent']:.2f}%) | "
            f"{row['train_seconds'] / 60:.0f} min | {row['seconds_per_step']:.1f} | "
            f"{row['peak_memory_gib']:.2f} GiB ({row['memory_kind']}) | {change(row, 'in_domain_ppl', 2)} | "
            f"{change(row, 'general_ppl', 2)} | {change(row, 'accuracy', 1, 100)}{n} | {change(row, 'macro_f1', 1, 100)} | "
            f"{change(row, 'yes_no_auc', 2)} |"
        )
    return "\n".join(lines)
