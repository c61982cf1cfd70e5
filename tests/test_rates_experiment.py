"""Rate experiments end to end on the exactly specified softmax-gated MoE (small sizes): the MLE
recovers the truth as n grows, the fitted exponent is close to the theory's ½, results resume from
the cache, and bad input ends in one line naming the field.

The independent reference is the theory (Voronoi loss D₁ of an exactly specified model decays like
n^{-1/2} up to logarithms) and a bootstrap-free check of the slope by hand with numpy.
"""

import json

import numpy as np
import pytest

import flowmoe  # noqa: F401
from flowmoe.errors import SpecError
from flowmoe.commands import rates as cli
from flowmoe.rates.experiment import run_experiment, slope_fit
from flowmoe.rates.presets import PRESETS, get_preset

N = [250, 1000, 4000]  # small run: one compiled shape (padded to 4096)
N_ALPHA = [500, 1000, 2000, 4000, 8000, 16000]  # α test (slow)


@pytest.fixture(scope="module")
def exact_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rates")
    s = run_experiment(get_preset("softmax-exact-k2"), out, n_values=N, reps=6, seed=1, progress=False,
                       pad_to=4096)
    return out, s


def test_truth_recovered_as_n_grows(exact_run):
    _, s = exact_run
    med = np.asarray(s["loss_median"])
    mean = np.asarray(s["loss_mean"])
    # ×16 data: theory ≈ ×¼ (n^{-1/2}, up to logs)
    assert med[-1] < 0.5 * med[0] and mean[-1] < 0.5 * mean[0]
    assert min(s["converged_fraction"]) == 1.0


@pytest.mark.slow
def test_alpha_close_to_half(tmp_path):
    s = run_experiment(get_preset("softmax-exact-k2"), tmp_path, n_values=N_ALPHA, reps=12, seed=1,
                       progress=False, pad_to=16384)
    N = N_ALPHA
    # slope by hand (numpy least squares on the logs), independent of slope_fit
    n = np.asarray(N, float)
    A = np.stack([np.log(np.log(n) / n), np.ones_like(n)], axis=1)
    alpha = np.linalg.lstsq(A, np.log(s["loss_mean"]), rcond=None)[0][0]
    assert s["alpha"] == pytest.approx(alpha, rel=1e-10)
    assert 0.3 < s["alpha"] < 0.75
    lo, hi = s["alpha_ci"]
    assert lo < s["alpha"] < hi
    assert 0.3 < s["alpha_inv_n"] < 0.75


def test_outputs_written(exact_run):
    out, s = exact_run
    data = json.loads((out / "rates.json").read_text())
    for key in ("alpha", "alpha_ci", "n", "loss_mean", "loss_median", "alpha_inv_n", "alpha_inv_n_ci"):
        assert key in data
    assert data["n"] == N
    assert (out / "rates.png").stat().st_size > 1000
    assert "softmax-exact-k2" in (out / "report.md").read_text()


def test_resume_skips_finished_n(exact_run):
    out, s = exact_run
    again = run_experiment(get_preset("softmax-exact-k2"), out, n_values=N, reps=6, seed=1, progress=False,
                           pad_to=4096)
    assert again["n_computed_this_run"] == 0
    assert again["loss_mean"] == s["loss_mean"]
    # another seed is another experiment: the cached n are recomputed
    other = run_experiment(get_preset("softmax-exact-k2"), out / "other", n_values=N[:2], reps=6, seed=2,
                           progress=False, pad_to=4096)
    assert other["n_computed_this_run"] == 2


def test_slope_fit_exact_power_law():
    n = np.array([100, 1000, 10000])
    assert slope_fit(n, (np.log(n) / n) ** 0.37) == pytest.approx(0.37, rel=1e-12)
    assert slope_fit(n, n ** -0.5, "1/n") == pytest.approx(0.5, rel=1e-12)


@pytest.mark.parametrize("argv,field", [
    (["--preset", "nope", "--out", "OUT"], "--preset"),
    (["--preset", "softmax-exact-k2", "--out", "OUT", "--reps", "1"], "--reps"),
    (["--preset", "softmax-exact-k2", "--out", "OUT", "--n", "5"], "--n"),
    (["--preset", "softmax-exact-k2", "--out", "OUT", "--n", "abc"], "--n"),
    (["--preset", "softmax-exact-k2", "--out", "OUT", "--seed", "-1"], "--seed"),
    (["--preset", "softmax-exact-k2", "--out", "FILE"], "--out"),
])
def test_bad_input_one_line(tmp_path, capsys, argv, field):
    f = tmp_path / "file.txt"
    f.write_text("x")
    argv = [str(tmp_path / "o") if a == "OUT" else (str(f) if a == "FILE" else a) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"flowmoe rates: error: {field}: ")


def test_presets_match_the_settings():
    p = get_preset("deepseek-thm3")
    assert np.all(p.truth_arrays()["beta1"] == 0) and p.loss == "D3" and p.fit_model.gate == "nsigmoid"
    assert (p.fit_model.k1, p.fit_model.k2, p.truth_model.k1, p.truth_model.k2) == (2, 3, 1, 2)
    e = get_preset("softmax-exact-k2")
    assert len(e.n_values) == 200 and e.n_values[0] == 100 and e.n_values[-1] == 100_000
    assert set(PRESETS) == {"deepseek-thm1", "deepseek-thm2", "deepseek-thm3", "deepseek-thm4", "softmax-exact-k2"}
    with pytest.raises(SpecError, match="^--preset: "):
        get_preset("deepseek-thm5")


def test_population_quadrature_moments():
    """The quadrature behind the KL projection: weights sum to 1 and E[Y], E[Y²] under the thm4 truth
    agree with scipy.integrate.quad of the closed-form conditional moments over X ~ U[−3, 3]."""
    from scipy.integrate import quad

    from flowmoe.rates.experiment import population_quadrature

    x, y, w = population_quadrature(get_preset("deepseek-thm4"))

    def moments(t):
        s = 1 / (1 + np.exp(-(5 * t + np.array([-0.5, 0.5]))))
        g = s / s.sum()
        mu = np.array([-8 * max(6 * t, 0.0), 8 * t + 2, -6 * t + 1])
        wt = np.array([0.5, 0.5 * g[0], 0.5 * g[1]])
        var = np.array([0.25, 0.4, 0.4])
        return wt @ mu, wt @ (var + mu ** 2)

    m1 = quad(lambda t: moments(t)[0] / 6, -3, 3, points=[0.0, 0.1, -0.1], limit=200)[0]
    m2 = quad(lambda t: moments(t)[1] / 6, -3, 3, points=[0.0, 0.1, -0.1], limit=200)[0]
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.sum(w * y) == pytest.approx(m1, rel=1e-8)
    assert np.sum(w * y ** 2) == pytest.approx(m2, rel=1e-8)
