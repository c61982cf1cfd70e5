"""Benchmark: the exact ODE against online SGD in R^d at the paper's Fig.-1 sizes (issue 3).

    python bench/ode_vs_sgd.py [--t-end 40] [--lr 0.01] [--batch 1000] [--repeats 3] [--float32]

From the same start (preset paper-fig1: m⋆ = 5, m = 25, d = 1000) and over the same flow time
t_end (SGD: t = lr × steps), saved at the same times:

1. wall time of the ODE solve and of the SGD run, each after compilation, medians of ``repeats``;
2. the agreement reached (deviations of flowmoe.compare: alignment, matched, loss; norm growth);
3. SGD throughput in samples/s against this machine's memory-bandwidth floor: a fresh batch is
   written once by the RNG and read twice (forward X Uᵀ, backward δᵀX), ≥ 3 · 8d bytes per
   sample, so samples/s ≤ bandwidth / (24 d) when X is streamed through memory (bandwidth: a
   numpy copy of 400 MB, read + write, median of 5); also the cost of the Gaussian draws alone;
4. on the last line, ``speedup: <SGD wall / ODE wall>``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np


def median_time(fn, repeats):
    walls, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        walls.append(time.perf_counter() - t)
    return statistics.median(walls), out


def copy_bandwidth(nbytes=400_000_000, repeats=5) -> float:
    """Memory bandwidth in bytes/s from a numpy copy (counts the read and the write)."""
    a = np.ones(nbytes // 8)
    b = np.empty_like(a)
    wall, _ = median_time(lambda: np.copyto(b, a), repeats)
    return 2 * a.nbytes / wall


def l3_cache_bytes() -> int:
    """Size of the level-3 cache from sysfs (Linux), 0 if unknown."""
    try:
        text = Path("/sys/devices/system/cpu/cpu0/cache/index3/size").read_text().strip()
    except OSError:
        return 0
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--t-end", type=float, default=40.0,
                    help="flow time of both runs (default 40, as in plots/fig1-sgd-vs-ode)")
    ap.add_argument("--lr", type=float, default=0.01, help="SGD step (default 0.01)")
    ap.add_argument("--batch", type=int, default=1000, help="SGD batch (default 1000)")
    ap.add_argument("--saves", type=int, default=50, help="number of saved times (default 50)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats for the medians (default 3)")
    ap.add_argument("--float32", action="store_true", help="SGD in single precision")
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp

    import flowmoe
    from flowmoe.compare import deviations, save_times
    from flowmoe.init import initial_state
    from flowmoe.simulate import check_options

    spec = flowmoe.load_preset("paper-fig1")
    m = spec.model
    V, W, Vs, Ws = initial_state(m).vectors
    d, B, lr = m.d, args.batch, args.lr
    dtype = "float32" if args.float32 else "float64"
    opts = check_options("online-sgd", lr, t_end=args.t_end, batch=B)
    steps = opts["steps"]
    every = max(1, steps // args.saves)
    times = save_times(lr, steps, every)
    n_saves = len(times) - 1
    print(f"paper-fig1: m⋆={m.m_star}, m={m.m}, d={d}; online SGD lr={lr:g}, batch={B}, {steps} steps "
          f"(t = lr × steps = {times[-1]:g}), {dtype}; {len(times)} saved times; medians of {args.repeats}")

    # ODE: compile, then time.
    flowmoe.gradient_flow(V, W, Vs, Ws, times)
    ode_wall, ode = median_time(lambda: flowmoe.gradient_flow(V, W, Vs, Ws, times), args.repeats)
    print(f"ODE (diffrax tsit5, rtol 1e-8, after compile): {ode_wall:.3f} s "
          f"({ode.provenance.stats.get('steps', '?')} steps)")

    # SGD: compile with a short run of the same chunk shape (save_every = 1, as many steps as saves).
    t = time.perf_counter()
    flowmoe.simulate(V, W, Vs, Ws, method="online-sgd", lr=lr, steps=n_saves, batch=B, save_every=1,
                     dtype=dtype, max_norm_growth=None)
    print(f"SGD compile + {n_saves} steps: {time.perf_counter() - t:.2f} s")

    def sgd():
        return flowmoe.simulate(V, W, Vs, Ws, method="online-sgd", lr=lr, steps=steps, batch=B, save_every=every,
                                dtype=dtype, max_norm_growth=None)
    sgd_wall, sim = median_time(sgd, args.repeats)
    print(f"online SGD (after compile): {sgd_wall:.2f} s, {sgd_wall / steps * 1e3:.2f} ms per step")

    dev = deviations(ode, sim)
    print(f"agreement at t ≤ {times[-1]:g}: alignment (teacher-wise max, sorted) {dev['alignment']:.3g}, "
          f"matched pairs {dev['matched']:.3g}, loss abs {dev['loss_abs']:.3g} / rel {dev['loss_rel']:.3g}, "
          f"student norm growth {dev['norm_growth']:.3g}; final loss ODE {ode.loss[-1]:.4g}, SGD {sim.loss[-1]:.4g}")

    # Throughput against the memory-bandwidth floor.
    samples = B * steps / sgd_wall
    bw = copy_bandwidth()
    floor = bw / (3 * 8 * d) if dtype == "float64" else bw / (3 * 4 * d)
    jdt = jnp.float64 if dtype == "float64" else jnp.float32
    draw = jax.jit(lambda k: jax.random.normal(k, (B, d), jdt))
    draw(jax.random.key(0)).block_until_ready()
    rng_wall, _ = median_time(lambda: draw(jax.random.key(1)).block_until_ready(), 2 * args.repeats + 1)
    print(f"SGD throughput: {samples:,.0f} samples/s; memory-bandwidth floor {floor:,.0f} samples/s "
          f"(copy bandwidth {bw / 1e9:.1f} GB/s, 3 passes × {8 if dtype == 'float64' else 4}·d bytes per sample): "
          f"{100 * samples / floor:.1f}% of the floor")
    batch_mib = B * d * (8 if dtype == "float64" else 4) / 2**20
    l3 = l3_cache_bytes() / 2**20
    print(f"  Gaussian draws alone: {B / rng_wall:,.0f} samples/s ({rng_wall * 1e3:.1f} ms per batch of {B}×{d}, "
          f"measured separately: ≈ {100 * rng_wall * steps / sgd_wall:.0f}% of the SGD wall time); one batch is "
          f"{batch_mib:.1f} MiB, "
          f"L3 cache {l3:.0f} MiB" + (" (the batch stays in cache: the floor above is not what binds)"
                                      if 0 < batch_mib < l3 else ""))
    print(f"speedup: {sgd_wall / ode_wall:.1f}")


if __name__ == "__main__":
    main()
