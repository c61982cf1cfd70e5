"""Shared set-up of the test suite: float64 everywhere, and small independent helpers.

Every helper here is written from first principles (numpy/scipy only, nothing from flowmoe), so
that tests can compare flowmoe against it:

- gate derivatives π^{(k)} in closed form: sigmoid via π' = π(1 − π) (π^{(k)} is a polynomial in π),
  probit via Φ^{(k)}(z) = (−1)^{k−1} He_{k−1}(z) φ(z);
- probabilists' Hermite polynomials He_k;
- random unit vectors, random Gram matrices of four unit vectors (a, b, c, e) and the six slot
  overlaps (ρ_ac, ρ_ab, ρ_ae, ρ_cb, ρ_be, ρ_ce) in flowmoe's slot order.
"""

import jax

jax.config.update("jax_enable_x64", True)  # before anything builds a JAX array

import math  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from numpy.polynomial import Polynomial  # noqa: E402
from numpy.polynomial import hermite_e  # noqa: E402
from scipy.integrate import quad  # noqa: E402
from scipy.special import expit, ndtr  # noqa: E402

SLOT_PAIRS = (("a", "c"), ("a", "b"), ("a", "e"), ("c", "b"), ("b", "e"), ("c", "e"))
"""The six slots of the pair kernel K(a,b;c,e), in flowmoe's order ("ac","ab","ae","cb","be","ce")."""


# --- gates and their derivatives (closed forms, independent of sympy) -------------------------


def _sigmoid_polys(kmax):
    """P_k with σ^{(k)}(z) = P_k(σ(z)): P_0(s) = s, P_{k+1}(s) = P_k'(s)·s(1 − s)."""
    polys = [Polynomial([0.0, 1.0])]
    logistic = Polynomial([0.0, 1.0, -1.0])
    for _ in range(kmax):
        polys.append(polys[-1].deriv() * logistic)
    return polys


_SIGMOID_POLYS = _sigmoid_polys(16)


def hermite(k, z):
    """He_k(z), probabilists' Hermite polynomial (numpy's HermiteE basis)."""
    coef = np.zeros(k + 1)
    coef[k] = 1.0
    return hermite_e.hermeval(z, coef)


def gate_derivative(gate, k, z):
    """π^{(k)}(z) for every gate (vectorised numpy, closed forms independent of sympy).

    tanh(z) = 2σ(2z) − 1 and erf(z/√2) = 2Φ(z) − 1 reduce to the sigmoid and probit forms.
    """
    z = np.asarray(z, dtype=np.float64)
    if gate == "tanh":
        return np.tanh(z) if k == 0 else 2.0 ** (k + 1) * gate_derivative("sigmoid", k, 2.0 * z)
    if gate == "erf":
        return 2.0 * gate_derivative("probit", k, z) - (1.0 if k == 0 else 0.0)
    if gate == "identity":
        return z.copy() if k == 0 else (np.ones_like(z) if k == 1 else np.zeros_like(z))
    if gate == "sigmoid":
        return _SIGMOID_POLYS[k](expit(z))
    if gate == "probit":
        if k == 0:
            return ndtr(z)
        return (-1.0) ** (k - 1) * hermite(k - 1, z) * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    raise ValueError(gate)


def gate_derivative_scalar(gate, k):
    """A fast scalar (Python float) version of :func:`gate_derivative`, for scipy.integrate.quad."""
    if gate in ("tanh", "erf", "identity"):
        return lambda z: float(gate_derivative(gate, k, z))
    if gate == "sigmoid":
        coefs = list(_SIGMOID_POLYS[k].coef[::-1])  # Horner, highest degree first

        def f(z):
            s = 0.5 * (1.0 + math.tanh(0.5 * z))  # = 1/(1+e^{−z}), no overflow
            acc = 0.0
            for c in coefs:
                acc = acc * s + c
            return acc
        return f
    if gate == "probit":
        if k == 0:
            return lambda z: 0.5 * math.erfc(-z / math.sqrt(2.0))
        coef = np.zeros(k)
        coef[k - 1] = 1.0
        herm = hermite_e.herme2poly(coef)[::-1].tolist()
        sign = (-1.0) ** (k - 1) / math.sqrt(2 * math.pi)

        def g(z):
            acc = 0.0
            for c in herm:
                acc = acc * z + c
            return sign * acc * math.exp(-0.5 * z * z)
        return g
    raise ValueError(gate)


def normal_pdf(z):
    return math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def normal_expectation(f):
    """E[f(z)], z ~ N(0, 1), by adaptive quadrature (scipy ``quad``) on (−∞, 0] and [0, ∞)."""
    g = lambda z: f(z) * normal_pdf(z)  # noqa: E731
    left = quad(g, -np.inf, 0.0, epsabs=1e-14, epsrel=1e-12, limit=400)[0]
    right = quad(g, 0.0, np.inf, epsabs=1e-14, epsrel=1e-12, limit=400)[0]
    return left + right


# --- random geometry ------------------------------------------------------------------------


def random_unit_vectors(rng, n, d):
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def random_gram4(rng, kind="generic"):
    """Four unit vectors (a, b, c, e) as rows of a (4, 4) array, and their Gram matrix.

    kind: "generic" (i.i.d. uniform directions), "correlated" (large overlaps, |ρ| up to ≈ 0.95),
    "self" (a = c, b = e: the self term of one unit), "teacher" (c ⊥ e: unit 2 is a teacher unit).
    """
    if kind == "generic":
        X = random_unit_vectors(rng, 4, 4)
    elif kind == "correlated":
        base = random_unit_vectors(rng, 1, 4)[0]
        X = base + 0.35 * rng.standard_normal((4, 4))
        X[[1, 3]] *= rng.choice([-1.0, 1.0], size=(2, 1))  # experts with either sign
        X /= np.linalg.norm(X, axis=1, keepdims=True)
    elif kind == "self":
        a, b = random_unit_vectors(rng, 2, 4)
        X = np.stack([a, b, a, b])
    elif kind == "teacher":
        a, b = random_unit_vectors(rng, 2, 4)
        q, _ = np.linalg.qr(rng.standard_normal((4, 2)))
        X = np.stack([a, b, q[:, 0], q[:, 1]])
    else:
        raise ValueError(kind)
    return X, X @ X.T


def slot_overlaps(G):
    """The six overlaps of a Gram matrix of (a, b, c, e) in flowmoe's slot order, shape (6,)."""
    idx = {"a": 0, "b": 1, "c": 2, "e": 3}
    return np.array([G[idx[p], idx[q]] for p, q in SLOT_PAIRS])


def orthonormal_teacher(rng, m_star, d):
    """(V⋆, W⋆): 2m⋆ mutually orthonormal unit vectors in R^d, rows."""
    q, _ = np.linalg.qr(rng.standard_normal((d, 2 * m_star)))
    return q[:, :m_star].T.copy(), q[:, m_star:].T.copy()


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def rng(request):
    """A numpy Generator seeded from the test's name (fixed seed, independent across tests)."""
    seed = sum(ord(ch) * (i + 1) for i, ch in enumerate(request.node.name)) % (2**32)
    return np.random.default_rng(seed)


def great_circle_grams(t, specs, m_star):
    """Students moving on great circles: spec (teacher j, θ0, rate r, router delay τ) per student.

    Expert: w̄ = cos θ(t) e + sin θ(t) w⋆_j with θ(t) = θ0 + (π/2 − θ0)(1 − e^{−rt}); router: the same
    with t → max(t − τ, 0) (and θ0 → 0) towards v⋆_j. γ⁽²⁾ = sin θ(t), γ⁽¹⁾ = sin θ_router(t).
    """
    m = len(specs)
    d = 2 * m_star + 2 * m
    E = np.eye(d)
    Vs, Ws, spare = E[:m_star], E[m_star:2 * m_star], E[2 * m_star:]
    grams = []
    for tt in t:
        V, W = [], []
        for i, (j, th0, r, tau) in enumerate(specs):
            th = th0 + (np.pi / 2 - th0) * (1 - np.exp(-r * tt))
            thr = (np.pi / 2) * (1 - np.exp(-r * max(tt - tau, 0.0)))
            W.append(np.cos(th) * spare[2 * i] + np.sin(th) * Ws[j])
            V.append(np.cos(thr) * spare[2 * i + 1] + np.sin(thr) * Vs[j])
        U = np.vstack([V, W, Vs, Ws])
        grams.append(U @ U.T)
    return np.array(grams)


# A cheap run that learns both teachers and leaves one cancelling pair (m⋆ = 2, m = 4, d = 8):
# at t = 60 the loss is ≈ 3e-6, the aligned students are within ≈ 1e-3 of their teachers.
SMALL_CONVERGED = {"model.m": 4, "model.m_star": 2, "model.d": 8, "solver.t_end": 60, "solver.n_save": 121}


@pytest.fixture(scope="session")
def small_run_dir(tmp_path_factory):
    """A `flowmoe run` folder of SMALL_CONVERGED (shared by the pruning and fine-tuning tests)."""
    import flowmoe
    from flowmoe.run import run_job

    spec = flowmoe.load_preset("small").with_overrides(SMALL_CONVERGED)
    out = tmp_path_factory.mktemp("run")
    run_job(spec, out, progress=False)
    return out
