"""Matching rules: which student takes which teacher, predicted from the start or read at the end.

Checked against independent answers: brute force over assignments, the arcsine closed form of the
erf gate's correlation, the exact ODE's velocity at a high-dimensional start, and trajectories whose
winners are known by construction.
"""

import itertools
import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from flowmoe.api import vector_field_of
from flowmoe.commands import main
from flowmoe.errors import SpecError
from flowmoe.observables import escape_times, match_pairs, predicted_winners, summarize
from flowmoe.spec import load_preset
from flowmoe.sweep import integrate_spec
from flowmoe.trajectory import Trajectory


def _trajectory(students_v, students_w, ms, later=None):
    """A two-time Trajectory of given unit student directions against the standard-basis teacher
    (v⋆_j = e_j, w⋆_j = e_{m⋆+j}); ``later`` (V, W) replaces the students at the second time."""
    d = students_v.shape[1]
    E = np.eye(d)
    teach = np.vstack([E[:ms], E[ms:2 * ms]])
    grams = []
    for V, W in ((students_v, students_w), later or (students_v, students_w)):
        U = np.vstack([V, W, teach])
        grams.append(U @ U.T)
    m = len(students_v)
    n = 2 * m + 2 * ms
    return Trajectory(np.array([0.0, 1.0]), np.array(grams), np.ones((2, n)), np.ones(2), m, ms)


def _unit_rows(rng, m, d, cols, values):
    """Rows with prescribed components ``values`` (m, len(cols)) on ``cols``, the rest random."""
    X = rng.standard_normal((m, d)) * 0.01
    X[:, cols] = values
    free = [c for c in range(d) if c not in cols]
    rest = np.sqrt(np.clip(1.0 - np.sum(values**2, axis=1), 0.0, None))
    X[:, free] *= (rest / np.linalg.norm(X[:, free], axis=1))[:, None]
    return X


@pytest.mark.parametrize("seed", range(5))
def test_hungarian_is_the_best_assignment_by_brute_force(seed):
    rng = np.random.default_rng(seed)
    m, ms, d = 5, 3, 30
    beta = rng.uniform(-0.5, 0.5, (m, ms))
    W = _unit_rows(rng, m, d, list(range(ms, 2 * ms)), beta)
    V = _unit_rows(rng, m, d, list(range(ms)), np.zeros((m, ms)))
    traj = _trajectory(V, W, ms)
    b = traj.expert_alignment[0]
    best = max(itertools.permutations(range(m), ms), key=lambda rows: sum(b[r, j] for j, r in enumerate(rows)))
    assert match_pairs(traj, "hungarian") == [(r, j) for j, r in enumerate(best)]


def test_escape_time_uses_the_router_overlap_through_the_gate_correlation():
    # Erf gate π(z) = erf(z/√2): R₀₀(α) = (2/π) arcsin(α/2) (the arcsine kernel), so a router with
    # a larger overlap speeds its expert: student 1 (β 0.2, α 0.3) escapes before student 0 (β 0.3,
    # α 0.02) although the initial greedy matching takes student 0.
    rng = np.random.default_rng(0)
    ms, d = 1, 40
    beta = np.array([[0.3], [0.2], [-0.4]])
    alpha = np.array([[0.02], [0.3], [0.5]])
    W = _unit_rows(rng, 3, d, [1], beta)
    V = _unit_rows(rng, 3, d, [0], alpha)
    traj = _trajectory(V, W, ms)
    tau = escape_times(traj, gate="erf", expert="he3")
    R00 = 2 / np.pi * np.arcsin(traj.router_alignment[0] / 2)
    expected = 1.0 / (18.0 * R00 * traj.expert_alignment[0])
    np.testing.assert_allclose(tau[:2], expected[:2], rtol=1e-10)
    assert np.isinf(tau[2, 0])  # β₀ < 0 does not escape under He₃
    assert match_pairs(traj, "initial", "erf", "he3") == [(0, 0)]
    assert match_pairs(traj, "escape-time", "erf", "he3") == [(1, 0)]
    # He₄ (k = 4, even): τ = |β₀|^{-2} / (2 · 4 · 4! · R₀₀); the negative overlap escapes too.
    tau4 = escape_times(traj, gate="erf", expert="he4")
    np.testing.assert_allclose(tau4, 1.0 / (2 * 96 * R00 * traj.expert_alignment[0] ** 2), rtol=1e-10)


def test_escape_time_needs_the_model():
    rng = np.random.default_rng(1)
    traj = _trajectory(_unit_rows(rng, 2, 10, [0], np.zeros((2, 1))), _unit_rows(rng, 2, 10, [1], np.zeros((2, 1))), 1)
    with pytest.raises(SpecError, match="matching"):
        escape_times(traj)
    with pytest.raises(SpecError, match="allowed"):
        match_pairs(traj, "best")


@pytest.mark.parametrize("expert,k,a", [("he3", 3, 1.0), ("2*he3", 3, 2.0), ("he4", 4, 1.0)])
def test_leading_order_rate_is_the_exact_ode_at_a_high_dimensional_start(expert, k, a):
    """dβ/dt of the exact Gram ODE at t = 0 against C β^{k−1}, C = k·k!·a²·R₀₀(α)/r_w² (the rate
    behind escape_times), at d = 10⁸ where every neglected term is smaller by O(1/√d)."""
    spec = load_preset("small").with_overrides(["model.m=4", "model.m_star=2", "model.d=100000000",
                                                "init.sampler=gram", "solver.t_end=1e-6", "solver.n_save=2",
                                                f"model.expert={expert}"])
    traj = integrate_spec(spec)
    vf, _ = vector_field_of(traj)
    dG = np.asarray(vf.velocity(jnp.asarray(traj.gram[0]), jnp.asarray(traj.norms[0]))[0])
    lay = traj.layout
    dbeta = dG[lay.student_experts][:, lay.span("teacher experts")]
    beta = traj.expert_alignment[0]
    from flowmoe.correlation import correlation_quadrature

    R00 = correlation_quadrature("sigmoid", 0, 0, traj.router_alignment[0].ravel()).reshape(beta.shape)
    r_w = traj.norms[0, lay.student_experts][:, None]
    lead = k * math.factorial(k) * a**2 * R00 * beta ** (k - 1) / r_w**2
    # Relative error of the leading order: O(m/(√d·|β|√d)) for k = 3; compare where β is not tiny.
    big = np.abs(beta) > 0.5 / np.sqrt(spec.model.d)
    assert big.sum() >= 3
    np.testing.assert_allclose(dbeta[big], lead[big], rtol=0.05)
    tau = escape_times(traj)
    blow = np.abs(beta) ** (2.0 - k) / ((k - 2) * np.abs(lead / beta ** (k - 1)))
    escapes = lead * np.sign(beta) > 0
    np.testing.assert_allclose(tau[escapes], blow[escapes], rtol=1e-12)


def test_summary_follows_the_student_that_recovered_each_teacher():
    """Student 1 starts with the larger overlap, student 0 ends aligned: the summary's T₁ is student
    0's, the initial greedy and Hungarian rules are marked as wrong."""
    t = np.linspace(0.0, 10.0, 201)
    d, ms, m = 8, 1, 2
    E = np.eye(d)
    grams = []
    for tt in t:
        th = np.pi / 2 * (1 - np.exp(-0.5 * tt))  # student 0 rotates from e4/e5 onto the teacher
        V = np.vstack([np.cos(th) * E[4] + np.sin(th) * E[0], 0.3 * E[0] + np.sqrt(1 - 0.09) * E[6]])
        W = np.vstack([np.cos(th) * E[5] + np.sin(th) * E[1], 0.3 * E[1] + np.sqrt(1 - 0.09) * E[7]])
        U = np.vstack([V, W, E[0], E[1]])
        grams.append(U @ U.T)
    traj = Trajectory(t, np.array(grams), np.ones((len(t), 2 * m + 2 * ms)), np.exp(-t), m, ms)
    s = summarize(traj)
    exact_T1 = -np.log(1 - 2 * np.arcsin(0.9) / np.pi) / 0.5
    assert s["pairs"] == [[0, 0]] and s["matching"] == "final" and s["recovered"] == 1
    assert s["T1"] == pytest.approx(exact_T1, rel=2e-3)
    assert s["T1_per_pair_initial_matching"] == [None] and s["matching_initial"] == [[1, 0]]
    for rule in ("initial", "hungarian"):
        assert s["matching_rules"][rule] == {"pairs": [[1, 0]], "predicted": [False], "hits": 0, "decided": 1,
                                             "all": False}
    assert "error" in s["matching_rules"]["escape-time"]  # no gate recorded in this trajectory
    json.dumps(s)  # the summary is written as JSON


def test_a_teacher_without_a_winner_is_not_counted():
    rng = np.random.default_rng(2)
    V = _unit_rows(rng, 2, 12, [0], np.array([[0.1], [0.05]]))
    W = _unit_rows(rng, 2, 12, [1], np.array([[0.2], [0.1]]))
    traj = _trajectory(V, W, 1)  # nothing moves: nobody reaches the threshold
    pw = predicted_winners(traj, "initial")
    assert pw["predicted"] == [None] and pw["decided"] == 0 and pw["hits"] == 0


def test_verify_reports_the_matching_of_each_claim_and_the_rule_predictions(tmp_path, capsys):
    out = tmp_path / "v"
    args = ["verify", "--preset", "small", "--seeds", "1-2", "--out", str(out), "--quiet", "--finetune-t-end", "0",
            "--only", "phase1", "recovery-order", "--keep-trajectories"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "matching" in text.splitlines()[0] and "final" in text and "matching-free" in text
    rec = json.loads((out / "verify.json").read_text())
    by_name = {c["name"]: c for c in rec["claims"]}
    assert by_name["phase1"]["matching"] == "final"
    # Independent count from the kept trajectories: the winner of each teacher is the student with
    # the largest final expert overlap whose router and expert both passed 0.9.
    hits = decided = 0
    for path in sorted((out / "runs").glob("*.npz")):
        traj = Trajectory.load(path)
        g1, g2 = traj.router_alignment, traj.expert_alignment
        for j in range(traj.m_star):
            i_win = int(np.argmax(g2[-1, :, j]))
            if np.max(np.minimum(g1[:, i_win, j], g2[:, i_win, j])) >= 0.9:
                decided += 1
                hits += int(np.argmax(g2[0, :, j]) == i_win)
    assert decided == 2
    assert rec["matching_rules"]["initial"]["decided"] == decided
    assert rec["matching_rules"]["initial"]["hits"] == hits
    assert main(args[:-4] + ["--matching", "nope"]) == 2
