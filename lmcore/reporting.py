"""Charts and a markdown report built only from the JSON files of the evaluation commands.

Inputs: ``results.json`` of ``training/evaluate_lm.py`` (:func:`lmcore.eval.crossdomain.load_results`)
and, optionally, ``samples.json`` of ``training/sample.py``. Nothing else is read: the
learning curves come from ``meta.runs[run].learning_curve`` in ``results.json``.

Charts (matplotlib ``Figure`` objects rendered with Agg, never pyplot, so no global state):

- ``bits_per_byte.png``: heat map run x corpus of bits per byte (comparable across
  tokenizers), the run's training corpus outlined;
- ``perplexity_ratio.png``: grouped bars of perplexity / in-domain perplexity per corpus
  and run (log scale), labelled with the relative increase;
- ``learning_curves.png``: per run, train and validation perplexity per epoch (log scale).

:func:`summarize` derives the few numbers that are not in the rows (averages over corpora
and strategies, rankings); :func:`write_report` writes them to ``summary.json`` next to
``report.md``, so every number in the report can be traced to a JSON file. All numbers
are formatted by :func:`format_value`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from lmcore.eval.crossdomain import corpus_label
from lmcore.io import atomic_write, atomic_write_json, atomic_write_text

CHART_FILES = {
    "bits_per_byte": "bits_per_byte.png",
    "perplexity_ratio": "perplexity_ratio.png",
    "learning_curves": "learning_curves.png",
}
NOTE_LABELS = {"bits_per_byte": "Bits per byte", "perplexity": "Perplexity", "relative_increase": "Relative increase",
               "oov_rate": "OOV rate"}
MISSING = "—"  # a value that does not apply (e.g. the OOV rate of a byte-level tokenizer)
EXCERPT_CHARACTERS = 300


FORMATS = {
    "ppl": lambda value: f"{value:,.2f}",  # perplexity
    "bpb": lambda value: f"{value:.3f}",  # bits per byte (and differences of it)
    "rate": lambda value: f"{100 * value:.2f}%",  # a fraction as a percentage
    "change": lambda value: f"{100 * value:+,.1f}%",  # a relative change as a signed percentage
    "count": lambda value: f"{value:,d}",  # tokens, parameters, words
    "score": lambda value: f"{value:.3f}",  # distinct-n, repeated n-gram rate, log-probabilities
    "epoch": lambda value: f"{value:.2f}",
}


def format_value(value: float | int | None, kind: str) -> str:
    """One number as the report writes it; ``kind`` is one of the keys of ``FORMATS``."""
    if value is None:
        return MISSING
    return FORMATS[kind](value)


# ----------------------------------------------------------------------------- tables of values


def _runs(results: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(row["run"] for row in results["rows"]))


def _corpora(results: dict[str, Any]) -> list[str]:
    """The corpora asked for, then the runs' own training corpora that were not among them."""
    return list(dict.fromkeys([*results["meta"].get("corpora", []), *(row["corpus"] for row in results["rows"])]))


def _row(results: dict[str, Any], run: str, corpus: str) -> dict[str, Any] | None:
    return next((row for row in results["rows"] if row["run"] == run and row["corpus"] == corpus), None)


def _in_domain(results: dict[str, Any], run: str) -> str | None:
    return results["meta"].get("runs", {}).get(run, {}).get("in_domain_corpus")


def _run_label(results: dict[str, Any], run: str) -> str:
    row = next(row for row in results["rows"] if row["run"] == run)
    return f"{run}\n({row['model_type']}, {row['tokenizer']})"


# ----------------------------------------------------------------------------- charts


def _save(figure: Figure, path: Path) -> Path:
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=130))


def plot_bits_per_byte(results: dict[str, Any], path: str | Path) -> Path:
    """Heat map of bits per byte, runs (rows) x corpora (columns); the in-domain cell is outlined."""
    runs, corpora = _runs(results), _corpora(results)
    values = np.full((len(runs), len(corpora)), np.nan)
    for i, run in enumerate(runs):
        for j, corpus in enumerate(corpora):
            row = _row(results, run, corpus)
            if row is not None and row["bits_per_byte"] is not None:
                values[i, j] = row["bits_per_byte"]
    figure = Figure(figsize=(2.2 + 1.45 * len(corpora), 1.7 + 0.75 * len(runs)), layout="constrained")
    axes = figure.subplots()
    colormap = matplotlib.colormaps["YlOrRd"].with_extremes(bad="#e6e6e6")  # grey: not evaluated
    image = axes.imshow(np.ma.masked_invalid(values), cmap=colormap, aspect="auto")
    colorbar = figure.colorbar(image, ax=axes, shrink=0.9)
    colorbar.set_label("bits per byte (lower is better)")
    finite = values[np.isfinite(values)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i, run in enumerate(runs):
        for j, corpus in enumerate(corpora):
            value = values[i, j]
            text = MISSING if np.isnan(value) else format_value(float(value), "bpb")
            color = "white" if np.isfinite(value) and value > middle else "black"
            axes.text(j, i, text, ha="center", va="center", fontsize=10, color=color)
            if corpus == _in_domain(results, run):
                axes.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="#1f3b73", linewidth=3))
    axes.set_xticks(range(len(corpora)), [corpus_label(corpus) for corpus in corpora], rotation=20, ha="right")
    axes.set_yticks(range(len(runs)), [_run_label(results, run) for run in runs])
    axes.set_xlabel(f"evaluation corpus ({results['meta'].get('split', '?')} split)")
    axes.set_ylabel("run (model, tokenizer)")
    axes.set_title("Bits per byte by run and corpus\n(outlined: the run's training corpus)", fontsize=11)
    return _save(figure, Path(path))


def plot_perplexity_ratio(results: dict[str, Any], path: str | Path) -> Path:
    """Grouped bars: perplexity / in-domain perplexity per corpus (groups) and run (bars), log scale."""
    runs, corpora = _runs(results), _corpora(results)
    figure = Figure(figsize=(2.5 + 1.1 * len(corpora) * max(1.0, len(runs) / 3), 4.6), layout="constrained")
    axes = figure.subplots()
    width = 0.8 / len(runs)
    colors = matplotlib.colormaps["tab10"].colors
    for k, run in enumerate(runs):
        label = _run_label(results, run).replace("\n", " ")
        for j, corpus in enumerate(corpora):
            row = _row(results, run, corpus)
            if row is None or row["relative_increase"] is None:
                continue
            ratio = 1 + row["relative_increase"]
            x = j - 0.4 + width * (k + 0.5)
            axes.bar(x, ratio - 1, bottom=1, width=width * 0.92, color=colors[k % len(colors)], label=label)
            label = None  # one legend entry per run
            text = "in-domain" if corpus == _in_domain(results, run) else format_value(row["relative_increase"], "change")
            axes.annotate(text, (x, max(ratio, 1)), xytext=(0, 3), textcoords="offset points", ha="center",
                          va="bottom", fontsize=7, rotation=90 if len(runs) > 2 else 0)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    axes.axhline(1, color="black", linewidth=0.8)
    axes.set_yscale("log")
    ratios = [1 + row["relative_increase"] for row in results["rows"] if row["relative_increase"] is not None]
    low, high = min([*ratios, 1.0]) / 1.2, max([*ratios, 1.0]) * 1.2
    high *= (high / low) ** 0.35  # room for the labels above the bars
    axes.set_ylim(low, high)
    _plain_log_axis(axes.yaxis, low, high)
    axes.set_xticks(range(len(corpora)), [corpus_label(corpus) for corpus in corpora], rotation=20, ha="right")
    axes.set_xlabel(f"evaluation corpus ({results['meta'].get('split', '?')} split)")
    axes.set_ylabel("perplexity ÷ in-domain perplexity (log scale)")
    axes.set_title("How much each run's perplexity rises on each corpus (labels: relative increase)", fontsize=11)
    axes.grid(axis="y", which="major", alpha=0.3)
    return _save(figure, Path(path))


def plot_learning_curves(results: dict[str, Any], path: str | Path) -> Path | None:
    """One panel per run: train and validation perplexity per epoch (log scale); None when no run has any."""
    curves = {run: info.get("learning_curve", {}) for run, info in results["meta"].get("runs", {}).items()}
    curves = {run: curve for run, curve in curves.items() if curve.get("epochs")}
    if not curves:
        return None
    columns = min(3, len(curves))
    rows = math.ceil(len(curves) / columns)
    figure = Figure(figsize=(4.3 * columns, 3.3 * rows), layout="constrained")
    panels = figure.subplots(rows, columns, squeeze=False)
    for panel, (run, curve) in zip(panels.flat, curves.items()):
        epochs = curve["epochs"]
        for key, label, marker in (("train_ppl", "train", "o"), ("valid_ppl", "validation", "s")):
            points = [(point["epoch"], point[key]) for point in epochs if point.get(key) is not None]
            if points:
                panel.plot(*zip(*points), marker=marker, markersize=4, label=label)
        if curve.get("test_ppl") is not None:
            panel.axhline(curve["test_ppl"], linestyle=":", color="gray", label="test (best checkpoint)")
        panel.set_yscale("log")
        _plain_log_axis(panel.yaxis, *panel.get_ylim())
        panel.set_xlim(left=0)
        panel.set_title(_run_label(results, run).replace("\n", " ") if run in _runs(results) else run, fontsize=10)
        panel.set_xlabel("epoch")
        panel.set_ylabel("perplexity (log scale)")
        panel.grid(alpha=0.3, which="both")
        panel.legend(fontsize=8, frameon=False)
    for panel in list(panels.flat)[len(curves):]:
        panel.set_visible(False)
    figure.suptitle("Learning curves (perplexity in each run's own tokens)", fontsize=11)
    return _save(figure, Path(path))


def _plain_number(value: float, _position: Any = None) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:g}"


def _plain_log_axis(axis: Any, low: float, high: float) -> None:
    """Tick labels like 3, 20, 1,000 on a log axis from ``low`` to ``high``; minor ticks are labelled too
    on a short axis (all of them below a factor 3, those at 2, 3 and 5 x 10^k below a factor 30)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(_plain_number))
    if high / low < 30:
        labelled = "23456789" if high / low < 3 else "235"
        axis.set_minor_formatter(FuncFormatter(
            lambda value, position: _plain_number(value) if f"{value:e}"[0] in labelled else ""))
    else:
        axis.set_minor_formatter(NullFormatter())


def write_charts(results: dict[str, Any], out_dir: str | Path) -> dict[str, str]:
    """Draw the charts into ``out_dir``; returns chart name -> file name (only the charts drawn)."""
    out_dir = Path(out_dir)
    drawn = {
        "bits_per_byte": plot_bits_per_byte(results, out_dir / CHART_FILES["bits_per_byte"]),
        "perplexity_ratio": plot_perplexity_ratio(results, out_dir / CHART_FILES["perplexity_ratio"]),
        "learning_curves": plot_learning_curves(results, out_dir / CHART_FILES["learning_curves"]),
    }
    return {name: path.name for name, path in drawn.items() if path is not None}


# ----------------------------------------------------------------------------- derived numbers


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(results: dict[str, Any], samples: dict[str, Any] | None = None) -> dict[str, Any]:
    """The numbers the report derives from the JSON files (written as ``summary.json``).

    ``runs[run]``: over the run's out-of-domain corpora (every corpus but its training
    corpus), ``mean_relative_increase`` (geometric mean of the perplexity ratios, minus 1),
    ``mean_bits_per_byte_increase`` (mean of bits per byte minus in-domain bits per byte)
    and ``in_domain_bits_per_byte``. ``least_degraded`` / ``most_degraded``: the runs with
    the smallest / largest of each. ``corpora[corpus]``: the runs with the smallest and
    largest relative increase there. ``strategies[strategy]``: each sample measure
    averaged over runs and prompts.
    """
    runs: dict[str, Any] = {}
    for run in _runs(results):
        in_domain = _row(results, run, _in_domain(results, run) or "")
        others = [row for row in results["rows"]
                  if row["run"] == run and row is not in_domain and row["relative_increase"] is not None]
        if in_domain is None or not others:
            continue
        runs[run] = {
            "out_of_domain_corpora": [row["corpus"] for row in others],
            "in_domain_bits_per_byte": in_domain["bits_per_byte"],
            "mean_relative_increase": math.exp(_mean([math.log1p(row["relative_increase"]) for row in others])) - 1,
            "mean_bits_per_byte_increase": _mean([row["bits_per_byte"] - in_domain["bits_per_byte"] for row in others]),
        }
    summary: dict[str, Any] = {"runs": runs, "least_degraded": {}, "most_degraded": {}, "corpora": {}, "strategies": {}}
    for measure in ("mean_relative_increase", "mean_bits_per_byte_increase"):
        if runs:
            summary["least_degraded"][measure] = min(runs, key=lambda run: runs[run][measure])
            summary["most_degraded"][measure] = max(runs, key=lambda run: runs[run][measure])
    for corpus in _corpora(results):
        rows = [row for row in results["rows"] if row["corpus"] == corpus and row["relative_increase"] is not None
                and row["corpus"] != _in_domain(results, row["run"])]
        if len(rows) >= 2:
            summary["corpora"][corpus] = {
                "least_increase": min(rows, key=lambda row: row["relative_increase"])["run"],
                "most_increase": max(rows, key=lambda row: row["relative_increase"])["run"],
            }
    if samples is not None:
        for strategy in samples["meta"].get("strategies", {}):
            chosen = [sample for sample in samples["samples"] if sample["strategy"] == strategy]
            summary["strategies"][strategy] = {
                measure: _mean([sample[measure] for sample in chosen if sample.get(measure) is not None])
                for measure in ("distinct_1", "distinct_2", "repeated_ngram_rate", "ref_log_prob_per_token")
            }
    return summary


# ----------------------------------------------------------------------------- markdown


def _code_unk(text: str) -> str:
    """Show ``<unk>`` in prose as code (a bare ``<unk>`` is an HTML tag to a markdown renderer)."""
    return text.replace("<unk>", "`<unk>`")


def _bullets(lines: Sequence[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _prompt_label(prompt: str) -> str:
    return f"`{prompt}`" if prompt else "(empty prompt: start token)"


def build_report(
    results: dict[str, Any], summary: dict[str, Any], charts: dict[str, str], samples: dict[str, Any] | None = None
) -> str:
    """The markdown report: every number comes from ``results``, ``summary`` or ``samples``."""
    meta = results["meta"]
    split = meta.get("split", "?")
    parts = [
        "# Cross-domain evaluation",
        f"Each run scored the **{split}** split of every corpus with its best checkpoint and its own tokenizer "
        "(`training/evaluate_lm.py`). Word-level tokenizers first apply their own training normalization to the "
        "other corpus; words outside their vocabulary become `<unk>`.",
    ]
    comparability = meta.get("comparable_across_tokenizers", {})
    if comparability:
        parts.append(_code_unk("**Which numbers compare.** " + " ".join(
            f"{NOTE_LABELS.get(name, name)}: {note}" for name, note in comparability.items())))
    parts += _answers_section(results, summary)
    parts += ["## Results", _results_table(results)]
    if "bits_per_byte" in charts:
        parts.append(f"![Bits per byte by run and corpus]({charts['bits_per_byte']})")
    if "perplexity_ratio" in charts:
        parts.append(f"![Perplexity relative to the in-domain perplexity]({charts['perplexity_ratio']})")
    parts += _coverage_section(results)
    parts += _learning_section(results, charts)
    if samples is not None:
        parts += _samples_section(samples, summary)
    parts += _provenance_section(results, samples)
    return "\n\n".join(parts) + "\n"


def _answers_section(results: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    runs = summary["runs"]
    if not runs:
        return ["## Which model degrades least", "No run has both an in-domain and an out-of-domain result."]
    increase, bits = "mean_relative_increase", "mean_bits_per_byte_increase"
    least, most = summary["least_degraded"], summary["most_degraded"]
    lines = [
        "## Which model degrades least",
        "Averaged over each run's out-of-domain corpora (relative increase: geometric mean of the perplexity "
        "ratios; bits per byte: mean increase over the in-domain value):",
        _table(
            ["run", "model", "tokenizer", "in-domain bits/byte", "mean relative increase",
             "mean bits/byte increase", "out-of-domain corpora"],
            [[run, *_model_and_tokenizer(results, run), format_value(info["in_domain_bits_per_byte"], "bpb"),
              format_value(info[increase], "change"), format_value(info[bits], "bpb"),
              ", ".join(corpus_label(corpus) for corpus in info["out_of_domain_corpora"])]
             for run, info in runs.items()],
        ),
    ]
    answers = [
        f"**Rises least:** `{least[increase]}` by relative increase "
        f"({format_value(runs[least[increase]][increase], 'change')}); "
        + _agreement(least[bits], least[increase], runs, bits),
        f"**Degrades most:** `{most[increase]}` by relative increase "
        f"({format_value(runs[most[increase]][increase], 'change')}); "
        + _agreement(most[bits], most[increase], runs, bits),
    ]
    for corpus, extremes in summary["corpora"].items():
        low = _row(results, extremes["least_increase"], corpus)
        high = _row(results, extremes["most_increase"], corpus)
        answers.append(
            f"On **{corpus_label(corpus)}**: least `{low['run']}` ({format_value(low['relative_increase'], 'change')}), "
            f"most `{high['run']}` ({format_value(high['relative_increase'], 'change')})."
        )
    return [*lines, _bullets(answers)]


def _agreement(by_bits: str, by_increase: str, runs: dict[str, Any], bits: str) -> str:
    value = format_value(runs[by_bits][bits], "bpb")
    if by_bits == by_increase:
        return f"the bits-per-byte increase agrees ({value} bits/byte)."
    return (f"by bits per byte, the comparable measure across tokenizers, it is `{by_bits}` ({value} bits/byte "
            f"more than in-domain): the two rankings differ, so prefer bits per byte when tokenizers differ.")


def _model_and_tokenizer(results: dict[str, Any], run: str) -> list[str]:
    row = next(row for row in results["rows"] if row["run"] == run)
    return [row["model_type"], row["tokenizer"]]


def _results_table(results: dict[str, Any]) -> str:
    header = ["run", "model", "tokenizer", "parameters", "corpus", "perplexity", "bits/byte", "tokens", "OOV rate",
              "`<unk>` rate", "perplexity w/o `<unk>`", "relative increase"]
    rows = []
    for row in results["rows"]:
        corpus = corpus_label(row["corpus"])
        if row["corpus"] == _in_domain(results, row["run"]):
            corpus += " (in-domain)"
        rows.append([
            row["run"], row["model_type"], row["tokenizer"], format_value(row["num_parameters"], "count"), corpus,
            format_value(row["perplexity"], "ppl"), format_value(row["bits_per_byte"], "bpb"),
            format_value(row["tokens"], "count"), format_value(row["oov_rate"], "rate"),
            format_value(row["unk_rate"], "rate"), format_value(row["perplexity_without_unk"], "ppl"),
            format_value(row["relative_increase"], "change"),
        ])
    return _table(header, rows)


def _coverage_section(results: dict[str, Any]) -> list[str]:
    """Why perplexity changes: distribution shift for every model, and vocabulary coverage for word/char ones."""
    lines = [
        "## Why perplexity changes",
        "Two things change on a new corpus. **The data distribution**: topics, style and word frequencies differ "
        "from the training corpus, so the probabilities the model learned fit less well; for byte-level "
        "tokenizers (OOV rate —) this is the whole story. **Vocabulary coverage**: a word-level (or character) "
        "model maps everything outside its vocabulary to `<unk>` and then predicts only \"some unknown word\", "
        "never which one, so a high `<unk>` rate changes what its perplexity measures; the perplexity over the "
        "other targets separates the two.",
    ]
    findings = []
    for run in _runs(results):
        in_domain = _row(results, run, _in_domain(results, run) or "")
        others = [row for row in results["rows"]
                  if row["run"] == run and row is not in_domain and row["oov_rate"] is not None]
        if not others:
            continue
        worst = max(others, key=lambda row: row["oov_rate"])
        sentence = (
            f"`{run}` ({worst['tokenizer']} vocabulary): the most uncovered corpus is **{corpus_label(worst['corpus'])}**, "
            f"OOV rate {format_value(worst['oov_rate'], 'rate')} and `<unk>` rate {format_value(worst['unk_rate'], 'rate')}"
        )
        if in_domain is not None and in_domain["unk_rate"] is not None:
            sentence += f" (in-domain: {format_value(in_domain['unk_rate'], 'rate')})"
        sentence += f"; perplexity {format_value(worst['perplexity'], 'ppl')}"
        without_unk = worst["perplexity_without_unk"]
        if without_unk is not None:
            sentence += f", {format_value(without_unk, 'ppl')} without `<unk>` targets"
            sentence += (" (the `<unk>` targets are cheaper than the rest, so the headline perplexity understates "
                         "the shift)" if without_unk > worst["perplexity"] else
                         " (the `<unk>` targets cost more than the other targets)")
        largest = max(others, key=lambda row: row["relative_increase"] if row["relative_increase"] is not None else -1)
        if largest is worst:
            sentence += "; it is also the corpus where its perplexity rises most."
        else:
            sentence += (f"; its perplexity rises most on **{corpus_label(largest['corpus'])}** "
                         f"({format_value(largest['relative_increase'], 'change')}, OOV rate "
                         f"{format_value(largest['oov_rate'], 'rate')}), so coverage alone does not explain the rise.")
        findings.append(sentence)
    return [*lines, _bullets(findings)] if findings else lines


def _learning_section(results: dict[str, Any], charts: dict[str, str]) -> list[str]:
    runs = results["meta"].get("runs", {})
    rows = []
    for run, info in runs.items():
        curve = info.get("learning_curve", {})
        epochs = curve.get("epochs", [])
        if not epochs:
            continue
        last = epochs[-1]
        valid = [point["valid_ppl"] for point in epochs if point.get("valid_ppl") is not None]
        rows.append([run, format_value(last["epoch"], "epoch"), format_value(last.get("train_ppl"), "ppl"),
                     format_value(min(valid) if valid else None, "ppl"), format_value(curve.get("test_ppl"), "ppl")])
    if not rows:
        return []
    lines = ["## Learning curves",
             "From each run's `metrics.jsonl` (perplexity in the run's own tokens, on its training corpus):",
             _table(["run", "epochs", "last train perplexity", "best validation perplexity",
                     "test perplexity (best checkpoint)"], rows)]
    if "learning_curves" in charts:
        lines.append(f"![Learning curves]({charts['learning_curves']})")
    return lines


def _samples_section(samples: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    meta = samples["meta"]
    settings = ", ".join(
        f"{name} ({', '.join(f'{key}={value}' for key, value in options.items() if key != 'do_sample') or 'argmax'})"
        for name, options in meta.get("strategies", {}).items()
    )
    reference = meta.get("reference")
    lines = [
        "## Generations",
        f"Every run continued each prompt with each strategy: {settings}; seed {meta.get('seed')}, "
        f"up to {meta.get('max_new_tokens')} new tokens, not stopping at the end-of-text token "
        "(`training/sample.py`). Measures count whitespace-separated words, the same for every tokenizer: "
        f"distinct-n = distinct n-grams / n-grams; repeated rate = fraction of word {meta.get('repeat_n')}-grams "
        "seen earlier in the same text. "
        + (f"Reference log-probability: mean per token under `{reference}`, in its own tokens (nats)."
           if reference else "No reference model was given (`--reference`), so no log-probabilities."),
    ]
    strategy_rows = [
        [strategy, *(format_value(values[measure], "score")
                     for measure in ("distinct_1", "distinct_2", "repeated_ngram_rate", "ref_log_prob_per_token"))]
        for strategy, values in summary.get("strategies", {}).items()
    ]
    if strategy_rows:
        lines += ["Mean over runs and prompts, per strategy:",
                  _table(["strategy", "distinct_1", "distinct_2", "repeated_ngram_rate", "ref_log_prob_per_token"],
                         strategy_rows)]
    lines.append(_table(
        ["run", "prompt", "strategy", "tokens", "words", "distinct_1", "distinct_2", "repeated_ngram_rate",
         "ref_log_prob_per_token", "ref_bits_per_byte"],
        [[sample["run"], _prompt_label(sample["prompt"]), sample["strategy"],
          format_value(sample["num_tokens"], "count"), format_value(sample["num_words"], "count"),
          *(format_value(sample[key], "score") for key in ("distinct_1", "distinct_2", "repeated_ngram_rate",
                                                            "ref_log_prob_per_token")),
          format_value(sample["ref_bits_per_byte"], "bpb")]
         for sample in samples["samples"]],
    ))
    lines.append("### Excerpts")
    for prompt in meta.get("prompts", []):
        lines.append(f"**Prompt {_prompt_label(prompt)}**")
        for sample in (s for s in samples["samples"] if s["prompt"] == prompt):
            text = sample["text"]
            excerpt = text if len(text) <= EXCERPT_CHARACTERS else text[:EXCERPT_CHARACTERS] + " …"
            # Escaped: a word model's <unk> or GPT-2's <|endoftext|> would read as HTML tags.
            quoted = "\n".join("> " + html.escape(line, quote=False) for line in (prompt + excerpt).split("\n"))
            lines.append(f"`{sample['run']}` · {sample['strategy']}\n\n{quoted}")
    return lines


def _provenance_section(results: dict[str, Any], samples: dict[str, Any] | None) -> list[str]:
    lines = []
    for name, meta in (("evaluation", results["meta"]), ("generations", samples["meta"] if samples else None)):
        if meta is None:
            continue
        versions = ", ".join(f"{key} {value}" for key, value in meta.get("versions", {}).items())
        hardware = meta.get("hardware", {})
        lines.append(
            f"{name}: `{' '.join(meta.get('command', []))}` at commit `{meta.get('git_commit')}` on "
            f"{meta.get('date')}; {versions}; {hardware.get('platform')}, GPU {hardware.get('gpu') or 'none'}."
        )
    lines += [f"warning: {warning}" for warning in results["meta"].get("warnings", [])]
    return ["## How these numbers were made", _bullets(lines)]


def write_report(
    results: dict[str, Any], out_dir: str | Path, samples: dict[str, Any] | None = None
) -> Path:
    """Write ``report.md``, ``summary.json`` and the charts into ``out_dir``; returns the report's path."""
    out_dir = Path(out_dir)
    charts = write_charts(results, out_dir)
    summary = summarize(results, samples)
    atomic_write_json(out_dir / "summary.json", summary)
    return atomic_write_text(out_dir / "report.md", build_report(results, summary, charts, samples))
