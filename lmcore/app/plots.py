"""Matplotlib figures for the app: training curves, cross-domain results, scores of a text.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot global state, so they are
safe to build from several request threads at once) and share one look: a colour per
run or model, light grid, no top/right frame, axes labelled with their units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from lmcore.app.runs import Curves

PALETTE = ("#4f46e5", "#f59e0b", "#10b981", "#ef4444", "#0ea5e9", "#a855f7", "#84cc16", "#ec4899", "#64748b", "#14b8a6")
TEXT_COLOUR = "#1f2937"


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _figure(width: float = 9.0, height: float = 4.2, columns: int = 1) -> tuple[Figure, list]:
    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    axes = figure.subplots(1, columns, squeeze=False)[0].tolist()
    for ax in axes:
        ax.grid(True, color="#e5e7eb", linewidth=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        for side in ("left", "bottom"):
            ax.spines[side].set_color("#9ca3af")
        ax.tick_params(colors=TEXT_COLOUR, labelsize=9)
    return figure, axes


def _log_axis(ax, axis: str = "y") -> None:
    """A log scale with plain tick labels (2, 5, 10, 20, ... rather than 2×10⁰)."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    target.set_minor_formatter(NullFormatter())


def empty_figure(message: str, width: float = 9.0, height: float = 2.4) -> Figure:
    """A figure that says why there is nothing to plot."""
    figure = Figure(figsize=(width, height), dpi=110)
    figure.text(0.5, 0.5, message, ha="center", va="center", fontsize=12, color="#6b7280", wrap=True)
    return figure


def loss_figure(series: dict[str, Curves]) -> Figure:
    """Training loss every few steps (lines) and validation loss at each epoch end (dots), with a perplexity axis."""
    series = {name: curve for name, curve in series.items() if curve.train_steps or curve.valid_steps}
    if not series:
        return empty_figure("No loss recorded yet: pick a run that has metrics.jsonl lines.")
    figure, (ax,) = _figure()
    for index, (name, curve) in enumerate(series.items()):
        if curve.train_steps:
            steps, losses = zip(*curve.train_steps)
            ax.plot(steps, losses, color=colour(index), linewidth=1.6, alpha=0.9, label=name)
        if curve.valid_steps:
            steps, losses = zip(*curve.valid_steps)
            ax.plot(steps, losses, color=colour(index), linestyle="--", marker="o", markersize=5, linewidth=1.2,
                    label=None if curve.train_steps else name)
    ax.set_xlabel("optimizer step", color=TEXT_COLOUR)
    ax.set_ylabel("cross-entropy loss (nats / token)", color=TEXT_COLOUR)
    low, high = ax.get_ylim()
    ax.set_ylim(max(low, 0.0), high)
    perplexity_axis = ax.secondary_yaxis("right", functions=(_exp, _log))
    perplexity_axis.set_yticks(nice_ticks(math.exp(max(low, 0.0)), math.exp(high)))
    perplexity_axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    perplexity_axis.yaxis.set_minor_formatter(NullFormatter())
    perplexity_axis.set_ylabel("perplexity = exp(loss)", color=TEXT_COLOUR)
    perplexity_axis.tick_params(colors=TEXT_COLOUR, labelsize=9)
    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="#6b7280", linewidth=1.6), Line2D([], [], color="#6b7280", linestyle="--", marker="o")]
    labels += ["train (running mean)", "validation (epoch end)"]
    ax.legend(handles, labels, fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.14),
              ncols=min(4, len(labels)))
    ax.set_title("Loss per step: train against validation", fontsize=11, color=TEXT_COLOUR, loc="left")
    return figure


def nice_ticks(low: float, high: float, most: int = 8) -> list[float]:
    """Round values (1, 2, 5 times a power of ten) between ``low`` and ``high``, at most ``most`` of them."""
    if not (0 < low < high and math.isfinite(high)):
        return []
    if high / low < 5:  # a narrow range: evenly spaced round values
        return [float(tick) for tick in MaxNLocator(nbins=5).tick_values(low, high) if low <= tick <= high]
    for multipliers in ((1, 2, 5), (1, 3), (1,)):
        ticks = [m * 10.0**k for k in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
                 for m in multipliers if low <= m * 10.0**k <= high]
        if len(ticks) <= most:
            return ticks
    return ticks[:: math.ceil(len(ticks) / most)]


def _exp(loss: np.ndarray) -> np.ndarray:
    return np.exp(np.clip(loss, -50, 50))


def _log(perplexity: np.ndarray) -> np.ndarray:
    return np.log(np.clip(perplexity, 1e-20, None))


def epoch_figure(series: dict[str, Curves]) -> Figure:
    """Perplexity per epoch, train (squares, dashed) against validation (circles, solid), log scale."""
    series = {name: curve for name, curve in series.items() if curve.epochs}
    if not series:
        return empty_figure("No finished epoch yet: per-epoch perplexities appear after the first epoch.", height=2.0)
    figure, (ax,) = _figure(width=6.0, height=3.8)
    values = [entry[key] for curve in series.values() for entry in curve.epochs for key in ("train_ppl", "valid_ppl")
              if key in entry]
    for index, (name, curve) in enumerate(series.items()):
        for split, style, marker in (("train", "--", "s"), ("valid", "-", "o")):
            points = [(entry["epoch"], entry[f"{split}_ppl"]) for entry in curve.epochs if f"{split}_ppl" in entry]
            if points:
                epochs, ppls = zip(*points)
                ax.plot(epochs, ppls, color=colour(index), linestyle=style, marker=marker, markersize=5,
                        label=name if split == "valid" else None)
    log_scale = min(values) > 0 and max(values) / min(values) > 4  # a log axis helps only over a wide range
    if log_scale:
        _log_axis(ax)
    ax.set_xlabel("epoch", color=TEXT_COLOUR)
    ax.set_ylabel("perplexity (log scale)" if log_scale else "perplexity", color=TEXT_COLOUR)
    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="#6b7280", linestyle="--", marker="s"), Line2D([], [], color="#6b7280", marker="o")]
    labels += ["train", "validation"]
    ax.legend(handles, labels, fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=3)
    ax.set_title("Perplexity per epoch", fontsize=11, color=TEXT_COLOUR, loc="left")
    return figure


def lr_figure(series: dict[str, Curves]) -> Figure:
    """Learning rate against optimizer step (log scale when it spans more than a decade)."""
    series = {name: curve for name, curve in series.items() if curve.lr}
    if not series:
        return empty_figure("No learning rate recorded yet.", height=2.0)
    figure, (ax,) = _figure(width=6.0, height=3.8)
    values = []
    for index, (name, curve) in enumerate(series.items()):
        steps, rates = zip(*curve.lr)
        values += [rate for rate in rates if rate > 0]
        ax.step(steps, rates, where="post", color=colour(index), linewidth=1.6, label=name)
    if values and max(values) / min(values) > 10:
        _log_axis(ax)
    ax.set_xlabel("optimizer step", color=TEXT_COLOUR)
    ax.set_ylabel("learning rate", color=TEXT_COLOUR)
    ax.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=3)
    ax.set_title("Learning-rate schedule", fontsize=11, color=TEXT_COLOUR, loc="left")
    return figure


def grouped_bars(
    table: dict[str, dict[str, float]],
    *,
    ylabel: str,
    title: str,
    log_scale: bool = False,
    value_format: str = "{:.2f}",
) -> Figure:
    """Bars of ``table[group][series]``: one cluster per group (e.g. corpus), one colour per series (e.g. model)."""
    groups = list(table)
    series = sorted({name for values in table.values() for name in values})
    if not groups or not series:
        return empty_figure("Nothing to plot yet.")
    figure, (ax,) = _figure(width=max(6.0, 1.2 + 0.55 * len(groups) * len(series) + 0.6 * len(groups)), height=4.2)
    width = 0.8 / len(series)
    for index, name in enumerate(series):
        positions, heights = [], []
        for group_index, group in enumerate(groups):
            value = table[group].get(name)
            if value is not None and math.isfinite(value):
                positions.append(group_index - 0.4 + width * (index + 0.5))
                heights.append(value)
        bars = ax.bar(positions, heights, width=width * 0.92, color=colour(index), label=name)
        ax.bar_label(bars, labels=[value_format.format(height) for height in heights], fontsize=7, padding=2,
                     color=TEXT_COLOUR)
    ax.set_xticks(range(len(groups)), groups)
    if log_scale:
        _log_axis(ax)
    ax.set_ylabel(ylabel, color=TEXT_COLOUR)
    ax.set_title(title, fontsize=11, color=TEXT_COLOUR, loc="left")
    ax.legend(fontsize=8, frameon=False, ncols=min(4, len(series)), loc="upper left", bbox_to_anchor=(0, -0.1))
    ax.margins(y=0.12)
    return figure


def horizontal_bars(values: Sequence[tuple[str, float]], *, xlabel: str, title: str, value_format: str = "{:.3f}") -> Figure:
    """One bar per (label, value), best (lowest) on top."""
    values = [(label, value) for label, value in values if value is not None and math.isfinite(value)]
    if not values:
        return empty_figure("Nothing scored yet.", height=2.0)
    values.sort(key=lambda item: item[1], reverse=True)
    labels, numbers = zip(*values)
    figure, (ax,) = _figure(width=7.5, height=0.9 + 0.45 * len(values))
    bars = ax.barh(range(len(values)), numbers, color=[colour(index) for index in range(len(values))], height=0.6)
    ax.bar_label(bars, labels=[value_format.format(number) for number in numbers], fontsize=8, padding=3,
                 color=TEXT_COLOUR)
    ax.set_yticks(range(len(values)), labels)
    ax.set_xlabel(xlabel, color=TEXT_COLOUR)
    ax.set_title(title, fontsize=11, color=TEXT_COLOUR, loc="left")
    ax.margins(x=0.15)
    ax.grid(axis="y", visible=False)
    return figure
