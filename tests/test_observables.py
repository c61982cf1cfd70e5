"""Observables on trajectories whose answers are known in closed form."""

import numpy as np
import pytest

from flowmoe.observables import (error_terms, first_crossing, greedy_matching, pair_T1, summarize,
                                 time_Tc)
from flowmoe.trajectory import Trajectory


def test_greedy_matching_takes_largest_then_deletes_row_and_column():
    g = np.array([[0.9, 0.8, 0.0],
                  [0.85, 0.1, 0.0],
                  [0.0, 0.7, 0.2],
                  [0.0, 0.0, 0.3]])
    # Largest 0.9 → (0,0); then rows 1..3 × cols 1,2: 0.7 → (2,1); then 0.3 → (3,2).
    assert greedy_matching(g) == [(0, 0), (2, 1), (3, 2)]


def test_greedy_matching_is_signed():
    g = np.array([[-0.95, 0.1], [0.2, 0.5], [0.3, 0.0]])
    assert greedy_matching(g) == [(2, 0), (1, 1)]


def test_first_crossing_interpolates_an_analytic_curve():
    t = np.linspace(0, 10, 2001)
    x = 1 - np.exp(-t)
    assert abs(first_crossing(t, x, 0.9) - np.log(10)) < 1e-4  # linear interpolation error O(h²)
    assert np.isnan(first_crossing(t, x, 1.5))


def _synthetic(m=3, ms=2, T=401, t_end=20.0):
    """Unit directions moving along known great circles: student i rotates towards teacher i."""
    d = 2 * (m + ms) + 2
    t = np.linspace(0, t_end, T)
    E = np.eye(d)
    teachers_v, teachers_w = E[:ms], E[ms:2 * ms]
    spare = E[2 * ms:]
    rates = [0.5, 0.25]  # student 0 → teacher 0 aligns faster than student 1 → teacher 1
    grams = []
    for tt in t:
        V, W = [], []
        for i in range(m):
            if i < ms:
                th = np.pi / 2 * (1 - np.exp(-rates[i] * tt))
                V.append(np.cos(th) * spare[2 * i] + np.sin(th) * teachers_v[i])
                W.append(np.cos(th) * spare[2 * i + 1] + np.sin(th) * teachers_w[i])
            else:
                V.append(spare[-2])
                W.append(spare[-1])
        U = np.vstack([V, W, teachers_v, teachers_w])
        grams.append(U @ U.T)
    gram = np.array(grams)
    n = gram.shape[1]
    return Trajectory(t, gram, np.ones((T, n)), np.exp(-t), m, ms), rates


def test_T1_per_pair_matches_closed_form():
    traj, rates = _synthetic()
    pairs = [(0, 0), (1, 1)]
    T1 = pair_T1(traj, pairs, threshold=0.9)
    # γ = sin(π/2 (1 − e^{−rt})) = 0.9  ⇔  t = −ln(1 − 2 arcsin(0.9)/π)/r
    exact = [-np.log(1 - 2 * np.arcsin(0.9) / np.pi) / r for r in rates]
    np.testing.assert_allclose(T1, exact, rtol=2e-3)


def test_error_terms_and_Tc_on_synthetic_trajectory():
    traj, rates = _synthetic()
    pairs = [(0, 0), (1, 1)]
    errs = error_terms(traj, pairs)
    th = np.pi / 2 * (1 - np.exp(-rates[0] * traj.t))
    np.testing.assert_allclose(errs["zeta2_gap"][:, 0], np.cos(th) ** 2, atol=1e-12)
    # Off-target overlaps are exactly zero in this construction.
    assert np.max(errs["zeta1_max"]) < 1e-12 and np.max(errs["cross_vw"]) < 1e-12
    Tc = time_Tc(traj, pairs, tol=0.05, terms=("zeta1_gap", "zeta2_gap"))
    # Slowest pair: cos²(θ) < 0.05 ⇔ θ > arccos(√0.05); first saved time after that.
    exact = -np.log(1 - 2 * np.arccos(np.sqrt(0.05)) / np.pi) / rates[1]
    assert exact <= Tc <= exact + (traj.t[1] - traj.t[0]) + 1e-12


def test_summary_reports_recovery_order():
    traj, _ = _synthetic()
    s = summarize(traj)
    assert s["recovery_order_teachers"] == [0, 1]
    assert s["matchings_agree"] and s["recovered"] == 2


def test_trajectory_roundtrip(tmp_path):
    traj, _ = _synthetic()
    traj = traj.with_provenance(source="simulation", status="partial", error="cut").annotate(label="synthetic")
    path = traj.save(tmp_path / "t.npz")
    back = Trajectory.load(path)
    np.testing.assert_array_equal(back.gram, traj.gram)
    assert back.provenance == traj.provenance and back.m == traj.m and back.layout == traj.layout


def test_legacy_meta_file_loads(tmp_path):
    """A trajectory file of flowmoe 0.1 (free ``meta`` JSON string) loads with its provenance."""
    import json

    traj, _ = _synthetic()
    meta = {"source": "ode", "gate": {"name": "sigmoid"}, "solver": {"method": "tsit5", "steps": 12},
            "status": "partial", "error": "max steps", "labels": [1, 2]}
    np.savez_compressed(tmp_path / "old.npz", t=traj.t, gram=traj.gram, norms=traj.norms, loss=traj.loss,
                        m=traj.m, m_star=traj.m_star, meta=json.dumps(meta))
    back = Trajectory.load(tmp_path / "old.npz")
    p = back.provenance
    assert (p.source, p.status, p.error, p.stats["steps"], p.solver["method"]) == ("ode", "partial", "max steps", 12,
                                                                                   "tsit5")
    assert p.model["gate"]["name"] == "sigmoid" and p.notes["labels"] == [1, 2]


def test_trajectory_shape_errors():
    with pytest.raises(ValueError):
        Trajectory(np.zeros(3), np.zeros((3, 4, 4)), np.zeros((3, 4)), np.zeros(3), m=2, m_star=1)
