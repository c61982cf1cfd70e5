"""Identifiability checks: exact sympy identities, and the numerical rank test separating linear from
FFN experts (independent reference: the identities written out by hand below with numpy)."""

import numpy as np
import pytest
import sympy as sp

import flowmoe  # noqa: F401
from flowmoe.errors import SpecError
from flowmoe.rates.identifiability import family_matrix, heat_identity, linear_gate_expert_identity, rank_test


def test_symbolic_identities_hold_exactly():
    assert heat_identity() == 0
    assert linear_gate_expert_identity() == 0


def test_identity_fails_for_a_nonlinear_expert():
    """Control: the second identity needs ∂h/∂η₁ = x ∂h/∂η₀; the expert tanh(η₁x) + η₀ breaks it."""
    x, y, b0, b1, e0, e1 = sp.symbols("x y beta0 beta1 eta0 eta1", real=True)
    nu = sp.symbols("nu", positive=True)
    mu = sp.tanh(e1 * x) + e0
    F = sp.exp(b1 * x + b0) * sp.exp(-(y - mu) ** 2 / (2 * nu)) / sp.sqrt(2 * sp.pi * nu)
    diff = sp.diff(F, e1) - sp.diff(F, b1, e0)
    val = diff.subs({x: 0.7, y: 0.3, b0: 0.1, b1: 0.2, e0: 0.4, e1: 1.1, nu: 0.5})
    assert abs(float(val)) > 1e-3


@pytest.mark.parametrize("family,atoms", [("routed", [[8.0, 2.0], [-6.0, 1.0]]), ("shared", [[2.0, 0.0]])])
def test_linear_experts_rank_deficient(family, atoms):
    r = rank_test("linear", atoms, family)
    assert not r["full_rank"]
    # the dependency is the one of the paper: ∂h/∂η₁ = x ∂h/∂η₀ (routed) and (∂h/∂κ₀)² = 1 (shared)
    M = family_matrix("linear", atoms, family)[-1]
    x = np.linspace(-3, 3, 601)
    target = x if family == "routed" else np.ones_like(x)
    hits = sum(np.allclose(M[:, c], target) for c in range(M.shape[1]))
    assert hits >= 2


@pytest.mark.parametrize("kind,family,atoms", [("relu0", "routed", [[-12.0, 4.0], [12.0, 4.0]]),
                                               ("relu", "shared", [[6.0, 0.0, -8.0]]),
                                               ("gelu0", "routed", [[-1.2, 4.0], [1.5, 2.0]])])
def test_ffn_experts_full_rank_on_quotient(kind, family, atoms):
    assert rank_test(kind, atoms, family)["full_rank"]
    # on raw parameters the outer-weight redundancy shows up (h is linear in η₂)
    assert not rank_test(kind, atoms, family, quotient=False)["full_rank"]


def test_relu_homogeneity_by_hand():
    """η₁∂h/∂η₁ + η₀∂h/∂η₀ = η₂∂h/∂η₂ for h = η₂ReLU(η₁x + η₀), against family_matrix's columns."""
    M = family_matrix("relu", [[1.5, 0.3, -2.0]], "shared", quotient=False)[0]
    np.testing.assert_allclose(1.5 * M[:, 0] + 0.3 * M[:, 1], -2.0 * M[:, 2], atol=1e-12)


def test_bad_input():
    with pytest.raises(SpecError, match="^expert: "):
        rank_test("cubic", [[1.0, 2.0]])
    with pytest.raises(SpecError, match="^atoms: "):
        rank_test("linear", [[1.0, 2.0, 3.0]])
    with pytest.raises(SpecError, match="^family: "):
        rank_test("linear", [[1.0, 2.0]], "gating")
