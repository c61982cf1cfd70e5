"""Accuracy and cost of the online-SGD ODE's quadrature (docs/sgd-ode.md) at paper-fig1.

    python bench/sgd_ode_quadrature.py [--state init|late] [--mc-chunks 16]

At the paper-fig1 start (m⋆ = 5, m = 25, d = 1000; or a "late" state: every student rotated halfway
towards a teacher) it compares the default quadrature (2^14 Sobol points for every entry, each
unit's own 2×2 block with its expert field by 8-node Gauss–Hermite on 2^11 Sobol points) with

1. plain Monte Carlo of the same per-sample moments with 2^17 × mc-chunks i.i.d. normal points
   (no Gauss–Hermite, no Sobol), with its standard error;
2. the same Gauss–Hermite block estimator on 2^17 i.i.d. normal points (unbiased, far smaller error);

and prints the relative errors of the diagonal (the norm growth d(r_p²)/dt = lr S_pp), the error of the
whole matrix relative to its diagonal scale, and the time of one right-hand side.
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


def main() -> None:
    import flowmoe
    from flowmoe.init import initial_state
    from flowmoe.online_sgd import OnlineSGD

    p = argparse.ArgumentParser()
    p.add_argument("--state", choices=["init", "late"], default="init")
    p.add_argument("--mc-chunks", type=int, default=16)
    args = p.parse_args()
    spec = flowmoe.load_preset("paper-fig1")
    V, W, Vs, Ws = initial_state(spec.model).vectors
    if args.state == "late":
        j = np.arange(V.shape[0]) % Vs.shape[0]
        V = V / np.linalg.norm(V, axis=1, keepdims=True) + Vs[j]
        W = W / np.linalg.norm(W, axis=1, keepdims=True) + Ws[j]
    G = jnp.asarray(flowmoe.init.gram_from_vectors(V, W, Vs, Ws)[0])
    backend = spec.backend()
    lay = backend.layout
    s = lay.students
    N = lay.n_dirs
    term = OnlineSGD("sigmoid", "he3", lay, spec.model.d, 0.01, 1000)
    default = jax.jit(term.sample_moments)
    M = np.asarray(default(G))
    t0 = time.perf_counter()
    default(G).block_until_ready()
    wall = time.perf_counter() - t0
    plain = jax.jit(lambda G, w: term.sample_moments(G, normals=w, own_blocks=False))
    blocks = jax.jit(lambda G, w: term.sample_moments(G, normals=np.zeros((4, N)), unit_normals=w))
    rng = np.random.default_rng(12345)
    reps = np.array([np.asarray(plain(G, rng.standard_normal((2**17, N)))) for _ in range(args.mc_chunks)])
    mc, mc_se = reps.mean(0), reps.std(0, ddof=1) / np.sqrt(len(reps))
    breps = np.array([np.diag(np.asarray(blocks(G, rng.standard_normal((2**14, N)))))[s] for _ in range(8)])
    gh, gh_se = breps.mean(0), breps.std(0, ddof=1) / np.sqrt(len(breps))

    dq, dmc = np.diag(M)[s], np.diag(mc)[s]
    scale = np.mean(dmc)
    off = ~np.eye(len(s), dtype=bool)
    Ms, mcs = M[np.ix_(s, s)], mc[np.ix_(s, s)]
    print(f"state {args.state}: N = {N}, d = {spec.model.d}; one evaluation of the moments {wall:.3f} s")
    print(f"plain MC ({len(reps)} × 2^17 points): diagonal rel. SE median {np.median(np.diag(mc_se)[s] / dmc):.4f}")
    print(f"GH-block MC (8 × 2^14 points): diagonal rel. SE median {np.median(gh_se / gh):.4f}, max {np.max(gh_se / gh):.4f}")
    e1 = np.abs(dq / dmc - 1)
    e2 = np.abs(dq / gh - 1)
    print(f"diagonal, default vs plain MC: rel. error median {np.median(e1):.4f}, max {e1.max():.4f}; "
          f"mean of the diagonal {np.mean(dq) / np.mean(dmc) - 1:+.4f}")
    print(f"diagonal, default vs GH-block MC: rel. error median {np.median(e2):.4f}, max {e2.max():.4f}; "
          f"mean of the diagonal {np.mean(dq) / np.mean(gh) - 1:+.4f}")
    print(f"off-diagonal entries, default vs plain MC: |error| / mean diagonal: median "
          f"{np.median(np.abs(Ms - mcs)[off]) / scale:.4f}, max {np.max(np.abs(Ms - mcs)[off]) / scale:.4f} "
          f"(plain MC SE / mean diagonal: median {np.median(mc_se[np.ix_(s, s)][off]) / scale:.4f}); "
          f"|off-diagonal| / mean diagonal: median {np.median(np.abs(mcs[off])) / scale:.4f}")


if __name__ == "__main__":
    main()
