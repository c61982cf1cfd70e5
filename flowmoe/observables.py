"""Observables computed from a saved Gram trajectory (docs/maths.md §4).

Definitions (the paper names these quantities; the exact definitions are ours and configurable):

- γ⁽¹⁾_{i,j} = ⟨v̄_i, v⋆_j⟩ (router alignment), γ⁽²⁾_{i,j} = ⟨w̄_i, w⋆_j⟩ (expert alignment);
- matching (i⋆_ℓ, j⋆_ℓ) of students to teachers, by one of :data:`MATCHING_RULES`:
  ``"final"`` (the default of every report: the student that actually recovered each teacher,
  greedy on γ⁽²⁾ at the last saved time), and three rules that *predict* it from the start:
  ``"initial"`` (greedy on γ⁽²⁾(0)), ``"escape-time"`` (greedy on the smallest leading-order escape
  time τ_ij of :func:`escape_times`) and ``"hungarian"`` (the assignment maximising Σ γ⁽²⁾_ij(0)).
  Greedy = largest signed entry, delete its row and column, repeat. Signed, because He₃ is odd:
  w̄ = −w⋆ gives the negated teacher expert;
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

import math

import numpy as np

from .errors import SpecError
from .names import MATCHINGS
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


MATCHING_RULES = MATCHINGS
PREDICTIVE_RULES = ("initial", "escape-time", "hungarian")


def escape_times(traj: Trajectory, gate=None, expert=None) -> np.ndarray:
    """Leading-order escape time τ_ij of student i towards teacher j from the initial state, (m, m⋆).

    Near the start every overlap is O(1/√d), and the expert overlap β = ⟨w̄_i, w⋆_j⟩ of an expert
    σ = Σ a_k He_k with lowest degree k (its information exponent) obeys, to leading order,

        dβ/dt = C β^{k−1},   C = k · k! · a_k² · R₀₀(α) / r_w²,

    with α = ⟨v̄_i, v⋆_j⟩ the router overlap, R₀₀(α) = E[π(s)π(u)] the gate correlation and r_w the
    norm of w_i (docs/maths.md §4: for He₃ at unit norm, β̇ = 18 R₀₀(α) β²). Solving it:
    τ = |β₀|^{2−k} / ((k − 2) |C|) for k ≥ 3 (the blow-up time; 1/(18 R₀₀(α₀) β₀) for He₃),
    τ = ln(1/|β₀|) / |C| for k = 2 and τ = 1/|C| for k = 1. The overlap escapes only if
    C·sign(β₀)^k > 0 (for He₃: β₀ > 0); otherwise τ = ∞. The router's initial overlap α₀ thus
    speeds its expert through R₀₀(α₀). ``gate`` and ``expert`` default to those recorded in the
    trajectory's provenance.
    """
    from .correlation import correlation_quadrature
    from .gates import get_expert, get_gate

    model = traj.provenance.model or {}
    if gate is None or expert is None:
        if "gate" not in model or "expert" not in model:
            raise SpecError("matching", "the escape-time rule needs the gate and expert: the trajectory "
                                        "does not record them; pass gate= and expert=")
        gate = gate if gate is not None else model["gate"]["name"]
        expert = expert if expert is not None else model["expert"]["name"]
    gate, expert = get_gate(gate), get_expert(expert)
    k, a = expert.terms[0]
    lay = traj.layout
    alpha, beta = traj.router_alignment[0], traj.expert_alignment[0]
    r_w = traj.norms[0, lay.student_experts][:, None]
    R00 = correlation_quadrature(gate, 0, 0, np.clip(alpha.ravel(), -1.0, 1.0)).reshape(alpha.shape)
    C = k * math.factorial(k) * float(a) ** 2 * R00 / r_w**2
    mag = np.abs(beta)
    with np.errstate(divide="ignore", invalid="ignore"):
        if k >= 3:
            tau = mag ** (2.0 - k) / ((k - 2) * np.abs(C))
        elif k == 2:
            tau = np.log(1.0 / mag) / np.abs(C)
        else:
            tau = 1.0 / np.abs(C)
    escapes = C * np.sign(beta) ** k > 0
    return np.where(escapes & np.isfinite(tau), tau, np.inf)


def match_pairs(traj: Trajectory, rule: str = "final", gate=None, expert=None) -> list[tuple[int, int]]:
    """Students matched to teachers by ``rule`` (:data:`MATCHING_RULES`), ordered by teacher."""
    if rule == "final":
        return matching(traj, -1)
    if rule == "initial":
        return matching(traj, 0)
    if rule == "escape-time":
        tau = escape_times(traj, gate, expert)
        beta = traj.expert_alignment[0]
        # Greedy on the smallest τ; ties (several τ = ∞) broken by the larger initial overlap.
        free_i, free_j, pairs = set(range(tau.shape[0])), set(range(tau.shape[1])), []
        while free_i and free_j:
            i, j = min(((i, j) for i in free_i for j in free_j), key=lambda ij: (tau[ij], -beta[ij]))
            pairs.append((i, j))
            free_i.discard(i)
            free_j.discard(j)
        return sorted(pairs, key=lambda p: p[1])
    if rule == "hungarian":
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(traj.expert_alignment[0], maximize=True)
        return sorted(((int(i), int(j)) for i, j in zip(rows, cols)), key=lambda p: p[1])
    raise SpecError("matching", f"got {rule!r}; allowed: {list(MATCHING_RULES)}")


def predicted_winners(traj: Trajectory, rule: str, gate=None, expert=None, threshold: float = 0.9) -> dict:
    """Does ``rule`` (from the start) predict the student that recovered each teacher by the end?

    The winner of teacher j is its student under the final matching, if that pair reached the
    threshold in both alignments (else teacher j has no winner yet: ``None``). Returns the rule's
    pairs, per teacher ``predicted`` (True/False, or None without a winner), ``hits`` / ``decided``
    (counts over the teachers with a winner) and ``all`` (every decided teacher predicted).
    """
    final = matching(traj, -1)
    T1 = pair_T1(traj, final, threshold)
    winner = {j: (i if np.isfinite(t1) else None) for (i, j), t1 in zip(final, T1)}
    pairs = match_pairs(traj, rule, gate, expert)
    hit = [None if winner[j] is None else bool(winner[j] == i) for i, j in pairs]
    decided = [h for h in hit if h is not None]
    return {"pairs": [list(p) for p in pairs], "predicted": hit, "hits": int(sum(decided)),
            "decided": len(decided), "all": bool(all(decided))}


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


def summarize(traj: Trajectory, threshold: float = 0.9, error_tol: float = 0.05, gate=None, expert=None) -> dict:
    """The numbers ``flowmoe run`` reports.

    Per-pair numbers (T₁, T_c, recovery order, alignments, error terms) use the **final** matching:
    for every teacher, the student that actually recovered it. ``matching_rules`` says, separately,
    whether each predictive rule (:data:`PREDICTIVE_RULES`: initial greedy, escape-time greedy,
    Hungarian) named that student from the start; ``T1_per_pair_initial_matching`` keeps T₁ of the
    pairs of the initial greedy matching (a pair whose student lost its teacher never aligns: None).
    """
    start, end = matching(traj, 0), matching(traj, -1)
    T1 = pair_T1(traj, end, threshold)
    T1_start = pair_T1(traj, start, threshold)
    g1, g2 = traj.router_alignment, traj.expert_alignment
    errs = error_terms(traj, end)
    order = np.argsort(np.where(np.isnan(T1), np.inf, T1))
    rules = {}
    for rule in PREDICTIVE_RULES:
        try:
            rules[rule] = predicted_winners(traj, rule, gate, expert, threshold)
        except SpecError as err:  # e.g. escape-time without a recorded gate
            rules[rule] = {"error": str(err)}
    return {
        "matching": "final",
        "pairs": [list(p) for p in end],
        "matching_initial": [list(p) for p in start],
        "matching_final": [list(p) for p in end],
        "matchings_agree": sorted(start) == sorted(end),
        "matching_rules": rules,
        "threshold": threshold,
        "T1_per_pair": [_none_if_nan(x) for x in T1],
        "T1": None if np.any(np.isnan(T1)) else float(np.max(T1)),
        "T1_per_pair_initial_matching": [_none_if_nan(x) for x in T1_start],
        "T1_initial_matching": None if np.any(np.isnan(T1_start)) else float(np.max(T1_start)),
        "recovered": int(np.sum(~np.isnan(T1))),
        "recovery_order_teachers": [int(end[k][1]) for k in order if not np.isnan(T1[k])],
        "error_tol": error_tol,
        "Tc": _none_if_nan(time_Tc(traj, end, error_tol)),
        "final_router_alignment": [float(g1[-1, i, j]) for i, j in end],
        "final_expert_alignment": [float(g2[-1, i, j]) for i, j in end],
        "initial_expert_alignment": [float(g2[0, i, j]) for i, j in end],
        "final_error_terms": {k: [float(x) for x in v[-1]] for k, v in errs.items()},
        "initial_loss": float(traj.loss[0]),
        "final_loss": float(traj.loss[-1]),
        "norm_change_max": float(np.max(np.abs(traj.norms - traj.norms[0]))),
    }


def _none_if_nan(x: float):
    return None if np.isnan(x) else float(x)
