"""Command-line interface: ``flowmoe <command> ...`` (``flowmoe --help`` lists the commands).

Each command lives in its own module with ``register(subparsers)``, which adds a parser whose
``func`` default runs the command. Bad input ends with a one-line error naming the field (exit 2),
never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from datetime import datetime
from pathlib import Path

from .errors import SolveError, SpecError

# Modules that provide ``register(subparsers)``; each adds one or more commands.
COMMAND_MODULES = ["flowmoe.cli", "flowmoe.prune", "flowmoe.compare", "flowmoe.portrait", "flowmoe.figures",
                   "flowmoe.verify"]
COMMAND_MODULES.append("flowmoe.rates.cli")  # statistical-rate experiments (flowmoe/rates/)


def resolve_spec(args):
    """The RunSpec named by --preset/--config with --set overrides applied."""
    from .spec import load_config, load_preset

    if getattr(args, "config", None):
        spec = load_config(args.config)
    else:
        spec = load_preset(args.preset)
    if getattr(args, "set", None):
        spec = spec.with_overrides(args.set)
    return spec


def add_spec_arguments(p: argparse.ArgumentParser, default_preset: str = "paper-fig1") -> None:
    from .spec import preset_names

    g = p.add_mutually_exclusive_group()
    g.add_argument("--preset", default=default_preset,
                   help=f"a preset shipped with flowmoe: {', '.join(preset_names())} (default: {default_preset})")
    g.add_argument("--config", help="a TOML file with the sections of a preset")
    p.add_argument("--set", nargs="+", metavar="SECTION.FIELD=VALUE", default=[],
                   help="override fields, e.g. --set model.m=10 solver.t_end=50")


def default_out(kind: str, name: str) -> Path:
    return Path("runs") / f"{kind}-{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _cmd_run(args) -> int:
    from .run import run_job

    spec = resolve_spec(args)
    out = Path(args.out) if args.out else default_out("run", spec.name)
    run_job(spec, out, progress=not args.quiet)
    return 0


def _cmd_derive(args) -> int:
    from .derive import write_derivations

    for path in write_derivations(Path(args.out), expert=args.expert):
        print(path)
    return 0


def _cmd_presets(args) -> int:
    from .spec import load_preset, preset_names

    for name in preset_names():
        m = load_preset(name).model
        print(f"{name:12s} m={m.m} m*={m.m_star} d={m.d} gate={m.gate} expert={m.expert}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("run", help="integrate the exact gradient-flow ODE of a preset; write results and plots",
                       description="Integrate the population-gradient ODE on the Gram matrix (SPEC §2) and write "
                                   "OUT/trajectory.npz, OUT/summary.json and OUT/alignment.png (+ .svg).")
    add_spec_arguments(p)
    p.add_argument("--out", help="output folder (default: runs/run-PRESET-TIMESTAMP)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("derive", help="write the derivation documents (Markdown + LaTeX)",
                       description="Derive the pair kernel, the self term, the student–teacher term and the "
                                   "reduced one-student/one-teacher ODE with sympy and write them as Markdown.")
    p.add_argument("--out", default="derivations", help="output folder (default: derivations)")
    p.add_argument("--expert", default="he3", help="expert, e.g. he3 (default), he1, he2+0.5*he4")
    p.set_defaults(func=_cmd_derive)

    p = sub.add_parser("presets", help="list the presets shipped with flowmoe",
                       description="List the TOML presets shipped inside the package (use with --preset NAME).")
    p.set_defaults(func=_cmd_presets)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowmoe", description=__doc__.splitlines()[0])
    from . import __version__

    parser.add_argument("--version", action="version", version=f"flowmoe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SpecError as err:
        print(f"flowmoe {args.command}: error: {err}", file=sys.stderr)
        return 2
    except SolveError as err:
        print(f"flowmoe {args.command}: solve failed: {err}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
