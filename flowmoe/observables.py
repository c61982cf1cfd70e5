"""Observables computed from a saved Gram trajectory (docs/maths.md §4).

Definitions (the paper names these quantities; the exact definitions are ours and configurable):

- γ⁽¹⁾_{i,j} = ⟨v̄_i, v⋆_j⟩ (router alignment), γ⁽²⁾_{i,j} = ⟨w̄_i, w⋆_j⟩ (expert alignment);
- matching (i⋆_ℓ, j⋆_ℓ): greedy on γ⁽²⁾ at a chosen time (largest signed entry, delete its row and
  column, repeat). Signed, because He₃ is odd: w̄ = −w⋆ gives the negated teacher expert;
- error terms of a matched pair (i, j), several candidates side by side:
  ``zeta1_max`` = max_{j'≠j} |γ⁽¹⁾_{i,j'}|, ``zeta1_sq`` = Σ_{j'≠j} γ⁽¹⁾_{i,j'}², ``zeta1_gap`` = 1 − γ⁽¹⁾_{i,j}²,
  the same for experts (``zeta2_*``), and the cross-type overlaps ``cross_vw`` = max_{j'} |⟨v̄_i, w⋆_{j'}⟩|,
  ``cross_wv`` = max_{j'} |⟨w̄_i, v⋆_{j'}⟩|, ``self`` = |⟨v̄_i, w̄_i⟩|;
- T₁ of a pair: first time both γ⁽¹⁾ and γ⁽²⁾ of the pair reach the threshold (0.9), linearly
  interpolated between saved times; T₁ overall: the largest pair T₁ (all pairs aligned);
- T_c: first saved time from which every chosen error term of every matched pair stays below the
  tolerance until the end.
"""

from __future__ import annotations

import numpy as np

from .trajectory import Trajectory

ERROR_TERMS = ("zeta1_max", "zeta1_sq", "zeta1_gap", "zeta2_max", "zeta2_sq", "zeta2_gap",
               "cross_vw", "cross_wv", "self")
DEFAULT_TC_TERMS = ("zeta1_max", "zeta2_max", "cross_vw", "cross_wv", "self")


def greedy_matching(gamma: np.ndarray) -> list[tuple[int, int]]:
    """Greedy matching on an (m, m⋆) matrix: largest entry, delete its row and column, repeat.

    Returns (student i, teacher j) pairs ordered by teacher j.
    """
    g = np.array(gamma, dtype=float)
    pairs = []
    for _ in range(min(g.shape)):
        i, j = np.unravel_index(np.nanargmax(g), g.shape)
        pairs.append((int(i), int(j)))
        g[i, :] = -np.inf
        g[:, j] = -np.inf
    return sorted(pairs, key=lambda p: p[1])


def matching(traj: Trajectory, at: int = 0) -> list[tuple[int, int]]:
    """Greedy matching on γ⁽²⁾ at saved index ``at`` (0: initial, −1: final)."""
    return greedy_matching(traj.expert_alignment[at])


def error_terms(traj: Trajectory, pairs) -> dict[str, np.ndarray]:
    """Each candidate error term for each matched pair: arrays of shape (T, len(pairs))."""
    ms, lay = traj.m_star, traj.layout
    g1, g2 = traj.router_alignment, traj.expert_alignment
    G = traj.gram
    vw = G[:, lay.span("student routers"), lay.span("teacher experts")]  # ⟨v̄_i, w⋆_j⟩
    wv = G[:, lay.span("student experts"), lay.span("teacher routers")]  # ⟨w̄_i, v⋆_j⟩
    selfo = np.abs(G[:, lay.student_routers, lay.student_experts])  # ⟨v̄_i, w̄_i⟩
    out = {k: np.zeros((len(traj), len(pairs))) for k in ERROR_TERMS}
    for col, (i, j) in enumerate(pairs):
        others = [jj for jj in range(ms) if jj != j]
        for name, g in (("zeta1", g1), ("zeta2", g2)):
            off = g[:, i, others] if others else np.zeros((len(traj), 1))
            out[f"{name}_max"][:, col] = np.max(np.abs(off), axis=1)
            out[f"{name}_sq"][:, col] = np.sum(off**2, axis=1)
            out[f"{name}_gap"][:, col] = 1.0 - g[:, i, j] ** 2
        out["cross_vw"][:, col] = np.max(np.abs(vw[:, i, :]), axis=1)
        out["cross_wv"][:, col] = np.max(np.abs(wv[:, i, :]), axis=1)
        out["self"][:, col] = selfo[:, i]
    return out


def first_crossing(t: np.ndarray, x: np.ndarray, level: float) -> float:
    """First time x(t) ≥ level, linearly interpolated between samples; NaN if never."""
    above = np.flatnonzero(x >= level)
    if above.size == 0:
        return float("nan")
    k = int(above[0])
    if k == 0:
        return float(t[0])
    x0, x1 = x[k - 1], x[k]
    return float(t[k - 1] + (level - x0) * (t[k] - t[k - 1]) / (x1 - x0))


def pair_T1(traj: Trajectory, pairs, threshold: float = 0.9) -> np.ndarray:
    """T₁ of each matched pair: first time min(γ⁽¹⁾, γ⁽²⁾) ≥ threshold."""
    g1, g2 = traj.router_alignment, traj.expert_alignment
    return np.array([first_crossing(traj.t, np.minimum(g1[:, i, j], g2[:, i, j]), threshold)
                     for i, j in pairs])


def time_Tc(traj: Trajectory, pairs, tol: float, terms=DEFAULT_TC_TERMS) -> float:
    """First saved time from which all chosen error terms of all matched pairs stay < tol."""
    errs = error_terms(traj, pairs)
    worst = np.max(np.stack([errs[k] for k in terms]), axis=(0, 2))  # (T,)
    bad = np.flatnonzero(worst >= tol)
    if bad.size == 0:
        return float(traj.t[0])
    if bad[-1] == len(traj) - 1:
        return float("nan")
    return float(traj.t[bad[-1] + 1])


def summarize(traj: Trajectory, threshold: float = 0.9, error_tol: float = 0.05) -> dict:
    """The numbers ``flowmoe run`` reports: matchings, T₁ per pair, T_c, final alignments, loss."""
    start, end = matching(traj, 0), matching(traj, -1)
    T1 = pair_T1(traj, start, threshold)
    T1_end = pair_T1(traj, end, threshold)
    g1, g2 = traj.router_alignment, traj.expert_alignment
    errs = error_terms(traj, start)
    order = np.argsort(np.where(np.isnan(T1), np.inf, T1))
    return {
        "matching_initial": [list(p) for p in start],
        "matching_final": [list(p) for p in end],
        "matchings_agree": sorted(start) == sorted(end),
        "threshold": threshold,
        "T1_per_pair": [None if np.isnan(x) else float(x) for x in T1],
        "T1": None if np.any(np.isnan(T1)) else float(np.max(T1)),
        "T1_per_pair_final_matching": [None if np.isnan(x) else float(x) for x in T1_end],
        "T1_final_matching": None if np.any(np.isnan(T1_end)) else float(np.max(T1_end)),
        "recovered": int(np.sum(~np.isnan(T1))),
        "recovery_order_teachers": [int(start[k][1]) for k in order if not np.isnan(T1[k])],
        "error_tol": error_tol,
        "Tc": _none_if_nan(time_Tc(traj, start, error_tol)),
        "final_router_alignment": [float(g1[-1, i, j]) for i, j in start],
        "final_expert_alignment": [float(g2[-1, i, j]) for i, j in start],
        "initial_expert_alignment": [float(g2[0, i, j]) for i, j in start],
        "final_error_terms": {k: [float(x) for x in v[-1]] for k, v in errs.items()},
        "initial_loss": float(traj.loss[0]),
        "final_loss": float(traj.loss[-1]),
        "norm_change_max": float(np.max(np.abs(traj.norms - traj.norms[0]))),
    }


def _none_if_nan(x: float):
    return None if np.isnan(x) else float(x)
