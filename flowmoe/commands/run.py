"""Commands ``flowmoe run``, ``flowmoe derive`` and ``flowmoe presets``."""

from __future__ import annotations

from pathlib import Path

from . import add_spec_arguments, default_out, resolve_spec


def _cmd_run(args) -> int:
    from ..run import run_job

    spec = resolve_spec(args)
    out = Path(args.out) if args.out else default_out("run", spec.name)
    record = run_job(spec, out, progress=not args.quiet)
    return 0 if record["status"] in ("complete", "steady-state") else 3


def _cmd_derive(args) -> int:
    from ..derive import write_derivations

    for path in write_derivations(Path(args.out), expert=args.expert, command=getattr(args, "command_line", None)):
        print(path)
    return 0


def _cmd_presets(args) -> int:
    from ..presets import preset_names, preset_table

    for name in preset_names():  # the TOML tables as shipped: listing them imports no numerics
        m = preset_table(name).get("model", {})
        fields = " ".join(f"{label}={m.get(key, 'default')}" for label, key in
                          (("m", "m"), ("m*", "m_star"), ("d", "d"), ("gate", "gate"), ("expert", "expert")))
        print(f"{name:12s} {fields}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("run", help="integrate the exact gradient-flow ODE of a preset; write results and plots",
                       description="Integrate the population-gradient ODE on the Gram matrix (docs/maths.md §2) and write "
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
