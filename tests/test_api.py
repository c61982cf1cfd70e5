"""population_loss and population_grad on raw vectors in R^d (docs/maths.md §1–§3).

References:
- Monte Carlo in R^d: ½(f(x) − f⋆(x))² averaged over 2²⁰ Gaussian inputs (numpy, chunked, fixed
  seed), within 4 standard errors, for random sizes m⋆ < m ≤ 4, non-unit student vectors, and both
  an orthonormal and a random (non-orthonormal, non-unit) teacher;
- closed forms from the structure of f: a student equal to the teacher plus a cancelling pair
  (u, z), (u, −z) has L = 0; with the teacher's experts negated (He₃ is odd) f = −f⋆ and
  L = 2E[f⋆²] = 12 m⋆ E[π²] for the orthonormal teacher (E[π²] by adaptive quadrature);
- central finite differences of population_loss for population_grad; the gradient is orthogonal to
  each raw vector, and ∇L(c·θ) = ∇L(θ)/c (scale invariance of f).
"""

import numpy as np
import pytest

import flowmoe
from conftest import gate_derivative, gate_derivative_scalar, hermite, normal_expectation, orthonormal_teacher


def unit_rows(A):
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def model_output(X, V, W, gate, k):
    """f(x) = Σ_i π(v̄_iᵀx) He_k(w̄_iᵀx) for each row x of X."""
    return np.sum(gate_derivative(gate, 0, X @ unit_rows(V).T) * hermite(k, X @ unit_rows(W).T), axis=1)


def monte_carlo_loss(V, W, Vs, Ws, gate, k, n=2**20, chunk=2**17, seed=0):
    """(mean, standard error) of ½(f − f⋆)² over n standard Gaussian inputs."""
    rng = np.random.default_rng(seed)
    d = V.shape[1]
    total = total_sq = 0.0
    for _ in range(n // chunk):
        X = rng.standard_normal((chunk, d))
        y = 0.5 * (model_output(X, V, W, gate, k) - model_output(X, Vs, Ws, gate, k)) ** 2
        total += y.sum()
        total_sq += (y**2).sum()
    mean = total / n
    var = total_sq / n - mean**2
    return mean, np.sqrt(var / n)


def gate_square_mean(gate):
    pi = gate_derivative_scalar(gate, 0)
    return normal_expectation(lambda z: pi(z) ** 2)


def random_problem(seed, m, m_star, d, teacher):
    """Students: non-unit Gaussian vectors with random scales. Teacher: orthonormal, or random
    directions with random lengths (non-orthonormal)."""
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((m, d)) * rng.uniform(0.3, 3.0, size=(m, 1))
    W = rng.standard_normal((m, d)) * rng.uniform(0.3, 3.0, size=(m, 1))
    if teacher == "orthonormal":
        Vs, Ws = orthonormal_teacher(rng, m_star, d)
    else:
        Vs = rng.standard_normal((m_star, d)) * rng.uniform(0.5, 2.0, size=(m_star, 1))
        Ws = rng.standard_normal((m_star, d)) * rng.uniform(0.5, 2.0, size=(m_star, 1))
    return V, W, Vs, Ws


def _sizes(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 5))
    return m, int(rng.integers(1, m))


# (seed, teacher, gate, expert degree): sizes m⋆ < m ≤ 4 are drawn from the seed.
MC_TABLE = [
    (11, "orthonormal", "sigmoid", 3),
    (12, "random", "sigmoid", 3),
    (13, "random", "sigmoid", 3),
    (15, "random", "probit", 3),
    (16, "random", "probit", 2),
]


@pytest.mark.parametrize("seed,teacher,gate,k", MC_TABLE)
def test_population_loss_matches_monte_carlo(seed, teacher, gate, k):
    m, m_star = _sizes(seed)
    d = 8
    V, W, Vs, Ws = random_problem(seed, m, m_star, d, teacher)
    L = flowmoe.population_loss(V, W, Vs, Ws, gate=gate, expert=f"he{k}")
    mean, se = monte_carlo_loss(V, W, Vs, Ws, gate, k, seed=seed)
    assert abs(L - mean) < 4 * se, f"m={m} m*={m_star}: L={L}, MC={mean} ± {se}"
    assert se < 0.02 * mean  # the check has teeth: 4 SE is a few percent of L at most


@pytest.mark.parametrize("m_star", [1, 2])
def test_loss_closed_forms_with_cancelling_pair(m_star):
    """Student = teacher + a cancelling pair ⇒ L = 0; student = teacher with negated experts + a
    cancelling pair ⇒ f = −f⋆ and L = 2E[f⋆²] = 12 m⋆ E[π²] (orthonormal teacher)."""
    rng = np.random.default_rng(100 + m_star)
    d = 2 * m_star + 3
    Vs, Ws = orthonormal_teacher(rng, m_star, d)
    u, z = rng.standard_normal((2, d))
    scale = rng.uniform(0.5, 2.0, size=(m_star + 2, 1))
    V = np.concatenate([Vs, [u, u]]) * scale
    W_same = np.concatenate([Ws, [z, -z]]) * scale
    W_neg = np.concatenate([-Ws, [z, -z]]) * scale
    assert abs(flowmoe.population_loss(V, W_same, Vs, Ws)) < 1e-12
    e_pi2 = gate_square_mean("sigmoid")
    assert abs(e_pi2 - 0.2933790359) < 1e-10  # docs/maths.md §3
    L = flowmoe.population_loss(V, W_neg, Vs, Ws)
    assert abs(L - 12 * m_star * e_pi2) < 1e-10 * m_star


def test_loss_invariances():
    """Permuting students and rescaling any vector leave L unchanged (docs/maths.md §3 symmetries)."""
    V, W, Vs, Ws = random_problem(3, 4, 2, 9, "random")
    L = flowmoe.population_loss(V, W, Vs, Ws)
    perm = [2, 0, 3, 1]
    assert abs(flowmoe.population_loss(V[perm], W[perm], Vs, Ws) - L) < 1e-12 * abs(L)
    assert abs(flowmoe.population_loss(3.7 * V, 0.2 * W, Vs, 5.0 * Ws) - L) < 1e-12 * abs(L)


GRAD_TABLE = [(21, 3, 2, "orthonormal", "sigmoid", "he3"), (22, 4, 1, "random", "sigmoid", "he3"),
              (23, 3, 2, "random", "probit", "he2")]


@pytest.mark.parametrize("seed,m,m_star,teacher,gate,expert", GRAD_TABLE)
def test_population_grad_matches_finite_differences(seed, m, m_star, teacher, gate, expert):
    """⟨∇L, δ⟩ = d/dh L(θ + hδ) for random directions δ: 5-point central differences, h = 1e-3·|θ|."""
    d = 10
    V, W, Vs, Ws = random_problem(seed, m, m_star, d, teacher)
    gV, gW = flowmoe.population_grad(V, W, Vs, Ws, gate=gate, expert=expert)
    assert gV.shape == V.shape and gW.shape == W.shape
    rng = np.random.default_rng(seed + 1000)
    scale = np.linalg.norm(np.concatenate([V, W]), axis=1).min()
    h = 1e-3 * scale
    for _ in range(4):
        dV = rng.standard_normal(V.shape)
        dW = rng.standard_normal(W.shape)

        def loss(t):
            return flowmoe.population_loss(V + t * dV, W + t * dW, Vs, Ws, gate=gate, expert=expert)
        fd = (loss(-2 * h) - 8 * loss(-h) + 8 * loss(h) - loss(2 * h)) / (12 * h)
        exact = np.sum(gV * dV) + np.sum(gW * dW)
        assert abs(fd - exact) < 1e-7 * max(1.0, abs(exact)), (fd, exact)


@pytest.mark.parametrize("seed,m,m_star,teacher,gate,expert", GRAD_TABLE)
def test_gradient_orthogonal_to_raw_vectors_and_scales(seed, m, m_star, teacher, gate, expert):
    V, W, Vs, Ws = random_problem(seed, m, m_star, 10, teacher)
    gV, gW = flowmoe.population_grad(V, W, Vs, Ws, gate=gate, expert=expert)
    for G, U in ((gV, V), (gW, W)):
        cos = np.sum(G * U, axis=1) / (np.linalg.norm(G, axis=1) * np.linalg.norm(U, axis=1))
        assert np.all(np.abs(cos) < 1e-12), cos
    # f depends on directions only: L(cθ) = L(θ) ⇒ ∇L(cθ) = ∇L(θ)/c.
    c = 2.5
    gV2, gW2 = flowmoe.population_grad(c * V, c * W, Vs, Ws, gate=gate, expert=expert)
    np.testing.assert_allclose(gV2, gV / c, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(gW2, gW / c, rtol=1e-10, atol=1e-14)
