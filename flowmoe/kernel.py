"""The numerical pair kernel and the population loss on the Gram matrix (docs/maths.md §2–§3).

The symbolic layer (:mod:`flowmoe.symbolic`) derives K and ∂K/∂ρ for one pair of units; this
module turns them into one vectorised JAX function (sympy ``lambdify`` on arrays, with common
subexpressions eliminated) and evaluates it over all (m + m⋆)² ordered pairs of units at once.
The whole m-expert system is never expanded symbolically.

Loss (docs/maths.md §3): with units running over students (sign +1) and teachers (sign −1),
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
from .layout import Layout


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


def pair_kernel(gate, expert1, expert2=None) -> PairKernel:
    """The compiled pair kernel of (gate, expert1, expert2), cached on canonical names."""
    gate = get_gate(gate)
    expert1 = get_expert(expert1)
    expert2 = expert1 if expert2 is None else get_expert(expert2)
    return _pair_kernel(gate.name, expert1.name, expert2.name)


@functools.lru_cache(maxsize=None)
def _pair_kernel(gate_name: str, expert1_name: str, expert2_name: str) -> PairKernel:
    gate, expert1, expert2 = get_gate(gate_name), get_expert(expert1_name), get_expert(expert2_name)
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


class GramLoss:
    """L(G) and A = ∂L/∂G (symmetric, zero diagonal, each unordered pair once) for one structure.

    Pairs are the unordered unit pairs u ≤ u' of the layout (K(u', u) is K(u, u') with the slots
    ab↔ce and ae↔cb swapped); pair (u, u') has weight s_u s_u' (u < u') or ½ s_u² (u = u') in
    L = ½ Σ_{u,u'} s_u s_{u'} K(u, u').
    """

    def __init__(self, gate, expert, layout: Layout):
        self.kernel = pair_kernel(gate, expert)
        self.layout = layout
        iu, ju = np.triu_indices(layout.n_units)
        self.pairs = (iu, ju)  # unit indices of each evaluated pair, in the order of pair_values
        self.weights = np.where(iu == ju, 0.5, 1.0) * layout.sign[iu] * layout.sign[ju]
        r1, e1 = layout.router[iu], layout.expert[iu]  # unit u: router a, expert b
        r2, e2 = layout.router[ju], layout.expert[ju]  # unit u': router c, expert e
        rows = {"ac": r1, "ab": r1, "ae": r1, "cb": r2, "be": e1, "ce": r2}
        cols = {"ac": r2, "ab": e1, "ae": e2, "cb": e1, "be": e2, "ce": e2}
        S = symbolic.SLOTS
        self.slot_index = (np.stack([rows[s] for s in S]), np.stack([cols[s] for s in S]))
        # Dense assembly of ∂L/∂G (no scatter): pair k = (u, u') sits at [u, u'] of a unit × unit
        # matrix (index P, a zero, below the diagonal); units' directions in the order
        # [routers | experts] are permuted to the layout's positions by one static gather.
        nu = layout.n_units
        tri = np.full((nu, nu), len(iu))
        tri[iu, ju] = np.arange(len(iu))
        self._tri = tri
        order = np.concatenate([layout.router, layout.expert])
        self._unit_order = np.argsort(order) if len(order) == layout.n_dirs else None

    def pair_values(self, G):
        rows, cols = self.slot_index
        rho = G[rows, cols]
        return self.kernel(rho)

    def loss(self, G):
        K, _ = self.pair_values(G)
        return jnp.sum(jnp.asarray(self.weights) * K)

    def loss_and_grad(self, G):
        """(L, A) with A_pq = ∂L/∂G_pq for p ≠ q (G_pq = G_qp one variable), A_pp = 0."""
        rows, cols = self.slot_index
        K, dK = self.kernel(G[rows, cols])
        w = jnp.asarray(self.weights)
        L = jnp.sum(w * K)
        n = self.layout.n_dirs
        wdK = w[None] * dK
        if self._unit_order is None:  # directions outside the routed units: scatter-add
            Lbar = jnp.zeros((n, n), dtype=G.dtype).at[rows, cols].add(wdK)
        else:
            Lbar = self._assemble(wdK)
        A = Lbar + Lbar.T
        A = A * (1.0 - jnp.eye(n, dtype=G.dtype))
        return L, A

    def _assemble(self, wdK):
        """Σ over pairs of the six slot derivatives at their Gram positions, as dense blocks.

        With D_s[u, u'] the weighted slot derivative of pair (u ≤ u') (zero below the diagonal), in
        unit coordinates [routers | experts]: (R, R) = D_ac; (E, E) = D_be; (R, E) = D_ae + D_cbᵀ +
        diag(Σ_u' D_ab[u, u'] + Σ_u' D_ce[u', u]) (slots ab and ce are a unit's own router–expert
        entry); (E, R) = 0 (the caller adds the transpose)."""
        padded = jnp.concatenate([wdK, jnp.zeros((6, 1), dtype=wdK.dtype)], axis=1)
        D = dict(zip(symbolic.SLOTS, padded[:, self._tri]))
        RE = D["ae"] + D["cb"].T + jnp.diag(jnp.sum(D["ab"], axis=1) + jnp.sum(D["ce"], axis=0))
        top = jnp.concatenate([D["ac"], RE], axis=1)
        bottom = jnp.concatenate([jnp.zeros_like(RE), D["be"]], axis=1)
        unit = jnp.concatenate([top, bottom], axis=0)
        order = self._unit_order
        return unit[order][:, order]
