"""The figure set (flowmoe.plotting) and `flowmoe plot`: headless rendering, T₁/T_c markers placed at
times known in closed form, round trips of saved portraits, the registry of kinds, bad input.

The trajectories here are synthetic: Gram matrices of explicit unit vectors whose overlaps follow
chosen functions of time, so T₁ and T_c are known exactly without integrating anything.
"""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import matplotlib
import numpy as np
import pytest

import flowmoe
from flowmoe import plotting as figures
from flowmoe.commands import plot as plotcmd
from flowmoe.cli import main
from flowmoe.portrait import Portrait

DT = 0.01
TS = np.arange(0.0, 12.0 + DT / 2, DT)
A0, S0 = 0.2, 0.3


def alpha(t):
    return 0.99 * np.tanh(t / 2.0)         # router alignment of student 0 with teacher 0


def beta(t):
    return 0.2 + 0.79 * (1 - np.exp(-t))    # expert alignment (aligns first)


def s(t):
    return S0 * np.exp(-t / 3.0)            # ⟨v̄_0, w⋆_0⟩: the only non-zero error term


def synthetic_trajectory(meta=None) -> flowmoe.Trajectory:
    """m = 2, m⋆ = 1 in R^7: v⋆ = e1, w⋆ = e2; v̄₀ = α e1 + s e2 + √(1−α²−s²) e3,
    w̄₀ = β e2 + √(1−β²) e4; student 1 fixed along e5, e6 (overlaps 0). Error terms of the matched
    pair (0, 0): cross_vw = s(t), self = |⟨v̄₀, w̄₀⟩| = sβ ≤ s, all others 0."""
    grams = []
    for t in TS:
        a, b, e = alpha(t), beta(t), s(t)
        U = np.zeros((6, 7))
        U[0, [0, 1, 2]] = a, e, np.sqrt(1 - a * a - e * e)
        U[1, 4] = 1.0
        U[2, [1, 3]] = b, np.sqrt(1 - b * b)
        U[3, 5] = 1.0
        U[4, 0] = 1.0
        U[5, 1] = 1.0
        grams.append(U @ U.T)
    loss = 2.0 * np.exp(-TS) + 1e-12
    return flowmoe.Trajectory(TS, np.array(grams), np.ones((len(TS), 6)), loss, 2, 1, meta or {})


def exact_T1(threshold=0.9):
    """min(α, β) reaches the threshold when α does (β is larger for t ≥ 0.5): α(t) = thr."""
    return 2.0 * np.arctanh(threshold / 0.99)


def exact_Tc(tol):
    """First saved time from which s(t) < tol: t > 3 ln(S0 / tol)."""
    t_star = 3.0 * np.log(S0 / tol)
    return TS[np.flatnonzero(TS > t_star)[0]]


def test_figures_use_agg():
    assert matplotlib.get_backend().lower() == "agg"


def test_loss_markers_at_closed_form_times():
    traj = synthetic_trajectory()
    for thr, tol in ((0.9, 0.05), (0.8, 0.1)):
        mk = figures.loss_markers(traj, thr, tol)
        assert mk["pairs"] == [(0, 0)]
        # Linear interpolation between samples of a smooth curve: error ≤ max|α''| DT² / 8 / α' ≪ 1e-4.
        assert mk["T1"] == pytest.approx(exact_T1(thr), abs=1e-4)
        assert mk["Tc"] == pytest.approx(exact_Tc(tol), abs=1e-12)


def test_loss_figure_draws_T1_and_Tc_where_they_are(tmp_path):
    import matplotlib.pyplot as plt

    traj = synthetic_trajectory()
    fig, axes = plt.subplots(1, 2)
    mk = figures.draw_loss(axes, traj, 0.9, 0.05)
    verticals = sorted({float(line.get_xdata()[0]) for line in axes[0].lines
                        if len(line.get_xdata()) == 2 and line.get_xdata()[0] == line.get_xdata()[1]})
    assert any(abs(v - exact_T1()) < 1e-4 for v in verticals)
    assert any(abs(v - exact_Tc(0.05)) < 1e-12 for v in verticals)
    assert axes[0].get_yscale() == "log" and axes[1].get_yscale() == "log"
    assert mk["Tc"] > mk["T1"]
    plt.close(fig)


def _check_files(paths):
    png, svg = (p for p in paths)
    assert png.suffix == ".png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert svg.suffix == ".svg" and ET.parse(svg).getroot().tag.endswith("svg")


def test_plot_command_alignment_and_loss_from_a_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    meta = {"spec": {"name": "synthetic", "model": {"d": 7}, "observe": {"threshold": 0.8, "error_tol": 0.1}}}
    synthetic_trajectory(meta).save(run / "trajectory.npz")
    for kind in ("alignment", "loss"):
        assert main(["plot", kind, str(run)]) == 0
        printed = capsys.readouterr().out.split()
        assert printed == [str(run / f"{kind}.png"), str(run / f"{kind}.svg")]
        _check_files([run / f"{kind}.png", run / f"{kind}.svg"])
    assert main(["plot", "loss", str(run), "--out", str(tmp_path / "figs" / "loss-b")]) == 0
    _check_files([tmp_path / "figs" / "loss-b.png", tmp_path / "figs" / "loss-b.svg"])
    # The run's own observe settings are used (threshold 0.8, tolerance 0.1) unless overridden.
    traj = flowmoe.Trajectory.load(run / "trajectory.npz")
    assert plotcmd._observe_settings(traj, run, type("A", (), {"threshold": None, "error_tol": None})()) == (0.8, 0.1)


def _toy_portrait():
    x = np.linspace(-1, 1, 11)
    X, Y = np.meshgrid(x, x)
    U, V = -X, Y * (1 - Y**2)
    valid = X**2 + Y**2 <= 1.8
    info = {"reduction": "pair", "description": "toy", "gate": "sigmoid", "expert": "he3", "m": 1, "m_star": 1,
            "x": "alpha", "y": "beta", "held": {"mu": 0.0}, "xlim": [-1.0, 1.0], "ylim": [-1.0, 1.0],
            "invariant": False, "label": "slice (not invariant)", "max_off_plane_speed": 0.5,
            "max_in_plane_speed": 1.0, "base_point": [0.1, 0.2]}
    fps = [{"point": [0.0, 0.0], "eigenvalues": [-1.0, 1.0], "kind": "saddle"},
           {"point": [0.0, 1.0], "eigenvalues": [-2.0, -1.0], "kind": "sink"},
           {"point": [0.0, -1.0], "eigenvalues": [-2.0, -1.0], "kind": "sink"}]
    seps = [{"saddle": 0, "manifold": "unstable", "branch": 1, "points": np.stack([0 * x, x], 1)}]
    trajs = [{"start": np.array([0.5, 0.1]), "t": np.linspace(0, 1, 5), "xy": np.stack([0.5 * np.exp(-np.linspace(0, 1, 5)),
             np.linspace(0.1, 0.6, 5)], 1), "off_plane": 0.3}]
    return Portrait(info, X, Y, np.where(valid, U, np.nan), np.where(valid, V, np.nan), np.zeros_like(X), valid,
                    fps, seps, trajs)


def test_portrait_round_trip_and_plot(tmp_path):
    pt = _toy_portrait()
    pt.save(tmp_path / "p")
    back = Portrait.load(tmp_path / "p")
    for name in ("X", "Y", "U", "V", "valid"):
        np.testing.assert_array_equal(getattr(back, name), getattr(pt, name))
    assert back.fixed_points == pt.fixed_points and back.info["label"] == "slice (not invariant)"
    np.testing.assert_array_equal(back.separatrices[0]["points"], pt.separatrices[0]["points"])
    np.testing.assert_array_equal(back.trajectories[0]["xy"], pt.trajectories[0]["xy"])
    assert main(["plot", "portrait", str(tmp_path / "p"), "--out", str(tmp_path / "fig")]) == 0
    _check_files([tmp_path / "fig.png", tmp_path / "fig.svg"])
    svg = (tmp_path / "fig.svg").read_text()
    assert "SLICE (NOT INVARIANT)" in svg  # the figure says plainly that it is a slice


def test_registry_accepts_new_kinds(tmp_path, capsys):
    assert {"alignment", "loss", "portrait"} <= set(plotcmd.KINDS)
    calls = []

    @plotcmd.plot_kind("dummy-test-kind", needs=("data.json",), help="test only")
    def _draw(run_dir, out, args):
        calls.append((run_dir, out))
        return []
    try:
        (tmp_path / "data.json").write_text("{}")
        assert main(["plot", "dummy-test-kind", str(tmp_path)]) == 0
        assert calls == [(tmp_path, tmp_path / "dummy-test-kind")]
    finally:
        plotcmd.KINDS.pop("dummy-test-kind")


@pytest.mark.parametrize("argv, needle", [
    (["plot", "nonsense", "."], "error: KIND: unknown figure kind"),
    (["plot", "loss", "/nonexistent/folder"], "error: RUN_DIR: no such folder"),
    (["plot", "portrait", "{tmp}"], "error: RUN_DIR:"),
])
def test_plot_bad_input(argv, needle, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


def test_plot_renders_headless_in_a_fresh_process(tmp_path):
    """No display, no MPLBACKEND: `flowmoe plot` must still render (Agg)."""
    run = tmp_path / "run"
    synthetic_trajectory().save(run / "trajectory.npz")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
    code = "import sys; from flowmoe.cli import main; sys.exit(main(['plot', 'loss', sys.argv[1]]))"
    res = subprocess.run([sys.executable, "-c", code, str(run)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    _check_files([run / "loss.png", run / "loss.svg"])
    assert str(run / "loss.png") in res.stdout  # the command prints the paths it wrote
    assert "matplotlib.use" not in res.stderr


# --- kinds redrawn from the folders of other commands (compare, verify --scaling, prune) ----------
# The folders are written here from known inputs (no integration), so every drawn line has a
# closed form to compare with. The drawn figure is caught by wrapping flowmoe.plotting.style.save.


@pytest.fixture
def caught(monkeypatch):
    """Figures passed to flowmoe.plotting.style.save (still saved), in order."""
    import flowmoe.plotting.style

    figs, real = [], flowmoe.plotting.style.save

    def spy(fig, path):
        figs.append(fig)
        return real(fig, path)
    monkeypatch.setattr(flowmoe.plotting.style, "save", spy)
    return figs


def _lines(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def _compare_folder(root):
    """A `flowmoe compare` folder: the synthetic trajectory as the ODE and, as the simulation, the
    same with its loss scaled by 1.1 and student norms growing as 1 + t/100."""
    ode = synthetic_trajectory()
    norms = ode.norms * (1.0 + TS[:, None] / 100.0)
    sim = flowmoe.Trajectory(TS, ode.gram, norms, 1.1 * ode.loss, 2, 1, {})
    ode.save(root / "ode.npz")
    sim.save(root / "sim-online-sgd.npz")
    spec = {"name": "synthetic", "model": {"m_star": 1, "m": 2, "d": 7}}
    row = {"method": "online-sgd", "lr": 0.01, "batch": 1000, "n": None, "project": False}
    (root / "summary.json").write_text(json.dumps({"spec": spec, "rows": [row]}))
    return ode, sim


def test_plot_compare_redraws_the_overlay_from_saved_files(tmp_path, caught, capsys):
    _compare_folder(tmp_path)
    assert main(["plot", "compare", str(tmp_path), "--out", str(tmp_path / "figs" / "cmp")]) == 0
    _check_files([tmp_path / "figs" / "cmp.png", tmp_path / "figs" / "cmp.svg"])
    (fig,) = caught
    axes = fig.get_axes()
    # Expert alignment of the matched pair (0, 0) is β(t) by construction (exact up to rounding).
    ode_line = _lines(axes[1])["ODE, student 0 → teacher 0"]
    np.testing.assert_allclose(ode_line.get_ydata(), beta(TS), rtol=0, atol=1e-12)
    loss = _lines(axes[2])
    np.testing.assert_allclose(loss["online-sgd"].get_ydata(), 1.1 * (2.0 * np.exp(-TS) + 1e-12), rtol=1e-12)
    np.testing.assert_allclose(_lines(axes[3])["online-sgd (max)"].get_ydata(), 1.0 + TS / 100.0, rtol=1e-12)
    assert "online-sgd (lr=0.01, B=1000)" in fig._suptitle.get_text()


def _scaling_record():
    """scaling.json of a d-sweep with times T = T₀ + C·d^a·(1 + 0.1·seed); one run failed, one
    without a prediction (None in the file)."""
    T0, C, a = 2.0, 0.3, 0.5
    d_values, seeds = [100, 10_000, 1_000_000], [0, 1, 2]
    runs = []
    for d in d_values:
        for s in seeds:
            runs.append({"d": d, "seed": s, "status": "ok", "time": T0 + C * d**a * (1 + 0.1 * s),
                         "predicted": d**0.5 / (4.5 * 2.0)})
    runs[1]["predicted"] = None
    runs.append({"d": 100, "seed": 3, "status": "failed", "error": "max steps"})
    fits = {"offset": {"exponent": a, "prefactor": C, "offset": T0, "ci": [0.45, 0.55]},
            "power": {"exponent": 0.4, "prefactor": 1.0, "offset": 0.0, "ci": [None, None]}}
    per_d = [{"d": d, "median_predicted": d**0.5 / 9.0} for d in d_values]
    return {"variable": "d", "time": "T1-first", "model": "offset", "runs": runs, "fits": fits,
            "per_d": per_d, "options": {"d_values": d_values, "seeds": seeds}}, (T0, C, a)


def test_plot_scaling_draws_runs_fits_and_prediction(tmp_path, caught):
    record, (T0, C, a) = _scaling_record()
    (tmp_path / "scaling.json").write_text(json.dumps(record))
    assert main(["plot", "scaling", str(tmp_path)]) == 0
    _check_files([tmp_path / "scaling.png", tmp_path / "scaling.svg"])
    ax = caught[0].get_axes()[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    lines = _lines(ax)
    offset = lines["offset: a = 0.500 [0.450, 0.550]"]
    dd = offset.get_xdata()
    np.testing.assert_allclose(offset.get_ydata(), T0 + C * dd**a, rtol=1e-12)
    assert "power: a = 0.400 [nan, nan]" in lines          # a missing CI is shown, not a crash
    pred = lines[r"median $\sqrt{d}/(4.5\kappa)$"]
    np.testing.assert_allclose(pred.get_ydata(), np.sqrt(pred.get_xdata()) / 9.0, rtol=1e-12)
    points = np.concatenate([line.get_ydata() for line in ax.get_lines() if line.get_marker() == "o"])
    expected = [r["time"] for r in record["runs"] if r["status"] == "ok"]
    np.testing.assert_allclose(np.sort(points), np.sort(expected), rtol=1e-12)  # all runs but the failed one

    # --scaling m folders: the recovery fraction with its interval.
    m_rec = {"variable": "m", "m_star": 2, "d": 50,
             "per_m": [{"m": 3, "fraction": 0.5, "ci": [0.2, 0.8]},
                       {"m": 4, "fraction": 1.0, "ci": [0.7, 1.0]}]}
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "scaling.json").write_text(json.dumps(m_rec))
    assert main(["plot", "scaling", str(tmp_path / "m")]) == 0
    _check_files([tmp_path / "m" / "scaling.png", tmp_path / "m" / "scaling.svg"])


RATE, L0 = 0.5, 1e-3


def _pruned_state():
    """m = m⋆ = 1 in R^4 near the teacher v⋆ = e1, w⋆ = e2: unit Gram and norms."""
    v = np.array([1.0, 0.02, 0.01, 0.0])
    w = np.array([-0.01, 1.0, 0.0, 0.01])
    U = np.stack([v / np.linalg.norm(v), w / np.linalg.norm(w), np.eye(4)[0], np.eye(4)[1]])
    return U @ U.T, np.array([1.3, 0.8, 1.0, 1.0])


def _finetune_folder(root, modes):
    """A `flowmoe prune` folder whose fine-tuning loss is exactly L0·e^{−RATE·t}."""
    t = np.linspace(0.0, 60.0, 301)
    G, r = _pruned_state()
    traj = flowmoe.Trajectory(t, np.repeat(G[None], len(t), 0), np.repeat(r[None], len(t), 0),
                              L0 * np.exp(-RATE * t), 1, 1, {"labels": [1]})
    traj.save(root / "finetune_trajectory.npz")
    record = {"spec": {"name": "toy", "model": {"d": 4, "gate": "sigmoid", "expert": "he3"}},
              "rule": "oracle",
              "removed": [0], "kept": [1], "pruned_at": {"t": 60.0}, "fitted_rate": RATE,
              "predicted_rate": 0.45, "modes": modes, "hessian": {"perp_multiplicity": 2}}
    (root / "finetune.json").write_text(json.dumps(record))
    return traj


def test_plot_finetune_redraws_fit_prediction_and_saved_modes(tmp_path, caught):
    groups = [{"loss_rate": 0.45, "loss_share": 2e-4}, {"loss_rate": 3.0, "loss_share": 8e-4}]
    traj = _finetune_folder(tmp_path, {"linear_loss_at_start": 1e-3, "slowest": groups})
    assert main(["plot", "finetune", str(tmp_path), "--out", str(tmp_path / "ft")]) == 0
    _check_files([tmp_path / "ft.png", tmp_path / "ft.svg"])
    ax = caught[0].get_axes()[0]
    lines = _lines(ax)
    assert ax.get_title() == "toy: rule oracle, m 2 → 1 at t = 60"
    # The rate fit re-made from the saved loss: an exact exponential, so its line is L0·e^{−RATE t}.
    fit = lines[f"fit: rate {RATE:.4g}"]
    np.testing.assert_allclose(fit.get_ydata(), L0 * np.exp(-RATE * fit.get_xdata()), rtol=1e-9)
    linear = lines["linearised flow (Hessian modes)"]
    expected = 2e-4 * np.exp(-0.45 * traj.t) + 8e-4 * np.exp(-3.0 * traj.t)
    np.testing.assert_allclose(linear.get_ydata(), expected, rtol=1e-12)
    pred = lines["predicted $2\\lambda_{\\min}$ = 0.45"].get_ydata()
    np.testing.assert_allclose(np.diff(np.log(pred)) / np.diff(traj.t), -0.45, rtol=1e-9)


def test_plot_finetune_recomputes_modes_not_all_saved(tmp_path):
    """With fewer saved modes than the state has, the linearised loss comes from the saved pruned
    state (Hessian at the teacher point); it must equal the sum over all its modes."""
    from flowmoe.finetune import linear_loss, modal_decomposition, predict
    from flowmoe.prune import Network

    G, r = _pruned_state()
    net = Network(G, r, 1, 1, labels=(1,))
    rates, shares, _ = modal_decomposition(predict(net, 2, 4).hess, net)
    assert len(rates) > 1
    slowest = [{"loss_rate": 2 * rates[0], "loss_share": shares[0]}]          # only one of the modes saved
    traj = _finetune_folder(tmp_path, {"linear_loss_at_start": float(shares.sum()), "slowest": slowest})
    record = json.loads((tmp_path / "finetune.json").read_text())
    got = plotcmd._linearised_loss(record, traj, tmp_path / "finetune.json")
    np.testing.assert_allclose(got, linear_loss(rates, shares, traj.t), rtol=1e-12)
    record["modes"]["linear_loss_at_start"] *= 2          # files that do not belong together
    with pytest.raises(flowmoe.SpecError, match="RUN_DIR.*different runs"):
        plotcmd._linearised_loss(record, traj, tmp_path / "finetune.json")


@pytest.mark.parametrize("kind, damage, needle", [
    ("compare", "missing:sim-online-sgd.npz", "has no sim-online-sgd.npz"),
    ("compare", "garbage:ode.npz", "ode.npz"),
    ("compare", "garbage:summary.json", "summary.json is not valid JSON"),
    ("scaling", "missing:scaling.json", "has no scaling.json"),
    ("scaling", "garbage:scaling.json", "scaling.json is not valid JSON"),
    ("scaling", "json:{\"variable\": \"q\"}", "'variable' is 'q'"),
    ("scaling", "json:{\"variable\": \"d\", \"runs\": []}", "has no time, fits, per_d, options"),
    ("finetune", "garbage:finetune_trajectory.npz", "finetune_trajectory.npz"),
    ("finetune", "json:{\"spec\": {}}", "has no rule"),
    ("finetune", "rate", "different runs"),
])
def test_plot_redraw_kinds_bad_folders(kind, damage, needle, tmp_path, capsys):
    if kind == "compare":
        _compare_folder(tmp_path)
        name = "summary.json"
    elif kind == "scaling":
        (tmp_path / "scaling.json").write_text(json.dumps(_scaling_record()[0]))
        name = "scaling.json"
    else:
        _finetune_folder(tmp_path, None)
        name = "finetune.json"
    what, _, arg = damage.partition(":")
    if what == "missing":
        (tmp_path / arg).unlink()
    elif what == "garbage":
        (tmp_path / arg).write_bytes(b"\x00not what it should be")
    elif what == "json":
        (tmp_path / name).write_text(arg)
    else:  # the saved rate does not match the saved loss
        rec = json.loads((tmp_path / name).read_text())
        rec["fitted_rate"] = 0.6
        (tmp_path / name).write_text(json.dumps(rec))
    assert main(["plot", kind, str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error: RUN_DIR:" in err and str(tmp_path) in err and needle in err
    assert not (tmp_path / f"{kind}.png").exists()


def _damaged(traj, field):
    t, gram, norms, loss = traj.t.copy(), traj.gram.copy(), traj.norms.copy(), traj.loss.copy()
    if field == "t-repeat":
        t[50] = t[49]
    elif field == "t-back":
        t[50] = t[10]
    elif field == "t-nan":
        t[7] = np.nan
    elif field == "gram":
        gram[30, 0, 4] = gram[30, 4, 0] = np.nan
    elif field == "norms":
        norms[40, 2] = np.inf
    elif field == "loss":
        loss[60:] = np.nan
    return flowmoe.Trajectory(t, gram, norms, loss, traj.m, traj.m_star, {})


@pytest.mark.parametrize("field, needle", [
    ("t-repeat", "field 't' is not increasing: t[49] = 0.49, t[50] = 0.49"),
    ("t-back", "field 't' is not increasing: t[49] = 0.49, t[50] = 0.1"),
    ("t-nan", "field 't' has NaN or inf values at saved index 7"),
    ("gram", "field 'gram' has NaN or inf values at saved index 30 (t = 0.3)"),
    ("norms", "field 'norms' has NaN or inf values at saved index 40"),
    ("loss", "field 'loss' has NaN or inf values at saved index 60 (t = 0.6)"),
])
@pytest.mark.parametrize("kind", ["alignment", "loss", "compare"])
def test_plot_refuses_nan_and_non_increasing_times(kind, field, needle, tmp_path, capsys):
    bad = _damaged(synthetic_trajectory(), field)
    if kind == "compare":
        _compare_folder(tmp_path)
        name = "sim-online-sgd.npz"
    else:
        name = "trajectory.npz"
    bad.save(tmp_path / name)
    assert main(["plot", kind, str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"error: RUN_DIR: {tmp_path / name}: {needle}" in err
    assert not list(tmp_path.glob("*.png"))


# --- figure defects: colours, labels, ticks -----------------------------------------------------


def test_compare_overlay_tells_simulations_apart_by_colour(tmp_path, caught):
    ode = synthetic_trajectory()
    sims = {name: flowmoe.Trajectory(TS, ode.gram, ode.norms * (1 + k * TS[:, None] / 50), (1.1 + k) * ode.loss,
                                     2, 1, {}) for k, name in enumerate(("online-sgd", "population-gd"))}
    figures.overlay_figure(ode, sims, tmp_path / "cmp")
    axes = caught[0].get_axes()
    for ax in axes[1:3]:  # the expert-alignment panel (per matched pair) and the loss panel
        colours = [matplotlib.colors.to_hex(_lines(ax)[name].get_color()) for name in sims]
        assert len(set(colours)) == 2 and "#000000" not in colours
    norm_colours = {matplotlib.colors.to_hex(line.get_color()) for line in axes[3].get_lines()
                    if line.get_label().startswith("online-sgd")}
    assert len(norm_colours) == 1 and norm_colours != {
        matplotlib.colors.to_hex(_lines(axes[3])["population-gd (max)"].get_color())}


def test_T1_lines_are_labelled(tmp_path, caught):
    traj = synthetic_trajectory()
    t1 = exact_T1()
    figures.loss_figure(traj, tmp_path / "loss", 0.9, 0.05)
    figures.alignment_figure(traj, tmp_path / "align", 0.9, matching_at=0)
    for ax in (caught[0].get_axes()[0], caught[1].get_axes()[2]):
        labelled = [line for line in ax.get_lines() if "student 0 → teacher 0" in line.get_label()]
        assert len(labelled) == 1 and "T_1" in labelled[0].get_label()
        assert abs(labelled[0].get_xdata()[0] - t1) < 1e-4 and f"{labelled[0].get_xdata()[0]:.3g}" in \
            labelled[0].get_label()
        assert labelled[0] in ax.get_legend().legend_handles or \
            labelled[0].get_label() in [t.get_text() for t in ax.get_legend().get_texts()]


def test_stable_and_unstable_manifolds_differ_in_colour_and_legend(tmp_path, caught):
    pt = _toy_portrait()
    x = np.linspace(-1, 1, 11)
    pt.separatrices.append({"saddle": 0, "manifold": "stable", "branch": 1, "points": np.stack([x, 0 * x], 1)})
    figures.portrait_figure(pt, tmp_path / "p")
    fig = caught[0]
    legend = fig.legends[0]
    by_label = {t.get_text(): h for t, h in zip(legend.get_texts(), legend.legend_handles)}
    unstable = by_label["unstable manifold of a saddle"]
    stable = by_label["stable manifold of a saddle (separatrix)"]
    assert matplotlib.colors.to_hex(unstable.get_color()) != matplotlib.colors.to_hex(stable.get_color())
    drawn = {matplotlib.colors.to_hex(line.get_color()) for line in fig.get_axes()[0].get_lines()
             if line.get_linewidth() == 2.2}
    assert {matplotlib.colors.to_hex(unstable.get_color()), matplotlib.colors.to_hex(stable.get_color())} <= drawn


def test_log_axes_label_no_minor_ticks(tmp_path, caught):
    traj = synthetic_trajectory()
    narrow = flowmoe.Trajectory(traj.t, traj.gram, traj.norms, 0.5 + 0.3 * np.exp(-traj.t), 2, 1, {})
    for k, tr in enumerate((traj, narrow)):     # the loss spans 5 decades, then less than one
        figures.loss_figure(tr, tmp_path / f"loss{k}", 0.9, 0.05)
    for fig in caught:
        fig.canvas.draw()
        ax = fig.get_axes()[0]
        assert ax.get_yscale() == "log"
        assert all(t.get_text() == "" for t in ax.yaxis.get_minorticklabels())
        lo, hi = ax.get_ylim()
        shown = [t for t in ax.yaxis.get_majorticklabels() if t.get_text() and lo <= t.get_position()[1] <= hi]
        assert len(shown) >= 2      # still readable when the axis spans less than a decade


def test_recovery_against_m_has_integer_ticks(tmp_path, caught):
    per_m = [{"m": m, "runs": 4, "all_recovered": k, "fraction": k / 4, "ci": [max(0, k / 4 - 0.2), min(1, k / 4 + 0.2)]}
             for m, k in ((2, 1), (3, 3))]  # m⋆ = 1: a range where matplotlib's default ticks are 2.0, 2.2, …
    figures.m_figure({"variable": "m", "m_star": 1, "d": 1000, "per_m": per_m}, tmp_path / "m")
    ax = caught[0].get_axes()[0]
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_plot_study_redraws_the_convergence_study(tmp_path, caught, capsys):
    lrs, batches = [0.02, 0.01, 0.005], [10, 40, 160]
    record = {"spec": {"name": "synthetic", "model": {"m_star": 1, "m": 2, "d": 7}}, "metric": "alignment",
              "t_end": 1.0, "lrs": lrs, "gd_deviation": [2 * x for x in lrs], "gd_slope": 1.0, "lr_sgd": 0.01,
              "batches": batches, "sgd_deviation_ode": [0.5 / b**0.5 for b in batches],
              "sgd_deviation_pop": [0.4 / b**0.5 for b in batches], "sgd_slope_ode": -0.5, "sgd_slope_pop": -0.5}
    (tmp_path / "study.json").write_text(json.dumps(record))
    assert main(["plot", "study", str(tmp_path)]) == 0
    _check_files([tmp_path / "study.png", tmp_path / "study.svg"])
    (fig,) = caught
    gd = [line for line in fig.get_axes()[0].get_lines() if line.get_label().startswith("population GD")][0]
    np.testing.assert_allclose(gd.get_ydata(), [0.04, 0.02, 0.01], rtol=1e-12)
    assert fig._suptitle.get_text() == "synthetic: m*=1, m=2, d=7"
    (tmp_path / "study.json").write_text(json.dumps({"spec": {}}))
    assert main(["plot", "study", str(tmp_path)]) == 2
    assert "has no metric" in capsys.readouterr().err
