"""Benchmark: which diffrax method reaches a given accuracy in the fewest right-hand-side evaluations.

    python bench/solver_choice.py [--m 25 --m-star 5] [--t-end 100] [--repeats 3]

From the paper-fig1 start (or m, m⋆ given), to ``t_end`` with 501 saved times: a reference solve
(Dopri8, rtol 1e-12, atol 1e-14), then each method at several tolerances. Printed per run: the
largest deviation of the saved Gram matrices from the reference (max over times and entries), the
largest relative deviation of the loss, accepted + rejected steps, right-hand-side evaluations
(stages per step: Tsit5 and Dopri5 6, Dopri8 12; first-same-as-last), and the solve wall time
after compile (median of ``repeats``). Compare methods at equal Gram error.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

STAGES = {"tsit5": 6, "dopri5": 6, "dopri8": 12}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, default=25)
    ap.add_argument("--m-star", type=int, default=5)
    ap.add_argument("--t-end", type=float, default=100.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import flowmoe
    from flowmoe.api import flow_from_gram
    from flowmoe.init import initial_state

    spec = flowmoe.load_preset("paper-fig1").with_overrides(
        {"solver.t_end": args.t_end, "solver.n_save": 501, "model.m": args.m, "model.m_star": args.m_star})
    st = initial_state(spec.model)
    ts = spec.solver.times()
    m, ms = args.m, args.m_star

    def solve(method, rtol, atol):
        return flow_from_gram(st.gram, st.norms, m, ms, ts, method=method, rtol=rtol, atol=atol)

    ref = solve("dopri8", 1e-12, 1e-14)
    print(f"m = {m}, m⋆ = {ms}, t = {args.t_end:g}; reference dopri8 rtol 1e-12: "
          f"{ref.provenance.stats['steps']} steps, final loss {ref.loss[-1]:.6e}")
    cases = [("tsit5", 1e-8, 1e-10), ("tsit5", 1e-7, 1e-9), ("tsit5", 3e-7, 3e-9), ("dopri5", 1e-8, 1e-10),
             ("dopri8", 1e-8, 1e-10), ("dopri8", 1e-7, 1e-9), ("dopri8", 1e-6, 1e-8), ("dopri8", 1e-5, 1e-7)]
    print(f"{'method':7s} {'rtol':>6s} {'Gram err':>9s} {'loss rel':>9s} {'steps':>6s} {'rej':>5s} "
          f"{'RHS':>7s} {'wall s':>7s}")
    for method, rtol, atol in cases:
        traj = solve(method, rtol, atol)
        walls = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            solve(method, rtol, atol)
            walls.append(time.perf_counter() - t)
        s = traj.provenance.stats
        err = float(np.max(np.abs(traj.gram - ref.gram)))
        lrel = float(np.max(np.abs(traj.loss - ref.loss) / np.abs(ref.loss)))
        nst = s["steps"] + s["rejected_steps"]
        print(f"{method:7s} {rtol:6.0e} {err:9.1e} {lrel:9.1e} {s['steps']:6d} {s['rejected_steps']:5d} "
              f"{nst * STAGES[method]:7d} {statistics.median(walls):7.3f}")


if __name__ == "__main__":
    main()
