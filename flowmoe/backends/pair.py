"""The exact pair engine: L(G) from the closed-form pair kernel (Hermite experts, independent gates).

For per-unit gates, f = Σ_u π(v̄_uᵀx) P(w̄_uᵀx) and every expectation involves at most two units,
so L = ½ Σ_{u,u'} s_u s_{u'} K(u, u') with the pair kernel K derived by sympy
(:mod:`flowmoe.kernel`, ``docs/maths.md`` §3). Exact up to the gate-correlation tables
(Chebyshev interpolants accurate to ≈1e-14).
"""

from __future__ import annotations

from ..errors import SpecError
from ..gates import Expert, Gate
from ..kernel import GramLoss
from ..layout import Layout
from .base import ExpectationBackend


class PairBackend(ExpectationBackend):
    """Closed-form loss and gradient for independent gates ``gate`` and experts ``expert``."""

    def __init__(self, gate: Gate, expert: Expert, layout: Layout):
        if layout.shared or layout.shared_star or layout.extra:
            raise SpecError("model.backend", "the exact pair engine handles routed units only "
                                             "(no shared experts or extra directions); use a router-space backend")
        self.gate, self.expert, self.layout = gate, expert, layout
        self._gram_loss = GramLoss(gate, expert, layout)

    def loss(self, G):
        return self._gram_loss.loss(G)

    def loss_and_grad(self, G):
        return self._gram_loss.loss_and_grad(G)

    def pair_values(self, G):
        """(K, ∂K/∂slots) of every unordered unit pair u ≤ u', in the order of :attr:`pairs`."""
        return self._gram_loss.pair_values(G)

    @property
    def pairs(self):
        """(iu, ju): the unit indices of the pairs of :meth:`pair_values`."""
        return self._gram_loss.pairs

    def describe(self) -> dict:
        return {"name": "pair", "exact": True, "gate": self.gate.name, "expert": self.expert.name,
                "method": "closed-form pair kernel (Wick/Stein), gate correlations by Chebyshev tables"}

    def cost(self) -> dict:
        return {"pairs": int(len(self._gram_loss.weights)), "kernel_terms": len(self._gram_loss.kernel.pq)}

    @property
    def key(self) -> tuple:
        return ("pair", self.gate.name, self.expert.name, self.layout)


def gram_loss(gate, expert, m: int, m_star: int):
    """The exact pair backend of one structure (cached on canonical names: ``"sigmoid"`` and the
    Gate object give the same compiled functions)."""
    from . import make_backend

    return make_backend("pair", gate, expert, Layout(int(m), int(m_star)))
