"""The Gram ODE (docs/maths.md §2): exactness of the reduction, backends, and the initial-state samplers.

References:
- the reduction: gradient flow integrated directly on the raw vectors in R^d (scipy DOP853 with
  population_grad as the vector field) must give the same Gram matrix as flowmoe.gradient_flow;
- the backends: diffrax (Tsit5, Dopri8) and scipy (DOP853) integrate the same right-hand side
  independently, on the "small" preset, and must agree to 1e-7; the loss of a gradient flow cannot
  increase; exact gradient flow conserves the norms;
- the samplers: sample_gram (Bartlett/Wishart, d-free) and sample_vectors must have the same law;
  both are compared with each other and with exact moments of the isotropic initialisation
  (E⟨ū, t⟩² = 1/d for any two independent or orthogonalised directions, ‖w‖² ~ χ²_d/d,
  ‖v‖² ~ χ²_{d−1}/d after orthogonalisation).
"""

import numpy as np
import pytest
from scipy.integrate import solve_ivp

import flowmoe
from flowmoe.init import gram_from_vectors, initial_state, sample_gram, sample_vectors
from flowmoe.spec import InitSpec, MoESpec

# --- exactness of the reduction -------------------------------------------------------------------


def test_gram_ode_equals_raw_gradient_flow_in_Rd():
    """d = 40, m = 3, m⋆ = 2: raw flow dθ/dt = −∇L(θ) in R^d vs the Gram ODE, up to t = 5."""
    m, m_star, d = 3, 2, 40
    spec = MoESpec(m=m, m_star=m_star, d=d, init=InitSpec(router="orthogonal", seed=7))
    V, W, Vs, Ws = sample_vectors(spec)
    times = np.linspace(0.0, 5.0, 6)

    def vector_field(t, y):
        gV, gW = flowmoe.population_grad(y[: m * d].reshape(m, d), y[m * d:].reshape(m, d), Vs, Ws)
        return -np.concatenate([gV.ravel(), gW.ravel()])

    y0 = np.concatenate([V.ravel(), W.ravel()])
    raw = solve_ivp(vector_field, (0.0, 5.0), y0, method="DOP853", rtol=1e-11, atol=1e-13, t_eval=times)
    assert raw.success, raw.message
    traj = flowmoe.gradient_flow(V, W, Vs, Ws, times, rtol=1e-10, atol=1e-12)
    for i in range(len(times)):
        Vt, Wt = raw.y[: m * d, i].reshape(m, d), raw.y[m * d:, i].reshape(m, d)
        G_raw, r_raw = gram_from_vectors(Vt, Wt, Vs, Ws)
        np.testing.assert_allclose(traj.gram[i], G_raw, rtol=0, atol=1e-8, err_msg=f"t = {times[i]}")  # measured 1e-11
        # exact gradient flow conserves every norm (the gradient is orthogonal to each vector)
        np.testing.assert_allclose(r_raw, traj.norms[0], rtol=1e-9, atol=0)
    assert np.abs(traj.gram[-1] - traj.gram[0]).max() > 0.1  # the flow really moved
    loss_raw = flowmoe.population_loss(Vt, Wt, Vs, Ws)
    assert abs(traj.loss[-1] - loss_raw) < 1e-6


# --- backends on the "small" preset -------------------------------------------------------------------

RUNS = {
    "factor-tsit5": dict(backend="diffrax", method="tsit5", state="factor"),
    "factor-dopri8": dict(backend="diffrax", method="dopri8", state="factor"),
    "factor-scipy": dict(backend="scipy", method="DOP853", state="factor"),
    "gram-tsit5": dict(backend="diffrax", method="tsit5", state="gram"),
    "gram-scipy": dict(backend="scipy", method="DOP853", state="gram"),
    "factor-tsit5-norms": dict(backend="diffrax", method="tsit5", state="factor", norms="state"),
}

@pytest.fixture(scope="module")
def small_runs():
    spec = flowmoe.load_preset("small")
    model, solver = spec.model, spec.solver
    state = initial_state(model)
    ts = np.linspace(0.0, 60.0, 301)  # the plateau (the escape at t ≈ 530 amplifies any difference)
    return {name: flowmoe.flow_from_gram(state.gram, state.norms, model.m, model.m_star, ts, model.gate,
                                         model.expert, rtol=solver.rtol, atol=solver.atol, **kw)
            for name, kw in RUNS.items()}


PAIRS = [
    ("factor-tsit5", "factor-dopri8"),
    ("factor-scipy", "factor-tsit5"),
    ("factor-scipy", "factor-dopri8"),
    ("gram-tsit5", "factor-dopri8"),
    ("gram-scipy", "gram-tsit5"),
]


@pytest.mark.parametrize("one,other", PAIRS)
def test_integrators_agree(small_runs, one, other):
    """Every Gram entry and the loss agree to 1e-7 at every saved time (preset tolerances rtol 1e-10)."""
    a, b = small_runs[one], small_runs[other]
    np.testing.assert_allclose(a.gram, b.gram, rtol=0, atol=1e-7)
    np.testing.assert_allclose(a.loss, b.loss, rtol=0, atol=1e-7)


def test_small_preset_flow_moves(small_runs):
    traj = small_runs["factor-tsit5"]
    assert np.abs(traj.gram[-1] - traj.gram[0]).max() > 0.1 and traj.loss[-1] < 0.5 * traj.loss[0]


@pytest.mark.parametrize("name", list(RUNS))
def test_loss_never_increases(small_runs, name):
    """Gradient flow: dL/dt = −‖∇L‖² ≤ 0. Allowed increase 1e-8, ten times below the 1e-7 target."""
    loss = small_runs[name].loss
    assert np.diff(loss).max() < 1e-8, (np.diff(loss).max(), np.argmax(np.diff(loss)))


def test_norms_conserved_when_integrated(small_runs):
    traj = small_runs["factor-tsit5-norms"]
    initial = np.broadcast_to(traj.norms[0], traj.norms.shape)
    np.testing.assert_allclose(traj.norms, initial, rtol=1e-9, atol=0)
    np.testing.assert_allclose(traj.gram, small_runs["factor-tsit5"].gram, rtol=0, atol=1e-7)


# --- initial-state samplers ----------------------------------------------------------------------------

N_SEEDS = 3000


def _statistics(G, r, m, m_star):
    """A few overlaps and squared norms of one initial state (layout [v̄, w̄, v⋆, w⋆])."""
    v1, w1, v2, w2 = 0, m, 1, m + 1
    vs, ws = 2 * m, 2 * m + m_star
    return {
        "v1.v*": G[v1, vs], "w1.w*": G[w1, ws], "v1.w*": G[v1, ws], "w1.v*": G[w1, vs],
        "v1.w2": G[v1, w2], "w1.w2": G[w1, w2], "v1.v2": G[v1, v2], "v1.w1": G[v1, w1],
        "|v1|^2": r[v1] ** 2, "|w1|^2": r[w1] ** 2,
        "(v1.v*)^2(w1.v*)^2": G[v1, vs] ** 2 * G[w1, vs] ** 2,
    }


def _samples(spec, sampler, seeds):
    rows = []
    for seed in seeds:
        if sampler == "gram":
            G, r = sample_gram(spec, seed)
        else:
            G, r = gram_from_vectors(*sample_vectors(spec, seed))
        rows.append(_statistics(G, r, spec.m, spec.m_star))
    return {k: np.array([row[k] for row in rows]) for k in rows[0]}


SAMPLER_CASES = [(8, "orthogonal"), (8, "plain"), (4, "orthogonal")]  # d = 4 < 2 + 2m: no Bartlett branch


@pytest.mark.parametrize("d,router", SAMPLER_CASES)
def test_gram_sampler_has_the_law_of_vector_sampler(d, router):
    spec = MoESpec(m=2, m_star=1, d=d, init=InitSpec(router=router))
    A = _samples(spec, "gram", range(N_SEEDS))
    B = _samples(spec, "vectors", range(10**6, 10**6 + N_SEEDS))
    n = N_SEEDS
    for key in A:
        for f, what in ((lambda x: x, "mean"), (lambda x: x**2, "second moment")):
            a, b = f(A[key]), f(B[key])
            se = np.sqrt(a.var() / n + b.var() / n)
            if max(np.abs(A[key]).max(), np.abs(B[key]).max()) < 1e-13:  # v̄1·w̄1 ≡ 0 (orthogonal router)
                continue
            z = (a.mean() - b.mean()) / se
            assert abs(z) < 5, f"{key} {what}: gram {a.mean():.5g} vs vectors {b.mean():.5g} (z = {z:.2f})"
    # Exact moments of the isotropic initialisation, for both samplers.
    ortho = router == "orthogonal"
    v_dof = d - 1 if ortho else d  # ‖v‖² ~ χ²_{dof}/d
    exact = {"|w1|^2": (1.0, 2.0 / d), "|v1|^2": (v_dof / d, 2.0 * v_dof / d**2)}
    for S in (A, B):
        overlaps = ["v1.v*", "w1.w*", "v1.w*", "w1.v*", "v1.w2", "w1.w2", "v1.v2"]
        for key in overlaps + ([] if ortho else ["v1.w1"]):
            x2 = S[key] ** 2
            assert abs(x2.mean() - 1.0 / d) < 5 * x2.std() / np.sqrt(n), key
            assert abs(S[key].mean()) < 5 * S[key].std() / np.sqrt(n), key
        for key, (mean, var) in exact.items():
            x = S[key]
            assert abs(x.mean() - mean) < 5 * np.sqrt(var / n), (key, x.mean(), mean)
            assert abs(x.var() - var) < 0.15 * var, (key, x.var(), var)


@pytest.mark.parametrize("sampler", ["vectors", "gram"])
def test_orthogonal_router_init(sampler):
    """router = "orthogonal": ⟨v̄_i, w̄_i⟩ = 0 for every student; G is a valid Gram matrix."""
    spec = MoESpec(m=5, m_star=2, d=30, init=InitSpec(router="orthogonal", sampler=sampler, seed=3))
    state = initial_state(spec)
    G, m = state.gram, spec.m
    np.testing.assert_allclose(np.diag(G[:m, m:2 * m]), 0.0, atol=1e-13)
    np.testing.assert_allclose(np.diag(G), 1.0, atol=1e-14)
    np.testing.assert_allclose(G, G.T, atol=0)
    assert np.linalg.eigvalsh(G).min() > -1e-12
    # teacher block: orthonormal
    np.testing.assert_allclose(G[2 * m:, 2 * m:], np.eye(2 * spec.m_star), atol=1e-13)
    if sampler == "vectors":
        V, W, _, _ = state.vectors
        np.testing.assert_allclose(np.sum(V * W, axis=1), 0.0, atol=1e-14)


def test_solver_failure_keeps_a_partial_trajectory():
    spec = flowmoe.load_preset("small")
    st = initial_state(spec.model)
    ts = np.linspace(0, 50, 101)
    with pytest.raises(flowmoe.SolveError) as err:
        flowmoe.flow_from_gram(st.gram, st.norms, 2, 1, ts, max_steps=40)
    part = err.value.partial
    assert isinstance(part, flowmoe.Trajectory) and 2 <= len(part) < len(ts)
    full = flowmoe.flow_from_gram(st.gram, st.norms, 2, 1, ts)
    # What was kept is the true solution on the reached times (independent full solve).
    np.testing.assert_allclose(part.gram, full.gram[: len(part)], atol=1e-7)


def test_a_stiff_tail_switches_to_lsoda_and_agrees_with_radau():
    """He₅ experts make the explicit method crawl at its stability limit (fast stable directions, rate
    ≈ −350 on the plateau): with a low solver.stiff_steps the run switches to scipy's LSODA, says so in
    its provenance, and lands where an independent implicit method (scipy Radau, run from the start)
    lands; with solver.stiff = "off" the same step budget stops it as partial."""
    from flowmoe.errors import SolveError
    from flowmoe.sweep import integrate_spec

    base = ["model.expert=he5", "model.d=100", "init.seed=1", "solver.t_end=1000", "solver.n_save=11",
            "solver.rtol=1e-8", "solver.atol=1e-10"]
    spec = flowmoe.load_preset("small").with_overrides(base + ["solver.stiff_steps=3000"])
    traj = integrate_spec(spec)
    note = traj.provenance.notes["stiff_switch"]
    assert note["from"] == "tsit5" and note["to"] == "scipy LSODA" and note["t"] == 0.0
    assert "solver.stiff_steps = 3000" in note["reason"] and traj.provenance.status == "complete"
    ref = integrate_spec(flowmoe.load_preset("small").with_overrides(base + ["solver.backend=scipy",
                                                                              "solver.method=Radau"]))
    assert "stiff_switch" not in ref.provenance.notes
    assert np.max(np.abs(traj.gram - ref.gram)) < 1e-5
    with pytest.raises(SolveError) as err:
        integrate_spec(flowmoe.load_preset("small").with_overrides(base + ["solver.stiff_steps=3000",
                                                                            "solver.stiff=off",
                                                                            "solver.max_steps=3000"]))
    assert err.value.partial is None or err.value.partial.provenance.status == "partial"


def test_steady_tol_stops_at_a_sink_where_the_full_run_ends():
    """solver.steady_tol stops a chunked run once the state's speed is below it, and says so; the
    state it stopped at is where the run continued to t_end ends (independent full solve), and the
    stopped run's last saved steps (finite differences of the trajectory) move slower than the tolerance."""
    from flowmoe.errors import SpecError
    from flowmoe.sweep import integrate_spec

    base = ["model.d=10", "init.seed=3", "solver.t_end=400", "solver.n_save=401"]
    stopped = integrate_spec(flowmoe.load_preset("small").with_overrides(base + ["solver.steady_tol=1e-6"]))
    note = stopped.provenance.notes["steady_state"]
    assert stopped.provenance.status == "stopped-early" and stopped.t[-1] < 200
    assert note["t"] == stopped.t[-1] and note["speed"] < 1e-6 and note["tol"] == 1e-6
    fd = np.max(np.abs(stopped.gram[-1] - stopped.gram[-2])) / (stopped.t[-1] - stopped.t[-2])
    assert fd < 1e-6
    full = integrate_spec(flowmoe.load_preset("small").with_overrides(base))
    assert full.provenance.status == "complete" and full.t[-1] == 400
    np.testing.assert_allclose(stopped.gram[-1], full.gram[-1], atol=1e-5)
    np.testing.assert_allclose(stopped.gram, full.gram[: len(stopped)], atol=1e-8)
    with pytest.raises(SpecError, match="solver.steady_tol"):
        flowmoe.load_preset("small").with_overrides(["solver.steady_tol=-1"])
