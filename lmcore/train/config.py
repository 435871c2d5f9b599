"""The training configuration: one dataclass, presets, config files and command-line flags.

Precedence, lowest first: the dataclass defaults, the preset for (model, preset),
a YAML/JSON config file (``--config``), then command-line flags.

Model sizes are not duplicated here: every field of the chosen model's config
dataclass (``lmcore.models.<type>``) is a flag of its own (``--hidden-size``,
``--n-layer``, ...) and lands in ``TrainConfig.model_config``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmcore.models import MODEL_TYPES, model_class
from lmcore.train.presets import PRESET_NAMES, preset_values

TOKENIZER_KINDS = ("word", "gpt2", "char", "bpe")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "plateau", "cosine")
MIXED_PRECISION = ("no", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved to ``<out>/config.json``)."""

    # What to train on what.
    model: str = "lstm"  # rnn | lstm | transformer | gpt
    data: str = "ptb"  # a corpus name (lmcore.data.CORPUS_NAMES) or a text file
    tokenizer: str = "word"  # word | gpt2 | char | bpe
    bpe_vocab_size: int = 32_000  # only for tokenizer "bpe"
    preset: str | None = None  # tiny | small | medium
    out: str = "runs/lstm-ptb"
    seed: int = 1234
    model_config: dict[str, Any] = field(default_factory=dict)  # fields of the model's config dataclass

    # How long.
    epochs: int = 1
    max_steps: int | None = None  # stop after this many optimizer steps (overrides epochs)

    # Batches.
    batch_size: int = 20  # sequences per optimizer step, over all processes
    bptt: int = 35  # recurrent models: tokens per truncated-BPTT block
    carry_state: bool = True  # recurrent models: carry the hidden state across BPTT blocks (False: zeros each block)
    grad_accum: int = 1  # micro-batches per optimizer step (batch_size is split into them)

    # Optimizer and schedule.
    optimizer: str = "sgd"  # sgd | adam | adamw
    lr: float = 20.0
    weight_decay: float = 0.0
    momentum: float = 0.0  # sgd only
    betas: tuple[float, float] = (0.9, 0.999)  # adam/adamw
    schedule: str = "plateau"  # constant | plateau | cosine
    plateau_factor: float = 4.0  # plateau: divide the lr by this ...
    plateau_patience: int = 1  # ... after this many epochs without a better validation loss
    warmup_steps: int = 0  # linear warmup from 0, for every schedule
    min_lr_ratio: float = 0.1  # cosine: final lr = lr * min_lr_ratio
    grad_clip: float = 0.25  # max global gradient norm; 0 disables
    early_stopping_patience: int | None = None  # epochs without improvement before stopping

    # Evaluation, logging, checkpoints.
    eval_batch_size: int = 10  # recurrent: parallel streams; attention: windows per batch
    eval_stride: int | None = None  # attention models: sliding-window stride (None = half the context)
    log_every: int = 50  # steps between train-loss records in metrics.jsonl
    save_every: int = 0  # steps between extra checkpoints (0 = only last/best)
    sample_prompts: list[str] = field(default_factory=lambda: ["", "the meaning of life is"])
    sample_tokens: int = 50
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])  # tensorboard, wandb or none

    # Hardware.
    mixed_precision: str = "no"  # no | bf16 | fp16
    compile: bool = False  # torch.compile the model
    cpu: bool = False  # force the CPU even when a GPU is present

    def __post_init__(self) -> None:
        _check_choice("model", self.model, MODEL_TYPES)
        _check_choice("tokenizer", self.tokenizer, TOKENIZER_KINDS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        if self.preset is not None:
            _check_choice("preset", self.preset, PRESET_NAMES)
        for name in ("epochs", "batch_size", "bptt", "grad_accum", "eval_batch_size", "log_every", "sample_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1 (or unset), got {self.max_steps}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of grad_accum ({self.grad_accum})")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.plateau_factor <= 1:
            raise ValueError(f"plateau_factor must be greater than 1, got {self.plateau_factor}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.save_every < 0 or self.warmup_steps < 0 or self.grad_clip < 0:
            raise ValueError("save_every, warmup_steps and grad_clip must be non-negative")
        self.betas = tuple(self.betas)
        allowed = {f.name for f in dataclasses.fields(model_class(self.model).config_class)} - {"vocab_size"}
        unknown = sorted(set(self.model_config) - allowed)
        if unknown:
            raise ValueError(f"{unknown} are not settings of the {self.model} model; allowed: {sorted(allowed)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")


def _train_fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(TrainConfig) if f.name != "model_config"}


def _model_fields() -> dict[str, tuple[type, list[str]]]:
    """Every model-config field name -> (type, model types that have it)."""
    fields: dict[str, tuple[type, list[str]]] = {}
    for model_type in MODEL_TYPES:
        for f in dataclasses.fields(model_class(model_type).config_class):
            if f.name == "vocab_size":
                continue
            fields.setdefault(f.name, (_annotation_type(f), []))[1].append(model_type)
    return fields


def _annotation_type(f: dataclasses.Field) -> type:
    """bool, int, float or str from a field's annotation (``"int | None"`` -> int)."""
    annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "str")
    for kind in (bool, int, float):
        if kind.__name__ in annotation:
            return kind
    return str


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict of TrainConfig (and model) fields."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        values = yaml.safe_load(text) or {}
    elif path.suffix == ".json":
        values = json.loads(text)
    else:
        raise ValueError(f"config file {path} must end in .yaml, .yml or .json")
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a mapping of settings")
    return values


def resolve_config(values: dict[str, Any]) -> TrainConfig:
    """Build a TrainConfig from flat settings: preset < the given values.

    ``values`` may mix TrainConfig fields and model-config fields (flat, as in a
    config file or on the command line) and may carry a ``model_config`` dict.
    """
    values = dict(values)
    model = values.get("model", TrainConfig.model)
    preset = values.get("preset")
    train_fields, model_fields = _train_fields(), _model_fields()

    merged: dict[str, Any] = {}
    model_config: dict[str, Any] = {}
    layers = [preset_values(model, preset) if preset else {}, values]
    for layer in layers:
        layer = dict(layer)
        model_config.update(layer.pop("model_config", None) or {})
        for key, value in layer.items():
            if key in train_fields:
                merged[key] = value
            elif key in model_fields:
                model_config[key] = value
            else:
                raise ValueError(f"unknown setting {key!r}; see `python training/train_lm.py --help`")
    return TrainConfig(**merged, model_config=model_config)


def build_arg_parser() -> argparse.ArgumentParser:
    """Flags for every TrainConfig field and every model-config field."""
    parser = argparse.ArgumentParser(
        description="Train a language model from scratch (rnn, lstm, transformer or gpt).",
        epilog="Precedence: preset < --config file < flags. Several processes: "
        "`accelerate launch training/train_lm.py ...` or `torchrun --nproc_per_node N training/train_lm.py ...`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", help="a YAML or JSON file of settings (flags override it)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    helps = _FIELD_HELP
    group = parser.add_argument_group("training")
    for name, f in _train_fields().items():
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        _add_flag(group, name, default, helps.get(name, name))
    group = parser.add_argument_group("model size and shape (each applies to the model types named)")
    for name, (kind, owners) in _model_fields().items():
        _add_flag(group, name, kind(), f"{name.replace('_', ' ')} ({', '.join(owners)}); default: the preset's, "
                  "else the model config's", show_default=False)
    return parser


def _add_flag(group: argparse._ArgumentGroup, name: str, default: Any, help_text: str, show_default: bool = True) -> None:
    """A flag parsed to the type of ``default`` (whose value is shown in --help when ``show_default``)."""
    flag = "--" + name.replace("_", "-")
    if show_default:
        help_text = f"{help_text} (default: {list(default) if isinstance(default, tuple) else default})"
    if isinstance(default, bool):
        group.add_argument(flag, type=_parse_bool, metavar="{true,false}", help=help_text)
    elif isinstance(default, (list, tuple)):
        item_type = type(default[0]) if default else str
        group.add_argument(flag, type=item_type, nargs="*", help=help_text)
    elif default is None or isinstance(default, str):
        group.add_argument(flag, type=_parse_optional_int if name in _OPTIONAL_INTS else str, help=help_text)
    else:
        group.add_argument(flag, type=type(default), help=help_text)


_OPTIONAL_INTS = {"max_steps", "early_stopping_patience", "eval_stride"}


def _parse_optional_int(text: str) -> int | None:
    return None if text.lower() in ("none", "") else int(text)


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


RESUME_OVERRIDES = ("epochs", "max_steps", "log_every", "save_every")


def config_from_args(argv: list[str] | None = None) -> tuple[TrainConfig, bool]:
    """Parse the command line into (config, resume). Bad values exit with code 2.

    With ``--resume`` the run's saved config (``<out>/config.json``) is used; only
    ``RESUME_OVERRIDES`` may be given again (e.g. more ``--epochs``).
    """
    parser = build_arg_parser()
    args = vars(parser.parse_args(argv))
    resume = args.pop("resume", False)
    config_file = args.pop("config", None)
    try:
        if resume:
            if "out" not in args:
                raise ValueError("--resume needs --out, the run folder to continue")
            saved = Path(args["out"]) / "config.json"
            if not saved.is_file():
                raise ValueError(f"--resume: {args['out']} holds no run ({saved} is missing)")
            fixed = sorted(set(args) - {"out", *RESUME_OVERRIDES})
            if fixed or config_file:
                raise ValueError(f"--resume continues the saved run; only {', '.join(RESUME_OVERRIDES)} may be "
                                 f"changed, got {fixed + (['config'] if config_file else [])}")
            values = json.loads(saved.read_text(encoding="utf-8"))["config"]
            values.update(args)
            return TrainConfig(**values), True
        values = load_config_file(config_file) if config_file else {}
        values.update(args)
        return resolve_config(values), False
    except ValueError as error:
        parser.error(str(error))
        raise  # unreachable: parser.error exits


_FIELD_HELP = {
    "model": f"model type: {', '.join(MODEL_TYPES)}",
    "data": "corpus name (ptb, wikitext-2, wikitext-2-raw, wikitext-103, tinyshakespeare, pubmedqa) or a text file",
    "tokenizer": f"tokenizer: {', '.join(TOKENIZER_KINDS)} (word-level vocabulary / GPT-2 BPE / characters / BPE trained on the data)",
    "bpe_vocab_size": "vocabulary size of the BPE trained on the training split (tokenizer bpe)",
    "preset": f"size preset: {', '.join(PRESET_NAMES)} (tiny: seconds; small: ~1 h on 2 CPU cores; medium: GPU)",
    "out": "run directory (config.json, metrics.jsonl, checkpoints/, samples.jsonl, tokenizer/)",
    "seed": "random seed (weights, dropout, data order): the same seed gives the same losses",
    "epochs": "passes over the training split",
    "max_steps": "stop after this many optimizer steps (overrides epochs)",
    "batch_size": "sequences per optimizer step over all processes (must divide by processes x grad_accum)",
    "bptt": "recurrent models: tokens per truncated back-propagation-through-time block",
    "carry_state": "recurrent models: carry the (detached) hidden state from one BPTT block to the next within "
    "an epoch; false starts every block from zeros (an ablation: what many course implementations do)",
    "grad_accum": "gradient accumulation: micro-batches per optimizer step",
    "optimizer": f"optimizer: {', '.join(OPTIMIZERS)}",
    "lr": "peak learning rate",
    "weight_decay": "weight decay (decoupled for adamw)",
    "momentum": "SGD momentum",
    "betas": "Adam betas",
    "schedule": "constant; plateau (divide lr by --plateau-factor after --plateau-patience epochs without a better "
    "validation loss: 4/1 is the classic word-LM schedule, 2/2 halve-on-plateau); cosine (decay to lr*min_lr_ratio)",
    "plateau_factor": "plateau schedule: lr divisor",
    "plateau_patience": "plateau schedule: epochs without improvement before dividing",
    "warmup_steps": "linear learning-rate warmup steps",
    "min_lr_ratio": "cosine schedule: final lr as a fraction of --lr",
    "grad_clip": "clip the global gradient norm to this (0 = off)",
    "early_stopping_patience": "stop after this many epochs without a better validation loss (none = never)",
    "eval_batch_size": "evaluation: parallel streams (recurrent) or windows per batch (attention)",
    "eval_stride": "attention models: sliding-window stride for evaluation (none = half the context)",
    "log_every": "steps between training-loss records",
    "save_every": "steps between extra checkpoints in checkpoints/step-N (0 = only last and best)",
    "sample_prompts": "prompts to sample from after each epoch ('' = start token)",
    "sample_tokens": "new tokens per sample",
    "report_to": "experiment trackers: tensorboard, wandb, or none",
    "mixed_precision": f"mixed precision: {', '.join(MIXED_PRECISION)} (bf16/fp16 need hardware support)",
    "compile": "torch.compile the model",
    "cpu": "train on the CPU even if a GPU is available",
}
