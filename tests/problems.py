"""A table of small gradient-flow problems with independently known answers (STYLE: problem tables).

Each problem gives a start (G0, r0, m, m⋆, gate, expert), save times, and a reference Gram path
computed WITHOUT flowmoe's vector field or integrators:

- ``reduced-1x1``: one student, one teacher; the five overlaps (α, β, μ, ν, ρ) integrated with
  scipy from the sympy reduced system (built by differentiating a symbolic 4×4 Gram, not by the
  vectorised engine);
- ``raw-flow-d12``: m = 2, m⋆ = 1 in R^12, gradient flow on the raw vectors (scipy DOP853 with the
  raw-vector gradient), then the Gram matrix of the result;
- ``global-minimum``: student 1 equals the teacher and students 2, 3 form a cancelling pair
  (v̄₂ = v̄₃, w̄₃ = −w̄₂, so their outputs cancel exactly): f = f⋆, L = 0 and ∇L = 0, so G(t) = G(0).

Every accepted integrator (diffrax Tsit5/Dopri5/Dopri8 and scipy DOP853/RK45/Radau/LSODA, factor
and Gram states) must reproduce each reference within ``atol`` at rtol = 1e-10.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import sympy as sp
from scipy.integrate import solve_ivp


@dataclass(frozen=True)
class Problem:
    name: str
    G0: np.ndarray
    r0: np.ndarray
    m: int
    m_star: int
    ts: np.ndarray
    reference: np.ndarray  # (T, N, N)
    atol: float
    gate: str = "sigmoid"
    expert: str = "he3"


def _unit(v):
    return v / np.linalg.norm(v)


def _gram(U):
    U = U / np.linalg.norm(U, axis=1, keepdims=True)
    G = U @ U.T
    np.fill_diagonal(G, 1.0)
    return G


@functools.cache
def reduced_1x1() -> Problem:
    from flowmoe import symbolic
    from flowmoe.correlation import correlation_table
    from flowmoe.gates import get_expert

    rs = symbolic.reduced_system(get_expert("he3"))
    table = correlation_table("sigmoid", 7)
    args = [symbolic.ALPHA, symbolic.BETA, symbolic.MU, symbolic.NU, symbolic.RHO_S]
    fns = []
    for e in rs.rhs:
        atoms = sorted(e.atoms(symbolic.R), key=str)
        syms = [sp.Symbol(f"r{k}") for k in range(len(atoms))]
        f = sp.lambdify(args + syms, e.xreplace(dict(zip(atoms, syms))), "numpy")
        # each atom R_{p,q}(arg): arg is ρ_ac of its pair (α for student–teacher, 1 for the self term)
        fns.append((f, [(int(a.args[0]), int(a.args[1]), sp.lambdify(args, a.args[2], "numpy")) for a in atoms]))

    def rhs(t, x):
        return [f(*x, *[table.evaluate_numpy(p, q, float(arg(*x))) for p, q, arg in pq]) for f, pq in fns]

    x0 = np.array([0.05, 0.3, 0.02, -0.03, 0.01])  # α, β, μ, ν, ρ
    ts = np.linspace(0.0, 3.0, 3)
    sol = solve_ivp(rhs, (0, ts[-1]), x0, method="DOP853", rtol=1e-12, atol=1e-14, t_eval=ts)
    assert sol.success

    def gram(a, b, mu, nu, rho):  # blocks [v̄, w̄, v⋆, w⋆]
        return np.array([[1, rho, a, mu], [rho, 1, nu, b], [a, nu, 1, 0], [mu, b, 0, 1.0]])
    ref = np.stack([gram(*sol.y[:, k]) for k in range(len(ts))])
    return Problem("reduced-1x1", ref[0], np.ones(4), 1, 1, ts, ref, atol=1e-7)


@functools.cache
def raw_flow_d12() -> Problem:
    import flowmoe

    rng = np.random.default_rng(11)
    m, ms, d = 2, 1, 12
    Q, _ = np.linalg.qr(rng.standard_normal((d, 2)))
    Vs, Ws = Q[:, :1].T, Q[:, 1:].T
    V = rng.standard_normal((m, d)) / np.sqrt(d)
    W = rng.standard_normal((m, d)) / np.sqrt(d)
    W[0] += 0.6 * Ws[0]  # start with a visible signal so the flow moves in a short time
    ts = np.linspace(0.0, 4.0, 3)

    def rhs(t, y):
        gV, gW = flowmoe.population_grad(y[:m * d].reshape(m, d), y[m * d:].reshape(m, d), Vs, Ws)
        return -np.concatenate([gV.ravel(), gW.ravel()])
    sol = solve_ivp(rhs, (0, ts[-1]), np.concatenate([V.ravel(), W.ravel()]), method="DOP853",
                    rtol=1e-12, atol=1e-14, t_eval=ts)
    assert sol.success
    ref = np.stack([_gram(np.concatenate([sol.y[:m * d, k].reshape(m, d), sol.y[m * d:, k].reshape(m, d), Vs, Ws]))
                    for k in range(len(ts))])
    r0 = np.concatenate([np.linalg.norm(V, axis=1), np.linalg.norm(W, axis=1), [1.0, 1.0]])
    return Problem("raw-flow-d12", ref[0], r0, m, ms, ts, ref, atol=1e-7)


@functools.cache
def global_minimum() -> Problem:
    rng = np.random.default_rng(5)
    d = 8
    Q, _ = np.linalg.qr(rng.standard_normal((d, 4)))
    vs, ws, a, b = Q.T
    V = np.stack([vs, a, a])
    W = np.stack([ws, b, -b])
    G0 = _gram(np.concatenate([V, W, vs[None], ws[None]]))
    ts = np.linspace(0.0, 5.0, 3)
    return Problem("global-minimum", G0, np.ones(8), 3, 1, ts, np.stack([G0] * len(ts)), atol=1e-9)


PROBLEMS = {"reduced-1x1": reduced_1x1, "raw-flow-d12": raw_flow_d12, "global-minimum": global_minimum}

# Every integrator configuration flowmoe accepts (solver fields).
INTEGRATORS = {
    "diffrax-tsit5": dict(backend="diffrax", method="tsit5"),
    "diffrax-dopri5": dict(backend="diffrax", method="dopri5"),
    "diffrax-dopri8": dict(backend="diffrax", method="dopri8"),
    "diffrax-tsit5-gram": dict(backend="diffrax", method="tsit5", state="gram"),
    "scipy-DOP853": dict(backend="scipy", method="DOP853"),
    "scipy-RK45": dict(backend="scipy", method="RK45"),
    "scipy-Radau": dict(backend="scipy", method="Radau"),
    "scipy-LSODA": dict(backend="scipy", method="LSODA"),
    "scipy-DOP853-gram": dict(backend="scipy", method="DOP853", state="gram"),
}
