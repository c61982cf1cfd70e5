"""ODE against finite-step training: deviations, overlay plots, the convergence study (docs/maths.md §6).

``flowmoe compare`` samples one start in R^d, integrates the exact Gram ODE and runs one or more
simulators (:mod:`flowmoe.simulate`) from it, saving the ODE at the simulators' save times
t = lr × steps, and reports how far apart they are:

- ``alignment``: max over saved t of |a_sim(t) − a_ode(t)|, where a(t) is the teacher-wise max
  over students of the alignment, a_j = max_i γ_{i,j}, sorted over teachers; for routers γ⁽¹⁾
  and experts γ⁽²⁾ (the larger of the two). Invariant under permuting students and teachers.
- ``matched``: the same for the matched pairs' own alignments γ_{i⋆,j⋆} (greedy matching of the
  ODE at t = 0; the start is shared, so the students are the same);
- ``loss``: max_t |L_sim − L_ode| and the same relative to L_ode (population losses, exact);
- ``gram``: max_t of the largest |ΔG| entry (not permutation-invariant); T₁ from both; the
  norm growth: the largest ratio r(t)/r(0) of a student vector's norm in the simulation (1 = no growth).

Verdicts, one per criterion (:data:`CRITERIA_TEXT`): a simulation *agrees* with the ODE when its
alignments do, i.e. ``alignment`` and ``matched`` are ≤ ``tol``, and it ran to the end. The loss
gets its own verdict, ``loss_rel`` ≤ ``tol``, reported beside it and not folded into *agrees*:
where the loss falls steeply (a teacher being recovered), a time shift that moves no alignment by
more than ``tol`` changes the loss by far more than ``tol`` relative.

The convergence study (``flowmoe compare --study``): population GD at several lr (expected
deviation ∝ lr, slope 1 in log-log) and online SGD at several batch sizes B at one lr (noise
∝ √(lr/B), slope −½ once the O(lr) bias is removed: the SGD is compared with population GD at
the same lr as well as with the ODE). Fitted slopes are printed and plotted.

The paper's Fig. 1 (m⋆ = 5, m = 25, d = 1000, online SGD, batch 1000) against the ODE, with
population GD in R^d at the same step as a second simulator, i.e. ``plots/fig1-sgd-vs-ode.png``
(+ .svg), is regenerated (about 2 minutes on 2 cores) by::

    flowmoe compare --preset paper-fig1 --method online-sgd population-gd --lr 0.01 --batch 1000 \\
        --t-end 40 --out runs/fig1-sgd-vs-ode --figure plots/fig1-sgd-vs-ode
"""

from __future__ import annotations

import time

import numpy as np

from .api import gradient_flow
from .errors import Interrupted, SolveError, SpecError
from .io import check_out_dir, write_json
from .plotting.compare import overlay_figure, study_figure
from .names import METRICS
from .observables import matching, pair_T1
from .spec import SolverSpec
from .simulate import METHODS, USES_BATCH, USES_SAMPLES, check_options, simulate
from .trajectory import Trajectory


# --- deviation metrics ------------------------------------------------------------------------


def teacher_max(gamma: np.ndarray) -> np.ndarray:
    """(T, m, m⋆) alignments → (T, m⋆): max over students for each teacher, sorted descending."""
    return -np.sort(-np.max(gamma, axis=1), axis=1)


def deviations(ref: Trajectory, sim: Trajectory, pairs=None, until: float | None = None,
               threshold: float = 0.9) -> dict:
    """Deviations of ``sim`` from ``ref`` over their common saved times (t ≤ ``until``).

    The two must share their save times (``sim`` may stop early: a diverged run's partial).
    """
    T = min(len(ref), len(sim))
    if T < 1 or not np.allclose(ref.t[:T], sim.t[:T], rtol=1e-12, atol=1e-12):
        raise SpecError("times", "the trajectories must share their saved times t")
    if (ref.m, ref.m_star) != (sim.m, sim.m_star):
        raise SpecError("trajectory", f"different structures: m, m⋆ = {ref.m, ref.m_star} vs {sim.m, sim.m_star}")
    if until is not None:
        T = int(np.searchsorted(ref.t[:T], until, side="right"))
    ref, sim = ref.slice(T), sim.slice(T)
    pairs = matching(ref, 0) if pairs is None else pairs
    rows, cols = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    out = {}
    for name, a, b in (("router", ref.router_alignment, sim.router_alignment),
                       ("expert", ref.expert_alignment, sim.expert_alignment)):
        out[f"teacher_max_{name}"] = float(np.max(np.abs(teacher_max(a) - teacher_max(b))))
        out[f"matched_{name}"] = float(np.max(np.abs(a[:, rows, cols] - b[:, rows, cols])))
    out["alignment"] = max(out["teacher_max_router"], out["teacher_max_expert"])
    out["matched"] = max(out["matched_router"], out["matched_expert"])
    dl = np.abs(sim.loss - ref.loss)
    out["loss_abs"] = float(np.max(dl))
    out["loss_rel"] = float(np.max(dl / np.abs(ref.loss)))
    out["gram"] = float(np.max(np.abs(sim.gram - ref.gram)))
    students = 2 * sim.m
    out["norm_growth"] = float(np.max(sim.norms[:, :students] / sim.norms[:1, :students]))
    t1_ref, t1_sim = pair_T1(ref, pairs, threshold), pair_T1(sim, pairs, threshold)
    out["T1_ode"] = _overall(t1_ref)
    out["T1_sim"] = _overall(t1_sim)
    out["T1_per_pair_ode"] = [_nan_none(x) for x in t1_ref]
    out["T1_per_pair_sim"] = [_nan_none(x) for x in t1_sim]
    out["pairs"] = [list(map(int, p)) for p in pairs]
    out["t_compared"] = float(ref.t[-1])
    return out


CRITERIA_TEXT = ("agrees: the teacher-wise best alignments ('alignment') and the matched pairs' alignments "
                 "('matched') deviate by at most {tol:g} from the ODE's at every compared time, and the run "
                 "finished; loss ok: the loss deviates by at most {tol:g} relative to the ODE's loss "
                 "('loss (rel)'), a separate verdict")


def agrees(dev: dict, tol: float) -> bool:
    """Whether a simulation's alignments agree with the ODE's within ``tol`` (see the module docstring)."""
    return dev["alignment"] <= tol and dev["matched"] <= tol


def loss_agrees(dev: dict, tol: float) -> bool:
    """Whether the simulation's loss is within ``tol`` of the ODE's, relative to the ODE's loss."""
    return dev["loss_rel"] <= tol


def fit_slope(x, y) -> float:
    """Least-squares slope of log y against log x."""
    x, y = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    return float(np.polyfit(x, y, 1)[0])


def _overall(t1):
    return None if np.any(np.isnan(t1)) else float(np.max(t1))


def _nan_none(x):
    return None if np.isnan(x) else float(x)


# --- runs -------------------------------------------------------------------------------------


def save_times(lr: float, steps: int, save_every: int) -> np.ndarray:
    """The times a simulation saves at: t = lr × min(k·save_every, steps), k = 0, 1, …"""
    n = -(-steps // save_every)
    return lr * np.minimum(np.arange(n + 1) * save_every, steps)


def ode_at(V, W, V_star, W_star, times, gate="sigmoid", expert="he3", rtol=1e-10, atol=1e-12, *,
           solver: SolverSpec | None = None, model_backend_name="pair", backend_options=None):
    """The exact gradient flow from (V, W), saved at ``times`` (partial result if it stops).

    ``solver`` (a :class:`~flowmoe.spec.SolverSpec`: backend, method, state, max_steps, norms, …)
    overrides ``rtol``/``atol``; ``model_backend_name``/``backend_options`` pick the expectation
    backend, as the spec's ``model.backend`` and ``[backend]`` do.
    """
    solver = solver or SolverSpec(rtol=rtol, atol=atol)
    try:
        return gradient_flow(V, W, V_star, W_star, times, gate, expert, solver=solver,
                             model_backend_name=model_backend_name, backend_options=backend_options)
    except SolveError as err:
        if err.partial is not None:
            return err.partial
        raise


def sgd_ode_at(V, W, V_star, W_star, times, lr, batch, gate="sigmoid", expert="he3", rtol=1e-6, atol=1e-8, *,
               solver: SolverSpec | None = None, model_backend_name="pair", backend_options=None, dynamics=None):
    """The online-SGD ODE (docs/sgd-ode.md) with step ``lr`` and batch ``batch`` from (V, W), saved at
    ``times`` (partial result if it stops). ``solver`` gives the integrator (its state and norms are set
    to "gram" and "state"); ``dynamics`` (a DynamicsSpec) may fix the quadrature options."""
    from dataclasses import replace

    from .spec import DynamicsSpec

    base = solver or SolverSpec(rtol=rtol, atol=atol)
    # its O(lr) terms carry a quadrature error of ≈ 1 % (docs/sgd-ode.md): tolerances tighter than 1e-6 buy nothing
    solver = replace(base, state="gram", norms="state", norm_drift_lr=0.0, rtol=max(base.rtol, rtol),
                     atol=max(base.atol, atol))
    q = dynamics or DynamicsSpec()
    dyn = DynamicsSpec("online-sgd", lr, batch, q.points, q.unit_points, q.seed)
    try:
        return gradient_flow(V, W, V_star, W_star, times, gate, expert, solver=solver, dynamics=dyn,
                             model_backend_name=model_backend_name, backend_options=backend_options)
    except SolveError as err:
        if err.partial is not None:
            return err.partial
        raise


def sgd_ode_summary(sgd: Trajectory, sims: dict) -> dict:
    """The SGD ODE against each online-SGD simulation: deviations (as :func:`deviations`, with the
    SGD ODE as the reference) and the norm growth and loss of both at the last shared time."""
    out = {"norm_growth_sgd_ode": float(np.max(sgd.norms[:, :2 * sgd.m] / sgd.norms[:1, :2 * sgd.m])),
           "t_end": float(sgd.t[-1]), "loss_end": float(sgd.loss[-1]), "vs": {}}
    for method, traj in sims.items():
        if method != "online-sgd":
            continue
        T = min(len(sgd), len(traj))
        dev = deviations(sgd.slice(T), traj.slice(T))
        k = T - 1
        s = slice(0, 2 * sgd.m)
        g_ode, g_sim = sgd.norms[k, s] / sgd.norms[0, s], traj.norms[k, s] / traj.norms[0, s]
        out["vs"][method] = {
            "alignment": dev["alignment"], "matched": dev["matched"], "loss_rel": dev["loss_rel"],
            "t": float(sgd.t[k]), "loss_sgd_ode": float(sgd.loss[k]), "loss_sim": float(traj.loss[k]),
            "growth_max_sgd_ode": float(g_ode.max()), "growth_max_sim": float(g_sim.max()),
            "growth_median_sgd_ode": float(np.median(g_ode)), "growth_median_sim": float(np.median(g_sim))}
    return out


def format_sgd_ode(summary: dict) -> str:
    """One line per online-SGD simulation: how far it is from the SGD ODE."""
    lines = []
    for method, v in summary["vs"].items():
        lines.append(f"{method} vs the online-SGD ODE (t ≤ {v['t']:g}): alignment {v['alignment']:.3g}, matched "
                     f"{v['matched']:.3g}, loss (rel) {v['loss_rel']:.3g}; at t = {v['t']:g}: loss sim "
                     f"{v['loss_sim']:.4g} / SGD ODE {v['loss_sgd_ode']:.4g}, norm growth max sim "
                     f"{v['growth_max_sim']:.3f} / SGD ODE {v['growth_max_sgd_ode']:.3f}, median sim "
                     f"{v['growth_median_sim']:.3f} / SGD ODE {v['growth_median_sgd_ode']:.3f}")
    return "\n".join(lines)


def run_simulation(V, W, V_star, W_star, method, **options) -> tuple[Trajectory, str | None]:
    """:func:`simulate`, returning (trajectory, error message or None); a diverged run's partial
    trajectory is returned with its message."""
    try:
        return simulate(V, W, V_star, W_star, method=method, **options), None
    except SolveError as err:
        return err.partial, str(err)


def compare_vectors(V, W, V_star, W_star, methods, *, lr, steps=None, t_end=None, batch=None, n=None,
                    seed=0, save_every=None, dtype="float64", gate="sigmoid", expert="he3", tol=0.05,
                    rtol=1e-10, atol=1e-12, progress=False, log=None, project=False, solver=None,
                    model_backend_name="pair", backend_options=None):
    """Run the ODE and each simulator in ``methods`` from (V, W); returns (ode, sims, rows).

    ``batch`` and ``n`` are passed to the methods that use them. ``rows`` holds one dict per
    method: the options, the deviations (:func:`deviations`), the status and ``agrees``. On Ctrl-C
    raises :class:`~flowmoe.errors.Interrupted` whose ``partial`` is (ode or None, sims, rows) with
    what was finished, the interrupted simulation's saves included (its row has status "interrupted").
    """
    if not methods:
        raise SpecError("method", f"give at least one of {list(METHODS)}")
    for method in methods:
        if method not in METHODS:
            raise SpecError("method", f"got {method!r}; allowed: {list(METHODS)}")
    opts, checked = {}, {}
    for method in methods:
        b = batch if method in USES_BATCH else None
        k = n if method in USES_SAMPLES else None
        checked[method] = check_options(method, lr, steps, t_end, b, k, seed, dtype, save_every)
        opts[method] = {"lr": lr, "steps": checked[method]["steps"], "seed": seed, "dtype": dtype, "batch": b,
                        "n": k, "save_every": checked[method]["save_every"], "gate": gate, "expert": expert,
                        "project": project}
    first = checked[methods[0]]
    times = save_times(first["lr"], first["steps"], first["save_every"])
    log = log or (lambda msg: None)
    ode, sims, rows = None, {}, []

    def add(method, traj, error, status=None):
        sims[method] = traj
        dev = deviations(ode, traj)
        row = {"method": method, "lr": float(lr), "batch": opts[method]["batch"], "n": opts[method]["n"],
               "seed": seed, "dtype": dtype, "project": project, "steps": traj.provenance.simulation["steps"],
               "status": status or traj.provenance.status, "error": error,
               "wall_time_s": traj.provenance.stats.get("wall_time_s"), **dev}
        row["agrees"] = bool(agrees(dev, tol)) and error is None and row["status"] == "complete"
        row["loss_agrees"] = bool(loss_agrees(dev, tol))
        rows.append(row)

    try:
        log(f"ODE to t = {times[-1]:g} at {len(times)} times")
        t0 = time.perf_counter()
        ode = ode_at(V, W, V_star, W_star, times, gate, expert, rtol, atol, solver=solver,
                     model_backend_name=model_backend_name, backend_options=backend_options)
        ode = ode.with_provenance(stats={**ode.provenance.stats, "wall_time_s": time.perf_counter() - t0})
        for method in methods:
            log(f"simulating {method} (lr = {lr:g}, {first['steps']} steps)")
            try:
                traj, error = run_simulation(V, W, V_star, W_star, method, progress=progress, **opts[method])
            except Interrupted as err:  # keep the saves this simulation made
                if err.partial is not None:
                    add(method, err.partial, str(err), "interrupted")
                raise
            add(method, traj, error)
    except KeyboardInterrupt:
        done = (["ODE"] if ode is not None else []) + list(sims)
        raise Interrupted(f"finished or partial: {', '.join(done) or 'nothing'}",
                          partial=(ode, sims, rows)) from None
    return ode, sims, rows


# --- outputs ----------------------------------------------------------------------------------


def format_table(rows, tol: float) -> str:
    """The deviation table as Markdown (each verdict column names its criterion; key: :func:`deviations_markdown`)."""
    head = ("| method | lr | batch | n | alignment | matched | loss (abs) | loss (rel) | norm growth (×) "
            "| T₁ per pair, ODE | T₁ per pair, sim | wall (s) | status "
            f"| agrees (alignment, matched ≤ {tol:g}) | loss ok (rel ≤ {tol:g}) |")
    lines = [head, "|" + "---|" * 15]
    for r in rows:
        lines.append(f"| {r['method']} | {r['lr']:g} | {_dash(r['batch'])} | {_dash(r['n'])} | "
                     f"{r['alignment']:.3g} | {r['matched']:.3g} | {r['loss_abs']:.3g} | {r['loss_rel']:.3g} | "
                     f"{r['norm_growth']:.3g} | {_fmt(r['T1_per_pair_ode'])} | {_fmt(r['T1_per_pair_sim'])} | "
                     f"{_wall(r['wall_time_s'])} | {r['status']} | {'yes' if r['agrees'] else 'no'} | "
                     f"{'yes' if r.get('loss_agrees') else 'no'} |")
    return "\n".join(lines)


TABLE_KEY = """Key (every deviation is the maximum over the saved times both runs share, t = lr × steps):

- **alignment** — teacher-wise best alignments: for each teacher j, max over students i of the router
  alignment ⟨v̄_i, v⋆_j⟩ and of the expert alignment ⟨w̄_i, w⋆_j⟩, sorted over teachers; the larger of
  the router and expert deviations |simulation − ODE|. Does not depend on how students are labelled.
- **matched** — the same for the matched pairs' own alignments (greedy matching of the ODE at t = 0).
- **loss (abs)**, **loss (rel)** — |L_sim − L_ode| and |L_sim − L_ode| / L_ode (exact population losses).
- **norm growth (×)** — the largest ratio ‖u(t)‖ / ‖u(0)‖ over the students' router and expert vectors
  in the simulation (1 = no growth; the ODE keeps the norms fixed).
- **T₁ per pair** — the time both alignments of a matched pair reach the threshold, ODE and simulation (— : not reached).
- **status** — complete, diverged (a norm or a parameter blew up) or interrupted (Ctrl-C).
- **agrees**, **loss ok** — {criteria}.
"""


def deviations_markdown(rows, tol: float, command: str | None = None) -> str:
    """deviations.md: the command that made it, the table and its key."""
    lines = ["# flowmoe compare: deviations from the ODE", ""]
    if command:
        lines += [f"command: `{command}`", ""]
    lines += [format_table(rows, tol), "", TABLE_KEY.format(criteria=CRITERIA_TEXT.format(tol=tol))]
    return "\n".join(lines)


def _wall(x):
    return "—" if x is None else f"{x:.1f}"


def _dash(x):
    return "—" if x is None else str(x)


def _fmt(xs):
    return " / ".join("—" if x is None else f"{x:.2f}" for x in xs)


def overlay_title(spec: dict, rows) -> str:
    """Title of the overlay figure from the spec (as a dict) and the rows of summary.json."""
    m = spec["model"]
    return (f"{spec['name']}: m*={m['m_star']}, m={m['m']}, d={m['d']}; ODE (solid) vs "
            + ", ".join(("projected " if r.get("project") else "") + f"{r['method']} (lr={r['lr']:g}"
                        + (f", B={r['batch']}" if r["batch"] else "") + (f", n={r['n']}" if r["n"] else "") + ")"
                        for r in rows))


def compare_job(spec, out, methods, *, lr, t_end=None, steps=None, batch=None, n=None, seed=0,
                save_every=None, dtype="float64", tol=0.05, figure=None, progress=True, log=None,
                project=False, command: str | None = None, sgd_ode: bool = False) -> dict:
    """``flowmoe compare``: ODE and simulators from the spec's start; write results into ``out``.

    Writes ``ode.npz``, ``sim-METHOD.npz``, ``deviations.md``, ``summary.json`` and
    ``compare.png`` (+ .svg); also the figure at ``figure`` if given. ``command`` (the command
    line that made it) is written into deviations.md and summary.json. ``sgd_ode``: also integrate
    the online-SGD ODE with the same lr and batch (``sgd-ode.npz``), overlay it, and compare each
    online-SGD simulation with it (``summary.json["sgd_ode"]``). On Ctrl-C the finished
    parts are written, summary.json has ``"status": "interrupted"``, and
    :class:`~flowmoe.errors.Interrupted` is raised again.
    """
    from .init import initial_state
    from .run import conventions, library_versions

    out = check_out_dir(out)
    m = spec.model
    state = initial_state(m)
    if state.vectors is None:
        raise SpecError("init.sampler", "a comparison with a simulation in R^d needs init.sampler = 'vectors'")
    V, W, Vs, Ws = state.vectors
    if t_end is None and steps is None:
        t_end = spec.solver.t_end
    status, interrupted = "complete", None
    try:
        ode, sims, rows = compare_vectors(V, W, Vs, Ws, methods, lr=lr, steps=steps, t_end=t_end, batch=batch,
                                          n=n, seed=seed, save_every=save_every, dtype=dtype, gate=m.gate,
                                          expert=m.expert, tol=tol, progress=progress, log=log, project=project,
                                          solver=spec.solver, model_backend_name=m.backend,
                                          backend_options=spec.backend_options)
    except Interrupted as err:
        (ode, sims, rows), status, interrupted = err.partial, "interrupted", err
    sgd, sgd_record = None, None
    if sgd_ode and interrupted is None:
        if batch is None:
            raise SpecError("batch", "the online-SGD ODE needs a batch size")
        (log or (lambda msg: None))(f"online-SGD ODE (lr = {lr:g}, batch = {batch}) at {len(ode.t)} times")
        t0 = time.perf_counter()
        sgd = sgd_ode_at(V, W, Vs, Ws, ode.t, lr, batch, m.gate, m.expert, solver=spec.solver,
                         model_backend_name=m.backend, backend_options=spec.backend_options, dynamics=spec.dynamics)
        sgd_record = {**sgd_ode_summary(sgd, sims), "wall_time_s": time.perf_counter() - t0,
                      "dynamics": list(sgd.provenance.dynamics)}
    files = []
    if ode is not None:
        ode = ode.with_provenance(spec=spec.to_dict())
        ode.save(out / "ode.npz")
        files.append("ode.npz")
    for method, traj in sims.items():
        traj.with_provenance(spec=spec.to_dict()).save(out / f"sim-{method}.npz")
        files.append(f"sim-{method}.npz")
    if sgd is not None:
        sgd.with_provenance(spec=spec.to_dict()).save(out / "sgd-ode.npz")
        files.append("sgd-ode.npz")
    if rows:
        text = deviations_markdown(rows, tol, command=command)
        if sgd_record is not None:
            text += "\n## Against the online-SGD ODE\n\n" + format_sgd_ode(sgd_record) + "\n"
        (out / "deviations.md").write_text(text)
        files.append("deviations.md")
        title = overlay_title(spec.to_dict(), rows)
        files += [p.name for p in overlay_figure(ode, sims, out / "compare", title=title, sgd_ode=sgd)]
        if figure:
            files += [str(p) for p in overlay_figure(ode, sims, figure, title=title, sgd_ode=sgd)]
    record = {"status": status, "spec": spec.to_dict(), "conventions": conventions(spec),
              "versions": library_versions(), "command": command, "tol": tol,
              "criteria": CRITERIA_TEXT.format(tol=tol),
              "ode_wall_time_s": None if ode is None else ode.provenance.stats.get("wall_time_s"),
              "ode_solver": {} if ode is None else {**ode.provenance.solver, **ode.provenance.stats},
              "rows": rows, "sgd_ode": sgd_record, "files": files + ["summary.json"]}
    write_json(out / "summary.json", record)
    if interrupted is not None:
        raise Interrupted(f"{interrupted}; wrote {out}/: {', '.join(record['files'])}", partial=record)
    return record


# --- convergence study ------------------------------------------------------------------------


def study_vectors(V, W, V_star, W_star, *, t_end, lrs, lr_sgd, batches, seeds=(0,), n_save=100,
                  metric="alignment", gate="sigmoid", expert="he3", rtol=1e-10, atol=1e-12, log=None) -> dict:
    """Deviation against lr (population GD) and against batch size (online SGD at ``lr_sgd``).

    Saves every ≈ t_end/n_save in flow time. For SGD, the deviation from the ODE and from
    population GD at the same lr (its O(lr) bias removed), averaged over ``seeds``.
    """
    if metric not in METRICS:
        raise SpecError("metric", f"got {metric!r}; allowed: {list(METRICS)}")
    log = log or (lambda msg: None)
    cache = {}

    def reference(lr):
        """(ODE, population GD) on the save grid of step lr."""
        if lr not in cache:
            every = max(1, int(round(t_end / n_save / lr)))
            opts = check_options("population-gd", lr, t_end=t_end, save_every=every)
            times = save_times(lr, opts["steps"], every)
            ode = ode_at(V, W, V_star, W_star, times, gate, expert, rtol, atol)
            pop, _ = run_simulation(V, W, V_star, W_star, "population-gd", lr=lr, t_end=t_end, save_every=every,
                                    gate=gate, expert=expert)
            cache[lr] = (ode, pop, every)
        return cache[lr]

    gd_dev = []
    for lr in lrs:
        ode, pop, _ = reference(lr)
        gd_dev.append(deviations(ode, pop)[metric])
        log(f"population GD lr = {lr:g}: {metric} deviation {gd_dev[-1]:.3g}")
    ode, pop, every = reference(lr_sgd)
    sgd_ode, sgd_pop = [], []
    for B in batches:
        a, b = [], []
        for seed in seeds:
            traj, _ = run_simulation(V, W, V_star, W_star, "online-sgd", lr=lr_sgd, t_end=t_end, batch=B,
                                     seed=seed, save_every=every, gate=gate, expert=expert)
            a.append(deviations(ode, traj)[metric])
            b.append(deviations(pop, traj)[metric])
        sgd_ode.append(float(np.mean(a)))
        sgd_pop.append(float(np.mean(b)))
        log(f"online SGD lr = {lr_sgd:g}, B = {B}: {metric} deviation from ODE {sgd_ode[-1]:.3g}, "
            f"from population GD {sgd_pop[-1]:.3g}")
    return {"metric": metric, "t_end": t_end, "lrs": list(map(float, lrs)), "gd_deviation": gd_dev,
            "gd_slope": fit_slope(lrs, gd_dev), "lr_sgd": float(lr_sgd), "batches": list(map(int, batches)),
            "seeds": list(seeds), "sgd_deviation_ode": sgd_ode, "sgd_deviation_pop": sgd_pop,
            "sgd_slope_ode": fit_slope(batches, sgd_ode), "sgd_slope_pop": fit_slope(batches, sgd_pop)}


def study_title(spec: dict) -> str:
    """Title of the study figure from the spec (as a dict, as in study.json)."""
    m = spec["model"]
    return f"{spec['name']}: m*={m['m_star']}, m={m['m']}, d={m['d']}"


def study_job(spec, out, *, t_end, lr, batch, lr_factors=(1, 0.5, 0.25, 0.125), batch_factors=(1, 4, 16, 64),
              seeds=(0,), metric="alignment", log=None) -> dict:
    from .init import initial_state

    state = initial_state(spec.model)
    if state.vectors is None:
        raise SpecError("init.sampler", "the study needs init.sampler = 'vectors'")
    m = spec.model
    lrs = [lr * f for f in lr_factors]
    batches = [max(1, int(round(batch * f))) for f in batch_factors]
    res = study_vectors(*state.vectors, t_end=t_end, lrs=lrs, lr_sgd=lr, batches=batches, seeds=seeds,
                        metric=metric, gate=m.gate, expert=m.expert, log=log)
    out = check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    figs = study_figure(res, out / "study", title=study_title(spec.to_dict()))
    res["spec"] = spec.to_dict()
    res["files"] = [str(p) for p in figs]
    write_json(out / "study.json", res)
    return res


# --- command line -----------------------------------------------------------------------------
