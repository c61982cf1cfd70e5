"""The comparison of the ODE with simulations (flowmoe.compare): metrics, the command, the study.

The metrics are checked on synthetic trajectories whose deviations are known in closed form; the
comparison must catch deliberately wrong gradients; the command's saved files are re-read and the
deviations recomputed from them with numpy.
"""

import json

import numpy as np
import pytest
from test_simulate import random_start

import flowmoe
from flowmoe.cli import main
from flowmoe.compare import agrees, deviations, fit_slope, loss_agrees, ode_at, study_vectors, teacher_max


def synthetic(rng, T=6, m=3, m_star=2, loss=None):
    """A trajectory with random (not necessarily PSD) Gram entries: only the metrics look at it."""
    n = 2 * (m + m_star)
    G = rng.uniform(-1, 1, (T, n, n))
    G = 0.5 * (G + np.swapaxes(G, 1, 2))
    G[:, np.arange(n), np.arange(n)] = 1.0
    loss = rng.uniform(0.5, 2.0, T) if loss is None else loss
    return flowmoe.Trajectory(np.linspace(0, 1, T), G, np.ones((T, n)), loss, m, m_star)


def permute_students(traj, perm):
    m, ms = traj.m, traj.m_star
    order = np.concatenate([perm, m + np.asarray(perm), 2 * m + np.arange(2 * ms)])
    return flowmoe.Trajectory(traj.t, traj.gram[:, order][:, :, order], traj.norms[:, order], traj.loss,
                              m, ms)


def test_teacher_max_and_permutation_invariance(rng):
    ref = synthetic(rng)
    gamma = ref.expert_alignment
    tm = teacher_max(gamma)
    for t in range(len(ref)):
        np.testing.assert_array_equal(tm[t], sorted(gamma[t].max(axis=0), reverse=True))
    perm = [2, 0, 1]
    sim = permute_students(ref, perm)
    dev = deviations(ref, sim, pairs=[(0, 0), (1, 1)])
    assert dev["alignment"] == 0.0 and dev["loss_abs"] == 0.0
    # the matched alignments see the permutation: γ_sim[:, 0, 0] = γ_ref[:, 2, 0]
    expect = max(np.max(np.abs(ref.router_alignment[:, [2, 0], [0, 1]] - ref.router_alignment[:, [0, 1], [0, 1]])),
                 np.max(np.abs(ref.expert_alignment[:, [2, 0], [0, 1]] - ref.expert_alignment[:, [0, 1], [0, 1]])))
    assert dev["matched"] == pytest.approx(expect, abs=1e-15) and expect > 0


def test_known_deviations(rng):
    ref = synthetic(rng, loss=np.full(6, 2.0))
    G = ref.gram.copy()
    m, ms = ref.m, ref.m_star
    i, j = 1, 0                                    # expert of student 1 against teacher expert 0
    p, q = m + i, 2 * m + ms + j
    G[3, p, q] = G[3, q, p] = G[3, p, q] + 0.125
    loss = ref.loss.copy()
    loss[4] *= 1.1
    sim = flowmoe.Trajectory(ref.t, G, ref.norms, loss, m, ms)
    dev = deviations(ref, sim, pairs=[(i, j), (0, 1)])
    assert dev["matched_expert"] == pytest.approx(0.125, abs=1e-15) and dev["matched_router"] == 0.0
    assert dev["gram"] == pytest.approx(0.125, abs=1e-15)
    assert dev["loss_abs"] == pytest.approx(0.2, abs=1e-14) and dev["loss_rel"] == pytest.approx(0.1, abs=1e-14)
    assert deviations(ref, sim, until=ref.t[2])["gram"] == 0.0          # before the change
    assert not agrees(dev, 0.1) and agrees(dev, 0.13)
    with pytest.raises(flowmoe.SpecError):
        deviations(ref, flowmoe.Trajectory(ref.t + 0.5, G, ref.norms, loss, m, ms))


def test_fit_slope_closed_form():
    x = np.array([1.0, 4.0, 16.0, 64.0])
    assert fit_slope(x, 3.0 * x**-0.5) == pytest.approx(-0.5, abs=1e-12)
    assert fit_slope(x, 0.2 * x) == pytest.approx(1.0, abs=1e-12)


def test_wrong_gradients_are_caught(rng):
    """Population GD with the router gradient's sign flipped, or with a gradient 10 % too large
    (a wrong time map), is flagged by the comparison; the correct gradient agrees within 0.01."""
    V, W, Vs, Ws = random_start(rng, 10, 3, 2, warm=0.6)
    kw = dict(method="population-gd", lr=0.01, t_end=4.0, save_every=20)
    good = flowmoe.simulate(V, W, Vs, Ws, **kw)
    ode = ode_at(V, W, Vs, Ws, good.t)
    dev_good = deviations(ode, good)
    assert agrees(dev_good, 0.01), dev_good
    flipped = flowmoe.simulate(V, W, Vs, Ws, grad_transform=lambda gV, gW: (-gV, gW), **kw)
    dev_flip = deviations(ode, flipped)
    assert not agrees(dev_flip, 0.05) and dev_flip["matched_router"] > 0.2, dev_flip
    scaled = flowmoe.simulate(V, W, Vs, Ws, grad_transform=lambda gV, gW: (1.1 * gV, 1.1 * gW), **kw)
    dev_scaled = deviations(ode, scaled)
    assert not agrees(dev_scaled, 0.01), dev_scaled


def test_compare_command_writes_consistent_results(tmp_path):
    out = tmp_path / "cmp"
    code = main(["compare", "--preset", "small", "--set", "model.d=10", "--method", "population-gd", "online-sgd",
                 "--lr", "0.01", "--t-end", "1", "--batch", "256", "--save-every", "10", "--tol", "0.05",
                 "--out", str(out), "--quiet"])
    assert code == 0
    record = json.loads((out / "summary.json").read_text())
    for name in ("ode.npz", "sim-population-gd.npz", "sim-online-sgd.npz", "deviations.md", "compare.png",
                 "compare.svg"):
        assert (out / name).exists(), name
    ode = flowmoe.Trajectory.load(out / "ode.npz")
    rows = {r["method"]: r for r in record["rows"]}
    spec = flowmoe.RunSpec.from_dict(record["spec"])
    V, W, Vs, Ws = flowmoe.init.initial_state(spec.model).vectors
    # the ODE and the simulations start from the spec's sampled vectors, at t = lr × steps
    np.testing.assert_allclose(ode.gram[0], flowmoe.init.gram_from_vectors(V, W, Vs, Ws)[0], atol=1e-14)
    np.testing.assert_allclose(ode.t, 0.01 * np.arange(0, 101, 10), rtol=1e-14)
    for method in ("population-gd", "online-sgd"):
        sim = flowmoe.Trajectory.load(out / f"sim-{method}.npz")
        np.testing.assert_array_equal(sim.t, ode.t)
        assert sim.provenance.simulation["method"] == method and sim.provenance.time == "t = lr * steps"
        # recompute two deviations from the saved arrays
        assert rows[method]["loss_abs"] == pytest.approx(np.max(np.abs(sim.loss - ode.loss)), rel=1e-12)
        assert rows[method]["gram"] == pytest.approx(np.max(np.abs(sim.gram - ode.gram)), rel=1e-12)
    assert rows["population-gd"]["agrees"]      # lr = 0.01 over t ≤ 1: within tol 0.05
    assert rows["online-sgd"]["batch"] == 256 and rows["population-gd"]["batch"] is None
    assert "| population-gd | 0.01 |" in (out / "deviations.md").read_text()


def test_compare_integrates_the_ode_with_the_specs_solver(tmp_path):
    # Before the seams, compare always used diffrax/tsit5 with only rtol/atol from the spec.
    out = tmp_path / "cmp"
    code = main(["compare", "--preset", "small", "--set", "model.d=10", "solver.method=dopri8", "solver.state=gram",
                 "solver.max_steps=5000", "solver.rtol=1e-9", "--method", "population-gd", "--lr", "0.01",
                 "--t-end", "0.5", "--save-every", "10", "--out", str(out), "--quiet"])
    assert code == 0
    record = json.loads((out / "summary.json").read_text())
    used = record["ode_solver"]
    assert (used["method"], used["state"], used["max_steps"], used["rtol"]) == ("dopri8", "gram", 5000, 1e-9)
    ode = flowmoe.Trajectory.load(out / "ode.npz")
    assert ode.provenance.solver["method"] == "dopri8" and ode.provenance.stats["steps"] > 0


@pytest.mark.parametrize("argv,needle", [(["--lr", "-1"], "lr"), (["--batch", "0"], "batch"),
                                         (["--set", "init.sampler=gram"], "init.sampler")])
def test_compare_command_bad_input(tmp_path, capsys, argv, needle):
    code = main(["compare", "--preset", "small", "--t-end", "0.1", "--out", str(tmp_path / "x"), "--quiet", *argv])
    assert code == 2
    assert needle in capsys.readouterr().err


@pytest.mark.long  # 54 s of the suite; the study command itself is tested by test_readme_folders
def test_convergence_study_slopes(rng):
    """d = 30, m = m⋆ = 2, warm start, t ≤ 2. Population GD at lr = 0.02 … 0.0025: fitted slope
    1 ± 0.1. Online SGD at lr = 0.01, B = 1000 … 64000, against population GD at the same lr
    (bias removed), 2 seeds: slope −½ within [−0.8, −0.4] (the noise is O(√(lr/B)); the
    noise-induced drift and norm growth, O(lr·d/B), steepen it at small B)."""
    V, W, Vs, Ws = random_start(rng, 30, 2, 2, warm=0.6)
    res = study_vectors(V, W, Vs, Ws, t_end=2.0, lrs=[0.02, 0.01, 0.005, 0.0025], lr_sgd=0.01,
                        batches=[1000, 4000, 16000, 64000], seeds=(0, 1), n_save=40)
    assert abs(res["gd_slope"] - 1.0) < 0.1, res
    assert -0.8 < res["sgd_slope_pop"] < -0.4, res



def test_ctrl_c_during_compare_saves_what_was_computed(tmp_path, monkeypatch, capsys):
    """Ctrl-C in the second chunk of the second simulation: the ODE, the first simulation and the
    first chunk of the second are written, summary.json says "interrupted", the exit code is 130."""
    import importlib

    sim_module = importlib.import_module("flowmoe.simulate")  # the module (flowmoe.simulate is the function)
    real, calls = sim_module._runner, []

    def runner(method, *args, **kwargs):
        run = real(method, *args, **kwargs)

        def interrupting(*a, **k):
            calls.append(method)
            if method == "gd" and calls.count("gd") == 2:
                raise KeyboardInterrupt
            return run(*a, **k)
        return interrupting

    monkeypatch.setattr(sim_module, "_runner", runner)
    out = tmp_path / "cmp"
    code = main(["compare", "--preset", "small", "--set", "model.d=10", "--method", "population-gd", "gd",
                 "--n", "500", "--lr", "0.01", "--t-end", "2", "--save-every", "1", "--out", str(out), "--quiet"])
    assert code == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    record = json.loads((out / "summary.json").read_text())
    assert record["status"] == "interrupted"
    rows = {r["method"]: r for r in record["rows"]}
    assert rows["population-gd"]["status"] == "complete" and rows["gd"]["status"] == "interrupted"
    assert not rows["gd"]["agrees"]
    ode = flowmoe.Trajectory.load(out / "ode.npz")
    np.testing.assert_allclose(ode.t, 0.01 * np.arange(201), rtol=1e-12)
    assert len(flowmoe.Trajectory.load(out / "sim-population-gd.npz")) == 201
    partial = flowmoe.Trajectory.load(out / "sim-gd.npz")
    assert partial.provenance.status == "interrupted"
    assert len(partial) == 1 + sim_module.CHUNK                 # the start and the one chunk that finished
    np.testing.assert_allclose(partial.t, ode.t[:len(partial)], rtol=1e-12)
    for name in record["files"]:
        assert (out / name).exists(), name


def test_deviations_md_states_each_criterion_and_the_command(tmp_path):
    out = tmp_path / "cmp"
    argv = ["compare", "--preset", "small", "--set", "model.d=10", "--method", "population-gd", "--lr", "0.01",
            "--t-end", "0.5", "--tol", "0.07", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    text = (out / "deviations.md").read_text()
    assert f"command: `flowmoe {' '.join(argv)}`" in text
    assert "agrees (alignment, matched ≤ 0.07)" in text and "loss ok (rel ≤ 0.07)" in text
    for column in ("**alignment**", "**matched**", "**loss (rel)**", "**norm growth (×)**", "**agrees**"):
        assert column in text


def test_agrees_is_the_alignment_criterion_and_the_loss_has_its_own():
    # alignments within 0.02 but a steep loss 6 % off (population GD at the paper's sizes): agrees, loss not ok
    dev = {"alignment": 0.021, "matched": 0.02, "loss_rel": 0.06}
    assert agrees(dev, 0.05) and not loss_agrees(dev, 0.05)
    assert not agrees({"alignment": 0.06, "matched": 0.02, "loss_rel": 0.0}, 0.05)
    assert not agrees({"alignment": 0.01, "matched": 0.051, "loss_rel": 0.0}, 0.05)


def test_norm_growth_is_the_ratio_of_norms(rng):
    ref = synthetic(rng)
    norms = ref.norms.copy()
    norms[-1, 0] *= 3.0                       # one student router grows 3× by the end
    sim = flowmoe.Trajectory(ref.t, ref.gram, norms, ref.loss, ref.m, ref.m_star)
    assert deviations(ref, sim)["norm_growth"] == pytest.approx(3.0, rel=1e-12)
    assert deviations(ref, ref)["norm_growth"] == pytest.approx(1.0, rel=1e-12)


def test_ctrl_c_while_the_ode_integrates_writes_the_summary_only(tmp_path, monkeypatch, capsys):
    import flowmoe.compare

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(flowmoe.compare, "ode_at", interrupted)
    out = tmp_path / "cmp"
    assert main(["compare", "--preset", "small", "--method", "gd", "--n", "100", "--t-end", "1", "--out", str(out),
                 "--quiet"]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "finished or partial: nothing" in err
    record = json.loads((out / "summary.json").read_text())
    assert record["status"] == "interrupted" and record["rows"] == [] and record["files"] == ["summary.json"]
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]
