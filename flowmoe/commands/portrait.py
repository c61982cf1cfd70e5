"""Command ``flowmoe portrait``: phase portraits of reduced systems and of slices of a preset."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import SpecError
from ..names import REDUCTIONS, SLICE_NAMES_HELP

if TYPE_CHECKING:
    from ..portrait import Plane


def _parse_fix(items) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SpecError("--fix", f"expected NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _parse_starts(text):
    """"X,Y;X,Y;…" (or separated by spaces) → (n, 2). Write ``--starts=-0.5,0.1;0.2,0.3`` when the
    first number is negative, so that argparse does not read it as an option."""
    if not text:
        return None
    pts = []
    for item in re.split(r"[;\s]+", text.strip()):
        try:
            a, b = (float(s) for s in item.split(","))
        except ValueError:
            raise SpecError("--starts", f"expected X,Y pairs separated by ';', e.g. 0.1,0.2;-0.5,0.3, "
                                        f"got {item!r}") from None
        pts.append((a, b))
    return np.array(pts)


def plane_from_args(args) -> tuple[Plane, np.ndarray | None, str]:
    """The plane, the base point (slices) and a description of the base state, from CLI arguments."""
    from ..portrait import _overlap_value, gram_entry, make_plane, pair_reduction, slice_reduction, symmetric_reduction

    fix = _parse_fix(args.fix)
    has_spec = bool(args.preset or args.config)
    reduction = args.reduction or ("slice" if has_spec else "pair")
    if reduction not in REDUCTIONS:
        raise SpecError("--reduction", f"got {reduction!r}; allowed: {list(REDUCTIONS)}")
    if reduction in ("pair", "symmetric"):
        gate, expert = args.gate, args.expert
        if has_spec:
            from . import resolve_spec
            model = resolve_spec(args).model
            gate, expert = model.gate, model.expert
        red = (pair_reduction(gate, expert) if reduction == "pair"
               else symmetric_reduction(args.students, gate, expert))
        return make_plane(red, args.x or "alpha", args.y or "beta", fix, args.xlim, args.ylim), None, ""
    if not has_spec:
        raise SpecError("--reduction", "a slice needs a spec: give --preset NAME or --config FILE")
    from . import resolve_spec
    spec = resolve_spec(args)
    model = spec.model
    G, r, where = _base_state(spec, args)
    if args.x is None or args.y is None:
        from ..observables import greedy_matching
        m, ms = model.m, model.m_star
        i, j = greedy_matching(G[m:2 * m, 2 * m + ms:])[0]
        x, y = args.x or f"alpha[{i},{j}]", args.y or f"beta[{i},{j}]"
    else:
        x, y = args.x, args.y
    for name, value in fix.items():
        p, q = gram_entry(name, model.m, model.m_star, "--fix")
        G[p, q] = G[q, p] = _overlap_value(value, f"--fix {name}")
    desc = f"spec {spec.name} (m = {model.m}, m⋆ = {model.m_star}, d = {model.d}); other entries held at {where}"
    if fix:
        desc += " with " + ", ".join(f"{k} = {v}" for k, v in fix.items())
    red = slice_reduction(model.gate, model.expert, model.m, model.m_star, G, r, x, y, desc)
    plane = make_plane(red, x, y, None, args.xlim, args.ylim)
    return plane, red.values.copy(), ""


def _base_state(spec, args):
    """Gram matrix and norms of the base state: initial, or at time --at along the flow / a saved run."""
    from ..init import initial_state
    from ..trajectory import Trajectory

    if args.trajectory:
        traj = Trajectory.load(args.trajectory)
        if traj.m != spec.model.m or traj.m_star != spec.model.m_star:
            raise SpecError("--trajectory", f"has m = {traj.m}, m⋆ = {traj.m_star}; the spec has "
                                            f"m = {spec.model.m}, m⋆ = {spec.model.m_star}")
        at = 0.0 if args.at is None else float(args.at)
        k = int(np.argmin(np.abs(traj.t - at)))
        return traj.gram[k].copy(), traj.norms[k].copy(), f"the state of {args.trajectory} at t = {traj.t[k]:g}"
    state = initial_state(spec.model)
    if not args.at:
        return np.array(state.gram), np.array(state.norms), "the initial state"
    if args.at < 0:
        raise SpecError("--at", f"must be ≥ 0, got {args.at}")
    from ..api import flow_from_gram
    s = spec.solver
    traj = flow_from_gram(state.gram, state.norms, spec.model.m, spec.model.m_star, np.array([0.0, args.at]),
                          spec.model.gate, spec.model.expert, solver=s, model_backend_name=spec.model.backend,
                          backend_options=spec.backend_options)
    return traj.gram[-1].copy(), traj.norms[-1].copy(), f"the state of the flow at t = {args.at:g}"


def _cmd_portrait(args) -> int:
    from . import default_out
    from ..io import write_json
    from ..plotting import portrait_figure
    from ..portrait import compute_portrait

    plane, base, _ = plane_from_args(args)
    red = plane.reduction
    name = red.kind if red.kind != "slice" else (args.preset or Path(args.config).stem)
    out = Path(args.out) if args.out else default_out("portrait", name)
    t_end = args.t_end
    if t_end is None:
        t_end = 20.0
    if t_end <= 0:
        raise SpecError("--t-end", f"must be > 0, got {t_end}")
    portrait = compute_portrait(plane, grid=args.grid, starts=_parse_starts(args.starts), t_end=t_end,
                                n_starts=args.fp_starts, with_trajectories=not args.no_trajectories,
                                base_point=base, progress=not args.quiet)
    portrait.info["settings"] = {k: v for k, v in vars(args).items() if k != "func"}
    files = portrait.save(out)
    figs = portrait_figure(portrait, out / "portrait")
    portrait.info["files"] = [p.name for p in files + figs]
    write_json(out / "portrait.json", portrait.to_json())
    print(f"{portrait.info['label']}: {plane.names[0]} × {plane.names[1]}; "
          f"max off-plane speed {portrait.info['max_off_plane_speed']:.3g}")
    sets_done = set()
    for fp in portrait.fixed_points:
        if fp["set"] is not None:
            if fp["set"] not in sets_done:
                sets_done.add(fp["set"])
                (a0, a1), (b0, b1) = fp["set_extent"]
                print(f"  degenerate curve of fixed points (set {fp['set']}): found in {plane.names[0]} ∈ "
                      f"[{a0:.4g}, {a1:.4g}], {plane.names[1]} ∈ [{b0:.4g}, {b1:.4g}]")
            continue
        print(f"  {fp['kind']:10s} at ({fp['point'][0]: .6f}, {fp['point'][1]: .6f}), eigenvalues "
              + ", ".join(f"{v:.4g}" for v in fp["eigenvalues"]))
    for p in files + figs:
        print(p)
    return 0


def register(sub) -> None:
    from ..presets import preset_names

    p = sub.add_parser(
        "portrait", help="phase portrait of a reduced system or a 2-D slice (fixed points, nullclines, separatrices)",
        description="Phase portrait in the plane of two observables, with the exact Gram-ODE vector field. "
                    "Default: one student and one teacher in the (alpha, beta) plane at mu = nu = rho = 0 "
                    "(an invariant plane, so the portrait is exact). With --preset/--config: a slice of that "
                    "spec with every other Gram entry held at the initial state (or --at TIME), labelled "
                    "'slice (not invariant)' when it is not invariant. Writes OUT/portrait.png/.svg, "
                    "OUT/portrait.json (fixed points with eigenvalues and kinds) and OUT/portrait.npz.")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--preset", help=f"slice a preset shipped with flowmoe: {', '.join(preset_names())}")
    g.add_argument("--config", help="slice the spec of a TOML file")
    p.add_argument("--set", nargs="+", action="extend", metavar="SECTION.FIELD=VALUE", default=[], help="override spec fields")
    p.add_argument("--reduction", choices=REDUCTIONS,
                   help="pair (default without a spec), symmetric (--students identical students, one teacher), "
                        "slice (default with a spec)")
    p.add_argument("--students", type=int, default=2, help="number of identical students for --reduction symmetric")
    p.add_argument("--gate", default="sigmoid", help="gate of the pair/symmetric reduction (default sigmoid)")
    p.add_argument("--expert", default="he3", help="expert of the pair/symmetric reduction (default he3)")
    p.add_argument("--x", help="observable on the x axis: alpha, beta, mu, nu, rho (pair/symmetric); for a slice "
                               + SLICE_NAMES_HELP + " (default: alpha of the best-matched pair)")
    p.add_argument("--y", help="observable on the y axis (default beta)")
    p.add_argument("--fix", nargs="+", action="extend", metavar="NAME=VALUE", default=[],
                   help="hold other observables at these values (pair/symmetric default 0; slices: base state)")
    p.add_argument("--at", type=float, help="slice: hold the other entries at the state of the flow at this time")
    p.add_argument("--trajectory", help="slice: take the base state from this trajectory.npz (with --at)")
    p.add_argument("--xlim", type=float, nargs=2, default=(-1.0, 1.0), metavar=("LO", "HI"))
    p.add_argument("--ylim", type=float, nargs=2, default=(-1.0, 1.0), metavar=("LO", "HI"))
    p.add_argument("--grid", type=int, default=41, help="grid points per axis for the field (default 41)")
    p.add_argument("--fp-starts", type=int, default=12, help="Newton starts per axis for fixed points (default 12)")
    p.add_argument("--starts", metavar="X,Y;X,Y", help="trajectory starts, e.g. --starts=-0.9,0.05;0.3,0.5 "
                                                       "(default: 8 points on an ellipse, plus the base state of a slice)")
    p.add_argument("--t-end", type=float, help="flow time of the trajectories (default 20)")
    p.add_argument("--no-trajectories", action="store_true", help="draw no trajectories")
    p.add_argument("--out", help="output folder (default runs/portrait-NAME-TIME)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_portrait)
