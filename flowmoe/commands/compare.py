"""Command ``flowmoe compare``: the ODE against finite-step training in R^d."""

from __future__ import annotations

from pathlib import Path

from ..errors import SpecError
from ..names import METHODS, METRICS


def _cmd_compare(args) -> int:
    from . import default_out, resolve_spec
    from ..compare import compare_job, format_table, study_job
    from ..run import log

    spec = resolve_spec(args)
    out = Path(args.out) if args.out else default_out("compare", spec.name)
    t_end = args.t_end if args.t_end is not None else spec.solver.t_end
    if args.study:
        if args.seeds < 1:
            raise SpecError("seeds", f"the study needs at least 1 SGD seed, got {args.seeds}")
        res = study_job(spec, out, t_end=t_end, lr=args.lr, batch=args.batch, seeds=tuple(range(args.seeds)),
                        metric=args.metric, log=None if args.quiet else log)
        print(f"population GD: {res['metric']} deviation vs lr {res['lrs']}: "
              f"{[f'{x:.3g}' for x in res['gd_deviation']]}; fitted slope {res['gd_slope']:.3f} (expected ≈ 1)")
        print(f"online SGD (lr = {res['lr_sgd']:g}): deviation vs B {res['batches']}: from the ODE "
              f"{[f'{x:.3g}' for x in res['sgd_deviation_ode']]} (slope {res['sgd_slope_ode']:.3f}); from population "
              f"GD {[f'{x:.3g}' for x in res['sgd_deviation_pop']]} (slope {res['sgd_slope_pop']:.3f}, expected ≈ −0.5)")
        print(f"wrote {out / 'study.json'}, {', '.join(map(str, res['files']))}")
        return 0
    record = compare_job(spec, out, args.method or ["online-sgd"], lr=args.lr, t_end=t_end, batch=args.batch, n=args.n,
                         seed=args.seed, save_every=args.save_every,
                         dtype="float32" if args.float32 else "float64", tol=args.tol, figure=args.figure,
                         progress=not args.quiet, log=None if args.quiet else log, project=args.project,
                         command=getattr(args, "command_line", None), sgd_ode=args.sgd_ode)
    print(format_table(record["rows"], args.tol))
    if record.get("sgd_ode"):
        from ..compare import format_sgd_ode

        print(format_sgd_ode(record["sgd_ode"]))
    for row in record["rows"]:
        if row["error"]:
            print(f"{row['method']}: {row['error']}")
    print(f"wrote {out}/: {', '.join(record['files'])}")
    return 0


def register(sub) -> None:
    from . import add_spec_arguments

    p = sub.add_parser("compare", help="run the ODE and finite-step training in R^d from one start; compare them",
                       description="Sample a start in R^d, integrate the exact Gram ODE and run simulators "
                                   "(population-gd, online-sgd, gd on n samples, minibatch-sgd) from it; write "
                                   "overlay plots, a table of deviations and summary.json. --study: deviation "
                                   "against lr (population GD) and batch size (online SGD) with fitted slopes.")
    add_spec_arguments(p, default_preset="small")
    p.add_argument("--method", nargs="+", action="extend", default=None, choices=METHODS,
                   help="one or more simulators (default: online-sgd)")
    p.add_argument("--lr", type=float, default=0.01, help="step size; flow time t = lr × steps (default 0.01)")
    p.add_argument("--t-end", type=float, default=None, help="flow time to simulate (default: the spec's solver.t_end; 600 for the small preset, "
                        "about 2 minutes of online SGD: --t-end 60 for a quick look)")
    p.add_argument("--batch", type=int, default=1000, help="batch size for online-sgd, minibatch-sgd (default 1000)")
    p.add_argument("--n", type=int, default=10000, help="number of fixed samples for gd, minibatch-sgd (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulation's random draws (default 0)")
    p.add_argument("--save-every", type=int, default=None, help="steps between saves (default: about 200 saves)")
    p.add_argument("--float32", action="store_true", help="simulate in single precision (default float64)")
    p.add_argument("--project", action="store_true",
                   help="projected (spherical) steps: rescale every vector to its initial norm after each step")
    p.add_argument("--sgd-ode", action="store_true",
                   help="also integrate the online-SGD ODE (gradient flow plus the O(lr) terms of online SGD with "
                        "this --lr and --batch, docs/sgd-ode.md), overlay it and compare the simulation with it")
    p.add_argument("--tol", type=float, default=0.05, help="agreement tolerance on the deviations (default 0.05)")
    p.add_argument("--figure", help="also write the overlay figure here (PNG + SVG), e.g. plots/fig1-sgd-vs-ode")
    p.add_argument("--study", action="store_true",
                   help="convergence study: population GD at lr × (1, ½, ¼, ⅛), online SGD at batch × (1, 4, 16, 64)")
    p.add_argument("--seeds", type=int, default=1, help="study: SGD seeds averaged per batch size (default 1)")
    p.add_argument("--metric", default="alignment", choices=METRICS, help="study: deviation measure")
    p.add_argument("--out", help="output folder (default: runs/compare-PRESET-TIMESTAMP)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_compare)
