"""The symbolic reduced one-student/one-teacher ODE against the vectorised Gram ODE (m = m⋆ = 1).

The two are built independently from the same pair kernel: the reduced system by sympy
differentiation of a symbolic 4×4 Gram, the engine by the vectorised slot-derivative scatter.
"""

import numpy as np
import sympy as sp
import jax.numpy as jnp
import pytest

from flowmoe import symbolic
from flowmoe.correlation import correlation_table
from flowmoe.gates import get_expert
from flowmoe.ode import gram_ode


def _numeric(expr, table):
    """Lambdify an expression in (α, β, μ, ν, ρ) and R_{p,q}(·) atoms with numpy."""
    atoms = sorted(expr.atoms(symbolic.R), key=str)
    syms = [sp.Symbol(f"r{k}") for k in range(len(atoms))]
    f = sp.lambdify([symbolic.ALPHA, symbolic.BETA, symbolic.MU, symbolic.NU, symbolic.RHO_S] + syms,
                    expr.xreplace(dict(zip(atoms, syms))), "numpy")

    def call(x):
        vals = [table.evaluate_numpy(int(a.args[0]), int(a.args[1]), float(a.args[2].subs(symbolic.ALPHA, x[0])))
                for a in atoms]
        return f(*x, *vals)
    return call


def _gram(alpha, beta, mu, nu, rho):
    # Layout for m = m⋆ = 1: [v̄, w̄, v⋆, w⋆].
    return np.array([[1, rho, alpha, mu], [rho, 1, nu, beta], [alpha, nu, 1, 0], [mu, beta, 0, 1.0]])


@pytest.mark.parametrize("seed", range(4))
def test_reduced_rhs_matches_engine(seed):
    rng = np.random.default_rng(seed)
    # A valid Gram: sample actual unit vectors v̄, w̄ against the orthonormal pair e1, e2.
    u = rng.standard_normal((2, 6))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    x = np.array([u[0, 0], u[1, 1], u[0, 1], u[1, 0], u[0] @ u[1]])  # α, β, μ, ν, ρ
    rs = symbolic.reduced_system(get_expert("he3"))
    table = correlation_table("sigmoid", 7)
    reduced = np.array([_numeric(e, table)(x) for e in rs.rhs])
    ode = gram_ode("sigmoid", "he3", 1, 1)
    dG = ode.velocity(jnp.asarray(_gram(*x)), jnp.ones(4))[0]
    dG = np.asarray(dG)
    engine = np.array([dG[0, 2], dG[1, 3], dG[0, 3], dG[1, 2], dG[0, 1]])
    np.testing.assert_allclose(reduced, engine, rtol=1e-9, atol=1e-12)
    # And the loss.
    L_red = _numeric(rs.loss, table)(x)
    L_eng = float(ode.backend.loss(jnp.asarray(_gram(*x))))
    assert abs(L_red - L_eng) < 1e-11


def test_leading_order_manifold_is_invariant():
    rs = symbolic.reduced_system(get_expert("he3"))
    zero = {symbolic.MU: 0, symbolic.NU: 0, symbolic.RHO_S: 0}
    for name, e in zip(symbolic.REDUCED_NAMES, rs.rhs):
        if name in ("mu", "nu", "rho"):
            assert sp.simplify(e.subs(zero)) == 0
    a, b = symbolic.ALPHA, symbolic.BETA
    beta_dot = sp.simplify(rs.rhs[1].subs(zero) - 18 * b**2 * (1 - b**2) * symbolic.R(0, 0, a))
    alpha_dot = sp.simplify(rs.rhs[0].subs(zero) - 6 * b**3 * (1 - a**2) * symbolic.R(1, 1, a))
    assert beta_dot == 0 and alpha_dot == 0
