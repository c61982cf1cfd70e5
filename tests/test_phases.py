"""Phase machinery: refined crossings against an independent integrator, and closed-form cases.

Reference for the refined crossings: the reduced one-student/one-teacher system in five overlaps
(α, β, μ, ν, ρ), derived by sympy (flowmoe.symbolic.reduced_system) and integrated by scipy's
DOP853 with dense output; crossings by Brent's method on the dense output. flowmoe integrates the
vectorised Gram ODE with diffrax and refines by re-integration + Hermite interpolation, so the
two share only the pair kernel (itself checked against quadrature in test_kernel.py).
"""

import math

import numpy as np
import pytest
import sympy as sp
from scipy.integrate import solve_ivp
from scipy.optimize import brentq

import flowmoe
from flowmoe import symbolic
from flowmoe.correlation import correlation_table
from flowmoe.gates import get_expert
from flowmoe.observables import pair_T1
from flowmoe.phases import CrossingFinder, PhaseOptions, PhaseReport, analyze, plateaus
from flowmoe.trajectory import Trajectory

from conftest import great_circle_grams

T_END = 40.0
X0 = np.array([0.03, 0.12, 0.09, -0.07, 0.06])  # α, β, μ, ν, ρ
RTOL = 1e-6  # acceptance: relative agreement of crossing times


def _reduced_rhs():
    rs = symbolic.reduced_system(get_expert("he3"))
    table = correlation_table("sigmoid", 7)
    atoms = sorted(set().union(*[e.atoms(symbolic.R) for e in rs.rhs]), key=str)
    syms = [sp.Symbol(f"r{k}") for k in range(len(atoms))]
    X = [symbolic.ALPHA, symbolic.BETA, symbolic.MU, symbolic.NU, symbolic.RHO_S]
    f = sp.lambdify(X + syms, [e.xreplace(dict(zip(atoms, syms))) for e in rs.rhs], "numpy")
    # Each atom R_pq(arg) has arg = α or a constant (self and teacher terms: ρ_ac = 1).
    consts = [None if a.args[2] == symbolic.ALPHA else table.evaluate_numpy(int(a.args[0]), int(a.args[1]),
                                                                           float(a.args[2])) for a in atoms]
    pq = [(int(a.args[0]), int(a.args[1])) for a in atoms]

    def rhs(t, x):
        vals = [c if c is not None else table.evaluate_numpy(p, q, x[0]) for c, (p, q) in zip(consts, pq)]
        return np.array(f(*x, *vals), dtype=float)
    return rhs


@pytest.fixture(scope="module")
def reduced():
    """(flowmoe trajectory, scipy dense solution) of the same start."""
    a, b, mu, nu, rho = X0
    G0 = np.array([[1, rho, a, mu], [rho, 1, nu, b], [a, nu, 1, 0], [mu, b, 0, 1.0]])
    assert np.linalg.eigvalsh(G0).min() > 0  # a Gram matrix of unit vectors
    traj = flowmoe.flow_from_gram(G0, np.ones(4), 1, 1, np.linspace(0, T_END, 41), rtol=1e-10, atol=1e-12)
    ref = solve_ivp(_reduced_rhs(), (0, T_END), X0, method="DOP853", rtol=1e-12, atol=1e-14, dense_output=True)
    assert ref.success
    return traj, ref.sol


def _ref_up(sol, fn, level):
    """First upward crossing of fn(x(t)) through level, from the dense output (grid 0.01 + brentq)."""
    t = np.arange(0, T_END, 0.01)
    v = np.array([fn(sol(s)) for s in t])
    k = int(np.argmax(v >= level))
    assert v[k] >= level and k > 0
    return brentq(lambda s: fn(sol(s)) - level, t[k - 1], t[k], xtol=1e-14)


def _ref_settle(sol, fn, level):
    t = np.arange(0, T_END, 0.01)
    v = np.array([fn(sol(s)) for s in t])
    k = int(np.flatnonzero(v >= level)[-1])
    return brentq(lambda s: fn(sol(s)) - level, t[k], t[k + 1], xtol=1e-14)


def test_T1_agrees_with_scipy_reduced_ode(reduced):
    traj, sol = reduced
    rep = analyze(traj, PhaseOptions(), d=1000)
    assert rep.refined and rep.pairs == [[0, 0]]
    T1_ref = _ref_up(sol, lambda x: min(x[0], x[1]), 0.9)
    assert abs(rep.T1 - T1_ref) <= RTOL * T1_ref
    assert abs(rep.first["time"] - T1_ref) <= RTOL * T1_ref  # matching-free recovery: same pair here
    # The coarse-grid rule (linear interpolation, saved every 1.0) is much further off: the refinement matters.
    coarse = pair_T1(traj, [(0, 0)], 0.9)[0]
    assert abs(coarse - T1_ref) > 100 * abs(rep.T1 - T1_ref)
    # The re-integrated brackets end on the saved states (same solution, same solver).
    assert rep.stats["max_end_mismatch"] < 1e-8


def test_crossings_at_all_levels_agree_with_scipy(reduced):
    traj, sol = reduced
    rep = analyze(traj, PhaseOptions(), d=1000)
    for k, level in enumerate(rep.levels):
        for name, idx, got in (("expert", 1, rep.expert_crossings[0][k]), ("router", 0, rep.router_crossings[0][k])):
            if sol(0)[idx] >= level:
                assert got == 0.0
                continue
            want = _ref_up(sol, lambda x, i=idx: x[i], level)
            assert abs(got - want) <= RTOL * want, (name, level, got, want)
    lag_ref = _ref_up(sol, lambda x: x[0], 0.5) - _ref_up(sol, lambda x: x[1], 0.5)
    assert rep.lags[0] > 0 and abs(rep.lags[0] - lag_ref) <= 1e-6 * abs(lag_ref) + 1e-9


def test_Tc_agrees_with_scipy_reduced_ode(reduced):
    # With one teacher the error terms of the pair are |μ| (cross_vw), |ν| (cross_wv), |ρ| (self) and 0.
    traj, sol = reduced
    rep = analyze(traj, PhaseOptions(error_tol=0.05), d=1000)
    Tc_ref = _ref_settle(sol, lambda x: max(abs(x[2]), abs(x[3]), abs(x[4])), 0.05)
    assert Tc_ref > 1.0
    assert abs(rep.Tc - Tc_ref) <= RTOL * Tc_ref


def test_linear_fallback_without_ode_settings(reduced):
    traj, _sol = reduced
    bare = Trajectory(traj.t, traj.gram, traj.norms, traj.loss, 1, 1, {})
    finder = CrossingFinder(bare)
    assert not finder.refined
    rep = analyze(bare, PhaseOptions(), d=1000)
    assert rep.T1 == pytest.approx(pair_T1(bare, [(0, 0)], 0.9)[0], rel=1e-12)
    with pytest.raises(flowmoe.SpecError, match="refine"):
        CrossingFinder(bare, refine=True)


def test_report_round_trips_through_json(reduced):
    import json

    traj, _ = reduced
    rep = analyze(traj, PhaseOptions(), d=1000)
    back = PhaseReport.from_dict(json.loads(json.dumps(rep.to_dict())))
    assert back.T1 == rep.T1 and back.pairs == rep.pairs and back.lags == rep.lags
    assert math.isnan(back.T1_all) == math.isnan(rep.T1_all)


# Closed-form synthetic trajectories ---------------------------------------------------------
def _closed_T(level, r, delay=0.0, start=0.0):
    # sin θ = level ⇔ θ = asin(level); θ(t) = start + (π/2 − start)(1 − e^{−r (t − delay)}).
    th = math.asin(level)
    return delay - math.log(1 - (th - start) / (np.pi / 2 - start)) / r


def test_recovery_order_lag_and_T1_of_synthetic_trajectory():
    t = np.linspace(0, 30, 30001)
    specs = [(0, 0.2, 0.5, 2.0), (1, 0.1, 0.25, 3.0), (1, 0.05, 0.1, 1.0)]  # student 2 loses teacher 1
    G = great_circle_grams(t, specs, 2)
    traj = Trajectory(t, G, np.ones(G.shape[:2]), np.exp(-t), 3, 2)
    rep = analyze(traj, PhaseOptions(), d=100)
    assert not rep.refined
    assert rep.pairs == [[0, 0], [1, 1]]
    T1 = [_closed_T(0.9, r, tau) for _, _, r, tau in specs[:2]]  # the router (delayed) is last
    np.testing.assert_allclose(rep.T1_pairs, T1, rtol=1e-5)
    np.testing.assert_allclose(rep.recovery_times, T1, rtol=1e-5)
    assert rep.recovery_students == [0, 1]
    assert rep.recovery_order == [0, 1] and rep.expected_order == [0, 1]
    # κ_max = √d·sin θ0 of the best student per teacher.
    np.testing.assert_allclose(rep.kappa_max, [10 * math.sin(0.2), 10 * math.sin(0.1)], rtol=1e-12)
    # Lag at 0.5: router crossing − expert crossing, both in closed form.
    lags = [_closed_T(0.5, r, tau) - _closed_T(0.5, r, 0.0, th0) for _, th0, r, tau in specs[:2]]
    np.testing.assert_allclose(rep.lags, lags, rtol=1e-5)
    assert rep.first["teacher"] == 0 and rep.first["time"] == pytest.approx(T1[0], rel=1e-5)
    assert rep.first["predicted"] == pytest.approx(1 / (4.5 * math.sin(0.2)), rel=1e-12)
    assert rep.T1_all == pytest.approx(T1[1], rel=1e-5)


def test_plateaus_of_a_piecewise_loss():
    t = np.linspace(0, 40, 4001)
    L = np.interp(t, [0, 10, 12, 30, 31, 40], [1.0, 1.0, 0.3, 0.3, 0.01, 0.01])
    got = plateaus(t, L, flat=0.02, min_fraction=0.05)
    # A flat stretch may reach into a ramp of slope s next to level ℓ by at most 0.02·ℓ/s (+ one step).
    want = [[0, 10, 1.0], [12, 30, 0.3], [31, 40, 0.01]]
    slack = [[0, 0.02 * 1.0 / 0.35], [0.02 * 0.3 / 0.35, 0.02 * 0.3 / 0.29], [0.02 * 0.01 / 0.29, 0]]
    assert len(got) == 3
    for g, w, (s0, s1) in zip(got, want, slack):
        assert w[0] - s0 - 0.01 <= g[0] <= w[0] + 1e-9 and w[1] - 1e-9 <= g[1] <= w[1] + s1 + 0.01
        assert g[2] == pytest.approx(w[2], rel=0.02)
    # e^{−t} changes by more than 2% over any stretch longer than 0.02: no plateau of length ≥ 2.
    assert plateaus(t, np.exp(-t), flat=0.02, min_fraction=0.05) == []


@pytest.mark.parametrize("field,value", [("threshold", 1.5), ("levels", (0.5, 2.0)), ("matching", "best"),
                                         ("eps_A", "huge"), ("delta_P", -1.0), ("tc_terms", ("zeta9",))])
def test_bad_options_name_the_field(field, value):
    with pytest.raises(flowmoe.SpecError, match=f"phases.{field}"):
        PhaseOptions(**{field: value})


def test_refinement_keeps_the_norm_drift_of_an_api_trajectory():
    # Before the seams, the finder rebuilt the ODE with norm_drift_lr = 0 for API trajectories.
    from flowmoe.api import flow_from_gram
    from flowmoe.init import initial_state
    from flowmoe.ode import gram_ode
    from flowmoe.spec import load_preset

    st = initial_state(load_preset("small").model)
    ts = np.linspace(0.0, 30.0, 16)
    traj = flow_from_gram(st.gram, st.norms, 2, 1, ts, norms="state", norm_drift_lr=0.2, rtol=1e-10, atol=1e-10)
    assert traj.norms[-1, 0] > traj.norms[0, 0] + 1e-3  # the drift did something
    finder = CrossingFinder(traj)
    assert finder.refined and finder._ode == gram_ode("sigmoid", "he3", 2, 1, norm_drift_lr=0.2)
    k = 10
    _ts, G, _dG = finder.fine(k)
    assert finder.stats["max_end_mismatch"] < 1e-7
    # The vector field without the drift (what the finder used to rebuild) is a different one.
    assert finder._ode != gram_ode("sigmoid", "he3", 2, 1, norms="state")
    assert finder._solver.norm_drift_lr == 0.2 and finder._solver.norms == "state"
