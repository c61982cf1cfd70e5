"""Benchmark: cost of one loss+gradient of the router backend against points and K. Prints medians.

    python bench/router_speed.py [--repeats 5] [--gate softmax]

For K = m + m⋆ in {(2,1), (6,2), (12,3), (25,5)} and points in {2^10, 2^12, 2^14}: compile time
(first call) and the median wall time of ``repeats`` further calls of the jitted loss_and_grad
at the paper-fig1 initial law (d = 1000). For the sigmoid gate it also times the exact pair
engine, for comparison.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax

import flowmoe  # noqa: F401  (float64)
from flowmoe.backends import make_backend
from flowmoe.init import gram_from_vectors, sample_vectors
from flowmoe.layout import Layout
from flowmoe.spec import InitSpec, MoESpec


def timed(fn, G, repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(G))
    first = time.perf_counter() - t0
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(G))
        runs.append(time.perf_counter() - t0)
    return first, statistics.median(runs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--gate", default="softmax")
    ap.add_argument("--sizes", default="2x1,6x2,12x3,25x5")
    ap.add_argument("--points", default="1024,4096,16384")
    args = ap.parse_args()
    print(f"gate {args.gate}, He3 experts; median of {args.repeats} runs after the first (compile) call")
    print(f"{'m':>3} {'m*':>3} {'K':>3} {'points':>7} {'compile s':>10} {'loss+grad s':>12} {'us/point':>9}")
    for size in args.sizes.split(","):
        m, ms = (int(x) for x in size.split("x"))
        V, W, Vs, Ws = sample_vectors(MoESpec(m=m, m_star=ms, d=1000, init=InitSpec(seed=0)))
        G = jax.numpy.asarray(gram_from_vectors(V, W, Vs, Ws)[0])
        lay = Layout(m, ms)
        for P in (int(p) for p in args.points.split(",")):
            be = make_backend("router", args.gate, "he3", lay, points=P)
            first, med = timed(jax.jit(be.loss_and_grad), G, args.repeats)
            print(f"{m:>3} {ms:>3} {m + ms:>3} {P:>7} {first:>10.2f} {med:>12.4f} {1e6 * med / P:>9.2f}")
        if args.gate not in ("softmax", "normalized-sigmoid") and not args.gate.startswith("softmax("):
            first, med = timed(jax.jit(make_backend("pair", args.gate, "he3", lay).loss_and_grad), G, args.repeats)
            print(f"{m:>3} {ms:>3} {m + ms:>3} {'pair':>7} {first:>10.2f} {med:>12.4f}")


if __name__ == "__main__":
    main()
