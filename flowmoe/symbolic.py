"""Symbolic derivation of the pair kernel, the loss and its derivatives (docs/maths.md §3).

The only rule used is Gaussian integration by parts (Stein's lemma) for a unit vector e:

    E[He_n(eᵀx) H(x)] = E[(eᵀ∇)ⁿ H(x)],

applied twice to K(a,b;c,e) = E[π(aᵀx) P(bᵀx) π(cᵀx) Q(eᵀx)] with Hermite expansions P, Q of the
two experts. A directional derivative eᵀ∇ acts on π^{(i)}(aᵀx) as ρ_ae·π^{(i+1)}(aᵀx) and on
He_n(bᵀx) as ρ_be·n·He_{n−1}(bᵀx). After both expert polynomials have been used up, what is
left is E[π^{(p)}(aᵀx) π^{(q)}(cᵀx)] = R_{p,q}(ρ_ac). Sympy carries out these steps for each
(gate, expert) case; nothing about the resulting sum over contraction multiplicities is
hand-written. ``tests/test_symbolic.py`` checks the result against the closed-form diagram sum
of docs/maths.md §3 and ``tests/test_kernel.py`` against 4-D Gauss–Hermite quadrature.

Slots of the pair kernel (the six overlaps between the four directions):
``ac`` (router–router), ``ab`` (router 1–expert 1), ``ae`` (router 1–expert 2),
``cb`` (router 2–expert 1), ``be`` (expert–expert), ``ce`` (router 2–expert 2).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sympy as sp

from .gates import Expert, get_expert

SLOTS = ("ac", "ab", "ae", "cb", "be", "ce")
RHO = {s: sp.Symbol(f"rho_{s}", real=True) for s in SLOTS}


class R(sp.Function):
    """Gate correlation R_{p,q}(ρ) = E[π^{(p)}(s) π^{(q)}(u)]; Price: ∂R_{p,q}/∂ρ = R_{p+1,q+1}."""

    nargs = 3

    @classmethod
    def eval(cls, p, q, rho):
        if p.is_Integer and q.is_Integer and p > q:  # R_{p,q} = R_{q,p}
            return cls(q, p, rho)
        return None

    def fdiff(self, argindex=3):
        if argindex != 3:
            raise sp.ArgumentIndexError(self, argindex)
        p, q, rho = self.args
        return R(p + 1, q + 1, rho)

    def _latex(self, printer):
        p, q, rho = self.args
        return rf"R_{{{p},{q}}}\!\left({printer._print(rho)}\right)"

    def _sympystr(self, printer):
        p, q, rho = self.args
        return f"R_{p}{q}({printer._print(rho)})"


class _He(sp.Function):
    """He_n(t) as an opaque factor with d/dt He_n = n He_{n−1} (used only during the derivation)."""

    nargs = 2


class _Gate(sp.Function):
    """π^{(i)}(t) as an opaque factor (used only during the derivation)."""

    nargs = 2


_A, _B, _C, _E = sp.symbols("t_a t_b t_c t_e", real=True)


def _directional(expr: sp.Expr, weights: dict) -> sp.Expr:
    """Apply uᵀ∇ to a sum of products of opaque factors; ``weights[t] = ρ_{u,t}``."""
    out = sp.Integer(0)
    for term in sp.Add.make_args(sp.expand(expr)):
        factors = sp.Mul.make_args(term)
        for idx, f in enumerate(factors):
            if isinstance(f, _Gate):
                i, t = f.args
                d = weights.get(t, 0) * _Gate(i + 1, t)
            elif isinstance(f, _He):
                n, t = f.args
                d = weights.get(t, 0) * n * _He(n - 1, t) if n > 0 else 0
            else:
                continue
            if d == 0:
                continue
            rest = sp.Mul(*(factors[:idx] + factors[idx + 1:]))
            out += rest * d
    return sp.expand(out)


def _stein(expr: sp.Expr, t: sp.Symbol, weights: dict) -> sp.Expr:
    """Replace every factor He_n(t) by (uᵀ∇)ⁿ acting on the remaining factors: E[He_n(t) H] = E[(uᵀ∇)ⁿH]."""
    out = sp.Integer(0)
    for term in sp.Add.make_args(sp.expand(expr)):
        factors = sp.Mul.make_args(term)
        hes = [f for f in factors if isinstance(f, _He) and f.args[1] == t]
        if not hes:
            out += term
            continue
        (he,) = hes
        rest = sp.Mul(*[f for f in factors if f is not he])
        for _ in range(int(he.args[0])):
            rest = _directional(rest, weights)
        out += rest
    return sp.expand(out)


@functools.lru_cache(maxsize=None)
def pair_kernel(expert1: Expert, expert2: Expert | None = None) -> sp.Expr:
    """K(a,b;c,e) = E[π(aᵀx) P(bᵀx) π(cᵀx) Q(eᵀx)] as Σ coeff · R_{p,q}(ρ_ac) · monomial."""
    expert1 = get_expert(expert1)
    expert2 = expert1 if expert2 is None else get_expert(expert2)
    rho = RHO
    P = sum(sp.nsimplify(a) * _He(k, _B) for k, a in expert1.terms)
    Q = sum(sp.nsimplify(a) * _He(k, _E) for k, a in expert2.terms)
    expr = _Gate(0, _A) * _Gate(0, _C) * P * Q
    # Use up He(eᵀx) first: eᵀ∇ sees π(aᵀx) (ρ_ae), π(cᵀx) (ρ_ce) and He(bᵀx) (ρ_be).
    expr = _stein(expr, _E, {_A: rho["ae"], _C: rho["ce"], _B: rho["be"]})
    # Then He(bᵀx): bᵀ∇ sees π(aᵀx) (ρ_ab) and π(cᵀx) (ρ_cb).
    expr = _stein(expr, _B, {_A: rho["ab"], _C: rho["cb"]})
    # Only gate factors remain: E[π^{(p)}(aᵀx) π^{(q)}(cᵀx)] = R_{p,q}(ρ_ac).
    out = sp.Integer(0)
    for term in sp.Add.make_args(expr):
        p = q = 0
        coeff = sp.Integer(1)
        for f in sp.Mul.make_args(term):
            if isinstance(f, _Gate):
                if f.args[1] == _A:
                    p = f.args[0]
                else:
                    q = f.args[0]
            else:
                coeff *= f
        out += coeff * R(p, q, rho["ac"])
    return sp.expand(out)


def kernel_gradient(K: sp.Expr) -> dict:
    """∂K/∂ρ_s for each slot (Price's theorem for the ρ_ac dependence through R)."""
    return {s: sp.expand(sp.diff(K, RHO[s])) for s in SLOTS}


def correlation_indices(*exprs: sp.Expr) -> list[tuple[int, int]]:
    """The (p, q) of every R_{p,q} appearing in the expressions, sorted."""
    found = set()
    for e in exprs:
        for r in e.atoms(R):
            found.add((int(r.args[0]), int(r.args[1])))
    return sorted(found)


def self_term(K: sp.Expr) -> sp.Expr:
    """K_ii: the same unit twice (a = c, b = e), ρ = ⟨v̄_i, w̄_i⟩; R_{p,q}(1) stays symbolic."""
    rho = sp.Symbol("rho", real=True)
    sub = {RHO["ac"]: 1, RHO["be"]: 1, RHO["ab"]: rho, RHO["ae"]: rho, RHO["cb"]: rho, RHO["ce"]: rho}
    return sp.collect(sp.expand(K.subs(sub)), rho)


# ---------------------------------------------------------------------------------------------
# The reduced one-student / one-teacher system in five overlaps.

ALPHA, BETA, MU, NU, RHO_S = sp.symbols("alpha beta mu nu rho", real=True)
REDUCED_NAMES = ("alpha", "beta", "mu", "nu", "rho")
PARTIALS = {s: sp.Symbol(f"L_{n}") for s, n in zip((ALPHA, BETA, MU, NU, RHO_S), REDUCED_NAMES)}


@dataclass(frozen=True)
class ReducedSystem:
    """One student (v̄, w̄) and one teacher (v⋆ ⊥ w⋆, unit), unit norms.

    Overlaps: α = ⟨v̄, v⋆⟩, β = ⟨w̄, w⋆⟩, μ = ⟨v̄, w⋆⟩, ν = ⟨w̄, v⋆⟩, ρ = ⟨v̄, w̄⟩.
    ``loss`` is L = ½K_ss − K_st + ½K_tt; ``rhs`` the exact gradient-flow ODE for the five overlaps,
    obtained from the general Gram ODE (docs/maths.md §2) applied to the symbolic 4×4 Gram.
    """

    loss: sp.Expr
    rhs: tuple
    gram: sp.Matrix
    rhs_generic: tuple  # the same ODE in terms of the partials L_x = ∂L/∂x (symbols PARTIALS)


@functools.lru_cache(maxsize=None)
def reduced_system(expert: Expert) -> ReducedSystem:
    expert = get_expert(expert)
    K = pair_kernel(expert)
    # Directions: 0 = v̄, 1 = w̄, 2 = v⋆, 3 = w⋆.
    G = sp.Matrix([[1, RHO_S, ALPHA, MU], [RHO_S, 1, NU, BETA], [ALPHA, NU, 1, 0], [MU, BETA, 0, 1]])

    def unit_pair(r1, e1, r2, e2):
        sub = {RHO["ac"]: G[r1, r2], RHO["ab"]: G[r1, e1], RHO["ae"]: G[r1, e2],
               RHO["cb"]: G[r2, e1], RHO["be"]: G[e1, e2], RHO["ce"]: G[r2, e2]}
        return K.xreplace(sub)

    loss = unit_pair(0, 1, 0, 1) / 2 - unit_pair(0, 1, 2, 3) + unit_pair(2, 3, 2, 3) / 2
    # ∂L/∂G_pq for the variable entries (each unordered pair once).
    entries = {(0, 1): RHO_S, (0, 2): ALPHA, (0, 3): MU, (1, 2): NU, (1, 3): BETA}

    def gram_rhs(partial):
        Lpq = sp.zeros(4, 4)
        for (p, q), sym in entries.items():
            Lpq[p, q] = Lpq[q, p] = partial(sym)
        # dū_p/dt = −(I − ū_p ū_pᵀ) Σ_k L_pk ū_k for the student directions, in Gram coordinates.
        B = sp.zeros(4, 4)
        for p in (0, 1):
            c = sum(Lpq[p, k] * G[p, k] for k in range(4))
            for k in range(4):
                B[p, k] = -(Lpq[p, k] - (c if k == p else 0))
        dG = B * G + (B * G).T
        return tuple(sp.expand(dG[p, q]) for p, q in [(0, 2), (1, 3), (0, 3), (1, 2), (0, 1)])

    rhs = gram_rhs(lambda sym: sp.diff(loss, sym))
    generic = gram_rhs(lambda sym: PARTIALS[sym])
    generic = tuple(sp.collect(e, list(PARTIALS.values())) for e in generic)
    return ReducedSystem(loss=loss, rhs=rhs, gram=G, rhs_generic=generic)
