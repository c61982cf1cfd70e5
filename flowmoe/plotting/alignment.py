"""Fig.-1 style alignment curves of a trajectory."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..observables import matching, pair_T1
from .loss import t1_label
from . import style


def alignment_figure(traj, path, threshold: float = 0.9, title: str | None = None,
                     matching_at: int = -1) -> list[Path]:
    """Fig.-1 style: router alignments γ⁽¹⁾_{i,j}(t) and expert alignments γ⁽²⁾_{i,j}(t).

    Every student–teacher overlap is drawn in light grey; the student matched to teacher j (greedy
    on the expert overlaps at saved index ``matching_at``: −1 = final, 0 = initial) is drawn in
    teacher j's style; dots mark T₁ per pair.
    """
    with style.rc_context(style.STYLE):
        fig, axes = style.subplots(1, 3, figsize=(10.5, 3.2))
        pairs = matching(traj, matching_at)
        T1 = pair_T1(traj, pairs, threshold)
        t = traj.t
        for ax, gamma, name in ((axes[0], traj.router_alignment, r"router $\bar v_i^\top v^\star_j$"),
                                (axes[1], traj.expert_alignment, r"expert $\bar w_i^\top w^\star_j$")):
            flat = gamma.reshape(len(t), -1)
            ax.plot(t, flat, color=style.BACKGROUND, lw=0.5, alpha=0.6)
            for (i, j), t1 in zip(pairs, T1):
                ax.plot(t, gamma[:, i, j], lw=1.6, label=f"student {i} → teacher {j}", **style.teacher_style(j))
                if np.isfinite(t1):
                    ax.plot([t1], [np.interp(t1, t, gamma[:, i, j])], "o", ms=3, color=style.teacher_style(j)["color"])
            ax.axhline(threshold, color="k", lw=0.6, ls=":")
            ax.set_xlabel("flow time $t$")
            ax.set_title(name)
            ax.set_ylim(-1.05, 1.05)
        which = "final" if matching_at == -1 else f"t = {traj.t[matching_at]:g}"
        axes[1].legend(loc="lower right", frameon=False, title=f"matching at {which}", title_fontsize=7)
        axes[2].semilogy(t, np.maximum(traj.loss, 1e-300), color="k")
        for (i, j), t1 in zip(pairs, T1):
            if np.isfinite(t1):
                axes[2].axvline(t1, lw=0.7, label=t1_label(i, j, t1), **style.teacher_style(j))
        axes[2].set_xlabel("flow time $t$")
        axes[2].set_title(r"population loss $L$ (lines: $T_1$ per pair)")
        if np.isfinite(T1).any():
            axes[2].legend(loc="upper right", framealpha=0.85, edgecolor="none", fontsize=6)
        if title:
            fig.suptitle(title)
        return style.save(fig, path)
