"""Maximum-likelihood fits of a :class:`~flowmoe.rates.models.GaussianMoE`, batched over replications.

Two methods, which must reach the same optimum (tested):

- ``direct`` (default): BFGS (optimistix) on the mean negative log-likelihood in unconstrained
  coordinates (log-weights, log-variances); stops when successive iterates and objective values change
  by less than ``tol`` (absolute + relative, max-norm), or after ``max_steps`` iterations.
- ``em``: expectation–maximisation as in the papers, for linear experts: responsibilities; closed-form
  updates of the shared weights ω, of each expert (weighted least squares) and of each variance; the
  gating parameters by ``newton_steps`` Newton (IRLS) steps on Σ rᵢⱼ log gⱼ(xᵢ) per iteration (the
  pseudo-inverse handles the softmax's translation invariance). Stops when the mean log-likelihood
  changes by less than ``tol`` between iterations, or after ``max_steps`` iterations.

Both are written for one data set and ``jax.vmap``-ed over a leading replication axis; inside a batch a
fit that does not converge is reported (``converged = False``), never raised.

Initialisation near the truth (:func:`init_near_truth`), as in the papers' experiments: the fitted
model's k atoms are the k⋆ true atoms with the extra atoms given to true atoms in turn (atom 0, 1, …);
an atom split into c copies shares its mass (ω/c for shared atoms, β₀ − log c for softmax-routed
atoms; normalised-sigmoid atoms keep β₀); then every unconstrained coordinate (log ω, κ, log τ, β₁,
β₀, η, log ν) gets independent N(0, ``scale``²) noise from a seeded numpy generator (``scale = 0`` starts at the
truth when k = k⋆).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from ..errors import SpecError
from .models import GaussianMoE, from_unconstrained, to_unconstrained

METHODS = ("direct", "em")


@dataclasses.dataclass
class FitResult:
    """A batch of fits: natural parameters with a leading replication axis, and per-fit reports."""

    params: dict
    steps: np.ndarray
    converged: np.ndarray
    loglik: np.ndarray  # mean log-likelihood (1/n) Σ log f(yᵢ|xᵢ) at the returned parameters
    method: str

    def report(self) -> list[dict]:
        return [{"steps": int(s), "converged": bool(c), "loglik": float(ll)}
                for s, c, ll in zip(self.steps, self.converged, self.loglik)]


def assign_atoms(k_true: int, k_fit: int) -> np.ndarray:
    """For each fitted atom, the true atom it starts from: 0..k⋆−1, then extra atoms to 0, 1, … in turn."""
    if k_fit < k_true:
        raise SpecError("k", f"fitted atoms {k_fit} < true atoms {k_true}; allowed: k ≥ k⋆")
    return np.array(list(range(k_true)) + [i % k_true for i in range(k_fit - k_true)], dtype=int)


def init_near_truth(model: GaussianMoE, truth: dict, seed: int = 0, scale: float = 0.1,
                    reps: int | None = None) -> dict:
    """Starting points (natural parameters, numpy) for the fitted ``model`` from the true parameters.

    ``truth`` has k⋆ atoms (read from its array shapes); see the module docstring for the rule. The
    noise comes from ``numpy.random.default_rng(seed)``; with ``reps`` the result has a leading axis
    of that many independently perturbed starts (drawn in order from the same generator).
    """
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale >= 0):
        raise SpecError("init_scale", f"got {scale!r}; allowed: a finite number ≥ 0")
    truth = {k: np.asarray(v, dtype=np.float64) for k, v in truth.items()}
    rng = np.random.default_rng(seed)
    k2s = truth["beta0"].shape[0]
    a2 = assign_atoms(k2s, model.k2)
    c2 = np.bincount(a2, minlength=k2s)[a2]
    u = {"beta1": truth["beta1"][a2], "eta": truth["eta"][a2], "log_nu": np.log(truth["nu"][a2]),
         "beta0": truth["beta0"][a2] - (np.log(c2) if model.gate == "softmax" else 0.0)}
    if model.k1 > 0:
        k1s = truth["omega"].shape[0]
        a1 = assign_atoms(k1s, model.k1)
        c1 = np.bincount(a1, minlength=k1s)[a1]
        u.update({"log_omega": np.log(truth["omega"][a1] / c1), "kappa": truth["kappa"][a1],
                  "log_tau": np.log(truth["tau"][a1])})
    names = sorted(u)
    batch = 1 if reps is None else int(reps)
    draws = {k: u[k][None] + scale * rng.standard_normal((batch, *u[k].shape)) for k in names}
    p = {k: v for k, v in draws.items() if not k.startswith("log_")}
    p["nu"] = np.exp(draws["log_nu"])
    if model.k1 > 0:
        w = np.exp(draws["log_omega"] - draws["log_omega"].max(axis=1, keepdims=True))
        p["omega"] = w / w.sum(axis=1, keepdims=True)
        p["tau"] = np.exp(draws["log_tau"])
    return p if reps is not None else {k: v[0] for k, v in p.items()}


# -- direct maximisation -------------------------------------------------------------------------

def _fit_direct_one(model, p0, x, y, w, tol, max_steps):
    def objective(u, args):
        x_, y_, w_ = args
        return -model.loglik(from_unconstrained(u), x_, y_, w_)

    sol = optx.minimise(objective, optx.BFGS(rtol=tol, atol=tol), to_unconstrained(p0), args=(x, y, w),
                        max_steps=max_steps, throw=False)
    p = from_unconstrained(sol.value)
    ok = sol.result == optx.RESULTS.successful
    return p, sol.stats["num_steps"], ok, model.loglik(p, x, y, w)


# -- expectation–maximisation (linear experts) -----------------------------------------------------

def _wls(X1, y, r):
    """Weighted least squares: argmin Σ rᵢ (yᵢ − X1ᵢ·b)², and the weighted residual variance."""
    A = X1.T @ (r[:, None] * X1)
    b = jnp.linalg.solve(A + 1e-12 * jnp.eye(A.shape[0]), X1.T @ (r * y))
    var = jnp.sum(r * (y - X1 @ b) ** 2) / jnp.sum(r)
    return b, var


def _fit_em_one(model, p0, x, y, w, tol, max_steps, newton_steps):
    n = x.shape[0]
    wts = jnp.full((n,), 1.0 / n) if w is None else w
    X1 = jnp.concatenate([x, jnp.ones((n, 1))], axis=1)
    k1, d = model.k1, model.d

    def gate_objective(theta, r2):
        prm = {"beta1": theta[:, :d], "beta0": theta[:, d]}
        return jnp.sum(wts[:, None] * r2 * model.log_gate(prm, x))

    grad_g = jax.grad(gate_objective)
    hess_g = jax.hessian(gate_objective)

    def m_step(p, r):
        r = r * wts[:, None]
        new = dict(p)
        r2 = r[:, k1:]
        theta = jnp.concatenate([p["beta1"], p["beta0"][:, None]], axis=1)
        rn = r2 / jnp.sum(r2, axis=1, keepdims=True).clip(1e-300)  # routed responsibilities given "routed"
        rho = jnp.sum(r2, axis=1) / wts  # P(routed | x, y) per sample

        def newton(_, th):
            g = grad_g(th, rho[:, None] * rn).reshape(-1)
            H = hess_g(th, rho[:, None] * rn).reshape(g.size, g.size)
            return th - (jnp.linalg.pinv(H, rtol=1e-10) @ g).reshape(th.shape)

        theta = jax.lax.fori_loop(0, newton_steps, newton, theta)
        new["beta1"], new["beta0"] = theta[:, :d], theta[:, d]
        eta, nu = jax.vmap(lambda rj: _wls(X1, y, rj), in_axes=1)(r2)
        new["eta"], new["nu"] = eta, nu
        if k1 > 0:
            r1 = r[:, :k1]
            new["omega"] = jnp.sum(r1, axis=0) / jnp.sum(r1)
            kappa, tau = jax.vmap(lambda rj: _wls(X1, y, rj), in_axes=1)(r1)
            new["kappa"], new["tau"] = kappa, tau
        return new

    def e_step(p):
        c = model.component_logpdf(p, x, y)
        lp = jax.scipy.special.logsumexp(c, axis=1)
        return jnp.exp(c - lp[:, None]), jnp.sum(wts * lp)

    r0, ll0 = e_step(p0)

    def cond(state):
        _, _, ll, ll_prev, it = state
        return (it < max_steps) & ~(jnp.abs(ll - ll_prev) < tol)

    def body(state):
        p, r, ll, _, it = state
        p = m_step(p, r)
        r, ll_new = e_step(p)
        return p, r, ll_new, ll, it + 1

    p, _, ll, ll_prev, it = jax.lax.while_loop(cond, body, (p0, r0, ll0, jnp.inf, 0))
    ok = (jnp.abs(ll - ll_prev) < tol) & jnp.isfinite(ll)
    return p, it, ok, ll


def fit(model: GaussianMoE, p0: dict, x, y, weights=None, method: str = "direct", tol: float = 1e-6,
        max_steps: int = 1000, newton_steps: int = 3) -> FitResult:
    """MLE fits of ``model`` for a batch of data sets.

    p0: starting parameters with a leading replication axis R; x (R, n, d), y (R, n); optional
    quadrature weights (R, n) (then the objective is Σ wᵢ log f(yᵢ|xᵢ)).
    """
    if method not in METHODS:
        raise SpecError("method", f"got {method!r}; allowed: {', '.join(METHODS)}")
    if method == "em" and (model.routed_expert != "linear" or (model.k1 > 0 and model.shared_expert != "linear")):
        raise SpecError("method", "em has closed-form updates for linear experts only; allowed for "
                        f"{model.routed_expert}/{model.shared_expert} experts: direct")
    if not (isinstance(max_steps, (int, np.integer)) and max_steps >= 1):
        raise SpecError("max_steps", f"got {max_steps!r}; allowed: an integer ≥ 1")
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise SpecError("tol", f"got {tol!r}; allowed: a number > 0")
    run = _compiled(model, method, float(tol), int(max_steps), int(newton_steps), weights is not None)
    p, steps, ok, ll = run(p0, jnp.asarray(x), jnp.asarray(y), None if weights is None else jnp.asarray(weights))
    return FitResult(params=jax.tree_util.tree_map(np.asarray, p), steps=np.asarray(steps),
                     converged=np.asarray(ok), loglik=np.asarray(ll), method=method)


_CACHE: dict = {}


def _compiled(model, method, tol, max_steps, newton_steps, weighted):
    key = (model, method, tol, max_steps, newton_steps, weighted)
    if key not in _CACHE:
        if method == "direct":
            one = lambda p, x, y, w: _fit_direct_one(model, p, x, y, w, tol, max_steps)  # noqa: E731
        else:
            one = lambda p, x, y, w: _fit_em_one(model, p, x, y, w, tol, max_steps, newton_steps)  # noqa: E731
        _CACHE[key] = jax.jit(jax.vmap(one, in_axes=(0, 0, 0, 0 if weighted else None)))
    return _CACHE[key]


__all__ = ["FitResult", "fit", "init_near_truth", "assign_atoms", "METHODS"]
