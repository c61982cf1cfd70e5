"""Command ``flowmoe verify``: the claims over a sweep of seeds, and the scaling laws."""

from __future__ import annotations

import math
import sys
import time
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SpecError

if TYPE_CHECKING:
    from ..spec import RunSpec


# The command --------------------------------------------------------------------------------
def register(sub) -> None:
    from . import add_spec_arguments

    p = sub.add_parser(
        "verify", help="check the paper's claims over seeds, or fit scaling laws (--scaling d|m)",
        description="Integrate each seed of a preset (cached per run under OUT/runs, resumable, parallel with "
                    "--workers), analyse its phases, evaluate the paper's claims and your own (--claims FILE.py), "
                    "print a table (claim, holds in x of N runs, worst margin, failing seeds and the command that "
                    "replays one) and write OUT/verify.json, OUT/verify.md and OUT/verify.nc (every run's numbers "
                    "as labelled arrays over seed: xarray.open_dataset). --executor dask runs the sweep on a Dask "
                    "cluster (local, or --scheduler ADDRESS). With --scaling d: sweep d × seeds, "
                    "fit the alignment time against d with a bootstrap CI and compare with √d/(4.5κ) "
                    "(OUT/scaling.json, .png, .md, .nc); with --scaling m: for fixed m⋆, the fraction of runs that "
                    "recover every teacher against m.")
    add_spec_arguments(p)
    p.add_argument("--seeds", default=None, help="seeds, e.g. 0-15 or 0,3,7 (default 0-7; --scaling: 0-15)")
    p.add_argument("--out", help="output folder (default: runs/verify-NAME, runs/scaling-d-NAME, runs/scaling-m-NAME); "
                                 "OUT/runs is the cache: the same command again resumes")
    p.add_argument("--workers", type=int, default=1,
                   help="parallel processes (default 1); with --executor dask and no --scheduler: the workers of "
                        "the local Dask cluster")
    p.add_argument("--executor", default="local",
                   help="local (default: this process, or a process pool with --workers > 1), batched "
                        "(this process, --workers 1: the members of one structure in vmapped diffrax solves of "
                        "up to 16) or dask (dask.distributed: pip install 'flowmoe[dask]'); same cache, same "
                        "results as the process pool")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="with --executor dask: address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786 "
                        "(default: start a LocalCluster of --workers processes)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--retry-failed", action="store_true", help="recompute cached runs that failed")
    g = p.add_argument_group("claims")
    g.add_argument("--claims", nargs="+", action="extend", default=[], metavar="FILE.py", help="Python files defining more claims")
    g.add_argument("--only", nargs="+", action="extend", metavar="NAME", help="evaluate only these claims (built-in or user)")
    g.add_argument("--list-claims", action="store_true", help="list the built-in claims and exit")
    g.add_argument("--keep-trajectories", action="store_true",
                   help="save each run's trajectory in the cache (for claims that need run.trajectory())")
    g.add_argument("--finetune-t-end", type=float, default=200.0,
                   help="fine-tuning time of the pruning check (default 200; 0: skip it)")
    g.add_argument("--c-max", type=float, default=1.0, help="phase2-bound: allowed constant (default 1)")
    g.add_argument("--prune-tol", type=float, default=1e-10, help="pruned-loss: loss tolerance (default 1e-10)")
    g.add_argument("--eps-A", default="threshold",
                   help="proxy of ε_A: threshold (default), at-T1, initial, or a number (see flowmoe.phases)")
    g.add_argument("--delta-P", default="offtarget-sq",
                   help="proxy of δ_P: offtarget-sq (default), offtarget-max, inv-d, inv-sqrt-d, or a number")
    g.add_argument("--lag-level", type=float, default=0.5, help="level for the router/expert lag (default 0.5)")
    g.add_argument("--matching", default="final",
                   help="matching of the per-pair claims (phase1, routers-lag-experts, phase2-bound): final (default: "
                        "the student that recovered each teacher), or a rule from the start: initial (greedy on the "
                        "initial expert overlaps), escape-time, hungarian")
    g.add_argument("--strict", action="store_true", help="exit with status 1 if a claim fails in some run")
    s = p.add_argument_group("scaling")
    s.add_argument("--scaling", choices=["d", "m"], help="sweep d (fit the alignment time) or m (recovery fraction)")
    s.add_argument("--values", help="values of d or m, comma-separated (default d: 100,1000,10000,100000,1000000; "
                                    "m: m⋆+1, 2m⋆, 3m⋆, 5m⋆)")
    s.add_argument("--time", default="T1-first", help="d-sweep: T1-first (default), T1-all or expert-first")
    s.add_argument("--fit", default="offset", help="d-sweep: offset (T = T0 + C d^a, default) or power (T = C d^a)")
    s.add_argument("--horizon", type=float, help="t_end = max(t-min, HORIZON·√d) (default 2; T1-all and m: 6)")
    s.add_argument("--t-min", type=float, default=50.0, help="smallest t_end (default 50)")
    s.add_argument("--n-save", type=int, default=321, help="log-spaced saved times per run (default 321)")
    s.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.set_defaults(func=_cmd_verify)


def _cmd_verify(args) -> int:
    from . import resolve_spec
    from ..sweep import check_executor, parse_seeds

    if args.list_claims:
        from ..claims import all_named

        for name, c in all_named(args.c_max, args.prune_tol).items():
            print(f"{name:22s} {c.description}")
        return 0
    spec = resolve_spec(args)
    if args.workers < 1:
        raise SpecError("workers", f"must be ≥ 1, got {args.workers}")
    check_executor(args.executor, args.scheduler, args.workers)
    # The default folder has no time stamp, so that running the same command again resumes from its
    # cache (runs are keyed by their full spec, so different specs share the folder safely).
    if args.scaling:
        seeds = parse_seeds(args.seeds or "0-15")
        out = Path(args.out) if args.out else Path("runs") / f"scaling-{args.scaling}-{spec.name}"
        run = _scaling
    else:
        seeds = parse_seeds(args.seeds or "0-7")
        out = Path(args.out) if args.out else Path("runs") / f"verify-{spec.name}"
        run = _claims
    try:
        return run(args, spec, seeds, out)
    except KeyboardInterrupt:
        done = len(list((out / "runs").glob("*.json"))) if (out / "runs").is_dir() else 0
        _log(f"interrupted; {done} finished runs are cached in {out / 'runs'}: the same command resumes")
        return 130


def _claims(args, spec: RunSpec, seeds, out: Path) -> int:
    from ..claims import all_named, builtin_claims, evaluate, format_rule_predictions, format_table, load_claims
    from ..claims import rule_predictions
    from ..io import write_json
    from ..labelled import write_dataset
    from ..phases import PhaseOptions, to_json
    from ..sweep import run_sweep, seeds_of
    from ..verify import VerifyJob

    if args.finetune_t_end < 0 or not math.isfinite(args.finetune_t_end):
        raise SpecError("finetune-t-end", f"must be ≥ 0, got {args.finetune_t_end}")
    for name in ("c_max", "prune_tol"):
        if not getattr(args, name) > 0:
            raise SpecError(name.replace("_", "-"), f"must be > 0, got {getattr(args, name)}")
    named = all_named(args.c_max, args.prune_tol)
    claims = builtin_claims(args.c_max, args.prune_tol)
    for path in args.claims:
        for c in load_claims(path):
            named[c.name] = c
            claims.append(c)
    if args.only:
        unknown = [n for n in args.only if n not in named]
        if unknown:
            raise SpecError("only", f"unknown claims {unknown}; allowed: {sorted(named)}")
        claims = [named[n] for n in args.only]
    popts = {"eps_A": args.eps_A, "delta_P": args.delta_P, "lag_level": args.lag_level, "matching": args.matching}
    PhaseOptions(**popts)  # validate before any run starts
    job = VerifyJob(tuple(sorted(popts.items())), args.keep_trajectories, float(args.finetune_t_end))
    _log(f"{spec.name}: m={spec.model.m}, m*={spec.model.m_star}, d={spec.model.d}, seeds {seeds[0]}..{seeds[-1]} "
         f"({len(seeds)}), t_end={spec.solver.t_end:g}; cache {out / 'runs'}")
    res = run_sweep(seeds_of(spec, seeds), job, out / "runs", workers=args.workers, progress=not args.quiet,
                    desc="verify", retry_failed=args.retry_failed, executor=args.executor, scheduler=args.scheduler)
    summaries = evaluate(claims, res.records)
    replay = _replay(args, spec)
    table = format_table(summaries, replay)
    predictions = rule_predictions(res.records)
    rules_text = format_rule_predictions(predictions)
    print(table)
    if rules_text:
        print("\n" + rules_text)
    record = {"spec": spec.to_dict(), "seeds": seeds, "phase_options": job.options(spec).to_dict(),
              "claims": [s.to_dict() for s in summaries], "matching_rules": predictions, "replay": replay,
              "runs": [{"seed": r.seed, "key": r.key, "status": r.status, "error": r.error, "cached": r.cached,
                        "wall_s": r.wall_s} for r in res.records],
              "cost": {"wall_s": res.wall_s, "computed": res.computed, "loaded": res.loaded}}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "verify.json", to_json(record), indent=1)
    (out / "verify.md").write_text(_markdown(spec, seeds, table, summaries, res, rules_text,
                                             getattr(args, "command_line", None)))
    write_dataset(res.records, out / "verify.nc")
    _log(f"{res.computed} runs computed, {res.loaded} loaded from the cache, {res.wall_s:.1f} s; wrote "
         f"{out}/: verify.json, verify.md, verify.nc and the cache of runs in {out / 'runs'}")
    if args.strict and any(s.failing for s in summaries):
        return 1
    return 0


def _replay(args, spec: RunSpec) -> str:
    src = f"--config {shlex.quote(args.config)}" if getattr(args, "config", None) else f"--preset {args.preset}"
    sets = " ".join(shlex.quote(s) for s in (args.set or []) if not s.startswith("init.seed="))
    return f"flowmoe run {src} --set {sets + ' ' if sets else ''}init.seed=SEED"


def _markdown(spec, seeds, table, summaries, res, rules_text: str = "", command=None) -> str:
    lines = [f"# flowmoe verify: {spec.name}", ""] + ([f"command: `{command}`", ""] if command else []) + [
             (f"m⋆ = {spec.model.m_star}, m = {spec.model.m}, d = {spec.model.d}, gate {spec.model.gate}, expert "
             f"{spec.model.expert}; seeds {seeds[0]}..{seeds[-1]} ({len(seeds)}); t_end = {spec.solver.t_end:g}."),
             "", "```", table, "```", ""]
    if rules_text:
        lines += ["```", rules_text, "```", "",
                  ("Rules (flowmoe.observables.match_pairs): initial = greedy on the initial expert overlaps, "
                   "escape-time = greedy on the leading-order escape time 1/(18 R₀₀(α₀) β₀) (He₃), hungarian = "
                   "the assignment maximising the summed initial overlaps; a winner is the student of the final "
                   "matching whose pair reached the threshold."), ""]
    lines += ["## Claims", ""]
    for s in summaries:
        lines.append(f"- **{s.claim.name}** — {s.claim.description}")
        for seed, v in s.verdicts:
            mark = "holds" if v.holds else "FAILS"
            lines.append(f"  - seed {seed}: {mark}, margin {v.margin:+.4g} — {v.detail}")
    lines += ["", ("ε_A and δ_P of the phase-2 bound are our proxies (flowmoe.phases.phase2_constants), "
                  "not definitions from the paper."), "",
              f"{res.computed} runs computed, {res.loaded} loaded from the cache ({res.wall_s:.1f} s)."]
    return "\n".join(lines) + "\n"


def _scaling(args, spec: RunSpec, seeds, out: Path) -> int:
    from ..scaling import DEFAULT_D, MODELS, TIMES, d_sweep, m_sweep

    if args.time not in TIMES:
        raise SpecError("time", f"got {args.time!r}; allowed: {list(TIMES)}")
    if args.fit not in MODELS:
        raise SpecError("fit", f"got {args.fit!r}; allowed: {list(MODELS)}")
    if args.n_boot < 100:
        raise SpecError("n-boot", f"must be ≥ 100 bootstrap resamples for a meaningful interval, got {args.n_boot}")
    common = {"horizon": args.horizon, "t_min": args.t_min, "n_save": args.n_save, "workers": args.workers,
              "progress": not args.quiet, "executor": args.executor, "scheduler": args.scheduler,
              "command": getattr(args, "command_line", None)}
    t0 = time.perf_counter()
    if args.scaling == "d":
        values = args.values or ",".join(map(str, DEFAULT_D))
        res = d_sweep(spec, values, seeds, out, time_name=args.time, model=args.fit, n_boot=args.n_boot, **common)
        c = res["cost"]
        if res["exponent"] is not None:
            print(f"{res['time']} ≈ {_g(res['offset'])} + {_g(res['prefactor'])}·d^{res['exponent']:.4f}"
                  if res["model"] == "offset" else f"{res['time']} ≈ {_g(res['prefactor'])}·d^{res['exponent']:.4f}",
                  f"(95% CI of the exponent [{res['ci'][0]:.4f}, {res['ci'][1]:.4f}], bootstrap over seeds)")
            pw = res["fits"].get("power")
            if pw and res["model"] != "power":
                print(f"pure power law: exponent {pw['exponent']:.4f} [{pw['ci'][0]:.4f}, {pw['ci'][1]:.4f}]")
        for p in res["per_d"]:
            print(f"  d = {p['d']:>8}: reached {p['reached']}/{p['runs']}, median {_g(p['median_time'])}, "
                  f"median √d/(4.5κ) {_g(p['median_predicted'])}, median ratio {_g(p['median_ratio'])}")
    else:
        ms = spec.model.m_star
        values = args.values or ",".join(map(str, sorted({ms + 1, 2 * ms, 3 * ms, 5 * ms})))
        res = m_sweep(spec, values, seeds, out, **common)
        c = res["cost"]
        for p in res["per_m"]:
            print(f"  m = {p['m']:>4}: every teacher recovered in {p['all_recovered']}/{p['runs']} runs "
                  f"(95% CI [{_g(p['ci'][0])}, {_g(p['ci'][1])}])")
    _log(f"{c['computed']} runs computed, {c['loaded']} loaded, {time.perf_counter() - t0:.1f} s; median "
         f"{_g(c['median_run_s'])} s per computed run; wrote {out}/: {', '.join(res['files'])}")
    return 0


def _g(x) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.4g}"


def _log(msg: str) -> None:
    print(f"[flowmoe] {msg}", file=sys.stderr, flush=True)
