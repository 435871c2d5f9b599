"""Benchmark: the app's time to first streamed token, for every model it offers, once loaded.

The app's latency targets: a from-scratch model's first streamed token shows within 1 s on
2 CPU cores; a pretrained 135M model's within 3 s once loaded. This builds the app's model
list the way ``app.py`` does (:class:`lmcore.app.AppState` from the environment variables of
README.md, "The app") and takes every model the app offers by default: the reference runs in
``assets/runs`` (from scratch), the pretrained models of the Prompt comparison tab and the
PubMedQA base (``HuggingFaceTB/SmolLM2-135M-Instruct`` offline, from ``$LMCORE_MODELS_DIR``),
and the PubMedQA fine-tuned model when one is found under ``assets/finetune``. For each it:

1. loads the model through the app's registry, as the first request would (the load time is
   reported on its own and not counted in the latency);
2. streams ``--repeats`` generations of one fixed prompt through
   :func:`lmcore.app.generation.stream_side_by_side` (the Prompt comparison tab's code path,
   with the tab's default decoding: sampling, temperature 0.8, top-p 0.9, seed 0), timing from
   the request to the first text piece the page receives and to the end;
3. for the PubMedQA models, also streams the PubMedQA tab's prompt (``Question: … Context: …
   Answer:`` of the first test question, greedy), a much longer prompt.

It prints the median and the maximum first-token seconds against the target (1 s from
scratch, 3 s otherwise). A model PASSES when every timed request, the first one after
loading included, showed its first token within the target. Models that cannot be loaded
are reported with the reason. The last line is the whole report as JSON (``--out`` also
writes it to a file), with the hardware, the load average and the git commit.

    HF_HUB_OFFLINE=1 LMCORE_MODELS_DIR=/work/shared/models LMCORE_DATA_DIR=/work/shared/data \\
        python bench/bench_app_latency.py
    taskset -c 0,1 python bench/bench_app_latency.py --out latency.json   # 2 cores of a bigger machine
    python bench/bench_app_latency.py --models ptb-gpt-small --repeats 10 --new-tokens 64

Numbers from a machine busy with other jobs are inflated: look at ``load_average`` in the report.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from lmcore.app import AppConfig, AppState, display_name  # noqa: E402
from lmcore.app.generation import Decoding, check_decoding, stream_side_by_side  # noqa: E402
from lmcore.app.pubmedqa import load_test_questions, qa_prompt_text  # noqa: E402
from lmcore.app.registry import ModelRegistry, ModelUnavailable  # noqa: E402
from lmcore.io import atomic_write_json  # noqa: E402
from lmcore.models.hf import tokenizer_encode  # noqa: E402
from lmcore.provenance import git_commit, hardware  # noqa: E402

DEFAULT_PROMPT = "the meaning of life is"  # the Prompt comparison tab's default prompt (app.py)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=None,
                        help="model names as the app lists them (default: every model the app offers by default)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--repeats", type=int, default=5, help="timed generations per model and prompt")
    parser.add_argument("--new-tokens", type=int, default=32, help="new tokens per generation, at most (a model stops earlier at its end-of-text token)")
    parser.add_argument("--target-scratch", type=float, default=1.0, help="first-token target (s), from-scratch models")
    parser.add_argument("--target-pretrained", type=float, default=3.0,
                        help="first-token target (s), pretrained and fine-tuned models")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice, as the app)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    args = parser.parse_args()
    if args.repeats < 1 or args.new_tokens < 1:
        parser.error("--repeats and --new-tokens must be at least 1")
    if not args.prompt.strip():
        parser.error("--prompt must not be empty")
    return args


# ----------------------------------------------------------------------------- what to time


def default_models(state: AppState) -> tuple[list[str], list[dict[str, Any]]]:
    """(registry names of the models the app offers by default, entries for those it cannot offer).

    Reference runs first, then the pretrained models, the PubMedQA base and its fine-tuned version.
    """
    names: list[str] = []
    missing: list[dict[str, Any]] = []
    for name, run in state.runs.items():
        if run.root != "reference":
            continue
        if name in state.registry:
            names.append(name)
        else:
            missing.append({"name": name, "kind": "run", "status": "unavailable",
                            "reason": f"{run.path} is not a from-scratch run the app can generate with"})
    names += [display_name(source) for source in state.config.pretrained_models]
    names.append(state.pubmedqa_base)
    if state.pubmedqa_finetuned is not None:
        names.append(state.pubmedqa_finetuned)
    else:
        missing.append({"name": "PubMedQA fine-tuned", "kind": "finetuned", "status": "unavailable",
                        "reason": state.finetuned_missing_reason})
    return list(dict.fromkeys(names)), missing


def pubmedqa_prompt(state: AppState) -> tuple[str | None, str]:
    """The PubMedQA tab's prompt for the first test question (None when there is none), and where it came from."""
    questions, message = load_test_questions(online=state.config.online)
    if not questions:
        return None, message
    return qa_prompt_text(questions[0], state.pubmedqa_prompt_format), f"PubMedQA test question {questions[0].pubid}"


# ----------------------------------------------------------------------------- timing


def timed_stream(registry: ModelRegistry, name: str, prompt: str, decoding: Decoding) -> dict[str, Any]:
    """One streamed generation as the page receives it: seconds to the first text piece and to the end."""
    first_token_s = None
    start = time.perf_counter()
    stream = stream_side_by_side(registry, [name], prompt, decoding)
    with contextlib.closing(stream):
        for (output,) in stream:
            if first_token_s is None and output.num_pieces:
                first_token_s = time.perf_counter() - start
    total_s = time.perf_counter() - start
    return {"first_token_s": first_token_s, "total_s": total_s, "pieces": output.num_pieces,
            "state": output.state, "note": output.note}


def time_prompt(
    registry: ModelRegistry, name: str, prompt: str, decoding: Decoding, repeats: int, target_s: float
) -> dict[str, Any]:
    """``repeats`` timed generations of ``prompt``, summarised against ``target_s``."""
    loaded = registry.get(name)  # cached: loaded before
    result: dict[str, Any] = {"prompt_tokens": len(tokenizer_encode(loaded.tokenizer, prompt)), "target_s": target_s}
    runs = [timed_stream(registry, name, prompt, decoding) for _ in range(repeats)]
    failed = [run for run in runs if run["state"] != "done" or run["first_token_s"] is None]
    if failed:
        run = failed[0]
        reason = run["note"] or ("no text generated" if run["state"] == "done" else run["state"])
        return {**result, "status": "error", "reason": f"{run['state']}: {reason}", "pass": False}
    first = [run["first_token_s"] for run in runs]
    total = [run["total_s"] for run in runs]
    return {
        **result,
        "status": "ok",
        "note": runs[0]["note"],  # e.g. new tokens capped by a short context
        "pieces": runs[0]["pieces"],
        "first_token_s": {"median": round(statistics.median(first), 4), "max": round(max(first), 4),
                          "after_load": round(first[0], 4), "all": [round(seconds, 4) for seconds in first]},
        "total_s": {"median": round(statistics.median(total), 4), "max": round(max(total), 4)},
        "pass": max(first) <= target_s,
    }


def bench_model(
    registry: ModelRegistry, name: str, prompts: dict[str, tuple[str, Decoding]], args: argparse.Namespace
) -> dict[str, Any]:
    """Load one model (timed on its own), then time each of its prompts."""
    spec = registry.spec(name)
    target_s = args.target_scratch if spec.kind == "run" else args.target_pretrained
    entry: dict[str, Any] = {"name": name, "kind": spec.kind, "target_s": target_s}
    start = time.perf_counter()
    try:
        loaded = registry.get(name)
    except ModelUnavailable as error:
        return {**entry, "status": "unavailable", "reason": str(error)}
    load_s = round(time.perf_counter() - start, 4)
    entry.update(status="ok", load_s=load_s, parameters=loaded.num_parameters, prompts={})
    for label, (prompt, decoding) in prompts.items():
        entry["prompts"][label] = time_prompt(registry, name, prompt, decoding, args.repeats, target_s)
    entry["pass"] = all(result["pass"] for result in entry["prompts"].values())
    return entry


# ----------------------------------------------------------------------------- report


def print_entry(entry: dict[str, Any]) -> None:
    if entry["status"] != "ok":
        print(f"{entry['name']} ({entry['kind']}): UNAVAILABLE: {entry['reason']}")
        return
    print(f"{entry['name']} ({entry['kind']}, {entry['parameters'] / 1e6:.1f}M parameters): "
          f"loaded in {entry['load_s']:.2f} s")
    for label, result in entry["prompts"].items():
        head = f"  {label} prompt ({result['prompt_tokens']} tokens): "
        if result["status"] != "ok":
            print(head + f"ERROR: {result['reason']}")
            continue
        first, total = result["first_token_s"], result["total_s"]
        verdict = "PASS" if result["pass"] else "FAIL"
        note = f"; {result['note']}" if result["note"] else ""
        print(head + f"first token median {first['median']:.3f} s, max {first['max']:.3f} s "
              f"(first after load {first['after_load']:.3f} s), target {result['target_s']:g} s: {verdict}; "
              f"{result['pieces']} pieces in {total['median']:.2f} s (median){note}")


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load_average = os.getloadavg()[0]
    state = AppState.create(AppConfig.from_env())
    registry = state.registry
    if args.models is None:
        names, unavailable = default_models(state)
    else:
        try:
            names = [registry.spec(name).name for name in args.models]
        except ValueError as error:
            raise SystemExit(str(error)) from error
        unavailable = []

    # The Prompt comparison tab's default decoding (app.py), and the PubMedQA tab's (greedy).
    comparison_decoding, notes = check_decoding("sample", 0.8, 0, 0.9, args.new_tokens, 0,
                                                cap=state.config.max_new_tokens)
    new_tokens = comparison_decoding.max_new_tokens
    qa_decoding = Decoding(do_sample=False, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new_tokens, seed=0)
    qa_prompt, qa_source = pubmedqa_prompt(state)
    pubmedqa_names = {state.pubmedqa_base, state.pubmedqa_finetuned}
    print(f"{len(names)} model(s); {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
          f"load average {load_average:.2f}; {args.repeats} requests of at most {new_tokens} new tokens each")
    for note in notes:
        print(note)
    if qa_prompt is None:
        print(f"PubMedQA prompt: not timed ({qa_source})")
    entries = []
    for name in names:
        prompts = {"comparison": (args.prompt, comparison_decoding)}
        if name in pubmedqa_names and qa_prompt is not None:
            prompts["pubmedqa"] = (qa_prompt, qa_decoding)
        entry = bench_model(registry, name, prompts, args)
        print_entry(entry)
        entries.append(entry)
    for entry in unavailable:
        print_entry(entry)
        entries.append(entry)

    timed = [entry for entry in entries if entry["status"] == "ok"]
    failed = [entry["name"] for entry in timed if not entry["pass"]]
    print(f"{len(timed) - len(failed)} of {len(timed)} loaded model(s) PASS"
          + (f"; FAIL: {', '.join(failed)}" if failed else "")
          + f"; {len(entries) - len(timed)} unavailable")
    report = {
        "meta": {
            "command": sys.argv,
            "git_commit": git_commit(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "transformers": transformers.__version__},
            "hardware": {**hardware(state.config.device),
                         "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None},
            "load_average": {"start": round(load_average, 2), "end": round(os.getloadavg()[0], 2)},
            "settings": {"repeats": args.repeats, "new_tokens": new_tokens, "comparison_prompt": args.prompt,
                         "comparison_decoding": comparison_decoding.as_kwargs(), "pubmedqa_prompt": qa_source,
                         "pubmedqa_decoding": qa_decoding.as_kwargs(),
                         "pass_rule": "every timed request's first token within the target"},
        },
        "models": entries,
    }
    if args.out is not None:
        atomic_write_json(args.out, report)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
