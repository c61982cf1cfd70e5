"""Router-space quadrature: L(G) for coupled gates (softmax, normalised sigmoid) and Hermite experts.

Model: f(x) = Σ_u s_u g_u(R) P(e_u), with router fields R = (v̄_uᵀx) over all K = m + m⋆ routed
units (students s = +1, teachers s = −1), expert fields e_u = w̄_uᵀx and P = Σ_k α_k He_k. Each
model's gate reads only its own routers: g_u = φ(R_u) (independent gate) or
g_u = φ(R_u) / Σ_{k in the same model} φ(R_k) (softmax φ = exp(z/τ), normalised sigmoid φ = σ).

Reduction (exact for Hermite experts). For unit-variance fields with correlation ρ = ⟨w̄_u, w̄_v⟩,
He_k(e_u) He_l(e_v) = Σ_n n! C(k,n) C(l,n) ρⁿ :e_u^{k−n} e_v^{l−n}: (Wick product formula), and
Gaussian integration by parts turns each Wick power into directional derivatives of the gate
product along the covariance vectors a = Cov(e_u, R), b = Cov(e_v, R) (rows of G):

    E[h(R) :e_u^i e_v^j:] = E[∂_s^i ∂_t^j h(R + s a + t b)]|_{s=t=0},   h = g_u g_v,

so with [h]_{ij} the Taylor coefficients of h(R + s a + t b) in (s, t),

    E[g_u g_v P(e_u) P(e_v)] = Σ_{k,l} α_k α_l Σ_n (k! l! / n!) ρⁿ E[[h]_{k−n, l−n}(R)],
    L = ½ Σ_{u,v} s_u s_v E[g_u g_v P(e_u) P(e_v)].

Only the expectation over R ~ N(0, G_RR) is numerical. The Taylor coefficients are exact:
φ(R_k + s a_k + t b_k) has coefficients φ^{(i+j)}(R_k) a_kⁱ b_k^j / (i! j!) (φ's derivatives from
its sympy formula), and the ratio and product are truncated bivariate Taylor arithmetic.

Quadrature: one fixed point set, generated once on the host: scrambled Sobol points
(``scipy.stats.qmc.Sobol``, ``random_base2``, the first point kept), mapped to normals by the
inverse CDF and made antithetic (w and −w, so every odd moment of R vanishes exactly), then
R = Λ w with Λ the Cholesky factor of G_RR + jitter·I (smooth in G, and defined when routers
coincide). With fixed points the loss is a fixed smooth surrogate L̂(G) → L(G): its autodiff
gradient is the exact gradient of L̂, so the Gram ODE is the exact gradient flow of L̂.
References: Price, "A useful theorem for nonlinear devices having Gaussian inputs" (IRE Trans.
Inf. Theory 1958); Stein's lemma; Owen, "Scrambling Sobol' and Niederreiter–Xing points" (1998).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import norm, qmc

from ..errors import SpecError
from ..gates import Expert, get_gate
from ..layout import Layout
from .base import ExpectationBackend

DEFAULT_POINTS = 2**14
CHUNK_ELEMENTS = 2**18  # points per chunk ≈ CHUNK_ELEMENTS / (K² (Q+1)²): bounds memory under vmap


# Truncated bivariate Taylor arithmetic. A Taylor object is a nested list x[i][j] (i, j = 0..Q) of
# equally shaped arrays: the coefficient of sⁱ tʲ, every degree in s and in t kept up to Q. (Lists
# rather than one stacked array: slicing a stacked array makes reverse mode pad every slice back to
# full size, ≈ 16× the memory traffic.)

def taylor_mul(x, y):
    """Coefficients of the product, truncated at degree Q in s and in t."""
    q1 = len(x)
    return [[sum(x[a][b] * y[i - a][j - b] for a in range(i + 1) for b in range(j + 1)) for j in range(q1)]
            for i in range(q1)]


def taylor_reciprocal(x):
    """Coefficients of 1/x (x[0][0] ≠ 0), by the recursion x · (1/x) = 1."""
    q1 = len(x)
    inv0 = 1.0 / x[0][0]
    out = [[None] * q1 for _ in range(q1)]
    for tot in range(2 * q1 - 1):
        for i in range(max(0, tot - q1 + 1), min(tot, q1 - 1) + 1):
            j = tot - i
            if i == j == 0:
                out[0][0] = inv0
                continue
            acc = sum(x[a][b] * out[i - a][j - b] for a in range(i + 1) for b in range(j + 1) if (a, b) != (0, 0))
            out[i][j] = -acc * inv0
    return out


def sobol_normals(dim: int, points: int, scrambles: int, seed: int) -> np.ndarray:
    """Antithetic scrambled-Sobol normal points, shape (scrambles, points, dim).

    Each scramble: ``points/2`` Sobol points by ``random_base2`` (first point kept), through the
    normal inverse CDF, followed by their negatives.
    """
    half = points // 2
    out = np.empty((scrambles, points, dim))
    for s in range(scrambles):
        sob = qmc.Sobol(d=dim, scramble=True, seed=np.random.default_rng([seed, s]))
        u = sob.random_base2(int(round(math.log2(half))))
        z = norm.ppf(u)
        out[s, :half], out[s, half:] = z, -z
    return out


class RouterBackend(ExpectationBackend):
    """L(G) and ∂L/∂G by router-space quadrature (see the module docstring for the maths).

    Options: ``points`` (per scramble, a power of 2 ≥ 4, antithetic pairs included), ``scrambles``
    (independent scrambles pooled into one surrogate; ≥ 2 give an error bar), ``seed``,
    ``teacher_gate`` (the teacher's gate; default the student's), ``jitter`` (added to the
    diagonal of G_RR before the Cholesky factorisation).
    """

    def __init__(self, gate, expert: Expert, layout: Layout, *, points=DEFAULT_POINTS, scrambles=1, seed=0,
                 teacher_gate=None, jitter=1e-12):
        if layout.shared or layout.shared_star or layout.extra:
            raise SpecError("model.backend", "the router backend handles routed units only so far "
                                             "(no shared experts or extra directions)")
        self.points = _power_of_two(points, "backend.points")
        self.scrambles = _count(scrambles, "backend.scrambles", 1)
        self.seed = _count(seed, "backend.seed", 0)
        try:
            self.jitter = float(jitter)
        except (TypeError, ValueError):
            raise SpecError("backend.jitter", f"must be a number ≥ 0, got {jitter!r}") from None
        if not (math.isfinite(self.jitter) and self.jitter >= 0):
            raise SpecError("backend.jitter", f"must be a finite number ≥ 0, got {jitter!r}")
        self.gate = get_gate(gate)
        self.teacher_gate = get_gate(self.gate.name if teacher_gate is None else teacher_gate, "backend.teacher_gate")
        self.expert, self.layout = expert, layout
        K = layout.n_units
        self.Q = expert.max_degree
        q1 = self.Q + 1
        self._normals = sobol_normals(K, self.points, self.scrambles, self.seed)
        self.chunk = int(min(self.points, max(2, 2 ** int(math.log2(max(1, CHUNK_ELEMENTS // (K * K * q1 * q1)))))))
        # Expert coefficients α_k of P = Σ_k α_k He_k.
        alpha = np.zeros(q1)
        for k, a in expert.terms:
            alpha[k] = a
        self._alpha = alpha
        is_student = np.arange(K) < layout.m
        self._groups = (is_student, ~is_student)
        self._group_gates = (self.gate, self.teacher_gate)
        self._derivs = tuple(_derivative_fns(g.numerator if g.coupled else g, 2 * self.Q)
                             for g in self._group_gates)

    # --- the surrogate ----------------------------------------------------------------------
    def _taylor_means(self, G, normals):
        """H̄[u, v, i, j] = mean over the points of [g_u g_v]_{ij} (Taylor in (s, t)), (K, K, Q+1, Q+1)."""
        lay, Q = self.layout, self.Q
        ri, ei = jnp.asarray(lay.router), jnp.asarray(lay.expert)
        K = lay.n_units
        G_RR = G[ri[:, None], ri[None, :]]
        chol = jnp.linalg.cholesky(G_RR + self.jitter * jnp.eye(K, dtype=G.dtype))
        C = G[ei[:, None], ri[None, :]]  # C[u, k] = Cov(e_u, R_k)
        fact = np.array([math.factorial(i) for i in range(Q + 1)], dtype=np.float64)
        Cp = jnp.stack([C**i / fact[i] for i in range(Q + 1)])  # (Q+1, K, K)
        Cp_diag = jnp.einsum("iuu->iu", Cp)  # Cp[i, u, u]
        masks = [jnp.asarray(g, dtype=G.dtype) for g in self._groups]

        def chunk_sum(w):
            R = w @ chol.T  # (P, K)
            phis = []
            for gate, derivs, mask, grp in zip(self._group_gates, self._derivs, masks, self._groups):
                z = R
                if gate.coupled and gate.shift:
                    big = jnp.max(jnp.where(jnp.asarray(grp), R, -jnp.inf), axis=1, keepdims=True)
                    z = R - jax.lax.stop_gradient(big)
                phis.append([f(z) * mask for f in derivs])  # φ^{(n)}, zero outside the group
            # Each unit's own φ^{(n)}: its group's gate.
            phi = [phis[0][n] + phis[1][n] for n in range(2 * Q + 1)]
            rng = range(Q + 1)
            # numerator of unit u (first slot) and of unit v (second slot) in the pair (u, v)
            gu = [[phi[i + j][:, :, None] * Cp_diag[i][None, :, None] * Cp[j].T[None] for j in rng] for i in rng]
            gv = [[phi[i + j][:, None, :] * Cp[i][None] * Cp_diag[j][None, None, :] for j in rng] for i in rng]
            for gate, ph, grp in zip(self._group_gates, phis, self._groups):
                if not gate.coupled:
                    continue
                D = [[jnp.einsum("pk,uk,vk->puv", ph[i + j], Cp[i], Cp[j]) for j in rng] for i in rng]
                inv = taylor_reciprocal(D)
                g = jnp.asarray(grp, dtype=G.dtype)
                su, sv = g[None, :, None], g[None, None, :]
                # only units of this group are normalised by this group's denominator
                inv_u = [[su * inv[i][j] + (1 - su) * float(i == j == 0) for j in rng] for i in rng]
                inv_v = [[sv * inv[i][j] + (1 - sv) * float(i == j == 0) for j in rng] for i in rng]
                gu, gv = taylor_mul(gu, inv_u), taylor_mul(gv, inv_v)
            h = taylor_mul(gu, gv)
            return jnp.stack([jnp.stack([jnp.sum(h[i][j], axis=0) for j in rng], axis=-1) for i in rng], axis=-2)

        chunk = min(self.chunk, normals.shape[0] * normals.shape[1])
        pts = jnp.asarray(normals.reshape(-1, chunk, normals.shape[-1]))
        body = jax.checkpoint(chunk_sum)
        sums = jax.lax.map(body, pts)
        return jnp.sum(sums, axis=0) / (pts.shape[0] * pts.shape[1])

    def _loss_from_means(self, G, H):
        lay, Q = self.layout, self.Q
        ei = jnp.asarray(lay.expert)
        rho = G[ei[:, None], ei[None, :]]
        s = jnp.asarray(lay.sign)
        E = 0.0
        for k in range(1, Q + 1):
            for l in range(1, Q + 1):
                a = self._alpha[k] * self._alpha[l]
                if a == 0:
                    continue
                for n in range(min(k, l) + 1):
                    c = a * math.factorial(k) * math.factorial(l) / math.factorial(n)
                    E = E + c * rho**n * H[:, :, k - n, l - n]
        return 0.5 * jnp.sum(s[:, None] * s[None, :] * E)

    def _loss_on(self, G, normals):
        return self._loss_from_means(G, self._taylor_means(G, normals))

    def loss(self, G):
        return self._loss_on(G, self._normals)

    # --- provenance -------------------------------------------------------------------------
    def estimate_error(self, G) -> dict:
        """Error estimate of L̂ at G: the standard error over scrambles (scrambles ≥ 2), else half the
        difference between the two halves of the Sobol sequence (each with its antithetic partners)."""
        G = jnp.asarray(G, dtype=jnp.float64)
        if self.scrambles >= 2:
            vals = np.array([float(self._loss_on(G, self._normals[s:s + 1])) for s in range(self.scrambles)])
            err, how = float(np.std(vals, ddof=1) / math.sqrt(self.scrambles)), "standard error over scrambles"
        else:
            half = self.points // 2
            z = self._normals[0, :half]
            a, b = z[: half // 2], z[half // 2:]
            parts = [np.concatenate([x, -x])[None] for x in (a, b)]
            vals = np.array([float(self._loss_on(G, p)) for p in parts])
            err, how = float(abs(vals[0] - vals[1]) / 2), "half the difference of the two Sobol halves"
        loss = float(self.loss(G))
        return {"loss": loss, "abs_error": err, "rel_error": err / max(abs(loss), 1e-300), "how": how}

    @functools.cached_property
    def _reference_error(self) -> dict:
        return {"state": "init-like reference Gram (overlaps ~ N(0, 1/1000), seed 0)",
                **self.estimate_error(_reference_gram(self.layout))}

    def describe(self) -> dict:
        return {"name": "router", "exact": False, "gate": self.gate.name, "teacher_gate": self.teacher_gate.name,
                "expert": self.expert.name, "points": self.points, "scrambles": self.scrambles, "seed": self.seed,
                "jitter": self.jitter, "antithetic": True,
                "method": "router-space quadrature: Hermite experts by Wick/Stein reduction onto Taylor "
                          "coefficients of the gate product, router fields on scrambled Sobol points",
                "error_estimate": self._reference_error}

    def cost(self) -> dict:
        K = self.layout.n_units
        return {"router_fields": K, "points": self.points * self.scrambles, "pairs": K * K,
                "taylor_coefficients": (self.Q + 1) ** 2, "chunk": self.chunk}

    @property
    def key(self) -> tuple:
        return ("router", self.gate.name, self.teacher_gate.name, self.expert.name, self.layout, self.points,
                self.scrambles, self.seed, self.jitter)


def _derivative_fns(gate, order: int):
    from ..gates import _jax_of

    return [_jax_of(gate.derivative_expr(n)) for n in range(order + 1)]


def _reference_gram(layout: Layout, d: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(0)
    n = layout.n_dirs
    X = np.zeros((n, d))
    X[:, :] = rng.standard_normal((n, d))
    t = np.concatenate([layout.teacher_routers, layout.teacher_experts])
    q, _ = np.linalg.qr(rng.standard_normal((d, len(t))))
    X[t] = q.T
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X @ X.T


def _power_of_two(value, field: str) -> int:
    n = _count(value, field, 4)
    if n & (n - 1):
        raise SpecError(field, f"must be a power of 2 (Sobol nets), got {n}")
    return n


def _count(value, field: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) and not (
            isinstance(value, float) and value.is_integer()):
        raise SpecError(field, f"must be an integer ≥ {minimum}, got {value!r}")
    if int(value) < minimum:
        raise SpecError(field, f"must be an integer ≥ {minimum}, got {value!r}")
    return int(value)
