"""Compare a pretrained model with its fine-tuned version on PubMedQA and on general text.

Example (offline, with the mirrors in ../shared)::

    export HF_HUB_OFFLINE=1 LMCORE_DATA_DIR=../shared/data LMCORE_MODELS_DIR=../shared/models
    python training/evaluate_finetune.py --base HuggingFaceTB/SmolLM2-135M-Instruct \\
        --finetuned runs/smollm2-lora --out runs/smollm2-lora/evaluation.json

For each of the two models (``--base`` and ``--finetuned``: a Hub id, a model folder, a
``.gguf`` file, a LoRA adapter folder, or a run folder of ``training/finetune.py``, whose
``model/`` or ``merged/`` model is used (in a published LoRA run without ``merged/``: its
``adapter/``, merged into the base on load) and whose settings, parameter counts, time and
memory are copied into the report), it measures:

- **in-domain perplexity** on held-out PubMedQA text: the contexts and long answers of
  the 500 official test questions (``load_corpus("pubmedqa", "test")``; fine-tuning
  never sees them);
- **general-domain perplexity** on WikiText-2 raw test (``load_corpus("wikitext-2-raw",
  "test")``): does fine-tuning make the model forget?
- Both are exact token-weighted perplexities from a sliding window of
  ``--context-length`` tokens moved by ``--stride`` (each token scored once, with at
  least ``context-length - stride`` tokens of context; see
  :mod:`lmcore.eval.perplexity`), plus bits per byte. ``--max-chars`` keeps only the
  first N characters of each text (cut at a line end) for quick CPU runs;
- **PubMedQA accuracy and macro-F1** on the official test questions (``--limit N``: a
  fixed random sample of N of them, seed ``LIMIT_SEED``, the same for both models and
  every run; not the first N, as the official file lists all "yes" questions first), by
  comparing the likelihoods of "yes", "no" and "maybe" after the QA prompt (zero-shot
  for a base model; :mod:`lmcore.eval.pubmedqa`; both models get the prompt format the
  fine-tuned run was trained with, or ``--qa-prompt``), with the majority-class
  baseline of the same questions (276/500 = 55.2% "yes" on all 500) and the confusion
  matrix;
- **greedy generations** for fixed prompts (``--prompt`` adds more), side by side.

The JSON report (written atomically to ``--out``)::

    meta          command, git commit, library versions, hardware, date, settings and limits
    models        {base, finetuned}: source, model folder, parameters, run record, seconds per part
    perplexity    {in_domain, general}: corpus, characters used, window, {base, finetuned} results
    pubmedqa      n, majority baseline, {base, finetuned}: accuracy, macro_f1, confusion_matrix, predictions
    generations   [{prompt, base, finetuned}]
    comparison    in_domain_ppl_change_percent, general_ppl_change_percent (100 * (finetuned / base - 1)),
                  accuracy_change_points, macro_f1_change_points (100 * (finetuned - base))

Both models are loaded before anything is evaluated, so a model that cannot be loaded,
a run folder without its model, or bad settings exit at once with status 2 and a message.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shlex
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from lmcore.finetune.data import DEFAULT_QA_PROMPT, QA_PROMPT_FORMATS  # noqa: E402

DEFAULT_PROMPTS = (
    # The course example, verbatim, and the same question in the fine-tuning prompt format.
    "Question: What causes COVID-19? Context: COVID-19 is caused by the SARS-CoV-2 virus. Answer:",
    "Question: What causes COVID-19?\nContext: COVID-19 is caused by the SARS-CoV-2 virus.\nAnswer:",
    # General domain: does the fine-tuned model still write ordinary prose?
    "The history of the Roman Empire",
)
LIMIT_SEED = 0
IN_DOMAIN = ("pubmedqa", "test")
GENERAL = ("wikitext-2-raw", "test")
RUN_RECORD_KEYS = ("method", "mode", "base", "settings", "lora", "parameters", "train_examples", "result")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Compare a base model and its fine-tuned version: perplexity in and out of domain, "
        "PubMedQA accuracy / macro-F1, and generations.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--base", required=True,
                        help="pretrained model: Hub id, model folder, .gguf file or run folder")
    parser.add_argument("--finetuned", required=True,
                        help="fine-tuned model: a training/finetune.py run folder, or a model folder / Hub id")
    parser.add_argument("--out", required=True, help="JSON report to write")
    parser.add_argument("--limit", type=int, default=None,
                        help="score a fixed random sample of N of the 500 test questions (default: all)")
    parser.add_argument("--max-chars", type=int, default=None,
                        help="keep only the first N characters of each perplexity text (cut at a line end)")
    parser.add_argument("--context-length", type=int, default=1024,
                        help="perplexity window in tokens (at most the models' context)")
    parser.add_argument("--stride", type=int, default=512,
                        help="perplexity window step in tokens; each token sees >= context-length - stride of context")
    parser.add_argument("--batch-size", type=int, default=4, help="windows / questions per forward pass")
    parser.add_argument("--qa-prompt", choices=sorted(QA_PROMPT_FORMATS), default=None,
                        help="PubMedQA prompt format for both models (default: the one the fine-tuned run was "
                        f"trained with, else {DEFAULT_QA_PROMPT})")
    parser.add_argument("--max-new-tokens", type=int, default=40, help="tokens per greedy generation")
    parser.add_argument("--prompt", action="append", default=[], help="an extra generation prompt (repeatable)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when present)")
    parser.add_argument("--reuse-base", default=None, metavar="REPORT",
                        help="copy the base model's results from an earlier report of this script (same --base, "
                        "settings and prompts) instead of evaluating the base again")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("limit", "max_chars", "context_length", "stride", "batch_size", "max_new_tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if Path(args.out).is_dir():
        parser.error(f"--out {args.out} is a folder; give the path of the JSON file to write")
    if args.stride > args.context_length:
        parser.error(f"--stride ({args.stride}) must not exceed --context-length ({args.context_length})")

    import torch

    from lmcore.data import load_corpus, load_pubmedqa
    from lmcore.eval.perplexity import evaluate_text
    from lmcore.eval.pubmedqa import evaluate_pubmedqa
    from lmcore.generate import generate
    from lmcore.io import atomic_write_json
    from lmcore.pretrained import load_pretrained

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    started = time.time()
    try:
        sources = {"base": resolve_model(args.base), "finetuned": resolve_model(args.finetuned)}
        finetuned_run = sources["finetuned"][1] or {}
        args.qa_prompt = args.qa_prompt or (finetuned_run.get("settings") or {}).get("qa_prompt", DEFAULT_QA_PROMPT)
        loaded = {role: load_pretrained(path, device=device) for role, (path, _) in sources.items()}
        records = sample_records(load_pubmedqa("test"), args.limit)
        full_texts = {"in_domain": load_corpus(*IN_DOMAIN), "general": load_corpus(*GENERAL)}
    except (ValueError, OSError) as error:
        parser.error(str(error))
    texts = {part: cap_text(text, args.max_chars) for part, text in full_texts.items()}
    context_length, stride = _window(loaded, args.context_length, args.stride)
    prompts = [*DEFAULT_PROMPTS, *args.prompt]

    report: dict[str, Any] = {
        "meta": _meta(args, device, context_length, stride),
        "models": {},
        "perplexity": {
            part: {
                "corpus": corpus,
                "split": split,
                "chars": len(texts[part]),
                "total_chars": len(full_texts[part]),
                "context_length": context_length,
                "stride": stride,
            }
            for part, (corpus, split) in (("in_domain", IN_DOMAIN), ("general", GENERAL))
        },
        "pubmedqa": {"split": "test", "n": len(records)},
        "generations": [{"prompt": prompt} for prompt in prompts],
    }
    if args.reuse_base:
        try:
            reused = reusable_base_results(args.reuse_base, report, args.base)
        except ValueError as error:
            parser.error(str(error))
        for part in ("in_domain", "general"):
            report["perplexity"][part]["base"] = reused["perplexity"][part]["base"]
        report["pubmedqa"]["base"] = reused["pubmedqa"]["base"]
        for row, earlier in zip(report["generations"], reused["generations"], strict=True):
            row["base"] = earlier["base"]
        report["models"]["base"] = {**reused["models"]["base"], "reused_from": args.reuse_base}
        del loaded["base"]
    for role, (model, tokenizer) in loaded.items():
        path, run = sources[role]
        print(f"[{role}] evaluating {path}", file=sys.stderr, flush=True)
        seconds = {}
        for part in ("in_domain", "general"):
            tick = time.perf_counter()
            result = evaluate_text(model, tokenizer, texts[part], context_length=context_length, stride=stride,
                                   batch_size=args.batch_size)  # fmt: skip
            report["perplexity"][part][role] = result.to_dict()
            seconds[f"{part}_perplexity"] = time.perf_counter() - tick
        tick = time.perf_counter()
        pubmedqa = evaluate_pubmedqa(model, tokenizer, records, batch_size=args.batch_size,
                                     prompt_format=args.qa_prompt)  # fmt: skip
        seconds["pubmedqa"] = time.perf_counter() - tick
        for key in ("majority_label", "majority_baseline", "majority_macro_f1"):
            report["pubmedqa"][key] = pubmedqa.pop(key)
        report["pubmedqa"][role] = pubmedqa
        tick = time.perf_counter()
        for row in report["generations"]:
            row[role] = generate(model, tokenizer, row["prompt"], max_new_tokens=args.max_new_tokens).text
        seconds["generations"] = time.perf_counter() - tick
        report["models"][role] = {
            "source": getattr(args, role),
            "model_path": path,
            "run": run,
            "parameters": sum(parameter.numel() for parameter in model.parameters()),
            "seconds": seconds,
        }
        print(f"[{role}] {_summary(report, role)}", file=sys.stderr, flush=True)

    report["comparison"] = _comparison(report)
    report["meta"]["elapsed_seconds"] = time.time() - started
    atomic_write_json(args.out, report)
    print(json.dumps(report["comparison"], indent=2))
    print(f"wrote {args.out}")
    return 0


def resolve_model(source: str) -> tuple[str, dict[str, Any] | None]:
    """(what to load, the fine-tuning run record or None) for a model source.

    A folder whose ``config.json`` is a ``training/finetune.py`` run record (it has
    ``method`` and ``model_dir``) resolves to the run's model folder (``model/`` for
    full fine-tuning, ``merged/`` for LoRA; a LoRA run without ``merged/``, as
    ``publish_finetune.py`` ships it, resolves to its ``adapter/``, which ``load_pretrained``
    merges into the base), looked up inside the run folder so a moved run still works.
    Anything else is passed on to ``load_pretrained`` as it is.
    """
    from lmcore.pretrained import ADAPTER_CONFIG

    folder = Path(source)
    config_path = folder / "config.json"
    if not config_path.is_file():
        return source, None
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if not ("method" in config and "model_dir" in config):
        return source, None  # a model folder: its config.json is the architecture
    record = {key: config.get(key) for key in RUN_RECORD_KEYS}
    model_dir = folder / Path(config["model_dir"]).name
    if (model_dir / "config.json").is_file():
        return str(model_dir), record
    adapter_dir = folder / Path(config["adapter_dir"]).name if config.get("adapter_dir") else None
    if adapter_dir is not None and (adapter_dir / ADAPTER_CONFIG).is_file():
        return str(adapter_dir), record  # a published LoRA run: the adapter, merged into the base on load
    unfinished = "" if "result" in config else " (its config.json has no 'result': the run did not finish)"
    raise ValueError(f"{folder} is a fine-tuning run folder, but its model folder {model_dir} is missing{unfinished}")


def reusable_base_results(path: str, report: dict[str, Any], base: str) -> dict[str, Any]:
    """The earlier report at ``path``, checked to hold results for the same ``--base``, settings and prompts.

    ``report`` is the new report before any model was evaluated; ValueError says what differs.
    """
    try:
        earlier = json.loads(Path(path).read_text(encoding="utf-8"))
        earlier_base = earlier["models"]["base"]["source"]
        # Reports written before --qa-prompt existed all used the default format.
        earlier_settings = {"qa_prompt": DEFAULT_QA_PROMPT, **earlier["meta"]["settings"]}
        earlier_prompts = [row["prompt"] for row in earlier["generations"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"--reuse-base {path}: not a readable report of this script ({type(error).__name__}: {error})") from None
    if earlier_base != base:
        raise ValueError(f"--reuse-base {path}: its base is {earlier_base!r}, not {base!r}")
    settings = report["meta"]["settings"]
    differing = sorted(key for key in settings.keys() | earlier_settings.keys()
                       if settings.get(key) != earlier_settings.get(key))
    if differing:
        raise ValueError(f"--reuse-base {path}: settings differ ({', '.join(differing)}); run with the same settings")
    if earlier_prompts != [row["prompt"] for row in report["generations"]]:
        raise ValueError(f"--reuse-base {path}: its generation prompts differ; pass the same --prompt values")
    return earlier


def sample_records(records: list[Any], limit: int | None) -> list[Any]:
    """``limit`` records drawn with ``random.Random(LIMIT_SEED)``, kept in their original order (all when None)."""
    if limit is None or limit >= len(records):
        return records
    chosen = sorted(random.Random(LIMIT_SEED).sample(range(len(records)), limit))
    return [records[index] for index in chosen]


def cap_text(text: str, max_chars: int | None) -> str:
    """The first ``max_chars`` characters of ``text``, cut after the last line end within them when there is one."""
    if max_chars is None or len(text) <= max_chars:
        return text
    line_end = text.rfind("\n", 0, max_chars)
    return text[: line_end + 1] if line_end >= 0 else text[:max_chars]


def _window(loaded: dict[str, Any], context_length: int, stride: int) -> tuple[int, int]:
    """The same perplexity window for both models: at most the smaller model context."""
    from lmcore.models.hf import as_language_model

    contexts = [as_language_model(model).max_context for model, _ in loaded.values()]
    context_length = min([context_length, *(c for c in contexts if c is not None)])
    return context_length, min(stride, context_length)


def _meta(args: argparse.Namespace, device: str, context_length: int, stride: int) -> dict[str, Any]:
    import evaluate
    import torch
    import transformers

    import lmcore
    from lmcore.provenance import git_commit, hardware

    return {
        "command": shlex.join(sys.argv),
        "git_commit": git_commit(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "evaluate": evaluate.__version__,
            "lmcore": lmcore.__version__,
        },
        "hardware": hardware(device),
        "settings": {
            "limit": args.limit,
            "limit_seed": LIMIT_SEED,
            "max_chars": args.max_chars,
            "context_length": context_length,
            "stride": stride,
            "batch_size": args.batch_size,
            "qa_prompt": args.qa_prompt,
            "max_new_tokens": args.max_new_tokens,
            "decoding": "greedy",
        },
    }


def _comparison(report: dict[str, Any]) -> dict[str, float]:
    def change_percent(part: str) -> float:
        perplexity = report["perplexity"][part]
        return 100 * (perplexity["finetuned"]["perplexity"] / perplexity["base"]["perplexity"] - 1)

    pubmedqa = report["pubmedqa"]
    return {
        "in_domain_ppl_change_percent": change_percent("in_domain"),
        "general_ppl_change_percent": change_percent("general"),
        "accuracy_change_points": 100 * (pubmedqa["finetuned"]["accuracy"] - pubmedqa["base"]["accuracy"]),
        "macro_f1_change_points": 100 * (pubmedqa["finetuned"]["macro_f1"] - pubmedqa["base"]["macro_f1"]),
    }


def _summary(report: dict[str, Any], role: str) -> str:
    pubmedqa = report["pubmedqa"][role]
    return (
        f"ppl in-domain {report['perplexity']['in_domain'][role]['perplexity']:.2f}, "
        f"general {report['perplexity']['general'][role]['perplexity']:.2f}; PubMedQA accuracy "
        f"{pubmedqa['accuracy']:.3f}, macro-F1 {pubmedqa['macro_f1']:.3f} "
        f"(majority {report['pubmedqa']['majority_baseline']:.3f}, n={report['pubmedqa']['n']})"
    )


if __name__ == "__main__":
    sys.exit(main())
