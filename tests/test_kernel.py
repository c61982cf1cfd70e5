"""The numerical pair kernel K(a,b;c,e) and its slot derivatives (docs/maths.md §3) against 4-D quadrature.

Reference: K = E[π(aᵀx) P(bᵀx) π(cᵀx) Q(eᵀx)] by a tensor Gauss–Hermite rule in 4 dimensions.
With the QR decomposition [a c b e] = Q T (T upper triangular), g = Qᵀx is standard normal and
aᵀx = T₀₀g₀, cᵀx = T₀₁g₀ + T₁₁g₁, bᵀx and eᵀx use g₀..g₃. The integrand is a polynomial of degree
≤ deg P + deg Q in (g₂, g₃), so 6 nodes there are exact; g₀, g₁ carry the gates and get many nodes.
Convergence is checked inside each test by comparing two node counts.

Cases: (sigmoid, He3×He3), (sigmoid, He1×He1), (sigmoid, He2×He4), (probit, He3×He3), on random
Gram matrices of four unit vectors (generic, strongly correlated, self term a = c & b = e,
student–teacher with c ⊥ e). The six slot derivatives dK are checked against central differences.
"""

import numpy as np
import pytest

from conftest import gate_derivative, hermite, random_gram4, slot_overlaps
from flowmoe.kernel import pair_kernel

CASES = [("sigmoid", 3, 3), ("sigmoid", 1, 1), ("sigmoid", 2, 4), ("probit", 3, 3), ("tanh", 3, 3),
         ("erf", 3, 3), ("identity", 3, 3), ("identity", 1, 2)]
KINDS = ["generic", "generic", "generic", "correlated", "correlated", "self", "teacher"]
K_TOL = 1e-11  # agreement with the quadrature, absolute, on K of size 0.004–2 (observed ≤ 1e-14)


def gauss_hermite_normal(n):
    x, w = np.polynomial.hermite.hermgauss(n)
    return np.sqrt(2.0) * x, w / np.sqrt(np.pi)


def quadrature_kernel(gate, k, l, X, n_gate, n_poly=6):
    """E[π(aᵀx) He_k(bᵀx) π(cᵀx) He_l(eᵀx)] for the rows (a, b, c, e) of X."""
    a, b, c, e = X
    _, T = np.linalg.qr(np.stack([a, c, b, e], axis=1))  # columns: a, c, b, e
    z, w = gauss_hermite_normal(n_gate)
    zp, wp = gauss_hermite_normal(n_poly)
    g0 = z[:, None, None, None]
    g1 = z[None, :, None, None]
    g2 = zp[None, None, :, None]
    g3 = zp[None, None, None, :]
    ya = T[0, 0] * z
    yc = T[0, 1] * z[:, None] + T[1, 1] * z[None, :]
    yb = T[0, 2] * g0 + T[1, 2] * g1 + T[2, 2] * g2
    ye = T[0, 3] * g0 + T[1, 3] * g1 + T[2, 3] * g2 + T[3, 3] * g3
    poly = np.einsum("ijkl,k,l->ij", hermite(k, yb) * hermite(l, ye), wp, wp)
    gates = gate_derivative(gate, 0, ya)[:, None] * gate_derivative(gate, 0, yc)
    return float(np.einsum("i,j,ij->", w, w, gates * poly))


@pytest.fixture(scope="module")
def grams():
    rng = np.random.default_rng(20240611)
    return [random_gram4(rng, kind) for kind in KINDS]


def expert_name(k):
    return f"he{k}"


@pytest.mark.parametrize("gate,k,l", CASES, ids=[f"{g}-He{k}xHe{l}" for g, k, l in CASES])
def test_kernel_matches_4d_gauss_hermite(gate, k, l, grams):
    kernel = pair_kernel(gate, expert_name(k), expert_name(l))
    rho = np.stack([slot_overlaps(G) for _, G in grams], axis=1)  # (6, B)
    K, dK = kernel(rho)
    K = np.asarray(K)
    assert K.shape == (len(grams),) and np.asarray(dK).shape == (6, len(grams))
    for i, (X, _) in enumerate(grams):
        n = 150 if gate == "tanh" else 60  # tanh varies on scale ½: the reference needs more nodes
        coarse = quadrature_kernel(gate, k, l, X, n_gate=n)
        fine = quadrature_kernel(gate, k, l, X, n_gate=n + n // 2)
        assert abs(fine - coarse) < 1e-12, f"quadrature not converged: {coarse} vs {fine}"
        assert abs(K[i] - fine) < K_TOL, (KINDS[i], float(K[i]), fine, float(K[i]) - fine)


def test_quadrature_reference_is_exact_on_known_values():
    """Guards the reference: with the gates left out (π ≡ 1), E[He_k(bᵀx) He_l(eᵀx)] = δ_kl k! ρ_beᵏ,
    and the self term at ρ = ⟨a, b⟩ = 0 is 6 E[π²] with E[π²] from a 1-D Gauss–Hermite rule."""
    rng = np.random.default_rng(5)
    X, G = random_gram4(rng, "generic")
    for k, l in [(3, 3), (2, 4), (1, 1), (2, 2)]:
        a, b, c, e = X
        _, T = np.linalg.qr(np.stack([a, c, b, e], axis=1))
        zp, wp = gauss_hermite_normal(6)
        g = np.meshgrid(zp, zp, zp, zp, indexing="ij")
        W = np.einsum("i,j,k,l->ijkl", wp, wp, wp, wp)
        yb = sum(T[i, 2] * g[i] for i in range(4))
        ye = sum(T[i, 3] * g[i] for i in range(4))
        got = np.sum(W * hermite(k, yb) * hermite(l, ye))
        want = (k == l) * np.prod(np.arange(1, k + 1)) * G[1, 3] ** k
        assert abs(got - want) < 1e-12
    a = np.array([1.0, 0, 0, 0])
    b = np.array([0, 1.0, 0, 0])
    X = np.stack([a, b, a, b])
    z, w = gauss_hermite_normal(200)
    e_pi2 = w @ gate_derivative("sigmoid", 0, z) ** 2
    assert abs(quadrature_kernel("sigmoid", 3, 3, X, n_gate=90) - 6 * e_pi2) < 1e-12


@pytest.mark.parametrize("gate,k,l", CASES, ids=[f"{g}-He{k}xHe{l}" for g, k, l in CASES])
def test_slot_derivatives_match_finite_differences(gate, k, l, grams):
    """dK[s] = ∂K/∂ρ_s: 5-point central differences in each slot, h = 1e-3 (truncation ≈ h⁴K⁽⁵⁾/30)."""
    kernel = pair_kernel(gate, expert_name(k), expert_name(l))
    use = [G for kind, (_, G) in zip(KINDS, grams) if kind != "self"]  # self term sits at ρ_ac = 1
    rho = np.stack([slot_overlaps(G) for G in use], axis=1)
    _, dK = kernel(rho)
    dK = np.asarray(dK)
    h = 1e-3
    for s in range(6):
        step = np.zeros((6, 1))
        step[s] = h
        fm2, fm1, fp1, fp2 = (np.asarray(kernel(rho + j * step)[0]) for j in (-2, -1, 1, 2))
        fd = (fm2 - 8 * fm1 + 8 * fp1 - fp2) / (12 * h)
        np.testing.assert_allclose(dK[s], fd, rtol=1e-8, atol=1e-8, err_msg=f"slot {s}")


def test_kernel_symmetries(grams):
    """K(a,b;c,e) = K(c,e;a,b) (exchange of the units) and, He₃ being odd, K(a,−b;c,e) = −K(a,b;c,e)."""
    kernel = pair_kernel("sigmoid", "he3", "he3")
    rho = np.stack([slot_overlaps(G) for _, G in grams], axis=1)
    ac, ab, ae, cb, be, ce = rho
    K = np.asarray(kernel(rho)[0])
    swapped = np.stack([ac, ce, cb, ae, be, ab])  # (c,e;a,b): ac, ce→ab slot, cb→ae, ae→cb, be, ab→ce
    np.testing.assert_allclose(np.asarray(kernel(swapped)[0]), K, rtol=0, atol=1e-12)
    flip_b = np.stack([ac, -ab, ae, -cb, -be, ce])
    np.testing.assert_allclose(np.asarray(kernel(flip_b)[0]), -K, rtol=0, atol=1e-12)


@pytest.mark.parametrize("m, m_star", [(3, 1), (6, 2)])
def test_dense_gradient_assembly_matches_autodiff(m, m_star):
    """∂L/∂G assembled in dense blocks equals JAX's derivative of L(G) (symmetrised, zero diagonal)."""
    import jax
    import jax.numpy as jnp

    from flowmoe.kernel import GramLoss
    from flowmoe.layout import Layout

    gl = GramLoss("sigmoid", "he3", Layout(m, m_star))
    n = gl.layout.n_dirs
    X = np.random.default_rng(m).normal(size=(n, n))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    G = jnp.asarray(X @ X.T)
    _, A = gl.loss_and_grad(G)
    g = jax.grad(gl.loss)(G)
    want = np.asarray((g + g.T) * (1.0 - jnp.eye(n)))
    np.testing.assert_allclose(np.asarray(A), want, rtol=0, atol=1e-13 * np.max(np.abs(want)))
