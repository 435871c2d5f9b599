"""The app's configuration, read from environment variables (documented in README.md, "The app").

| variable | default | what |
|---|---|---|
| ``LMCORE_ASSETS_DIR`` | ``<repo>/assets`` | reference artefacts: ``runs/``, ``crossdomain/``, ``finetune/`` |
| ``LMCORE_RUN_DIRS`` | ``runs`` | folders holding run folders, separated by ``os.pathsep`` (``:``) |
| ``LMCORE_APP_TRAIN_DIR`` | the first of ``LMCORE_RUN_DIRS`` | where runs started from the page go |
| ``LMCORE_APP_MODELS`` | ``gpt2`` online, the SmolLM2 mirror offline | pretrained models for the prompt comparison (comma-separated Hub ids or folders) |
| ``LMCORE_DEVICE`` | ``cpu`` | ``cpu``, ``cuda``, ``cuda:1``, ``mps`` or ``auto`` |
| ``LMCORE_SPACE`` | ``1`` when ``SPACE_ID`` is set, else ``0`` | shared-Space mode: no training from the page |
| ``LMCORE_PUBMEDQA_BASE`` | ``gpt2`` online when a fine-tuned GPT-2 is found under ``assets/finetune/``, else ``HuggingFaceTB/SmolLM2-135M-Instruct`` | the PubMedQA base model |
| ``LMCORE_PUBMEDQA_FINETUNED`` | found under ``assets/finetune/`` | LoRA adapter folder or merged model folder |
| ``LMCORE_PUBMEDQA_EVAL`` | found under ``assets/finetune/`` | the evaluation JSON whose accuracy is summarised |
| ``LMCORE_CROSSDOMAIN_RESULTS`` | ``assets/crossdomain/results.json`` | cross-domain results |
| ``LMCORE_APP_MAX_NEW_TOKENS`` | ``256`` | cap on generated tokens per model |
| ``LMCORE_APP_MAX_TEXT_CHARS`` | ``10000`` | cap on a pasted or uploaded text to score |

"Online" means the Hugging Face Hub answers (:func:`hub_reachable`); ``HF_HUB_OFFLINE=1`` means offline.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GPT2_ID = "gpt2"
TRUE_VALUES = ("1", "true", "yes", "on")
FALSE_VALUES = ("0", "false", "no", "off", "")


@dataclass
class AppConfig:
    """Everything the app reads from its environment (see the module docstring)."""

    assets_dir: Path
    run_dirs: list[Path]
    train_dir: Path
    pretrained_models: list[str]
    device: str = "cpu"
    space_mode: bool = False
    pubmedqa_base: str = GPT2_ID
    pubmedqa_finetuned: Path | None = None  # None: discover under assets/finetune
    pubmedqa_eval: Path | None = None  # None: discover under assets/finetune
    crossdomain_results: Path = field(default_factory=lambda: Path("assets/crossdomain/results.json"))
    max_new_tokens: int = 256
    max_text_chars: int = 10_000
    online: bool = False

    @property
    def reference_runs_dir(self) -> Path:
        return self.assets_dir / "runs"

    @property
    def finetune_dir(self) -> Path:
        return self.assets_dir / "finetune"

    @property
    def run_roots(self) -> list[tuple[str, Path]]:
        """(label, folder) of every folder searched for run folders; reference runs first."""
        roots = [("reference", self.reference_runs_dir)]
        roots += [(str(path), path) for path in self.run_dirs if path.resolve() != self.reference_runs_dir.resolve()]
        return roots

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AppConfig:
        """Read the configuration; ValueError naming the variable when a value is malformed."""
        env = os.environ if environ is None else environ
        assets_dir = Path(env.get("LMCORE_ASSETS_DIR") or REPO_ROOT / "assets")
        run_dirs = [Path(part) for part in (env.get("LMCORE_RUN_DIRS") or "runs").split(os.pathsep) if part]
        train_dir = Path(env["LMCORE_APP_TRAIN_DIR"]) if env.get("LMCORE_APP_TRAIN_DIR") else run_dirs[0] if run_dirs else Path("runs")
        space_default = "1" if env.get("SPACE_ID") else "0"
        online = hub_reachable(env)
        default_base = GPT2_ID if online else SMOLLM2_ID
        pubmedqa_default = default_base
        if online and not env.get("LMCORE_PUBMEDQA_FINETUNED"):
            from lmcore.app.registry import find_finetuned

            if find_finetuned(assets_dir / "finetune", GPT2_ID) is None:
                # No fine-tuned GPT-2 is shipped: compare the base whose fine-tuned adapter is (from the Hub).
                pubmedqa_default = SMOLLM2_ID
        models = env.get("LMCORE_APP_MODELS")
        pretrained = [name.strip() for name in models.split(",") if name.strip()] if models is not None else [default_base]
        return cls(
            assets_dir=assets_dir,
            run_dirs=run_dirs,
            train_dir=train_dir,
            pretrained_models=pretrained,
            device=resolve_device(env.get("LMCORE_DEVICE") or "cpu"),
            space_mode=_flag(env, "LMCORE_SPACE", space_default),
            pubmedqa_base=env.get("LMCORE_PUBMEDQA_BASE") or pubmedqa_default,
            pubmedqa_finetuned=Path(env["LMCORE_PUBMEDQA_FINETUNED"]) if env.get("LMCORE_PUBMEDQA_FINETUNED") else None,
            pubmedqa_eval=Path(env["LMCORE_PUBMEDQA_EVAL"]) if env.get("LMCORE_PUBMEDQA_EVAL") else None,
            crossdomain_results=Path(env.get("LMCORE_CROSSDOMAIN_RESULTS") or assets_dir / "crossdomain" / "results.json"),
            max_new_tokens=_positive_int(env, "LMCORE_APP_MAX_NEW_TOKENS", 256),
            max_text_chars=_positive_int(env, "LMCORE_APP_MAX_TEXT_CHARS", 10_000),
            online=online,
        )


def _flag(env: Mapping[str, str], name: str, default: str) -> bool:
    value = env.get(name, default).strip().lower()
    if value in TRUE_VALUES:
        return True
    if value in FALSE_VALUES:
        return False
    raise ValueError(f"{name}={value!r}: use 1 or 0")


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"{name}={value!r}: expected a positive integer")
    return number


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; other names are checked and returned."""
    import torch

    name = name.strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"LMCORE_DEVICE={name!r} is not a torch device (use cpu, cuda, cuda:N, mps or auto)") from error
    return name


def hub_reachable(environ: Mapping[str, str] | None = None, timeout: float = 1.5) -> bool:
    """Whether the Hugging Face Hub can be used: not forced offline, and huggingface.co answers on port 443."""
    env = os.environ if environ is None else environ
    if env.get("HF_HUB_OFFLINE", "").strip().lower() in TRUE_VALUES:
        return False
    return _can_connect("huggingface.co", 443, timeout)


@lru_cache(maxsize=4)
def _can_connect(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
