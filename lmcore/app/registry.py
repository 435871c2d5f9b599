"""The app's models: what exists, loaded lazily on first use, cached, or "unavailable: <reason>".

Three kinds of entries (:class:`ModelSpec`):

- ``"run"``: a model trained from scratch, from a run folder (``checkpoints/best``, else
  ``last``, with the run's ``tokenizer/``). A run still training is reloaded when its
  checkpoint changes.
- ``"pretrained"``: a Hugging Face causal LM by Hub id, folder or GGUF file
  (:func:`lmcore.pretrained.load_pretrained`; offline, mirrored ids resolve to ``$LMCORE_MODELS_DIR``).
- ``"finetuned"``: a LoRA adapter folder applied to a copy of its base entry (merged, so it
  runs as an ordinary model), or a folder holding the merged fine-tuned model.

:meth:`ModelRegistry.get` returns a :class:`LoadedModel` or raises :class:`ModelUnavailable`
with a reason a visitor can read; a failed pretrained load is remembered (not retried on
every request) until :meth:`ModelRegistry.forget`.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmcore.io import read_json_object
from lmcore.models import MODEL_TYPES
from lmcore.pretrained import ADAPTER_CONFIG, load_pretrained, merge_adapter
from lmcore.runs import RunInfo, format_count


class ModelUnavailable(Exception):
    """A model that cannot be used; ``str(error)`` is the reason, for the page."""


@dataclass
class ModelSpec:
    """One model the app can offer (nothing loaded yet)."""

    name: str  # unique, shown in the page
    kind: str  # "run" | "pretrained" | "finetuned"
    source: str  # run folder, Hub id / folder / .gguf, or adapter / merged folder
    description: str = ""
    base: str | None = None  # finetuned adapters: the name of the base entry
    run: RunInfo | None = None  # runs: the run folder's info
    details: dict[str, Any] = field(default_factory=dict)  # shown in the About tab


@dataclass
class LoadedModel:
    """A model ready to run, with its tokenizer."""

    spec: ModelSpec
    model: Any  # an lmcore LanguageModel or a transformers PreTrainedModel, in eval mode
    tokenizer: Any  # an lmcore tokenizer or a Hugging Face one
    num_parameters: int
    load_seconds: float
    version: Any = None  # what the cache entry was built from (a run's checkpoint file and mtime)


def run_spec(run: RunInfo) -> ModelSpec:
    return ModelSpec(name=run.name, kind="run", source=str(run.path), description=run.describe(), run=run)


# What the About tab says about well-known pretrained models.
KNOWN_PRETRAINED = {
    "gpt2": "GPT-2 small (OpenAI, 2019): 12 layers × 768, 124M parameters, trained on WebText",
    "openai-community/gpt2": "GPT-2 small (OpenAI, 2019): 12 layers × 768, 124M parameters, trained on WebText",
    "HuggingFaceTB/SmolLM2-135M-Instruct": "SmolLM2-135M-Instruct (Hugging Face, 2024): Llama architecture, 30 layers "
    "× 576, 135M parameters, instruction-tuned; offline it loads from a 4-bit GGUF file, de-quantized to float32",
}


def pretrained_spec(name: str) -> ModelSpec:
    return ModelSpec(name=name, kind="pretrained", source=name,
                     description=KNOWN_PRETRAINED.get(name, "pretrained causal language model (Hugging Face)"))


def finetuned_spec(path: Path, base: str, name: str | None = None) -> ModelSpec:
    """A fine-tuned entry: a LoRA adapter folder (applied to ``base``) or a merged model folder."""
    is_adapter = (path / ADAPTER_CONFIG).is_file()
    kind_text = "LoRA adapter on " + base if is_adapter else "fine-tuned model (merged weights) of " + base
    return ModelSpec(
        name=name or f"{base} + {path.name}",
        kind="finetuned",
        source=str(path),
        description=kind_text,
        base=base,
        details={"adapter": is_adapter},
    )


class ModelRegistry:
    """Model specs by name; :meth:`get` loads a model once (thread-safe) and caches it."""

    def __init__(self, specs: Iterable[ModelSpec] = (), device: str = "cpu") -> None:
        self.device = device
        self._specs: dict[str, ModelSpec] = {}
        self._loaded: dict[str, LoadedModel] = {}
        self._failed: dict[str, str] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        for spec in specs:
            self.add(spec)

    # ------------------------------------------------------------------ the list
    def add(self, spec: ModelSpec) -> None:
        """Add or replace an entry (a replaced entry's cached model is dropped if its source changed)."""
        with self._guard:
            previous = self._specs.get(spec.name)
            if previous is not None and (previous.source, previous.kind, previous.base) != (spec.source, spec.kind, spec.base):
                self._loaded.pop(spec.name, None)
                self._failed.pop(spec.name, None)
            self._specs[spec.name] = spec
            self._locks.setdefault(spec.name, threading.Lock())

    def set_runs(self, runs: Iterable[RunInfo]) -> None:
        """Replace the run entries by these runs (models trained from scratch only)."""
        runs = [run for run in runs if run.kind == "lm" and run.model_type in MODEL_TYPES]
        keep = {run.name for run in runs}
        with self._guard:
            for name in [name for name, spec in self._specs.items() if spec.kind == "run" and name not in keep]:
                del self._specs[name]
                self._loaded.pop(name, None)
        for run in runs:
            self.add(run_spec(run))

    def names(self, kind: str | None = None) -> list[str]:
        return [name for name, spec in self._specs.items() if kind is None or spec.kind == kind]

    def spec(self, name: str) -> ModelSpec:
        """The entry called ``name``; ValueError listing the known names otherwise (names come from visitors)."""
        spec = self._specs.get(name) if isinstance(name, str) else None
        if spec is None:
            known = ", ".join(self._specs) or "none"
            raise ValueError(f"unknown model {name!r}; available: {known}")
        return spec

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def status(self, name: str) -> str:
        """``"loaded"``, ``"not loaded yet"`` or ``"unavailable: <reason>"``, without loading anything."""
        spec = self.spec(name)
        if name in self._failed:
            return f"unavailable: {self._failed[name]}"
        if spec.kind == "run" and spec.run is not None and spec.run.checkpoint is None:
            return "unavailable: no checkpoint yet (the run has not finished its first epoch)"
        return "loaded" if name in self._loaded else "not loaded yet"

    def forget(self, name: str | None = None) -> None:
        """Drop cached models and remembered failures (of one entry, or all), so the next use retries."""
        with self._guard:
            for store in (self._loaded, self._failed):
                if name is None:
                    store.clear()
                else:
                    store.pop(name, None)

    # ------------------------------------------------------------------ loading
    def get(self, name: str) -> LoadedModel:
        """The loaded model called ``name`` (loading it on first use); ModelUnavailable with the reason."""
        spec = self.spec(name)
        with self._locks[name]:
            if name in self._failed:
                raise ModelUnavailable(self._failed[name])
            version = _run_version(spec)
            cached = self._loaded.get(name)
            if cached is not None and cached.version == version:
                return cached
            start = time.perf_counter()
            try:
                model, tokenizer = self._load(spec)
            except ModelUnavailable:
                raise
            except Exception as error:  # any loading failure becomes a reason on the page, never a crash
                reason = f"{type(error).__name__}: {error}"
                if spec.kind != "run":  # a run may gain its checkpoint later; retry those
                    self._failed[name] = reason
                raise ModelUnavailable(reason) from error
            loaded = LoadedModel(
                spec=spec,
                model=model,
                tokenizer=tokenizer,
                num_parameters=sum(parameter.numel() for parameter in model.parameters()),
                load_seconds=time.perf_counter() - start,
                version=version,
            )
            spec.details["parameters"] = format_count(loaded.num_parameters)
            self._loaded[name] = loaded
            return loaded

    def _load(self, spec: ModelSpec) -> tuple[Any, Any]:
        if spec.kind == "run":
            return self._load_run(spec)
        if spec.kind == "pretrained":
            return load_pretrained(spec.source, device=self.device)
        if spec.kind == "finetuned":
            return self._load_finetuned(spec)
        raise ModelUnavailable(f"unknown model kind {spec.kind!r}")

    def _load_run(self, spec: ModelSpec) -> tuple[Any, Any]:
        from lmcore.data import load_tokenizer
        from lmcore.models import load_model

        run = spec.run
        checkpoint = run.checkpoint if run is not None else None
        if checkpoint is None:
            raise ModelUnavailable("no checkpoint yet (the run has not finished its first epoch)")
        if not (run.path / "tokenizer").is_dir():
            raise ModelUnavailable(f"the run folder has no tokenizer/ ({run.path})")
        model = load_model(checkpoint, map_location=self.device).eval()
        return model, load_tokenizer(run.path / "tokenizer")

    def _load_finetuned(self, spec: ModelSpec) -> tuple[Any, Any]:
        path = Path(spec.source)
        if not path.is_dir():
            raise ModelUnavailable(f"no fine-tuned model at {path}")
        if not (path / ADAPTER_CONFIG).is_file():  # a merged model folder
            return load_pretrained(path, device=self.device)
        if spec.base is None or spec.base not in self._specs:
            raise ModelUnavailable(f"the LoRA adapter {path} needs a base model, and none is configured")
        try:
            base = self.get(spec.base)
        except ModelUnavailable as error:
            raise ModelUnavailable(f"its base model {spec.base!r} is unavailable: {error}") from error
        # A copy of the base gets the adapter and is merged, so the base entry stays untouched
        # and the fine-tuned model runs as an ordinary transformers model.
        return merge_adapter(copy.deepcopy(base.model), path), base.tokenizer


def _run_version(spec: ModelSpec) -> Any:
    """A run's current checkpoint weights (path, mtime): a changed checkpoint is reloaded."""
    if spec.kind != "run" or spec.run is None:
        return None
    checkpoint = spec.run.checkpoint
    if checkpoint is None:
        return None
    weights = checkpoint / "model.safetensors"
    try:
        return (str(weights), weights.stat().st_mtime_ns)
    except OSError:
        return (str(checkpoint), None)


# ----------------------------------------------------------------------------- fine-tuned models in assets


def model_family(name: str) -> str:
    """A coarse family key for matching adapters to bases: ``gpt2``, ``smollm2`` or the lower-cased name."""
    lowered = name.lower()
    for family in ("smollm2", "smollm", "gpt2"):
        if family in lowered:
            return "smollm2" if family.startswith("smollm") else family
    return Path(lowered).name


def find_finetuned(finetune_dir: Path, base: str) -> Path | None:
    """The fine-tuned model of ``base`` under ``finetune_dir``, preferring a LoRA adapter to merged weights.

    Looks at ``finetune_dir`` itself and its sub-folders two levels deep: an adapter folder
    (``adapter_config.json``), a merged model folder (``config.json`` with ``model_type``),
    or a fine-tuning run folder (its ``adapter/``, ``merged/`` or ``model/``). A candidate
    matches when its base model (from its adapter config or run config) or its folder path
    names the same family as ``base`` (:func:`model_family`).
    """
    if not finetune_dir.is_dir():
        return None
    wanted = model_family(base)
    adapters, merged = [], []
    folders = [finetune_dir, *sorted(p for p in finetune_dir.glob("*") if p.is_dir()),
               *sorted(p for p in finetune_dir.glob("*/*") if p.is_dir())]
    root = finetune_dir.resolve()
    for folder in folders:
        if not folder.resolve().is_relative_to(root):
            continue
        hints = [str(folder.relative_to(finetune_dir))]
        adapter_config = read_json_object(folder / ADAPTER_CONFIG)
        if adapter_config is not None:
            hints.append(str(adapter_config.get("base_model_name_or_path") or ""))
            run_config = read_json_object(folder.parent / "config.json") or {}
            hints.append(str(run_config.get("base") or ""))
            if any(model_family(hint) == wanted or wanted in hint.lower() for hint in hints if hint):
                adapters.append(folder)
            continue
        model_config = read_json_object(folder / "config.json")
        if model_config is not None and "model_type" in model_config and any(folder.glob("*.safetensors")):
            run_config = read_json_object(folder.parent / "config.json") or {}
            hints += [str(model_config.get("_name_or_path") or ""), str(run_config.get("base") or "")]
            if any(model_family(hint) == wanted or wanted in hint.lower() for hint in hints if hint):
                merged.append(folder)
    candidates = adapters + merged
    return candidates[0] if candidates else None
