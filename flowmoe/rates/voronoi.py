"""Voronoi cells and the Voronoi losses D₁–D₄ of "On DeepSeekMoE: Statistical Benefits of Shared
Experts and Normalized Sigmoid Gating" (arXiv 2505.10860, eqs. 4, 6, 10, 11).

Atoms: shared ξ = (κ, τ), routed ζ = (β₁, η, ν). Cell 𝒱ⱼ = fitted atoms whose nearest true atom
(Euclidean distance, ties to the lowest index) is j. Δ = fitted − true atom of the cell.

- D₁ (strongly identifiable experts, softmax): Σⱼ|Σ_{𝒱₁ⱼ}ωᵢ − ω⋆ⱼ| + Σⱼ|Σ_{𝒱₂ⱼ}e^{β₀ᵢ} − e^{β⋆₀ⱼ}|
  + single-atom cells ωᵢ(‖Δκ‖ + |Δτ|), e^{β₀ᵢ}(‖Δβ₁‖ + ‖Δη‖ + |Δν|)
  + multi-atom cells ωᵢ(‖Δκ‖² + |Δτ|²), e^{β₀ᵢ}(‖Δβ₁‖² + ‖Δη‖² + |Δν|²).
- D₂ (linear experts, softmax): single-atom cells split the expert into slope and intercept,
  ωᵢ(‖Δκ₁‖ + |Δκ₀| + |Δτ|), e^{β₀ᵢ}(‖Δβ₁‖ + ‖Δη₁‖ + |Δη₀| + |Δν|); multi-atom cells of size m, r = r(m)
  with r(2) = 4, r(3) = 6, r(m ≥ 4) = 7: ωᵢ(‖Δκ₁‖² + |Δκ₀|^r + |Δτ|^{r/2}) and
  e^{β₀ᵢ}(‖Δβ₁‖^r + ‖Δη₁‖^{r/2} + |Δη₀|^r + |Δν|^{r/2}).
- D₃ (normalised sigmoid, sparse regime): routed masses |Σσ(β₀ᵢ) − σ(β⋆₀ⱼ)| for multi-atom cells only;
  single-atom routed cells ‖Δβ₁‖ + |Δβ₀| + ‖Δη‖ + |Δν|; multi-atom routed cells ‖Δβ₁‖² + ‖Δη‖² + |Δν|²
  (no weights); shared part as D₁.
- D₄ (normalised sigmoid, dense regime): measured against a reference Ǧ₂ (the KL projection, see
  :func:`flowmoe.rates.experiment.kl_projection`) instead of the true routed atoms: routed part
  Σⱼ Σ_{i∈𝒱₂ⱼ}(‖β₁ᵢ − β̌₁ⱼ‖ + |β₀ᵢ − β̌₀ⱼ| + ‖ηᵢ − η̌ⱼ‖ + |νᵢ − ν̌ⱼ|), cells with respect to the atoms
  of Ǧ₂; shared part as D₁.

Softmax translation. The softmax gate is unchanged by (β₁ᵢ, β₀ᵢ) → (β₁ᵢ + t₁, β₀ᵢ + t₀) for all i,
so the fitted gating parameters are defined only up to (t₁, t₀), and the truths of App. G.1 do not pin
the last atom to zero. Before D₁/D₂ we therefore put the fit in the translation that matches the truth
in total mass and in mass-weighted mean slope:
Σᵢe^{β₀ᵢ} = Σⱼe^{β⋆₀ⱼ} and Σᵢe^{β₀ᵢ}β₁ᵢ/Σᵢe^{β₀ᵢ} = Σⱼe^{β⋆₀ⱼ}β⋆₁ⱼ/Σⱼe^{β⋆₀ⱼ} (:func:`align_softmax`);
this is the identity on the truth and on any exact split of it.

ReLU rescaling. η₂ReLU(η₁ᵀx + η₀) = cη₂ReLU((η₁ᵀx + η₀)/c) for c > 0, so ReLU expert parameters are
identified only up to that rescaling (and the likelihood is flat along it). With ``relu``/``relu0``
experts every fitted expert vector is put, for each true atom, at the point of its rescaling orbit
nearest to that true atom's expert vector (a quartic in c, solved exactly) before cells and Δ are taken
(:func:`align_scale`). Linear experts have no such orbit and are left as they are.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from ..errors import SpecError

LOSSES = ("D1", "D2", "D3", "D4")


def r_exponent(m: int) -> int:
    """r(m): 4 for a cell of 2 atoms, 6 for 3, 7 for 4 or more (paper App. B, Propositions 3–4)."""
    if m < 2:
        raise SpecError("cell size", f"got {m}; allowed: ≥ 2 (r is for multi-atom cells)")
    return {2: 4, 3: 6}.get(m, 7)


def voronoi_cells(atoms, true_atoms) -> list[np.ndarray]:
    """Cells 𝒱ⱼ: for each true atom j (rows of ``true_atoms``), the indices of the fitted atoms
    (rows of ``atoms``) nearest to it."""
    atoms = np.atleast_2d(np.asarray(atoms, float))
    true_atoms = np.atleast_2d(np.asarray(true_atoms, float))
    dist = np.linalg.norm(atoms[:, None, :] - true_atoms[None, :, :], axis=2)
    nearest = np.argmin(dist, axis=1)
    return [np.flatnonzero(nearest == j) for j in range(true_atoms.shape[0])]


def align_softmax(params: dict, truth: dict) -> dict:
    """The fit translated so that its total gating mass and mass-weighted mean slope match the truth's."""
    p = dict(params)
    b0, b1 = np.asarray(params["beta0"], float), np.asarray(params["beta1"], float)
    s0, s1 = np.asarray(truth["beta0"], float), np.asarray(truth["beta1"], float)
    t0 = logsumexp(s0) - logsumexp(b0)  # stable for diverged fits (β₀ of hundreds)
    wf, wt = np.exp(b0 - logsumexp(b0)), np.exp(s0 - logsumexp(s0))
    t1 = wt @ s1 - wf @ b1
    p["beta0"], p["beta1"] = b0 + t0, b1 + t1[None, :]
    return p


def _outer(kind: str | None, d: int) -> int | None:
    return {"relu": d + 1, "relu0": d}.get(kind)


def align_scale(kind: str | None, d: int, a, t) -> np.ndarray:
    """The point (c·a_outer, a_rest/c), c > 0, of the ReLU rescaling orbit of expert vector ``a`` nearest
    to ``t`` (Euclidean); ``a`` unchanged for experts without that invariance."""
    a = np.asarray(a, float)
    k = _outer(kind, d)
    if k is None:
        return a.copy()
    t = np.asarray(t, float)
    a2, t2 = a[k], t[k]
    rest = [i for i in range(a.size) if i != k]
    ar, tr = a[rest], t[rest]
    # d/dc [(c a2 − t2)² + Σ(a_r/c − t_r)²] = 0  ⇔  a2² c⁴ − a2 t2 c³ + (a_r·t_r) c − |a_r|² = 0
    roots = np.roots([a2 * a2, -a2 * t2, 0.0, ar @ tr, -(ar @ ar)])
    cands = [r.real for r in roots if abs(r.imag) < 1e-9 * max(1.0, abs(r)) and r.real > 0] + [1.0]
    best = min(cands, key=lambda c: (c * a2 - t2) ** 2 + np.sum((ar / c - tr) ** 2))
    out = a.copy()
    out[k] = best * a2
    out[rest] = ar / best
    return out


def _assign(fit_expert, fit_rest_before, fit_rest_after, true_expert, true_before, true_after, kind, d):
    """Cells (nearest true atom in (rest_before, expert, rest_after)) and the aligned fitted expert vectors
    E[i, j] (fit atom i aligned to true atom j)."""
    kf, kt = fit_expert.shape[0], true_expert.shape[0]
    E = np.stack([np.stack([align_scale(kind, d, fit_expert[i], true_expert[j]) for j in range(kt)])
                  for i in range(kf)])
    dist = np.empty((kf, kt))
    for i in range(kf):
        for j in range(kt):
            dist[i, j] = np.sqrt(np.sum((fit_rest_before[i] - true_before[j]) ** 2)
                                 + np.sum((E[i, j] - true_expert[j]) ** 2)
                                 + np.sum((fit_rest_after[i] - true_after[j]) ** 2))
    nearest = np.argmin(dist, axis=1)
    return [np.flatnonzero(nearest == j) for j in range(kt)], E


def _shared_part(p, t, linear: bool, d: int, kind: str | None = None) -> float:
    """Shared-expert terms (masses, single- and multi-atom cells) of D₁ (``linear=False``) or D₂."""
    if "omega" not in t:
        return 0.0
    om, ka, ta = (np.asarray(p[k], float) for k in ("omega", "kappa", "tau"))
    om_s, ka_s, ta_s = (np.asarray(t[k], float) for k in ("omega", "kappa", "tau"))
    total = 0.0
    none_f, none_t = np.zeros((ka.shape[0], 0)), np.zeros((ka_s.shape[0], 0))
    cells, E = _assign(ka, none_f, ta[:, None], ka_s, none_t, ta_s[:, None], kind, d)
    for j, cell in enumerate(cells):
        total += abs(om[cell].sum() - om_s[j])
        dk, dt = E[cell, j] - ka_s[j], np.abs(ta[cell] - ta_s[j])
        if len(cell) == 1:
            if linear:
                term = np.linalg.norm(dk[:, :d], axis=1) + np.abs(dk[:, d]) + dt
            else:
                term = np.linalg.norm(dk, axis=1) + dt
        elif len(cell) > 1:
            if linear:
                r = r_exponent(len(cell))
                term = np.linalg.norm(dk[:, :d], axis=1) ** 2 + np.abs(dk[:, d]) ** r + dt ** (r / 2)
            else:
                term = np.linalg.norm(dk, axis=1) ** 2 + dt ** 2
        else:
            continue
        total += float(np.sum(om[cell] * term))
    return total


def voronoi_loss(kind: str, params: dict, truth: dict, gate: str = "softmax", reference: dict | None = None,
                 shared_expert: str | None = None, routed_expert: str | None = None) -> float:
    """The Voronoi loss ``kind`` ∈ {D1, D2, D3, D4} of one fit (natural parameters, no batch axis)
    against ``truth`` (D₄: the routed part against ``reference`` = Ǧ₂). The expert kinds switch on the
    ReLU rescaling alignment (module docstring)."""
    if kind not in LOSSES:
        raise SpecError("loss", f"got {kind!r}; allowed: {', '.join(LOSSES)}")
    if kind == "D4" and reference is None:
        raise SpecError("reference", "D4 needs the KL projection Ǧ₂ as reference; allowed: a parameter dict")
    d = np.asarray(truth["beta1"]).shape[1]
    p = align_softmax(params, truth) if (gate == "softmax" and kind in ("D1", "D2")) else dict(params)
    total = _shared_part(p, truth, linear=(kind == "D2"), d=d, kind=shared_expert)
    b0, b1, eta, nu = (np.asarray(p[k], float) for k in ("beta0", "beta1", "eta", "nu"))
    ref = reference if kind == "D4" else truth
    s0, s1, seta, snu = (np.asarray(ref[k], float) for k in ("beta0", "beta1", "eta", "nu"))
    cells, E = _assign(eta, b1, nu[:, None], seta, s1, snu[:, None], routed_expert, d)
    for j, cell in enumerate(cells):
        if len(cell) == 0:
            if kind in ("D1", "D2"):
                total += np.exp(s0[j])
            continue
        db1 = np.linalg.norm(b1[cell] - s1[j], axis=1)
        de = E[cell, j] - seta[j]
        dn = np.abs(nu[cell] - snu[j])
        if kind in ("D1", "D2"):
            mass = np.exp(b0[cell])
            total += abs(mass.sum() - np.exp(s0[j]))
            if kind == "D1" or len(cell) == 1:
                dev = np.linalg.norm(de, axis=1) if kind == "D1" else \
                    np.linalg.norm(de[:, :d], axis=1) + np.abs(de[:, d])
                pw = 1 if len(cell) == 1 else 2
                total += float(np.sum(mass * (db1 ** pw + dev ** pw + dn ** pw)))
            else:
                r = r_exponent(len(cell))
                total += float(np.sum(mass * (db1 ** r + np.linalg.norm(de[:, :d], axis=1) ** (r / 2)
                                              + np.abs(de[:, d]) ** r + dn ** (r / 2))))
        elif kind == "D3":
            if len(cell) == 1:
                total += float(db1[0] + abs(b0[cell[0]] - s0[j]) + np.linalg.norm(de[0]) + dn[0])
            else:
                sig = 1.0 / (1.0 + np.exp(-b0[cell]))
                total += abs(sig.sum() - 1.0 / (1.0 + np.exp(-s0[j])))
                total += float(np.sum(db1 ** 2 + np.linalg.norm(de, axis=1) ** 2 + dn ** 2))
        else:  # D4
            total += float(np.sum(db1 + np.abs(b0[cell] - s0[j]) + np.linalg.norm(de, axis=1) + dn))
    return float(total)


def batch_loss(kind: str, params: dict, truth: dict, gate: str = "softmax", reference: dict | None = None,
               shared_expert: str | None = None, routed_expert: str | None = None) -> np.ndarray:
    """:func:`voronoi_loss` for every fit of a batch (leading replication axis)."""
    R = np.asarray(params["beta0"]).shape[0]
    return np.array([voronoi_loss(kind, {k: np.asarray(v)[r] for k, v in params.items()}, truth, gate, reference,
                                  shared_expert, routed_expert) for r in range(R)])


__all__ = ["LOSSES", "r_exponent", "voronoi_cells", "voronoi_loss", "batch_loss", "align_softmax", "align_scale"]
