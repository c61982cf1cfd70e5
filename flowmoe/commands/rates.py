"""Command ``flowmoe rates --preset NAME --out DIR [--n N ...] [--reps R] [--seed S]``: run (or resume) a rate
experiment and write rates.json, report.md and rates.png into DIR."""

from __future__ import annotations

import argparse
import sys

from ..errors import SpecError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..names import RATE_PRESETS

    p.add_argument("--preset", required=True, help=f"one of: {', '.join(RATE_PRESETS)}")
    p.add_argument("--out", required=True, help="output folder (resumable: finished n are kept)")
    p.add_argument("--n", nargs="+", action="extend", default=None, metavar="N",
                   help="sample sizes (default: the preset's protocol)")
    p.add_argument("--reps", default=None, help="replications per n (default: the preset's, 40)")
    p.add_argument("--seed", default="0", help="seed of data and initialisations (default 0)")
    p.add_argument("--pad-to", default=None, help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _int(value, field):
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise SpecError(field, f"got {value!r}; allowed: an integer") from None
    if not f.is_integer():
        raise SpecError(field, f"got {value!r}; allowed: an integer")
    return int(f)


def run(args) -> int:
    from ..rates.experiment import run_experiment
    from ..rates.presets import get_preset

    preset = get_preset(args.preset)
    n_values = None if args.n is None else [_int(v, "--n") for v in args.n]
    s = run_experiment(preset, args.out, n_values=n_values, reps=_int(args.reps, "--reps"),
                       seed=_int(args.seed, "--seed"), progress=not args.quiet, pad_to=_int(args.pad_to, "--pad-to"),
                       command=getattr(args, "command_line", None))
    a = "—" if s["alpha"] is None else f"{s['alpha']:.3f} (95% CI {s['alpha_ci'][0]:.3f}–{s['alpha_ci'][1]:.3f})"
    print(f"{preset.name}: α = {a} [loss ∝ (log n / n)^α; theory 0.5]; {s['fits']} fits; "
          f"wrote {args.out}/: {', '.join(s['files'])} (and the per-n cache in {args.out}/cache)")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("rates", help="statistical-rate experiment: MLE fits, Voronoi losses, fitted exponent")
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="flowmoe rates", description=__doc__.splitlines()[0])
    add_arguments(parser)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    from . import command_line

    args.command_line = command_line(["rates", *argv])
    try:
        return run(args)
    except SpecError as err:
        print(f"flowmoe rates: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
