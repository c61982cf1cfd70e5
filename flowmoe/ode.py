"""The population-gradient ODE on the Gram matrix (docs/maths.md §2) and its integrators.

With r_p = ‖u_p‖, A_pq = ∂L/∂G_pq (each unordered pair once, A_pp = 0) and c_p = Σ_k A_pk G_pk,

    dū_p/dt = −r_p⁻² (Σ_k A_pk ū_k − c_p ū_p)   (students; teachers do not move),
    dG/dt   = B G + (B G)ᵀ,  B = −diag(moving / r²) (A − diag(c)),

so the cost does not depend on d. Norms: exact gradient flow conserves them (``norms="fixed"``).
With ``norms="state"`` they are integrated as well, dr_p/dt = −ū_pᵀ∇_{u_p}L (zero up to round-off)
plus, if ``norm_drift_lr = η > 0``, the leading-order growth of discrete gradient descent with
step η: d(r_p²)/dt = η‖∇_{u_p}L‖².

State (``state=``):

- ``"factor"`` (default): the unit directions are carried as rows of an N×N factor X in an
  orthonormal basis of their span (X X^T = G), dX = B X. The cost is the same and still independent
  of d, G stays positive semi-definite by construction, and the angle between two nearly parallel
  directions is resolved to the integrator's tolerance ε. (With the Gram matrix itself as the state
  an angle δ is encoded in 1 − G_ij ≈ δ²/2 and resolved only to √ε: on paper-fig1 at rtol = 1e-8
  the loss then stalls at ≈ 2e-7 once redundant students form cancelling pairs, against ≈ 1e-14
  with the factor.) Row norms are renormalised whenever G is formed.
- ``"gram"``: G itself, dG/dt = B G + (B G)^T, kept as an independent cross-check.

Saved states are always step endpoints (diffrax: the step-size controller lands on every save
time; scipy: one solve per interval between save times), never dense-output interpolants.

Integrators: diffrax (Tsit5 default, Dopri5, Dopri8; adaptive PID steps) and scipy ``solve_ivp``
(an independent integrator on the same right-hand side). The vector field is a sum of terms
(:mod:`flowmoe.terms`) over an expectation backend (:mod:`flowmoe.backends`); the integrator
settings are one :class:`~flowmoe.spec.SolverSpec`.
"""

from __future__ import annotations

import functools
import time

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from scipy.integrate import solve_ivp

from .backends import ExpectationBackend, make_backend
from .errors import SolveError, SpecError
from .layout import Layout
from .spec import SolverSpec
from .terms import GradientFlow, NormDrift, Term, context


class VectorField:
    """The right-hand side: a sum of :class:`~flowmoe.terms.Term` over one expectation backend.

    Build with :func:`vector_field` (cached). ``velocity(G, r)`` gives the Gram-form velocity;
    :meth:`diffrax_term` the ``MultiTerm`` (one ``ODETerm`` per term) for the chosen state.
    """

    def __init__(self, backend: ExpectationBackend, terms: tuple[Term, ...]):
        self.backend = backend
        self.terms = tuple(terms)
        self.layout: Layout = backend.layout

    @property
    def key(self) -> tuple:
        return (self.backend.key, tuple(t.key for t in self.terms))

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, VectorField) and self.key == other.key

    def describe(self) -> list[dict]:
        return [t.describe() for t in self.terms]

    def velocity(self, G, r):
        """(dG/dt, dr/dt, L) at (G, r), summed over the terms."""
        ctx = context(self.backend, G, r)
        dG, dr = jnp.zeros_like(G), jnp.zeros_like(r)
        for term in self.terms:
            g, q = term.gram_velocity(ctx)
            dG, dr = dG + g, dr + q
        return dG, dr, ctx.L

    def _term_rhs(self, term: Term, state: str):
        if state == "factor":
            def rhs(t, y, args):
                X, r = y
                Xn = X / jnp.linalg.norm(X, axis=1, keepdims=True)
                return term.factor_velocity(context(self.backend, Xn @ Xn.T, r, Xn))
        else:
            def rhs(t, y, args):
                G, r = y
                return term.gram_velocity(context(self.backend, G, r))
        return rhs

    def rhs(self, state: str = "factor"):
        """The summed right-hand side ``f(t, y, args)`` for ``state`` ("factor": y = (X, r); "gram": y = (G, r))."""
        parts = [self._term_rhs(t, state) for t in self.terms]

        def f(t, y, args):
            out = [p(t, y, args) for p in parts]
            return jax.tree_util.tree_map(lambda *a: sum(a), *out)
        return f

    def diffrax_term(self, state: str = "factor"):
        """``MultiTerm`` of one ``ODETerm`` per term (a single ``ODETerm`` if there is one term)."""
        odes = [diffrax.ODETerm(self._term_rhs(t, state)) for t in self.terms]
        return odes[0] if len(odes) == 1 else diffrax.MultiTerm(*odes)


def terms_for(solver: SolverSpec, dynamics=None, *, backend: ExpectationBackend | None = None,
              d: int | None = None) -> tuple[Term, ...]:
    """The terms a solver specification and a :class:`~flowmoe.spec.DynamicsSpec` ask for: gradient
    flow, plus the GD norm drift if ``solver.norm_drift_lr`` is set, plus the online-SGD term
    (:class:`~flowmoe.online_sgd.OnlineSGD`, which needs the ``backend``'s structure and the input
    dimension ``d``) if ``dynamics.method = "online-sgd"``."""
    if dynamics is not None and dynamics.online_sgd:
        from .online_sgd import OnlineSGD

        if backend is None or d is None:
            raise SpecError("dynamics.method", "online-sgd needs the model structure and model.d")
        if solver.state != "gram" or solver.norms != "state":
            raise SpecError("solver.state", "dynamics.method = 'online-sgd' needs solver.state = 'gram' and "
                                            "solver.norms = 'state'")
        return (GradientFlow(norms="state"),
                OnlineSGD(backend.gate.name, backend.expert.name, backend.layout, int(d), float(dynamics.lr),
                          int(dynamics.batch), dynamics.points, dynamics.unit_points, dynamics.seed))
    terms = [GradientFlow(norms=solver.norms)]
    if solver.norm_drift_lr > 0:
        terms.append(NormDrift(float(solver.norm_drift_lr)))
    return tuple(terms)


@functools.lru_cache(maxsize=None)
def vector_field(backend: ExpectationBackend, terms: tuple[Term, ...]) -> VectorField:
    """The (cached) :class:`VectorField` of a backend and terms: one compile per structure and solver."""
    return VectorField(backend, terms)


def gram_ode(gate, expert, m: int, m_star: int, norm_drift_lr: float = 0.0, norms: str = "fixed") -> VectorField:
    """Convenience: the vector field of the exact pair engine for (gate, expert, m, m⋆)."""
    backend = make_backend("pair", gate, expert, Layout(int(m), int(m_star)))
    solver = SolverSpec(norms="state" if norm_drift_lr else norms, norm_drift_lr=norm_drift_lr)
    return vector_field(backend, terms_for(solver))


def gram_factor(G) -> np.ndarray:
    """X with unit rows and X Xᵀ = G (eigen-decomposition; tiny negative eigenvalues clipped)."""
    G = np.asarray(G, dtype=np.float64)
    w, Q = np.linalg.eigh(0.5 * (G + G.T))
    X = Q * np.sqrt(np.clip(w, 0.0, None))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def gram_of_factor(X) -> np.ndarray:
    """Unit-diagonal Gram matrices of factors X (..., N, k)."""
    X = np.asarray(X)
    Xn = X / np.linalg.norm(X, axis=-1, keepdims=True)
    G = Xn @ np.swapaxes(Xn, -1, -2)  # batched BLAS (np.einsum here was a Python-speed loop: 2.3 s of a 24 s m = 64 solve)
    idx = np.arange(G.shape[-1])
    G[..., idx, idx] = 1.0
    return G


_SOLVERS = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8}


def _solve_fn(vf: VectorField, method: str, rtol: float, atol: float, max_steps: int, progress: bool,
              state: str = "factor"):
    """The (un-jitted) solve ``(Y0, r0, ts) -> (ys, ok, stats)`` of one member."""
    solver = _SOLVERS[method]()
    term = vf.diffrax_term(state)
    meter = diffrax.TqdmProgressMeter(refresh_steps=200) if progress else diffrax.NoProgressMeter()

    def solve(Y0, r0, ts):
        # Steps land on every save time: saved states are step endpoints, never dense-output
        # interpolants. (Interpolated states left the PSD cone by ~1e-7 near nearly-duplicate
        # students, which made the loss slightly negative.)
        controller = diffrax.PIDController(rtol=rtol, atol=atol, step_ts=ts)
        sol = diffrax.diffeqsolve(
            term, solver, t0=ts[0], t1=ts[-1], dt0=None, y0=(Y0, r0),
            saveat=diffrax.SaveAt(ts=ts), stepsize_controller=controller, max_steps=max_steps,
            throw=False, progress_meter=meter,
        )
        return sol.ys, sol.result == diffrax.RESULTS.successful, sol.stats
    return solve


@functools.lru_cache(maxsize=None)
def _compiled_solver(vf: VectorField, method: str, rtol: float, atol: float, max_steps: int,
                     progress: bool, state: str = "factor"):
    return jax.jit(_solve_fn(vf, method, rtol, atol, max_steps, progress, state))


@functools.lru_cache(maxsize=None)
def _compiled_batch_solver(vf: VectorField, method: str, rtol: float, atol: float, max_steps: int,
                           state: str = "factor"):
    """One ``vmap``ped solve of many members (own initial states, shared save times). Every member
    keeps its own adaptive steps; the batch runs until its slowest member is done. ``throw=False``:
    each member's result code comes back (``ok``), a failing member does not stop the others."""
    return jax.jit(jax.vmap(_solve_fn(vf, method, rtol, atol, max_steps, False, state), in_axes=(0, 0, None)))


def integrate_batch(vf: VectorField, G0s, r0s, ts, solver: SolverSpec | None = None):
    """Integrate B members from (G0s[b], r0s[b]) in one vmapped diffrax solve, saved at the shared ``ts``.

    Returns ``(gram, norms, ok, stats)``: arrays (B, T, N, N) and (B, T, N), ``ok`` (B,) False for
    a member that stopped early (max steps, collapsed step size) or became non-finite, and one
    stats dict per member (steps, rejected steps; the wall time is the batch's). Never raises for a
    failing member: the caller decides (a sweep re-runs it alone, :func:`flowmoe.sweep.run_sweep`).
    """
    solver = SolverSpec() if solver is None else solver
    if solver.backend != "diffrax":
        raise SpecError("solver.backend", f"batched solves need the diffrax backend, got {solver.backend!r}")
    ts = np.asarray(ts, dtype=np.float64)
    G0s = np.asarray(G0s, dtype=np.float64)
    state = solver.state
    Y0s = np.stack([gram_factor(G) for G in G0s]) if state == "factor" else G0s
    t_start = time.perf_counter()
    solve = _compiled_batch_solver(vf, solver.method, solver.rtol, solver.atol, solver.max_steps, state)
    (gram, rs), ok, st = solve(jnp.asarray(Y0s), jnp.asarray(r0s, dtype=jnp.float64), jnp.asarray(ts))
    gram, rs, ok = np.asarray(gram), np.asarray(rs), np.asarray(ok)
    if state == "factor":
        with np.errstate(invalid="ignore", divide="ignore"):
            gram = gram_of_factor(gram)
    wall = time.perf_counter() - t_start
    ok = ok & np.all(np.isfinite(gram), axis=(1, 2, 3)) & np.all(np.isfinite(rs), axis=(1, 2))
    acc, rej = np.asarray(st["num_accepted_steps"]), np.asarray(st["num_rejected_steps"])
    stats = [{"steps": int(a), "rejected_steps": int(b), "wall_time_s": wall} for a, b in zip(acc, rej)]
    return gram, rs, ok, stats


def integrate(vf: VectorField, G0, r0, ts, solver: SolverSpec | None = None, progress: bool = False):
    """Integrate from (G0, r0) and save at ``ts`` with the settings of ``solver``.

    Returns ``(gram, norms, stats)``, stats with the steps taken (diffrax: accepted and rejected;
    scipy: RHS evaluations) and the wall time. On failure (max steps, non-finite state) raises
    :class:`SolveError` whose ``partial`` holds ``(ts, gram, norms, stats)`` up to the last good
    saved time.
    """
    solver = SolverSpec() if solver is None else solver
    G0 = jnp.asarray(G0, dtype=jnp.float64)
    r0 = jnp.asarray(r0, dtype=jnp.float64)
    ts = np.asarray(ts, dtype=np.float64)
    state = solver.state
    Y0 = jnp.asarray(gram_factor(G0)) if state == "factor" else G0
    stats = {}
    t_start = time.perf_counter()
    if solver.backend == "diffrax":
        solve = _compiled_solver(vf, solver.method, solver.rtol, solver.atol, solver.max_steps, bool(progress), state)
        (gram, rs), ok, st = solve(Y0, r0, jnp.asarray(ts))
        gram, rs, ok = np.asarray(gram), np.asarray(rs), bool(ok)
        stats["steps"] = int(st["num_accepted_steps"])
        stats["rejected_steps"] = int(st["num_rejected_steps"])
        message = (f"diffrax stopped early (max_steps = {solver.max_steps} reached or the step size collapsed)")
    else:
        gram, rs, ok, message, nfev, nsteps = _solve_scipy(vf, Y0, r0, ts, solver)
        stats["rhs_evaluations"] = nfev
        stats["steps"] = nsteps
    if state == "factor":
        with np.errstate(invalid="ignore", divide="ignore"):
            gram = gram_of_factor(gram)
    stats["wall_time_s"] = time.perf_counter() - t_start
    finite = np.all(np.isfinite(gram), axis=(1, 2)) & np.all(np.isfinite(rs), axis=1)
    good = int(np.argmin(finite)) if not finite.all() else len(ts)
    if not ok or good < len(ts):
        why = message if not ok else "the state became non-finite (NaN/inf)"
        raise SolveError(f"integration failed at t ≈ {ts[max(good - 1, 0)]:.6g}: {why}; "
                         f"{good} of {len(ts)} saved times are kept",
                         partial=(ts[:good], gram[:good], rs[:good], stats),
                         reason="budget" if not ok and "non-finite" not in message else "nonfinite")
    return gram, rs, stats


IMPLICIT_SCIPY = ("Radau", "LSODA")
"""scipy methods that use the Jacobian: they get the exact one, by forward-mode autodiff of the flat
right-hand side (a finite-difference Jacobian costs one evaluation per state entry each time)."""


@functools.lru_cache(maxsize=None)
def _flat_jac(vf: VectorField, state: str, n: int):
    jac = jax.jit(jax.jacfwd(_flat_rhs(vf, state, n)))

    def J(t, y):
        return np.asarray(jac(jnp.asarray(y)))
    return J


@functools.lru_cache(maxsize=None)
def _flat_rhs(vf: VectorField, state: str, n: int):
    rhs = vf.rhs(state)

    @jax.jit
    def f(y):
        Y = y[: n * n].reshape(n, n)
        r = y[n * n:]
        dY, dr = rhs(0.0, (Y, r), None)
        return jnp.concatenate([dY.ravel(), dr])
    return f


def _solve_scipy(vf: VectorField, Y0, r0, ts, solver: SolverSpec):
    n = Y0.shape[0]
    f = _flat_rhs(vf, solver.state, n)  # compiled once per structure, not per call
    y = np.concatenate([np.asarray(Y0).ravel(), np.asarray(r0)])
    Y = np.full((len(ts), y.size), np.nan)
    Y[0] = y
    ok, message, nfev, nsteps = True, "", 0, 0
    # Segment by segment: every saved value is a step endpoint, not a dense-output interpolant
    # (DOP853's interpolant was off by 7e-6 where its steps were good to 2e-8). ``max_steps``
    # bounds the RHS evaluations over the whole solve (scipy counts evaluations, not steps).
    implicit = {"jac": _flat_jac(vf, solver.state, n)} if solver.method in IMPLICIT_SCIPY else {}
    for k in range(len(ts) - 1):
        budget = solver.max_steps - nfev
        count = [0]

        def fun(t, y):
            count[0] += 1
            if count[0] > budget:
                raise _Budget()
            return np.asarray(f(jnp.asarray(y)))
        try:
            res = solve_ivp(fun, (ts[k], ts[k + 1]), y, method=solver.method, rtol=solver.rtol, atol=solver.atol,
                            **implicit)
        except _Budget:
            nfev += count[0] - 1
            ok, message = False, f"scipy stopped early (max_steps = {solver.max_steps} right-hand-side evaluations reached)"
            break
        nfev += int(res.nfev)
        nsteps += max(len(res.t) - 1, 0)
        if not res.success or not np.all(np.isfinite(res.y[:, -1])):
            ok, message = False, res.message if not res.success else "non-finite state"
            break
        y = res.y[:, -1]
        Y[k + 1] = y
    return Y[:, : n * n].reshape(-1, n, n), Y[:, n * n:], ok, message, nfev, nsteps


class _Budget(Exception):
    pass


LOSS_BLOCK = 64


def loss_along(backend: ExpectationBackend, gram) -> np.ndarray:
    """Population loss at each saved Gram matrix (evaluated in blocks of a fixed size, so any
    number of saved times shares one compiled function)."""
    gram = np.asarray(gram, dtype=np.float64)
    T = gram.shape[0]
    if T == 0:
        return np.zeros(0)
    pad = (-T) % LOSS_BLOCK
    padded = np.concatenate([gram, np.broadcast_to(gram[-1], (pad,) + gram.shape[1:])]) if pad else gram
    fn = _batched_loss(backend)
    out = [np.asarray(fn(jnp.asarray(padded[k:k + LOSS_BLOCK]))) for k in range(0, len(padded), LOSS_BLOCK)]
    return np.concatenate(out)[:T]


@functools.lru_cache(maxsize=None)
def _batched_loss(backend: ExpectationBackend):
    return jax.jit(jax.vmap(backend.loss))
