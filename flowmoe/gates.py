"""Gates (routers) and experts, each defined once as a sympy expression.

A gate is a smooth scalar function π(z); its derivatives (needed up to order k + l + 1 for experts
He_k, He_l) come from sympy. An expert is a finite Hermite combination Σ_k a_k He_k(z) of
probabilists' Hermite polynomials (``"he3"`` is He₃(z) = z³ − 3z, ``"he1"`` a linear expert).

Conventions are objects (STYLE.md §6): each gate carries the formula it stands for, so every saved
result can say exactly which function was used (``"probit"`` is Φ(z) = ½(1 + erf(z/√2)), not
erf(z)).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np
import sympy as sp

from .errors import SpecError

Z = sp.Symbol("z", real=True)


@dataclass(frozen=True)
class Gate:
    """A smooth gate π(z). ``formula`` is a sympy expression in :data:`Z`."""

    name: str
    formula: sp.Expr
    description: str
    # Quadrature rule for R_{p,q} (flowmoe.correlation): ("hermite", n) or ("legendre", n, L) on
    # [−L, L] with the Gaussian density in the integrand. tanh varies on scale ½ with poles at
    # ±iπ/2, where 160 Gauss–Hermite nodes leave R₇₇(1) wrong by 0.9; Gauss–Legendre converges.
    quadrature: tuple = ("hermite", 160)
    cheb_nodes: int = 64  # Chebyshev nodes of the R_{p,q} interpolant on [−1, 1]

    @functools.lru_cache(maxsize=None)
    def derivative_expr(self, order: int) -> sp.Expr:
        """π^{(order)}(z) as a sympy expression."""
        return sp.diff(self.formula, Z, order)

    @functools.lru_cache(maxsize=None)
    def numpy_derivative(self, order: int):
        """π^{(order)} as a vectorised numpy function (float64).

        The logistic gates (sigmoid, tanh) use :func:`logistic_derivative`: sympy's form of their
        high derivatives overflows (exp(−kz) with k up to the order: NaN from order 18 on) and
        cancels catastrophically for z < 0. Other gates lambdify :meth:`derivative_expr`.
        """
        stable = _STABLE_DERIVATIVES.get(self.formula)
        if stable is not None:
            return functools.partial(stable, order)
        fn = sp.lambdify(Z, self.derivative_expr(order), modules=["numpy", "scipy"])

        def call(z):
            z = np.asarray(z, dtype=np.float64)
            return np.broadcast_to(np.asarray(fn(z), dtype=np.float64), z.shape)

        return call

    def jax_fn(self):
        """π as a JAX function (for simulations in R^d), lambdified from the same sympy formula
        that the kernel's correlation tables are built from."""
        return _jax_of(self.formula)

    coupled = False  # a per-expert gate: g_i = π(r_i) (see CoupledGate)

    def weights(self, r):
        """g_i = π(r_i) elementwise (JAX): the common interface with :class:`CoupledGate`."""
        return self.jax_fn()(r)

    def convention(self) -> dict:
        return {"name": self.name, "formula": str(self.formula), "description": self.description}


@dataclass(frozen=True)
class CoupledGate:
    """Weights coupled across the experts of one model: g_i(r) = φ(r_i) / Σ_j φ(r_j).

    ``numerator`` is φ as a :class:`Gate` (a sympy formula). ``softmax`` with temperature τ is
    φ(z) = exp(z/τ) (``shift``: the weights are invariant to a common shift of the logits, so the
    largest field is subtracted before exponentiating); ``normalized-sigmoid`` (DeepSeek-V3) is
    φ = logistic sigmoid. The normalisation runs over the routers of one model (the student's m,
    or the teacher's m⋆), so these gates need the router-space backend (``model.backend =
    "router"``); the exact pair engine handles independent per-expert gates only.
    """

    name: str
    numerator: Gate
    description: str
    shift: bool = False
    coupled = True

    def weights(self, r):
        """g(r) along the last axis (JAX), the same definition the router backend integrates."""
        import jax
        import jax.numpy as jnp

        if self.shift:
            r = r - jax.lax.stop_gradient(jnp.max(r, axis=-1, keepdims=True))
        num = self.numerator.jax_fn()(r)
        return num / jnp.sum(num, axis=-1, keepdims=True)

    def convention(self) -> dict:
        return {"name": self.name, "formula": f"({self.numerator.formula})(r_i) / sum_j ({self.numerator.formula})(r_j)",
                "description": self.description, "coupled": True}


def softmax_gate(temperature: float = 1.0) -> CoupledGate:
    """The softmax gate with temperature τ, g_i = exp(r_i/τ) / Σ_j exp(r_j/τ) (registered)."""
    tau = float(temperature)
    if not (np.isfinite(tau) and tau > 0):
        raise SpecError("model.temperature", f"must be a finite number > 0, got {temperature!r}")
    name = "softmax" if tau == 1.0 else f"softmax(tau={tau!r})"
    formula = sp.exp(Z) if tau == 1.0 else sp.exp(Z / sp.Float(tau, 17))
    gate = CoupledGate(name, Gate(f"exp-{tau!r}", formula, f"exp(z/{tau!r})"),
                       f"softmax over one model's routers, temperature {tau!r}", shift=True)
    return register_gate(gate)


_SOFTMAX_NAME = re.compile(r"^softmax\(tau=([0-9.eE+-]+)\)$")


GATES = {
    "sigmoid": Gate("sigmoid", 1 / (1 + sp.exp(-Z)), "logistic sigmoid 1/(1+exp(-z))"),
    "probit": Gate("probit", (1 + sp.erf(Z / sp.sqrt(2))) / 2, "Gaussian CDF Phi(z) = (1+erf(z/sqrt2))/2"),
    "erf": Gate("erf", sp.erf(Z / sp.sqrt(2)), "erf(z/sqrt2), odd, range (-1, 1)"),
    "tanh": Gate("tanh", sp.tanh(Z), "tanh(z)", ("legendre", 300, 12.0), 128),
    "identity": Gate("identity", Z, "identity (linear gate) z"),
}
GATES["normalized-sigmoid"] = CoupledGate("normalized-sigmoid", GATES["sigmoid"],
                                          "normalised sigmoid sigma(r_i) / sum_j sigma(r_j) (DeepSeek-V3)")


@functools.lru_cache(maxsize=None)
def _logistic_polys(order: int) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients (ascending, exact integers turned float) of P_n and Q_n with
    σ^{(n)}(z) = P_n(σ(z)) (P_0 = s, P_{n+1} = P_n'·s(1 − s)) and
    tanh^{(n)}(y) = Q_n(tanh y) (Q_0 = t, Q_{n+1} = Q_n'·(1 − t²))."""
    def next_poly(c, quad):
        d = [k * c[k] for k in range(1, len(c))]
        out = [0] * (len(d) + 2)
        for i, a in enumerate(d):
            out[i + quad[0]] += a
            out[i + 2] -= a
        return out
    P, Q = [0, 1], [0, 1]
    for _ in range(order):
        P, Q = next_poly(P, (1,)), next_poly(Q, (0,))
    return np.array(P, dtype=np.float64), np.array(Q, dtype=np.float64)


def logistic_derivative(order: int, z) -> np.ndarray:
    """σ^{(n)}(z) of σ(z) = 1/(1 + e^{−z}), finite and accurate (≤ 1e-11 of max|σ^{(n)}| for n ≤ 25,
    checked against 60-digit mpmath) for every real z.

    For |z| < 1.75 the tanh form σ^{(n)}(z) = 2^{−n−1} Q_n(tanh(z/2)) (no cancellation near 0);
    otherwise P_n(σ(−|z|)) with σ(−|z|) ≤ 0.15 (no cancellation, no overflow), and the symmetry
    σ^{(n)}(z) = (−1)^{n+1} σ^{(n)}(−z) for n ≥ 1.
    """
    z = np.asarray(z, dtype=np.float64)
    if order == 0:
        return 0.5 * (1.0 + np.tanh(0.5 * z))
    P, Q = _logistic_polys(order)
    small = np.polynomial.polynomial.polyval(np.tanh(0.5 * z), Q) * 0.5 ** (order + 1)
    s = 0.5 * (1.0 - np.tanh(0.5 * np.abs(z)))  # σ(−|z|), no overflow
    large = np.polynomial.polynomial.polyval(s, P) * np.where(z > 0, (-1.0) ** (order + 1), 1.0)
    return np.where(np.abs(z) < 1.75, small, large)


def _tanh_derivative(order: int, z) -> np.ndarray:
    """tanh^{(n)}(z) = 2^{n+1} σ^{(n)}(2z) for n ≥ 1 (tanh z = 2σ(2z) − 1)."""
    z = np.asarray(z, dtype=np.float64)
    if order == 0:
        return np.tanh(z)
    return 2.0 ** (order + 1) * logistic_derivative(order, 2.0 * z)


_STABLE_DERIVATIVES = {1 / (1 + sp.exp(-Z)): logistic_derivative, sp.tanh(Z): _tanh_derivative}


def register_gate(gate: Gate) -> Gate:
    """Add a gate to :data:`GATES` (so specs can name it); a different gate of the same name is refused."""
    known = GATES.get(gate.name)
    if known is not None and known != gate:
        raise SpecError("model.gate", f"a different gate named {gate.name!r} is already registered")
    GATES[gate.name] = gate
    return gate


softmax_gate(1.0)


def get_gate(name, field: str = "model.gate") -> Gate:
    """The registered gate of this name (a :class:`Gate` object is registered on first use)."""
    if isinstance(name, (Gate, CoupledGate)):
        return register_gate(name)
    if isinstance(name, str) and name not in GATES and _SOFTMAX_NAME.match(name):
        try:
            return softmax_gate(float(_SOFTMAX_NAME.match(name).group(1)))
        except ValueError:
            pass
    if not isinstance(name, str) or name not in GATES:
        raise SpecError(field, f"unknown gate {name!r}; allowed: {sorted(GATES)}")
    return GATES[name]


@functools.lru_cache(maxsize=None)
def _jax_of(expr: sp.Expr):
    """A JAX function of z from a sympy expression in :data:`Z` (constants broadcast to z's shape)."""
    import jax.scipy.special as jsp

    # sympy's JAX printer leaves the error function to the math module: map it explicitly.
    fn = sp.lambdify(Z, expr, modules=[{"erf": jsp.erf, "erfc": jsp.erfc}, "jax"])
    return lambda z: fn(z) + 0.0 * z


@dataclass(frozen=True)
class Expert:
    """A finite Hermite combination Σ a_k He_k. ``terms`` is a tuple of (k, a_k), k ≥ 1 ascending."""

    terms: tuple

    @property
    def name(self) -> str:
        parts = [f"he{k}" if a == 1 else f"{a!r}*he{k}" for k, a in self.terms]
        return "+".join(parts)

    @property
    def max_degree(self) -> int:
        return max(k for k, _ in self.terms)

    def polynomial(self) -> sp.Expr:
        return sum(sp.nsimplify(a) * hermite_he(k, Z) for k, a in self.terms)

    def numpy_fn(self):
        return sp.lambdify(Z, self.polynomial(), modules="numpy")

    def jax_fn(self):
        """The expert as a JAX function, lambdified from :meth:`polynomial` (the kernel's expression)."""
        return _jax_of(sp.expand(self.polynomial()))

    def convention(self) -> dict:
        return {"name": self.name, "polynomial": str(sp.expand(self.polynomial())),
                "basis": "probabilists' Hermite He_k, E[He_k(z)^2] = k!"}


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_EXPERT_TERM = re.compile(rf"^(?:({_NUMBER})\*)?he(\d+)$")
MAX_EXPERT_DEGREE = 12
"""Highest Hermite degree of an expert (lower for some gates: :data:`TABLE_DEGREE_LIMITS`). The
kernel needs gate correlations R_{p,q} up to p, q = 2K + 1 (the gradient); at K = 12 the sigmoid,
probit and erf losses agree with 4-D Gauss–Hermite quadrature to ≤ 1e-9 relative
(``tests/test_reliability.py``), and the symbolic derivation of the pair kernel takes about a
minute, growing fast beyond."""


def get_expert(spec, field: str = "model.expert") -> Expert:
    """Parse ``"he3"``, ``"he2+0.5*he4"``, or a mapping ``{k: a_k}`` into an :class:`Expert`."""
    if isinstance(spec, Expert):
        return spec
    terms: dict[int, float] = {}
    if isinstance(spec, str):
        # Terms are split at '+' that is not the sign of an exponent ("1e+2*he3").
        for part in re.split(r"(?<![0-9.][eE])\+", "".join(spec.split()).lower()):
            match = _EXPERT_TERM.match(part)
            if not match:
                raise SpecError(field, f"cannot read expert {spec!r} (at {part!r}); allowed: 'heK' with "
                                       f"1 ≤ K ≤ {MAX_EXPERT_DEGREE} (e.g. 'he3', 'he1') or a sum of terms "
                                       "'a*heK' with a a decimal number, such as 'he2+0.5*he4'")
            coef = float(match.group(1)) if match.group(1) else 1.0
            k = int(match.group(2))
            terms[k] = terms.get(k, 0.0) + coef
    elif isinstance(spec, dict):
        for k, a in spec.items():
            if isinstance(k, bool) or not isinstance(k, (int, np.integer, str)) or not str(k).isdigit():
                raise SpecError(field, f"the keys of an expert mapping are degrees K (integers ≥ 1), got {k!r}")
            if isinstance(a, (bool, str, bytes)) or np.ndim(a) != 0 or np.iscomplexobj(a):
                raise SpecError(field, f"the coefficient of He_{k} must be a real number, got {a!r}")
            try:
                terms[int(k)] = terms.get(int(k), 0.0) + float(a)
            except (TypeError, ValueError, OverflowError):
                raise SpecError(field, f"the coefficient of He_{k} must be a real number, got {a!r}") from None
    else:
        raise SpecError(field, f"expected a string such as 'he3' or a mapping {{k: a_k}}, got {spec!r}")
    if not terms or any(k < 1 for k in terms):
        raise SpecError(field, f"expert degrees must be ≥ 1 (He_0 is a constant), got {spec!r}")
    if max(terms) > MAX_EXPERT_DEGREE:
        raise SpecError(field, f"expert degree {max(terms)} is beyond the supported limit K ≤ {MAX_EXPERT_DEGREE} "
                               f"(the gate-correlation tables are verified up to order 2K + 1 = "
                               f"{2 * MAX_EXPERT_DEGREE + 1}), got {spec!r}")
    if any(not np.isfinite(a) for a in terms.values()):
        raise SpecError(field, f"expert coefficients must be finite, got {spec!r}")
    clean = tuple(sorted((k, int(a) if float(a).is_integer() else a) for k, a in terms.items() if a != 0))
    if not clean:
        raise SpecError(field, f"expert {spec!r} is identically zero")
    return Expert(clean)


TABLE_DEGREE_LIMITS = {"tanh": 8}
"""Per-gate limits below MAX_EXPERT_DEGREE. The kernel is a Stein sum Σ R_{p,q}·monomials whose
terms cancel; R_{p,q} is tabulated to 1e-13 of sqrt(E[π^{(p)}²]E[π^{(q)}²]), which for tanh grows
like 2^{p+q}. Loss against 4-D Gauss–Hermite quadrature (m = 2, m⋆ = 1, generic / strongly
correlated directions): tanh He₈ 1e-13 / 2e-11, He₁₀ 8e-10 / 5e-7, He₁₂ 2e-6; sigmoid He₁₂
1e-13 / 1e-9; probit and erf He₁₂ 1e-14 (generic)."""


def expert_degree_limit(gate) -> int:
    """The highest expert degree K whose tables (order 2K + 1) are accurate for this gate."""
    return min(TABLE_DEGREE_LIMITS.get(get_gate(gate).name, MAX_EXPERT_DEGREE), MAX_EXPERT_DEGREE)


def check_expert_degree(gate, expert, field: str = "model.expert") -> None:
    """Refuse an expert whose degree is beyond what the gate's correlation tables support."""
    gate, expert = get_gate(gate), get_expert(expert, field)
    limit = expert_degree_limit(gate)
    if expert.max_degree > limit:
        raise SpecError(field, f"expert {expert.name!r} has degree {expert.max_degree}; with gate {gate.name!r} the "
                               f"correlation tables are accurate up to degree K ≤ {limit} (order 2K + 1 = "
                               f"{2 * limit + 1})")


def hermite_he(k: int, z) -> sp.Expr:
    """Probabilists' Hermite polynomial He_k(z) (He₀ = 1, He₁ = z, He_{k+1} = z He_k − k He_{k−1})."""
    prev, cur = sp.Integer(1), z
    if k == 0:
        return prev
    for n in range(1, k):
        prev, cur = cur, sp.expand(z * cur - n * prev)
    return cur
