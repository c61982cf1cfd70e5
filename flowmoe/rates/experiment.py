"""Rate experiments: for each sample size n, fit the MLE on ``reps`` independent data sets, measure the
Voronoi loss of every fit, and fit the exponent α in loss ∝ [log(n)/n]^α (and in loss ∝ n^{−α}).

α is the least-squares slope of log(mean loss) against log(log(n)/n) (resp. log(1/n)), as in the
papers' App. G.1; its 95 % interval is a percentile bootstrap over replications (within every n the
fits are resampled with replacement, the means recomputed and the slope refitted).

Resumable: the results of each n are cached in ``<out>/cache/n_<n>.json`` together with the settings
that produced them; a rerun with the same settings skips those n.
"""

from __future__ import annotations

import math
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import SpecError
from ..io import check_out_dir, read_json, write_json
from .fit import fit, init_near_truth
from .models import sample_datasets
from .presets import RatePreset
from .voronoi import batch_loss

TOL = 1e-6
MAX_STEPS = 1000
MAX_POINTS_PER_BATCH = 2_000_000  # replications × n per vmapped batch (bounds memory)


# -- the KL projection Ǧ (dense normalised-sigmoid regime) ---------------------------------------

def population_quadrature(preset: RatePreset, panels: int = 60, nodes_x: int = 6, nodes_y: int = 20):
    """Points (x, y) and weights w with Σ w φ(x, y) ≈ E_{X, Y∼truth}[φ(X, Y)]: composite Gauss–Legendre
    in x on [x_low, x_high] (uniform law), Gauss–Hermite in y for each true Gaussian component."""
    gx, gw = np.polynomial.legendre.leggauss(nodes_x)
    edges = np.linspace(preset.x_low, preset.x_high, panels + 1)
    h = np.diff(edges)
    xs = (edges[:-1, None] + 0.5 * h[:, None] * (gx[None, :] + 1)).ravel()
    wx = (0.5 * h[:, None] * gw[None, :]).ravel() / (preset.x_high - preset.x_low)
    z, wz = np.polynomial.hermite_e.hermegauss(nodes_y)
    wz = wz / np.sqrt(2 * np.pi)
    tm = preset.truth_model
    t = {k: jnp.asarray(v) for k, v in preset.truth_arrays().items()}
    w, mu, var = (np.asarray(a) for a in jax.jit(tm.component_weights_means_vars)(t, jnp.asarray(xs[:, None])))
    # shape (nx, K, nz)
    y = mu[:, :, None] + np.sqrt(var)[None, :, None] * z[None, None, :]
    wt = wx[:, None, None] * w[:, :, None] * wz[None, None, :]
    x = np.broadcast_to(xs[:, None, None], y.shape)
    return x.reshape(-1, 1), y.reshape(-1), wt.reshape(-1)


def kl_projection(preset: RatePreset, starts: int = 4, seed: int = 12345) -> dict:
    """Ǧ: the maximiser of the population log-likelihood E log f_G(Y|X) over the fitted model class
    (≡ the minimiser of KL(truth ‖ f_G)), by BFGS on :func:`population_quadrature` from ``starts``
    starting points near the truth (best kept). Returns natural parameters and the attained KL."""
    x, y, w = population_quadrature(preset)
    S = starts
    p0 = init_near_truth(preset.fit_model, preset.truth_arrays(), seed, preset.init_scale or 0.1, reps=S)
    X, Y, W = (np.broadcast_to(a, (S, *a.shape)) for a in (x, y, w))
    res = fit(preset.fit_model, p0, X, Y, W, tol=1e-9, max_steps=5000)
    best = int(np.nanargmax(res.loglik))
    t = {k: jnp.asarray(v) for k, v in preset.truth_arrays().items()}
    ll_true = float(jax.jit(preset.truth_model.loglik)(t, jnp.asarray(x), jnp.asarray(y), jnp.asarray(w)))
    return {"params": {k: np.asarray(v)[best] for k, v in res.params.items()},
            "kl": ll_true - float(res.loglik[best]), "steps": int(res.steps[best]),
            "converged": bool(res.converged[best]), "starts_loglik": res.loglik.tolist()}


def bucket_size(n: int) -> int:
    """The padded data-set size used for n: the next power of two (at least 64)."""
    return max(64, 1 << (int(n) - 1).bit_length())


# -- one sample size ------------------------------------------------------------------------

def run_one_n(preset: RatePreset, n: int, reps: int, seed: int, reference: dict | None = None,
              pad_to: int | None = None) -> dict:
    """Fit ``reps`` data sets of size n; the loss, iterations, convergence and log-likelihood per fit."""
    t0 = time.perf_counter()
    truth_np = preset.truth_arrays()
    truth = {k: jnp.asarray(v) for k, v in truth_np.items()}
    key = jax.random.fold_in(jax.random.PRNGKey(seed), n)
    x, y = sample_datasets(preset.truth_model, truth, key, n, reps, preset.design, preset.x_low, preset.x_high)
    p0 = init_near_truth(preset.fit_model, truth_np, seed * 1_000_003 + n, preset.init_scale, reps=reps)
    # pad to a power-of-two size with zero-weight points, so that a handful of compiled shapes serve
    # every n (the objective is Σ wᵢ log f(yᵢ|xᵢ) with wᵢ = 1/n on the data, 0 on the padding)
    size = bucket_size(n) if pad_to is None else max(int(pad_to), n)
    x = jnp.pad(x, ((0, 0), (0, size - n), (0, 0)))
    y = jnp.pad(y, ((0, 0), (0, size - n)))
    w = jnp.broadcast_to(jnp.where(jnp.arange(size) < n, 1.0 / n, 0.0), (reps, size))
    chunk = max(1, min(reps, MAX_POINTS_PER_BATCH // size))
    parts = []
    for s in range(0, reps, chunk):
        sl = slice(s, min(s + chunk, reps))
        parts.append(fit(preset.fit_model, {k: v[sl] for k, v in p0.items()}, x[sl], y[sl], w[sl],
                         method=preset.method, tol=TOL, max_steps=MAX_STEPS))
    params = {k: np.concatenate([p.params[k] for p in parts]) for k in parts[0].params}
    losses = batch_loss(preset.loss, params, truth_np, preset.fit_model.gate, reference,
                        preset.fit_model.shared_expert if preset.fit_model.k1 else None,
                        preset.fit_model.routed_expert)
    return {"n": int(n), "loss": losses.tolist(), "params": {k: v.tolist() for k, v in params.items()},
            "steps": np.concatenate([p.steps for p in parts]).tolist(),
            "converged": np.concatenate([p.converged for p in parts]).tolist(),
            "loglik": np.concatenate([p.loglik for p in parts]).tolist(),
            "seconds": time.perf_counter() - t0}


# -- exponent fits ---------------------------------------------------------------------------

def slope_fit(n, values, rate: str = "logn/n") -> float:
    """α in values ∝ r(n)^α by least squares on logs, r(n) = log(n)/n (``"logn/n"``) or 1/n (``"1/n"``)."""
    n = np.asarray(n, float)
    r = np.log(n) / n if rate == "logn/n" else 1.0 / n
    return float(np.polyfit(np.log(r), np.log(np.asarray(values, float)), 1)[0])


def bootstrap_alpha(n, losses: list, rate: str = "logn/n", B: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of :func:`slope_fit` of the means, resampling fits within every n."""
    rng = np.random.default_rng(seed)
    arrs = [np.asarray(v, float) for v in losses]
    boot = np.empty(B)
    for b in range(B):
        boot[b] = slope_fit(n, [a[rng.integers(0, a.size, a.size)].mean() for a in arrs], rate)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(lo), float(hi)


def summarise(preset: RatePreset, rows: list[dict], settings: dict, reference: dict | None) -> dict:
    rows = sorted(rows, key=lambda r: r["n"])
    n = [r["n"] for r in rows]
    L = [np.asarray(r["loss"], float) for r in rows]
    finite = all(np.all(np.isfinite(a)) and np.all(a > 0) for a in L)
    out = {
        "preset": preset.name, "description": preset.description, "note": preset.note, "loss": preset.loss,
        "settings": settings, "n": n,
        "loss_mean": [float(a.mean()) for a in L], "loss_median": [float(np.median(a)) for a in L],
        "loss_sem": [float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else None for a in L],
        "loss_q25": [float(np.percentile(a, 25)) for a in L], "loss_q75": [float(np.percentile(a, 75)) for a in L],
        "converged_fraction": [float(np.mean(r["converged"])) for r in rows],
        "steps_mean": [float(np.mean(r["steps"])) for r in rows],
        "seconds": [float(r["seconds"]) for r in rows],
        "fits": int(sum(len(r["loss"]) for r in rows)),
        "theory_alpha": 0.5,
        "conventions": {"variance": "π(y|μ,ν) has variance ν", "rate": "loss ∝ [log(n)/n]^alpha",
                        "alpha_fit": "least squares on log(mean loss) over the n values",
                        "ci": "95% percentile bootstrap over replications (1000 resamples)"},
    }
    if len(n) >= 2 and finite:
        out["alpha"] = slope_fit(n, out["loss_mean"])
        out["alpha_ci"] = list(bootstrap_alpha(n, L, seed=settings["seed"]))
        out["alpha_inv_n"] = slope_fit(n, out["loss_mean"], "1/n")
        out["alpha_inv_n_ci"] = list(bootstrap_alpha(n, L, "1/n", seed=settings["seed"]))
        out["alpha_median"] = slope_fit(n, out["loss_median"])
    else:
        out.update({"alpha": None, "alpha_ci": None, "alpha_inv_n": None, "alpha_inv_n_ci": None,
                    "alpha_median": None})
    if reference is not None:
        out["reference"] = {"params": reference["params"], "kl": reference["kl"],
                            "converged": reference["converged"]}
    return out


# -- the whole experiment -------------------------------------------------------------------

def check_n_values(n_values) -> list[int]:
    out = []
    for v in n_values:
        try:
            iv = int(v)
        except (TypeError, ValueError):
            raise SpecError("--n", f"got {v!r}; allowed: integers ≥ 10") from None
        if iv != v or iv < 10:
            raise SpecError("--n", f"got {v!r}; allowed: integers ≥ 10")
        out.append(iv)
    if len(set(out)) != len(out):
        raise SpecError("--n", f"repeated sample sizes in {out}; allowed: distinct integers ≥ 10")
    return sorted(out)


def run_experiment(preset: RatePreset, out, n_values=None, reps: int | None = None, seed: int = 0,
                   progress: bool = True, pad_to: int | None = None, command: str | None = None) -> dict:
    """Run (or resume) ``preset`` into folder ``out``: cache/n_*.json, rates.json, report.md, rates.png
    (+ .svg); ``command`` (the command line) is recorded in rates.json and report.md.

    ``pad_to``: pad every data set to this size (zero-weight points) instead of the next power of two,
    so that all n share one compiled fit (useful for quick runs with small n).
    """
    n_values = check_n_values(preset.n_values if n_values is None else n_values)
    reps = preset.reps if reps is None else reps
    if not isinstance(reps, (int, np.integer)) or isinstance(reps, bool) or reps < 2:
        raise SpecError("--reps", f"got {reps!r}; allowed: an integer ≥ 2")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise SpecError("--seed", f"got {seed!r}; allowed: an integer ≥ 0")
    out = check_out_dir(out)
    cache = out / "cache"
    settings = {"preset": preset.name, "reps": int(reps), "seed": int(seed), "method": preset.method,
                "tol": TOL, "max_steps": MAX_STEPS, "init_scale": preset.init_scale, "loss": preset.loss,
                "design": preset.design}
    t_start = time.perf_counter()
    reference = None
    if preset.loss == "D4":
        ref_path = cache / "reference.json"
        if ref_path.exists() and read_json(ref_path).get("settings") == {"preset": preset.name}:
            reference = read_json(ref_path)["reference"]
            reference["params"] = {k: np.asarray(v) for k, v in reference["params"].items()}
        else:
            if progress:
                print(f"[rates {preset.name}] KL projection Ǧ by population quadrature …", file=sys.stderr)
            reference = kl_projection(preset)
            write_json(ref_path, {"settings": {"preset": preset.name}, "reference": reference})
    rows, computed = [], 0
    for i, n in enumerate(n_values):
        path = cache / f"n_{n:07d}.json"
        if path.exists():
            cached = read_json(path)
            if cached.get("settings") == settings:
                rows.append(cached["result"])
                if progress:
                    print(f"[rates {preset.name}] n = {n}: cached", file=sys.stderr)
                continue
        row = run_one_n(preset, n, reps, seed, None if reference is None else reference["params"], pad_to)
        write_json(path, {"settings": settings, "result": row})
        rows.append(row)
        computed += 1
        if progress:
            print(f"[rates {preset.name}] {i + 1}/{len(n_values)} n = {n}: mean loss {np.mean(row['loss']):.4g}, "
                  f"converged {np.mean(row['converged']):.0%}, {row['seconds']:.1f} s", file=sys.stderr)
    summary = summarise(preset, rows, settings, reference)
    summary["wall_seconds_this_run"] = time.perf_counter() - t_start
    summary["n_computed_this_run"] = computed
    fit_seconds = sum(summary["seconds"])
    summary["fits_per_second"] = summary["fits"] / fit_seconds if fit_seconds > 0 else None
    summary["command"] = command
    summary["files"] = ["rates.json", "rates.png", "rates.svg", "report.md"]
    from ..plotting.rates import rates_figure
    from .report import write_report

    write_json(out / "rates.json", summary)
    rates_figure(summary, out / "rates")
    write_report(summary, out / "report.md", figure="rates.png")
    return summary


__all__ = ["run_experiment", "run_one_n", "kl_projection", "population_quadrature", "slope_fit",
           "bootstrap_alpha", "summarise", "check_n_values"]
