"""The numerical pair kernel and the population loss on the Gram matrix (SPEC §2–§3).

The symbolic layer (:mod:`flowmoe.symbolic`) derives K and ∂K/∂ρ for one pair of units; this
module turns them into one vectorised JAX function (sympy ``lambdify`` on arrays, with common
subexpressions eliminated) and evaluates it over all (m + m⋆)² ordered pairs of units at once.
The whole m-expert system is never expanded symbolically.

Loss (SPEC §3): with units running over students (sign +1) and teachers (sign −1),
L(G) = ½ Σ_{u,u'} s_u s_{u'} K(u, u'). Its derivative with respect to each off-diagonal Gram entry
(each unordered pair once) is assembled by scatter-adding the six slot derivatives.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import sympy as sp

from . import symbolic
from .correlation import correlation_table
from .gates import Expert, Gate, get_expert, get_gate


@dataclass(frozen=True, eq=False)
class PairKernel:
    """K(a,b;c,e) and its six slot derivatives for one (gate, expert, expert) case.

    Call ``kernel(rho)`` with ``rho`` of shape ``(6, ...)`` in the slot order
    :data:`flowmoe.symbolic.SLOTS`; returns ``(K, dK)`` with shapes ``(...)`` and ``(6, ...)``.
    """

    gate: Gate
    expert1: Expert
    expert2: Expert
    pq: tuple
    table: object
    _fn: object

    def __call__(self, rho):
        R = self.table.evaluate(list(self.pq), rho[0])
        out = self._fn(*[rho[i] for i in range(6)], *[R[j] for j in range(len(self.pq))])
        zero = jnp.zeros_like(rho[0])
        out = [o + zero for o in out]  # lambdify may return Python scalars for constant parts
        return out[0], jnp.stack(out[1:])


@functools.lru_cache(maxsize=None)
def pair_kernel(gate, expert1, expert2=None) -> PairKernel:
    gate = get_gate(gate)
    expert1 = get_expert(expert1)
    expert2 = expert1 if expert2 is None else get_expert(expert2)
    K = symbolic.pair_kernel(expert1, expert2)
    grads = symbolic.kernel_gradient(K)
    exprs = [K] + [grads[s] for s in symbolic.SLOTS]
    pq = symbolic.correlation_indices(*exprs)
    rsyms = {symbolic.R(p, q, symbolic.RHO["ac"]): sp.Symbol(f"R_{p}_{q}") for p, q in pq}
    exprs = [e.xreplace(rsyms) for e in exprs]
    args = [symbolic.RHO[s] for s in symbolic.SLOTS] + [rsyms[symbolic.R(p, q, symbolic.RHO["ac"])] for p, q in pq]
    fn = sp.lambdify(args, exprs, modules="jax", cse=True)
    order = max(max(p, q) for p, q in pq)
    table = correlation_table(gate.name, max(order, 1))
    return PairKernel(gate, expert1, expert2, tuple(pq), table, fn)


@dataclass(frozen=True, eq=False)
class Layout:
    """Where each unit's router and expert direction sits in the Gram matrix.

    Order of directions: [v̄_1..v̄_m, w̄_1..w̄_m, v⋆_1..v⋆_m⋆, w⋆_1..w⋆_m⋆].
    """

    m: int
    m_star: int

    @property
    def n_dirs(self) -> int:
        return 2 * (self.m + self.m_star)

    @property
    def n_units(self) -> int:
        return self.m + self.m_star

    @functools.cached_property
    def router(self) -> np.ndarray:
        m, ms = self.m, self.m_star
        return np.concatenate([np.arange(m), 2 * m + np.arange(ms)])

    @functools.cached_property
    def expert(self) -> np.ndarray:
        m, ms = self.m, self.m_star
        return np.concatenate([m + np.arange(m), 2 * m + ms + np.arange(ms)])

    @functools.cached_property
    def sign(self) -> np.ndarray:
        return np.concatenate([np.ones(self.m), -np.ones(self.m_star)])

    @functools.cached_property
    def moving(self) -> np.ndarray:
        """1.0 for student directions (they move), 0.0 for teacher directions."""
        return np.concatenate([np.ones(2 * self.m), np.zeros(2 * self.m_star)])

    @functools.cached_property
    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Unordered unit pairs u ≤ u' (K(u', u) is K(u, u) with slots ab↔ce, ae↔cb swapped)."""
        return np.triu_indices(self.n_units)

    @functools.cached_property
    def pair_weight(self) -> np.ndarray:
        """Weight of each unordered pair in L = ½ Σ_{u,u'} s_u s_{u'} K(u, u'): s s' (u < u'), ½ s² (u = u')."""
        iu, ju = self.pairs
        return np.where(iu == ju, 0.5, 1.0) * self.sign[iu] * self.sign[ju]

    @functools.cached_property
    def slot_index(self) -> tuple[np.ndarray, np.ndarray]:
        """Row/column Gram indices of the six slots for every unordered unit pair: (6, P) each."""
        iu, ju = self.pairs
        r1, e1 = self.router[iu], self.expert[iu]  # unit u: router a, expert b
        r2, e2 = self.router[ju], self.expert[ju]  # unit u': router c, expert e
        rows = {"ac": r1, "ab": r1, "ae": r1, "cb": r2, "be": e1, "ce": r2}
        cols = {"ac": r2, "ab": e1, "ae": e2, "cb": e1, "be": e2, "ce": e2}
        S = symbolic.SLOTS
        return np.stack([rows[s] for s in S]), np.stack([cols[s] for s in S])


class GramLoss:
    """L(G) and A = ∂L/∂G (symmetric, zero diagonal, each unordered pair once) for one structure."""

    def __init__(self, gate, expert, m: int, m_star: int):
        self.kernel = pair_kernel(gate, expert)
        self.layout = Layout(m, m_star)

    def pair_values(self, G):
        rows, cols = self.layout.slot_index
        rho = G[rows, cols]
        return self.kernel(rho)

    def loss(self, G):
        K, _ = self.pair_values(G)
        return jnp.sum(jnp.asarray(self.layout.pair_weight) * K)

    def loss_and_grad(self, G):
        """(L, A) with A_pq = ∂L/∂G_pq for p ≠ q (G_pq = G_qp one variable), A_pp = 0."""
        rows, cols = self.layout.slot_index
        K, dK = self.kernel(G[rows, cols])
        w = jnp.asarray(self.layout.pair_weight)
        L = jnp.sum(w * K)
        n = self.layout.n_dirs
        Lbar = jnp.zeros((n, n), dtype=G.dtype).at[rows, cols].add(w[None] * dK)
        A = Lbar + Lbar.T
        A = A * (1.0 - jnp.eye(n, dtype=G.dtype))
        return L, A


@functools.lru_cache(maxsize=None)
def gram_loss(gate, expert, m: int, m_star: int) -> GramLoss:
    return GramLoss(get_gate(gate), get_expert(expert), int(m), int(m_star))
