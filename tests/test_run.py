"""`flowmoe run` end to end on the small preset, checked against independent computations."""

import json

import numpy as np

import flowmoe
from flowmoe.cli import main
from flowmoe.init import initial_state


def test_run_small_preset_writes_consistent_results(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--preset", "small", "--set", "solver.t_end=20", "solver.n_save=81",
                 "--out", str(out), "--quiet"]) == 0
    record = json.loads((out / "summary.json").read_text())
    traj = flowmoe.Trajectory.load(out / "trajectory.npz")
    assert (out / "alignment.png").stat().st_size > 10_000 and (out / "alignment.svg").exists()
    spec = flowmoe.RunSpec.from_dict(record["spec"])
    assert spec.model.m == 2 and spec.solver.t_end == 20
    for key in ("conventions", "versions", "solver", "summary", "wall_times"):
        assert key in record
    # The saved initial state is the sampled one, and its loss is the population loss of the
    # sampled vectors (computed through the raw-vector API, not the Gram path of the run).
    V, W, Vs, Ws = initial_state(spec.model).vectors
    G0, r0 = flowmoe.init.gram_from_vectors(V, W, Vs, Ws)
    np.testing.assert_allclose(traj.gram[0], G0, atol=1e-14)
    assert abs(traj.loss[0] - flowmoe.population_loss(V, W, Vs, Ws)) < 1e-12
    # Gradient flow: the loss does not increase; the Gram stays a unit-diagonal PSD matrix.
    assert np.all(np.diff(traj.loss) <= 1e-12)
    assert np.max(np.abs(np.diagonal(traj.gram, axis1=1, axis2=2) - 1)) < 1e-9
    assert np.min(np.linalg.eigvalsh(traj.gram)) > -1e-8
    assert record["summary"]["final_loss"] == traj.loss[-1]


def test_run_keeps_partial_results_when_the_solver_stops(tmp_path):
    out = tmp_path / "run"
    code = main(["run", "--preset", "small", "--set", "solver.max_steps=20", "solver.t_end=50",
                 "--out", str(out), "--quiet"])
    assert code == 3  # a partial run exits non-zero
    record = json.loads((out / "summary.json").read_text())
    assert record["status"] == "partial" and "max_steps" in record["error"]
    assert record["solver"]["steps"] > 0 and record["solver"]["max_steps"] == 20
    traj = flowmoe.Trajectory.load(out / "trajectory.npz")
    assert 2 <= len(traj) < 301 and np.all(np.isfinite(traj.gram))


def test_ctrl_c_during_run_saves_what_was_computed(tmp_path, monkeypatch, capsys):
    import flowmoe.ode

    real, calls = flowmoe.ode.integrate, []

    def interrupt_third_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(flowmoe.ode, "integrate", interrupt_third_chunk)
    out = tmp_path / "run"
    code = main(["run", "--preset", "small", "--set", "solver.t_end=20", "--out", str(out), "--quiet"])
    assert code == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
    record = json.loads((out / "summary.json").read_text())
    assert record["status"] == "interrupted" and record["solver"]["steps"] > 0
    traj = flowmoe.Trajectory.load(out / "trajectory.npz")
    assert traj.provenance.status == "interrupted"
    assert len(traj) == 2 * 32 + 1  # two chunks of 32 saved intervals were done
    assert np.isclose(record["t_reached"], traj.t[-1])


def test_out_that_is_a_file_is_refused_before_computing(tmp_path, capsys):
    f = tmp_path / "a-file"
    f.write_text("x")
    code = main(["run", "--preset", "small", "--out", str(f / "sub"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--out" in err and "under a file" in err and "integrating" not in err


def test_progress_in_a_log_file_is_whole_lines_at_each_tenth(capsys):
    """Redirected to a file, the progress report was one line glued together by carriage returns."""
    import numpy as np

    from flowmoe.run import _Progress

    ts = np.linspace(0.0, 100.0, 101)
    bar = _Progress(100.0, ts)  # pytest's captured stderr is not a tty
    for k in range(1, 101):
        bar(k, 100)
    bar.close()
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.strip().splitlines()
    # the first chunk (after the compile), then one line per tenth
    assert [ln.split("(")[1].split(" %")[0] for ln in lines] == ["1"] + [str(10 * j) for j in range(1, 11)]
