"""Gate Hermite coefficients c_k and correlation functions R_{p,q}(ρ) (docs/maths.md §3).

flowmoe builds c_k and a Chebyshev table of R_{p,q} from Gauss–Hermite rules and sympy gate
derivatives. Every check here uses something else:

- c_k = E[π(z) He_k(z)]: adaptive 1-D quadrature (scipy ``quad``) with numpy's Hermite polynomials;
- R_{p,q}(±1), R_{p,q}(0): adaptive 1-D quadrature of E[π^{(p)}(z) π^{(q)}(±z)] and c_p c_q, with the
  gate derivatives from closed forms (σ' = σ(1 − σ); Φ^{(k)} = (−1)^{k−1} He_{k−1} φ);
- interior ρ (including |ρ| ≥ 0.99): adaptive 2-D quadrature (scipy ``dblquad``);
- small ρ: the Hermite series Σ c_{n+p} c_{n+q} ρⁿ/n! with c_k from one adaptive vector quadrature;
- Price's theorem R'_{p,q} = R_{p+1,q+1}: finite differences of the interpolant;
- probit gate: R_{p,q} in closed form (derivatives of the bivariate normal CDF Φ₂(x/√2, y/√2; ρ/2)).

Tolerances: 1e-10 absolute for R (the stated accuracy is ≤ 3e-14 on [−1, 1]); the quoted
constants to their last quoted digit.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import dblquad, quad_vec
from scipy.special import expit

from conftest import gate_derivative, gate_derivative_scalar, hermite, normal_expectation, normal_pdf
from flowmoe.correlation import correlation_table, hermite_coefficients

ORDER = 7
ALL_PQ = [(p, q) for p in range(ORDER + 1) for q in range(p, ORDER + 1)]
R_TOL = 1e-10


@pytest.fixture(scope="module")
def sigmoid_table():
    return correlation_table("sigmoid", ORDER)


@pytest.fixture(scope="module")
def probit_table():
    return correlation_table("probit", ORDER)


def both_evaluations(table, p, q, rho):
    """R_{p,q}(ρ) from the numpy and from the JAX evaluation of the table (they must agree)."""
    rho = np.asarray(rho, dtype=np.float64)
    a = np.asarray(table.evaluate_numpy(p, q, rho))
    b = np.asarray(table.evaluate([(p, q)], jnp.asarray(rho)))[0]
    return a, b


def quad_hermite_coefficient(gate, k):
    pi = gate_derivative_scalar(gate, 0)
    return normal_expectation(lambda z: pi(z) * float(hermite(k, z)))


def quad_gate_square(gate):
    pi = gate_derivative_scalar(gate, 0)
    return normal_expectation(lambda z: pi(z) ** 2)


# --- c_k ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("gate", ["sigmoid", "probit"])
def test_hermite_coefficients_match_adaptive_quadrature(gate):
    got = hermite_coefficients(gate, ORDER)
    want = np.array([quad_hermite_coefficient(gate, k) for k in range(ORDER + 1)])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_sigmoid_constants_of_spec():
    """docs/maths.md §3: c0 = 0.5, c1 = 0.2066209641, c3 = −0.0623964840, c5 = 0.0643799732, even c_k = 0
    (k ≥ 2), E[π²] = 0.2933790359 — quoted to 10 decimals, so checked to 1e-10."""
    c = hermite_coefficients("sigmoid", ORDER)
    quoted = {0: 0.5, 1: 0.2066209641, 3: -0.0623964840, 5: 0.0643799732}
    for k, value in quoted.items():
        assert abs(c[k] - value) < 1e-10, (k, c[k], value)
        assert abs(quad_hermite_coefficient("sigmoid", k) - value) < 1e-10, k
    for k in (2, 4, 6):
        assert abs(c[k]) < 1e-13, (k, c[k])
    assert abs(quad_gate_square("sigmoid") - 0.2933790359) < 1e-10


# --- R_{p,q} at ρ = ±1 and 0 ----------------------------------------------------------------------


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["rho=+1", "rho=-1"])
def test_endpoints_match_1d_quadrature(sigmoid_table, sign):
    """R_{p,q}(±1) = E[π^{(p)}(z) π^{(q)}(±z)] for all p ≤ q ≤ 7."""
    for p, q in ALL_PQ:
        fp = gate_derivative_scalar("sigmoid", p)
        fq = gate_derivative_scalar("sigmoid", q)
        want = normal_expectation(lambda z: fp(z) * fq(sign * z))
        for got in both_evaluations(sigmoid_table, p, q, sign):
            assert abs(float(got) - want) < R_TOL, (p, q, sign, float(got), want)


def test_rho_zero_is_product_of_coefficients(sigmoid_table):
    """(s, u) independent at ρ = 0: R_{p,q}(0) = E[π^{(p)}] E[π^{(q)}] = c_p c_q."""
    c = [quad_hermite_coefficient("sigmoid", k) for k in range(ORDER + 1)]
    for p, q in ALL_PQ:
        for got in both_evaluations(sigmoid_table, p, q, 0.0):
            assert abs(float(got) - c[p] * c[q]) < R_TOL, (p, q)


def test_exact_identities(sigmoid_table):
    """R₀₀(0) = ¼, R₁₁(0) = c₁², R₀₀(1) = E[π²], R₀₀(−1) = ½ − E[π²] (π(−z) = 1 − π(z))."""
    c1 = quad_hermite_coefficient("sigmoid", 1)
    e_pi2 = quad_gate_square("sigmoid")
    cases = [(0, 0, 0.0, 0.25), (1, 1, 0.0, c1**2), (0, 0, 1.0, e_pi2), (0, 0, -1.0, 0.5 - e_pi2)]
    for p, q, rho, want in cases:
        for got in both_evaluations(sigmoid_table, p, q, rho):
            assert abs(float(got) - want) < 1e-12, (p, q, rho, float(got), want)


# --- interior ρ: 2-D adaptive quadrature ------------------------------------------------------------

INTERIOR_CASES = [
    (0, 0, -0.995), (0, 0, 0.999), (1, 1, 0.6), (0, 1, -0.4), (0, 3, 0.99), (1, 3, -0.99),
    (2, 2, 0.995), (2, 4, -0.7), (3, 3, 0.35), (1, 5, 0.9), (0, 7, -0.999), (2, 6, 0.2),
    (5, 7, -0.95), (6, 6, 0.995), (7, 7, -0.995), (7, 7, 0.999), (4, 6, -0.5),
]


def dblquad_correlation(gate, p, q, rho):
    """E[π^{(p)}(s) π^{(q)}(ρ s + √(1−ρ²) z)] over independent standard normals s, z."""
    fp = gate_derivative_scalar(gate, p)
    fq = gate_derivative_scalar(gate, q)
    tau = math.sqrt(1.0 - rho * rho)
    f = lambda z, s: normal_pdf(s) * normal_pdf(z) * fp(s) * fq(rho * s + tau * z)  # noqa: E731
    value, err = dblquad(f, -12.0, 12.0, -12.0, 12.0, epsabs=1e-14, epsrel=1e-13)
    assert err < 1e-12
    return value


@pytest.mark.parametrize("p,q,rho", INTERIOR_CASES)
def test_interior_matches_2d_quadrature(sigmoid_table, p, q, rho):
    want = dblquad_correlation("sigmoid", p, q, rho)
    for got in both_evaluations(sigmoid_table, p, q, rho):
        assert abs(float(got) - want) < R_TOL, (float(got), want)
    # Symmetry R_{p,q} = R_{q,p}: the table stores both.
    assert abs(sigmoid_table.evaluate_numpy(q, p, rho) - want) < R_TOL


# --- small ρ: the Hermite series ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def sigmoid_normalised_coefficients():
    """a_k = c_k / √k! for k ≤ 70, all at once by adaptive vector quadrature (normalised Hermite
    recursion h_{k+1} = (z h_k − √k h_{k−1}) / √(k+1), so nothing overflows)."""
    K = 70

    def f(z):
        h = np.empty(K + 1)
        h[0], h[1] = 1.0, z
        for k in range(1, K):
            h[k + 1] = (z * h[k] - math.sqrt(k) * h[k - 1]) / math.sqrt(k + 1)
        return h * expit(z) * normal_pdf(z)

    a, err = quad_vec(f, -40.0, 40.0, epsabs=1e-16, epsrel=1e-14, norm="max", limit=2000)
    assert err < 1e-12
    return a


@pytest.mark.parametrize("rho", [-0.3, -0.12, 0.05, 0.2, 0.3])
def test_small_rho_matches_hermite_series(sigmoid_table, sigmoid_normalised_coefficients, rho):
    """R_{p,q}(ρ) = Σ_n c_{n+p} c_{n+q} ρⁿ/n!, truncated at n = 60 (the terms are below 1e-17 there)."""
    a = sigmoid_normalised_coefficients
    n = np.arange(61)
    log_fact = np.array([math.lgamma(k + 1) for k in range(len(a))])
    for p, q in ALL_PQ:
        # c_{n+p} c_{n+q} / n! = a_{n+p} a_{n+q} √((n+p)!(n+q)!) / n!
        weight = np.exp(0.5 * (log_fact[n + p] + log_fact[n + q]) - log_fact[n])
        terms = a[n + p] * a[n + q] * weight * rho**n
        assert abs(terms[-5:]).max() < 1e-15
        want = terms.sum()
        for got in both_evaluations(sigmoid_table, p, q, rho):
            assert abs(float(got) - want) < 1e-11, (p, q, float(got), want)


# --- Price's theorem -----------------------------------------------------------------------------------


@pytest.mark.parametrize("gate", ["sigmoid", "probit"])
def test_price_theorem_by_finite_differences(gate, sigmoid_table, probit_table):
    """dR_{p,q}/dρ = R_{p+1,q+1}: 5-point central differences (h = 1e-3, truncation ≈ h⁴ R⁽⁵⁾/30)."""
    table = sigmoid_table if gate == "sigmoid" else probit_table
    h = 1e-3
    rho = np.array([-0.997, -0.8, -0.31, 0.0, 0.45, 0.9, 0.997])
    pq = [(p, q) for p in range(ORDER) for q in range(p, ORDER)]
    shifts = [rho + k * h for k in (-2, -1, 1, 2)]
    want = np.stack([table.evaluate_numpy(p + 1, q + 1, rho) for p, q in pq])
    numpy_values = [np.stack([table.evaluate_numpy(p, q, x) for p, q in pq]) for x in shifts]
    jax_values = [np.asarray(table.evaluate(pq, jnp.asarray(x))) for x in shifts]
    for values in (numpy_values, jax_values):
        fm2, fm1, fp1, fp2 = values
        derivative = (fm2 - 8 * fm1 + 8 * fp1 - fp2) / (12 * h)
        np.testing.assert_allclose(derivative, want, rtol=0, atol=1e-8, err_msg=gate)


# --- probit: closed form -----------------------------------------------------------------------------


def _exp_quadratic_taylor(A, B, i, j):
    """Coefficient of xⁱ yʲ in exp(A x² + B x y + A y²) (A, B arrays over ρ)."""
    out = 0.0
    for k2 in range(min(i, j) + 1):
        if (i - k2) % 2 or (j - k2) % 2:
            continue
        k1, k3 = (i - k2) // 2, (j - k2) // 2
        out = out + A ** (k1 + k3) * B**k2 / (math.factorial(k1) * math.factorial(k2) * math.factorial(k3))
    return out


def probit_closed_form(p, q, rho):
    """R_{p,q}(ρ) for π = Φ, from F(x, y) = E[Φ(s+x) Φ(u+y)] = Φ₂(x/√2, y/√2; r), r = ρ/2:

    - R₀₀ = F(0, 0) = ¼ + arcsin(r)/(2π);
    - R_{p,q} (p, q ≥ 1) = ∂_x^{p−1} ∂_y^{q−1} ½φ₂(x/√2, y/√2; r) at 0, with
      ½φ₂ = exp(−(x² − 2rxy + y²)/(4s²)) / (4πs), s = √(1 − r²);
    - R_{0,q} (q ≥ 1) = ∂_y^{q−1} g(0), g(y) = ∂_y F(0, y) = φ(y/√2)/√2 · Φ(−r y/(√2 s)).
    """
    rho = np.asarray(rho, dtype=np.float64)
    if p > q:
        p, q = q, p
    r = rho / 2
    s = np.sqrt(1 - r**2)
    if p == 0 and q == 0:
        return 0.25 + np.arcsin(r) / (2 * np.pi)
    if p >= 1:
        A, B = -1.0 / (4 * s**2), r / (2 * s**2)
        coeff = _exp_quadratic_taylor(A, B, p - 1, q - 1)
        return math.factorial(p - 1) * math.factorial(q - 1) * coeff / (4 * np.pi * s)
    # p = 0, q ≥ 1: Taylor coefficients of φ(y/√2)/√2 and Φ(c y), c = −r/(√2 s); Cauchy product.
    n = q - 1
    c = -r / (np.sqrt(2) * s)
    gauss = [(-0.25) ** (k // 2) / math.factorial(k // 2) / math.sqrt(4 * math.pi) if k % 2 == 0 else 0.0
             for k in range(n + 1)]
    cdf = [0.5 if k == 0 else 0.0 for k in range(n + 1)]
    for k in range(n + 1):
        if k % 2 == 1:
            j = (k - 1) // 2
            cdf[k] = (-1) ** j * c**k / (2**j * math.factorial(j) * k) / math.sqrt(2 * math.pi)
    coeff = sum(gauss[i] * cdf[n - i] for i in range(n + 1))
    return math.factorial(n) * coeff


def test_probit_matches_closed_form(probit_table):
    rho = np.linspace(-1.0, 1.0, 41)
    for p, q in ALL_PQ:
        want = probit_closed_form(p, q, rho)
        for got in both_evaluations(probit_table, p, q, rho):
            np.testing.assert_allclose(got, want, rtol=0, atol=R_TOL, err_msg=f"probit p={p} q={q}")


def test_probit_closed_form_is_itself_consistent():
    """The closed form used above obeys Price's theorem and R_{p,q}(0) = c_p c_q (guards the reference)."""
    c = [quad_hermite_coefficient("probit", k) for k in range(ORDER + 1)]
    h = 1e-3
    rho = np.array([-0.6, 0.3, 0.9])
    for p, q in ALL_PQ:
        assert abs(probit_closed_form(p, q, 0.0) - c[p] * c[q]) < 1e-13
        if q < ORDER:
            fm2, fm1, fp1, fp2 = (probit_closed_form(p, q, rho + k * h) for k in (-2, -1, 1, 2))
            fd = (fm2 - 8 * fm1 + 8 * fp1 - fp2) / (12 * h)
            np.testing.assert_allclose(fd, probit_closed_form(p + 1, q + 1, rho), rtol=0, atol=1e-8)


# --- the other gates: tanh, erf(z/√2), identity ---------------------------------------------------


@pytest.mark.parametrize("gate", ["tanh", "erf", "identity"])
def test_other_gates_at_rho_0_and_pm1_match_quadrature(gate):
    """R_{p,q}(0) = c_p c_q and R_{p,q}(±1) = E[π^{(p)}(z) π^{(q)}(±z)] by adaptive quadrature, with
    the derivatives in closed form (conftest), p, q ≤ 7 (all the He₃ kernel and its gradient need)."""
    order = 7
    tol = 1e-10
    table = correlation_table(gate, order)
    c = [normal_expectation(gate_derivative_scalar(gate, k)) for k in range(order + 1)]
    for p in range(order + 1):
        for q in range(p, order + 1):
            fp, fq = gate_derivative_scalar(gate, p), gate_derivative_scalar(gate, q)
            assert abs(table.evaluate_numpy(p, q, 0.0) - c[p] * c[q]) < tol * max(1.0, abs(c[p] * c[q])), (p, q)
            for sign in (1.0, -1.0):
                want = normal_expectation(lambda z: fp(z) * fq(sign * z))
                # Relative to the size of R (tanh's R₇₇(1) is of order 1e4).
                assert abs(table.evaluate_numpy(p, q, sign) - want) < tol * max(1.0, abs(want)), (gate, p, q, sign)


@pytest.mark.parametrize("gate", ["sigmoid", "probit", "erf", "tanh", "identity"])
def test_simulation_gate_equals_the_symbolic_formula(gate):
    """The JAX gate used by the simulators is the sympy formula the kernel is derived from."""
    import sympy as sp

    from flowmoe.gates import GATES, Z

    z = np.linspace(-8, 8, 161)
    want = sp.lambdify(Z, GATES[gate].formula, modules=["numpy", "scipy"])(z)
    got = np.asarray(GATES[gate].jax_fn()(z))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)
    np.testing.assert_allclose(gate_derivative(gate, 0, z), want, rtol=0, atol=1e-14)


# --- the JAX evaluation plan ------------------------------------------------------------------------


@pytest.mark.parametrize("gate", ["sigmoid", "probit", "erf", "tanh"])
def test_jax_evaluation_drops_only_noise(gate):
    """The JAX evaluation (parity split, noise-floor truncation) against the full Chebyshev series
    (numpy chebval of all coefficients), on a grid including ρ = ±1: within 1e-14 of max(1, |R|)."""
    table = correlation_table(gate, 7)
    rho = np.concatenate([np.linspace(-1.0, 1.0, 401), [-1 + 1e-9, 1 - 1e-9]])
    got = np.asarray(table.evaluate(ALL_PQ, jnp.asarray(rho)))
    want = np.stack([np.polynomial.chebyshev.chebval(rho, table.coeffs[p, q]) for p, q in ALL_PQ])
    scale = np.maximum(1.0, np.max(np.abs(want), axis=1, keepdims=True))
    assert np.max(np.abs(got - want) / scale) < 1e-14
