"""Cross-domain perplexity: the shipped model x corpus results, and scoring a visitor's text now.

- :func:`read_text_input` turns a pasted text or an uploaded file into the text to score,
  refusing what is not UTF-8 text and capping what is too long (with a message).
- :func:`score_text` scores it with each chosen model: perplexity (in the model's own
  tokens) and bits per byte (comparable across tokenizers), via :func:`lmcore.eval.evaluate_text`.
- :func:`load_crossdomain` reads ``results.json`` (:func:`lmcore.eval.crossdomain.load_results`)
  into a table and charts; the PNG charts written beside it are listed too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lmcore.app import plots
from lmcore.app.registry import ModelRegistry, ModelUnavailable

MAX_UPLOAD_BYTES = 2_000_000  # bytes read from an uploaded file (the text is capped in characters after)


def read_text_input(text: str | None, file_path: str | None, *, max_chars: int) -> tuple[str, list[str]]:
    """The text to score (from the uploaded file when there is one, else the pasted text) and notes.

    ValueError, with a message for the page, when there is nothing to score or the file is not text.
    """
    notes: list[str] = []
    if file_path:
        path = Path(file_path)
        name = path.name
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_UPLOAD_BYTES + 1)
        except OSError as error:
            raise ValueError(f"Could not read the uploaded file {name}: {error.strerror or error}") from error
        if len(data) > MAX_UPLOAD_BYTES:
            data = data[:MAX_UPLOAD_BYTES]
            notes.append(f"Only the first {MAX_UPLOAD_BYTES:,} bytes of {name} were read.")
        source = _decode_text(data, name, truncated=len(data) == MAX_UPLOAD_BYTES)
        if text and text.strip():
            notes.append("Scored the uploaded file; the pasted text was left aside.")
        text = source
    if text is None or not text.strip():
        raise ValueError("There is no text to score: paste some text or upload a UTF-8 text file.")
    if len(text) > max_chars:
        notes.append(f"The text was capped at its first {max_chars:,} characters (it has {len(text):,}).")
        text = text[:max_chars]
    return text, notes


def _decode_text(data: bytes, name: str, truncated: bool) -> str:
    """UTF-8 text of an upload; ValueError when it looks binary."""
    if b"\x00" in data:
        raise ValueError(f"{name} is not a text file (it contains NUL bytes); upload a UTF-8 text file such as .txt.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        # A cut in the middle of a multi-byte character at the end is fine; anything else is not UTF-8.
        if truncated and error.start >= len(data) - 3:
            text = data[: error.start].decode("utf-8")
        else:
            raise ValueError(f"{name} is not UTF-8 text (byte {error.start} cannot be decoded); upload a UTF-8 text file.") from error
    control = sum(1 for char in text if ord(char) < 32 and char not in "\n\r\t\f")
    if text and control / len(text) > 0.01:
        raise ValueError(f"{name} does not look like text ({control} control characters); upload a UTF-8 text file.")
    return text


@dataclass
class TextScore:
    """One model's score of the text."""

    model: str
    status: str  # "ok" or "unavailable: ..." / "error: ..."
    tokens: int | None = None
    perplexity: float | None = None
    bits_per_byte: float | None = None
    unk_rate: float | None = None
    seconds: float | None = None


def score_text(registry: ModelRegistry, names: Sequence[str], text: str) -> list[TextScore]:
    """Score ``text`` with every named model (one at a time); failures become a row with the reason."""
    from lmcore.eval import evaluate_text

    names = [name for name in names if name]
    if not names:
        raise ValueError("Choose at least one model to score the text with.")
    scores = []
    for name in names:
        registry.spec(name)  # ValueError for an unknown name
        start = time.perf_counter()
        try:
            loaded = registry.get(name)
            result = evaluate_text(loaded.model, loaded.tokenizer, text)
        except ModelUnavailable as error:
            scores.append(TextScore(model=name, status=f"unavailable: {error}"))
            continue
        except ValueError as error:
            scores.append(TextScore(model=name, status=f"error: {error}"))
            continue
        scores.append(
            TextScore(
                model=name,
                status="ok",
                tokens=result.num_tokens,
                perplexity=result.perplexity,
                bits_per_byte=result.bits_per_byte,
                unk_rate=result.unk_rate,
                seconds=time.perf_counter() - start,
            )
        )
    return scores


def scores_table(scores: Sequence[TextScore]) -> pd.DataFrame:
    """The scores as a table for the page (rounded; empty cells where a model failed)."""
    return pd.DataFrame(
        [
            {
                "model": score.model,
                "perplexity": _round(score.perplexity, 2),
                "bits per byte": _round(score.bits_per_byte, 3),
                "tokens scored": score.tokens,
                "<unk> %": _round(100 * score.unk_rate, 1) if score.unk_rate is not None else None,
                "seconds": _round(score.seconds, 2),
                "status": score.status,
            }
            for score in scores
        ],
        columns=["model", "perplexity", "bits per byte", "tokens scored", "<unk> %", "seconds", "status"],
    )


def scores_figure(scores: Sequence[TextScore]):
    return plots.horizontal_bars(
        [(score.model, score.bits_per_byte) for score in scores if score.bits_per_byte is not None],
        xlabel="bits per byte of your text (lower is better; comparable across tokenizers)",
        title="How well each model predicts your text",
    )


def _round(value: float | None, digits: int) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


# ----------------------------------------------------------------------------- shipped results


@dataclass
class CrossDomain:
    """The cross-domain results for the page (or why there are none)."""

    message: str  # shown above the table: the source, or why nothing is shown
    table: pd.DataFrame
    rows: list[dict[str, Any]]
    meta: dict[str, Any]
    images: list[str]  # PNG charts written beside results.json

    @property
    def available(self) -> bool:
        return bool(self.rows)


CROSSDOMAIN_HINT = "Make them with the cross-domain evaluation script (see the About tab)."
TABLE_COLUMNS = ["run", "model", "tokenizer", "parameters", "corpus", "perplexity", "bits per byte", "OOV %",
                 "<unk> %", "ppl without <unk>", "vs. own corpus"]


def load_crossdomain(path: Path) -> CrossDomain:
    """Read the results file; a missing loader, file or bad file gives a message, never an exception."""
    empty = pd.DataFrame(columns=TABLE_COLUMNS)
    try:
        from lmcore.eval.crossdomain import load_results
    except ImportError as error:
        return CrossDomain(f"Cross-domain results: not available yet ({error}).", empty, [], {}, [])
    if not path.is_file():
        return CrossDomain(f"Cross-domain results: not available yet (no {path}). {CROSSDOMAIN_HINT}", empty, [], {}, [])
    try:
        results = load_results(path)
    except ValueError as error:
        return CrossDomain(f"Cross-domain results could not be read: {error}", empty, [], {}, [])
    rows = results["rows"]
    table = pd.DataFrame([_table_row(row) for row in rows], columns=TABLE_COLUMNS)
    images = sorted(str(image) for image in path.parent.glob("*.png"))
    meta = results["meta"]
    split = meta.get("split") or (rows[0]["split"] if rows else "?")
    message = f"{len(rows)} results ({len({row['run'] for row in rows})} models × {len({row['corpus'] for row in rows})} corpora, {split} split) from `{path}`."
    return CrossDomain(message, table, rows, meta, images)



def _table_row(row: dict[str, Any]) -> dict[str, Any]:
    from lmcore.runs import format_count

    def percent(value: float | None) -> float | None:
        return _round(100 * value, 1) if value is not None else None

    return {
        "run": row["run"],
        "model": row["model_type"],
        "tokenizer": row["tokenizer"],
        "parameters": format_count(int(row["num_parameters"])) if row.get("num_parameters") else None,
        "corpus": Path(str(row["corpus"])).name,
        "perplexity": _round(row["perplexity"], 1),
        "bits per byte": _round(row["bits_per_byte"], 3),
        "OOV %": percent(row.get("oov_rate")),
        "<unk> %": percent(row.get("unk_rate")),
        "ppl without <unk>": _round(row.get("perplexity_without_unk"), 1),
        "vs. own corpus": f"{row['relative_increase']:+.0%}" if row.get("relative_increase") is not None else None,
    }


def crossdomain_figures(results: CrossDomain) -> tuple[Any, Any]:
    """(bits per byte by corpus and model, perplexity by corpus and model on a log scale)."""
    if not results.available:
        message = "Cross-domain results: not available yet."
        return plots.empty_figure(message), plots.empty_figure(message)
    bits: dict[str, dict[str, float]] = {}
    perplexity: dict[str, dict[str, float]] = {}
    for row in results.rows:
        corpus = Path(str(row["corpus"])).name
        label = f"{row['run']} ({row['tokenizer']})"
        if row.get("bits_per_byte") is not None:
            bits.setdefault(corpus, {})[label] = row["bits_per_byte"]
        if row.get("perplexity") is not None:
            perplexity.setdefault(corpus, {})[label] = row["perplexity"]
    return (
        plots.grouped_bars(bits, ylabel="bits per byte (lower is better)",
                           title="Bits per byte: comparable across tokenizers", value_format="{:.2f}"),
        plots.grouped_bars(perplexity, ylabel="perplexity (log scale, own tokens)", log_scale=True,
                           title="Perplexity: compare only models with the same tokenizer", value_format="{:.0f}"),
    )
