"""Benchmark: the default d-sweep of `flowmoe verify --scaling d` (issue 4). Prints measured figures.

    python bench/verify_sweep.py [--seeds 16] [--workers 2] [--values 100,1000,10000,100000,1000000]
                                 [--out DIR]

Runs paper-fig1 (m⋆ = 5, m = 25) at d = 10²…10⁶ × 16 seeds with T1-first, in a fresh cache folder
(nothing is reused unless --out names a folder that already holds runs), and prints the wall time of
the whole sweep, the per-run cost (median, mean, max of the wall time, solver steps, solve and
refinement times, over all runs and per d), and the fitted exponent. Target: ≤ 10 minutes on 2 cores.
The sweep is one long measurement; the per-run figures are medians over its runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--values", default="100,1000,10000,100000,1000000")
    ap.add_argument("--out", help="output folder (default: a fresh temporary folder)")
    args = ap.parse_args()

    t_import = time.perf_counter()
    import flowmoe
    from flowmoe.scaling import d_sweep

    t0 = time.perf_counter()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="flowmoe-bench-"))
    spec = flowmoe.load_preset("paper-fig1")
    res = d_sweep(spec, args.values, range(args.seeds), out, workers=args.workers, progress=True)
    wall = time.perf_counter() - t0
    runs = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    ok = [r for r in runs if r["status"] == "ok"]

    def stats(xs):
        return f"median {statistics.median(xs):7.3f}  mean {statistics.fmean(xs):7.3f}  max {max(xs):7.3f}"

    print(f"\nflowmoe verify --scaling d: paper-fig1 (m*=5, m=25), d = {args.values}, {args.seeds} seeds, "
          f"{args.workers} workers")
    print(f"whole sweep: {wall:.1f} s wall ({len(runs)} runs, {res['cost']['computed']} computed, "
          f"{res['cost']['loaded']} loaded, {len(runs) - len(ok)} failed); import {t0 - t_import:.1f} s")
    print(f"per run wall [s]   {stats([r['wall_s'] for r in ok])}   (includes each worker's first-run compile)")
    print(f"per run solve [s]  {stats([r['data']['solve_s'] for r in ok])}")
    print(f"per run refine [s] {stats([r['data']['refine_s'] for r in ok])}")
    print(f"solver steps       {stats([r['data']['steps'] for r in ok])}")
    print(f"wall × workers / runs = {wall * args.workers / max(len(runs), 1):.2f} core-s per run")
    print("\n      d  runs  median wall [s]  median steps  median t_stop  reached")
    for p in res["per_d"]:
        sel = [r for r in ok if r["data"]["d"] == p["d"]]
        print(f"{p['d']:>7}  {len(sel):>4}  {statistics.median([r['wall_s'] for r in sel]):>15.3f}  "
              f"{statistics.median([r['data']['steps'] for r in sel]):>12.0f}  "
              f"{statistics.median([r['data']['t_stop'] for r in sel]):>13.1f}  {p['reached']:>3}/{p['runs']}")
    f = res["fits"]
    for name in ("offset", "power", "prediction"):
        if name in f:
            ci = f[name].get("ci")
            print(f"fit {name:10s}: exponent {f[name]['exponent']:.4f}"
                  + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "") + f", prefactor {f[name]['prefactor']:.4g}"
                  + (f", offset {f[name]['offset']:.4g}" if name == "offset" else ""))
    print(f"outputs in {out}")


if __name__ == "__main__":
    main()
