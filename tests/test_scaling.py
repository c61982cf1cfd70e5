"""Scaling laws: fits on synthetic data with known parameters, the d- and m-sweeps, the O(√d) exponent."""

import json
import math

import numpy as np
import pytest

import flowmoe
from flowmoe.cli import main
from flowmoe.phases import CrossingFinder, recovery
from flowmoe.scaling import (
    ScalingJob,
    bootstrap_fit,
    d_sweep,
    fit_offset,
    fit_power,
    m_sweep,
    run_time,
    wilson,
)
from flowmoe.sweep import integrate_spec

SMALL = flowmoe.load_preset("small")  # m⋆ = 1, m = 2 (rtol 1e-10)


def test_power_and_offset_fits_recover_exact_parameters():
    x = np.array([1e2, 1e3, 1e4, 1e5, 1e6])
    f = fit_power(x, 3.0 * x**0.5)
    assert f["exponent"] == pytest.approx(0.5, abs=1e-12) and f["prefactor"] == pytest.approx(3.0, rel=1e-10)
    g = fit_offset(x, 5.0 + 0.2 * x**0.5)
    assert g["exponent"] == pytest.approx(0.5, abs=1e-6) and g["prefactor"] == pytest.approx(0.2, rel=1e-5)
    assert g["offset"] == pytest.approx(5.0, rel=1e-5)
    # Without an offset in the data the offset fit finds none (the bound T₀ ≥ 0 is active or T₀ ≈ 0).
    assert fit_offset(x, 3.0 * x**0.5)["offset"] < 1e-6


def _synthetic_times(rng, d, n_seeds=16):
    """Seeds with their own κ (shared across d, as with the Gram sampler) and 2% noise per run."""
    kappa = np.abs(rng.normal(2.0, 0.5, size=n_seeds)) + 0.5
    x, y, g = [], [], []
    for s, k in enumerate(kappa):
        for dd in d:
            x.append(dd)
            y.append((5.0 + np.sqrt(dd) / (4.5 * k)) * math.exp(rng.normal(0, 0.02)))
            g.append(s)
    return x, y, g


def test_bootstrap_interval_covers_the_true_exponent_with_the_sampling_spread():
    d = np.array([1e2, 1e3, 1e4, 1e5])
    x, y, g = _synthetic_times(np.random.default_rng(12345), d)
    fit = bootstrap_fit(x, y, g, "offset", n_boot=300)
    assert fit["ci"][0] <= 0.5 <= fit["ci"][1] and fit["n_boot"] == 300
    # Independent of the bootstrap: the spread of the exponent over 40 fresh synthetic experiments
    # (new κ and noise each). The bootstrap's 95 % interval from one experiment should be about as
    # wide as the central 95 % of that sampling distribution (within a factor 2).
    rng = np.random.default_rng(7)
    fresh = [fit_offset(*_synthetic_times(rng, d)[:2])["exponent"] for _ in range(40)]
    lo, hi = np.percentile(fresh, [2.5, 97.5])
    ratio = (fit["ci"][1] - fit["ci"][0]) / (hi - lo)
    assert 0.5 <= ratio <= 2.0, (fit["ci"], (lo, hi))
    power = bootstrap_fit(x, y, g, "power", n_boot=300)
    assert power["ci"][1] < 0.45  # the constant makes the pure power law's local slope smaller than ½


def test_wilson_interval_against_scipy():
    from scipy.stats import binomtest

    for k, n in ((0, 10), (3, 10), (10, 10), (7, 16)):
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson(k, n) == pytest.approx([ci.low, ci.high], abs=1e-9)


def test_d_sweep_writes_results_and_follows_the_leading_order(tmp_path):
    d_sweep(SMALL, [100, 10_000, 1_000_000], [0, 1], tmp_path, time_name="expert-first", n_boot=50,
                  progress=False)
    saved = json.loads((tmp_path / "scaling.json").read_text())
    for key in ("exponent", "ci", "prefactor", "runs", "per_d", "fits"):
        assert key in saved
    assert (tmp_path / "scaling.png").is_file() and (tmp_path / "scaling.md").is_file()
    assert len(saved["runs"]) == 6 and all(r["status"] == "ok" for r in saved["runs"])
    # At d = 10⁶ the expert's escape is the leading-order time √d/(4.5κ) up to O(1/√d) corrections
    # (docs/maths.md §4; an independent closed form): within 5%. (A run whose students all start with β < 0
    # escapes much later, if at all within the horizon: those are censored, not compared.)
    big = [r for r in saved["runs"] if r["d"] == 1_000_000 and r["time"] is not None]
    assert big
    for r in big:
        assert r["time"] == pytest.approx(r["predicted"], rel=0.05)
    # Restarting the same sweep loads every run from the cache.
    again = d_sweep(SMALL, [100, 10_000, 1_000_000], [0, 1], tmp_path, time_name="expert-first", n_boot=50,
                    progress=False)
    assert again["cost"]["computed"] == 0 and again["cost"]["loaded"] == 6


def test_early_stop_does_not_change_the_measured_time():
    spec = SMALL.with_overrides({"init.sampler": "gram", "model.d": 400})
    job = ScalingJob("T1-first", horizon=20.0, t_min=50.0, n_save=321)
    data, _ = job(spec)
    assert data["stopped_early"]
    full = integrate_spec(spec, job.times(400))
    rec = recovery(full, CrossingFinder(full), 0.9, 400)
    assert run_time(data, "T1-first")[0] == pytest.approx(rec["first"]["time"], rel=1e-12)


def test_m_sweep_counts_runs_that_recover_every_teacher(tmp_path):
    res = m_sweep(SMALL, [2, 3], [0, 1, 2], tmp_path, horizon=4.0, t_min=20.0, progress=False, plot=False)
    from flowmoe.init import initial_state
    from flowmoe.scaling import base_for_sweep  # the sweep's members use the Gram sampler

    for p in res["per_m"]:
        runs = [r for r in res["runs"] if r["m"] == p["m"]]
        # Independently of the sweep's own records: integrate each member again to its horizon and
        # ask whether at some saved time every teacher has a student with both alignments ≥ 0.9.
        k = 0
        for r in runs:
            spec = base_for_sweep(SMALL).with_overrides({"model.m": r["m"], "init.seed": r["seed"]})
            st = initial_state(spec.model)
            traj = flowmoe.flow_from_gram(st.gram, st.norms, r["m"], 1, np.linspace(0, r["t_end"], 801),
                                          rtol=1e-10, atol=1e-12)
            both = np.minimum(traj.router_alignment, traj.expert_alignment)  # (T, m, m⋆)
            k += bool(np.any(np.all(np.max(both, axis=1) >= 0.9, axis=1)))
        assert p["runs"] == 3 and p["all_recovered"] == k and p["fraction"] == pytest.approx(k / 3)
        from scipy.stats import binomtest

        ci = binomtest(k, 3).proportion_ci(confidence_level=0.95, method="wilson")
        assert p["ci"] == pytest.approx([ci.low, ci.high], abs=1e-9)


def test_scaling_command(tmp_path, capsys):
    args = ["verify", "--preset", "small", "--scaling", "d", "--values", "100,1000,10000", "--seeds", "0-1",
            "--time", "expert-first", "--fit", "power", "--n-boot", "100", "--quiet", "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "expert-first ≈" in out and "d^" in out
    assert json.loads((tmp_path / "scaling.json").read_text())["model"] == "power"
    assert main(args[:-1] + [str(tmp_path / "x"), "--time", "T2"]) == 2
    assert "time: got 'T2'" in capsys.readouterr().err
    assert main(args[:-1] + [str(tmp_path / "y"), "--values", "10,abc"]) == 2


@pytest.mark.slow
def test_alignment_time_exponent_over_four_decades(tmp_path):
    """Acceptance: T1-first over d = 10²…10⁵ at the paper's size (m⋆ = 5, m = 25), 4 seeds: the fitted
    exponent (T = T₀ + C d^a, the router's O(1) catch-up in T₀) lies in [0.4, 0.6]. (4 seeds in one
    process: the suite already runs on 2 processes; the 8-seed version is the README's command.)"""
    spec = flowmoe.load_preset("paper-fig1")
    res = d_sweep(spec, [100, 1000, 10_000, 100_000], range(4), tmp_path, n_boot=500, progress=False,
                  workers=1)
    a, (lo, hi) = res["exponent"], res["ci"]
    # Against the leading-order exponent ½ (docs/maths.md §4); the O(1) router catch-up bends the
    # curve at small d, so the interval itself need not contain ½ (measured: [0.462, 0.497], README).
    assert 0.4 <= a <= 0.6 and 0 < hi - lo < 0.2
    assert all(p["reached"] == p["runs"] for p in res["per_d"])
