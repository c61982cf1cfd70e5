"""Sweeps over seeds (and other spec fields): parallel, cached per run, resumable, with progress.

A sweep runs one *job* on each member spec. A job is a picklable object with

1. ``describe() -> dict``: its options (JSON), part of every member's cache key;
2. ``__call__(spec) -> (record, trajectory | None)``: ``record`` a JSON-serialisable dict, the
   trajectory optional (saved beside it when the job returns one).

Cache: ``FOLDER/<key>.json`` (+ ``FOLDER/<key>.npz``) with key = SHA-256 of the member's full spec
(seed included), the job's options, the flowmoe version and :data:`CACHE_VERSION`. Files are
written to a temporary name and renamed, the JSON last, so an interrupted sweep leaves only
complete runs; a restart loads every cached run and computes only the rest. A member whose solve
fails (:class:`~flowmoe.errors.SolveError`, :class:`~flowmoe.errors.SpecError`) is recorded as failed
with its message (and cached: the same spec fails the same way; ``retry_failed=True`` recomputes
it); any other exception is recorded as failed but not cached. Either way the other members go on.

Parallelism: ``workers > 1`` runs members in a pool of processes (spawn; each process compiles the
model once); ``executor="dask"`` runs them on a Dask cluster instead (a local one of ``workers``
processes, or a running one given by its scheduler address: :mod:`flowmoe.dask_executor`), with the
same cache. Every executor goes through one seam (:class:`LocalPool`'s four methods), so the cache,
resume and failure handling here serve them all. Members of one sweep share a model structure, so
within a process one compile serves them all; :func:`integrate_spec` integrates in chunks of
:data:`flowmoe.phases.N_FINE` saved times so that the same compiled solver also serves the
re-integrated brackets of :mod:`flowmoe.phases`.
``executor="batched"`` integrates the members of one structure together, one ``jax.vmap``ped
diffrax solve per chunk (:func:`integrate_specs`): every member keeps its own adaptive steps, but a
batch runs as long as its slowest member, and a stopping rule (``stop``) is applied afterwards at
the same chunk ends, so a batch always integrates to the end of its save times. A job that supports
it has a third method,

3. ``batch_times(spec) -> ts``: the save times of its first ``integrate_spec(spec, ts)`` call.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import Interrupted, SolveError, SpecError
from .phases import N_FINE, PhaseReport, to_json
from .spec import STEADY_CRITERION, STIFF_SOLVER, RunSpec
from .trajectory import Trajectory

CACHE_VERSION = 1


# Integration of one spec, in chunks, with an optional stopping rule ------------------------
def integrate_spec(spec: RunSpec, ts=None, stop=None, chunk: int = N_FINE - 1, state=None,
                   progress=None) -> Trajectory:
    """Gradient flow of ``spec`` from its initial state, saved at ``ts`` (default ``spec.solver.times()``).

    Integrates ``chunk`` saved intervals per solver call (the last call padded with extra save
    points inside its last interval, dropped afterwards, so every call has the same shape: one
    compile). ``stop(traj) -> bool`` is asked after each chunk with the trajectory so far; True ends
    the integration there (``provenance.status == "stopped-early"``). On failure raises SolveError whose
    ``partial`` is the Trajectory up to the last good saved time (or None); on Ctrl-C raises
    :class:`~flowmoe.errors.Interrupted` whose ``partial`` has ``status="interrupted"``.
    ``progress(k, n)`` (optional) is called after each chunk with the saved times done.

    Stiff tails (``solver.stiff = "switch"``, the default with the diffrax backend): a chunk that
    needs more than ``solver.stiff_steps`` steps, or whose step size collapses, is integrated again
    from its start with scipy's LSODA (stiffness-detecting: implicit BDF when stiff), and so is the rest of the run; ``provenance.notes["stiff_switch"]`` says at which
    time and why. (High-degree experts near the sink, e.g. He₅ with rates ≈ −350, make an explicit
    method crawl at its stability limit.)
    """
    from .api import ode_provenance
    from .init import initial_state
    from .ode import integrate, loss_along, terms_for, vector_field

    mod, sol = spec.model, spec.solver
    ts = np.asarray(sol.times() if ts is None else ts, dtype=np.float64)
    if state is None:
        done = _PREFETCHED.pop(_prefetch_key(spec, ts, chunk), None)
        if done is not None:
            return _replay(*done, stop=stop, progress=progress)
    backend = spec.backend()
    vf = vector_field(backend, terms_for(sol, spec.dynamics, backend=backend, d=mod.d))
    state = initial_state(mod) if state is None else state
    prov = ode_provenance(vf.backend, vf, sol).replace(spec=spec.to_dict())
    stats = {"steps": 0, "rejected_steps": 0, "wall_time_s": 0.0}
    active, switch = sol, None
    if sol.backend == "diffrax" and sol.stiff == "switch":
        active = dataclasses.replace(sol, max_steps=min(sol.max_steps, sol.stiff_steps))
    grams, norms, losses = [], [], []
    G, r = state.gram, state.norms
    k, n = 0, len(ts)

    def current(**changes):
        if not grams:
            return None
        gram = np.concatenate(grams)
        out = prov.replace(stats=dict(stats), **changes)
        if switch is not None:
            out = out.annotate(stiff_switch=switch)
        return Trajectory(ts[:len(gram)], gram, np.concatenate(norms), np.concatenate(losses), mod.m, mod.m_star,
                          out, vf.layout)

    try:
        while k < n - 1:
            seg, keep = _segment(ts, k, chunk)
            try:
                try:
                    g, rr, info = integrate(vf, G, r, seg, active)
                except SolveError as err:
                    # Only the stiffness cap switches; the user's own max_steps is a budget that stops the run.
                    if active.backend != "diffrax" or active.max_steps >= sol.max_steps or err.reason != "budget":
                        raise
                    for key in stats:
                        stats[key] += err.partial[3].get(key, 0)
                    backend, method = STIFF_SOLVER
                    active = dataclasses.replace(sol, backend=backend, method=method)
                    switch = {"t": float(seg[0]), "from": sol.method, "to": f"{backend} {method}",
                              "reason": f"{sol.method} needed more than solver.stiff_steps = {sol.stiff_steps} steps "
                                        f"for t in [{seg[0]:.6g}, {seg[-1]:.6g}] (or its step size collapsed)"}
                    g, rr, info = integrate(vf, G, r, seg, active)
            except SolveError as err:
                pts, pg, pr, info = err.partial
                for key in stats:
                    stats[key] += info.get(key, 0)
                first = 0 if k == 0 else 1
                kept = sorted(set(range(first, len(pts))) & set(keep.tolist()))
                if kept:  # the saved times this chunk reached before it stopped
                    grams.append(np.asarray(pg)[kept])
                    norms.append(np.asarray(pr)[kept])
                    losses.append(loss_along(vf.backend, np.asarray(pg))[kept])
                partial = current(status="partial", error=str(err))
                if partial is not None and len(partial) < 2:
                    partial = None
                raise SolveError(str(err), partial=partial) from None
            for key in stats:
                stats[key] += info.get(key, 0)
            loss = loss_along(vf.backend, g)  # shape (chunk + 1, ...): one compile
            first = 0 if k == 0 else 1  # the first chunk keeps its start, later ones start where the last ended
            grams.append(g[keep][first:])
            norms.append(rr[keep][first:])
            losses.append(loss[keep][first:])
            G, r = g[-1], rr[-1]
            k += len(keep) - 1
            if progress is not None:
                progress(k, n - 1)
            if stop is not None and k < n - 1 and stop(current()):
                return current(status="stopped-early")
            if sol.steady_tol > 0 and k < n - 1:
                speed = state_speed(vf, G, r)
                if speed < sol.steady_tol:
                    steady = {"t": float(ts[k]), "speed": speed, "tol": sol.steady_tol, "criterion": STEADY_CRITERION}
                    return current(status="stopped-early").annotate(steady_state=steady)
    except KeyboardInterrupt:
        raise Interrupted("interrupted", partial=current(status="interrupted")) from None
    return current()


def _segment(ts, k: int, chunk: int):
    """The save times of the solver call that starts at ts[k] (``chunk`` intervals; the last call is
    padded with extra points inside its last interval) and the indices of ``ts`` among them."""
    seg = ts[k:k + chunk + 1]
    keep = np.arange(len(seg))
    if len(seg) < chunk + 1:  # pad inside the last interval
        extra = np.linspace(seg[-2], seg[-1], chunk + 1 - len(seg) + 2)[1:-1]
        full = np.concatenate([seg[:-1], extra, seg[-1:]])
        keep = np.concatenate([np.arange(len(seg) - 1), [len(full) - 1]])
        seg = full
    return seg, keep


# Batched integration: many members in one vmapped solve ------------------------------------
BATCH_SIZE = 16
"""Members per vmapped solve (memory: each holds its saved Gram matrices)."""

_PREFETCHED: dict = {}
"""Trajectories computed by :func:`prefetch` for the members about to run, keyed by
:func:`_prefetch_key`; :func:`integrate_spec` takes its member's entry (once) instead of solving."""


def _prefetch_key(spec: RunSpec, ts, chunk: int) -> str:
    payload = json.dumps(spec.to_dict(), sort_keys=True, default=str).encode() + np.asarray(ts, np.float64).tobytes()
    return hashlib.sha256(payload + str(int(chunk)).encode()).hexdigest()


def batchable(spec: RunSpec) -> bool:
    """Whether a member can join a vmapped batch: diffrax, no steady-state stop (its chunk-wise rule
    needs the state between chunks; such members run alone), gradient-flow dynamics (the online-SGD
    term is 500× costlier per evaluation and depends on d: it runs alone)."""
    return spec.solver.backend == "diffrax" and spec.solver.steady_tol == 0 and not spec.dynamics.online_sgd


def _batch_group(spec: RunSpec, ts) -> tuple:
    from .ode import terms_for

    sol = spec.solver
    return (spec.backend().key, tuple(t.key for t in terms_for(sol)), json.dumps(sol.to_dict(), sort_keys=True),
            np.asarray(ts, np.float64).tobytes())


def integrate_specs(specs, ts, chunk: int = N_FINE - 1) -> list:
    """:func:`integrate_spec` of several members that share a structure, solver and save times, as
    one ``vmap``ped diffrax solve per chunk (the same chunks, so each member takes the steps it takes
    alone). Returns, per member, ``(trajectory, chunk_ends, chunk_stats)`` for :func:`_replay`, or a
    one-line reason (str) when the member stopped in the batch (max steps, the stiffness cap
    ``solver.stiff_steps``, a non-finite state): run it alone with :func:`integrate_spec` (stiff
    switch, partial results, the error). Members that stop are carried on with a live member's state
    (and ignored) so that the batch keeps its shape. A batch runs as long as its slowest member.
    """
    from .api import ode_provenance
    from .init import initial_state
    from .ode import integrate_batch, loss_along, terms_for, vector_field

    spec0 = specs[0]
    sol = spec0.solver
    vf = vector_field(spec0.backend(), terms_for(sol))
    active = sol
    if sol.stiff == "switch":
        active = dataclasses.replace(sol, max_steps=min(sol.max_steps, sol.stiff_steps))
    ts = np.asarray(ts, dtype=np.float64)
    states = [initial_state(s.model) for s in specs]
    G = np.stack([st.gram for st in states])
    r = np.stack([st.norms for st in states])
    B, n = len(specs), len(ts)
    alive = np.ones(B, dtype=bool)
    why = [""] * B
    parts = [([], [], []) for _ in range(B)]
    totals = [{"steps": 0, "rejected_steps": 0, "wall_time_s": 0.0} for _ in range(B)]
    ends, chunk_stats = [], [[] for _ in range(B)]
    k = 0
    while k < n - 1 and alive.any():
        seg, keep = _segment(ts, k, chunk)
        g, rr, ok, info = integrate_batch(vf, G, r, seg, active)
        for b in np.flatnonzero(alive & ~ok):
            why[b] = (f"stopped in the batch at t ≈ {seg[0]:.6g} (max_steps {active.max_steps} reached, "
                      "step size collapsed or non-finite state)")
        alive &= ok
        if not alive.any():
            break
        N = g.shape[-1]
        loss = loss_along(vf.backend, g.reshape(-1, N, N)).reshape(B, len(seg))
        first = 0 if k == 0 else 1
        for b in np.flatnonzero(alive):
            parts[b][0].append(g[b][keep][first:])
            parts[b][1].append(rr[b][keep][first:])
            parts[b][2].append(loss[b][keep][first:])
            for key in totals[b]:
                totals[b][key] += info[b].get(key, 0)
            chunk_stats[b].append(dict(totals[b]))
        live = int(np.flatnonzero(alive)[0])
        G = np.where(alive[:, None, None], g[:, -1], g[live, -1])
        r = np.where(alive[:, None], rr[:, -1], rr[live, -1])
        k += len(keep) - 1
        ends.append(k)
    out = []
    for b, spec in enumerate(specs):
        if not alive[b]:
            out.append(why[b])
            continue
        prov = ode_provenance(vf.backend, vf, sol).replace(spec=spec.to_dict(), stats=dict(totals[b]))
        prov = prov.annotate(batched={"members": B, "note": "one vmapped diffrax solve per chunk; wall time is the batch's"})
        gram, norms, losses = (np.concatenate(x) for x in parts[b])
        traj = Trajectory(ts, gram, norms, losses, spec.model.m, spec.model.m_star, prov, vf.layout)
        out.append((traj, list(ends), chunk_stats[b]))
    return out


def _replay(traj: Trajectory, ends, chunk_stats, stop=None, progress=None) -> Trajectory:
    """A batched trajectory as :func:`integrate_spec` would have returned it: ``progress`` after each
    chunk, and ``stop`` asked at the same chunk ends (True: the trajectory up to there, with the
    statistics of the chunks done, ``status = "stopped-early"``)."""
    n = len(traj.t)
    for end, stats in zip(ends, chunk_stats):
        if progress is not None:
            progress(end, n - 1)
        if stop is not None and end < n - 1:
            part = Trajectory(traj.t[:end + 1], traj.gram[:end + 1], traj.norms[:end + 1], traj.loss[:end + 1],
                              traj.m, traj.m_star, traj.provenance.replace(stats=dict(stats)), traj.layout)
            if stop(part):
                return part.with_provenance(status="stopped-early")
    return traj


def prefetch(job, specs, chunk: int = N_FINE - 1, batch_size: int = BATCH_SIZE) -> dict:
    """Integrate the members of ``specs`` in vmapped batches (grouped by structure, solver and the save
    times ``job.batch_times(spec)``) and keep the trajectories for the job's own
    :func:`integrate_spec` calls. Returns {index in specs: reason} for the members that must run
    alone (stopped in their batch, not batchable)."""
    alone, groups = {}, {}
    for i, spec in enumerate(specs):
        if not batchable(spec):
            alone[i] = "not batchable (scipy backend, solver.steady_tol > 0 or dynamics.method = online-sgd)"
            continue
        ts = np.asarray(job.batch_times(spec), dtype=np.float64)
        groups.setdefault(_batch_group(spec, ts), []).append((i, ts))
    for members in groups.values():
        for start in range(0, len(members), batch_size):
            batch = members[start:start + batch_size]
            ts = batch[0][1]
            results = integrate_specs([specs[i] for i, _ in batch], ts, chunk)
            for (i, _), res in zip(batch, results):
                if isinstance(res, str):
                    alone[i] = res
                else:
                    _PREFETCHED[_prefetch_key(specs[i], ts, chunk)] = res
    return alone


def state_speed(vf, G, r) -> float:
    """max over the entries of |dG/dt| and |dr/dt| at (G, r): the steady-state measure of ``solver.steady_tol``."""
    dG, dr = _gram_rhs(vf)(np.asarray(G), np.asarray(r))
    dG, dr = np.asarray(dG), np.asarray(dr)
    return float(max(np.max(np.abs(dG)), np.max(np.abs(dr)) if dr.size else 0.0))


@functools.lru_cache(maxsize=None)
def _gram_rhs(vf):
    import jax

    rhs = vf.rhs("gram")
    return jax.jit(lambda G, r: rhs(0.0, (G, r), None))


# Cache keys and records ------------------------------------------------------------------
def member_key(spec: RunSpec, job) -> str:
    from . import __version__

    payload = {"spec": spec.to_dict(), "job": job.describe(), "job_type": type(job).__name__,
               "cache_version": CACHE_VERSION, "flowmoe": __version__}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


@dataclass
class RunRecord:
    """One member of a sweep: its spec and seed, status ("ok"/"failed"), error message, the job's
    record (``data``), where it is cached, and whether it was loaded from the cache."""

    key: str
    spec: RunSpec
    status: str
    error: str | None
    data: dict
    folder: Path
    cached: bool = False
    wall_s: float = 0.0

    @property
    def seed(self) -> int:
        return self.spec.model.init.seed

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def phases(self) -> PhaseReport | None:
        """The :class:`~flowmoe.phases.PhaseReport` of the run, if the job wrote one (``data["phases"]``)."""
        if "_phases" not in self.__dict__:
            raw = self.data.get("phases")
            self.__dict__["_phases"] = PhaseReport.from_dict(raw) if raw else None
        return self.__dict__["_phases"]

    def trajectory(self) -> Trajectory | None:
        """The saved trajectory, if the job kept one."""
        path = self.folder / f"{self.key}.npz"
        return Trajectory.load(path) if path.is_file() else None

    def to_json(self) -> dict:
        return {"key": self.key, "seed": self.seed, "spec": self.spec.to_dict(), "status": self.status,
                "error": self.error, "wall_s": self.wall_s, "data": to_json(self.data)}

    @classmethod
    def from_json(cls, raw: dict, folder: Path, cached: bool) -> RunRecord:
        return cls(raw["key"], RunSpec.from_dict(raw["spec"]), raw["status"], raw.get("error"), raw.get("data") or {},
                   Path(folder), cached, float(raw.get("wall_s", 0.0)))


def execute(job, spec_dict: dict, key: str, folder: str) -> dict:
    """Run one member and write its cache files (runs inside a worker process too)."""
    folder = Path(folder)
    spec = RunSpec.from_dict(spec_dict)
    t0 = time.perf_counter()
    cache = True
    try:
        data, traj = job(spec)
        status, error = "ok", None
    except (SolveError, SpecError) as err:
        data, traj, status, error = {}, None, "failed", f"{type(err).__name__}: {err}"
    except Exception as err:  # noqa: BLE001 -- a bug or an unexpected failure: record it, do not cache it
        data, traj, status = {}, None, "failed"
        error = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=6)}"
        cache = False
    raw = {"key": key, "seed": spec.model.init.seed, "spec": spec.to_dict(), "status": status, "error": error,
           "wall_s": time.perf_counter() - t0, "data": to_json(data)}
    if cache:
        folder.mkdir(parents=True, exist_ok=True)
        if traj is not None:
            tmp = folder / f"{key}.tmp{os.getpid()}.npz"
            traj.save(tmp)
            os.replace(tmp, folder / f"{key}.npz")
        tmp = folder / f"{key}.tmp{os.getpid()}.json"
        tmp.write_text(json.dumps(raw, indent=1))
        os.replace(tmp, folder / f"{key}.json")  # written last: its presence marks a complete run
    return raw


@dataclass
class SweepResult:
    records: list
    computed: int = 0
    loaded: int = 0
    wall_s: float = 0.0
    keys_computed: list = field(default_factory=list)
    alone: dict = field(default_factory=dict)  # executor "batched": index in specs → why it ran alone


    @property
    def failed(self) -> list:
        return [r for r in self.records if not r.ok]


# One process per core: keep XLA from starting a thread pool per process.
XLA_SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
EXECUTORS = ("local", "dask", "batched")


def _worker_init():
    os.environ.setdefault("XLA_FLAGS", XLA_SINGLE_THREAD)


class LocalPool:
    """The local executor: a spawn process pool (submit / as_completed / drain / close).

    The seam of :func:`run_sweep`: any object with these four methods runs members, e.g.
    :class:`flowmoe.dask_executor.DaskExecutor`; the cache and resume logic stays in run_sweep."""

    def __init__(self, workers: int):
        ctx = multiprocessing.get_context("spawn")
        self.pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init)

    def submit(self, fn, *args):
        return self.pool.submit(fn, *args)

    def as_completed(self, futures):
        return cf.as_completed(futures)

    def drain(self, futures) -> None:
        """Drop the members not started; those running finish and are cached."""
        self.pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        # After drain() this waits for nothing; (a `with` block would wait for every queued member
        # before an interruption reached drain()).
        self.pool.shutdown(wait=True)


def check_executor(executor, scheduler=None, workers: int = 1) -> None:
    """One-line SpecErrors for a bad ``executor``/``scheduler`` pair (before any member runs)."""
    if not isinstance(executor, str):
        missing = [m for m in ("submit", "as_completed", "drain", "close") if not hasattr(executor, m)]
        if missing:
            raise SpecError("executor", f"got {type(executor).__name__} without {missing}; allowed: "
                                        f"{', '.join(EXECUTORS)} or an object with "
                                        "submit/as_completed/drain/close")
        if scheduler:
            raise SpecError("scheduler", "only with executor 'dask'")
        return
    if executor not in EXECUTORS:
        raise SpecError("executor", f"got {executor!r}; allowed: {', '.join(EXECUTORS)}")
    if executor == "batched" and workers != 1:
        raise SpecError("workers", f"executor 'batched' runs its vmapped batches in this process; use 1 worker, got {workers}")
    if scheduler and executor != "dask":
        raise SpecError("scheduler", f"needs --executor dask (got --executor {executor}); without "
                                     "--scheduler, --executor dask starts a local cluster of --workers processes")
    if executor == "dask":
        from .dask_executor import import_distributed

        import_distributed()


def open_executor(executor, workers: int, scheduler=None):
    """The executor object for ``executor`` ("local", "dask" or an object, returned as it is)."""
    if not isinstance(executor, str):
        return executor
    if executor == "dask":
        from .dask_executor import DaskExecutor

        return DaskExecutor(workers=workers, scheduler=scheduler, xla_flags=XLA_SINGLE_THREAD)
    return LocalPool(workers)


def run_sweep(specs, job, folder, workers: int = 1, progress: bool = True, desc: str = "sweep",
              retry_failed: bool = False, on_result=None, executor="local", scheduler=None) -> SweepResult:
    """Run ``job`` on each spec, reusing ``folder``'s cache; returns records in the order of ``specs``.

    ``on_result(record)`` is called after each newly computed member (in the parent process).
    ``executor``: "local" (default: in this process when ``workers == 1``, else a spawn process pool of
    ``workers``), "batched" (in this process, ``workers == 1``: members that share a structure, solver
    and save times are integrated together, :data:`BATCH_SIZE` per ``vmap``ped diffrax solve, see
    :func:`prefetch`; the job then runs on each member as usual and its integrate_spec call takes the
    batched trajectory; a member that stops in its batch runs alone and ``result.alone`` says why;
    the job needs ``batch_times(spec)``), "dask" (a ``LocalCluster`` of ``workers`` processes, or the running cluster whose
    scheduler address is ``scheduler``; :mod:`flowmoe.dask_executor`) or an executor object (see
    :class:`LocalPool`). The cache, resume and failure handling are the same for all of them.
    """
    from tqdm.auto import tqdm

    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise SpecError("workers", f"must be an integer ≥ 1, got {workers!r}")
    check_executor(executor, scheduler, workers)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    keys = [member_key(s, job) for s in specs]
    records: dict[int, RunRecord] = {}
    todo = []
    for idx, (spec, key) in enumerate(zip(specs, keys)):
        path = folder / f"{key}.json"
        if path.is_file():
            try:
                rec = RunRecord.from_json(json.loads(path.read_text()), folder, cached=True)
                if rec.ok or not retry_failed:
                    records[idx] = rec
                    continue
            except (json.JSONDecodeError, KeyError, SpecError, TypeError):
                pass  # unreadable cache entry: compute again
        todo.append(idx)
    result = SweepResult([], loaded=len(records))
    bar = tqdm(total=len(specs), initial=len(records), desc=desc, disable=not progress, file=sys.stderr,
               unit="run", dynamic_ncols=True)

    def done(idx, raw):
        rec = RunRecord.from_json(raw, folder, cached=False)
        records[idx] = rec
        result.computed += 1
        result.keys_computed.append(rec.key)
        bar.update(1)
        if not rec.ok:
            bar.write(f"[flowmoe] member seed={rec.seed} failed: {rec.error.splitlines()[0]}")
        if on_result is not None:
            on_result(rec)

    ex = None
    try:
        if executor == "batched" and todo:
            if not callable(getattr(job, "batch_times", None)):
                raise SpecError("executor", f"'batched' needs a job with batch_times(spec); {type(job).__name__} has none")
            try:
                alone = prefetch(job, [specs[i] for i in todo])
                for j, why in alone.items():
                    result.alone[todo[j]] = why
                    bar.write(f"[flowmoe] member seed={specs[todo[j]].model.init.seed} runs alone: {why}")
                for idx in todo:
                    done(idx, execute(job, specs[idx].to_dict(), keys[idx], str(folder)))
            finally:
                _PREFETCHED.clear()
        elif executor in ("local", "batched") and (workers == 1 or len(todo) <= 1):
            for idx in todo:
                done(idx, execute(job, specs[idx].to_dict(), keys[idx], str(folder)))
        elif todo:
            ex = open_executor(executor, min(workers, len(todo)), scheduler)
            futures = {}
            try:
                for idx in todo:
                    futures[ex.submit(execute, job, specs[idx].to_dict(), keys[idx], str(folder))] = idx
                for fut in ex.as_completed(futures):
                    idx = futures[fut]
                    try:
                        raw = fut.result()
                    except Exception as err:  # noqa: BLE001 -- the worker process died
                        raw = {"key": keys[idx], "seed": specs[idx].model.init.seed, "spec": specs[idx].to_dict(),
                               "status": "failed", "error": f"worker failed: {type(err).__name__}: {err}",
                               "data": {}}
                    done(idx, raw)
            except BaseException:
                # Interrupted: drop the members not started; those running finish and are cached.
                ex.drain(list(futures))
                raise
    finally:
        if ex is not None:
            ex.close()
        bar.close()
    result.records = [records[i] for i in sorted(records)]
    result.wall_s = time.perf_counter() - t0
    return result


def seeds_of(spec: RunSpec, seeds) -> list[RunSpec]:
    """One spec per seed (``init.seed`` overridden)."""
    return [spec.with_overrides({"init.seed": int(s)}) for s in seeds]


def parse_seeds(text: str) -> list[int]:
    """"0-15", "0,3,7" or "0-3,9" → sorted unique seeds."""
    out = set()
    try:
        for part in str(text).split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part:
                a, b = part.split("-", 1)
                a, b = int(a), int(b)
                if b < a:
                    raise ValueError
                out.update(range(a, b + 1))
            else:
                out.add(int(part))
    except ValueError:
        raise SpecError("seeds", f"cannot read {text!r}; write e.g. 0-15 or 0,3,7 (non-negative integers)") from None
    if not out or min(out) < 0:
        raise SpecError("seeds", f"need at least one non-negative seed, got {text!r}")
    return sorted(out)
