"""The Python API on raw vectors: exact population loss, its gradient, and gradient flow.

Vectors are rows and need not be unit length; only directions enter the model (SPEC §1).
"""

from __future__ import annotations

import numpy as np
import jax.numpy as jnp

from .errors import SolveError, SpecError
from .gates import get_expert, get_gate
from .init import gram_from_vectors
from .kernel import gram_loss
from .ode import gram_ode, integrate, loss_along
from .trajectory import Trajectory


def _check_vectors(V, W, V_star, W_star):
    arrays = {}
    for name, a in (("V", V), ("W", W), ("V_star", V_star), ("W_star", W_star)):
        a = np.asarray(a, dtype=np.float64)
        if a.ndim != 2:
            raise SpecError(name, f"must be a 2-D array (rows are vectors), got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise SpecError(name, "must be finite (found NaN or inf)")
        zero = np.flatnonzero(np.linalg.norm(a, axis=1) == 0)
        if zero.size:
            raise SpecError(name, f"rows must be non-zero vectors; zero rows: {zero.tolist()}")
        arrays[name] = a
    V, W, Vs, Ws = arrays["V"], arrays["W"], arrays["V_star"], arrays["W_star"]
    if V.shape != W.shape:
        raise SpecError("W", f"must have the shape of V {V.shape}, got {W.shape}")
    if Vs.shape != Ws.shape:
        raise SpecError("W_star", f"must have the shape of V_star {Vs.shape}, got {Ws.shape}")
    if Vs.shape[1] != V.shape[1]:
        raise SpecError("V_star", f"dimension d must match V (d = {V.shape[1]}), got {Vs.shape[1]}")
    if V.shape[0] < 1 or Vs.shape[0] < 1:
        raise SpecError("V", "need at least one student and one teacher expert")
    return V, W, Vs, Ws


def population_loss(V, W, V_star, W_star, gate="sigmoid", expert="he3") -> float:
    """Exact population loss ½E[(f(x) − f⋆(x))²], x ~ N(0, I_d) (SPEC §3), for any teacher."""
    V, W, Vs, Ws = _check_vectors(V, W, V_star, W_star)
    G, _ = gram_from_vectors(V, W, Vs, Ws)
    fn = gram_loss(get_gate(gate, "gate"), get_expert(expert, "expert"), V.shape[0], Vs.shape[0])
    return float(fn.loss(jnp.asarray(G)))


def population_grad(V, W, V_star, W_star, gate="sigmoid", expert="he3"):
    """(∂L/∂V, ∂L/∂W) of :func:`population_loss` with respect to the raw student vectors.

    ∇_{u_p} L = r_p⁻¹ (I − ū_p ū_pᵀ) Σ_k A_pk ū_k with A = ∂L/∂G (SPEC §2).
    """
    V, W, Vs, Ws = _check_vectors(V, W, V_star, W_star)
    m = V.shape[0]
    G, r = gram_from_vectors(V, W, Vs, Ws)
    fn = gram_loss(get_gate(gate, "gate"), get_expert(expert, "expert"), m, Vs.shape[0])
    _, A = fn.loss_and_grad(jnp.asarray(G))
    A = np.asarray(A)
    U = np.concatenate([V, W, Vs, Ws])
    Ubar = U / r[:, None]
    c = np.sum(A * G, axis=1)
    grad = (A @ Ubar - c[:, None] * Ubar) / r[:, None]
    return grad[:m], grad[m:2 * m]


def check_times(times) -> np.ndarray:
    ts = np.asarray(times, dtype=np.float64)
    if ts.ndim != 1 or ts.size < 2:
        raise SpecError("times", f"must be a 1-D array of at least 2 times, got shape {ts.shape}")
    if not np.all(np.isfinite(ts)):
        raise SpecError("times", "must be finite")
    if np.any(np.diff(ts) <= 0):
        raise SpecError("times", "must be strictly increasing")
    return ts


def gradient_flow(V, W, V_star, W_star, times, gate="sigmoid", expert="he3", *, backend="diffrax",
                  method="tsit5", rtol=1e-8, atol=1e-10, max_steps=1_000_000, norms="fixed",
                  state="factor", progress=False) -> Trajectory:
    """Exact gradient flow of the population loss from (V, W), saved at ``times``.

    Integrates the Gram ODE (SPEC §2); the flow starts at ``times[0]``. Returns a
    :class:`~flowmoe.trajectory.Trajectory` whose ``gram`` has shape (len(times), N, N) in the order
    [v̄_1..v̄_m, w̄_1..w̄_m, v̄⋆_1..v̄⋆_m⋆, w̄⋆_1..w̄⋆_m⋆].
    """
    V, W, Vs, Ws = _check_vectors(V, W, V_star, W_star)
    ts = check_times(times)
    G0, r0 = gram_from_vectors(V, W, Vs, Ws)
    return flow_from_gram(G0, r0, V.shape[0], Vs.shape[0], ts, gate, expert, backend=backend,
                          method=method, rtol=rtol, atol=atol, max_steps=max_steps, norms=norms,
                          state=state, progress=progress)


def check_gram(G0, r0, m: int, m_star: int):
    """Check a starting Gram matrix of unit directions and its norms; SpecError names the field."""
    from .spec import _int

    m, m_star = _int(m, "m", 1), _int(m_star, "m_star", 1)
    n = 2 * (m + m_star)
    G0 = np.asarray(G0, dtype=np.float64)
    r0 = np.asarray(r0, dtype=np.float64)
    if G0.shape != (n, n):
        raise SpecError("G0", f"must be {n}×{n} (N = 2(m + m⋆) with m = {m}, m⋆ = {m_star}), got {G0.shape}")
    if r0.shape != (n,):
        raise SpecError("r0", f"must have shape ({n},), got {r0.shape}")
    if not np.all(np.isfinite(G0)):
        raise SpecError("G0", "must be finite (found NaN or inf)")
    if not np.all(np.isfinite(r0)) or np.any(r0 <= 0):
        raise SpecError("r0", "norms must be finite and > 0")
    if np.max(np.abs(G0 - G0.T)) > 1e-10 or np.max(np.abs(np.diag(G0) - 1)) > 1e-10:
        raise SpecError("G0", "must be symmetric with unit diagonal (a Gram matrix of unit directions)")
    lam = np.linalg.eigvalsh(0.5 * (G0 + G0.T))[0]
    if lam < -1e-8:
        raise SpecError("G0", f"must be positive semi-definite (smallest eigenvalue {lam:.3g})")
    return G0, r0, m, m_star


def check_solver_options(backend, method, rtol, atol, max_steps, norms, norm_drift_lr, state):
    """The same checks as :class:`flowmoe.spec.SolverSpec`, for the keyword arguments of the API."""
    from .spec import SolverSpec

    SolverSpec(backend=backend, method=method, rtol=rtol, atol=atol, max_steps=max_steps, norms=norms,
               norm_drift_lr=norm_drift_lr, state=state)


def flow_from_gram(G0, r0, m, m_star, ts, gate="sigmoid", expert="he3", *, backend="diffrax",
                   method="tsit5", rtol=1e-8, atol=1e-10, max_steps=1_000_000, norms="fixed",
                   norm_drift_lr=0.0, state="factor", progress=False) -> Trajectory:
    """Gradient flow from a Gram matrix and norms (the d-free entry point).

    If the solver stops early, raises :class:`SolveError` whose ``partial`` is the Trajectory up
    to the last good saved time (or None if fewer than two times were reached).
    """
    ts = check_times(ts)
    G0, r0, m, m_star = check_gram(G0, r0, m, m_star)
    if backend == "scipy" and method == "tsit5":
        method = "DOP853"  # the scipy counterpart of the default
    check_solver_options(backend, method, rtol, atol, max_steps, norms, norm_drift_lr, state)
    gate, expert = get_gate(gate, "gate"), get_expert(expert, "expert")
    ode = gram_ode(gate, expert, m, m_star, norm_drift_lr)
    meta = {"source": "ode", "gate": gate.convention(), "expert": expert.convention(),
            "time": "gradient-flow time t"}
    try:
        gram, rs, info = integrate(ode, G0, r0, ts, backend=backend, method=method, rtol=rtol, atol=atol,
                                   max_steps=max_steps, norms=norms, progress=progress, state=state)
    except SolveError as err:
        pts, pgram, prs = err.partial
        partial = None
        if len(pts) >= 2:
            partial = Trajectory(pts, pgram, prs, loss_along(ode.loss_fn, pgram), m, m_star,
                                 {**meta, "status": "partial", "error": str(err)})
        raise SolveError(str(err), partial=partial) from None
    meta["solver"] = {**info, "norm_drift_lr": float(norm_drift_lr), "max_steps": int(max_steps)}
    return Trajectory(ts, gram, rs, loss_along(ode.loss_fn, gram), m, m_star, meta)
