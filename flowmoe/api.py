"""The Python API on raw vectors: exact population loss, its gradient, and gradient flow.

Vectors are rows and need not be unit length; only directions enter the model (docs/maths.md §1).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import jax.numpy as jnp

from .backends import ExpectationBackend, model_backend
from .errors import SolveError, SpecError
from .init import gram_from_vectors, unit_rows
from .layout import Layout
from .ode import integrate, loss_along, terms_for, vector_field
from .provenance import Provenance
from .spec import SolverSpec
from .trajectory import Trajectory
from .typing import Gram, Norms, Times, Vectors


def _check_vectors(V, W, V_star, W_star):
    arrays = {}
    for name, a in (("V", V), ("W", W), ("V_star", V_star), ("W_star", W_star)):
        try:
            raw = np.asarray(a)
        except (TypeError, ValueError):
            raise SpecError(name, "must be a 2-D array of real numbers (rows of equal length)") from None
        if np.iscomplexobj(raw):
            raise SpecError(name, "must be a real array (complex input is refused, not truncated)")
        if raw.dtype.kind not in "biuf":
            raise SpecError(name, f"must be an array of real numbers, got dtype {raw.dtype}")
        a = raw.astype(np.float64)
        if a.ndim != 2:
            raise SpecError(name, f"must be a 2-D array (rows are vectors), got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise SpecError(name, "must be finite (found NaN or inf)")
        zero = np.flatnonzero(~np.any(a != 0, axis=1))
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


def population_loss(V: Vectors, W: Vectors, V_star: Vectors, W_star: Vectors, gate="sigmoid", expert="he3",
                    model_backend_name="pair") -> float:
    """Exact population loss ½E[(f(x) − f⋆(x))²], x ~ N(0, I_d) (docs/maths.md §3), for any teacher."""
    V, W, Vs, Ws = _check_vectors(V, W, V_star, W_star)
    G, _ = gram_from_vectors(V, W, Vs, Ws)
    fn = model_backend(model_backend_name, gate, expert, V.shape[0], Vs.shape[0])
    return float(fn.loss(jnp.asarray(G)))


def population_grad(V: Vectors, W: Vectors, V_star: Vectors, W_star: Vectors, gate="sigmoid", expert="he3",
                    model_backend_name="pair"):
    """(∂L/∂V, ∂L/∂W) of :func:`population_loss` with respect to the raw student vectors.

    ∇_{u_p} L = r_p⁻¹ (I − ū_p ū_pᵀ) Σ_k A_pk ū_k with A = ∂L/∂G (docs/maths.md §2).
    """
    V, W, Vs, Ws = _check_vectors(V, W, V_star, W_star)
    m = V.shape[0]
    G, r = gram_from_vectors(V, W, Vs, Ws)
    fn = model_backend(model_backend_name, gate, expert, m, Vs.shape[0])
    _, A = fn.loss_and_grad(jnp.asarray(G))
    A = np.asarray(A)
    Ubar, _ = unit_rows(np.concatenate([V, W, Vs, Ws]))
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


def gradient_flow(V: Vectors, W: Vectors, V_star: Vectors, W_star: Vectors, times: Times, gate="sigmoid",
                  expert="he3", *, solver: SolverSpec | None = None, model_backend_name="pair",
                  backend_options: dict | None = None, progress=False, dynamics=None, **solver_options) -> Trajectory:
    """Exact gradient flow of the population loss from (V, W), saved at ``times``.

    Integrates the Gram ODE (docs/maths.md §2); the flow starts at ``times[0]``. The integrator
    settings are ``solver`` (a :class:`~flowmoe.spec.SolverSpec`) or its fields as keywords
    (``backend="diffrax"``, ``method``, ``rtol``, ``atol``, ``max_steps``, ``norms``,
    ``norm_drift_lr``, ``state``). ``model_backend_name`` picks the expectation backend (the
    spec's ``model.backend``). ``dynamics`` (a :class:`~flowmoe.spec.DynamicsSpec`) with method
    ``"online-sgd"`` integrates the online-SGD ODE instead (docs/sgd-ode.md; d = the vectors'
    dimension). Returns a :class:`~flowmoe.trajectory.Trajectory` whose ``gram``
    has shape (len(times), N, N) in the layout of :class:`flowmoe.layout.Layout`.
    """
    V, W, Vs, Ws = _check_vectors(V, W, V_star, W_star)
    ts = check_times(times)
    G0, r0 = gram_from_vectors(V, W, Vs, Ws)
    return flow_from_gram(G0, r0, V.shape[0], Vs.shape[0], ts, gate, expert, solver=solver,
                          model_backend_name=model_backend_name, backend_options=backend_options,
                          progress=progress, dynamics=dynamics, d=V.shape[1], **solver_options)


def check_gram(G0, r0, m: int, m_star: int):
    """Check a starting Gram matrix of unit directions and its norms; SpecError names the field."""
    from .spec import _int

    m, m_star = _int(m, "m", 1), _int(m_star, "m_star", 1)
    n = Layout(m, m_star).n_dirs
    G0 = np.asarray(G0)
    r0 = np.asarray(r0)
    for name, a in (("G0", G0), ("r0", r0)):
        if np.iscomplexobj(a) or a.dtype == object:
            raise SpecError(name, "must be a real array (complex or object arrays are refused)")
    G0, r0 = G0.astype(np.float64), r0.astype(np.float64)
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


def solver_spec(solver: SolverSpec | None = None, **options) -> SolverSpec:
    """A SolverSpec from an object or from its fields as keywords (not both); checked on creation."""
    if solver is not None:
        if options:
            raise SpecError("solver", f"give a SolverSpec or its fields as keywords, not both (got {sorted(options)})")
        if not isinstance(solver, SolverSpec):
            raise SpecError("solver", f"must be a flowmoe.spec.SolverSpec, got {type(solver).__name__}")
        return solver
    if options.get("backend") == "scipy" and options.get("method", "tsit5") == "tsit5":
        options["method"] = "DOP853"  # the scipy counterpart of the default
    try:
        return SolverSpec(**options)
    except TypeError as err:
        raise SpecError("solver", f"{err}; allowed keywords: backend, method, rtol, atol, max_steps, norms, "
                                  "norm_drift_lr, state") from None


def ode_provenance(backend: ExpectationBackend, vf, solver: SolverSpec) -> Provenance:
    sgd = [t for t in vf.describe() if t.get("term") == "online-sgd"]
    gate, expert = getattr(backend, "gate", None), getattr(backend, "expert", None)
    # The registered name and options that built the backend are kept beside its own description, so
    # that vector_field_of can rebuild exactly this backend from a saved trajectory.
    model = {"backend": {**backend.describe(), **getattr(backend, "build", {})}}
    if gate is not None:
        model["gate"] = gate.convention()
    if expert is not None:
        model["expert"] = expert.convention()
    time = (f"t = lr * steps of online SGD (lr = {sgd[0]['lr']:g}, batch = {sgd[0]['batch']}): the online-SGD ODE"
            if sgd else "gradient-flow time t")
    return Provenance(source="ode", model=model, time=time, solver=solver.to_dict(), dynamics=tuple(vf.describe()))


def flow_from_gram(G0: Gram, r0: Norms, m, m_star, ts: Times, gate="sigmoid", expert="he3", *,
                   solver: SolverSpec | None = None, model_backend_name="pair", backend_options: dict | None = None,
                   progress=False, dynamics=None, d: int | None = None, **solver_options) -> Trajectory:
    """Gradient flow from a Gram matrix and norms (the d-free entry point).

    ``dynamics`` with method ``"online-sgd"`` integrates the online-SGD ODE (it needs the input
    dimension ``d``, and a solver with ``state="gram"``, ``norms="state"``).

    If the solver stops early, raises :class:`SolveError` whose ``partial`` is the Trajectory up
    to the last good saved time (or None if fewer than two times were reached); its provenance
    has ``status="partial"`` and the solver statistics.
    """
    ts = check_times(ts)
    G0, r0, m, m_star = check_gram(G0, r0, m, m_star)
    solver = solver_spec(solver, **solver_options)
    backend = model_backend(model_backend_name, gate, expert, m, m_star, backend_options)
    vf = vector_field(backend, terms_for(solver, dynamics, backend=backend, d=d))
    return solve_flow(vf, G0, r0, ts, solver, progress=progress)


def vector_field_of(traj: Trajectory, **solver_overrides):
    """(VectorField, SolverSpec) that produced an ODE trajectory, rebuilt from its provenance.

    Returns ``(None, None)`` when the trajectory is not from the ODE or does not say which model
    made it (e.g. a simulation). The backend is rebuilt from ``provenance.model["backend"]`` (its
    ``name`` and ``options``), the terms from the solver fields (so the norm drift and the norm
    mode come back exactly as they were integrated).
    """
    prov = traj.provenance
    model = prov.model or {}
    if prov.source != "ode" or "gate" not in model or "expert" not in model or "method" not in (prov.solver or {}):
        return None, None
    fields = {f.name for f in dataclasses.fields(SolverSpec)}
    solver = solver_spec(**{**{k: v for k, v in prov.solver.items() if k in fields}, **solver_overrides})
    described = model.get("backend") or {}
    backend = model_backend(described.get("name", "pair"), model["gate"]["name"], model["expert"]["name"],
                            traj.m, traj.m_star, described.get("options") or {})
    dynamics, d = None, None
    for term in prov.dynamics or ():
        if term.get("term") == "online-sgd":  # the online-SGD ODE: its step, batch, d and quadrature
            from .spec import DynamicsSpec

            dynamics = DynamicsSpec("online-sgd", term["lr"], term["batch"], term["points"], term["unit_points"],
                                    term["seed"])
            d = term["d"]
    return vector_field(backend, terms_for(solver, dynamics, backend=backend, d=d)), solver


def solve_flow(vf, G0, r0, ts, solver: SolverSpec, progress=False, provenance: Provenance | None = None) -> Trajectory:
    """Integrate ``vf`` and wrap the result in a Trajectory (partial on failure, see flow_from_gram)."""
    prov = provenance or ode_provenance(vf.backend, vf, solver)
    lay = vf.layout
    try:
        gram, rs, stats = integrate(vf, G0, r0, ts, solver, progress=progress)
    except SolveError as err:
        pts, pgram, prs, stats = err.partial
        partial = None
        if len(pts) >= 2:
            partial = Trajectory(pts, pgram, prs, loss_along(vf.backend, pgram), lay.m, lay.m_star,
                                 prov.replace(status="partial", error=str(err), stats=stats), lay)
        raise SolveError(str(err), partial=partial) from None
    return Trajectory(ts, gram, rs, loss_along(vf.backend, gram), lay.m, lay.m_star, prov.replace(stats=stats), lay)
