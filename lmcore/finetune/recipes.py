"""Fine-tuning recipes for pretrained Hugging Face causal LMs: full SFT, LoRA and DPO.

``finetune(method, base, train_records, out_dir, ...)`` wires TRL 1.x trainers:

- ``"sft"``: full fine-tuning (every weight) with ``trl.SFTTrainer``;
- ``"lora"``: the same with a PEFT LoRA adapter (``peft.LoraConfig``), the base frozen;
- ``"dpo"``: ``trl.DPOTrainer`` on preference pairs, all weights (``lora=False``,
  the reference model is a frozen copy of the base) or a LoRA adapter
  (``lora=True``; the reference is the base with the adapter switched off, so
  no second model is kept).

Default learning rates (override with ``learning_rate=``):

- full SFT 5e-5: the usual rate for fine-tuning GPT-2-sized models with AdamW
  (transformers' default); higher rates quickly erase pretraining.
- LoRA 2e-4: the adapter starts at zero (B = 0) and has few parameters, so it
  needs a larger step; 1e-4..3e-4 is the range of the LoRA/QLoRA papers.
- DPO 1e-6 full / 5e-6 LoRA: the DPO loss saturates fast (its gradient grows
  with the policy/reference log-ratio), and larger rates make the policy drift
  far from the reference and degrade fluency; 1e-6 is TRL's default and close
  to the paper's full-model setting, 5e-6 compensates the zero-initialised
  adapter the same way as for LoRA SFT.

Every run writes into ``out_dir``:

- ``config.json``: the resolved settings, LoRA config, trainable and total
  parameters (``parameters``), command line, git commit, hardware, library versions and (at the end)
  the result: steps, losses, ``train_seconds`` (wall-clock time of
  ``trainer.train()``), the device, and peak memory: ``peak_rss_bytes``, the
  process's peak resident memory (CPU RAM; a process-lifetime peak, so it
  includes loading, which ``peak_rss_before_train_bytes`` shows alone) and, on a
  GPU, ``cuda_max_memory_allocated_bytes`` during training (tensors only, not
  the allocator's cache). Together they compare full fine-tuning with LoRA;
- ``metrics.jsonl``: one JSON object per logging / evaluation step, with
  ``step, epoch, split ("train"/"valid"), loss, ppl, lr, time`` (seconds since
  the start of training; ``ppl = exp(loss)``, and ``null`` for DPO whose loss is
  not a per-token log-likelihood; DPO rows add ``reward_accuracy`` and
  ``reward_margin``);
- ``model/`` (full fine-tuning) or ``adapter/`` + ``merged/`` (LoRA: the adapter,
  and the base with the adapter merged in): ``save_pretrained`` folders with the
  tokenizer, loadable with :func:`lmcore.pretrained.load_pretrained`;
- ``checkpoints/``: the Trainer's checkpoints (best + last, weights only) when
  evaluating, used to restore the best model for early stopping.

Model folders go in sub-folders because ``save_pretrained`` writes its own
``config.json`` (the architecture), which must not collide with the run's.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import shlex
import sys
import time
import warnings
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from torch import nn
from transformers import EarlyStoppingCallback, PreTrainedModel, TrainerCallback, set_seed
from transformers.pytorch_utils import Conv1D

from lmcore.finetune.data import (
    DEFAULT_QA_PROMPT,
    QA_PROMPT_FORMATS,
    build_lm_dataset,
    build_preference_dataset,
    build_qa_dataset,
)
from lmcore.io import append_jsonl, atomic_write_json
from lmcore.pretrained import load_pretrained
from lmcore.provenance import git_commit, hardware

METHODS = ("sft", "lora", "dpo")
MODES = ("lm", "qa")
ALL_LINEAR = "all-linear"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"


@dataclass
class FinetuneSettings:
    """Hyperparameters of a fine-tuning run (``None`` = a method-dependent default, resolved in config.json)."""

    learning_rate: float | None = None  # None: 5e-5 sft, 2e-4 lora, 1e-6 dpo, 5e-6 dpo+LoRA
    max_steps: int = -1  # optimizer steps; -1: num_train_epochs decides
    num_train_epochs: float = 1.0
    batch_size: int = 4  # examples per device per step
    gradient_accumulation_steps: int = 1
    warmup_ratio: float = 0.1  # fraction of the steps with a linear warmup from 0
    lr_scheduler_type: str = "linear"
    weight_decay: float = 0.0
    logging_steps: int = 10
    eval_steps: int = 50  # evaluate on the dev records every N steps (when given)
    early_stopping_patience: int = 3  # evaluations without a lower eval loss before stopping
    chunk_length: int = 256  # tokens per block in mode "lm"
    max_length: int = 1024  # truncation of QA / preference sequences (prompt + completion)
    qa_prompt: str = DEFAULT_QA_PROMPT  # QA / preference prompt format, a key of QA_PROMPT_FORMATS
    lora: bool | None = None  # None: True for "lora", False for "sft" and "dpo"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] | None = None  # None: PEFT's default for the architecture (c_attn for GPT-2, q/v for Llama)
    beta: float = 0.1  # DPO: strength of the pull towards the reference model
    seed: int = 0
    use_cpu: bool = False  # force CPU even when an accelerator is present
    bf16: bool = False  # TRL defaults to bf16; we train in float32 unless asked
    activation_checkpointing: bool = False  # recompute activations in backward (TRL's default is on); saves memory
    report_to: str = "none"  # "none", "tensorboard", "wandb", ... (metrics.jsonl is always written)


@dataclass
class FinetuneResult:
    """Where a run put its outputs, and how it ended."""

    out_dir: Path
    model_dir: Path  # the full-weight model to evaluate (model/ or merged/)
    adapter_dir: Path | None  # the LoRA adapter, for LoRA runs
    config: dict[str, Any]  # the content of config.json


class JsonlMetricsCallback(TrainerCallback):
    """Append train and eval losses to ``metrics.jsonl`` in lmcore's format (main process only)."""

    def __init__(self, path: Path, loss_is_nll: bool):
        self.path = path
        self.loss_is_nll = loss_is_nll
        self.start = time.monotonic()
        self.step_lr: float | None = None  # the learning rate of the latest optimizer step

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        # Called after optimizer.step() and before the scheduler moves on: the rate this step used.
        self.step_lr = optimizer.param_groups[0]["lr"]

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "loss" in logs:
            split, prefix = "train", ""
        elif "eval_loss" in logs:
            split, prefix = "valid", "eval_"
        else:
            return  # the end-of-training summary (train_runtime, ...)
        loss = float(logs[f"{prefix}loss"])
        record = {
            "step": state.global_step,
            "epoch": state.epoch,
            "split": split,
            "loss": loss,
            "ppl": math.exp(loss) if self.loss_is_nll else None,
            "lr": self.step_lr,
            "time": round(time.monotonic() - self.start, 3),
        }
        if not self.loss_is_nll:
            record["reward_accuracy"] = logs.get(f"{prefix}rewards/accuracies")
            record["reward_margin"] = logs.get(f"{prefix}rewards/margins")
        append_jsonl(self.path, record)


def finetune(
    method: str,
    base: str,
    train_records: Iterable[Any],
    out_dir: str | Path,
    *,
    eval_records: Iterable[Any] | None = None,
    mode: str = "qa",
    exclude_pubids: Collection[str] = (),
    gguf_file: str | None = None,
    **hyper: Any,
) -> FinetuneResult:
    """Fine-tune ``base`` on PubMedQA records and save the result in ``out_dir``.

    Args:
        method: "sft" (all weights), "lora" (SFT of a LoRA adapter) or "dpo" (preference
            optimisation; add ``lora=True`` for a LoRA adapter).
        base: a model name or path for :func:`lmcore.pretrained.load_pretrained`.
        train_records: PubMedQA records (train split) to build the training data from.
        out_dir: a new or empty folder for the outputs (see the module docstring).
        eval_records: dev-split records; enables evaluation every ``eval_steps``, early
            stopping on the validation loss and restoring the best model at the end.
        mode: "lm" (domain language modelling on contexts and long answers) or "qa"
            (prompt -> decision + long answer, loss on the answer). "dpo" needs "qa".
        exclude_pubids: pubids refused in the data besides the official test questions (always refused).
        gguf_file: GGUF file name inside ``base``, when ``base`` is a folder or Hub repo of GGUFs.
        **hyper: fields of :class:`FinetuneSettings`.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if method == "dpo" and mode != "qa":
        raise ValueError("method 'dpo' trains on preference pairs of QA answers; use mode='qa'")
    settings = _resolve_settings(method, hyper)
    out_dir = Path(out_dir)
    if (out_dir / CONFIG_FILE).exists():
        raise ValueError(f"{out_dir} already holds a fine-tuning run ({CONFIG_FILE}); choose a new output folder")
    set_seed(settings.seed)

    model, tokenizer = load_pretrained(base, gguf_file=gguf_file)
    positions = getattr(model.config, "max_position_embeddings", None)
    sequence_setting = "chunk_length" if mode == "lm" else "max_length"
    if positions is not None and getattr(settings, sequence_setting) > positions:
        raise ValueError(
            f"{sequence_setting}={getattr(settings, sequence_setting)} exceeds the {positions} positions of {base!r}; "
            f"pass {sequence_setting} <= {positions}"
        )
    peft_config = _lora_config(model, settings) if settings.lora else None
    train_dataset = _build_dataset(method, mode, train_records, tokenizer, settings, exclude_pubids)
    eval_dataset = None
    if eval_records is not None:
        eval_dataset = _build_dataset(method, mode, eval_records, tokenizer, settings, exclude_pubids)
    if mode == "qa":
        for name, dataset in (("training", train_dataset), ("evaluation", eval_dataset)):
            if dataset is not None:
                _check_prompts_fit(dataset, tokenizer, settings.max_length, name)

    out_dir.mkdir(parents=True, exist_ok=True)
    callbacks: list[TrainerCallback] = [JsonlMetricsCallback(out_dir / METRICS_FILE, loss_is_nll=method != "dpo")]
    if eval_dataset is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=settings.early_stopping_patience))
    trainer_args = _trainer_arguments(settings, out_dir / "checkpoints", evaluate=eval_dataset is not None)
    if method == "dpo":
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(
            model=model,
            # Full DPO: a frozen copy of the base is the reference. With LoRA, TRL uses the base with the
            # adapter disabled as the reference, so no second model is needed.
            ref_model=None if peft_config is not None else _frozen_copy(model),
            args=DPOConfig(**trainer_args, beta=settings.beta, max_length=settings.max_length),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
    else:
        from trl import SFTConfig, SFTTrainer

        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(
                **trainer_args,
                max_length=settings.chunk_length if mode == "lm" else settings.max_length,
                completion_only_loss=mode == "qa",
            ),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )

    model_dir, adapter_dir = (out_dir / "merged", out_dir / "adapter") if settings.lora else (out_dir / "model", None)
    config = {
        "method": method,
        "mode": mode,
        "base": str(base),
        "gguf_file": gguf_file,
        "settings": dataclasses.asdict(settings),
        "lora": _jsonable(peft_config.to_dict()) if peft_config is not None else None,
        "parameters": _parameter_counts(trainer.model),
        "train_examples": len(train_dataset),
        "eval_examples": len(eval_dataset) if eval_dataset is not None else 0,
        "model_dir": str(model_dir),
        "adapter_dir": str(adapter_dir) if adapter_dir is not None else None,
        "command": shlex.join(sys.argv),
        "git_commit": git_commit(),
        "hardware": {**hardware(trainer.args.device), "num_processes": trainer.args.world_size},
        "versions": _library_versions(),
    }
    is_main = trainer.is_world_process_zero()
    if is_main:
        atomic_write_json(out_dir / CONFIG_FILE, config)

    device = trainer.args.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    peak_rss_before = _peak_rss_bytes()
    start = time.perf_counter()
    output = trainer.train()
    train_seconds = time.perf_counter() - start

    config["result"] = {
        "global_step": trainer.state.global_step,
        "epoch": trainer.state.epoch,
        "train_loss": output.training_loss,
        "best_eval_loss": trainer.state.best_metric,
        "stopped_early": trainer.state.global_step < trainer.state.max_steps,
        "train_seconds": train_seconds,
        "train_samples_per_second": output.metrics.get("train_samples_per_second"),
        "device": str(device),
        "peak_rss_bytes": _peak_rss_bytes(),
        "peak_rss_before_train_bytes": peak_rss_before,
        "cuda_max_memory_allocated_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
    }
    if is_main:
        trained = trainer.accelerator.unwrap_model(trainer.model)
        if adapter_dir is not None:
            trained.save_pretrained(adapter_dir)
            tokenizer.save_pretrained(adapter_dir)
            trained = trained.merge_and_unload()
        trained.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        atomic_write_json(out_dir / CONFIG_FILE, config)
    trainer.accelerator.wait_for_everyone()
    return FinetuneResult(out_dir=out_dir, model_dir=model_dir, adapter_dir=adapter_dir, config=config)


def _parameter_counts(model: nn.Module) -> dict[str, Any]:
    """Trainable and total parameters of the model being trained (a LoRA model: base + adapter)."""
    trainable = sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
    total = sum(parameter.numel() for parameter in model.parameters())
    return {"trainable": trainable, "total": total, "trainable_percent": 100 * trainable / total}


def _peak_rss_bytes() -> int | None:
    """The process's peak resident memory so far, in bytes (None where the OS does not report it)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def linear_module_names(model: nn.Module) -> list[str]:
    """Sorted distinct short names (last path component) of the model's linear layers, the LoRA targets."""
    return sorted(
        {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, (nn.Linear, Conv1D))}
    )


def default_learning_rate(method: str, lora: bool) -> float:
    """See the module docstring for the reasoning behind each value."""
    if method == "dpo":
        return 5e-6 if lora else 1e-6
    return 2e-4 if lora else 5e-5


def _resolve_settings(method: str, hyper: dict[str, Any]) -> FinetuneSettings:
    allowed = {field.name for field in dataclasses.fields(FinetuneSettings)}
    unknown = sorted(set(hyper) - allowed)
    if unknown:
        raise ValueError(f"unknown fine-tuning setting(s) {unknown}; allowed: {sorted(allowed)}")
    settings = FinetuneSettings(**hyper)
    if method == "sft" and settings.lora:
        raise ValueError("method 'sft' trains all weights; use method 'lora' for a LoRA adapter")
    if method == "lora" and settings.lora is False:
        raise ValueError("method 'lora' always trains a LoRA adapter; use method 'sft' to train all weights")
    settings.lora = method == "lora" or (method == "dpo" and bool(settings.lora))
    if isinstance(settings.lora_targets, str):
        settings.lora_targets = [settings.lora_targets]
    if settings.learning_rate is None:
        settings.learning_rate = default_learning_rate(method, settings.lora)
    if settings.learning_rate <= 0:
        raise ValueError(f"learning_rate must be positive, got {settings.learning_rate}")
    if not 0 <= settings.warmup_ratio < 1:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {settings.warmup_ratio}")
    if not 0 <= settings.lora_dropout < 1:
        raise ValueError(f"lora_dropout must be in [0, 1), got {settings.lora_dropout}")
    for name in ("batch_size", "gradient_accumulation_steps", "logging_steps", "eval_steps", "lora_r", "lora_alpha"):
        if getattr(settings, name) < 1:
            raise ValueError(f"{name} must be a positive integer, got {getattr(settings, name)}")
    if settings.qa_prompt not in QA_PROMPT_FORMATS:
        raise ValueError(f"qa_prompt must be one of {sorted(QA_PROMPT_FORMATS)}, got {settings.qa_prompt!r}")
    if settings.max_steps == 0 or settings.max_steps < -1:
        raise ValueError(f"max_steps must be positive (or -1 to use num_train_epochs), got {settings.max_steps}")
    return settings


def _build_dataset(method, mode, records, tokenizer, settings, exclude_pubids) -> Dataset:
    if method == "dpo":
        return build_preference_dataset(
            records, seed=settings.seed, prompt_format=settings.qa_prompt, exclude_pubids=exclude_pubids
        )
    if mode == "lm":
        return build_lm_dataset(records, tokenizer, chunk_length=settings.chunk_length, exclude_pubids=exclude_pubids)
    return build_qa_dataset(records, prompt_format=settings.qa_prompt, exclude_pubids=exclude_pubids)


def _check_prompts_fit(dataset: Dataset, tokenizer, max_length: int, name: str) -> None:
    """Refuse data whose prompts all fill ``max_length`` (the trainers would drop or truncate every answer)."""
    lengths = [len(ids) for ids in tokenizer(list(dataset["prompt"]), add_special_tokens=False)["input_ids"]]
    too_long = sum(length >= max_length for length in lengths)
    if too_long == len(lengths):
        raise ValueError(
            f"every {name} prompt is at least max_length={max_length} tokens long (longest {max(lengths)}), "
            "which leaves no room for the answer; raise max_length"
        )
    if too_long:
        warnings.warn(
            f"{too_long} of {len(lengths)} {name} prompts are at least max_length={max_length} tokens long; "
            "their answers are truncated away and they are dropped",
            stacklevel=3,
        )


def _lora_config(model: PreTrainedModel, settings: FinetuneSettings):
    """A ``peft.LoraConfig`` for ``model``, after checking that every target module exists."""
    from peft import LoraConfig
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    targets: str | list[str]
    if settings.lora_targets is None:
        targets = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model.config.model_type, ALL_LINEAR)
    elif list(settings.lora_targets) == [ALL_LINEAR]:
        targets = ALL_LINEAR
    else:
        targets = list(settings.lora_targets)
        available = linear_module_names(model)
        missing = [target for target in targets if target not in available]
        if not targets or missing:
            raise ValueError(
                f"LoRA target module(s) {missing or targets} not found in the model; its linear modules are "
                f"{available} (or use {ALL_LINEAR!r})"
            )
    settings.lora_targets = [targets] if isinstance(targets, str) else list(targets)
    return LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )


def _trainer_arguments(settings: FinetuneSettings, checkpoint_dir: Path, *, evaluate: bool) -> dict[str, Any]:
    """Keyword arguments shared by ``SFTConfig`` and ``DPOConfig`` (both ``TrainingArguments``)."""
    arguments = {
        "output_dir": str(checkpoint_dir),
        "learning_rate": settings.learning_rate,
        "max_steps": settings.max_steps,
        "num_train_epochs": settings.num_train_epochs,
        "per_device_train_batch_size": settings.batch_size,
        "per_device_eval_batch_size": settings.batch_size,
        "gradient_accumulation_steps": settings.gradient_accumulation_steps,
        "warmup_steps": settings.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        "lr_scheduler_type": settings.lr_scheduler_type,
        "weight_decay": settings.weight_decay,
        "logging_steps": settings.logging_steps,
        "seed": settings.seed,
        "use_cpu": settings.use_cpu,
        "bf16": settings.bf16,
        "activation_checkpointing": settings.activation_checkpointing,
        "report_to": settings.report_to,
        "save_only_model": True,
    }
    if evaluate:
        arguments |= {
            "eval_strategy": "steps",
            "eval_steps": settings.eval_steps,
            "save_strategy": "steps",
            "save_steps": settings.eval_steps,
            "save_total_limit": 1,  # plus the best one, which load_best_model_at_end keeps
            "load_best_model_at_end": True,
            "metric_for_best_model": "eval_loss",
            "greater_is_better": False,
        }
    else:
        arguments |= {"eval_strategy": "no", "save_strategy": "no"}
    return arguments


def _frozen_copy(model: PreTrainedModel) -> PreTrainedModel:
    reference = copy.deepcopy(model).eval()
    reference.requires_grad_(False)
    return reference


def _jsonable(value: Any) -> Any:
    """A JSON-serialisable copy (sets -> sorted lists, enums and other objects -> str)."""
    return json.loads(json.dumps(value, default=lambda v: sorted(v) if isinstance(v, (set, frozenset)) else str(v)))


def _library_versions() -> dict[str, str]:
    import accelerate
    import datasets
    import peft
    import transformers
    import trl

    import lmcore

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "peft": peft.__version__,
        "datasets": datasets.__version__,
        "accelerate": accelerate.__version__,
        "lmcore": lmcore.__version__,
    }
