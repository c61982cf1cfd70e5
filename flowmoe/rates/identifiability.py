"""Identifiability checks for Gaussian MoE experts ("On DeepSeekMoE: Statistical Benefits of Shared
Experts and Normalized Sigmoid Gating", arXiv 2505.10860, Definition 1 and §2.2).

Symbolic (sympy, exact):

- the heat-equation identity of the Gaussian density π(y|μ, ν) (mean μ, variance ν):
  ∂²π/∂μ² = 2 ∂π/∂ν;
- for linear experts, with F = exp(β₁x + β₀) π(y | η₁x + η₀, ν): ∂F/∂η₁ = ∂²F/∂β₁∂η₀.

Numerical (the strong-identifiability families of Definition 1, evaluated on a grid of x):

- ``family="routed"``: {∂h/∂η_u, ∂²h/∂η_u∂η_v, x ∂h/∂η_v} over the atoms;
- ``family="shared"``: {∂h/∂κ_u} ∪ {∂h/∂κ_u ∂h/∂κ_v, 1} over the atoms (the two sets tested separately).

Functions that vanish identically on the grid (e.g. second derivatives of linear or ReLU experts) are
left out, exact duplicates are kept (they are the dependencies that matter). The family is full rank
when the numerical rank of the matrix of its functions on the grid (SVD, relative threshold ``rtol``)
equals the number of functions.

Outer weights. An FFN expert h = η₂ g(η₁ᵀx + η₀) is linear in η₂, so ∂²h/∂η₁∂η₂ = ∂h/∂η₁ / η₂ and the
routed family on the raw parameters is never independent; for ReLU, positive homogeneity
(η₂ReLU(z) = cη₂ReLU(z/c), c > 0) also gives η₁·∂h/∂η₁ + η₀ ∂h/∂η₀ = η₂ ∂h/∂η₂. The default
``quotient=True`` reads Definition 1 on the parameters modulo that redundancy by holding the outer
weight η₂ fixed; there the ReLU and GELU FFN families are full rank and the linear ones are not
(``quotient=False`` shows the raw deficiency).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp

from ..errors import SpecError
from .models import EXPERTS, expert_apply, expert_size


def heat_identity() -> sp.Expr:
    """∂²π/∂μ² − 2∂π/∂ν, simplified (0 exactly)."""
    y, mu = sp.symbols("y mu", real=True)
    nu = sp.symbols("nu", positive=True)
    pi = sp.exp(-(y - mu) ** 2 / (2 * nu)) / sp.sqrt(2 * sp.pi * nu)
    return sp.simplify(sp.diff(pi, mu, 2) - 2 * sp.diff(pi, nu))


def linear_gate_expert_identity() -> sp.Expr:
    """∂F/∂η₁ − ∂²F/∂β₁∂η₀ for F = exp(β₁x + β₀)π(y|η₁x + η₀, ν), simplified (0 exactly)."""
    x, y, b0, b1, e0, e1 = sp.symbols("x y beta0 beta1 eta0 eta1", real=True)
    nu = sp.symbols("nu", positive=True)
    mu = e1 * x + e0
    F = sp.exp(b1 * x + b0) * sp.exp(-(y - mu) ** 2 / (2 * nu)) / sp.sqrt(2 * sp.pi * nu)
    return sp.simplify(sp.diff(F, e1) - sp.diff(F, b1, e0))


def _outer_index(kind: str, d: int) -> int | None:
    return {"relu": d + 1, "relu0": d, "gelu0": d}.get(kind)


def family_matrix(kind: str, atoms, family: str = "routed", x=None, quotient: bool = True):
    """The functions of the strong-identifiability family on the grid ``x`` (n, d), as columns.

    Returns a list of matrices (one per set that must be linearly independent)."""
    if kind not in EXPERTS:
        raise SpecError("expert", f"got {kind!r}; allowed: {', '.join(EXPERTS)}")
    if family not in ("routed", "shared"):
        raise SpecError("family", f"got {family!r}; allowed: routed, shared")
    atoms = np.atleast_2d(np.asarray(atoms, dtype=np.float64))
    x = jnp.linspace(-3.0, 3.0, 601)[:, None] if x is None else jnp.asarray(x, dtype=jnp.float64)
    d = x.shape[1]
    p = expert_size(kind, d)
    if atoms.shape[1] != p:
        raise SpecError("atoms", f"rows of length {atoms.shape[1]}; allowed: {p} for a {kind} expert in d = {d}")
    free = [u for u in range(p) if not (quotient and u == _outer_index(kind, d))]
    sets = [[], []] if family == "shared" else [[]]
    for a in atoms:
        a = jnp.asarray(a)
        J = jax.jacfwd(lambda q: expert_apply(kind, x, q))(a)[:, free]  # (n, f)
        if family == "routed":
            H = jax.jacfwd(jax.jacfwd(lambda q: expert_apply(kind, x, q)))(a)[:, free][:, :, free]
            cols = [J[:, u] for u in range(len(free))]
            cols += [H[:, u, v] for u in range(len(free)) for v in range(u, len(free))]
            cols += [x[:, k] * J[:, v] for k in range(d) for v in range(len(free))]
            sets[0] += cols
        else:
            sets[0] += [J[:, u] for u in range(len(free))]
            sets[1] += [J[:, u] * J[:, v] for u in range(len(free)) for v in range(u, len(free))]
    if family == "shared":
        sets[1].append(jnp.ones(x.shape[0]))
    out = []
    for cols in sets:
        M = np.stack([np.asarray(c) for c in cols], axis=1)
        scale = np.abs(M).max() or 1.0
        keep = np.linalg.norm(M, axis=0) > 1e-12 * scale * np.sqrt(M.shape[0])
        out.append(M[:, keep])
    return out


def rank_test(kind: str, atoms, family: str = "routed", x=None, quotient: bool = True, rtol: float = 1e-9) -> dict:
    """Numerical rank of each set of the family; ``full_rank`` if every set is linearly independent."""
    sets = family_matrix(kind, atoms, family, x, quotient)
    res = []
    for M in sets:
        s = np.linalg.svd(M / np.linalg.norm(M, axis=0), compute_uv=False)
        rank = int(np.sum(s > rtol * s[0]))
        res.append({"functions": int(M.shape[1]), "rank": rank, "smallest_singular_value": float(s[-1])})
    return {"expert": kind, "family": family, "quotient": quotient, "sets": res,
            "full_rank": all(r["rank"] == r["functions"] for r in res)}


__all__ = ["heat_identity", "linear_gate_expert_identity", "family_matrix", "rank_test"]
