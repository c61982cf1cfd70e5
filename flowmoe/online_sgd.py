"""The online-SGD ODE: gradient flow plus the O(η) terms of online SGD with step η and batch B
(``docs/sgd-ode.md``; derivation in ``derivations/online-sgd.md``).

Online SGD on the raw vectors u_p = r_p ū_p with the per-sample loss ½δ², δ = f − f⋆ (the
convention of :mod:`flowmoe.simulate`): fields y_p = ū_pᵀx, h_p = δ ∂f/∂y_p, per-sample gradient
g_p = h_p (x − y_p ū_p) / r_p (orthogonal to u_p), batch mean ĝ_p, step u_p ← u_p − η ĝ_p, time
t = η·steps. The expected change per unit time, to first order in η, is

    dG_pq/dt = [gradient flow]_pq + η { S_pq/(r_p r_q) − ½ G_pq (S_pp/r_p² + S_qq/r_q²) },
    d(r_p²)/dt = η S_pp,        S_pq = E⟨ĝ_p, ĝ_q⟩ = (1 − 1/B) ⟨∇_pL, ∇_qL⟩ + M_pq / (B r_p r_q),
    M_pq = (d − N) E[h_p h_q] + E[h_p h_q (|w|² − y_p² − y_q² + y_p y_q G_pq)],

with S_pq = 0 when p or q is a teacher direction (it does not move). ⟨∇_pL, ∇_qL⟩ =
(PGPᵀ)_pq / (r_p r_q) is exact (from the expectation backend). The per-sample moments are
expectations over the N fields only: x = Σ_k w_k e_k + x_⊥ with the fields y = C w, C the
Cholesky factor of G + jitter·I, w ~ N(0, I_N) and x_⊥ independent of every field with
E|x_⊥|² = d − N. This is exact in d (d enters only through the factor d − N; needs d ≥ N) and
holds whatever the rank of G (a direction of w outside the span is simply one more dimension
orthogonal to every field). The expectations over w are a fixed quadrature: one set of scrambled
Sobol points mapped to normals and made antithetic (:func:`flowmoe.backends.router.sobol_normals`),
generated once on the host, so the right-hand side is a fixed smooth function of (G, r) with no
host callbacks. Its error is measured in ``docs/sgd-ode.md`` (``python bench/sgd_ode_quadrature.py``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from numpy.polynomial import hermite_e

from .errors import SpecError
from .gates import get_expert, get_gate
from .layout import Layout
from .terms import Context, Term

DEFAULT_POINTS = 2**14
DEFAULT_UNIT_POINTS = 2**11
GH_NODES = 8  # Gauss–Hermite nodes along a unit's own expert field (exact to degree 15)
CHUNK = 2048  # points per chunk of the quadrature (bounds memory)
UNIT_CHUNK = 32


@dataclass(frozen=True)
class OnlineSGD(Term):
    """The O(η) terms of online SGD with step ``lr`` and batch ``batch`` at input dimension ``d``.

    Add it to :class:`~flowmoe.terms.GradientFlow` with ``norms="state"``; Gram state only (the
    normalisation drift −½G_pq(…) is not of the form dū = Mū). ``points`` (a power of 2, antithetic
    pairs included) and ``seed`` fix the quadrature of the per-sample moments.
    """

    gate: str
    expert: str
    layout: Layout
    d: int
    lr: float
    batch: int
    points: int = DEFAULT_POINTS
    unit_points: int = DEFAULT_UNIT_POINTS
    seed: int = 0
    jitter: float = 1e-12

    def __post_init__(self):
        lay = self.layout
        if lay.shared or lay.shared_star or lay.extra:
            raise SpecError("dynamics.method", "online-sgd handles routed units only (no shared experts or extra "
                                               "directions)")
        if self.d < lay.n_dirs:
            raise SpecError("model.d", f"online-sgd needs d ≥ N = 2(m + m⋆) = {lay.n_dirs}, got d = {self.d}")
        for name in ("points", "unit_points"):
            n = getattr(self, name)
            if n < 4 or n & (n - 1):
                raise SpecError(f"dynamics.{name}", f"must be a power of 2 ≥ 4, got {n}")

    # --- the quadrature of the per-sample moments -------------------------------------------------
    @functools.cached_property
    def _normals(self) -> np.ndarray:
        from .backends.router import sobol_normals

        return sobol_normals(self.layout.n_dirs, self.points, 1, self.seed)[0]

    @functools.cached_property
    def _residual(self):
        """δ(Z) = f − f⋆ for rows Z of fields (P, N)."""
        lay = self.layout
        gate, expert = get_gate(self.gate), get_expert(self.expert).jax_fn()
        sv, sw, tv, tw = lay.student_routers, lay.student_experts, lay.teacher_routers, lay.teacher_experts

        def delta(Z):  # Z (..., N) -> (...)
            f = jnp.sum(gate.weights(Z[..., sv]) * expert(Z[..., sw]), axis=-1)
            f_star = jnp.sum(gate.weights(Z[..., tv]) * expert(Z[..., tw]), axis=-1)
            return f - f_star
        return delta

    @functools.cached_property
    def _unit_normals(self) -> np.ndarray:
        from .backends.router import sobol_normals

        return sobol_normals(self.layout.n_dirs, self.unit_points, 1, self.seed + 1)[0]

    def _chunked(self, fn, normals, chunk):
        n = normals.shape[0]
        chunk = min(chunk, n)
        pts = jnp.asarray(normals.reshape(n // chunk, chunk, normals.shape[1]))
        return jax.tree_util.tree_map(lambda a: jnp.sum(a, axis=0) / n, jax.lax.map(jax.checkpoint(fn), pts))

    def sample_moments(self, G, normals=None, unit_normals=None, own_blocks=True):
        """M (N×N): M_pq = (d − N) E[h_p h_q] + E[h_p h_q (|w|² − y_p² − y_q² + y_p y_q G_pq)] over
        the student directions (zero rows and columns for the teacher), by the fixed quadrature.

        Every entry is a mean over the Sobol points ``normals``; with ``own_blocks`` the 2×2 block of
        each student unit (its router and expert: the norm growth) is computed instead with the
        unit's own expert field e_i integrated exactly by Gauss–Hermite on every point of
        ``unit_normals`` (w = w' + e c_i with w' ⊥ c_i, the row of the factor of e_i), which removes
        the heavy polynomial tail of that field (degree up to 12 in e_i).
        """
        lay = self.layout
        N = lay.n_dirs
        s = lay.students
        normals = self._normals if normals is None else normals
        Gj = G + self.jitter * jnp.eye(N, dtype=G.dtype)
        chol = jnp.linalg.cholesky(Gj)
        delta = self._residual

        def chunk_sums(w):
            Z = w @ chol.T
            dl, vjp = jax.vjp(delta, Z)
            H = (dl[:, None] * vjp(jnp.ones_like(dl))[0])[:, s]  # h_p = δ ∂f/∂y_p, students
            Y = Z[:, s]
            HY = H * Y
            w2 = jnp.sum(w * w, axis=1)
            return jnp.stack([H.T @ H, (H * w2[:, None]).T @ H, (HY * Y).T @ H, HY.T @ HY])

        hh, hh_w2, hh_yp2, hh_ypyq = self._chunked(chunk_sums, normals, CHUNK)
        Gs = G[s[:, None], s[None, :]]
        Ms = (self.d - N) * hh + hh_w2 - hh_yp2 - hh_yp2.T + hh_ypyq * Gs
        if own_blocks:
            Ms = self._own_blocks(G, Gj, chol, Ms, self._unit_normals if unit_normals is None else unit_normals)
        return jnp.zeros((N, N), G.dtype).at[s[:, None], s[None, :]].set(Ms)

    def _own_blocks(self, G, Gj, chol, Ms, normals):
        lay = self.layout
        N, m = lay.n_dirs, lay.m
        sv, sw, tv, tw = lay.student_routers, lay.student_experts, lay.teacher_routers, lay.teacher_experts
        xi, om = hermite_e.hermegauss(GH_NODES)
        om = om / om.sum()
        gate, expert = get_gate(self.gate), get_expert(self.expert).jax_fn()
        g = Gj[:, sw].T  # (m, N): Cov(fields, e_i), the direction in which the fields move with e_i
        eye = np.eye(m)
        rho = G[sv, sw]

        def chunk_sums(w):
            Z = w @ chol.T
            e = Z[:, sw]  # (c, m)
            a = xi[None, None, :] - e[:, :, None]  # (c, m, K): e_i moved to the node ξ_k

            def moved(idx):  # fields idx at every (point, unit i, node k): (c, m, K, len(idx))
                return Z[:, None, None, idx] + a[..., None] * g[None, :, None, idx]

            Rs, Es = moved(sv), moved(sw)
            f_star = jnp.sum(gate.weights(moved(tv)) * expert(moved(tw)), axis=-1)

            def f_student(Rs, Es):
                return jnp.sum(gate.weights(Rs) * expert(Es), axis=-1)

            R_own = Z[:, sv][:, :, None] + a * rho[None, :, None]
            e_own = jnp.broadcast_to(xi, a.shape)
            if getattr(gate, "coupled", False):  # ∂f/∂R_i involves every student router
                tan = jnp.broadcast_to(eye[None, :, None, :], Rs.shape)  # unit i's own field, for each i
                f, dv = jax.jvp(lambda R: f_student(R, Es), (Rs,), (tan,))
                dw = jax.jvp(lambda E: f_student(Rs, E), (Es,), (tan,))[1]
            else:  # ∂f/∂R_i = π'(R_i) P(e_i), ∂f/∂e_i = π(R_i) P'(e_i)
                f = f_student(Rs, Es)
                pi, dpi = jax.jvp(gate.weights, (R_own,), (jnp.ones_like(R_own),))
                P, dP = jax.jvp(expert, (e_own,), (jnp.ones_like(e_own),))
                dv, dw = dpi * P, pi * dP
            dl = f - f_star
            h = jnp.stack([dl * dv, dl * dw], axis=-1)  # (c, m, K, 2): router, expert of unit i
            y_own = jnp.stack([R_own, e_own], -1)
            w2 = jnp.sum(w * w, axis=1)[:, None, None] - e[:, :, None] ** 2 + xi**2
            hw = h * om[None, None, :, None]
            hy = h * y_own
            return jnp.stack([jnp.einsum("cika,cikb->iab", hw, h),
                              jnp.einsum("cika,cikb->iab", hw * w2[..., None], h),
                              jnp.einsum("cika,cikb->iab", hw * y_own**2, h),
                              jnp.einsum("cika,cikb->iab", hw * y_own, hy)])

        hh, hh_w2, hh_ya2, hh_yayb = self._chunked(chunk_sums, normals, UNIT_CHUNK)
        rho = G[sv, sw]
        Gb = jnp.stack([jnp.stack([jnp.ones_like(rho), rho], -1), jnp.stack([rho, jnp.ones_like(rho)], -1)], -2)
        blocks = (self.d - N) * hh + hh_w2 - hh_ya2 - jnp.swapaxes(hh_ya2, 1, 2) + hh_yayb * Gb  # (m, 2, 2)
        i = np.arange(m)
        for a in range(2):
            for b in range(2):
                Ms = Ms.at[i + a * m, i + b * m].set(blocks[:, a, b])
        return Ms

    def gradient_moments(self, ctx: Context):
        """S_pq = E⟨ĝ_p, ĝ_q⟩ of the batch-mean gradient (zero if p or q does not move)."""
        r, mv = ctx.r, ctx.moving
        rr = r[:, None] * r[None, :]
        mean_sq = (ctx.P @ ctx.G @ ctx.P.T) / rr  # ⟨∇_pL, ∇_qL⟩
        S = (1.0 - 1.0 / self.batch) * mean_sq + self.sample_moments(ctx.G) / (self.batch * rr)
        return S * (mv[:, None] * mv[None, :])

    # --- the term -----------------------------------------------------------------------------
    def gram_velocity(self, ctx: Context):
        S = self.gradient_moments(ctx)
        r = ctx.r
        q = jnp.diagonal(S) / r**2
        n = ctx.G.shape[0]
        dG = self.lr * (S / (r[:, None] * r[None, :]) - 0.5 * ctx.G * (q[:, None] + q[None, :]))
        return dG * (1.0 - jnp.eye(n, dtype=ctx.G.dtype)), self.lr * jnp.diagonal(S) / (2.0 * r)

    def describe(self) -> dict:
        return {"term": "online-sgd", "lr": self.lr, "batch": self.batch, "d": self.d, "kappa": self.lr * self.d / self.batch,
                "gate": self.gate, "expert": self.expert, "points": self.points, "unit_points": self.unit_points, "gh_nodes": GH_NODES, "seed": self.seed,
                "jitter": self.jitter,
                "quadrature": "per-sample moments over the N fields: antithetic scrambled Sobol points, "
                              "fields = chol(G + jitter I) w; d enters only through (d - N)"}

    @property
    def key(self) -> tuple:
        return ("online-sgd", self.gate, self.expert, self.layout, self.d, self.lr, self.batch, self.points,
                self.unit_points, self.seed, self.jitter)


__all__ = ["OnlineSGD"]
