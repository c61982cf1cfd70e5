"""Scaling laws over sweeps: the O(√d) alignment time and the effect of over-parameterisation.

**d-sweep.** For each d and seed, integrate (with the d-free Gram sampler) until the chosen time is
reached or the horizon t_end = max(t_min, horizon·√d) passes, and measure with the refined crossings
of :mod:`flowmoe.phases` one of

- ``"T1-first"`` (default): the first time some student–teacher pair has both alignments ≥ 0.9
  (the first pair to align; governed by the largest initial overlaps);
- ``"T1-all"``: the time every teacher has been recovered (overall T₁, matching-free);
- ``"expert-first"``: the first time some expert alignment γ⁽²⁾ ≥ 0.9 (the escape the leading-order
  mechanism describes, without the router's catch-up).

Fits, over every run that reached the time (censored runs are counted and left out):

- ``"power"``:  T = C·d^a (least squares on log T against log d);
- ``"offset"`` (default): T = T₀ + C·d^a, T₀ ≥ 0 (least squares on log T). The router follows the
  expert after a delay that does not grow with d (docs/maths.md §4: dα/dt ≈ 6R₁₁(α)β³(1 − α²) once β ≈ 1),
  so T₁ = T₀ + O(√d): at small d the constant dominates and a pure power law reports a local
  slope well below ½. T₀ absorbs it; the pure power fit is always reported as well.

Confidence intervals: bootstrap over seeds (resample seeds with replacement and keep all d values
of a chosen seed together: with the Gram sampler a seed gives nearly the same κ at every d, so
the pairing is kept), percentile interval. The leading-order prediction of each run is
√d/(4.5κ) with κ = √d·γ⁽²⁾(0) of the pair that defines its time (for T1-all: the student that
recovered the last teacher).

**m-sweep.** For fixed m⋆, sweep m and report the fraction of runs that recover every teacher
within the horizon (Wilson 95% interval).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from .errors import SpecError
from .io import write_json
from .plotting.scaling import d_figure, m_figure
from .phases import ESCAPE_RATE, CrossingFinder, recovery, to_json
from .spec import RunSpec
from .labelled import write_dataset
from .sweep import integrate_spec, run_sweep, seeds_of

TIMES = ("T1-first", "T1-all", "expert-first")
MODELS = ("offset", "power")
DEFAULT_D = (100, 1000, 10_000, 100_000, 1_000_000)
DEFAULT_HORIZON = {"T1-first": 2.0, "expert-first": 2.0, "T1-all": 6.0}


# The job of one member ----------------------------------------------------------------------
@dataclass(frozen=True)
class ScalingJob:
    """Integrate until ``target`` is reached (or t_end = max(t_min, horizon·√d)), log-spaced saves,
    and record the matching-free recovery times (:func:`flowmoe.phases.recovery`)."""

    target: str = "T1-first"
    horizon: float = 2.0
    t_min: float = 50.0
    n_save: int = 321
    threshold: float = 0.9

    def __post_init__(self):
        if self.target not in TIMES:
            raise SpecError("time", f"got {self.target!r}; allowed: {list(TIMES)}")
        for name in ("horizon", "t_min"):
            x = float(getattr(self, name))
            if not (math.isfinite(x) and x > 0):
                raise SpecError(name.replace("_", "-"), f"must be a number > 0, got {getattr(self, name)!r}")
            object.__setattr__(self, name, x)
        if isinstance(self.n_save, bool) or not isinstance(self.n_save, (int, np.integer)) or self.n_save < 34:
            raise SpecError("n-save", f"must be an integer ≥ 34, got {self.n_save!r}")
        if not 0 < float(self.threshold) < 1:
            raise SpecError("threshold", f"must be in (0, 1), got {self.threshold!r}")

    def describe(self) -> dict:
        return dataclasses.asdict(self)

    def t_end(self, d: int) -> float:
        return max(self.t_min, self.horizon * math.sqrt(d))

    def times(self, d: int) -> np.ndarray:
        t_end = self.t_end(d)
        return np.concatenate([[0.0], np.geomspace(t_end * 1e-4, t_end, self.n_save - 1)])

    def batch_times(self, spec: RunSpec) -> np.ndarray:
        """The save times of this job's integration (for ``executor="batched"``)."""
        return self.times(spec.model.d)

    def reached(self, traj) -> bool:
        thr = self.threshold
        g1, g2 = traj.router_alignment, traj.expert_alignment
        if self.target == "expert-first":
            return bool(np.any(g2 >= thr))
        both = np.any(np.minimum(g1, g2) >= thr, axis=0)  # (m, m⋆): pair reached at some saved time
        if self.target == "T1-first":
            return bool(both.any())
        return bool(np.all(both.any(axis=0)))

    def __call__(self, spec: RunSpec):
        d = spec.model.d
        t0 = time.perf_counter()
        traj = integrate_spec(spec, self.times(d), stop=self.reached)
        solve_s = time.perf_counter() - t0
        finder = CrossingFinder(traj)
        rec = recovery(traj, finder, self.threshold, d)
        data = {"d": d, "m": spec.model.m, "m_star": spec.model.m_star, "seed": spec.model.init.seed,
                "t_end": self.t_end(d), "t_stop": float(traj.t[-1]), "stopped_early": traj.provenance.status == "stopped-early",
                "steps": traj.provenance.stats["steps"], "solve_s": solve_s,
                "refine_s": time.perf_counter() - t0 - solve_s, "refine": finder.stats, "recovery": rec}
        return data, None


def run_time(data: dict, which: str) -> tuple[float, float]:
    """(measured time, leading-order prediction √d/(4.5κ)) of one run record for ``which``."""
    rec = data["recovery"]
    if which == "T1-first":
        e = rec["first"]
        return _num(e["time"]), _num(e["predicted"])
    if which == "expert-first":
        e = rec["expert_first"]
        return _num(e["time"]), _num(e["predicted"])
    t = _num(rec["T1_all"])
    if not math.isfinite(t):
        return t, float("nan")
    times = [_num(x) for x in rec["recovery_times"]]
    j = int(np.nanargmax(times))
    kappa = _num(rec["recovery_kappa"][j])
    pred = math.sqrt(data["d"]) / (ESCAPE_RATE * kappa) if kappa > 0 else float("nan")
    return t, pred


def _num(x) -> float:
    return float("nan") if x is None else float(x)


# Fits ---------------------------------------------------------------------------------------
def fit_power(x, y) -> dict:
    """T = C·x^a by least squares on (log x, log T)."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    A = np.stack([np.ones_like(lx), lx], axis=1)
    (lc, a), *_ = np.linalg.lstsq(A, ly, rcond=None)
    resid = ly - A @ np.array([lc, a])
    return {"exponent": float(a), "prefactor": float(np.exp(lc)), "offset": 0.0,
            "rms_log_residual": float(np.sqrt(np.mean(resid**2)))}


def fit_offset(x, y, start: dict | None = None) -> dict:
    """T = T₀ + C·x^a, T₀ ∈ [0, min T), by least squares on log T (several starts, best kept;
    ``start``, e.g. the fit to the full data in a bootstrap, adds a start and drops the others but T₀ = 0)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    lx, ly = np.log(x), np.log(y)
    ymin = float(np.min(y))

    def resid(p):
        t0, lc, a = p
        return np.log(t0 + np.exp(lc + a * lx)) - ly

    starts = []
    for frac in ((0.0,) if start else (0.0, 0.3, 0.6, 0.9)):
        p = fit_power(x, y - frac * ymin)
        starts.append([frac * ymin, math.log(p["prefactor"]), p["exponent"]])
    if start:
        starts.append([min(start["offset"], 0.99 * ymin), math.log(start["prefactor"]), start["exponent"]])
    best = None
    for p0 in starts:
        try:
            sol = least_squares(resid, p0, bounds=([0.0, -np.inf, -5.0], [ymin * (1 - 1e-12), np.inf, 5.0]),
                                x_scale=[max(ymin, 1e-3), 1.0, 0.1], xtol=1e-12, ftol=1e-12)
        except ValueError:
            continue
        if best is None or sol.cost < best.cost:
            best = sol
    t0, lc, a = best.x
    return {"exponent": float(a), "prefactor": float(math.exp(lc)), "offset": float(t0),
            "rms_log_residual": float(np.sqrt(np.mean(best.fun**2)))}


def fit(x, y, model: str) -> dict:
    if model not in MODELS:
        raise SpecError("fit", f"got {model!r}; allowed: {list(MODELS)}")
    if len(set(np.asarray(x).tolist())) < (3 if model == "offset" else 2):
        raise SpecError("fit", f"the {model!r} fit needs at least {3 if model == 'offset' else 2} distinct "
                               f"values with a measured time")
    return fit_power(x, y) if model == "power" else fit_offset(x, y)


def bootstrap_fit(x, y, groups, model: str, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """The fit and a percentile bootstrap interval for each parameter, resampling ``groups`` (seeds)."""
    x, y, groups = np.asarray(x, float), np.asarray(y, float), np.asarray(groups)
    point = fit(x, y, model)
    rng = np.random.default_rng(seed)
    labels = np.unique(groups)
    members = {g: np.flatnonzero(groups == g) for g in labels}
    need = 3 if model == "offset" else 2
    samples = {"exponent": [], "prefactor": [], "offset": []}
    for _ in range(int(n_boot)):
        pick = rng.choice(labels, size=len(labels), replace=True)
        idx = np.concatenate([members[g] for g in pick])
        if len(np.unique(x[idx])) < need:
            continue
        f = fit_power(x[idx], y[idx]) if model == "power" else fit_offset(x[idx], y[idx], start=point)
        for k, values in samples.items():
            values.append(f[k])
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out = dict(point, model=model, n_points=len(x), n_groups=len(labels), level=level,
               n_boot=len(samples["exponent"]))
    for k, v in samples.items():
        out[f"{k}_ci" if k != "exponent" else "ci"] = ([float(np.percentile(v, lo_q)), float(np.percentile(v, hi_q))]
                                                       if v else [float("nan"), float("nan")])
    return out


def wilson(k: int, n: int, z: float = 1.959963984540054) -> list:
    """Wilson score interval for a binomial proportion k/n."""
    if n == 0:
        return [float("nan"), float("nan")]
    p = k / n
    den = 1 + z**2 / n
    mid = (p + z**2 / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / den
    return [max(0.0, mid - half), min(1.0, mid + half)]


# Sweeps -------------------------------------------------------------------------------------
def base_for_sweep(spec: RunSpec) -> RunSpec:
    """The spec with the d-free Gram sampler when the teacher is orthonormal (large d without vectors)."""
    if spec.model.teacher.geometry == "orthonormal" and spec.model.init.vectors is None:
        return spec.with_overrides({"init.sampler": "gram"})
    return spec


def d_sweep(spec: RunSpec, d_values, seeds, out, *, time_name="T1-first", model="offset", horizon=None,
            t_min=50.0, n_save=321, n_boot=1000, workers=1, progress=True, plot=True, executor="local",
            scheduler=None, command=None) -> dict:
    """Sweep d × seeds, fit the time against d, write OUT/scaling.json, .png/.svg, .md and .nc (the runs as
    labelled arrays over d × seed, :mod:`flowmoe.labelled`); returns the JSON. ``executor``/``scheduler``:
    see :func:`flowmoe.sweep.run_sweep`; ``command`` (the command line that asked for it) is written into
    both documents."""
    d_values = _int_list(d_values, "values", 1)
    job = ScalingJob(time_name, DEFAULT_HORIZON[time_name] if horizon is None else horizon, t_min, n_save,
                     spec.observe.threshold)
    base = base_for_sweep(spec)
    specs = [s for d in d_values for s in seeds_of(base.with_overrides({"model.d": d}), seeds)]
    out = Path(out)
    res = run_sweep(specs, job, out / "runs", workers=workers, progress=progress, desc=f"d-sweep ({time_name})",
                    executor=executor, scheduler=scheduler)
    write_dataset(res.records, out / "scaling.nc")
    rows = []
    for r in res.records:
        row = {"d": r.spec.model.d, "seed": r.seed, "status": r.status, "error": r.error, "key": r.key}
        if r.ok:
            t, pred = run_time(r.data, time_name)
            row.update(time=t, predicted=pred, t_end=r.data["t_end"], t_stop=r.data["t_stop"],
                       steps=r.data["steps"], solve_s=r.data["solve_s"], refine_s=r.data["refine_s"],
                       T1_first=_num(r.data["recovery"]["first"]["time"]),
                       expert_first=_num(r.data["recovery"]["expert_first"]["time"]),
                       T1_all=_num(r.data["recovery"]["T1_all"]))
        rows.append(row)
    good = [r for r in rows if r["status"] == "ok" and math.isfinite(r["time"])]
    x = [r["d"] for r in good]
    y = [r["time"] for r in good]
    g = [r["seed"] for r in good]
    fits, notes = {}, []
    for mdl in MODELS:
        try:
            fits[mdl] = bootstrap_fit(x, y, g, mdl, n_boot=n_boot)
        except SpecError as err:
            notes.append(f"{mdl} fit not possible: {err}")
    pred_ok = [r for r in good if math.isfinite(r["predicted"]) and r["predicted"] > 0]
    if len({r["d"] for r in pred_ok}) >= 2:
        fits["prediction"] = fit_power([r["d"] for r in pred_ok], [r["predicted"] for r in pred_ok])
    per_d = []
    for d in d_values:
        sel = [r for r in rows if r["d"] == d]
        ok = [r for r in sel if r["status"] == "ok" and math.isfinite(r.get("time", float("nan")))]
        ratio = [r["time"] / r["predicted"] for r in ok if math.isfinite(r["predicted"]) and r["predicted"] > 0]
        per_d.append({"d": d, "runs": len(sel), "reached": len(ok),
                      "failed": sum(r["status"] != "ok" for r in sel),
                      "median_time": _median([r["time"] for r in ok]),
                      "median_predicted": _median([r["predicted"] for r in ok]),
                      "median_ratio": _median(ratio),
                      "median_excess": _median([r["time"] - r["predicted"] for r in ok
                                                if math.isfinite(r["predicted"])])})
    primary = fits.get(model, {})
    computed = [r for r in res.records if not r.cached and r.ok]
    result = {
        "variable": "d", "time": time_name, "model": model,
        "exponent": primary.get("exponent"), "ci": primary.get("ci"), "prefactor": primary.get("prefactor"),
        "offset": primary.get("offset"), "fits": fits, "per_d": per_d, "runs": rows,
        "prediction": "T ≈ √d/(4.5κ), κ = √d·γ⁽²⁾(0) of the pair that defines the run's time",
        "options": {"d_values": d_values, "seeds": list(map(int, seeds)), **job.describe(), "n_boot": n_boot,
                    "workers": workers},
        "spec": base.to_dict(), "notes": notes, "command": command,
        "cost": {"wall_s": res.wall_s, "computed": res.computed, "loaded": res.loaded,
                 "median_run_s": _median([r.wall_s for r in computed]),
                 "median_steps": _median([r.data["steps"] for r in computed])},
    }
    write_outputs(result, out, plot)
    return to_json(result)


def m_sweep(spec: RunSpec, m_values, seeds, out, *, horizon=None, t_min=50.0, n_save=321, workers=1,
            progress=True, plot=True, executor="local", scheduler=None, command=None) -> dict:
    """For fixed m⋆, sweep m × seeds: fraction of runs recovering every teacher within the horizon
    (OUT/scaling.json, .md, .png and .nc: the runs as labelled arrays over m × seed)."""
    ms = spec.model.m_star
    m_values = _int_list(m_values, "values", ms + 1)
    job = ScalingJob("T1-all", DEFAULT_HORIZON["T1-all"] if horizon is None else horizon, t_min, n_save,
                     spec.observe.threshold)
    base = base_for_sweep(spec)
    specs = [s for m in m_values for s in seeds_of(base.with_overrides({"model.m": m}), seeds)]
    out = Path(out)
    res = run_sweep(specs, job, out / "runs", workers=workers, progress=progress, desc="m-sweep",
                    executor=executor, scheduler=scheduler)
    write_dataset(res.records, out / "scaling.nc")
    rows, per_m = [], []
    for r in res.records:
        row = {"m": r.spec.model.m, "seed": r.seed, "status": r.status, "error": r.error, "key": r.key}
        if r.ok:
            rec = r.data["recovery"]
            row.update(T1_all=_num(rec["T1_all"]), recovered=int(sum(x is not None for x in rec["recovery_times"])),
                       t_end=r.data["t_end"], t_stop=r.data["t_stop"], steps=r.data["steps"])
        rows.append(row)
    for m in m_values:
        sel = [r for r in rows if r["m"] == m and r["status"] == "ok"]
        k = sum(math.isfinite(r["T1_all"]) for r in sel)
        per_m.append({"m": m, "runs": len(sel), "all_recovered": k, "fraction": k / len(sel) if sel else None,
                      "ci": wilson(k, len(sel)), "failed": sum(r["m"] == m and r["status"] != "ok" for r in rows),
                      "median_T1_all": _median([r["T1_all"] for r in sel if math.isfinite(r["T1_all"])])})
    computed = [r for r in res.records if not r.cached and r.ok]
    result = {"variable": "m", "m_star": ms, "d": spec.model.d, "per_m": per_m, "runs": rows,
              "options": {"m_values": m_values, "seeds": list(map(int, seeds)), **job.describe(), "workers": workers},
              "spec": base.to_dict(), "command": command,
              "cost": {"wall_s": res.wall_s, "computed": res.computed, "loaded": res.loaded,
                       "median_run_s": _median([r.wall_s for r in computed])}}
    write_outputs(result, out, plot)
    return to_json(result)


def _median(xs):
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.median(xs)) if xs else float("nan")


def _int_list(values, field: str, minimum: int) -> list[int]:
    if isinstance(values, str):
        values = values.split(",")
    out = []
    for v in values:
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise SpecError(field, f"must be integers ≥ {minimum} separated by commas, got {v!r}") from None
        if not x.is_integer() or x < minimum:
            raise SpecError(field, f"must be integers ≥ {minimum}, got {v!r}")
        out.append(int(x))
    if not out:
        raise SpecError(field, "need at least one value")
    return sorted(set(out))


# Outputs ------------------------------------------------------------------------------------
def write_outputs(result: dict, out: Path, plot: bool = True) -> list[Path]:
    """scaling.json, the figure (PNG + SVG) and scaling.md in ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [write_json(out / "scaling.json", to_json(result), indent=1)]
    figs = []
    if plot:
        figs = d_figure(result, out / "scaling") if result["variable"] == "d" else m_figure(result, out / "scaling")
    text = d_report(result, figs) if result["variable"] == "d" else m_report(result, figs)
    if result.get("command"):
        title, _, rest = text.partition("\n")
        text = f"{title}\n\ncommand: `{result['command']}`\n{rest}"
    (out / "scaling.md").write_text(text)
    labelled = [out / "scaling.nc"] if (out / "scaling.nc").exists() else []
    result["files"] = [p.name for p in [*written, *figs, out / "scaling.md", *labelled]]
    return [*written, *figs, out / "scaling.md", *labelled]


def _f(x, fmt=".4g") -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def d_report(result: dict, figs) -> str:
    o = result["options"]
    lines = [f"# Scaling of {result['time']} with d", "",
             (f"Spec `{result['spec']['name']}`: m⋆ = {result['spec']['model']['m_star']}, "
             f"m = {result['spec']['model']['m']}, gate {result['spec']['model']['gate']}, "
             f"expert {result['spec']['model']['expert']}, sampler `{result['spec']['init']['sampler']}`; "
             f"d ∈ {o['d_values']}, seeds {o['seeds'][0]}..{o['seeds'][-1]} ({len(o['seeds'])}); horizon "
             f"t_end = max({o['t_min']:g}, {o['horizon']:g}·√d), {o['n_save']} log-spaced saves, integration "
             f"stopped once {o['target']} was reached; threshold {o['threshold']:g}."), ""]
    if result.get("exponent") is not None:
        lines += [f"**Fit ({result['model']}): exponent a = {result['exponent']:.4f}, "
                  f"{100 * result['fits'][result['model']]['level']:.0f}% bootstrap CI over seeds "
                  f"[{result['ci'][0]:.4f}, {result['ci'][1]:.4f}], prefactor C = {result['prefactor']:.4g}"
                  + (f", offset T₀ = {result['offset']:.4g}" if result["model"] == "offset" else "") + "**", ""]
    lines += ["| fit | exponent a | CI | prefactor C | offset T₀ | rms log residual |", "|---|---|---|---|---|---|"]
    for name, f in result["fits"].items():
        ci = f.get("ci")
        lines.append(f"| {name} | {_f(f['exponent'])} | {('[' + _f(ci[0]) + ', ' + _f(ci[1]) + ']') if ci else '—'} "
                     f"| {_f(f['prefactor'])} | {_f(f['offset'])} | {_f(f['rms_log_residual'], '.3g')} |")
    lines += ["", "`prediction` is the power fit of the leading-order times √d/(4.5κ) themselves.", "",
              "| d | runs | reached | failed | median time | median √d/(4.5κ) | median ratio | median excess |",
              "|---|---|---|---|---|---|---|---|"]
    for p in result["per_d"]:
        lines.append(f"| {p['d']} | {p['runs']} | {p['reached']} | {p['failed']} | {_f(p['median_time'])} | "
                     f"{_f(p['median_predicted'])} | {_f(p['median_ratio'], '.3f')} | {_f(p['median_excess'], '.3g')} |")
    c = result["cost"]
    lines += ["", (f"Cost: {c['computed']} runs computed, {c['loaded']} loaded from the cache, wall "
                  f"{c['wall_s']:.1f} s, median {_f(c['median_run_s'], '.3g')} s and {_f(c['median_steps'], '.0f')} "
                  f"solver steps per computed run."), ""]
    lines += ["## Definitions", "",
              ("- T1-first: first time some student–teacher pair has router and expert alignment ≥ threshold; "
              "T1-all: every teacher recovered by some student; expert-first: first expert alignment ≥ threshold. "
              "Crossings are refined by re-integrating the bracketing interval (flowmoe.phases)."),
              ("- κ = √d·γ⁽²⁾(0) of the pair that defines the time; prediction √d/(4.5κ) from "
              "dβ/dt ≈ 4.5β²(1 − β²) (docs/maths.md §4). The router then needs an O(1) time to follow, which the "
              "offset T₀ of the `offset` fit absorbs."),
              ("- CI: percentile bootstrap over seeds (all d values of a resampled seed kept together); runs "
              "that did not reach the time within the horizon are left out of the fit (see `reached`).")]
    if result.get("notes"):
        lines += [""] + [f"- Note: {n}" for n in result["notes"]]
    if figs:
        lines += ["", f"![scaling]({Path(figs[0]).name})"]
    return "\n".join(lines) + "\n"


def m_report(result: dict, figs) -> str:
    o = result["options"]
    lines = [f"# Recovery of every teacher against m (m⋆ = {result['m_star']}, d = {result['d']})", "",
             (f"Seeds {o['seeds'][0]}..{o['seeds'][-1]} ({len(o['seeds'])}); horizon t_end = max({o['t_min']:g}, "
             f"{o['horizon']:g}·√d); a teacher counts as recovered when some student has router and expert "
             f"alignment ≥ {o['threshold']:g}."), "",
             "| m | runs | all recovered | fraction | 95% Wilson CI | median T1-all | failed |",
             "|---|---|---|---|---|---|---|"]
    for p in result["per_m"]:
        lines.append(f"| {p['m']} | {p['runs']} | {p['all_recovered']} | {_f(p['fraction'], '.3f')} | "
                     f"[{_f(p['ci'][0], '.3f')}, {_f(p['ci'][1], '.3f')}] | {_f(p['median_T1_all'])} | {p['failed']} |")
    c = result["cost"]
    lines += ["", (f"Cost: {c['computed']} computed, {c['loaded']} loaded, wall {c['wall_s']:.1f} s, median "
                  f"{_f(c['median_run_s'], '.3g')} s per computed run.")]
    if figs:
        lines += ["", f"![m-sweep]({Path(figs[0]).name})"]
    return "\n".join(lines) + "\n"
