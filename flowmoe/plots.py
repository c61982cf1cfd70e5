"""Figures: one consistent style, readable in greyscale, PNG plus a vector format (docs/maths.md §4).

Everything renders with the Agg backend (no display, no LaTeX installation). Each figure function
takes Trajectories (or saved results) and returns the paths it wrote.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .observables import matching, pair_T1  # noqa: E402

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
BACKGROUND = "#b0b0b0"
VECTOR_FORMAT = "svg"


def teacher_style(j: int) -> dict:
    return {"color": COLORS[j % len(COLORS)], "linestyle": LINESTYLES[j % len(LINESTYLES)]}


def save(fig, path) -> list[Path]:
    """Save as PNG and as the vector format beside it; returns both paths."""
    path = Path(path).with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    vec = path.with_suffix(f".{VECTOR_FORMAT}")
    fig.savefig(vec, bbox_inches="tight")
    plt.close(fig)
    return [path, vec]


def alignment_figure(traj, path, threshold: float = 0.9, title: str | None = None,
                     matching_at: int = -1) -> list[Path]:
    """Fig.-1 style: router alignments γ⁽¹⁾_{i,j}(t) and expert alignments γ⁽²⁾_{i,j}(t).

    Every student–teacher overlap is drawn in light grey; the student matched to teacher j (greedy
    on the expert overlaps at saved index ``matching_at``: −1 = final, 0 = initial) is drawn in
    teacher j's style; dots mark T₁ per pair.
    """
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.2), constrained_layout=True)
        pairs = matching(traj, matching_at)
        T1 = pair_T1(traj, pairs, threshold)
        t = traj.t
        for ax, gamma, name in ((axes[0], traj.router_alignment, r"router $\bar v_i^\top v^\star_j$"),
                                (axes[1], traj.expert_alignment, r"expert $\bar w_i^\top w^\star_j$")):
            flat = gamma.reshape(len(t), -1)
            ax.plot(t, flat, color=BACKGROUND, lw=0.5, alpha=0.6)
            for (i, j), t1 in zip(pairs, T1):
                ax.plot(t, gamma[:, i, j], lw=1.6, label=f"student {i} → teacher {j}", **teacher_style(j))
                if np.isfinite(t1):
                    ax.plot([t1], [np.interp(t1, t, gamma[:, i, j])], "o", ms=3, color=teacher_style(j)["color"])
            ax.axhline(threshold, color="k", lw=0.6, ls=":")
            ax.set_xlabel("flow time $t$")
            ax.set_title(name)
            ax.set_ylim(-1.05, 1.05)
        which = "final" if matching_at == -1 else f"t = {traj.t[matching_at]:g}"
        axes[1].legend(loc="lower right", frameon=False, title=f"matching at {which}", title_fontsize=7)
        axes[2].semilogy(t, np.maximum(traj.loss, 1e-300), color="k")
        for (i, j), t1 in zip(pairs, T1):
            if np.isfinite(t1):
                axes[2].axvline(t1, lw=0.7, **teacher_style(j))
        axes[2].set_xlabel("flow time $t$")
        axes[2].set_title(r"population loss $L$ (lines: $T_1$ per pair)")
        if title:
            fig.suptitle(title)
        return save(fig, path)
