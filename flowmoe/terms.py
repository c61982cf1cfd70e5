"""Vector-field terms: the additive pieces of the ODE on (directions, norms).

The state is the unit directions (as a Gram matrix G, or as the rows X of a factor with
G = XXᵀ) and the norms r of the raw vectors. A term adds a velocity to both; the vector field of
a run is the sum of its terms, combined as a ``diffrax.MultiTerm`` of one ``ODETerm`` per term.

With A = ∂L/∂G (from the expectation backend), c_p = Σ_k A_pk G_pk and P = A − diag(c):

- :class:`GradientFlow` — exact gradient flow of L on the raw vectors (``docs/maths.md`` §2):
  dū_p/dt = −r_p⁻² (Σ_k P_pk ū_k) for moving p, i.e. dX = −diag(moving/r²) P X and
  dG = BG + (BG)ᵀ with B = −diag(moving/r²) P; dr_p/dt = −(PG)_pp / r_p, which is zero up to
  round-off (f is scale-invariant in each vector), and is set to zero with ``norms="fixed"``.
- :class:`NormDrift` — the leading-order norm growth of gradient descent with step η:
  d(r_p²)/dt = η‖∇_{u_p}L‖², ‖∇_{u_p}L‖² = (P G Pᵀ)_pp / r_p². (Superseded for online SGD by the
  noise terms of the online-SGD ODE; kept as the full-batch GD correction.)

Implementer's contract for a new term:

1. ``gram_velocity(ctx) -> (dG, dr)``: its contribution in the Gram form; ``dG`` symmetric with
   zero diagonal.
2. ``factor_velocity(ctx) -> (dX, dr)`` (optional): its contribution for the factor state, where
   ``ctx.X`` has unit rows; if the term is not of the form dū = Mū (inside the span), leave it
   unimplemented and the run must use ``solver.state = "gram"``.
3. ``describe() -> dict`` (JSON provenance) and ``key`` (hashable identity).
4. Pure and traceable (no host callbacks): it runs inside ``jit`` and the solver's loop.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from .backends.base import ExpectationBackend


@dataclass(frozen=True)
class Context:
    """What every term may use, computed once per right-hand-side evaluation."""

    G: jax.Array  # (N, N) unit-diagonal Gram matrix
    X: jax.Array | None  # (N, k) factor with unit rows (factor state), else None
    r: jax.Array  # (N,) norms
    L: jax.Array  # loss
    A: jax.Array  # ∂L/∂G, symmetric, zero diagonal
    P: jax.Array  # A − diag(Σ_k A_pk G_pk)
    moving: jax.Array  # (N,) 1 for student directions


def context(backend: ExpectationBackend, G, r, X=None) -> Context:
    L, A = backend.loss_and_grad(G)
    c = jnp.sum(A * G, axis=1)
    P = A - jnp.diag(c)
    return Context(G, X, r, L, A, P, jnp.asarray(backend.layout.moving, dtype=G.dtype))


class Term(abc.ABC):
    """One additive piece of the vector field (see the module docstring for the contract)."""

    @abc.abstractmethod
    def gram_velocity(self, ctx: Context):
        """(dG, dr) in the Gram form."""

    def factor_velocity(self, ctx: Context):
        raise NotImplementedError(f"{type(self).__name__} has no factor form; use solver.state = 'gram'")

    @abc.abstractmethod
    def describe(self) -> dict:
        """JSON provenance."""

    @property
    def key(self) -> tuple:
        return (type(self).__name__, tuple(sorted(self.describe().items(), key=lambda kv: kv[0])))


@dataclass(frozen=True)
class GradientFlow(Term):
    """Exact population gradient flow; ``norms="fixed"`` holds r constant (its exact value)."""

    norms: str = "fixed"

    def _dr(self, ctx: Context):
        if self.norms == "fixed":
            return jnp.zeros_like(ctx.r)
        return -ctx.moving * jnp.diagonal(ctx.P @ ctx.G) / ctx.r

    def gram_velocity(self, ctx: Context):
        BG = (-ctx.moving / ctx.r**2)[:, None] * (ctx.P @ ctx.G)
        n = ctx.G.shape[0]
        return (BG + BG.T) * (1.0 - jnp.eye(n, dtype=ctx.G.dtype)), self._dr(ctx)

    def factor_velocity(self, ctx: Context):
        dX = (-ctx.moving / ctx.r**2)[:, None] * (ctx.P @ ctx.X)
        return dX, self._dr(ctx)

    def describe(self) -> dict:
        return {"term": "gradient-flow", "norms": self.norms}


@dataclass(frozen=True)
class NormDrift(Term):
    """d(r_p²)/dt = lr ‖∇_{u_p} L‖² (leading-order norm growth of GD with step ``lr``)."""

    lr: float

    def _dr(self, ctx: Context):
        grad_sq = jnp.einsum("pk,kl,pl->p", ctx.P, ctx.G, ctx.P) / ctx.r**2
        return ctx.moving * self.lr * grad_sq / (2.0 * ctx.r)

    def gram_velocity(self, ctx: Context):
        return jnp.zeros_like(ctx.G), self._dr(ctx)

    def factor_velocity(self, ctx: Context):
        return jnp.zeros_like(ctx.X), self._dr(ctx)

    def describe(self) -> dict:
        return {"term": "norm-drift", "lr": self.lr}


__all__ = ["Term", "GradientFlow", "NormDrift", "Context", "context"]
