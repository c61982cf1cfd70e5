"""The command layer: ``flowmoe <command> ...`` (``flowmoe --help`` lists the commands).

Each command lives in a module of this package with ``register(subparsers)``, which adds a parser
whose ``func`` default runs the command; the library modules know nothing of argparse. Bad input
ends with a one-line error naming the field (exit 2), never a traceback; a solve that stops early
exits with 3, Ctrl-C with 130 after saving what was computed."""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from datetime import datetime
from pathlib import Path

from ..errors import Interrupted, SolveError, SpecError


# Modules that provide ``register(subparsers)``; each adds one or more commands.
COMMAND_MODULES = ["flowmoe.commands.run", "flowmoe.commands.prune", "flowmoe.commands.compare",
                   "flowmoe.commands.portrait", "flowmoe.commands.plot", "flowmoe.commands.verify",
                   "flowmoe.commands.rates"]


def resolve_spec(args):
    """The RunSpec named by --preset/--config with --set overrides applied."""
    from ..spec import load_config, load_preset

    if getattr(args, "config", None):
        spec = load_config(args.config)
    else:
        spec = load_preset(args.preset)
    if getattr(args, "set", None):
        spec = spec.with_overrides(args.set)
    return spec


def add_spec_arguments(p: argparse.ArgumentParser, default_preset: str = "paper-fig1") -> None:
    from ..presets import preset_names

    g = p.add_mutually_exclusive_group()
    g.add_argument("--preset", default=default_preset,
                   help=f"a preset shipped with flowmoe: {', '.join(preset_names())} (default: {default_preset})")
    g.add_argument("--config", help="a TOML file with the sections of a preset")
    p.add_argument("--set", nargs="+", action="extend", metavar="SECTION.FIELD=VALUE", default=[],
                   help="override fields, e.g. --set model.m=10 solver.t_end=50 (repeatable: --set a=1 --set b=2)")


def default_out(kind: str, name: str) -> Path:
    return Path("runs") / f"{kind}-{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowmoe", description="Exact gradient-flow dynamics of mixture-of-experts "
                                     "models: derive, integrate, check against training, verify, draw.")
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"flowmoe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    # No prefix matching of long options: `verify --d 0` once meant `--delta-P 0` and started a sweep.
    parser.allow_abbrev = False
    for command_parser in sub.choices.values():
        command_parser.allow_abbrev = False
    return parser


def command_line(argv) -> str:
    """The command as the user typed it (for the documents a command writes): ``flowmoe ARGS``."""
    return "flowmoe " + shlex.join(str(a) for a in argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = command_line(argv)
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
    except KeyboardInterrupt as err:
        said = str(err) if isinstance(err, Interrupted) and str(err) != "interrupted" else ""
        print(f"flowmoe {args.command}: interrupted (Ctrl-C); " + (said or "what was computed so far is saved "
              "where the command writes its results"), file=sys.stderr)
        return 130
