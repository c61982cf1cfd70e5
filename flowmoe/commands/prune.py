"""Command ``flowmoe prune``: prune a finished run and fine-tune it."""

from __future__ import annotations

from ..prune import RULES, make_rule


# The command -----------------------------------------------------------------------------
def register(sub) -> None:
    p = sub.add_parser(
        "prune", help="prune a saved run, fine-tune by gradient flow, compare the rate with the Hessian",
        description="Read RUN_DIR (trajectory.npz + summary.json of `flowmoe run`), prune its last saved "
                    "state (or the one at --at) with a rule, fine-tune the pruned network by the exact Gram "
                    "ODE, fit the exponential rate of the loss and compare it with the rate predicted by the "
                    "Hessian of L at the teacher point (docs/maths.md §5). Writes OUT/finetune.json, "
                    "OUT/finetune_trajectory.npz and OUT/finetune.png (+ .svg).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder written by `flowmoe run --out`")
    p.add_argument("--rule", required=True, help=f"pruning rule: {', '.join(sorted(RULES))}")
    p.add_argument("--out", help="output folder (default: runs/prune-NAME-TIMESTAMP)")
    p.add_argument("--threshold", type=float, help="oracle: alignment threshold (default 0.9)")
    p.add_argument("--tol", type=float, help="cancel/cluster: overlap tolerance (default 0.05); "
                                             "greedy: allowed loss rise (default 1e-3)")
    p.add_argument("--at", type=float,
                   help="prune the state at the saved time nearest AT (default: the last one)")
    p.add_argument("--t-end", type=float, help="fine-tuning time (default: from the predicted rate)")
    p.add_argument("--n-save", type=int, default=400, help="saved times of the fine-tuning (default 400)")
    p.add_argument("--extra-dims", type=int, default=2,
                   help="dimensions beyond the teacher span used for the Hessian (default 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_prune)


def _cmd_prune(args) -> int:
    from pathlib import Path

    from . import default_out
    from ..finetune import load_run, prune_and_finetune

    rule = make_rule(args.rule, threshold=args.threshold, tol=args.tol)
    run = load_run(args.run_dir)
    out = Path(args.out) if args.out else default_out("prune", run.spec.name)
    record = prune_and_finetune(run, rule, out, t_end=args.t_end, n_save=args.n_save,
                                extra_dims=args.extra_dims, at=args.at, progress=not args.quiet,
                                command=getattr(args, "command_line", None))
    print(f"removed {record['removed']}; loss {record['loss_before']:.3e} → {record['loss_after_prune']:.3e} "
          f"(pruned) → {record['final_loss']:.3e} (fine-tuned); fitted rate {_fmt(record['fitted_rate'])}, "
          f"predicted {_fmt(record['predicted_rate'])}; wrote {out}/: {', '.join(record['files'])}")
    return 0


def _fmt(x) -> str:
    return "—" if x is None else f"{x:.4g}"
