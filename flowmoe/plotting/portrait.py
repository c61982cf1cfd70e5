"""Phase-portrait figures: the vector field on a plane, fixed points, separatrices, trajectories."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import style


_GREEK = {"alpha": r"\alpha", "beta": r"\beta", "mu": r"\mu", "nu": r"\nu", "rho": r"\rho"}


_MEANING = {"alpha": (r"\bar v", r"v^\star"), "beta": (r"\bar w", r"w^\star"), "mu": (r"\bar v", r"w^\star"),
            "nu": (r"\bar w", r"v^\star"), "rho": (r"\bar v", r"\bar w")}


_EXTRA = {"alpha": " (router alignment)", "beta": " (expert alignment)"}


# Stable and unstable manifolds differ in colour and in line style (the nullclines use COLORS[1], COLORS[2]).
MANIFOLD_STYLE = {"unstable": {"color": style.COLORS[3], "ls": "-"},
                  "stable": {"color": style.COLORS[4], "ls": "-."}}


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
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    info = portrait.info
    X, Y, U, V, valid = portrait.X, portrait.Y, portrait.U, portrait.V, portrait.valid
    handles = []
    with style.rc_context(style.STYLE | {"axes.grid": False}):
        fig, ax = style.subplots(figsize=(6.0, 6.4))
        if not valid.all():
            ax.contourf(X, Y, (~valid).astype(float), levels=[0.5, 1.5], colors=["#e6e6e6"], hatches=["////"])
            handles.append(Patch(facecolor="#e6e6e6", hatch="////", label="not a Gram matrix (not PSD)"))
        Um, Vm = np.ma.masked_invalid(U), np.ma.masked_invalid(V)
        ax.streamplot(X[0], Y[:, 0], Um, Vm, color="#8c8c8c", density=1.4, linewidth=0.6, arrowsize=0.8)
        handles.append(Line2D([], [], color="#8c8c8c", lw=0.8, label="streamlines of the field"))
        xname, yname = info["x"], info["y"]
        for comp, ls, col, sym in ((Um, "--", style.COLORS[1], xname), (Vm, ":", style.COLORS[2], yname)):
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
            st = MANIFOLD_STYLE[sep["manifold"]]
            ax.plot(sep["points"][:, 0], sep["points"][:, 1], lw=2.2, zorder=5, alpha=0.9, **st)
            if sep["manifold"] not in seen:
                seen.add(sep["manifold"])
                handles.append(Line2D([], [], lw=2.2, **st, label=f"{sep['manifold']} manifold of a saddle"
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
        return style.save(fig, path)


def _plain(name: str) -> str:
    for k, g in (("alpha", "α"), ("beta", "β"), ("mu", "μ"), ("nu", "ν"), ("rho", "ρ")):
        if name.startswith(k):
            return g + name[len(k):]
    return name


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))
