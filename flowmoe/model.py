"""The student–teacher MoE in R^d as JAX functions, for simulations (docs/maths.md §1).

    f(θ, x) = Σ_i π(v̄_iᵀx) · P(w̄_iᵀx),   v̄ = v/‖v‖, w̄ = w/‖w‖,

π the gate (``get_gate(name).jax_fn()``), P the expert (``get_expert(name).jax_fn()``); the
teacher has the same form with its vectors V⋆, W⋆. Rows of V, W are the raw vectors.

- :meth:`MoEModel.batch_loss` is ½ · mean_b (f(θ, x_b) − f⋆(x_b))² on a batch X (B × d); its
  gradient in the raw (V, W) is taken by autodiff *through the normalisation*, i.e. each
  per-sample gradient is ∇_v f = ‖v‖⁻¹ (I − v̄v̄ᵀ) x π′(v̄ᵀx) P(w̄ᵀx) (and likewise for w), which is
  orthogonal to v: a finite step can only make ‖v‖ grow.
- :meth:`MoEModel.population_loss` is the exact L = ½E[(f − f⋆)²] through the Gram matrix of the
  unit directions (:mod:`flowmoe.kernel`; for coupled gates the router-space surrogate of
  :mod:`flowmoe.backends.router`), as a function of the raw vectors, so that its autodiff
  gradient is the exact population gradient (the one :func:`flowmoe.population_grad` returns).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax.numpy as jnp

from .gates import Expert, Gate, get_expert, get_gate
from .backends.pair import gram_loss


def unit_rows(U):
    """Rows of U divided by their Euclidean norms."""
    return U / jnp.linalg.norm(U, axis=1, keepdims=True)


def gram_of(V, W, V_star, W_star):
    """Gram matrix of the unit directions [v̄_1..v̄_m, w̄_1..w̄_m, v̄⋆.., w̄⋆..] (diagonal set to 1)."""
    U = unit_rows(jnp.concatenate([V, W, V_star, W_star]))
    G = U @ U.T
    eye = jnp.eye(G.shape[0], dtype=G.dtype)
    return G * (1 - eye) + eye


@dataclass(frozen=True, eq=False)
class MoEModel:
    """The MoE of one (gate, expert) pair; build it with :func:`moe_model` (cached)."""

    gate: Gate
    expert: Expert

    @functools.cached_property
    def _pi(self):
        return self.gate.jax_fn()

    @functools.cached_property
    def _P(self):
        return self.expert.jax_fn()

    def output(self, V, W, X):
        """f(x_b) for each row x_b of X: Σ_i g_i(V̄x_b) P(w̄_iᵀx_b), shape (B,).

        g_i = π(v̄_iᵀx) for a per-expert gate; for a coupled gate (softmax, normalised sigmoid)
        g = ``gate.weights`` over this model's routers, the definition the router backend integrates.
        """
        zv = X @ unit_rows(V).T
        zw = X @ unit_rows(W).T
        return jnp.sum(self.gate.weights(zv) * self._P(zw), axis=1)

    def batch_loss(self, V, W, X, y):
        """½ mean_b (f(x_b) − y_b)² (an unbiased estimate of L when x_b ~ N(0, I_d), y = f⋆(x))."""
        r = self.output(V, W, X) - y
        return 0.5 * jnp.mean(r * r)

    def population_loss(self, V, W, V_star, W_star):
        """Exact ½E[(f − f⋆)²] from the Gram matrix of the unit directions (docs/maths.md §3)."""
        fn = population_backend(self.gate, self.expert, V.shape[0], V_star.shape[0])
        return fn.loss(gram_of(V, W, V_star, W_star))


def population_backend(gate, expert, m: int, m_star: int):
    """The backend of the population loss: the exact pair engine for per-expert gates, the
    router-space backend (default options) for coupled gates (softmax, normalised sigmoid)."""
    gate = get_gate(gate, "gate")
    if not gate.coupled:
        return gram_loss(gate, expert, m, m_star)
    from .backends import make_backend
    from .layout import Layout

    return make_backend("router", gate, expert, Layout(int(m), int(m_star)))





def moe_model(gate="sigmoid", expert="he3") -> MoEModel:
    """The (cached) model of a gate and expert; names and objects give the same instance."""
    return _moe_model(get_gate(gate, "gate").name, get_expert(expert, "expert").name)


@functools.cache
def _moe_model(gate_name: str, expert_name: str) -> MoEModel:
    return MoEModel(get_gate(gate_name), get_expert(expert_name))
