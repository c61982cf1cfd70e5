"""Benchmark: this checkout against a baseline checkout of flowmoe, side by side in one run.

    python bench/side_by_side.py --baseline /path/to/other/checkout [--repeats 5]

Each case runs in fresh processes, alternating baseline and current (so that both see the same
machine load), ``--repeats`` times each; printed are medians and the ratio current / baseline.
Cases: paper-fig1 (m⋆ = 5, m = 25, d = 1000) to t = 100 — compile (first solve − second solve) and
the solve after compile — and m = 64 (m⋆ = 12) to t = 100 (solve after compile). Only API present
in both versions is used (``load_preset``, ``initial_state``, ``flow_from_gram``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time
m, m_star = int(sys.argv[1]), int(sys.argv[2])
t0 = time.perf_counter()
import flowmoe
from flowmoe.api import flow_from_gram
from flowmoe.init import initial_state
spec = flowmoe.load_preset("paper-fig1").with_overrides(
    {"solver.t_end": 100.0, "solver.n_save": 501, "model.m": m, "model.m_star": m_star})
st = initial_state(spec.model)
ts = spec.solver.times()
t1 = time.perf_counter()
flow_from_gram(st.gram, st.norms, m, m_star, ts)
t2 = time.perf_counter()
traj = flow_from_gram(st.gram, st.norms, m, m_star, ts)
t3 = time.perf_counter()
prov = getattr(traj, "provenance", None)
stats = prov.stats if prov is not None else traj.meta["solver"]
print(json.dumps({"import_s": t1 - t0, "first_s": t2 - t1, "second_s": t3 - t2, "steps": stats["steps"],
                  "file": flowmoe.__file__}))
"""


def child(tree: Path, m: int, m_star: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, "-c", CHILD, str(m), str(m_star)], env=env, cwd=tree,
                         capture_output=True, text=True, check=True)
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    if not rec["file"].startswith(str(tree)):
        raise SystemExit(f"child imported {rec['file']}, not the checkout {tree}")
    return rec


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="path of the baseline checkout (its folder holding flowmoe/)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    base = Path(args.baseline).resolve()
    here = Path(__file__).resolve().parents[1]
    if not (base / "flowmoe" / "__init__.py").is_file():
        print(f"--baseline: {base} has no flowmoe/__init__.py", file=sys.stderr)
        return 2
    print(f"current  = {here}\nbaseline = {base}\nrepeats  = {args.repeats} (fresh process each, alternating)")
    for m, m_star in ((25, 5), (64, 12)):
        runs = {"baseline": [], "current": []}
        for _ in range(args.repeats):
            runs["baseline"].append(child(base, m, m_star))
            runs["current"].append(child(here, m, m_star))
        print(f"\n== m = {m}, m⋆ = {m_star}, d = 1000, t = 100")
        rows = (("compile", lambda r: r["first_s"] - r["second_s"]), ("solve after compile", lambda r: r["second_s"]),
                ("import + build", lambda r: r["import_s"]))
        for name, fn in rows:
            b = statistics.median(fn(r) for r in runs["baseline"])
            c = statistics.median(fn(r) for r in runs["current"])
            print(f"{name:20s} baseline {b:7.3f} s   current {c:7.3f} s   current/baseline {c / b:5.2f}")
        sb = statistics.median(r["steps"] for r in runs["baseline"])
        sc = statistics.median(r["steps"] for r in runs["current"])
        print(f"{'accepted steps':20s} baseline {sb:7.0f}     current {sc:7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
