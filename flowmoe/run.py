"""The main job: ``flowmoe run`` (integrate a preset, summarise, save, plot)."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from .api import flow_from_gram
from .errors import SolveError
from .init import initial_state
from .observables import summarize
from .plots import alignment_figure
from .spec import RunSpec


def library_versions() -> dict:
    import diffrax
    import jax
    import matplotlib
    import scipy
    import sympy

    from . import __version__

    return {"flowmoe": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "sympy": sympy.__version__, "jax": jax.__version__,
            "diffrax": diffrax.__version__, "matplotlib": matplotlib.__version__}


def conventions(spec: RunSpec) -> dict:
    from .gates import get_expert, get_gate

    return {
        "gate": get_gate(spec.model.gate).convention(),
        "expert": get_expert(spec.model.expert).convention(),
        "model": "f(x) = sum_i gate(vbar_i . x) * expert(wbar_i . x); no output weights, no 1/m",
        "loss": "L = 1/2 E[(f - f_star)^2], x ~ N(0, I_d)",
        "time": "gradient-flow time t (dtheta/dt = -grad L on raw vectors)",
        "init": "v_i, w_i iid N(0, I_d/d)",
        "gram_layout": "[vbar_1..vbar_m, wbar_1..wbar_m, v*_1..v*_m*, w*_1..w*_m*]",
    }


def log(msg: str) -> None:
    print(f"[flowmoe] {msg}", file=sys.stderr, flush=True)


def run_job(spec: RunSpec, out: Path, progress: bool = True) -> dict:
    """Integrate ``spec``, write trajectory.npz, summary.json and alignment.png into ``out``.

    A solve that fails part-way still writes what it computed (``summary.json`` says so).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    walls = {}
    t0 = time.perf_counter()
    m, s = spec.model, spec.solver
    log(f"spec {spec.name}: m={m.m}, m*={m.m_star}, d={m.d}, gate={m.gate}, expert={m.expert}")
    state = initial_state(m)
    walls["init_s"] = time.perf_counter() - t0
    ts = s.times()
    log(f"integrating the Gram ODE ({2 * (m.m + m.m_star)}×{2 * (m.m + m.m_star)}) to t = {s.t_end:g} "
        f"with {s.backend}/{s.method} (first call compiles)")
    t1 = time.perf_counter()
    status = "ok"
    error = None
    try:
        traj = flow_from_gram(state.gram, state.norms, m.m, m.m_star, ts, m.gate, m.expert,
                              backend=s.backend, method=s.method, rtol=s.rtol, atol=s.atol,
                              max_steps=s.max_steps, norms=s.norms, norm_drift_lr=s.norm_drift_lr,
                              state=s.state, progress=progress)
    except SolveError as err:
        status, error = "partial", str(err)
        log(f"WARNING: {err}")
        if err.partial is None:
            raise
        traj = err.partial
    walls["integrate_s"] = time.perf_counter() - t1
    traj.meta.update({"spec": spec.to_dict(), "conventions": conventions(spec)})
    traj.save(out / "trajectory.npz")
    summary = summarize(traj, spec.observe.threshold, spec.observe.error_tol)
    t2 = time.perf_counter()
    figs = alignment_figure(traj, out / "alignment", spec.observe.threshold,
                            title=f"{spec.name}: m*={m.m_star}, m={m.m}, d={m.d} (exact gradient flow)")
    walls["plot_s"] = time.perf_counter() - t2
    walls["total_s"] = time.perf_counter() - t0
    record = {
        "status": status,
        "error": error,
        "spec": spec.to_dict(),
        "conventions": conventions(spec),
        "versions": library_versions(),
        "solver": traj.meta.get("solver", {}),
        "summary": summary,
        "wall_times": walls,
        "files": {"trajectory": "trajectory.npz", "figures": [p.name for p in figs]},
    }
    (out / "summary.json").write_text(json.dumps(record, indent=2, default=_json_default))
    final_rec = sum(x is not None for x in summary["T1_per_pair_final_matching"])
    log(f"T1 per teacher (initial matching) = {_fmt(summary['T1_per_pair'])}: {summary['recovered']}/{m.m_star} "
        f"recovered; (final matching) = {_fmt(summary['T1_per_pair_final_matching'])}: {final_rec}/{m.m_star}; "
        f"matchings agree: {summary['matchings_agree']}; final loss = {summary['final_loss']:.3e}")
    log(f"wrote {out / 'trajectory.npz'}, {out / 'summary.json'}, {figs[0]} ({walls['total_s']:.1f} s)")
    return record


def _fmt(xs) -> str:
    return "[" + ", ".join("—" if x is None else f"{x:.2f}" for x in xs) + "]"


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)
