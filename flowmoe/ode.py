"""The population-gradient ODE on the Gram matrix (SPEC §2) and its integrators.

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

Backends: diffrax (Tsit5 default, Dopri5, Dopri8; adaptive PID steps) and scipy ``solve_ivp``
(an independent integrator on the same right-hand side).
"""

from __future__ import annotations

import functools
import time

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from scipy.integrate import solve_ivp

from .errors import SolveError
from .kernel import GramLoss, gram_loss


class GramODE:
    """Right-hand side of the Gram ODE for one model structure (build with :func:`gram_ode`)."""

    def __init__(self, gate, expert, m: int, m_star: int, norm_drift_lr: float = 0.0):
        self.loss_fn = gram_loss(gate, expert, m, m_star)
        self.moving = np.asarray(self.loss_fn.layout.moving)
        self.norm_drift_lr = float(norm_drift_lr)

    def velocity(self, G, r):
        """(dG/dt, dr/dt, L) at (G, r)."""
        L, A = self.loss_fn.loss_and_grad(G)
        c = jnp.sum(A * G, axis=1)
        P = A - jnp.diag(c)
        PG = P @ G
        D = -self.moving / r**2
        BG = D[:, None] * PG
        n = G.shape[0]
        dG = (BG + BG.T) * (1.0 - jnp.eye(n, dtype=G.dtype))
        dr = -self.moving * jnp.diagonal(PG) / r
        if self.norm_drift_lr:
            grad_sq = jnp.einsum("pk,kl,pl->p", P, G, P) / r**2
            dr = dr + self.moving * self.norm_drift_lr * grad_sq / (2.0 * r)
        return dG, dr, L

    def __call__(self, t, y, args):
        """Gram-state right-hand side: y = (G, r) → (dG/dt, dr/dt); ``args`` is the norms mode."""
        G, r = y
        dG, dr, _ = self.velocity(G, r)
        if args == "fixed":
            dr = jnp.zeros_like(dr)
        return dG, dr

    def factor_rhs(self, t, y, args):
        """Factor-state right-hand side: y = (X, r) with G = X̂ X̂ᵀ, X̂ = X with unit rows."""
        X, r = y
        Xn = X / jnp.linalg.norm(X, axis=1, keepdims=True)
        G = Xn @ Xn.T
        L, A = self.loss_fn.loss_and_grad(G)
        c = jnp.sum(A * G, axis=1)
        P = A - jnp.diag(c)
        D = -self.moving / r**2
        dX = D[:, None] * (P @ Xn)
        dr = -self.moving * jnp.diagonal(P @ G) / r
        if self.norm_drift_lr:
            grad_sq = jnp.einsum("pk,kl,pl->p", P, G, P) / r**2
            dr = dr + self.moving * self.norm_drift_lr * grad_sq / (2.0 * r)
        if args == "fixed":
            dr = jnp.zeros_like(dr)
        return dX, dr


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
    G = np.einsum("...ik,...jk->...ij", Xn, Xn)
    idx = np.arange(G.shape[-1])
    G[..., idx, idx] = 1.0
    return G


@functools.lru_cache(maxsize=None)
def gram_ode(gate, expert, m: int, m_star: int, norm_drift_lr: float = 0.0) -> GramODE:
    """The (cached) :class:`GramODE` of one structure: one compile per structure and solver."""
    return GramODE(gate, expert, int(m), int(m_star), float(norm_drift_lr))


_SOLVERS = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8}


@functools.lru_cache(maxsize=None)
def _compiled_solver(ode: GramODE, method: str, rtol: float, atol: float, max_steps: int,
                     norms: str, progress: bool, state: str = "factor"):
    solver = _SOLVERS[method]()
    term = diffrax.ODETerm(ode.factor_rhs if state == "factor" else ode)
    meter = diffrax.TqdmProgressMeter(refresh_steps=200) if progress else diffrax.NoProgressMeter()

    @jax.jit
    def solve(G0, r0, ts):
        # Steps land on every save time: saved states are step endpoints, never dense-output
        # interpolants. (Interpolated states left the PSD cone by ~1e-7 near nearly-duplicate
        # students, which made the loss slightly negative.)
        controller = diffrax.PIDController(rtol=rtol, atol=atol, step_ts=ts)
        sol = diffrax.diffeqsolve(
            term, solver, t0=ts[0], t1=ts[-1], dt0=None, y0=(G0, r0), args=norms,
            saveat=diffrax.SaveAt(ts=ts), stepsize_controller=controller, max_steps=max_steps,
            throw=False, progress_meter=meter,
        )
        return sol.ys, sol.result == diffrax.RESULTS.successful, sol.stats
    return solve


def integrate(ode: GramODE, G0, r0, ts, *, backend="diffrax", method="tsit5", rtol=1e-8, atol=1e-10,
              max_steps=1_000_000, norms="fixed", progress=False, state="factor"):
    """Integrate from (G0, r0) and save at ``ts``. Returns (gram, norms, info).

    On failure (max steps, non-finite state) raises :class:`SolveError` whose ``partial`` holds
    ``(ts, gram, norms)`` up to the last good saved time.
    """
    G0 = jnp.asarray(G0, dtype=jnp.float64)
    r0 = jnp.asarray(r0, dtype=jnp.float64)
    ts = np.asarray(ts, dtype=np.float64)
    if state not in ("factor", "gram"):
        raise ValueError(f"solver.state: {state!r}; allowed: ['factor', 'gram']")
    info = {"backend": backend, "method": method, "rtol": rtol, "atol": atol, "norms": norms, "state": state}
    Y0 = jnp.asarray(gram_factor(G0)) if state == "factor" else G0
    t_start = time.perf_counter()
    if backend == "diffrax":
        solve = _compiled_solver(ode, method, float(rtol), float(atol), int(max_steps), norms, bool(progress), state)
        (gram, rs), ok, stats = solve(Y0, r0, jnp.asarray(ts))
        gram, rs, ok = np.asarray(gram), np.asarray(rs), bool(ok)
        info["steps"] = int(stats["num_accepted_steps"])
        info["rejected_steps"] = int(stats["num_rejected_steps"])
        message = "diffrax stopped early (max_steps reached or step size collapsed)"
    elif backend == "scipy":
        gram, rs, ok, message, nfev = _solve_scipy(ode, Y0, r0, ts, method, rtol, atol, norms, state)
        info["rhs_evaluations"] = nfev
    else:
        raise ValueError(f"solver.backend: {backend!r}; allowed: ['diffrax', 'scipy']")
    if state == "factor":
        with np.errstate(invalid="ignore", divide="ignore"):
            gram = gram_of_factor(gram)
    info["wall_time_s"] = time.perf_counter() - t_start
    finite = np.all(np.isfinite(gram), axis=(1, 2)) & np.all(np.isfinite(rs), axis=1)
    good = int(np.argmin(finite)) if not finite.all() else len(ts)
    if not ok or good < len(ts):
        why = message if not ok else "the state became non-finite (NaN/inf)"
        raise SolveError(f"integration failed at t ≈ {ts[max(good - 1, 0)]:.6g}: {why}; "
                         f"{good} of {len(ts)} saved times are kept",
                         partial=(ts[:good], gram[:good], rs[:good]))
    return gram, rs, info


def _solve_scipy(ode: GramODE, G0, r0, ts, method, rtol, atol, norms, state):
    n = G0.shape[0]
    rhs = ode.factor_rhs if state == "factor" else ode

    @jax.jit
    def f(y):
        G = y[: n * n].reshape(n, n)
        r = y[n * n:]
        dG, dr = rhs(0.0, (G, r), norms)
        return jnp.concatenate([dG.ravel(), dr])

    y = np.concatenate([np.asarray(G0).ravel(), np.asarray(r0)])
    Y = np.full((len(ts), y.size), np.nan)
    Y[0] = y
    ok, message, nfev = True, "", 0
    # Segment by segment: every saved value is a step endpoint, not a dense-output interpolant
    # (DOP853's interpolant was off by 7e-6 where its steps were good to 2e-8).
    for k in range(len(ts) - 1):
        res = solve_ivp(lambda t, y: np.asarray(f(jnp.asarray(y))), (ts[k], ts[k + 1]), y, method=method,
                        rtol=rtol, atol=atol)
        nfev += int(res.nfev)
        if not res.success or not np.all(np.isfinite(res.y[:, -1])):
            ok, message = False, res.message if not res.success else "non-finite state"
            break
        y = res.y[:, -1]
        Y[k + 1] = y
    return Y[:, : n * n].reshape(-1, n, n), Y[:, n * n:], ok, message, nfev


LOSS_BLOCK = 64


def loss_along(loss_fn: GramLoss, gram) -> np.ndarray:
    """Population loss at each saved Gram matrix (evaluated in blocks of a fixed size, so any
    number of saved times shares one compiled function)."""
    gram = np.asarray(gram, dtype=np.float64)
    T = gram.shape[0]
    if T == 0:
        return np.zeros(0)
    pad = (-T) % LOSS_BLOCK
    padded = np.concatenate([gram, np.broadcast_to(gram[-1], (pad,) + gram.shape[1:])]) if pad else gram
    fn = _batched_loss(loss_fn)
    out = [np.asarray(fn(jnp.asarray(padded[k:k + LOSS_BLOCK]))) for k in range(0, len(padded), LOSS_BLOCK)]
    return np.concatenate(out)[:T]


@functools.lru_cache(maxsize=None)
def _batched_loss(loss_fn: GramLoss):
    return jax.jit(jax.vmap(loss_fn.loss))
