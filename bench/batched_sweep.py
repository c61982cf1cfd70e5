"""Benchmark: a sweep of seeds as a process pool against one vmapped solve (``executor="batched"``).

    python bench/batched_sweep.py [--seeds 16] [--t-end 100] [--workers 2] [--job flow|verify] [--repeats 1]

paper-fig1 (m⋆ = 5, m = 25, d = 1000), ``--seeds`` seeds to ``--t-end`` (501 saved times), each way
from an empty cache, compile included (as a sweep pays it): ``executor="local"`` with ``--workers``
spawned processes (each compiles once) and ``executor="batched"`` (this process, one compile of
the vmapped solver, up to 16 members per solve; a batch runs as long as its slowest member).
``--job flow`` integrates and records T₁ and the final loss; ``--job verify`` is the job of
``flowmoe verify`` (phases and their refined crossings, no fine-tuning). Printed: wall times
(median of ``--repeats``), their ratio, and the records' differences (T₁ relative, final loss absolute).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FlowJob:
    """Integrate over the spec's save times; record T₁ and the final loss."""

    def describe(self):
        return {"bench": "flow"}

    def batch_times(self, spec):
        return spec.solver.times()

    def __call__(self, spec):
        from flowmoe.observables import summarize
        from flowmoe.sweep import integrate_spec

        traj = integrate_spec(spec)
        return {"T1": summarize(traj, 0.9, 0.05)["T1"], "loss": float(traj.loss[-1])}, None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--t-end", type=float, default=100.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--job", choices=["flow", "verify"], default="flow")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    import flowmoe
    from flowmoe.sweep import run_sweep, seeds_of
    from flowmoe.verify import VerifyJob

    spec = flowmoe.load_preset("paper-fig1").with_overrides({"solver.t_end": args.t_end, "solver.n_save": 501})
    specs = seeds_of(spec, range(args.seeds))
    job = FlowJob() if args.job == "flow" else VerifyJob(finetune_t_end=0.0)
    walls = {"local": [], "batched": []}
    records = {}
    for _ in range(args.repeats):
        for executor in ("local", "batched"):
            workers = args.workers if executor == "local" else 1
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                res = run_sweep(specs, job, Path(tmp), workers=workers, progress=False, executor=executor)
                walls[executor].append(time.perf_counter() - t)
            records[executor] = res.records
            if res.failed:
                print(f"{executor}: {len(res.failed)} members failed", file=sys.stderr)
    pool, batched = statistics.median(walls["local"]), statistics.median(walls["batched"])
    print(f"paper-fig1, {args.seeds} seeds to t = {args.t_end:g}, job {args.job}, compile included, "
          f"median of {args.repeats}")
    print(f"process pool ({args.workers} workers): {pool:.1f} s")
    print(f"batched (vmap, 1 process):     {batched:.1f} s   batched/pool {batched / pool:.2f}")
    if args.job == "flow":  # T₁ relative; the final loss absolute (it reaches ~1e-14, where relative means nothing)
        t1 = [abs(a.data["T1"] - b.data["T1"]) / abs(a.data["T1"]) for a, b in zip(records["local"], records["batched"])
              if a.data["T1"] is not None and b.data["T1"] is not None]
        same = all((a.data["T1"] is None) == (b.data["T1"] is None) for a, b in zip(records["local"], records["batched"]))
        loss = [abs(a.data["loss"] - b.data["loss"]) for a, b in zip(records["local"], records["batched"])]
        print(f"batched vs pool: T1 reached by the same members: {same}; largest relative T1 difference "
              f"{max(t1, default=0.0):.1e}; largest absolute final-loss difference {max(loss):.1e}")

if __name__ == "__main__":
    main()
