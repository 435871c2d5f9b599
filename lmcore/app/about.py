"""The About tab: what each model is, and the command that reproduces each result shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lmcore
from lmcore.app.config import AppConfig
from lmcore.app.registry import ModelRegistry
from lmcore.app.scoring import CrossDomain

INTRO = f"""
# Train Your Own GPT

Language models trained **from scratch** with this project's own code — a hand-written
Elman RNN, an LSTM, a Vaswani Transformer and GPT-2 — compared with exact perplexity and
bits per byte, next to pretrained models and a model fine-tuned on PubMedQA.
`lmcore` {lmcore.__version__}.

- **Training monitor**: loss, perplexity and learning rate of every run, live while a run trains.
- **Cross-domain perplexity**: how each model does on corpora it was not trained on; score your own text.
- **Prompt comparison**: one prompt, several models side by side, with the decoding settings you choose.
- **PubMedQA Q&A**: a base model and its fine-tuned version answer biomedical yes/no/maybe questions.
"""


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ") if value not in (None, "") else "–"


def models_table(registry: ModelRegistry) -> str:
    """Markdown table of every model: kind, architecture, parameters, data, status."""
    lines = ["| model | kind | what it is | parameters | status |", "|---|---|---|---:|---|"]
    for name in registry.names():
        spec = registry.spec(name)
        parameters = spec.details.get("parameters")
        if spec.run is not None and spec.run.num_parameters:
            from lmcore.runs import format_count

            parameters = format_count(spec.run.num_parameters)
        lines.append(
            f"| {_cell(name)} | {spec.kind} | {_cell(spec.description)} | {_cell(parameters or 'known once loaded')} "
            f"| {_cell(registry.status(name))} |"
        )
    return "\n".join(lines)


def commands_section(registry: ModelRegistry, crossdomain: CrossDomain, evaluation: Path | None) -> str:
    """Markdown: the command behind each run, the cross-domain results and the PubMedQA evaluation."""
    lines = ["## Reproduce every result", ""]
    run_lines = []
    for name in registry.names("run"):
        run = registry.spec(name).run
        if run is not None and run.command:
            test = run.results.get("test_ppl") if run.results else None
            suffix = f" (test perplexity {test:.2f})" if isinstance(test, (int, float)) else ""
            run_lines.append(f"- **{name}**{suffix}:\n  ```bash\n  {run.command}\n  ```")
    lines += ["**Models trained from scratch** (each run folder's `config.json` records its command, seed and versions):", ""]
    lines += run_lines or ["- no run folders found yet: `python training/train_lm.py --model lstm --data ptb --preset small --out runs/ptb-lstm-small`"]
    reference = [name for name in registry.names("run") if registry.spec(name).run.root == "reference"]
    if reference:
        lines += ["", "The reference runs in `assets/runs/` are copies of finished runs with their best checkpoint in fp16:",
                  f"`python training/publish_runs.py --runs {' '.join('runs/' + name for name in reference)} --out assets/runs`"]
    lines += ["", "**Cross-domain perplexity:**", ""]
    command = crossdomain.meta.get("command") if crossdomain.meta else None
    if command:
        text = command if isinstance(command, str) else " ".join(str(word) for word in command)
        if text.split(" ", 1)[0].endswith(".py"):
            text = "python " + text
        lines.append(f"```bash\n{text}\n```")
    else:
        lines.append("- not available yet (the results file records its command once it exists): `python training/evaluate_lm.py --help`")
    lines += ["", "**PubMedQA fine-tuning and evaluation:**", ""]
    for spec_name in registry.names("finetuned"):
        spec = registry.spec(spec_name)
        record = _finetune_record(Path(spec.source))
        if record and record.get("command"):
            lines.append(f"- fine-tuning ({spec_name}):\n  ```bash\n  {_python(record['command'])}\n  ```")
    if evaluation is not None:
        from lmcore.io import read_json_object

        report = read_json_object(evaluation) or {}
        command = (report.get("meta") or {}).get("command") if isinstance(report, dict) else None
        if command:
            lines.append(f"- evaluation:\n  ```bash\n  {_python(command)}\n  ```")
    if lines[-1] == "":
        lines.append("- not available yet: `python training/finetune.py --help`, then `python training/evaluate_finetune.py --help`")
    return "\n".join(lines)


def _python(command: Any) -> str:
    text = command if isinstance(command, str) else " ".join(str(word) for word in command)
    return "python " + text if text.split(" ", 1)[0].endswith(".py") else text


def _finetune_record(path: Path) -> dict[str, Any] | None:
    """The training/finetune.py run record next to an adapter or merged folder, if any."""
    from lmcore.io import read_json_object

    for candidate in (path / "config.json", path.parent / "config.json"):
        record = read_json_object(candidate)
        if isinstance(record, dict) and "method" in record:
            return record
    return None


def configuration_section(config: AppConfig) -> str:
    """Markdown: how this app instance is configured (the environment variables it read)."""
    return "\n".join([
        "## This app's configuration",
        "",
        "| setting | value | variable |",
        "|---|---|---|",
        f"| reference artefacts | `{config.assets_dir}` | `LMCORE_ASSETS_DIR` |",
        f"| run folders | {', '.join(f'`{p}`' for p in config.run_dirs) or '–'} | `LMCORE_RUN_DIRS` |",
        f"| pretrained models | {', '.join(f'`{m}`' for m in config.pretrained_models) or '–'} | `LMCORE_APP_MODELS` |",
        f"| PubMedQA base | `{config.pubmedqa_base}` | `LMCORE_PUBMEDQA_BASE` |",
        f"| device | `{config.device}` | `LMCORE_DEVICE` |",
        f"| Hugging Face Hub | {'reachable' if config.online else 'offline (local mirrors)'} | `HF_HUB_OFFLINE` |",
        f"| training from the page | {'off (Space mode)' if config.space_mode else 'on'} | `LMCORE_SPACE` |",
        f"| caps | {config.max_new_tokens} new tokens, {config.max_text_chars:,} characters of text | `LMCORE_APP_MAX_NEW_TOKENS`, `LMCORE_APP_MAX_TEXT_CHARS` |",
    ])


def about_markdown(config: AppConfig, registry: ModelRegistry, crossdomain: CrossDomain, evaluation: Path | None) -> str:
    return "\n\n".join([
        INTRO,
        "## The models\n\nModels load the first time they are used and stay in memory.\n\n" + models_table(registry),
        commands_section(registry, crossdomain, evaluation),
        configuration_section(config),
    ])
