"""The card's plots: F1/EM against the no-answer threshold, and the HasAns/NoAns bars.

matplotlib is the ``plots`` extra: imported only when a plot is drawn, and through
``matplotlib.figure`` so no GUI backend and no pyplot state is involved.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from pocketqa.evaluation.curves import curve_at


def split_title(name: str, scores: dict) -> str:
    """The title of the HasAns/NoAns plot, naming the threshold the scores were taken at."""
    threshold = scores.get("threshold")
    at = f" at threshold {threshold:.2f}" if isinstance(threshold, (int, float)) else ""
    return f"{name}: answerable vs unanswerable{at}"


def has_splits(scores: dict) -> bool:
    """Whether ``scores`` hold EM, F1 and counts for all, HasAns and NoAns questions (the bars' data)."""
    return all(f"{p}{k}" in scores for p in ("", "HasAns_", "NoAns_") for k in ("exact", "f1", "total"))


def wrap_title(title: str, fig, fontsize: float) -> str:
    """``title`` broken into lines that fit the figure's width (long model names have no spaces
    to break at, so a word longer than a line is broken too)."""
    # An average character of a sans-serif font is about 0.55 em wide; keep a margin.
    chars = int(fig.get_figwidth() * 72 / (0.6 * fontsize))
    return textwrap.fill(title, width=max(chars, 20), break_long_words=True, break_on_hyphens=True)


def figure_class():
    """matplotlib's Figure class (needs no GUI backend, leaves pyplot's state alone), or None without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


def plot_threshold_curve(curve: dict, scores: dict, path: Path, title: str):
    """F1 and EM against the no-answer threshold; marks the threshold used and the best F1."""
    Figure = figure_class()
    # Constrained layout makes room for a title wrapped onto several lines.
    fig = Figure(figsize=(7.5, 4.5), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    x = curve["thresholds"]
    threshold = float(scores["threshold"])
    # Show the threshold used even when it lies outside the range of the null odds.
    lo, hi = min(x[0], threshold), max(x[-1], threshold)
    pad = 0.02 * (hi - lo or 1.0)
    xs = np.concatenate([[lo - pad], x, [hi + pad]])

    def ys(key):
        y = curve[key]
        return np.concatenate([[y[0]], y, [y[-1]]])

    # EM <= F1 everywhere, and the two often coincide: draw EM dashed so F1 shows through.
    ax.plot(xs, ys("f1"), drawstyle="steps-post", color="tab:blue", lw=2, label="F1")
    ax.plot(xs, ys("exact"), drawstyle="steps-post", color="tab:orange", lw=2, ls="--", label="EM")
    for key, color, label in (("HasAns_f1", "tab:purple", "HasAns F1"), ("NoAns_f1", "tab:gray", "NoAns F1")):
        if key in curve:
            ax.plot(xs, ys(key), drawstyle="steps-post", color=color, lw=1, ls=":", label=label)
    used_f1 = curve_at(curve, threshold, "f1")
    ax.axvline(threshold, color="tab:red", lw=1)
    ax.plot([threshold], [used_f1], "o", color="tab:red", label=f"threshold used {threshold:.2f}: F1 {used_f1:.1f}")
    best = int(np.argmax(curve["f1"]))
    ax.plot([x[best]], [curve["f1"][best]], "*", ms=12, color="tab:green",
            label=f"best F1 {curve['f1'][best]:.1f} at {x[best]:.2f}")
    ax.set_xlim(xs[0], xs[-1])
    ax.set_ylim(0, 100)
    ax.set_xlabel("no-answer threshold (abstain when null odds > threshold)")
    ax.set_ylabel("score (%)")
    ax.set_title(wrap_title(title, fig, 12), fontsize=12)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.savefig(path, format="png")
    return fig


def plot_has_no_ans(scores: dict, path: Path, title: str):
    """EM and F1 bars for all questions, answerable (HasAns) and unanswerable (NoAns) ones."""
    Figure = figure_class()
    groups = [
        (f"{label} (n={scores[f'{prefix}total']})", scores[f"{prefix}exact"], scores[f"{prefix}f1"])
        for label, prefix in (("all", ""), ("HasAns", "HasAns_"), ("NoAns", "NoAns_"))
        if f"{prefix}exact" in scores and f"{prefix}f1" in scores and f"{prefix}total" in scores
    ]
    fig = Figure(figsize=(6, 4), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(groups))
    width = 0.38
    for offset, idx, label, color in ((-width / 2, 1, "EM", "tab:orange"), (width / 2, 2, "F1", "tab:blue")):
        values = [g[idx] for g in groups]
        bars = ax.bar(x + offset, values, width, label=label, color=color)
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=8, padding=2)
    ax.set_xticks(x, [g[0] for g in groups])
    ax.set_ylim(0, 110)
    ax.set_ylabel("score (%)")
    ax.set_title(wrap_title(title, fig, 12), fontsize=12)
    # Outside the axes, right of the bars: inside, some bar's label is always under it
    # (a tiny model's NoAns bar reaches 100 wherever the legend goes).
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0.0)
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, format="png")
    return fig
