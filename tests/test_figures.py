"""The figure set (flowmoe.figures) and `flowmoe plot`: headless rendering, T₁/T_c markers placed at
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
from flowmoe import figures
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
    assert figures._observe_settings(traj, run, type("A", (), {"threshold": None, "error_tol": None})()) == (0.8, 0.1)


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
    assert {"alignment", "loss", "portrait"} <= set(figures.KINDS)
    calls = []

    @figures.plot_kind("dummy-test-kind", needs=("data.json",), help="test only")
    def _draw(run_dir, out, args):
        calls.append((run_dir, out))
        return []
    try:
        (tmp_path / "data.json").write_text("{}")
        assert main(["plot", "dummy-test-kind", str(tmp_path)]) == 0
        assert calls == [(tmp_path, tmp_path / "dummy-test-kind")]
    finally:
        figures.KINDS.pop("dummy-test-kind")


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
    json.dumps(res.stdout)  # printed paths only
