"""Benchmark: speed of the batched MLE fits of the rate experiments (issue 13). Prints measured numbers.

    python bench/rates_speed.py [--preset deepseek-thm2] [--n 1000 10000] [--reps 40]

For each n: the first batch (compile + run) and a second batch with new data of the same shape
(run only, the compiled fit is reused); fits per second = reps / run time; mean iterations and the
fraction of fits that converged (a vmapped batch runs until its slowest member stops).
"""

from __future__ import annotations

import argparse
import time

import flowmoe  # noqa: F401  (float64)
from flowmoe.rates.experiment import run_one_n
from flowmoe.rates.presets import get_preset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="deepseek-thm2")
    ap.add_argument("--n", nargs="+", type=int, default=[1000, 10000])
    ap.add_argument("--reps", type=int, default=40)
    args = ap.parse_args()
    preset = get_preset(args.preset)
    print(f"preset {preset.name}, {args.reps} replications per batch, loss {preset.loss}")
    print("n\tfirst batch s (compile+run)\tsecond batch s (run)\tfits/s\tmean iterations\tconverged")
    for n in args.n:
        t0 = time.perf_counter()
        run_one_n(preset, n, args.reps, seed=0)
        t1 = time.perf_counter()
        row = run_one_n(preset, n, args.reps, seed=1)
        t2 = time.perf_counter()
        steps = sum(row["steps"]) / len(row["steps"])
        conv = sum(row["converged"]) / len(row["converged"])
        print(f"{n}\t{t1 - t0:.1f}\t{t2 - t1:.1f}\t{args.reps / (t2 - t1):.2f}\t{steps:.0f}\t{conv:.0%}")


if __name__ == "__main__":
    main()
