"""The main job: ``flowmoe run`` (integrate a preset, summarise, save, plot)."""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import numpy as np

from .errors import Interrupted, SolveError
from .init import initial_state
from .io import check_out_dir, write_json
from .observables import summarize
from .plotting import alignment_figure
from .spec import RunSpec
from .sweep import integrate_spec


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
        "time": (f"t = lr * steps of online SGD with lr = {spec.dynamics.lr:g}, batch = {spec.dynamics.batch} "
                 "(the online-SGD ODE: gradient flow plus its O(lr) terms, docs/sgd-ode.md)" if spec.dynamics.online_sgd
                 else "gradient-flow time t (dtheta/dt = -grad L on raw vectors)"),
        "init": "v_i, w_i iid N(0, I_d/d)",
        "gram_layout": "[vbar_1..vbar_m, wbar_1..wbar_m, v*_1..v*_m*, w*_1..w*_m*]",
    }


def log(msg: str) -> None:
    print(f"[flowmoe] {msg}", file=sys.stderr, flush=True)


def run_job(spec: RunSpec, out: Path, progress: bool = True) -> dict:
    """Integrate ``spec``, write trajectory.npz, summary.json and alignment.png into ``out``.

    The output folder is checked before anything is computed. A solve that fails part-way, or is
    interrupted with Ctrl-C, still writes what it computed: ``summary.json`` has ``"status":
    "partial"`` or ``"interrupted"`` and the solver statistics; an interruption is then re-raised
    (:class:`~flowmoe.errors.Interrupted`) so that the command exits with 130.
    """
    out = check_out_dir(out)
    walls = {}
    t0 = time.perf_counter()
    m, s = spec.model, spec.solver
    log(f"spec {spec.name}: m={m.m}, m*={m.m_star}, d={m.d}, gate={m.gate}, expert={m.expert}, "
        f"backend={m.backend}")
    state = initial_state(m)
    walls["init_s"] = time.perf_counter() - t0
    ts = s.times()
    n = state.gram.shape[0]
    log(f"integrating the Gram ODE ({n}×{n}, {_dynamics_name(spec)}) to t = {s.t_end:g} with {s.backend}/{s.method} "
        f"(first call compiles)")
    t1 = time.perf_counter()
    status, error, interrupted = "complete", None, None
    bar = _Progress(s.t_end, ts) if progress else None
    try:
        traj = integrate_spec(spec, ts=ts, state=state, progress=bar)
    except SolveError as err:
        status, error = "partial", str(err)
        log(f"WARNING: {err}")
        if err.partial is None:
            raise
        traj = err.partial
    except Interrupted as err:
        interrupted = err
        status, error = "interrupted", "interrupted by the user (Ctrl-C)"
        if err.partial is None:
            log("interrupted before the first saved chunk: nothing to save")
            raise
        traj = err.partial
    finally:
        if bar is not None:
            bar.close()
    walls["integrate_s"] = time.perf_counter() - t1
    if status == "complete" and traj.provenance.status == "stopped-early":
        status = "steady-state"  # solver.steady_tol ended it before t_end
    events = {k: traj.provenance.notes[k] for k in ("stiff_switch", "steady_state") if k in traj.provenance.notes}
    if "stiff_switch" in events:
        sw = events["stiff_switch"]
        log(f"stiff tail: switched from {sw['from']} to {sw['to']} at t = {sw['t']:g} ({sw['reason']})")
    if "steady_state" in events:
        ss = events["steady_state"]
        log(f"steady state at t = {ss['t']:g}: speed {ss['speed']:.3g} < solver.steady_tol = {ss['tol']:g}; "
            f"stopped there (status steady-state)")
    traj = traj.with_provenance(spec=spec.to_dict()).annotate(conventions=conventions(spec))
    traj.save(out / "trajectory.npz")
    summary = summarize(traj, spec.observe.threshold, spec.observe.error_tol)
    t2 = time.perf_counter()
    figs = alignment_figure(traj, out / "alignment", spec.observe.threshold,
                            title=f"{spec.name}: m*={m.m_star}, m={m.m}, d={m.d} ({_dynamics_name(spec)})")
    walls["plot_s"] = time.perf_counter() - t2
    walls["total_s"] = time.perf_counter() - t0
    record = {
        "status": status,
        "error": error,
        "t_reached": float(traj.t[-1]),
        "spec": spec.to_dict(),
        "conventions": conventions(spec),
        "versions": library_versions(),
        "backend": traj.provenance.model.get("backend", {}),
        "dynamics": list(traj.provenance.dynamics),
        "solver": {**traj.provenance.solver, **traj.provenance.stats},
        "integration_events": events,
        "summary": summary,
        "wall_times": walls,
        "files": {"trajectory": "trajectory.npz", "figures": [p.name for p in figs]},
    }
    write_json(out / "summary.json", record)
    pred = summary["matching_rules"].get("initial", {})
    log(f"T1 per teacher (the student that recovered it) = {_fmt(summary['T1_per_pair'])}: "
        f"{summary['recovered']}/{m.m_star} recovered; the initial greedy matching predicted "
        f"{pred.get('hits', '?')}/{pred.get('decided', '?')} winners; final loss = {summary['final_loss']:.3e}")
    log(f"wrote {out}/: trajectory.npz, summary.json, {', '.join(p.name for p in figs)} ({walls['total_s']:.1f} s)")
    if interrupted is not None:
        log(f"interrupted at t = {traj.t[-1]:g}: saved what was computed (status: interrupted)")
        raise interrupted
    return record


def _dynamics_name(spec: RunSpec) -> str:
    dyn = spec.dynamics
    return f"online-SGD ODE, lr={dyn.lr:g}, B={dyn.batch}" if dyn.online_sgd else "exact gradient flow"


class _Progress:
    """A one-line progress report on stderr, updated after each integrated chunk."""

    def __init__(self, t_end: float, ts):
        self.t_end, self.ts, self.t0 = t_end, ts, time.perf_counter()
        # On a terminal the line is redrawn in place; in a log file (not a tty) a full line is
        # written at each tenth of the run, so the log stays readable.
        self.tty = bool(getattr(sys.stderr, "isatty", lambda: False)())
        self.tenth = -1

    def __call__(self, k: int, n: int) -> None:
        text = (f"[flowmoe] t = {self.ts[k]:.4g} / {self.t_end:g} ({100 * k / n:.0f} %, "
                f"{time.perf_counter() - self.t0:.1f} s)")
        if self.tty:
            print("\r" + text, end="", file=sys.stderr, flush=True)
        elif (10 * k) // n > self.tenth:
            self.tenth = (10 * k) // n
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr, flush=True)


def _fmt(xs) -> str:
    return "[" + ", ".join("—" if x is None else f"{x:.2f}" for x in xs) + "]"
