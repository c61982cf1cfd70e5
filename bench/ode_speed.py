"""Benchmark: speed of the exact Gram ODE (issue 2). Prints medians of several runs.

    python bench/ode_speed.py [--repeats 5]

1. paper-fig1 to t = 100: compile time (fresh process each time) and solve time after compile;
2. cost per unit flow time and per accepted step at d = 10³ and d = 10⁶ (the Gram sampler draws
   G(0) without vectors in R^d), and their ratio: the cost of the ODE does not depend on d;
3. solve time for m ∈ {8, 16, 32, 64} with m⋆ = max(1, m/5) to t = 100;
4. the whole default `flowmoe run` (fresh process, wall clock).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, time, sys
t0 = time.perf_counter()
import flowmoe
from flowmoe.init import initial_state
from flowmoe.api import flow_from_gram
spec = flowmoe.load_preset("paper-fig1").with_overrides({"solver.t_end": 100.0, "solver.n_save": 501})
st = initial_state(spec.model)
ts = spec.solver.times()
t1 = time.perf_counter()
flow_from_gram(st.gram, st.norms, 25, 5, ts)
t2 = time.perf_counter()
flow_from_gram(st.gram, st.norms, 25, 5, ts)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_s": t2 - t1, "second_s": t3 - t2}))
"""


def median(xs):
    return statistics.median(xs)


def timed_solves(spec_over: dict, repeats: int, preset: str = "paper-fig1"):
    import flowmoe
    from flowmoe.api import flow_from_gram
    from flowmoe.init import initial_state

    spec = flowmoe.load_preset(preset).with_overrides({"solver.t_end": 100.0, "solver.n_save": 501, **spec_over})
    m = spec.model
    st = initial_state(m)
    ts = spec.solver.times()
    flow_from_gram(st.gram, st.norms, m.m, m.m_star, ts)  # compile
    walls, steps = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        traj = flow_from_gram(st.gram, st.norms, m.m, m.m_star, ts)
        walls.append(time.perf_counter() - t)
        steps.append(traj.provenance.stats["steps"] + traj.provenance.stats["rejected_steps"])
    return median(walls), median(steps), spec.solver.t_end


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    R = args.repeats

    print("== 1. paper-fig1 (m⋆=5, m=25, d=1000) to t = 100")
    runs = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    compile_s = median([r["first_s"] - r["second_s"] for r in runs])
    print(f"compile (first solve − second solve, fresh process, median of 3): {compile_s:.2f} s")
    print(f"import + kernel build (median of 3): {median([r['import_s'] for r in runs]):.2f} s")
    solve, nsteps, _ = timed_solves({}, R)
    print(f"solve after compile (median of {R}): {solve:.3f} s   [target ≤ 2 s]  ({nsteps} steps)")

    print("\n== 2. cost against d (Gram sampler, m⋆=5, m=25, t = 100)")
    res = {}
    for d in (10**3, 10**6):
        w, s, t_end = timed_solves({"model.d": d, "init.sampler": "gram"}, R)
        res[d] = (w, s, t_end)
        print(f"d = {d:>8}: {w:.3f} s, {s} steps; per unit flow time {w / t_end * 1e3:.2f} ms; "
              f"per step {w / s * 1e6:.1f} µs")
    (w3, s3, _), (w6, s6, _) = res[10**3], res[10**6]
    print(f"ratio d=1e6 / d=1e3: per unit flow time {w6 / w3:.2f}, per step {(w6 / s6) / (w3 / s3):.2f}")
    print("(per unit flow time also reflects how much happens by t = 100: at d = 1e6 the experts are "
          "still on the plateau, so the adaptive solver takes fewer steps; per step it is the same work)")

    print("\n== 3. solve time against m (m⋆ = max(1, m/5), d = 1000, t = 100)")
    for m in (8, 16, 32, 64):
        ms = max(1, m // 5)
        w, s, _ = timed_solves({"model.m": m, "model.m_star": ms}, max(2, R // 2))
        print(f"m = {m:>2}, m⋆ = {ms:>2}: {w:.3f} s ({s} steps, {w / s * 1e6:.0f} µs/step)")

    print("\n== 4. the whole default `flowmoe run` (paper-fig1 to its default t = 400; fresh process)")
    walls = []
    for _ in range(3):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "flowmoe.cli", "run", "--quiet", "--out", tmp],
                           check=True, capture_output=True)
            walls.append(time.perf_counter() - t)
    print(f"flowmoe run (paper-fig1), median of 3: {median(walls):.1f} s   [target ≤ 60 s]")


if __name__ == "__main__":
    main()
