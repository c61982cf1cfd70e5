"""The statistical-rate figure: loss against n on log–log axes with the fitted line."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..rates.report import _fmt_ci
from . import style


def rates_figure(summary: dict, path) -> list[Path]:
    """Mean (± s.e.m.) and median Voronoi loss per n, and the fit ∝ [log n / n]^α (``summary`` as
    in rates.json); written as PNG plus SVG, returns both paths."""
    s = summary
    n = np.asarray(s["n"], float)
    mean = np.asarray(s["loss_mean"], float)
    sem = np.asarray([v or 0.0 for v in s["loss_sem"]], float)
    with style.rc_context(style.STYLE):
        fig, ax = style.subplots(figsize=(5.5, 4.0))
        ax.errorbar(n, mean, yerr=np.minimum(sem, 0.999 * mean), fmt="o", ms=3, capsize=2, color="k",
                    label="mean ± s.e.m.")
        ax.plot(n, s["loss_median"], "s", ms=3, mfc="none", color="#0072b2", label="median")
        if s.get("alpha") is not None:
            r = np.log(n) / n
            c = np.mean(np.log(mean) - s["alpha"] * np.log(r))
            ax.plot(n, np.exp(c) * r ** s["alpha"], "-", color="#d55e00",
                    label=f"fit ∝ [log n / n]^{s['alpha']:.3f}  CI {_fmt_ci(s['alpha_ci'])}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("n")
        ax.set_ylabel(f"Voronoi loss {s['loss']}")
        ax.set_title(s["preset"])
        ax.legend(frameon=False)
        return style.save(fig, path)
