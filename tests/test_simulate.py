"""Finite-step simulators in R^d (flowmoe.simulate), checked against independent computations.

References: the raw-vector population gradient of flowmoe.api (assembled from ∂L/∂G, a different
code path from the simulator's autodiff), a numpy forward model with central finite differences,
the exact gradient flow (a reference integrator at rtol 1e-10), exact identities (the gradient is
orthogonal to each vector, so norms never shrink; a mini-batch of all n samples is full-batch GD),
and convergence rates (O(lr) for population GD, n^(-1/2) for GD on n samples).
"""

import numpy as np
import pytest
from conftest import hermite, orthonormal_teacher
from scipy.special import expit

import flowmoe
from flowmoe import SolveError, SpecError
from flowmoe.compare import deviations, fit_slope, ode_at, save_times
from flowmoe.init import gram_from_vectors
from flowmoe.simulate import METHODS


def random_start(rng, d, m, m_star, warm=None):
    """Students i.i.d. N(0, I/d); with ``warm`` = a, student i < m⋆ starts with expert overlap a
    and router overlap a/2 with teacher i (a stretch of the flow without saddle)."""
    Vs, Ws = orthonormal_teacher(rng, m_star, d)
    V = rng.standard_normal((m, d)) / np.sqrt(d)
    W = rng.standard_normal((m, d)) / np.sqrt(d)
    if warm is not None:
        k = min(m, m_star)
        unit = lambda X: X / np.linalg.norm(X, axis=1, keepdims=True)
        W[:k] = warm * Ws[:k] + np.sqrt(1 - warm**2) * unit(W[:k])
        V[:k] = 0.5 * warm * Vs[:k] + np.sqrt(1 - 0.25 * warm**2) * unit(V[:k])
    return V, W, Vs, Ws


def numpy_output(V, W, X, k=3):
    """f(x) = Σ_i σ(v̄_iᵀx) He_k(w̄_iᵀx), written with numpy only."""
    Vb = V / np.linalg.norm(V, axis=1, keepdims=True)
    Wb = W / np.linalg.norm(W, axis=1, keepdims=True)
    return np.sum(expit(X @ Vb.T) * hermite(k, X @ Wb.T), axis=1)


# --- the gradients --------------------------------------------------------------------------


def test_population_gd_step_is_the_population_gradient_step(rng):
    """One step of population-gd = V − lr·∂L/∂V with flowmoe.population_grad (assembled from
    A = ∂L/∂G), to 1e-12 in the Gram matrix and the norms."""
    V, W, Vs, Ws = random_start(rng, 10, 3, 2)
    lr = 0.05
    traj = flowmoe.simulate(V, W, Vs, Ws, method="population-gd", lr=lr, steps=1)
    gV, gW = flowmoe.population_grad(V, W, Vs, Ws)
    G1, r1 = gram_from_vectors(V - lr * gV, W - lr * gW, Vs, Ws)
    assert traj.t.tolist() == [0.0, lr]
    np.testing.assert_allclose(traj.gram[1], G1, atol=1e-12)
    np.testing.assert_allclose(traj.norms[1], r1, rtol=1e-12)
    assert abs(traj.loss[1] - flowmoe.population_loss(V - lr * gV, W - lr * gW, Vs, Ws)) < 1e-12


def test_batch_loss_and_gradient_through_normalisation(rng):
    """The R^d model's output and batch-loss gradient against numpy and central differences
    (step 1e-6, tolerance 1e-6 relative); the per-sample gradient is orthogonal to each vector."""
    import jax
    import jax.numpy as jnp

    from flowmoe.model import moe_model

    d, m = 7, 3
    V, W = 1.7 * rng.standard_normal((m, d)), 0.6 * rng.standard_normal((m, d))
    Vs, Ws = orthonormal_teacher(rng, 2, d)
    X = rng.standard_normal((40, d))
    y = numpy_output(Vs, Ws, X)
    model = moe_model("sigmoid", "he3")
    np.testing.assert_allclose(np.asarray(model.output(jnp.asarray(V), jnp.asarray(W), jnp.asarray(X))),
                               numpy_output(V, W, X), rtol=1e-13, atol=1e-13)
    gV, gW = jax.grad(model.batch_loss, argnums=(0, 1))(jnp.asarray(V), jnp.asarray(W), jnp.asarray(X),
                                                         jnp.asarray(y))

    def loss(V_, W_):
        return 0.5 * np.mean((numpy_output(V_, W_, X) - y) ** 2)

    h = 1e-6
    for A, g, which in ((V, np.asarray(gV), 0), (W, np.asarray(gW), 1)):
        fd = np.zeros_like(A)
        for idx in np.ndindex(A.shape):
            E = np.zeros_like(A)
            E[idx] = h
            args_p = (V + E, W) if which == 0 else (V, W + E)
            args_m = (V - E, W) if which == 0 else (V, W - E)
            fd[idx] = (loss(*args_p) - loss(*args_m)) / (2 * h)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8 * np.abs(fd).max())
        # scale invariance: ⟨∇_u L̂, u⟩ = 0 for every raw vector u
        assert np.max(np.abs(np.sum(g * A, axis=1))) < 1e-12 * np.abs(g).max() * np.abs(A).max() * d


METHOD_CASES = [("population-gd", {}), ("online-sgd", {"batch": 64}), ("gd", {"n": 200}),
                ("minibatch-sgd", {"n": 200, "batch": 32})]


@pytest.mark.parametrize("method,kw", METHOD_CASES)
def test_norms_never_shrink_and_time_map(rng, method, kw):
    """Every gradient is orthogonal to its vector, so ‖u − lr·g‖ ≥ ‖u‖ at every step (to
    rounding); saved times are t = lr × steps; teacher rows unchanged; the result is a
    Trajectory that observables accept."""
    from flowmoe.observables import summarize

    V, W, Vs, Ws = random_start(rng, 10, 3, 2)
    lr, steps, every = 0.05, 37, 5
    traj = flowmoe.simulate(V, W, Vs, Ws, method=method, lr=lr, steps=steps, save_every=every, seed=3, **kw)
    np.testing.assert_array_equal(traj.t, lr * np.array([0, 5, 10, 15, 20, 25, 30, 35, 37]))
    np.testing.assert_array_equal(traj.t, save_times(lr, steps, every))
    prov = traj.provenance
    assert prov.time == "t = lr * steps" and prov.simulation["method"] == method
    assert prov.simulation["dtype"] == "float64" and prov.simulation["steps"] == steps
    assert np.all(np.diff(traj.norms, axis=0) >= -1e-13)
    assert np.all(traj.norms[-1, :6] > traj.norms[0, :6])   # they do grow (second order in lr)
    np.testing.assert_array_equal(traj.gram[:, 6:, 6:], np.broadcast_to(traj.gram[0, 6:, 6:], (9, 4, 4)))
    assert np.max(np.abs(np.diagonal(traj.gram, axis1=1, axis2=2) - 1)) == 0
    assert np.min(np.linalg.eigvalsh(traj.gram)) > -1e-12
    summarize(traj)


def test_minibatch_of_all_samples_is_full_batch_gd(rng):
    """With batch = n every epoch is one batch of all n samples (in a permuted order), so
    minibatch-sgd takes the full-batch GD steps (same seed ⇒ same samples)."""
    V, W, Vs, Ws = random_start(rng, 10, 3, 2)
    a = flowmoe.simulate(V, W, Vs, Ws, method="gd", lr=0.03, steps=40, n=300, seed=5)
    b = flowmoe.simulate(V, W, Vs, Ws, method="minibatch-sgd", lr=0.03, steps=40, n=300, batch=300, seed=5)
    c = flowmoe.simulate(V, W, Vs, Ws, method="minibatch-sgd", lr=0.03, steps=40, n=300, batch=100, seed=5)
    np.testing.assert_allclose(a.gram, b.gram, atol=1e-12)
    assert np.max(np.abs(a.gram - c.gram)) > 1e-6  # smaller batches do differ


def test_seed_determines_the_run(rng):
    V, W, Vs, Ws = random_start(rng, 10, 3, 2)
    run = lambda seed: flowmoe.simulate(V, W, Vs, Ws, method="online-sgd", lr=0.02, steps=30,
                                        batch=50, seed=seed)
    a, b, c = run(1), run(1), run(2)
    np.testing.assert_array_equal(a.gram, b.gram)
    assert np.max(np.abs(a.gram - c.gram)) > 1e-6


def test_float32_is_explicit_and_close_to_float64(rng):
    """dtype='float32' runs in single precision (and says so); over 200 population-GD steps it
    stays within 1e-4 of the float64 run."""
    V, W, Vs, Ws = random_start(rng, 10, 3, 2)
    a = flowmoe.simulate(V, W, Vs, Ws, method="population-gd", lr=0.02, steps=200)
    b = flowmoe.simulate(V, W, Vs, Ws, method="population-gd", lr=0.02, steps=200, dtype="float32")
    assert a.provenance.simulation["dtype"] == "float64" and b.provenance.simulation["dtype"] == "float32"
    assert b.gram.dtype == np.float64
    dev = np.max(np.abs(a.gram - b.gram))
    assert 1e-9 < dev < 1e-4  # single precision is visible, and small


# --- against the ODE --------------------------------------------------------------------------


def test_population_gd_converges_to_the_flow_at_first_order(rng):
    """d = 30, m = 3, m⋆ = 2 from a random start to t = 10: the deviation of the Gram matrix
    from the exact flow at t = 10 halves when lr halves (ratio within [1.8, 2.2]) and is below
    0.1 at lr = 0.02."""
    V, W, Vs, Ws = random_start(rng, 30, 3, 2)
    devs = []
    for lr in (0.02, 0.01, 0.005):
        sim = flowmoe.simulate(V, W, Vs, Ws, method="population-gd", lr=lr, t_end=10.0, save_every=int(2 / lr))
        ode = ode_at(V, W, Vs, Ws, sim.t)
        assert sim.t[-1] == pytest.approx(10.0, abs=1e-12)
        devs.append(np.max(np.abs(sim.gram[-1] - ode.gram[-1])))
    assert devs[0] < 0.1
    ratios = [devs[0] / devs[1], devs[1] / devs[2]]
    assert all(1.8 < r < 2.2 for r in ratios), (devs, ratios)


def test_online_sgd_follows_the_flow_d30(rng):
    """d = 30, m = m⋆ = 2, warm start (no saddle), batch 4096, lr 0.004, t ≤ 2 (500 steps):
    matched and teacher-wise alignments within 0.02 of the flow, loss within 10 % (bound on the
    SGD noise: √(lr·t·σ²/B) ≈ 0.02 with σ² ≈ 300, the per-sample gradient variance along a
    direction at the start, which falls with the loss)."""
    V, W, Vs, Ws = random_start(rng, 30, 2, 2, warm=0.6)
    sim = flowmoe.simulate(V, W, Vs, Ws, method="online-sgd", lr=0.004, t_end=2.0, batch=4096, seed=0,
                           save_every=25)
    ode = ode_at(V, W, Vs, Ws, sim.t)
    dev = deviations(ode, sim)
    assert ode.expert_alignment[-1, 0, 0] > 0.99 and ode.expert_alignment[0, 0, 0] < 0.85  # it moves
    assert dev["alignment"] < 0.02 and dev["matched"] < 0.02, dev
    assert dev["loss_rel"] < 0.1, dev


@pytest.mark.long  # 22 s; the d = 30 version runs in CI
def test_online_sgd_follows_the_flow_d150(rng):
    """d = 150, m = m⋆ = 2, warm start, batch 4096, lr 0.004, t ≤ 4 (1000 steps): alignments
    within 0.03 of the flow, loss within 15 % (noise scale √(lr·t·σ²/B) ≈ 0.03 with σ² ≈ 300 at
    the start; the noise-driven norm growth lr·d·σ²/B ≈ 0.04 per unit time slows the SGD a little)."""
    V, W, Vs, Ws = random_start(rng, 150, 2, 2, warm=0.6)
    sim = flowmoe.simulate(V, W, Vs, Ws, method="online-sgd", lr=0.004, t_end=4.0, batch=4096, seed=0,
                           save_every=50)
    ode = ode_at(V, W, Vs, Ws, sim.t)
    dev = deviations(ode, sim)
    assert ode.router_alignment[-1, 0, 0] > 0.8 and ode.router_alignment[0, 0, 0] < 0.4
    assert dev["alignment"] < 0.03 and dev["matched"] < 0.03, dev
    assert dev["loss_rel"] < 0.15, dev


@pytest.mark.slow
def test_full_batch_gd_on_n_samples_loss_deviation_falls_as_inverse_sqrt_n(rng):
    """GD on n fixed samples against population GD at the same lr (so only the sampling error
    remains), d = 20, m = m⋆ = 2, warm start, t ≤ 3: the largest deviation of the population loss,
    averaged over 4 seeds, falls with n ∈ {500, …, 32000} with fitted slope −½ ± 0.15."""
    V, W, Vs, Ws = random_start(rng, 20, 2, 2, warm=0.6)
    lr, T = 0.01, 3.0
    pop = flowmoe.simulate(V, W, Vs, Ws, method="population-gd", lr=lr, t_end=T, save_every=10)
    ns = [500, 2000, 8000, 32000]
    dev = []
    for n in ns:
        runs = [flowmoe.simulate(V, W, Vs, Ws, method="gd", lr=lr, t_end=T, n=n, seed=s, save_every=10)
                for s in range(4)]
        dev.append(np.mean([np.max(np.abs(r.loss - pop.loss)) for r in runs]))
    slope = fit_slope(ns, dev)
    assert -0.65 < slope < -0.35, (dev, slope)


# --- divergence and bad input -----------------------------------------------------------------


def test_divergence_by_norm_growth_keeps_the_partial_trajectory(rng):
    V, W, Vs, Ws = random_start(rng, 10, 3, 2)
    with pytest.raises(SolveError, match="lr = 2 is too large") as info:
        flowmoe.simulate(V, W, Vs, Ws, method="online-sgd", lr=2.0, steps=400, batch=16, save_every=4,
                         max_norm_growth=3.0)
    part = info.value.partial
    assert isinstance(part, flowmoe.Trajectory) and part.provenance.status == "diverged"
    assert 1 <= len(part) < 101
    np.testing.assert_array_equal(part.t, save_times(2.0, 400, 4)[:len(part)])
    assert np.all(np.isfinite(part.gram)) and np.all(part.norms[:, :6] <= 3.0 * part.norms[0, :6])


def test_divergence_to_nan_is_reported(rng):
    V, W, Vs, Ws = random_start(rng, 10, 3, 2)
    with pytest.raises(SolveError, match="non-finite") as info:
        flowmoe.simulate(V, W, Vs, Ws, method="population-gd", lr=1e300, steps=10, max_norm_growth=None)
    part = info.value.partial
    assert part.t.tolist() == [0.0] and part.provenance.status == "diverged"
    np.testing.assert_allclose(part.gram[0], gram_from_vectors(V, W, Vs, Ws)[0], atol=1e-15)


@pytest.mark.parametrize("kwargs,field", [
    ({"method": "sgd"}, "method"),
    ({"lr": 0.0}, "lr"),
    ({"lr": float("nan")}, "lr"),
    ({"steps": 0}, "steps"),
    ({"steps": 2.5}, "steps"),
    ({"steps": 10, "t_end": 1.0}, "steps"),
    ({"steps": None}, "steps"),
    ({"batch": 0}, "batch"),
    ({"batch": None}, "batch"),
    ({"method": "gd", "batch": None}, "n"),
    ({"method": "gd", "batch": None, "n": 0}, "n"),
    ({"method": "population-gd", "batch": 8}, "batch"),
    ({"method": "online-sgd", "n": 100}, "n"),
    ({"method": "minibatch-sgd", "n": 10, "batch": 20}, "batch"),
    ({"dtype": "float16"}, "dtype"),
    ({"seed": -1}, "seed"),
    ({"save_every": 0}, "save_every"),
    ({"max_norm_growth": 1.0}, "max_norm_growth"),
    ({"gate": "relu"}, "gate"),
])
def test_bad_input_names_the_field(rng, kwargs, field):
    V, W, Vs, Ws = random_start(rng, 8, 2, 1)
    args = {"method": "online-sgd", "lr": 0.1, "steps": 10, "batch": 8, **kwargs}
    with pytest.raises(SpecError) as info:
        flowmoe.simulate(V, W, Vs, Ws, **args)
    assert info.value.field == field
    if field in ("method", "dtype"):
        assert "allowed" in str(info.value)


def test_bad_vectors_are_rejected(rng):
    V, W, Vs, Ws = random_start(rng, 8, 2, 1)
    with pytest.raises(SpecError) as info:
        flowmoe.simulate(V, W[:, :5], Vs, Ws, method="population-gd", steps=1)
    assert info.value.field == "W"
    with pytest.raises(SpecError):
        flowmoe.simulate(V * np.nan, W, Vs, Ws, method="population-gd", steps=1)


def test_every_listed_method_is_exercised_and_an_unknown_one_refused():
    # The norm and time-map test above runs each method; a method added to METHODS without a case
    # there fails here.
    assert sorted(METHODS) == sorted(m for m, _ in METHOD_CASES)
    V = np.ones((2, 4))
    with pytest.raises(SpecError) as info:
        flowmoe.simulate(V, V, V[:1], V[:1], method="adam", steps=1)
    assert info.value.field == "method" and all(m in str(info.value) for m in METHODS)


def test_projected_population_gd_keeps_norms_and_converges_to_the_flow():
    """Projected (spherical) GD: norms exactly constant; deviation from the ODE halves with lr."""
    from flowmoe.compare import ode_at

    rng = np.random.default_rng(7)
    d, m, ms = 20, 3, 2
    Q, _ = np.linalg.qr(rng.standard_normal((d, 2 * ms)))
    Vs, Ws = Q.T[:ms], Q.T[ms:]
    V = rng.standard_normal((m, d)) / np.sqrt(d) + 0.3 * np.vstack([Vs, Vs[:1]])
    W = rng.standard_normal((m, d)) / np.sqrt(d) + 0.3 * np.vstack([Ws, Ws[:1]])
    devs = []
    for lr in (0.02, 0.01):
        sim = flowmoe.simulate(V, W, Vs, Ws, method="population-gd", lr=lr, t_end=4.0, save_every=int(round(1 / lr)),
                               project=True)
        np.testing.assert_allclose(sim.norms, np.broadcast_to(sim.norms[0], sim.norms.shape), rtol=1e-12)
        ode = ode_at(V, W, Vs, Ws, sim.t)
        devs.append(np.max(np.abs(sim.gram - ode.gram)))
    assert 1.7 < devs[0] / devs[1] < 2.3, devs
