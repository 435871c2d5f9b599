"""Compare trained runs: perplexity across corpora, and generations across decoding strategies.

**Cross-domain evaluation** (:func:`evaluate_runs`). Every run (a folder written by
``training/train_lm.py``) scores one split of every corpus with its best checkpoint
and its own tokenizer, through :func:`lmcore.eval.evaluate_text`:

- recurrent models read the text as ``streams`` contiguous parallel streams (default
  10) carrying their state; the first token of each stream but the first has no
  history and is not scored (``tokens`` says how many were). Fixed-context models
  slide their own context window by ``stride`` tokens (default half the window),
  ``window_batch`` windows per forward pass; every token but the first is scored once.
- A word-level tokenizer applies its own training normalization to the other
  corpus first (PTB-trained: lowercase, numbers to ``N``, punctuation dropped; see
  :func:`lmcore.data.normalize_text`), then maps unknown words to ``<unk>``.
- A text must give at least one context window of tokens (fixed-context models) or
  two tokens per stream (recurrent models); a shorter one is refused with its name.

One results row per run x corpus (keys :data:`ROW_KEYS`, None where not applicable):

- ``perplexity``: ``exp(total NLL / tokens)`` in the run's own tokens;
- ``bits_per_byte``: total NLL in bits / UTF-8 bytes of the corpus text as loaded
  (before any normalization), the same denominator for every model on a corpus;
- ``tokens``: scored tokens;
- ``oov_rate`` (word and character tokenizers): tokens of the text (words and
  ``<eos>``, or characters) that were outside the vocabulary before becoming ``<unk>``;
- ``unk_rate``: scored targets that are ``<unk>`` (OOV words plus the corpus's own
  ``<unk>`` tokens, as in WikiText); ``perplexity_without_unk``: over the other targets;
- ``relative_increase``: ``perplexity / in-domain perplexity - 1``, where in-domain is
  the run's training corpus (``config.json`` ``config.data``) on the same split,
  evaluated even when it is not among the corpora asked for.

Models are loaded one at a time and freed before the next, so memory does not grow
with the number of runs. :func:`write_results` writes ``results.json`` (``{"meta",
"rows"}``) and ``results.csv``; :func:`load_results` reads and checks them back.

**Generation comparison** (:func:`sample_runs`): every run continues the same prompts
with each decoding strategy of :data:`DECODING_STRATEGIES` and a fixed seed, and each
text is measured with :mod:`lmcore.eval.text_metrics`.
"""

from __future__ import annotations

import csv
import gc
import io
import json
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from lmcore.data import CORPUS_NAMES, Tokenizer, load_corpus, load_tokenizer
from lmcore.eval.perplexity import evaluate_text
from lmcore.eval.text_metrics import reference_log_prob, text_measures
from lmcore.io import atomic_write_json, atomic_write_text, read_jsonl
from lmcore.models import CONFIG_NAME, LanguageModel, load_model
from lmcore.provenance import git_commit, hardware
from lmcore.runs import RunInfo, read_run

ROW_KEYS = (
    "run", "model_type", "tokenizer", "num_parameters", "corpus", "split", "perplexity", "bits_per_byte", "tokens",
    "oov_rate", "unk_rate", "perplexity_without_unk", "relative_increase",
)  # fmt: skip

COMPARABILITY = {
    "bits_per_byte": "comparable across tokenizers. Every model divides its total NLL by the same UTF-8 bytes of "
    "a corpus. A word-level model does not predict what its normalization removes (case, punctuation) nor which "
    "word an <unk> stands for, so its bits per byte is a lower bound when oov_rate or unk_rate is high.",
    "perplexity": "comparable only between models with the same tokenizer (a perplexity per word, per character "
    "and per BPE token are different units).",
    "relative_increase": "the model's own perplexity ratio (new corpus / its training corpus) minus 1: unitless, "
    "so it can be compared across tokenizers as a measure of degradation, but a word model's ratio is flattered "
    "by <unk> (compare perplexity_without_unk).",
    "oov_rate": "word and character tokenizers only; byte-level BPE (gpt2, bpe) covers every text (null).",
}

DEFINITIONS = {
    "perplexity": "exp(total negative log-likelihood / tokens), in the run's own tokens",
    "bits_per_byte": "total negative log-likelihood in bits / UTF-8 bytes of the corpus split as loaded",
    "tokens": "number of scored (predicted) tokens",
    "oov_rate": "fraction of the text's tokens (words and <eos>, or characters) outside the vocabulary before "
    "mapping to <unk>; null for byte-level tokenizers",
    "unk_rate": "fraction of scored targets that are <unk> (out-of-vocabulary words plus <unk> already in the "
    "corpus); null for byte-level tokenizers",
    "perplexity_without_unk": "perplexity over the targets that are not <unk>; null for byte-level tokenizers",
    "relative_increase": "perplexity / perplexity on the run's training corpus (same split) - 1; null when the "
    "training corpus could not be loaded",
}

# Decoding strategies of the generation comparison: name -> settings for lmcore.generate.generate.
DECODING_STRATEGIES: dict[str, dict[str, Any]] = {
    "greedy": {"do_sample": False},
    "temperature": {"do_sample": True, "temperature": 0.8},
    "top_k": {"do_sample": True, "top_k": 40},
    "top_p": {"do_sample": True, "top_p": 0.9},
}
DEFAULT_PROMPTS = ("", "the meaning of life is")

SAMPLE_MEASURES = {
    "num_tokens": "tokens generated (the run's own tokens)",
    "num_words": "whitespace-separated words of the generated text",
    "distinct_1": "distinct words / words of the generated text",
    "distinct_2": "distinct word bigrams / word bigrams of the generated text",
    "repeated_ngram_rate": "fraction of the word n-grams (n = meta.repeat_n) that occurred earlier in the same text",
    "ref_log_prob_per_token": "mean log-probability per token (nats) of the generated text under the reference "
    "model, in the reference's tokens, the first predicted from its end-of-text token",
    "ref_bits_per_byte": "negative log-likelihood in bits under the reference model / UTF-8 bytes of the text",
}


# ----------------------------------------------------------------------------- run folders


def require_evaluable(run: RunInfo) -> RunInfo:
    """``run`` if it can be evaluated (config.model/tokenizer/data, checkpoints/best, tokenizer/); else ValueError."""
    path = str(run.path)
    if not run.path.is_dir():
        raise ValueError(f"run folder {path!r} does not exist (expected a folder written by training/train_lm.py)")
    missing = [f"config.{key}" for key, value in
               (("model", run.model_type), ("tokenizer", run.tokenizer), ("data", run.training_corpus)) if not value]
    if missing:
        detail = "config.json is missing or not a JSON object" if not run.config else "no " + ", ".join(missing)
        raise ValueError(f"run folder {path!r} has no readable config.json with config.model/tokenizer/data ({detail})")
    for needed in (run.path / "checkpoints" / "best" / CONFIG_NAME, run.path / "tokenizer"):
        if not needed.exists():
            raise ValueError(f"run folder {path!r} lacks {needed.relative_to(run.path)} "
                             "(a run writes checkpoints/best after its first evaluation)")
    return run


def read_runs(paths: Sequence[str | Path]) -> list[RunInfo]:
    """The runs at ``paths``, checked by :func:`require_evaluable`; runs sharing a folder name are named by path."""
    if not paths:
        raise ValueError("no run folders given")
    resolved = [Path(path).resolve() for path in paths]
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"a run folder is given twice: {[str(p) for p in paths]}")
    names = [Path(path).name for path in paths]
    return [require_evaluable(read_run(path, name if names.count(name) == 1 else str(path)))
            for path, name in zip(paths, names)]


def load_run_model(run: RunInfo, device: str | torch.device = "cpu") -> tuple[LanguageModel, Tokenizer]:
    """The run's checkpoint (``best`` once :func:`require_evaluable`; in eval mode, on ``device``) and tokenizer."""
    model = load_model(run.checkpoint, map_location=str(device))
    return model.eval(), load_tokenizer(run.path / "tokenizer")


def read_learning_curve(run_path: str | Path) -> dict[str, Any]:
    """Per-epoch train/valid perplexity and the final test perplexity from ``metrics.jsonl``.

    Returns ``{"epochs": [{"epoch", "train_ppl", "valid_ppl"}], "test_ppl"}`` (empty / None
    when the run has no metrics file).
    """
    metrics = Path(run_path) / "metrics.jsonl"
    if not metrics.is_file():
        return {"epochs": [], "test_ppl": None}
    by_epoch: dict[float, dict[str, float]] = {}
    test_ppl = None
    for record in read_jsonl(metrics):
        if record.get("event") == "epoch" and record.get("split") in ("train", "valid"):
            by_epoch.setdefault(record["epoch"], {})[f"{record['split']}_ppl"] = record["ppl"]
        elif record.get("event") == "final" and record.get("split") == "test":
            test_ppl = record["ppl"]
    epochs = [{"epoch": epoch, "train_ppl": values.get("train_ppl"), "valid_ppl": values.get("valid_ppl")}
              for epoch, values in sorted(by_epoch.items())]
    return {"epochs": epochs, "test_ppl": test_ppl}


# ----------------------------------------------------------------------------- corpora


def corpus_label(corpus: str) -> str:
    """A short name for charts and tables: the corpus name, or a text file's file name."""
    return corpus if corpus in CORPUS_NAMES else Path(corpus).name


def same_corpus(a: str, b: str) -> bool:
    """Whether two corpus names (or text file paths) are the same corpus."""
    if a == b:
        return True
    path_a, path_b = Path(a), Path(b)
    return path_a.is_file() and path_b.is_file() and path_a.resolve() == path_b.resolve()


def read_corpus(corpus: str, split: str) -> str:
    """The text of ``split`` of ``corpus`` (see :func:`lmcore.data.load_corpus`); ValueError naming the corpus."""
    try:
        text = load_corpus(corpus, split)
    except (OSError, ValueError) as error:
        raise ValueError(f"corpus {corpus!r} ({split} split) cannot be read: {error}") from error
    if not text.strip():
        raise ValueError(f"corpus {corpus!r} ({split} split) is empty: nothing to evaluate")
    return text


# ----------------------------------------------------------------------------- evaluation


def minimum_tokens(model: LanguageModel, streams: int) -> int:
    """Fewest tokens (the start token included) a text needs: one context window, or 2 per stream."""
    return 2 * streams if model.is_recurrent else model.max_context


def evaluate_corpus(
    model: LanguageModel,
    tokenizer: Tokenizer,
    text: str,
    *,
    streams: int = 10,
    stride: int | None = None,
    window_batch: int = 16,
    what: str = "the text",
) -> dict[str, Any]:
    """Perplexity, bits per byte, tokens, OOV and <unk> rates of one text (the metric keys of a row).

    what: names the text and the run in error messages (e.g. "corpus 'ptb' (test split) for run 'a'").
    """
    ids, num_oov = tokenizer.encode_with_stats(text)
    needed = minimum_tokens(model, streams)
    if len(ids) + 1 < needed:
        fix = "use fewer --streams" if model.is_recurrent else "use a longer text"
        raise ValueError(
            f"{what} is too short: {len(ids)} tokens (+1 start token) under this tokenizer, and the "
            f"{'recurrent' if model.is_recurrent else 'fixed-context'} model needs at least {needed} "
            f"({f'2 per stream x {streams} streams' if model.is_recurrent else 'one context window'}); {fix}"
        )
    if model.is_recurrent:
        options: dict[str, Any] = {"batch_size": streams}
    else:
        options = {"batch_size": window_batch, "stride": stride}
    try:
        result = evaluate_text(model, tokenizer, text, **options)
    except ValueError as error:  # settings that do not fit this model (e.g. a stride longer than its window)
        raise ValueError(f"{what}: {error}") from error
    has_vocabulary = getattr(tokenizer, "unk_id", None) is not None
    return {
        "perplexity": result.perplexity,
        "bits_per_byte": result.bits_per_byte,
        "tokens": result.num_tokens,
        "oov_rate": num_oov / len(ids) if has_vocabulary else None,
        "unk_rate": result.unk_rate,
        "perplexity_without_unk": result.perplexity_without_unk,
    }


def environment(command: Sequence[str] | None = None) -> dict[str, Any]:
    """The command line, git commit, library versions, hardware and date, for a results file's ``meta``."""
    import matplotlib
    import transformers

    return {
        "command": list(command) if command is not None else list(sys.argv),
        "git_commit": git_commit(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "matplotlib": matplotlib.__version__},
        "hardware": hardware(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def evaluate_runs(
    run_paths: Sequence[str | Path],
    corpora: Sequence[str],
    split: str = "test",
    *,
    streams: int = 10,
    stride: int | None = None,
    window_batch: int = 16,
    device: str = "cpu",
    command: Sequence[str] | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Evaluate every run on every corpus (and on its own training corpus): ``{"meta", "rows"}``.

    All run folders and corpora are checked before any model is loaded; then one model
    at a time is loaded, evaluated on every corpus and freed. ``on_row`` is called with
    each row as it is computed (without ``relative_increase``, known once the run is done).
    """
    if not corpora:
        raise ValueError("no corpora given")
    if streams < 1 or window_batch < 1:
        raise ValueError(f"streams and window_batch must be at least 1, got {streams} and {window_batch}")
    requested = list(dict.fromkeys(corpora))
    runs = read_runs(run_paths)
    texts = {corpus: read_corpus(corpus, split) for corpus in requested}
    warnings: list[str] = []
    run_corpora: dict[str, tuple[list[str], str | None]] = {}  # run -> (corpora to score, in-domain corpus)
    for run in runs:
        in_domain = next((corpus for corpus in texts if same_corpus(corpus, run.training_corpus)), None)
        if in_domain is None:
            try:
                texts[run.training_corpus] = read_corpus(run.training_corpus, split)
                in_domain = run.training_corpus
            except ValueError as error:
                warnings.append(f"run {run.name!r}: relative_increase is null, its training corpus could not be "
                                f"evaluated: {error}")
        extra = [in_domain] if in_domain is not None and in_domain not in requested else []
        run_corpora[run.name] = ([*requested, *extra], in_domain)

    rows: list[dict[str, Any]] = []
    for run in runs:
        names, in_domain = run_corpora[run.name]
        run_rows = _evaluate_run(run, {name: texts[name] for name in names}, split, streams=streams, stride=stride,
                                 window_batch=window_batch, device=device, on_row=on_row)
        _free_memory()
        in_domain_ppl = next((row["perplexity"] for row in run_rows if row["corpus"] == in_domain), None)
        for row in run_rows:
            row["relative_increase"] = None if in_domain_ppl is None else row["perplexity"] / in_domain_ppl - 1
        rows.extend(run_rows)

    meta = {
        **environment(command),
        "split": split,
        "corpora": requested,
        "corpus_bytes": {corpus: len(text.encode("utf-8")) for corpus, text in texts.items()},
        "settings": {"streams": streams, "stride": stride, "window_batch": window_batch, "device": device},
        "comparable_across_tokenizers": COMPARABILITY,
        "definitions": DEFINITIONS,
        "runs": {
            run.name: {
                "path": str(run.path), "model_type": run.model_type, "tokenizer": run.tokenizer,
                "training_corpus": run.training_corpus, "in_domain_corpus": run_corpora[run.name][1],
                "learning_curve": read_learning_curve(run.path),
            }
            for run in runs
        },
        "warnings": warnings,
    }
    return {"meta": meta, "rows": rows}


def _evaluate_run(
    run: RunInfo, texts: dict[str, str], split: str, *, streams: int, stride: int | None, window_batch: int,
    device: str, on_row: Callable[[dict[str, Any]], None] | None,
) -> list[dict[str, Any]]:
    """Rows of one run; its model lives only inside this call."""
    model, tokenizer = load_run_model(run, device)
    rows = []
    for corpus, text in texts.items():
        what = f"corpus {corpus!r} ({split} split) for run {run.name!r}"
        metrics = evaluate_corpus(model, tokenizer, text, streams=streams, stride=stride,
                                  window_batch=window_batch, what=what)
        row = {"run": run.name, "model_type": run.model_type, "tokenizer": run.tokenizer,
               "num_parameters": model.num_parameters(), "corpus": corpus, "split": split, **metrics,
               "relative_increase": None}
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


# ----------------------------------------------------------------------------- results files


def write_results(results: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``results.json`` and ``results.csv`` (one line per row) into ``out_dir``, atomically."""
    out_dir = Path(out_dir)
    json_path = atomic_write_json(out_dir / "results.json", results)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ROW_KEYS, lineterminator="\n")
    writer.writeheader()
    for row in results["rows"]:
        writer.writerow({key: "" if row[key] is None else row[key] for key in ROW_KEYS})
    csv_path = atomic_write_text(out_dir / "results.csv", buffer.getvalue())
    return json_path, csv_path


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a ``results.json`` written by :func:`write_results`; ValueError naming the file when it does not fit."""
    path = Path(path)
    results = _read_meta_json(path, "results", "rows")
    for index, row in enumerate(results["rows"]):
        if not isinstance(row, dict) or set(row) != set(ROW_KEYS):
            raise ValueError(f"results file {str(path)!r}: row {index} must have exactly the keys {list(ROW_KEYS)}")
    return results


# ----------------------------------------------------------------------------- generation comparison


def sample_runs(
    run_paths: Sequence[str | Path],
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    *,
    max_new_tokens: int = 60,
    seed: int = 0,
    strategies: dict[str, dict[str, Any]] | None = None,
    reference: str | None = None,
    repeat_n: int = 3,
    device: str = "cpu",
    command: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Continue every prompt with every run and decoding strategy: ``{"meta", "samples"}``.

    Each sample is generated with ``seed`` and without stopping at the end-of-text token
    (a word model writes it as a line break), so texts have ``max_new_tokens`` tokens, or
    as many as a fixed-context model's window leaves after the prompt (``num_tokens``).
    ``reference``: a run folder or a pretrained model (Hub id, folder or .gguf, see
    :func:`lmcore.pretrained.load_pretrained`) that scores every text, loaded after the
    runs are done; None leaves the ``ref_*`` measures null.
    """
    from lmcore.generate import generate

    strategies = DECODING_STRATEGIES if strategies is None else strategies
    if not prompts:
        raise ValueError("no prompts given")
    if not 1 <= max_new_tokens <= 10_000:
        raise ValueError(f"max_new_tokens must be in [1, 10000], got {max_new_tokens}")
    runs = read_runs(run_paths)
    reference_run = _reference_run(reference)
    samples: list[dict[str, Any]] = []
    for run in runs:
        model, tokenizer = load_run_model(run, device)
        for prompt in prompts:
            new_tokens = _fitting_new_tokens(model, tokenizer, prompt, max_new_tokens, run.name)
            for strategy, settings in strategies.items():
                output = generate(model, tokenizer, prompt, max_new_tokens=new_tokens, seed=seed,
                                  stop_at_eos=False, **settings)
                samples.append({
                    "run": run.name, "model_type": run.model_type, "tokenizer": run.tokenizer, "prompt": prompt,
                    "strategy": strategy, "seed": seed, "text": output.text, "num_tokens": len(output.token_ids),
                    **text_measures(output.text, repeat_n),
                    "ref_log_prob_per_token": None, "ref_bits_per_byte": None,
                })
        del model, tokenizer
        _free_memory()
    if reference is not None:
        _score_with_reference(samples, reference, reference_run, device)
    meta = {
        **environment(command),
        "prompts": list(prompts), "strategies": strategies, "seed": seed, "max_new_tokens": max_new_tokens,
        "stop_at_eos": False, "repeat_n": repeat_n, "reference": reference, "measures": SAMPLE_MEASURES,
        "words": "measures split the generated text on whitespace, the same for every tokenizer",
    }
    return {"meta": meta, "samples": samples}


def _reference_run(reference: str | None) -> RunInfo | None:
    """The reference as a run folder (it has checkpoints/), or None for a pretrained model (or no reference)."""
    if reference is None or not (Path(reference) / "checkpoints").is_dir():
        return None
    return require_evaluable(read_run(reference))


def _fitting_new_tokens(model: LanguageModel, tokenizer: Tokenizer, prompt: str, wanted: int, run: str) -> int:
    """``wanted``, or fewer when a fixed-context model's window cannot hold the prompt plus that many."""
    window = model.max_context
    if window is None:
        return wanted
    prompt_tokens = max(1, len(tokenizer.encode(prompt)))  # an empty prompt starts from <eos>
    room = window - prompt_tokens + 1
    if room < 1:
        raise ValueError(f"prompt {prompt!r} is {prompt_tokens} tokens for run {run!r}, longer than its "
                         f"context window of {window}")
    return min(wanted, room)


def _score_with_reference(samples: list[dict[str, Any]], reference: str, run: RunInfo | None, device: str) -> None:
    if run is not None:
        model, tokenizer = load_run_model(run, device)
    else:
        from lmcore.pretrained import load_pretrained

        model, tokenizer = load_pretrained(reference, device=device)
    for sample in samples:
        score = reference_log_prob(model, tokenizer, sample["text"])
        if score is not None:
            sample["ref_log_prob_per_token"] = score.log_prob_per_token
            sample["ref_bits_per_byte"] = score.bits_per_byte
    del model, tokenizer
    _free_memory()


def load_samples(path: str | Path) -> dict[str, Any]:
    """Read a ``samples.json`` written by ``training/sample.py``; ValueError naming the file when it does not fit."""
    return _read_meta_json(Path(path), "samples", "samples")


def _read_meta_json(path: Path, kind: str, list_key: str) -> dict[str, Any]:
    """A JSON file of the form {"meta": {...}, list_key: [...]}; ValueError naming the file otherwise."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read {kind} file {str(path)!r}: {error}") from error
    if not isinstance(content, dict) or not isinstance(content.get("meta"), dict) or not isinstance(
        content.get(list_key), list
    ):
        raise ValueError(f"{kind} file {str(path)!r} must hold {{\"meta\": {{...}}, \"{list_key}\": [...]}}")
    return content

