"""The functions behind the Gradio app (``app.py`` is only its layout).

- :mod:`lmcore.app.config`: the environment variables the app reads (:class:`AppConfig`).
- :mod:`lmcore.app.runs`: run folders under the configured roots, their metrics and summaries.
- :mod:`lmcore.app.plots`: matplotlib figures (training curves, bars).
- :mod:`lmcore.app.registry`: the models, loaded lazily and cached, or "unavailable: <reason>".
- :mod:`lmcore.app.generation`: prompt comparison, streamed side by side, tokens coloured by probability.
- :mod:`lmcore.app.scoring`: cross-domain results, and scoring a pasted or uploaded text.
- :mod:`lmcore.app.pubmedqa`: the PubMedQA Q&A tab.
- :mod:`lmcore.app.training`: training runs started from the page (background process, stop).
- :mod:`lmcore.app.about`: the About tab.

:class:`AppState` ties them together for one app instance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmcore.app.config import AppConfig
from lmcore.app.pubmedqa import finetuned_prompt_format
from lmcore.finetune.data import DEFAULT_QA_PROMPT
from lmcore.app.registry import ModelRegistry, find_finetuned, finetuned_spec, pretrained_spec
from lmcore.app.runs import discover_runs
from lmcore.app.training import TrainingManager
from lmcore.runs import RunInfo


def display_name(source: str) -> str:
    """A short model name for a Hub id (kept as is) or a local path (its folder or file name)."""
    path = Path(source)
    if source.startswith(("/", ".", "~")) or path.exists():
        return path.name or source
    return source


@dataclass
class AppState:
    """One app instance: its configuration, models, runs and training manager."""

    config: AppConfig
    registry: ModelRegistry
    trainer: TrainingManager
    runs: dict[str, RunInfo]
    pubmedqa_base: str  # registry name of the PubMedQA base model
    pubmedqa_finetuned: str | None  # registry name of its fine-tuned version, None when there is none
    finetuned_missing_reason: str  # why there is none
    pubmedqa_finetuned_path: Path | None = None  # its adapter or model folder
    pubmedqa_prompt_format: str = DEFAULT_QA_PROMPT  # the QA prompt format it was trained with

    @classmethod
    def create(cls, config: AppConfig) -> AppState:
        registry = ModelRegistry(device=config.device)
        runs = discover_runs(config.run_roots)
        registry.set_runs(runs.values())
        for source in config.pretrained_models:
            spec = pretrained_spec(source)
            spec.name = display_name(source)
            registry.add(spec)
        base_spec = pretrained_spec(config.pubmedqa_base)
        base_spec.name = display_name(config.pubmedqa_base)
        base_spec.description = f"the PubMedQA base (not fine-tuned): {base_spec.description}"
        registry.add(base_spec)
        finetuned_path = config.pubmedqa_finetuned or find_finetuned(config.finetune_dir, config.pubmedqa_base)
        finetuned_name, reason = None, ""
        if finetuned_path is None:
            reason = (f"no fine-tuned model of {config.pubmedqa_base} found under {config.finetune_dir} "
                      "(set LMCORE_PUBMEDQA_FINETUNED to a LoRA adapter or merged model folder)")
        elif not finetuned_path.is_dir():
            reason = f"LMCORE_PUBMEDQA_FINETUNED={finetuned_path} is not a folder"
        else:
            spec = finetuned_spec(finetuned_path, base_spec.name, name=f"{base_spec.name} + PubMedQA fine-tuning")
            registry.add(spec)
            finetuned_name = spec.name
        disabled = "this app runs in Space mode (LMCORE_SPACE=1), shared by every visitor"
        trainer = TrainingManager(config.train_dir, enabled=not config.space_mode, disabled_reason=disabled)
        shown_path = finetuned_path if finetuned_name else None
        return cls(config, registry, trainer, runs, base_spec.name, finetuned_name, reason, shown_path,
                   finetuned_prompt_format(shown_path) or DEFAULT_QA_PROMPT)

    def refresh_runs(self) -> dict[str, RunInfo]:
        """Look for run folders again (new runs, finished runs) and update the model list."""
        self.runs = discover_runs(self.config.run_roots)
        self.registry.set_runs(self.runs.values())
        return self.runs


__all__ = ["AppConfig", "AppState", "ModelRegistry", "display_name"]
