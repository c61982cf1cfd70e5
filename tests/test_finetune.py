"""Fine-tuning after pruning, the fitted rate and the Hessian prediction (docs/maths.md §5).

Independent references: finite differences of flowmoe.population_grad (Hessian), the hand-derived
second-order expansion of L(G) (orthogonal block), the exact loss near the teacher (linearised
modes), population gradient descent in R^d by autodiff (fine-tuning), closed-form exponentials
and angles (fits, distances).
"""

import numpy as np
import pytest

import flowmoe
from flowmoe.finetune import (distance_to_teacher, finetune, finetune_gd, fit_loss_rate, fit_rate,
                              hessian_by_differences, linear_loss, load_run, modal_decomposition, predict,
                              student_order, teacher_hessian)
from flowmoe.init import gram_from_vectors
from flowmoe.backends.pair import gram_loss
from flowmoe.prune import Network, prune
from flowmoe.trajectory import Trajectory

@pytest.fixture(scope="module")
def small_run(small_run_dir):
    return load_run(small_run_dir)


def random_teacher_gram(rng, m_star):
    """A generic (not orthonormal) teacher: unit vectors with overlaps up to ≈ 0.5."""
    X = np.eye(2 * m_star) + 0.3 * rng.standard_normal((2 * m_star, 2 * m_star))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X @ X.T


@pytest.mark.parametrize("teacher", ["orthonormal", "generic"])
def test_hessian_matches_finite_differences_of_population_grad(rng, teacher):
    m_star = 2
    Gt = np.eye(2 * m_star) if teacher == "orthonormal" else random_teacher_gram(rng, m_star)
    norms = rng.uniform(0.7, 1.4, 2 * m_star)
    hess = teacher_hessian(Gt, norms, extra_dims=1)
    H_fd = hessian_by_differences(hess, h=1e-5)
    # Central differences: O(h²) ≈ 1e-10 truncation plus ≈ 1e-11 round-off; measured ≈ 2e-9 abs.
    scale = np.max(np.abs(hess.hessian))
    assert np.max(np.abs(H_fd - hess.hessian)) <= 1e-7 * scale
    # The teacher point is a strict minimum on the product of spheres: zero gradient, H > 0.
    assert hess.grad_norm < 1e-10
    assert np.min(np.linalg.eigvalsh(hess.hessian)) > 1e-3 * scale


def test_hessian_blocks_and_extra_dimensions(rng):
    """In-span and orthogonal blocks decouple; the orthogonal block is h_⊥ ⊗ I and h_⊥ equals the
    second-order expansion of L(G) by hand: h_⊥ = (A − diag(Σ_k A_pk G_pk)) on the student directions."""
    m_star = 2
    norms = rng.uniform(0.8, 1.25, 2 * m_star)
    h1 = teacher_hessian(np.eye(2 * m_star), norms, extra_dims=1)
    h3 = teacher_hessian(np.eye(2 * m_star), norms, extra_dims=3)
    np.testing.assert_allclose(h3.span_rates, h1.span_rates, rtol=1e-10)
    np.testing.assert_allclose(h3.perp_rates, h1.perp_rates, rtol=1e-10)
    assert h1.cross_block_max < 1e-12 and h3.cross_block_max < 1e-12
    # The spectrum with 3 extra dimensions is the in-span one plus the orthogonal one three times.
    full = np.sort(np.linalg.eigvalsh(h3.rate_matrix))
    expect = np.sort(np.concatenate([h1.span_rates] + [h1.perp_rates] * 3))
    np.testing.assert_allclose(full, expect, rtol=1e-9)
    # Closed form of the orthogonal block at the teacher point (Gram layout: students then teachers).
    P = 2 * m_star
    G = np.eye(2 * P)
    G[:P, P:] = G[P:, :P] = np.eye(P)  # each student direction equals its teacher direction
    _, A = gram_loss("sigmoid", "he3", m_star, m_star).loss_and_grad(G)
    A = np.asarray(A)
    c = np.sum(A * G, axis=1)
    h_perp = (A - np.diag(c))[:P, :P]
    nb = h1.bases.shape[2]
    first_perp = np.arange(P) * nb + nb - 1
    np.testing.assert_allclose(h1.hessian[np.ix_(first_perp, first_perp)], h_perp, atol=1e-9)
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(h_perp / np.outer(norms, norms))), h1.perp_rates,
                               rtol=1e-9)


def test_linearised_modes_reproduce_the_exact_loss_near_the_teacher(rng):
    """½ζᵀMζ from the Gram matrix alone (in-span coordinates + Gram of the orthogonal parts) equals
    the exact loss at a point ε ≈ 1e-4 from the teacher up to O(ε) relative."""
    m_star, d = 2, 7
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    Vs, Ws = q[:m_star], q[m_star:2 * m_star]
    eps = 1e-4
    V = Vs + eps * rng.standard_normal(Vs.shape)
    W = Ws + eps * rng.standard_normal(Ws.shape)
    norms = rng.uniform(0.8, 1.25, 2 * m_star)
    V *= norms[:m_star, None] / np.linalg.norm(V, axis=1, keepdims=True)
    W *= norms[m_star:, None] / np.linalg.norm(W, axis=1, keepdims=True)
    order = [1, 0]  # students stored in the other order than their teachers
    G, r = gram_from_vectors(V[order], W[order], Vs, Ws)
    net = Network(G, r, m_star, m_star)
    assert list(student_order(net)) == [1, 0]
    hess = predict(net, extra_dims=1).hess
    rates, shares, _ = modal_decomposition(hess, net)
    exact = flowmoe.population_loss(V, W, Vs, Ws)
    assert abs(shares.sum() - exact) <= 2e-3 * exact
    assert np.all(shares >= -1e-30) and np.all(rates > 0)


def test_fit_rate_recovers_a_known_exponential():
    t = np.linspace(0, 80, 401)
    y = 3e-3 * np.exp(-0.37 * t) + 0.5 * np.exp(-4.0 * t)  # a fast transient on top
    fit = fit_rate(t, y, lo=1e-12, hi=1e-5)
    assert abs(fit.rate - 0.37) < 1e-6 and abs(fit.halves[0] - fit.halves[1]) < 1e-6
    assert y[fit.t0 == t][0] <= 1e-5 and np.exp(-0.37 * fit.t1) * 3e-3 >= 1e-12
    assert fit_rate(t, y, lo=1e-5, hi=1e-6) is None            # empty window
    assert fit_rate(t[:20], y[:20], lo=1e-12, hi=1e-5) is None  # never below hi


def test_distance_to_teacher_matches_known_angles():
    m, ms = 1, 1
    angles = np.array([0.0, 1e-3, 0.3])
    grams = []
    for a in angles:
        # v̄ at angle a from v⋆ in the (v⋆, w⋆) plane's complement; w̄ = w⋆ exactly.
        X = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [1, 0, 0], [0, 1, 0]])
        grams.append(X @ X.T)
    traj = Trajectory(np.arange(3.0), np.array(grams), np.ones((3, 4)), np.zeros(3), m, ms)
    np.testing.assert_allclose(distance_to_teacher(traj, [(0, 0)]), 2 * np.sin(angles / 2),
                               rtol=1e-9, atol=1e-15)


def test_finetuning_a_pruned_run_reaches_zero_loss_at_the_predicted_rate(small_run):
    result = prune(small_run.network(), "oracle")
    pruned = result.network
    assert pruned.m == pruned.m_star == 2
    pred = predict(pruned, extra_dims=1, d=small_run.spec.model.d)
    traj = finetune(pruned, 60.0, 301)
    assert traj.loss[-1] <= 1e-10
    fit = fit_loss_rate(traj)
    assert fit is not None and fit.t1 - fit.t0 > 10
    # The issue asks for 10 %; on this run the slowest mode carries the loss, so the fit must agree
    # far better (measured 4e-5 relative): 1e-3 catches a wrong factor in the prediction.
    assert abs(fit.rate - pred.loss_rate) <= 1e-3 * pred.loss_rate
    # The linearised flow from the pruned state predicts the same curve on the fit window.
    rates, shares, _ = modal_decomposition(pred.hess, pruned)
    assert abs(shares.sum() - result.loss_after) <= 0.05 * result.loss_after
    win = (traj.t >= fit.t0) & (traj.t <= fit.t1)
    lin_rate = -np.polyfit(traj.t[win], np.log(linear_loss(rates, shares, traj.t[win])), 1)[0]
    assert abs(lin_rate - fit.rate) <= 0.01 * fit.rate


def test_population_gd_in_Rd_follows_the_gram_ode(small_run):
    """Fine-tuning by population GD on raw vectors (autodiff, step 0.01) against the Gram ODE."""
    pruned = prune(small_run.network(), "oracle").network
    t_end = 30.0
    ode = finetune(pruned, t_end, 151)
    gd = finetune_gd(pruned, lr=0.01, t_end=t_end, save_every=20)
    assert np.allclose(gd.t, ode.t)
    live = ode.loss > 1e-11
    # O(η) differences in the loss at equal flow times (measured: at most 1.6%, early, from the fast modes).
    np.testing.assert_allclose(gd.loss[live], ode.loss[live], rtol=0.03)
    f_ode, f_gd = fit_loss_rate(ode), fit_loss_rate(gd)
    assert abs(f_gd.rate - f_ode.rate) <= 0.01 * f_ode.rate
    # Norms grow only at second order in the step (docs/maths.md §6).
    assert np.max(np.abs(gd.norms[-1] - gd.norms[0])) < 1e-3


def test_no_prediction_when_the_pruned_net_is_not_teacher_sized(small_run):
    net = small_run.network()
    assert predict(net) is None  # m = 4 > m⋆ = 2: no isolated minimum
