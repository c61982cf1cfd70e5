"""Gate correlation functions R_{p,q}(ρ) = E[π^{(p)}(s) π^{(q)}(u)] (docs/maths.md §3).

(s, u) is a standard bivariate normal pair with correlation ρ. Price's theorem gives
R'_{p,q} = R_{p+1,q+1}, and R_{p,q} = R_{q,p}. Each R_{p,q} is smooth on the closed interval
[−1, 1], so it is stored as a Chebyshev interpolant whose node values come from a
``quad_nodes × quad_nodes`` Gauss–Hermite rule. The Hermite series Σ c_{n+p} c_{n+q} ρⁿ/n!
converges slowly near |ρ| = 1 and is only used for checks at small ρ.

The node values use the gate's product rule (``Gate.quadrature``): 160×160 Gauss–Hermite for the
sigmoid, probit, erf and identity gates; 300×300 Gauss–Legendre on [−12, 12] (Gaussian density in
the integrand) for tanh, whose derivatives vary on scale ½ with poles at ±iπ/2.

Accuracy (checked in ``tests/test_correlation.py`` against independent adaptive quadrature; for
tanh with 128 Chebyshev nodes, its high-order R reaching |R₇₇(±1)| ≈ 4e3):
≤ 1e-10 on all of [−1, 1] for p, q ≤ 7 with the defaults (90 nodes are not enough for
R₇₇ at ρ = ±1: error 2e-10; 160 nodes: 3e-14 against a 30-digit mpmath quadrature).

High orders: a table whose Chebyshev tail (last coefficients) exceeds :data:`TAIL_TOL` of its size
is refused with a SpecError naming the expert degree it supports. With the defaults the tables of
the sigmoid, probit and erf gates converge up to order 25 (experts up to He₁₂; the He₁₂ loss agrees
with 4-D quadrature to 1e-13), those of tanh up to order 15 (He₇), see
:data:`flowmoe.gates.TABLE_DEGREE_LIMITS`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from .errors import SpecError
from .gates import get_gate

DEFAULT_CHEB_NODES = 64
DEFAULT_QUAD_NODES = 160
NOISE_FLOOR = 1e-15  # coefficients below this fraction of max(1, max |c|) of their column are quadrature noise
TAIL_TOL = 1e-13  # a column whose Chebyshev tail exceeds this fraction of its size gets more nodes
MAX_CHEB_NODES = 512


def gauss_hermite_normal(n: int):
    """Nodes and weights for E[f(z)], z ~ N(0, 1), with n Gauss–Hermite points."""
    x, w = np.polynomial.hermite.hermgauss(n)
    return np.sqrt(2.0) * x, w / np.sqrt(np.pi)


def hermite_coefficients(gate, kmax: int, quad_nodes: int = 200) -> np.ndarray:
    """c_k = E[π(z) He_k(z)] = E[π^{(k)}(z)] for k = 0..kmax (Gauss–Hermite)."""
    gate = get_gate(gate)
    z, w = gauss_hermite_normal(quad_nodes)
    return np.array([w @ gate.numpy_derivative(k)(z) for k in range(kmax + 1)])


def normal_rule(rule: tuple):
    """Nodes and weights for E[f(z)], z ~ N(0, 1): ("hermite", n) or ("legendre", n, L)."""
    if rule[0] == "hermite":
        return gauss_hermite_normal(int(rule[1]))
    n, L = int(rule[1]), float(rule[2])
    x, w = np.polynomial.legendre.leggauss(n)
    z = L * x
    return z, L * w * np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi)


def correlation_quadrature(gate, p: int, q: int, rho, quad_nodes: int | None = None):
    """R_{p,q}(ρ) by a 2-D product rule in (s, z), u = ρ s + √(1−ρ²) z.

    The rule is the gate's (``Gate.quadrature``); ``quad_nodes`` overrides its number of nodes.
    """
    return _correlations(gate, [p], q, rho, quad_nodes)[0]


def _correlations(gate, ps, q: int, rho, quad_nodes: int | None = None) -> np.ndarray:
    """R_{p,q}(ρ) for every p in ``ps`` and one q: π^{(q)} is evaluated on the grid once."""
    gate = get_gate(gate)
    rho = np.atleast_1d(np.asarray(rho, dtype=np.float64))
    rule = gate.quadrature if quad_nodes is None else (gate.quadrature[0], quad_nodes, *gate.quadrature[2:])
    z, w = normal_rule(rule)
    u = rho[None, None, :] * z[:, None, None] + np.sqrt(np.clip(1.0 - rho**2, 0.0, None))[None, None, :] * z[None, :, None]
    inner = np.einsum("j,ijr->ir", w, gate.numpy_derivative(q)(u))  # ∫ π^{(q)}(u) dz, for each s
    return np.stack([np.einsum("i,i,ir->r", w, gate.numpy_derivative(p)(z), inner) for p in ps])


def chebyshev_basis(x, n: int):
    """[T_0(x), …, T_{n−1}(x)] stacked on a new last axis (doubling construction)."""
    B = jnp.stack([jnp.ones_like(x), x], axis=-1)
    while B.shape[-1] < n:
        k = B.shape[-1]
        t_k = 2.0 * x * B[..., k - 1] - B[..., k - 2]  # T_k
        # T_{k+j} = 2 T_k T_j − T_{k−j}, j = 0..k−1; T_{k−j} runs T_k, T_{k−1}, …, T_1.
        back = jnp.concatenate([t_k[..., None], B[..., :0:-1]], axis=-1)
        B = jnp.concatenate([B, 2.0 * t_k[..., None] * B - back], axis=-1)
    return B[..., :n]


@dataclass(frozen=True)
class EvaluationPlan:
    """How :meth:`CorrelationTable.evaluate` evaluates a set of columns from one basis of ``n`` terms.

    ``blocks``: (start, coefficients) pairs; start 0 multiplies T_0, T_2, … and start 1 T_1, T_3, …,
    each block holding the parts of the columns that have one. Column j of the result is
    ``products[first[j]] + products[second[j]]`` in the concatenated products (the last index is a
    zero column)."""

    n: int
    blocks: tuple
    first: np.ndarray
    second: np.ndarray


def evaluation_plan(cols: np.ndarray, noise: float = NOISE_FLOOR) -> EvaluationPlan:
    """The plan for Chebyshev coefficient columns ``cols`` (n, J).

    In each column the coefficients with |c_k| ≤ ``noise`` · max(1, max_k |c_k|) after the last
    larger one are dropped, and so is its even (odd) part when all of it is that small: the gates'
    R_{p,q} are even or odd functions of ρ when p + q is even and p, q ≥ 1 (π^{(p)}(−s) = ±π^{(p)}(s)
    for the sigmoid, probit, erf and tanh gates); this is detected from the coefficients, not
    assumed. What is dropped sums to ≲ 1e-14 (the noise of the quadrature that made the table).
    """
    cols = np.array(cols, dtype=np.float64)
    J = cols.shape[1]
    floor = noise * np.maximum(1.0, np.max(np.abs(cols), axis=0))
    small = np.abs(cols) <= floor
    has = []
    for start in (0, 1):
        part = ~small[start::2]
        has.append(part.any(axis=0))
        cols[start::2, ~has[-1]] = 0.0
    lengths = np.array([int(np.flatnonzero(~small[:, j])[-1]) + 1 if (~small[:, j]).any() else 0 for j in range(J)])
    for j in range(J):
        cols[lengths[j]:, j] = 0.0
    n = max(2, int(lengths.max()))
    blocks, first, second = [], np.full(J, -1), np.full(J, -1)
    offset = 0
    for start in (0, 1):
        idx = np.flatnonzero(has[start])
        if not idx.size:
            continue
        rows = cols[start:n:2][:, idx]
        rows = rows[: int(np.flatnonzero(np.any(rows != 0.0, axis=1))[-1]) + 1]
        blocks.append((start, rows))
        slot = first if start == 0 else second
        slot[idx] = offset + np.arange(idx.size)
        offset += idx.size
    # Columns with only an odd part take it as their first term; absent terms read the zero column.
    only_odd = (first < 0) & (second >= 0)
    first[only_odd], second[only_odd] = second[only_odd], -1
    first[first < 0], second[second < 0] = offset, offset
    return EvaluationPlan(n, tuple(blocks), first, second)


@dataclass(frozen=True)
class CorrelationTable:
    """Chebyshev interpolants of R_{p,q} for all 0 ≤ p ≤ q ≤ order on [−1, 1].

    ``coeffs[p, q]`` holds the Chebyshev coefficients (length ``cheb_nodes``); the table is
    symmetric in (p, q). Evaluate with :meth:`evaluate` (JAX, vectorised, jit-safe).
    """

    gate_name: str
    order: int
    cheb_nodes: int
    quad_nodes: int
    coeffs: np.ndarray  # (order+1, order+1, cheb_nodes)

    def evaluate(self, pq: list[tuple[int, int]], rho) -> jnp.ndarray:
        """R_{p,q}(ρ) for each (p, q) in ``pq``; result has shape ``(len(pq),) + rho.shape``.

        One Chebyshev basis T_0..T_{n−1}(ρ) serves every (p, q); it is built by doubling,
        T_{n+k} = 2 T_n T_k − T_{n−k}, in log₂ n vectorised steps (the three-term recurrence takes
        n sequential steps and was 4× slower on CPU at n = 64). Then two matrix products: the even
        basis functions with the columns that have an even part, the odd ones with those that have
        an odd part (:func:`evaluation_plan`: coefficients at the quadrature noise floor are dropped,
        so e.g. R_{0,2} of the sigmoid, an odd function of ρ, uses 11 odd terms instead of 64).
        """
        rho = jnp.asarray(rho)
        plan = evaluation_plan(np.stack([self.coeffs[p, q] for p, q in pq], axis=-1))
        T = chebyshev_basis(rho, plan.n)
        parts = [T[..., start:start + 2 * len(block):2] @ jnp.asarray(block) for start, block in plan.blocks]
        parts.append(jnp.zeros(rho.shape + (1,), dtype=T.dtype))  # the zero column of absent parts
        out = jnp.concatenate(parts, axis=-1)
        out = out[..., plan.first] + out[..., plan.second]
        return jnp.moveaxis(out, -1, 0)

    def evaluate_numpy(self, p: int, q: int, rho) -> np.ndarray:
        return np.polynomial.chebyshev.chebval(np.asarray(rho, dtype=np.float64), self.coeffs[p, q])


def chebyshev_tail(coeffs: np.ndarray, scale) -> float:
    """max over rows of (largest of the last 4 Chebyshev coefficients) / ``scale`` of the row: the
    truncation error of the interpolant relative to the size the row can have."""
    coeffs = np.atleast_2d(coeffs)
    return float(np.max(np.max(np.abs(coeffs[:, -4:]), axis=1) / np.asarray(scale)))


def _natural_scale(gate, q: int, quad_nodes: int) -> np.ndarray:
    """sqrt(E[π^{(p)}(z)²] E[π^{(q)}(z)²]) for p = 0..q, a bound on |R_{p,q}| (Cauchy–Schwarz)."""
    z, w = normal_rule(gate.quadrature if quad_nodes is None else (gate.quadrature[0], quad_nodes, *gate.quadrature[2:]))
    second = np.array([w @ gate.numpy_derivative(p)(z) ** 2 for p in range(q + 1)])
    return np.sqrt(np.maximum(second * second[q], np.finfo(float).tiny))


def _chebyshev_column(gate, q: int, n: int, quad_nodes: int) -> np.ndarray:
    """Chebyshev coefficients (q+1, n) of R_{p,q}, p = 0..q, from values at n first-kind points."""
    k = np.arange(n)
    theta = np.pi * (k + 0.5) / n
    values = _correlations(gate, list(range(q + 1)), q, np.cos(theta), quad_nodes)
    c = (2.0 / n) * values @ np.cos(np.outer(k, theta)).T
    c[:, 0] /= 2.0
    return c


@functools.lru_cache(maxsize=None)
def correlation_table(gate_name: str, order: int, cheb_nodes: int | None = None,
                      quad_nodes: int | None = None) -> CorrelationTable:
    """Build (once per process) the Chebyshev table of R_{p,q}, p, q ≤ ``order``.

    Each column R_{·,q} starts with the gate's ``cheb_nodes`` (or ``cheb_nodes``) and doubles them,
    up to :data:`MAX_CHEB_NODES`, until its Chebyshev tail is below :data:`TAIL_TOL` of the bound
    sqrt(E[π^{(p)}²] E[π^{(q)}²]) ≥ |R_{p,q}| (high orders vary faster in ρ); shorter columns are padded with zeros (the same interpolant).
    A column that does not converge, or whose node values are not finite, raises SpecError.
    """
    gate = get_gate(gate_name)
    quad_nodes = int(gate.quadrature[1]) if quad_nodes is None else quad_nodes
    n0 = gate.cheb_nodes if cheb_nodes is None else cheb_nodes
    columns = []
    for q in range(order + 1):
        n = n0
        scale = _natural_scale(gate, q, quad_nodes)
        while True:
            column = _chebyshev_column(gate, q, n, quad_nodes)
            if not np.all(np.isfinite(column)):
                raise SpecError("model.gate", f"the derivatives of gate {gate.name!r} of order {q} are not finite "
                                              f"at the quadrature nodes, so R_{{p,{q}}} cannot be tabulated; use "
                                              f"experts of degree K ≤ {max((q - 2) // 2, 0)} with this gate "
                                              f"(order 2K + 1 < {q})")
            tail = chebyshev_tail(column, scale)
            if tail <= TAIL_TOL or 2 * n > MAX_CHEB_NODES:
                break
            n *= 2
        if tail > TAIL_TOL:
            raise SpecError("model.expert", f"the Chebyshev table of R_{{p,{q}}} for gate {gate.name!r} has not "
                                            f"converged ({n} nodes leave a tail of {tail:.1e} of its natural size); an "
                                            f"expert of degree K needs order 2K + 1, so use K ≤ {max((q - 2) // 2, 0)}")
        columns.append(column)
    n = max(c.shape[1] for c in columns)
    coeffs = np.zeros((order + 1, order + 1, n))
    for q, column in enumerate(columns):
        coeffs[: q + 1, q, : column.shape[1]] = column
        coeffs[q, : q + 1, : column.shape[1]] = column
    return CorrelationTable(gate.name, order, n, quad_nodes, coeffs)
