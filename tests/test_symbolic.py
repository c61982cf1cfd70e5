"""The sympy pair kernel against the closed-form diagram sum of docs/maths.md §3, written out here.

flowmoe derives K(a,b;c,e) = E[π(aᵀx) P(bᵀx) π(cᵀx) Q(eᵀx)] by repeated Stein's lemma. The test
enumerates the Wick diagrams directly: for experts He_k and He_l,

    K = k! l! Σ R_{p,q}(ρ_ac) ρ_ab^{n_ab} ρ_ae^{n_ae} ρ_cb^{n_cb} ρ_be^{n_be} ρ_ce^{n_ce} / Π n!,

over n_ab + n_cb + n_be = k, n_ae + n_be + n_ce = l, with p = n_ab + n_ae, q = n_cb + n_ce, and for
Hermite combinations by bilinearity. The two expressions must be identical after expansion.
The self term is compared with the numbers of docs/maths.md using R_{p,q}(1) from adaptive quadrature.
"""

import math

import numpy as np
import pytest
import sympy as sp

from conftest import gate_derivative_scalar, normal_expectation
from flowmoe import symbolic
from flowmoe.gates import get_expert

SLOT_NAMES = ("ac", "ab", "ae", "cb", "be", "ce")
MY_RHO = {s: sp.Symbol(f"my_rho_{s}") for s in SLOT_NAMES}


def my_R(p, q):
    """Placeholder for R_{p,q}(ρ_ac); R is symmetric, so R_{p,q} and R_{q,p} share one symbol."""
    p, q = sorted((int(p), int(q)))
    return sp.Symbol(f"my_R_{p}_{q}")


def diagram_sum(k, l, d_ac=0):
    """The closed-form diagram sum for He_k × He_l (d_ac = 1: its derivative in ρ_ac, by Price)."""
    r = MY_RHO
    total = sp.Integer(0)
    for n_be in range(min(k, l) + 1):
        for n_ab in range(k - n_be + 1):
            n_cb = k - n_be - n_ab
            for n_ae in range(l - n_be + 1):
                n_ce = l - n_be - n_ae
                p, q = n_ab + n_ae, n_cb + n_ce
                powers = {"ab": n_ab, "ae": n_ae, "cb": n_cb, "be": n_be, "ce": n_ce}
                mono = sp.Mul(*(r[s] ** n for s, n in powers.items()))
                denom = math.prod(math.factorial(n) for n in powers.values())
                prefactor = sp.Rational(math.factorial(k) * math.factorial(l), denom)
                total += prefactor * my_R(p + d_ac, q + d_ac) * mono
    return sp.expand(total)


def combination_sum(terms1, terms2, d_ac=0):
    """Bilinear extension to experts Σ a_k He_k and Σ b_l He_l."""
    return sp.expand(sum(sp.nsimplify(a) * sp.nsimplify(b) * diagram_sum(k, l, d_ac)
                         for k, a in terms1 for l, b in terms2))


def to_mine(expr):
    """Rename flowmoe's symbols (ρ slots, R_{p,q}(ρ_ac)) to the test's own placeholders."""
    sub = {}
    for atom in expr.atoms(symbolic.R):
        p, q, rho = atom.args
        assert rho == symbolic.RHO["ac"], atom
        sub[atom] = my_R(p, q)
    expr = expr.xreplace(sub)
    sub = {}
    for s in expr.free_symbols:
        if s.name.startswith("my_R_"):
            continue
        assert s.name.startswith("rho_") and s.name[4:] in SLOT_NAMES, s
        sub[s] = MY_RHO[s.name[4:]]
    return sp.expand(expr.xreplace(sub))


CASES = [("he3", "he3"), ("he1", "he1"), ("he2", "he4"), ("he1", "he3"), ("he4", "he2"),
         ("he2+0.5*he4", "he3"), ("he1+he3", "he1+he3")]


@pytest.mark.parametrize("e1,e2", CASES, ids=[f"{a}x{b}" for a, b in CASES])
def test_kernel_equals_diagram_sum(e1, e2):
    ex1, ex2 = get_expert(e1), get_expert(e2)
    got = to_mine(symbolic.pair_kernel(ex1, ex2))
    want = combination_sum(ex1.terms, ex2.terms)
    assert sp.expand(got - want) == 0


def test_he3_kernel_has_30_terms():
    """n_be = 0..3 leaves (4 − n_be)² choices of (n_ab, n_ae): 16 + 9 + 4 + 1 = 30 distinct monomials."""
    K = symbolic.pair_kernel(get_expert("he3"))
    assert len(sp.Add.make_args(sp.expand(K))) == 30
    assert len(sp.Add.make_args(diagram_sum(3, 3))) == 30
    # Prefactor 36 = 3!·3!: the term R_{0,0} ρ_be³ has coefficient 36/3! = 6.
    assert sp.expand(to_mine(K)).coeff(my_R(0, 0) * MY_RHO["be"] ** 3) == 6


def test_kernel_gradient_uses_price_theorem():
    """∂K/∂ρ_ac from flowmoe equals the diagram sum with R_{p,q} → R_{p+1,q+1}; the other slot
    derivatives equal plain differentiation of the diagram sum."""
    K = symbolic.pair_kernel(get_expert("he3"))
    grads = symbolic.kernel_gradient(K)
    mine = diagram_sum(3, 3)
    assert sp.expand(to_mine(grads["ac"]) - diagram_sum(3, 3, d_ac=1)) == 0
    for s in SLOT_NAMES[1:]:
        assert sp.expand(to_mine(grads[s]) - sp.diff(mine, MY_RHO[s])) == 0, s


def test_kernel_exchange_symmetry():
    """K(a,b;c,e) = K(c,e;a,b): swap ab ↔ ce and ae ↔ cb (R is symmetric in p, q)."""
    K = to_mine(symbolic.pair_kernel(get_expert("he3")))
    r = MY_RHO
    swapped = K.xreplace({r["ab"]: r["ce"], r["ce"]: r["ab"], r["ae"]: r["cb"], r["cb"]: r["ae"]})
    assert sp.expand(K - swapped) == 0


# --- the self term with numbers (docs/maths.md §3) -------------------------------------------------------------


def r_at_one(p, q):
    """R_{p,q}(1) = E[π^{(p)}(z) π^{(q)}(z)] by adaptive quadrature (sigmoid)."""
    fp = gate_derivative_scalar("sigmoid", p)
    fq = gate_derivative_scalar("sigmoid", q)
    return normal_expectation(lambda z: fp(z) * fq(z))


def _numeric_self_polynomial(expr, rho):
    values = {a: r_at_one(int(a.args[0]), int(a.args[1])) for a in expr.atoms(symbolic.R)}
    poly = sp.Poly(sp.expand(expr.xreplace({a: sp.Float(v, 30) for a, v in values.items()})), rho)
    coeffs = [float(poly.coeff_monomial(rho**k)) for k in range(7)]
    assert poly.degree() <= 6
    return np.array(coeffs)


def test_self_term_matches_spec_numbers():
    """K_ii = 1.76027 + 1.12314ρ² − 0.57942ρ⁴ + 0.12258ρ⁶ (quoted to 5 decimals: tolerance 5e-6)."""
    K = symbolic.pair_kernel(get_expert("he3"))
    expr = symbolic.self_term(K)
    (rho,) = [s for s in expr.free_symbols]
    coeffs = _numeric_self_polynomial(expr, rho)
    spec = np.array([1.76027, 0.0, 1.12314, 0.0, -0.57942, 0.0, 0.12258])
    np.testing.assert_allclose(coeffs, spec, rtol=0, atol=5e-6)
    # The constant term is E[π² He₃²] with independent π and He₃ arguments: 6 E[π²] exactly.
    assert abs(coeffs[0] - 6 * r_at_one(0, 0)) < 1e-11


def test_self_term_substitution_is_the_diagram_sum_at_a_equals_c():
    """symbolic.self_term = the diagram sum with ρ_ac = ρ_be = 1 and the four cross slots = ρ."""
    K = symbolic.pair_kernel(get_expert("he3"))
    expr = symbolic.self_term(K)
    (rho,) = [s for s in expr.free_symbols]
    r = MY_RHO
    mine = diagram_sum(3, 3).xreplace({r["be"]: 1, r["ab"]: rho, r["ae"]: rho, r["cb"]: rho, r["ce"]: rho})
    theirs = expr.xreplace({a: my_R(a.args[0], a.args[1]) for a in expr.atoms(symbolic.R)})
    for a in expr.atoms(symbolic.R):
        assert a.args[2] == 1
    assert sp.expand(mine - theirs) == 0
