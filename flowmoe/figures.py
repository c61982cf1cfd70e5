"""The figure set, drawn from saved results, and the ``flowmoe plot KIND RUN_DIR`` command.

Every figure uses :data:`flowmoe.plots.STYLE` (greyscale-readable: teachers differ by line style,
fixed points by marker shape and fill), renders with Agg (no display, no LaTeX: mathtext only) and
is written as PNG plus SVG by :func:`flowmoe.plots.save`. Each function returns the paths written.

Kinds (``flowmoe plot KIND RUN_DIR [--out PATH]``; default PATH = RUN_DIR/KIND):

- ``alignment`` — from a ``flowmoe run`` folder (trajectory.npz): router and expert alignments of
  every student–teacher pair against time (Fig.-1 style), matched pairs highlighted, T₁ dots;
- ``loss`` — same folder: the population loss on a log scale with T₁ of each matched pair, T₁ overall
  (all pairs aligned) and T_c marked (:mod:`flowmoe.observables`), and beside it the error terms
  that define T_c with their tolerance; ``--matching initial|final`` picks the matching (greedy on
  the expert overlaps at the start, as in summary.json, or at the end);
- ``portrait`` — from a ``flowmoe portrait`` folder (portrait.json + portrait.npz): the phase portrait;
- ``compare`` — from a ``flowmoe compare`` folder (ode.npz, sim-METHOD.npz, summary.json): the ODE
  against each simulation (:func:`flowmoe.compare.overlay_figure`);
- ``scaling`` — from a ``flowmoe verify --scaling d`` folder (scaling.json): T₁ against d on log-log
  axes, every run as a point (colour: seed), the offset and power fits with the exponent and its
  bootstrap CI, the median leading-order prediction √d/(4.5κ), and beside it measured/predicted
  (:func:`flowmoe.scaling.d_figure`); from a ``--scaling m`` folder the recovery fraction against m;
- ``finetune`` — from a ``flowmoe prune`` folder (finetune.json, finetune_trajectory.npz): the
  fine-tuning loss with the fitted and the predicted rate and the linearised flow
  (:func:`flowmoe.finetune.finetune_figure`).

The last three call the figure function of the module that wrote the folder, fed from its saved
files: nothing is integrated or simulated again (the rate fit of ``finetune`` is re-made from the
saved loss and checked against the saved rate; see :func:`_plot_finetune` for its linearised flow).

Threshold and tolerance default to the run's own ``observe`` settings (saved in trajectory.npz),
else 0.9 and 0.05; ``--threshold`` / ``--error-tol`` override them.

Adding a kind: write a function ``draw(run_dir, out, args) ->
list[Path]`` in this module and decorate it with ``@plot_kind(NAME, needs=(files in RUN_DIR),
help=...)``. The ``plot`` command lists every registered kind, checks that the needed files exist
(a one-line error naming RUN_DIR otherwise) and calls ``draw``.

Commands for the figures (the portraits are committed in plots/; see flowmoe.portrait for all three)::

    flowmoe run --out runs/paper-fig1
    flowmoe plot alignment runs/paper-fig1 --out plots/paper-fig1-alignment
    flowmoe plot loss runs/paper-fig1 --matching final --out plots/paper-fig1-loss
    flowmoe portrait "--starts=-0.9,0.05;-0.5,0.15;0,0.3;0.5,0.5;-0.3,-0.4;0.6,-0.2;-0.8,-0.9" \
        --out runs/portrait-pair
    flowmoe plot portrait runs/portrait-pair --out plots/portrait-pair
    flowmoe verify --scaling d --seeds 0-15 --out runs/scaling-d      # about 3 minutes on 2 cores
    flowmoe plot scaling runs/scaling-d --out plots/scaling-d
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import SpecError
from .observables import DEFAULT_TC_TERMS, error_terms, matching, pair_T1, time_Tc
from .plots import COLORS, STYLE, alignment_figure, save, teacher_style
from .trajectory import Trajectory

# ----------------------------------------------------------------------------------------------
# Loss


MATCHINGS = ("initial", "final")


def loss_markers(traj: Trajectory, threshold: float = 0.9, error_tol: float = 0.05,
                 match: str = "initial") -> dict:
    """T₁ per matched pair, T₁ overall (the last pair to align; NaN unless all do) and T_c
    (:func:`flowmoe.observables.time_Tc`). Pairs: greedy matching on the expert overlaps at the start
    (``match="initial"``, as in summary.json) or at the end of the run (``"final"``)."""
    if match not in MATCHINGS:
        raise SpecError("--matching", f"got {match!r}; allowed: {list(MATCHINGS)}")
    pairs = matching(traj, 0 if match == "initial" else -1)
    T1 = pair_T1(traj, pairs, threshold)
    return {"pairs": pairs, "T1_pairs": T1, "T1": float(np.max(T1)) if np.all(np.isfinite(T1)) else float("nan"),
            "Tc": time_Tc(traj, pairs, error_tol), "threshold": threshold, "error_tol": error_tol, "matching": match}


def draw_loss(axes, traj: Trajectory, threshold: float = 0.9, error_tol: float = 0.05,
              match: str = "initial") -> dict:
    """Draw the loss (log scale) with T₁ and T_c on ``axes[0]`` and the T_c error terms on
    ``axes[1]`` (if given). Returns :func:`loss_markers`."""
    mk = loss_markers(traj, threshold, error_tol, match)
    t = traj.t
    ax = axes[0]
    ax.semilogy(t, np.maximum(traj.loss, 1e-300), color="k", lw=1.4, label="population loss $L(t)$")
    for (i, j), t1 in zip(mk["pairs"], mk["T1_pairs"]):
        if np.isfinite(t1):
            ax.axvline(t1, lw=0.7, alpha=0.8, **teacher_style(j))
    if np.isfinite(mk["T1"]):
        ax.axvline(mk["T1"], color="k", lw=1.6, ls="--", label=f"$T_1$ = {mk['T1']:.3g} (all pairs ≥ {threshold:g})")
    else:
        ax.plot([], [], color="k", lw=1.6, ls="--", label=f"$T_1$: not all pairs reach {threshold:g}")
    if np.isfinite(mk["Tc"]):
        ax.axvline(mk["Tc"], color="k", lw=1.6, ls=":", label=f"$T_c$ = {mk['Tc']:.3g} (errors < {error_tol:g})")
    else:
        ax.plot([], [], color="k", lw=1.6, ls=":", label=f"$T_c$: errors not below {error_tol:g} by the end")
    ax.plot([], [], color=COLORS[1], lw=0.7, label=f"$T_1$ of each matched pair ({match} matching)")
    ax.set_xlabel("flow time $t$")
    ax.set_ylabel("$L$")
    ax.set_title("population loss (log scale)")
    ax.legend(loc="lower left", frameon=False)
    if len(axes) > 1:
        ax = axes[1]
        errs = error_terms(traj, mk["pairs"])
        styles = ["-", "--", "-.", ":", (0, (5, 1, 1, 1))]
        for name, ls in zip(DEFAULT_TC_TERMS, styles):
            ax.semilogy(t, np.maximum(np.max(errs[name], axis=1), 1e-300), color="k", ls=ls, lw=1.0,
                        label=_TERM_LABEL.get(name, name))
        ax.axhline(error_tol, color=COLORS[2], lw=1.0, label=f"tolerance {error_tol:g}")
        if np.isfinite(mk["Tc"]):
            ax.axvline(mk["Tc"], color="k", lw=1.6, ls=":")
        ax.set_ylim(bottom=error_tol * 1e-4)  # exact zeros (e.g. an orthogonalised router) are off-scale
        ax.set_xlabel("flow time $t$")
        ax.set_title("error terms defining $T_c$ (max over matched pairs)")
        ax.legend(loc="lower left", frameon=False)
    return mk


_TERM_LABEL = {
    "zeta1_max": r"$\zeta^{(1)}$: max$_{j'\neq j}|\bar v_i^\top v^\star_{j'}|$",
    "zeta2_max": r"$\zeta^{(2)}$: max$_{j'\neq j}|\bar w_i^\top w^\star_{j'}|$",
    "cross_vw": r"max$_{j'}|\bar v_i^\top w^\star_{j'}|$",
    "cross_wv": r"max$_{j'}|\bar w_i^\top v^\star_{j'}|$",
    "self": r"$|\bar v_i^\top \bar w_i|$",
}


def loss_figure(traj: Trajectory, path, threshold: float = 0.9, error_tol: float = 0.05,
                title: str | None = None, match: str = "initial") -> list[Path]:
    """Loss on a log scale with T₁ and T_c marked, and the error terms that define T_c."""
    import matplotlib.pyplot as plt

    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.4), constrained_layout=True)
        draw_loss(axes, traj, threshold, error_tol, match)
        if title:
            fig.suptitle(title)
        return save(fig, path)


# ----------------------------------------------------------------------------------------------
# Phase portrait

_GREEK = {"alpha": r"\alpha", "beta": r"\beta", "mu": r"\mu", "nu": r"\nu", "rho": r"\rho"}
_MEANING = {"alpha": (r"\bar v", r"v^\star"), "beta": (r"\bar w", r"w^\star"), "mu": (r"\bar v", r"w^\star"),
            "nu": (r"\bar w", r"v^\star"), "rho": (r"\bar v", r"\bar w")}
_EXTRA = {"alpha": " (router alignment)", "beta": " (expert alignment)"}


def observable_label(name: str) -> str:
    """Mathtext axis label of an observable name (``alpha``, ``beta[3,0]``, ``rho[2]``, ``G[1,4]``, …)."""
    import re

    if name in _GREEK:
        a, b = _MEANING[name]
        return rf"${_GREEK[name]} = \langle {a}, {b}\rangle$" + _EXTRA.get(name, "")
    m = re.match(r"^(\w+)\[(\d+)(?:,(\d+))?\]$", name.replace(" ", ""))
    if not m:
        return name
    kind, i, j = m.group(1), m.group(2), m.group(3)
    if kind == "rho":
        return rf"$\rho_{{{i}}} = \langle \bar v_{{{i}}}, \bar w_{{{i}}}\rangle$"
    if kind in _MEANING:
        return (rf"${_GREEK[kind]}_{{{i},{j}}} = \langle {_MEANING[kind][0]}_{{{i}}}, {_MEANING[kind][1]}_{{{j}}}\rangle$"
                + _EXTRA.get(kind, ""))
    sym = {"vv": (r"\bar v", r"\bar v"), "ww": (r"\bar w", r"\bar w"), "vw": (r"\bar v", r"\bar w")}
    if kind in sym:
        return rf"$\langle {sym[kind][0]}_{{{i}}}, {sym[kind][1]}_{{{j}}}\rangle$"
    return rf"$G_{{{i},{j}}}$"


_FP_STYLE = {
    "sink": dict(marker="o", ms=8, mfc="k", mec="k", label="sink"),
    "source": dict(marker="o", ms=8, mfc="white", mec="k", mew=1.5, label="source"),
    "saddle": dict(marker="X", ms=9, mfc="white", mec="k", mew=1.2, label="saddle"),
    "degenerate": dict(marker="s", ms=4, mfc="#707070", mec="#707070", label="degenerate (non-hyperbolic)"),
}


def portrait_figure(portrait, path, title: str | None = None) -> list[Path]:
    """Streamlines of the exact field, nullclines, fixed points by kind, separatrices, trajectories."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    info = portrait.info
    X, Y, U, V, valid = portrait.X, portrait.Y, portrait.U, portrait.V, portrait.valid
    handles = []
    with plt.rc_context(STYLE | {"axes.grid": False}):
        fig, ax = plt.subplots(figsize=(6.0, 6.4), constrained_layout=True)
        if not valid.all():
            ax.contourf(X, Y, (~valid).astype(float), levels=[0.5, 1.5], colors=["#e6e6e6"], hatches=["////"])
            handles.append(Patch(facecolor="#e6e6e6", hatch="////", label="not a Gram matrix (not PSD)"))
        Um, Vm = np.ma.masked_invalid(U), np.ma.masked_invalid(V)
        ax.streamplot(X[0], Y[:, 0], Um, Vm, color="#8c8c8c", density=1.4, linewidth=0.6, arrowsize=0.8)
        handles.append(Line2D([], [], color="#8c8c8c", lw=0.8, label="streamlines of the field"))
        xname, yname = info["x"], info["y"]
        for comp, ls, col, sym in ((Um, "--", COLORS[1], xname), (Vm, ":", COLORS[2], yname)):
            # Lines: sign changes between non-zero grid values; dots: grid points where the component
            # vanishes to rounding (a zero without a sign change, e.g. β̇ ∝ β², has no contour line).
            vals = comp.filled(np.nan)
            scale = float(np.nanmax(np.abs(vals))) if comp.count() else 1.0
            zero = np.abs(np.nan_to_num(vals, nan=np.inf)) <= 1e-12 * max(scale, 1e-300)
            strict = np.ma.masked_where(zero | ~np.isfinite(vals), vals)
            if strict.count() and strict.min() < 0 < strict.max():
                ax.contour(X, Y, strict, levels=[0.0], colors=[col], linestyles=[ls], linewidths=1.3)
            if zero.any():
                ax.plot(X[zero], Y[zero], ".", color=col, ms=2.5)
            if zero.any() or (strict.count() and strict.min() < 0 < strict.max()):
                handles.append(Line2D([], [], color=col, ls=ls, lw=1.3, marker=".", ms=3,
                                      label=f"nullcline d{_plain(sym)}/dt = 0 (dots: exact zeros on the grid)"))
            else:
                handles.append(Line2D([], [], color="none", label=f"d{_plain(sym)}/dt ≠ 0 on the whole grid"))
        for tr in portrait.trajectories:
            xy = tr["xy"]
            ax.plot(xy[:, 0], xy[:, 1], color="k", lw=1.3, zorder=4)
            ax.plot(xy[0, 0], xy[0, 1], "D", color="k", ms=3.5, zorder=4)
            k = max(1, len(xy) // 3)
            if len(xy) > k + 1 and np.hypot(*(xy[k + 1] - xy[k])) > 0:
                ax.annotate("", xy=xy[k + 1], xytext=xy[k], zorder=4,
                            arrowprops=dict(arrowstyle="-|>", color="k", lw=1.0, mutation_scale=10))
        if portrait.trajectories:
            what = ("full flow projected (leaves the slice)" if not info["invariant"] else
                    "trajectory (flow restricted to the plane)")
            handles.append(Line2D([], [], color="k", lw=1.3, marker="D", ms=3.5, label=what + " (◆ start)"))
        seen = set()
        for sep in portrait.separatrices:
            ls = "-" if sep["manifold"] == "unstable" else "-."
            ax.plot(sep["points"][:, 0], sep["points"][:, 1], color=COLORS[2], lw=2.2, ls=ls, zorder=5, alpha=0.9)
            if sep["manifold"] not in seen:
                seen.add(sep["manifold"])
                handles.append(Line2D([], [], color=COLORS[2], lw=2.2, ls=ls,
                                      label=f"{sep['manifold']} manifold of a saddle"
                                            + (" (separatrix)" if sep["manifold"] == "stable" else "")))
        kinds_seen = []
        for fp in portrait.fixed_points:
            st = dict(_FP_STYLE[fp["kind"]])
            st.pop("label")
            ax.plot(*fp["point"], ls="none", zorder=6, clip_on=False, **st)
            if fp["kind"] not in kinds_seen:
                kinds_seen.append(fp["kind"])
        for k in ("sink", "source", "saddle", "degenerate"):
            if k in kinds_seen:
                st = dict(_FP_STYLE[k])
                handles.append(Line2D([], [], ls="none", **st))
        if info.get("base_point"):
            ax.plot(*info["base_point"], "*", color="k", mfc="white", ms=12, zorder=7)
            handles.append(Line2D([], [], ls="none", marker="*", color="k", mfc="white", ms=10,
                                  label="base state (where the other entries are held)"))
        ax.set_xlim(*info["xlim"])
        ax.set_ylim(*info["ylim"])
        if np.isclose(info["xlim"][1] - info["xlim"][0], info["ylim"][1] - info["ylim"][0]):
            ax.set_aspect("equal")
        ax.set_xlabel(observable_label(xname))
        ax.set_ylabel(observable_label(yname))
        exact = info["invariant"]
        banner = (f"EXACT: invariant plane (max off-plane speed {info['max_off_plane_speed']:.1e})" +
                  ("" if not info.get("transversally_unstable") else
                   f"\nbut transversally unstable: the whole-system flow drifts off by "
                   f"{info['max_whole_system_drift_off_plane']:.2g}")
                  + ("" if not info.get("students_split") else
                     f"\nidentical students split: a 1e-8 asymmetry grows to "
                     f"{info['students_split']['max_deviation']:.2g} by t = {info['students_split']['t_end']:g}")
                  if exact else
                  f"SLICE (NOT INVARIANT): streamlines are not trajectories;\n"
                  f"max off-slice speed {info['max_off_plane_speed']:.2g} vs in-slice {info['max_in_plane_speed']:.2g}")
        ax.text(0.5, 0.03, banner, transform=ax.transAxes, va="bottom", ha="center", fontsize=8,
                fontweight="bold", bbox=dict(boxstyle="round", fc="white", ec="k", alpha=0.9), zorder=8)
        held = ", ".join(f"{_plain(k)} = {v:g}" for k, v in info.get("held", {}).items())
        if info.get("base_point") and not held:
            held = f"all Gram entries except the two axes (base state at ({info['base_point'][0]:.3g}, " \
                   f"{info['base_point'][1]:.3g}))"
        head = title or f"{info['gate']} gate, {info['expert']} expert: {info['description']}"
        sub = f"held: {held}" if held else ""
        ax.set_title(_wrap(head + (f"\n{sub}" if sub else ""), 95))
        fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False, fontsize=7)
        return save(fig, path)


def _plain(name: str) -> str:
    for k, g in (("alpha", "α"), ("beta", "β"), ("mu", "μ"), ("nu", "ν"), ("rho", "ρ")):
        if name.startswith(k):
            return g + name[len(k):]
    return name


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))


# ----------------------------------------------------------------------------------------------
# The `plot` command and its registry of kinds


@dataclass(frozen=True)
class PlotKind:
    """One figure of the set: ``draw(run_dir, out, args) -> paths``; ``needs`` are files in RUN_DIR."""

    name: str
    needs: tuple
    help: str
    draw: Callable


KINDS: dict[str, PlotKind] = {}


def plot_kind(name: str, needs: tuple = (), help: str = ""):
    """Register a figure kind for ``flowmoe plot`` (see the module docstring)."""
    def deco(fn):
        KINDS[name] = PlotKind(name, tuple(needs), help, fn)
        return fn
    return deco


def _observe_settings(traj: Trajectory, run_dir: Path, args) -> tuple[float, float]:
    observe = (traj.provenance.spec or {}).get("observe") or {}
    summary = run_dir / "summary.json"
    if not observe and summary.is_file():
        try:
            observe = json.loads(summary.read_text()).get("spec", {}).get("observe", {}) or {}
        except ValueError:
            observe = {}
    thr = args.threshold if getattr(args, "threshold", None) is not None else observe.get("threshold", 0.9)
    tol = args.error_tol if getattr(args, "error_tol", None) is not None else observe.get("error_tol", 0.05)
    if not 0 < float(thr) < 1:
        raise SpecError("--threshold", f"must be in (0, 1), got {thr}")
    if not float(tol) > 0:
        raise SpecError("--error-tol", f"must be > 0, got {tol}")
    return float(thr), float(tol)


def _run_title(traj: Trajectory, what: str) -> str:
    spec = traj.provenance.spec or {}
    model = spec.get("model") or {}
    name = spec.get("name", "run")
    src = traj.provenance.source
    return (f"{name}: m*={traj.m_star}, m={traj.m}" + (f", d={model['d']}" if "d" in model else "")
            + f" ({'exact gradient flow' if src == 'ode' else src}) — {what}")


@plot_kind("alignment", needs=("trajectory.npz",),
           help="router and expert alignments against time (Fig.-1 style), from a `flowmoe run` folder")
def _plot_alignment(run_dir: Path, out: Path, args) -> list[Path]:
    traj = Trajectory.load(run_dir / "trajectory.npz")
    thr, _ = _observe_settings(traj, run_dir, args)
    return alignment_figure(traj, out, thr, title=_run_title(traj, "alignments"))


@plot_kind("loss", needs=("trajectory.npz",),
           help="loss on a log scale with T1 and T_c marked, and the error terms, from a `flowmoe run` folder")
def _plot_loss(run_dir: Path, out: Path, args) -> list[Path]:
    traj = Trajectory.load(run_dir / "trajectory.npz")
    thr, tol = _observe_settings(traj, run_dir, args)
    return loss_figure(traj, out, thr, tol, title=_run_title(traj, "loss"), match=args.matching)


@plot_kind("portrait", needs=("portrait.json", "portrait.npz"),
           help="phase portrait, from a `flowmoe portrait` folder")
def _plot_portrait(run_dir: Path, out: Path, args) -> list[Path]:
    from .portrait import Portrait

    return portrait_figure(Portrait.load(run_dir), out)


# Redrawn from the folders of other commands: the figure functions of those modules, fed from the
# saved files (nothing is integrated or simulated again).


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise SpecError("RUN_DIR", f"{path} is not valid JSON ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise SpecError("RUN_DIR", f"{path} holds a {type(data).__name__}, not a JSON object")
    return data


def _require(record: dict, path: Path, keys: tuple, writer: str) -> None:
    missing = [k for k in keys if k not in record]
    if missing:
        raise SpecError("RUN_DIR", f"{path} has no {', '.join(missing)} (not written by `{writer}`)")


def _load_traj(path: Path) -> Trajectory:
    if not path.is_file():
        raise SpecError("RUN_DIR", f"{path.parent} has no {path.name}")
    try:
        return Trajectory.load(path)
    except SpecError as err:
        raise SpecError("RUN_DIR", str(err)) from None
    except (OSError, EOFError, KeyError, IndexError, TypeError, ValueError) as err:  # e.g. malformed arrays
        raise SpecError("RUN_DIR", f"{path} is corrupt ({type(err).__name__}: {err})") from None


def _malformed(path: Path, err: Exception) -> SpecError:
    return SpecError("RUN_DIR", f"{path} is malformed ({type(err).__name__}: {err})")


@plot_kind("compare", needs=("ode.npz", "summary.json"),
           help="ODE against each simulation (matched alignments, loss, norms), "
                "from a `flowmoe compare` folder")
def _plot_compare(run_dir: Path, out: Path, args) -> list[Path]:
    """:func:`flowmoe.compare.overlay_figure` from ode.npz and sim-METHOD.npz, in the order of
    summary.json's rows, with the title ``flowmoe compare`` gave it."""
    from .compare import overlay_figure, overlay_title

    path = run_dir / "summary.json"
    record = _read_json(path)
    _require(record, path, ("spec", "rows"), "flowmoe compare")
    rows = record["rows"]
    if not (isinstance(rows, list) and rows and all(isinstance(r, dict) and "method" in r for r in rows)):
        raise SpecError("RUN_DIR", f"{path}: 'rows' must be a non-empty list of simulations (not written by "
                                   f"`flowmoe compare`)")
    ode = _load_traj(run_dir / "ode.npz")
    sims = {r["method"]: _load_traj(run_dir / f"sim-{r['method']}.npz") for r in rows}
    for method, traj in sims.items():
        if (traj.m, traj.m_star) != (ode.m, ode.m_star):
            raise SpecError("RUN_DIR", f"{run_dir}: sim-{method}.npz has m, m⋆ = {traj.m, traj.m_star} but "
                                       f"ode.npz {ode.m, ode.m_star}: the files come from different runs")
    try:
        title = overlay_title(record["spec"], rows)
    except (KeyError, TypeError, ValueError) as err:
        raise _malformed(path, err) from None
    return overlay_figure(ode, sims, out, title=title)


@plot_kind("scaling", needs=("scaling.json",),
           help="T1 against d (log-log, per-seed points, fits with CI, √d/(4.5κ)) or the recovery fraction "
                "against m, from a `flowmoe verify --scaling d|m` folder")
def _plot_scaling(run_dir: Path, out: Path, args) -> list[Path]:
    """:func:`flowmoe.scaling.d_figure` or :func:`~flowmoe.scaling.m_figure` from scaling.json
    (None in the file is NaN in memory: :func:`flowmoe.phases.from_json`)."""
    from .phases import from_json
    from .scaling import d_figure, m_figure

    path = run_dir / "scaling.json"
    record = _read_json(path)
    keys = {"d": ("time", "runs", "fits", "per_d", "options"), "m": ("m_star", "d", "per_m")}
    variable = record.get("variable")
    if variable not in keys:
        raise SpecError("RUN_DIR", f"{path}: 'variable' is {variable!r}; allowed: ['d', 'm'] "
                                   f"(not written by `flowmoe verify --scaling`)")
    _require(record, path, keys[variable], f"flowmoe verify --scaling {variable}")
    draw = d_figure if variable == "d" else m_figure
    try:
        return draw(from_json(record), out)
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise _malformed(path, err) from None


@plot_kind("finetune", needs=("finetune.json", "finetune_trajectory.npz"),
           help="fine-tuning loss with the fitted and predicted rates and the linearised flow, "
                "from a `flowmoe prune` folder")
def _plot_finetune(run_dir: Path, out: Path, args) -> list[Path]:
    """:func:`flowmoe.finetune.finetune_figure` from finetune_trajectory.npz and finetune.json.

    The rate fit is re-made from the saved loss (:func:`~flowmoe.finetune.fit_loss_rate`, a
    log-linear least-squares fit) and must give finetune.json's ``fitted_rate`` (relative 1e-9),
    else the files come from different runs. The linearised loss Σ_k c_k e^{−2λ_k t} comes from
    the saved modes when they hold every mode (their shares add up to ``linear_loss_at_start``);
    otherwise (more than six distinct rates) the modes are recomputed from the pruned state, the
    first frame of finetune_trajectory.npz (:func:`~flowmoe.finetune.modal_decomposition`, the
    Hessian at the teacher point: seconds) and checked against the same total."""
    from .finetune import finetune_figure, finetune_title, fit_loss_rate

    path = run_dir / "finetune.json"
    record = _read_json(path)
    _require(record, path, ("spec", "rule", "removed", "kept", "pruned_at", "fitted_rate", "predicted_rate"),
             "flowmoe prune")
    traj = _load_traj(run_dir / "finetune_trajectory.npz")
    fit = fit_loss_rate(traj)
    saved = record["fitted_rate"]
    differs = fit is not None and saved is not None and not np.isclose(fit.rate, saved, rtol=1e-9, atol=0)
    if (fit is None) != (saved is None) or differs:
        raise SpecError("RUN_DIR", f"{run_dir}: the loss in finetune_trajectory.npz gives the fitted rate "
                                   f"{None if fit is None else fit.rate} but finetune.json says {saved}: "
                                   f"the files come from different runs")
    try:
        linear = _linearised_loss(record, traj, path)
        title = finetune_title(record)
    except (KeyError, IndexError, TypeError, ValueError) as err:
        if isinstance(err, SpecError):
            raise
        raise _malformed(path, err) from None
    return finetune_figure(traj, fit, record["predicted_rate"], out, linear=linear, title=title)


def _linearised_loss(record: dict, traj: Trajectory, path: Path):
    """The loss of the linearised flow at the saved times, or None if the run had none."""
    from .finetune import linear_loss, modal_decomposition, predict
    from .prune import Network

    modes = record.get("modes")
    if not modes:
        return None
    total = float(modes["linear_loss_at_start"])
    groups = modes["slowest"]
    rates = np.array([g["loss_rate"] for g in groups], dtype=np.float64) / 2.0   # saved: loss rates 2λ
    shares = np.array([g["loss_share"] for g in groups], dtype=np.float64)
    if abs(shares.sum() - total) <= 1e-9 * abs(total):
        return linear_loss(rates, shares, traj.t)
    model = record["spec"]["model"]
    net = Network(traj.gram[0], traj.norms[0], traj.m, traj.m_star, model["gate"], model["expert"],
                  tuple(traj.provenance.notes.get("labels") or ()))
    pred = predict(net, int(record["hessian"]["perp_multiplicity"]), model.get("d"))
    if pred is None:
        raise SpecError("RUN_DIR", f"{path} has modes but the pruned state in finetune_trajectory.npz has "
                                   f"m = {net.m} ≠ m⋆ = {net.m_star}: the files come from different runs")
    rates, shares, _ = modal_decomposition(pred.hess, net)
    if not abs(shares.sum() - total) <= 1e-6 * abs(total):
        raise SpecError("RUN_DIR", f"{path}: the modes of the pruned state in finetune_trajectory.npz carry "
                                   f"a linearised loss {shares.sum():.6g} at the start but finetune.json says "
                                   f"{total:.6g}: the files come from different runs")
    return linear_loss(rates, shares, traj.t)


def _cmd_plot(args) -> int:
    kind = KINDS.get(args.kind)
    if kind is None:
        raise SpecError("KIND", f"unknown figure kind {args.kind!r}; allowed: {sorted(KINDS)}")
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise SpecError("RUN_DIR", f"no such folder: {run_dir}")
    missing = [f for f in kind.needs if not (run_dir / f).is_file()]
    if missing:
        raise SpecError("RUN_DIR", f"{run_dir} has no {', '.join(missing)} (needed for the {kind.name!r} figure)")
    out = Path(args.out) if args.out else run_dir / kind.name
    for p in kind.draw(run_dir, out, args):
        print(p)
    return 0


def register(sub) -> None:
    kinds = "; ".join(f"{k.name}: {k.help}" for k in KINDS.values())
    p = sub.add_parser("plot", help="draw a figure of the set from saved results",
                       description=f"Draw one figure from a results folder, as PNG and SVG. Kinds — {kinds}.")
    p.add_argument("kind", metavar="KIND", help=f"one of: {', '.join(KINDS)}")
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder written by flowmoe run / portrait / compare / "
                                                         "verify --scaling / prune")
    p.add_argument("--out", help="output path without suffix (default RUN_DIR/KIND); .png and .svg are written")
    p.add_argument("--threshold", type=float, help="alignment threshold for T1 (default: the run's, else 0.9)")
    p.add_argument("--error-tol", type=float, help="error tolerance for T_c (default: the run's, else 0.05)")
    p.add_argument("--matching", choices=MATCHINGS, default="initial",
                   help="loss: match students to teachers on the expert overlaps at the start (default, as in "
                        "summary.json) or at the end of the run")
    p.set_defaults(func=_cmd_plot)
