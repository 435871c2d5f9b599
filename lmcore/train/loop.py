"""The training loop: one function, ``train(config)``, on Accelerate.

One process or many (DDP on GPUs, gloo on CPUs), optional bf16/fp16. What it writes
to the run directory ``config.out``:

- ``config.json``: the resolved config, command line, git commit, library versions, hardware;
- ``metrics.jsonl``: one JSON object per line (see ``_record``): train loss every
  ``log_every`` steps, train and validation perplexity per epoch, test perplexity of the
  best checkpoint at the end;
- ``checkpoints/last``, ``checkpoints/best`` (and ``checkpoints/step-N`` with ``save_every``);
- ``samples.jsonl``: generations for fixed prompts after each epoch;
- ``tokenizer/``; TensorBoard logs under ``logs/`` when enabled.

Batches are identical whatever the number of processes: ``batch_size`` is the global
batch, each process takes a contiguous share of its rows, and DDP averages the
gradients, so 1 and N processes compute the same update (up to floating-point order).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from tqdm.auto import tqdm

from lmcore.data import load_tokenizer
from lmcore.generate import generate
from lmcore.provenance import git_commit, hardware
from lmcore.io import append_jsonl, atomic_write_json
from lmcore.models import LanguageModel, build_model, load_model
from lmcore.train import checkpoint as ckpt
from lmcore.train.config import TrainConfig
from lmcore.train.data import TrainingData, prepare_data
from lmcore.train.schedule import LRSchedule


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class RunExists(ValueError):
    """The output folder already holds a run and --resume was not given."""


@dataclass
class Progress:
    """Where the run is; saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # batches of the current epoch done
    epoch_nll: float = 0.0  # sum of training losses (nats) in the current epoch so far
    epoch_tokens: int = 0  # training tokens in the current epoch so far
    elapsed: float = 0.0  # training seconds before this process started
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)  # per-epoch summaries


def train(config: TrainConfig, resume: bool = False, command: list[str] | None = None) -> dict[str, Any]:
    """Train ``config.model`` on ``config.data``; returns the final summary (also in results.json).

    ``resume`` continues the run in ``config.out`` from ``checkpoints/last``, exactly:
    the same next batches, dropout masks and learning rates as without the interruption.
    Ctrl-C saves ``checkpoints/last`` after the current step and raises KeyboardInterrupt.
    """
    interrupted = _install_interrupt_handler()
    try:
        return _train(config, resume, command, interrupted)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _train(config: TrainConfig, resume: bool, command: list[str] | None, interrupted: dict[str, bool]) -> dict[str, Any]:
    out = Path(config.out)
    trackers = [name for name in config.report_to if name != "none"]
    accelerator = Accelerator(
        cpu=config.cpu,
        mixed_precision=config.mixed_precision,
        log_with=trackers or None,
        project_dir=str(out / "logs"),
    )
    world, rank = accelerator.num_processes, accelerator.process_index
    if config.batch_size % (world * config.grad_accum):
        raise ValueError(
            f"batch_size ({config.batch_size}) must be divisible by processes x grad_accum ({world} x {config.grad_accum})"
        )
    _check_run_directory(out, resume)
    set_seed(config.seed)

    data = prepare_data(config, tokenizer=load_tokenizer(out / "tokenizer") if resume else None)
    model = build_model(config.model, vocab_size=data.tokenizer.vocab_size, **config.model_config)
    optimizer = _build_optimizer(config, model)
    schedule = LRSchedule(
        kind=config.schedule, peak_lr=config.lr, total_steps=_total_steps(config, data, world),
        warmup_steps=config.warmup_steps, min_lr_ratio=config.min_lr_ratio,
        factor=config.plateau_factor, patience=config.plateau_patience,
    )
    progress = Progress()
    hidden: Any = None
    if resume:
        folder = ckpt.find_checkpoint(out / "checkpoints" / "last")
        if folder is None:
            raise ValueError(f"--resume: {out} has no checkpoint to resume from (checkpoints/last is missing)")
        model = load_model(folder)
        optimizer = _build_optimizer(config, model)
        optimizer.load_state_dict(ckpt.load_torch(folder / ckpt.OPTIMIZER_STATE))
        state = ckpt.read_trainer_state(folder)
        schedule.load_state_dict(state["schedule"])
        progress = Progress(**state["progress"])
        rank_state = ckpt.load_torch(folder / ckpt.rank_file(rank))
        hidden = rank_state.get("hidden")
        ckpt.set_rng_state(rank_state["rng"])
        if accelerator.is_main_process:  # keep a record of every resumption beside the original command
            record = json.loads((out / "config.json").read_text(encoding="utf-8"))
            record.setdefault("resumes", []).append({
                "command": command if command is not None else sys.argv, "git_commit": git_commit(),
                "at_step": progress.step, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            })
            atomic_write_json(out / "config.json", record)
    elif accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        data.tokenizer.save(out / "tokenizer")
        atomic_write_json(out / "config.json", _run_record(config, command, accelerator, model))
    accelerator.wait_for_everyone()

    if config.compile:
        model = torch.compile(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    if trackers:
        accelerator.init_trackers("train_lm", config=_flat(config.to_dict()))

    runner = _Runner(config, accelerator, model, optimizer, schedule, data, progress, out)
    if hidden is not None:
        hidden = _map_state(hidden, lambda tensor: tensor.to(accelerator.device))
    try:
        runner.run(hidden, interrupted)
    finally:
        accelerator.end_training()
    return runner.summary


# ----------------------------------------------------------------------------- the loop
class _Runner:
    """Holds the pieces of one run so that the loop below reads top to bottom."""

    def __init__(self, config: TrainConfig, accelerator: Accelerator, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, schedule: LRSchedule, data: TrainingData,
                 progress: Progress, out: Path) -> None:
        self.config, self.accelerator, self.model, self.optimizer = config, accelerator, model, optimizer
        self.schedule, self.data, self.progress, self.out = schedule, data, progress, out
        self.raw_model: LanguageModel = accelerator.unwrap_model(model)
        self.raw_model = getattr(self.raw_model, "_orig_mod", self.raw_model)
        self.start_time = time.time() - progress.elapsed
        self.summary: dict[str, Any] = {}

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def run(self, hidden: Any, interrupted: dict[str, bool]) -> None:
        config, progress = self.config, self.progress
        bar = self._progress_bar()
        while progress.epoch < config.epochs and not progress.stopped_early:
            window_nll, window_tokens, window_start = 0.0, 0, time.time()
            for inputs, targets in self.data.train_batches(progress.epoch, progress.batch_in_epoch, self.accelerator):
                if progress.batch_in_epoch == 0 or not config.carry_state:
                    hidden = None
                lr = self.schedule.lr_at(progress.step)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                loss, grad_norm, hidden, tokens = self._step(inputs, targets, hidden)
                stop = self._should_stop(loss, grad_norm, interrupted)
                if stop == "diverged":
                    last = self.out / "checkpoints" / "last"
                    raise TrainingDiverged(
                        f"loss became {loss:.4g} at step {progress.step + 1}; training stopped. "
                        f"Last good checkpoint: {last if last.exists() else 'none yet'} "
                        "(lower --lr or --grad-clip, then --resume or start again)"
                    )
                progress.step += 1
                progress.batch_in_epoch += 1
                progress.epoch_nll += loss * tokens
                progress.epoch_tokens += tokens
                window_nll += loss * tokens
                window_tokens += tokens
                if bar is not None:
                    bar.update(1)
                if progress.step % config.log_every == 0:
                    seconds = time.time() - window_start
                    record = self._record("train", window_nll / window_tokens, lr, tokens_per_s=window_tokens / max(seconds, 1e-9))
                    if bar is not None:
                        bar.set_postfix(loss=f"{record['loss']:.3f}", ppl=f"{record['ppl']:.1f}", tok_s=f"{record['tokens_per_s']:.0f}")
                    window_nll, window_tokens, window_start = 0.0, 0, time.time()
                if config.save_every and progress.step % config.save_every == 0:
                    self._save(f"step-{progress.step}", hidden)
                if stop == "interrupt":
                    self._save("last", hidden)
                    if self.main:
                        print(f"\nInterrupted: saved {self.out / 'checkpoints' / 'last'} at step {progress.step}; "
                              f"continue with --resume --out {self.out}", file=sys.stderr)
                    raise KeyboardInterrupt
                if config.max_steps is not None and progress.step >= config.max_steps:
                    break
            finished_epoch = config.max_steps is None or progress.step < config.max_steps
            self._end_epoch(finished_epoch, hidden)
            if not finished_epoch:
                break
        if bar is not None:
            bar.close()
        self._finish()

    def _step(self, inputs: torch.Tensor, targets: torch.Tensor, hidden: Any) -> tuple[float, float, Any, int]:
        """One optimizer step over this process's rows, split into grad_accum micro-batches.

        inputs, targets: (rows, time). Returns (mean loss in nats over all processes' tokens,
        global gradient norm before clipping, new recurrent state, tokens in the global batch).
        """
        self.model.train()
        micro_inputs = inputs.chunk(self.config.grad_accum)
        micro_targets = targets.chunk(self.config.grad_accum)
        micro_hidden = _split_state(hidden, self.config.grad_accum)
        new_hidden, loss_sum = [], torch.zeros((), device=inputs.device)
        for index, (x, y, h) in enumerate(zip(micro_inputs, micro_targets, micro_hidden)):
            last = index == len(micro_inputs) - 1
            context = self.accelerator.no_sync(self.model) if not last else contextlib.nullcontext()
            with context:
                output = self.model(x, state=h, labels=y)
                self.accelerator.backward(output.loss / len(micro_inputs))
            loss_sum += output.loss.detach() / len(micro_inputs)
            new_hidden.append(self.raw_model.detach_state(output.state) if self.raw_model.is_recurrent else None)
        max_norm = self.config.grad_clip or math.inf
        grad_norm = float(self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        mean_loss = self.accelerator.reduce(loss_sum, reduction="mean").item()
        tokens = targets.numel() * self.accelerator.num_processes
        return mean_loss, grad_norm, _join_state(new_hidden), tokens

    def _should_stop(self, loss: float, grad_norm: float, interrupted: dict[str, bool]) -> str | None:
        """'diverged', 'interrupt' or None, agreed by all processes."""
        flags = torch.tensor(
            [float(not math.isfinite(loss) or not math.isfinite(grad_norm)), float(interrupted["flag"])],
            device=self.accelerator.device,
        )
        flags = self.accelerator.reduce(flags, reduction="sum")
        if flags[0] > 0:
            return "diverged"
        if flags[1] > 0:
            return "interrupt"
        return None

    def _end_epoch(self, finished_epoch: bool, hidden: Any) -> None:
        progress = self.progress
        epoch_number = progress.epoch + (1 if finished_epoch else progress.batch_in_epoch / self.data.batches_per_epoch)
        train_loss = progress.epoch_nll / max(progress.epoch_tokens, 1)
        valid = self._evaluate("valid")
        improved = self.schedule.end_epoch(valid["loss"])
        lr = self.schedule.lr_at(progress.step)
        self._record("train", train_loss, lr, event="epoch", epoch=epoch_number)
        self._record("valid", valid["loss"], lr, event="epoch", epoch=epoch_number,
                     extra={"tokens": valid["tokens"], "best": improved})
        progress.history.append({"epoch": epoch_number, "step": progress.step, "train_ppl": math.exp(train_loss),
                                 "valid_ppl": valid["ppl"], "lr": lr})
        if finished_epoch:
            progress.epoch += 1
            progress.batch_in_epoch = 0
            progress.epoch_nll, progress.epoch_tokens = 0.0, 0
        patience = self.config.early_stopping_patience
        if patience is not None and self.schedule.epochs_without_improvement >= patience:
            progress.stopped_early = True
        if improved:
            self._save("best", None, model_only=True)
        self._save("last", None if finished_epoch else hidden)
        self._write_samples(epoch_number)

    def _finish(self) -> None:
        """Test perplexity of the best checkpoint, on the main process, into results.json.

        The other processes read results.json after a barrier rather than receive a broadcast:
        a broadcast as the last collective can deadlock at exit, when gloo's worker thread waits
        for the GIL to free the broadcast's tensors while the main thread, holding the GIL, frees
        the process group and joins that worker (seen with torchrun on 2 CPU processes).
        """
        self.accelerator.wait_for_everyone()
        if self.main:
            best = ckpt.find_checkpoint(self.out / "checkpoints" / "best")
            best_model = load_model(best).to(self.accelerator.device) if best else self.raw_model
            test = self.data.evaluate(best_model, "test", self.accelerator.device)
            lr = self.schedule.lr_at(self.progress.step)
            self._record("test", test["loss"], lr, event="final", extra={"tokens": test["tokens"], "checkpoint": "best"})
            atomic_write_json(self.out / "results.json", {
                "model": self.config.model, "data": self.config.data, "steps": self.progress.step,
                "epochs": self.progress.history, "best_valid_ppl": math.exp(self.schedule.best_valid_loss),
                "test_ppl": test["ppl"], "test_tokens": test["tokens"], "stopped_early": self.progress.stopped_early,
                "train_seconds": time.time() - self.start_time, "num_parameters": self.raw_model.num_parameters(),
            })
        self.accelerator.wait_for_everyone()
        self.summary = json.loads((self.out / "results.json").read_text(encoding="utf-8"))

    # ------------------------------------------------------------------ helpers
    def _evaluate(self, split: str) -> dict[str, float]:
        """Exact perplexity of a split, computed on the main process and shared with all."""
        result: list[Any] = [None]
        if self.main:
            result[0] = self.data.evaluate(self.raw_model, split, self.accelerator.device)
        broadcast_object_list(result, from_process=0)
        return result[0]

    def _record(self, split: str, loss: float, lr: float, event: str = "step", epoch: float | None = None,
                tokens_per_s: float | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """One metrics.jsonl line: step, epoch, split, loss (nats/token), ppl, lr, tokens_per_s, time (s)."""
        progress = self.progress
        record = {
            "step": progress.step,
            "epoch": epoch if epoch is not None else progress.epoch + progress.batch_in_epoch / self.data.batches_per_epoch,
            "split": split, "event": event, "loss": loss, "ppl": math.exp(min(loss, 700.0)), "lr": lr,
            "tokens_per_s": tokens_per_s, "time": time.time() - self.start_time, **(extra or {}),
        }
        if self.main:
            append_jsonl(self.out / "metrics.jsonl", record)
            self.accelerator.log({f"{split}/loss": loss, f"{split}/ppl": record["ppl"], "lr": lr}, step=progress.step)
        return record

    def _save(self, name: str, hidden: Any, model_only: bool = False) -> None:
        """Write checkpoints/<name> (all processes take part; the main one writes the shared files)."""
        final = self.out / "checkpoints" / name
        staging = final.with_name(final.name + ".partial")
        self.progress.elapsed = time.time() - self.start_time
        if self.main:
            staging = ckpt.staging_dir(final)
            self.raw_model.save_pretrained(staging)
            ckpt.write_trainer_state(staging, {
                "progress": self.progress.__dict__, "schedule": self.schedule.state_dict(),
            })
            if not model_only:
                ckpt.save_torch(staging / ckpt.OPTIMIZER_STATE, self.optimizer.state_dict())
        self.accelerator.wait_for_everyone()
        if not model_only:
            hidden_cpu = None if hidden is None else _map_state(hidden, lambda t: t.detach().cpu())
            ckpt.save_torch(staging / ckpt.rank_file(self.accelerator.process_index),
                            {"rng": ckpt.rng_state(), "hidden": hidden_cpu})
        self.accelerator.wait_for_everyone()
        if self.main:
            ckpt.commit_dir(staging, final)
        self.accelerator.wait_for_everyone()

    def _write_samples(self, epoch: float) -> None:
        if not self.main:
            return
        for prompt in self.config.sample_prompts:
            for strategy, options in (("greedy", {}), ("top_p", {"do_sample": True, "top_p": 0.9, "seed": self.config.seed})):
                text = generate(self.raw_model, self.data.tokenizer, prompt,
                                max_new_tokens=self.config.sample_tokens, **options).text
                append_jsonl(self.out / "samples.jsonl", {
                    "epoch": epoch, "step": self.progress.step, "prompt": prompt, "strategy": strategy, "text": text,
                })

    def _progress_bar(self) -> Any:
        if not self.main:
            return None
        total = self.config.max_steps or self.config.epochs * self.data.batches_per_epoch
        return tqdm(total=total, initial=self.progress.step, desc=f"train {self.config.model}", unit="step",
                    dynamic_ncols=True, disable=os.environ.get("LMCORE_NO_PROGRESS") == "1")


# ----------------------------------------------------------------------------- setup helpers
def _check_run_directory(out: Path, resume: bool) -> None:
    if resume:
        if not (out / "config.json").is_file():
            raise ValueError(f"--resume: {out} holds no run (config.json is missing)")
    elif (out / "metrics.jsonl").exists() or (out / "checkpoints").exists():
        raise RunExists(f"{out} already holds a run; pass --resume to continue it, or choose another --out")


def _build_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    # AdamW: no weight decay on biases, LayerNorm gains and other 1-D parameters (as in nanoGPT / GPT-2).
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


def _total_steps(config: TrainConfig, data: TrainingData, world: int) -> int:
    return config.max_steps or config.epochs * data.batches_per_epoch


def _install_interrupt_handler() -> dict[str, bool]:
    """Ctrl-C sets a flag; the loop saves a checkpoint after the current step and exits."""
    interrupted = {"flag": False}

    def handler(signum: int, frame: Any) -> None:
        if interrupted["flag"]:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        interrupted["flag"] = True

    signal.signal(signal.SIGINT, handler)
    return interrupted


def _run_record(config: TrainConfig, command: list[str] | None, accelerator: Accelerator,
                model: LanguageModel) -> dict[str, Any]:
    """config.json: all that is needed to reproduce the run."""
    import accelerate
    import transformers

    return {
        "config": config.to_dict(),
        "model_config": model.config.to_dict(),
        "num_parameters": model.num_parameters(),
        "command": command if command is not None else sys.argv,
        "git_commit": git_commit(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "accelerate": accelerate.__version__},
        "hardware": {
            **hardware(accelerator.device), "num_processes": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type), "mixed_precision": accelerator.mixed_precision,
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _flat(values: dict[str, Any]) -> dict[str, Any]:
    """TensorBoard hparams take scalars and strings only."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in _flat(value).items()})
        elif isinstance(value, (int, float, str, bool)):
            flat[key] = value
        else:
            flat[key] = str(value)
    return flat


def _map_state(state: Any, fn: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return fn(state)
    return tuple(_map_state(item, fn) for item in state)


def _split_state(state: Any, parts: int) -> list[Any]:
    """Split a recurrent state (tensors with the batch on dim 1) into micro-batch shares."""
    if state is None:
        return [None] * parts
    if isinstance(state, torch.Tensor):
        return list(state.chunk(parts, dim=1))
    return list(zip(*(_split_state(item, parts) for item in state)))


def _join_state(states: list[Any]) -> Any:
    if states[0] is None:
        return None
    if isinstance(states[0], torch.Tensor):
        return torch.cat(states, dim=1)
    return tuple(_join_state(list(items)) for items in zip(*states))
