"""The expectation-backend seam: state → population loss L and its gradient ∂L/∂G.

Every expectation flowmoe needs is a function of the Gram matrix G of the unit directions (the
layout of :class:`flowmoe.layout.Layout`), because x ~ N(0, I_d) only enters through the fields
ūᵀx. A backend is one way of computing it: the exact pair engine (closed-form Hermite/Wick pair
kernel, :mod:`flowmoe.backends.pair`) is one; a router-space quadrature engine for coupled gates is
another. The ODE receives a backend and never builds one.
"""

from __future__ import annotations

import abc

import jax
import jax.numpy as jnp

from ..layout import Layout


class ExpectationBackend(abc.ABC):
    """What an expectation backend must provide.

    Implementer's contract:

    1. ``layout``: the :class:`~flowmoe.layout.Layout` of the Gram matrices it reads (set it in
       ``__init__``).
    2. ``loss(G) -> scalar``: the population loss L(G) = ½E[(f − f⋆)²] as a pure, JAX-traceable
       function of a unit-diagonal Gram matrix G (N×N). No host callbacks, no Python side effects:
       it is called inside ``jit``, ``vmap`` and the solver's loop.
    3. ``loss_and_grad(G) -> (L, A)`` (optional to override): A_pq = ∂L/∂G_pq for p ≠ q, where
       G_pq = G_qp is *one* variable (so A is symmetric), and A_pp = 0. The default differentiates
       :meth:`loss` with JAX and symmetrises; override it when a closed form is cheaper.
    4. ``describe() -> dict``: JSON-ready provenance (name, options, and for numerical backends
       the point count, scrambles and an error estimate). It is written into every result.
    5. ``cost() -> dict``: static counters of one evaluation (pairs, points, kernel terms). Counts
       of evaluations are kept by the integrator (solver steps × stages) and by the caller.
    6. ``key``: a hashable, canonical identity (two backends with equal keys compute the same
       function); compiled solvers are cached on it.
    """

    layout: Layout

    @abc.abstractmethod
    def loss(self, G) -> jax.Array:
        """L(G) for one Gram matrix (traceable)."""

    def loss_and_grad(self, G):
        """(L, A) with A = ∂L/∂G symmetric, zero diagonal (each unordered pair one variable)."""
        L, g = jax.value_and_grad(self.loss)(G)
        A = g + g.T
        return L, A * (1.0 - jnp.eye(G.shape[0], dtype=G.dtype))

    @abc.abstractmethod
    def describe(self) -> dict:
        """JSON-ready description (see the contract, item 4)."""

    def cost(self) -> dict:
        return {}

    @property
    @abc.abstractmethod
    def key(self) -> tuple:
        """Canonical hashable identity (contract item 6)."""

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, ExpectationBackend) and self.key == other.key
