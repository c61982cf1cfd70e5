"""Conditional Gaussian mixture-of-experts densities for the statistical-rate experiments.

The model ("On DeepSeekMoE: Statistical Benefits of Shared Experts and Normalized Sigmoid Gating",
arXiv 2505.10860, eq. 1), with π(y | μ, ν) the Gaussian density of mean μ and **variance** ν:

    f(y|x) = ½ Σ_{i≤k₁} ω_i π(y | h₁(x, κ_i), τ_i) + ½ Σ_{i≤k₂} g_i(x) π(y | h₂(x, η_i), ν_i),

Σω = 1, g = softmax(β₁ᵢᵀx + β₀ᵢ) or the normalised sigmoid σ(β₁ᵢᵀx + β₀ᵢ)/Σⱼσ(β₁ⱼᵀx + β₀ⱼ).
With k₁ = 0 there is no shared part and the routed part has weight 1 (the plain softmax-gated
Gaussian MoE of "Demystifying Softmax Gating in Gaussian Mixture of Experts", arXiv 2305.03288).

Experts (parameter vector layout, d = input dimension):

- ``linear``: h = η₁ᵀx + η₀, vector (η₁ [d], η₀), size d + 1;
- ``relu``:   h = η₂ ReLU(η₁ᵀx + η₀), vector (η₁ [d], η₀, η₂), size d + 2;
- ``relu0``:  h = η₂ ReLU(η₁ᵀx), vector (η₁ [d], η₂), size d + 1 (no inner bias);
- ``gelu0``:  h = η₂ GELU(η₁ᵀx), vector (η₁ [d], η₂), size d + 1.

Parameters are a dict pytree (natural parameters):
``omega`` (k₁,), ``kappa`` (k₁, p₁), ``tau`` (k₁,), ``beta1`` (k₂, d), ``beta0`` (k₂,), ``eta`` (k₂, p₂),
``nu`` (k₂,). The fitter works on an unconstrained copy (:func:`to_unconstrained`): ω by
log-weights (softmax), τ and ν by their logarithms.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import SpecError

jax.config.update("jax_enable_x64", True)

EXPERTS = ("linear", "relu", "relu0", "gelu0")
GATES = ("softmax", "nsigmoid")
_LOG2PI = math.log(2.0 * math.pi)


def expert_size(kind: str, d: int) -> int:
    """Length of the parameter vector of one expert of ``kind`` in dimension ``d``."""
    return {"linear": d + 1, "relu": d + 2, "relu0": d + 1, "gelu0": d + 1}[kind]


def expert_apply(kind: str, x, p):
    """h(x, p) for inputs x (n, d) and one expert vector p (size :func:`expert_size`) → (n,)."""
    d = x.shape[-1]
    w = p[:d]
    if kind == "linear":
        return x @ w + p[d]
    if kind == "relu":
        return p[d + 1] * jax.nn.relu(x @ w + p[d])
    if kind == "relu0":
        return p[d] * jax.nn.relu(x @ w)
    if kind == "gelu0":
        return p[d] * jax.nn.gelu(x @ w, approximate=False)
    raise SpecError("expert", f"unknown expert {kind!r}; allowed: {', '.join(EXPERTS)}")


@dataclasses.dataclass(frozen=True)
class GaussianMoE:
    """The model class: gate, expert kinds, numbers of atoms k₁ (shared, 0 = none) and k₂ (routed)."""

    gate: str = "softmax"
    routed_expert: str = "linear"
    shared_expert: str = "linear"
    k1: int = 1
    k2: int = 2
    d: int = 1

    def __post_init__(self):
        if self.gate not in GATES:
            raise SpecError("gate", f"got {self.gate!r}; allowed: {', '.join(GATES)}")
        for field in ("routed_expert", "shared_expert"):
            if getattr(self, field) not in EXPERTS:
                raise SpecError(field, f"got {getattr(self, field)!r}; allowed: {', '.join(EXPERTS)}")
        for field, lo in (("k1", 0), ("k2", 1), ("d", 1)):
            v = getattr(self, field)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
                raise SpecError(field, f"got {v!r}; allowed: an integer ≥ {lo}")

    @property
    def p1(self) -> int:
        return expert_size(self.shared_expert, self.d)

    @property
    def p2(self) -> int:
        return expert_size(self.routed_expert, self.d)

    def with_atoms(self, k1: int, k2: int) -> "GaussianMoE":
        return dataclasses.replace(self, k1=k1, k2=k2)

    # -- densities --------------------------------------------------------------------------
    def log_gate(self, params, x):
        """log g_i(x) for x (n, d) → (n, k₂)."""
        z = x @ params["beta1"].T + params["beta0"]
        if self.gate == "softmax":
            return jax.nn.log_softmax(z, axis=-1)
        ls = jax.nn.log_sigmoid(z)
        return ls - jax.scipy.special.logsumexp(ls, axis=-1, keepdims=True)

    def component_logpdf(self, params, x, y):
        """log of every weighted component ω_iπ(·)/2 and g_i(x)π(·)/2, shape (n, k₁ + k₂)."""
        mu2 = jax.vmap(lambda p: expert_apply(self.routed_expert, x, p), out_axes=1)(params["eta"])
        lg = self.log_gate(params, x)
        routed = lg + _log_normal(y[:, None], mu2, params["nu"][None, :])
        if self.k1 == 0:
            return routed
        mu1 = jax.vmap(lambda p: expert_apply(self.shared_expert, x, p), out_axes=1)(params["kappa"])
        shared = jnp.log(params["omega"])[None, :] + _log_normal(y[:, None], mu1, params["tau"][None, :])
        return jnp.concatenate([shared, routed], axis=1) - math.log(2.0)

    def logpdf(self, params, x, y):
        """log f(y|x) per sample, x (n, d), y (n,) → (n,)."""
        return jax.scipy.special.logsumexp(self.component_logpdf(params, x, y), axis=1)

    def loglik(self, params, x, y, weights=None):
        """Mean log-likelihood (1/n)Σ log f(yᵢ|xᵢ), or Σ wᵢ log f(yᵢ|xᵢ) with weights (a quadrature)."""
        lp = self.logpdf(params, x, y)
        return jnp.mean(lp) if weights is None else jnp.sum(weights * lp)

    # -- sampling ---------------------------------------------------------------------------
    def component_weights_means_vars(self, params, x):
        """Weights (n, K), means (n, K), variances (K,) of the Gaussian components at inputs x."""
        mu2 = jax.vmap(lambda p: expert_apply(self.routed_expert, x, p), out_axes=1)(params["eta"])
        g = jnp.exp(self.log_gate(params, x))
        if self.k1 == 0:
            return g, mu2, params["nu"]
        mu1 = jax.vmap(lambda p: expert_apply(self.shared_expert, x, p), out_axes=1)(params["kappa"])
        w = jnp.concatenate([jnp.broadcast_to(params["omega"], (x.shape[0], self.k1)), g], axis=1) / 2.0
        return w, jnp.concatenate([mu1, mu2], axis=1), jnp.concatenate([params["tau"], params["nu"]])

    def sample_y(self, key, params, x):
        """y ~ f(·|x) for given inputs x (n, d)."""
        w, mu, var = self.component_weights_means_vars(params, x)
        kc, kz = jax.random.split(key)
        c = jax.random.categorical(kc, jnp.log(w), axis=1)
        z = jax.random.normal(kz, (x.shape[0],))
        return jnp.take_along_axis(mu, c[:, None], axis=1)[:, 0] + jnp.sqrt(var[c]) * z

    # -- parameter checks and transforms ----------------------------------------------------
    def check_params(self, params, field: str = "params") -> dict:
        shapes = {"beta1": (self.k2, self.d), "beta0": (self.k2,), "eta": (self.k2, self.p2), "nu": (self.k2,)}
        if self.k1 > 0:
            shapes.update({"omega": (self.k1,), "kappa": (self.k1, self.p1), "tau": (self.k1,)})
        out = {}
        for name, shape in shapes.items():
            if name not in params:
                raise SpecError(f"{field}.{name}", f"missing; needed: {', '.join(shapes)}")
            a = np.asarray(params[name], dtype=np.float64).reshape(shape) if np.size(params[name]) == \
                int(np.prod(shape)) else None
            if a is None:
                raise SpecError(f"{field}.{name}", f"has {np.size(params[name])} numbers; allowed: shape {shape}")
            if not np.all(np.isfinite(a)):
                raise SpecError(f"{field}.{name}", "contains NaN or inf; allowed: finite numbers")
            out[name] = a
        for name in ("nu", "tau", "omega"):
            if name in out and np.any(out[name] <= 0):
                raise SpecError(f"{field}.{name}", f"got {out[name].tolist()}; allowed: positive numbers")
        if "omega" in out and abs(out["omega"].sum() - 1.0) > 1e-9:
            raise SpecError(f"{field}.omega", f"sums to {out['omega'].sum()}; allowed: weights summing to 1")
        return {k: jnp.asarray(v) for k, v in out.items()}


def _log_normal(y, mu, var):
    return -0.5 * (_LOG2PI + jnp.log(var) + (y - mu) ** 2 / var)


def to_unconstrained(params) -> dict:
    """Natural → unconstrained parameters (log ω, log τ, log ν; the rest unchanged)."""
    u = {k: v for k, v in params.items() if k not in ("omega", "tau", "nu")}
    u["log_nu"] = jnp.log(params["nu"])
    if "omega" in params:
        u["log_omega"] = jnp.log(params["omega"])
        u["log_tau"] = jnp.log(params["tau"])
    return u


def from_unconstrained(u) -> dict:
    """Unconstrained → natural parameters (ω = softmax(log-weights))."""
    p = {k: v for k, v in u.items() if k not in ("log_omega", "log_tau", "log_nu")}
    p["nu"] = jnp.exp(u["log_nu"])
    if "log_omega" in u:
        p["omega"] = jax.nn.softmax(u["log_omega"], axis=-1)
        p["tau"] = jnp.exp(u["log_tau"])
    return p


@functools.partial(jax.jit, static_argnames=("model", "n", "reps", "design", "low", "high"))
def sample_datasets(model: "GaussianMoE", params: dict, key, n: int, reps: int, design: str = "uniform",
                    low: float = -3.0, high: float = 3.0):
    """``reps`` independent data sets of size n from ``model`` at ``params``: x (reps, n, d), y (reps, n).
    With ``design="grid"`` every data set has the same inputs linspace(low, high, n)."""
    kx, ky = jax.random.split(key)
    if design == "grid":
        x = jnp.broadcast_to(sample_x(None, n, model.d, "grid", low, high), (reps, n, model.d))
    else:
        x = jax.vmap(lambda k: sample_x(k, n, model.d, design, low, high))(jax.random.split(kx, reps))
    y = jax.vmap(lambda k, xx: model.sample_y(k, params, xx))(jax.random.split(ky, reps), x)
    return x, y


def sample_x(key, n: int, d: int = 1, design: str = "uniform", low: float = -3.0, high: float = 3.0):
    """Inputs: i.i.d. Uniform[low, high]^d (``design="uniform"``) or the grid linspace(low, high, n)
    (``design="grid"``, d = 1 only)."""
    if design == "uniform":
        return jax.random.uniform(key, (n, d), minval=low, maxval=high)
    if design == "grid":
        if d != 1:
            raise SpecError("design", f"grid needs d = 1, got d = {d}; allowed: uniform for d > 1")
        return jnp.linspace(low, high, n)[:, None]
    raise SpecError("design", f"got {design!r}; allowed: uniform, grid")


__all__ = ["GaussianMoE", "EXPERTS", "GATES", "expert_apply", "expert_size", "sample_x", "sample_datasets", "to_unconstrained",
           "from_unconstrained"]
