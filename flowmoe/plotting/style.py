"""The figure style: greyscale-readable (teachers differ by line style, colours are a bonus), PNG plus SVG.

Figures are ``matplotlib.figure.Figure`` objects made by :func:`subplots` (no pyplot state, no
backend chosen: PNG and SVG render with matplotlib's built-in canvases, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure


STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 160,
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 7,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "lines.linewidth": 1.2,
    "text.usetex": False,
    "mathtext.fontset": "cm",
    "axes.spines.top": False,
    "axes.spines.right": False,
}


# Line styles distinguish teachers in greyscale; colours are a bonus.
LINESTYLES = ["-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (3, 1, 1, 1)), (0, (1, 1))]


COLORS = ["#1b1b1b", "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9"]


# Simulations overlaid on the ODE (which is drawn thick, grey-black): one colour each, and a dash style.
SIM_COLORS = ["#d55e00", "#0072b2", "#009e73", "#cc79a7", "#e69f00", "#56b4e9"]


BACKGROUND = "#b0b0b0"


VECTOR_FORMAT = "svg"


def teacher_style(j: int) -> dict:
    return {"color": COLORS[j % len(COLORS)], "linestyle": LINESTYLES[j % len(LINESTYLES)]}


def tidy_log_axes(fig) -> None:
    """No labels on the minor ticks of log axes (matplotlib labels them when an axis spans less
    than a decade, which crowds the axis with numbers like 2×10⁻¹, 3×10⁻¹, …). An axis with fewer
    than two labelled decades gets major ticks at 1, 2 and 5 times the powers of ten instead."""
    from matplotlib.ticker import LogFormatterSciNotation, LogLocator, NullFormatter

    for ax in fig.axes:
        for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            if axis.get_scale() != "log":
                continue
            lo, hi = sorted(lim)
            axis.set_minor_formatter(NullFormatter())
            if lo > 0 and np.floor(np.log10(hi)) - np.ceil(np.log10(lo)) < 1:  # fewer than two powers of ten
                axis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
                axis.set_major_formatter(LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(np.inf, np.inf)))


def save(fig, path) -> list[Path]:
    """Save as PNG and as the vector format beside it (log axes tidied: :func:`tidy_log_axes`);
    returns both paths."""
    tidy_log_axes(fig)
    path = Path(path).with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    vec = path.with_suffix(f".{VECTOR_FORMAT}")
    fig.savefig(vec, bbox_inches="tight")
    return [path, vec]


def rc_context(overrides: dict):
    """The rc settings of a figure (``STYLE`` with changes) while it is built."""
    return matplotlib.rc_context(overrides)


def subplots(*args, figsize, **kwargs):
    """(figure, axes) like ``pyplot.subplots`` but a bare :class:`matplotlib.figure.Figure`
    (constrained layout): no pyplot state, nothing to close, no GUI backend needed."""
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(*args, **kwargs)
