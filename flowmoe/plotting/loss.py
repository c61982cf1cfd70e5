"""The loss against time with T₁ and T_c marked, and the error terms behind T_c."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SpecError
from ..names import MATCHINGS
from ..observables import DEFAULT_TC_TERMS, error_terms, match_pairs, pair_T1, time_Tc
from ..trajectory import Trajectory
from . import style


def t1_label(i: int, j: int, t1: float) -> str:
    """Legend label of the T₁ line of the matched pair (student i, teacher j)."""
    return f"$T_1$, student {i} → teacher {j}: {t1:.3g}"


def loss_markers(traj: Trajectory, threshold: float = 0.9, error_tol: float = 0.05,
                 match: str = "final") -> dict:
    """T₁ per matched pair, T₁ overall (the last pair to align; NaN unless all do) and T_c
    (:func:`flowmoe.observables.time_Tc`). Pairs: the final matching (``match="final"``, the student
    that recovered each teacher, as in summary.json) or a predictive rule from the start
    (``"initial"``, ``"escape-time"``, ``"hungarian"``: :func:`flowmoe.observables.match_pairs`)."""
    if match not in MATCHINGS:
        raise SpecError("--matching", f"got {match!r}; allowed: {list(MATCHINGS)}")
    pairs = match_pairs(traj, match)
    T1 = pair_T1(traj, pairs, threshold)
    return {"pairs": pairs, "T1_pairs": T1, "T1": float(np.max(T1)) if np.all(np.isfinite(T1)) else float("nan"),
            "Tc": time_Tc(traj, pairs, error_tol), "threshold": threshold, "error_tol": error_tol, "matching": match}


def draw_loss(axes, traj: Trajectory, threshold: float = 0.9, error_tol: float = 0.05,
              match: str = "final") -> dict:
    """Draw the loss (log scale) with T₁ and T_c on ``axes[0]`` and the T_c error terms on
    ``axes[1]`` (if given). Returns :func:`loss_markers`."""
    mk = loss_markers(traj, threshold, error_tol, match)
    t = traj.t
    ax = axes[0]
    ax.semilogy(t, np.maximum(traj.loss, 1e-300), color="k", lw=1.4, label="population loss $L(t)$")
    for (i, j), t1 in zip(mk["pairs"], mk["T1_pairs"]):
        if np.isfinite(t1):
            ax.axvline(t1, lw=0.7, alpha=0.8, label=t1_label(i, j, t1), **style.teacher_style(j))
    if np.isfinite(mk["T1"]):
        ax.axvline(mk["T1"], color="k", lw=1.6, ls="--", label=f"$T_1$ = {mk['T1']:.3g} (all pairs ≥ {threshold:g})")
    else:
        ax.plot([], [], color="k", lw=1.6, ls="--", label=f"$T_1$: not all pairs reach {threshold:g}")
    if np.isfinite(mk["Tc"]):
        ax.axvline(mk["Tc"], color="k", lw=1.6, ls=":", label=f"$T_c$ = {mk['Tc']:.3g} (errors < {error_tol:g})")
    else:
        ax.plot([], [], color="k", lw=1.6, ls=":", label=f"$T_c$: errors not below {error_tol:g} by the end")
    ax.set_xlabel("flow time $t$")
    ax.set_ylabel("$L$")
    ax.set_title("population loss (log scale)")
    ax.legend(loc="upper right", framealpha=0.85, edgecolor="none", title=f"$T_1$ per pair: {match} matching",
              title_fontsize=7)
    if len(axes) > 1:
        ax = axes[1]
        errs = error_terms(traj, mk["pairs"])
        styles = ["-", "--", "-.", ":", (0, (5, 1, 1, 1))]
        top = error_tol
        for name, ls in zip(DEFAULT_TC_TERMS, styles):
            worst = np.max(errs[name], axis=1)
            top = max(top, float(np.nanmax(worst, initial=0.0)))
            ax.semilogy(t, np.maximum(worst, 1e-300), color="k", ls=ls, lw=1.0, label=_TERM_LABEL.get(name, name))
        ax.axhline(error_tol, color=style.COLORS[2], lw=1.0, label=f"tolerance {error_tol:g}")
        if np.isfinite(mk["Tc"]):
            ax.axvline(mk["Tc"], color="k", lw=1.6, ls=":")
        # exact zeros (e.g. an orthogonalised router) are off-scale below, and do not stretch the axis above
        ax.set_ylim(error_tol * 1e-4, 3.0 * top)
        ax.set_xlabel("flow time $t$")
        ax.set_title("error terms defining $T_c$ (max over matched pairs)")
        ax.legend(loc="lower left", frameon=False)
    return mk


_TERM_LABEL = {
    "zeta1_max": r"$\zeta^{(1)}$: max$_{j'\neq j}|\bar v_i^\top v^\star_{j'}|$",
    "zeta2_max": r"$\zeta^{(2)}$: max$_{j'\neq j}|\bar w_i^\top w^\star_{j'}|$",
    "cross_vw": r"max$_{j'}|\bar v_i^\top w^\star_{j'}|$",
    "cross_wv": r"max$_{j'}|\bar w_i^\top v^\star_{j'}|$",
    "self": r"$|\bar v_i^\top \bar w_i|$",
}


def loss_figure(traj: Trajectory, path, threshold: float = 0.9, error_tol: float = 0.05,
                title: str | None = None, match: str = "final") -> list[Path]:
    """Loss on a log scale with T₁ and T_c marked, and the error terms that define T_c."""

    with style.rc_context(style.STYLE):
        fig, axes = style.subplots(1, 2, figsize=(9.0, 3.4))
        draw_loss(axes, traj, threshold, error_tol, match)
        if title:
            fig.suptitle(title)
        return style.save(fig, path)
