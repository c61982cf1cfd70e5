"""Figures of the scaling sweeps: a time against d, the recovery fraction against m."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.ticker import MaxNLocator

from . import style


def d_figure(result: dict, path):

    runs = [r for r in result["runs"] if r["status"] == "ok" and r.get("time") is not None
            and math.isfinite(r["time"])]
    with style.rc_context(style.STYLE):
        fig, (ax, ax2) = style.subplots(1, 2, figsize=(9.0, 3.4))
        seeds = sorted({r["seed"] for r in runs})
        for k, s in enumerate(seeds):
            sel = sorted((r for r in runs if r["seed"] == s), key=lambda r: r["d"])
            ax.plot([r["d"] for r in sel], [r["time"] for r in sel], "o", ms=2.5, alpha=0.5,
                    color=style.teacher_style(k)["color"])
        dd = np.geomspace(min(result["options"]["d_values"]), max(result["options"]["d_values"]), 100)
        for name, ls in (("offset", "-"), ("power", "--")):
            f = result["fits"].get(name)
            if f:
                ax.plot(dd, f["offset"] + f["prefactor"] * dd ** f["exponent"], ls, color="k",
                        label=f"{name}: a = {f['exponent']:.3f} [{f['ci'][0]:.3f}, {f['ci'][1]:.3f}]")
        med = [(p["d"], p["median_predicted"]) for p in result["per_d"] if math.isfinite(p["median_predicted"] or np.nan)]
        if med:
            ax.plot(*zip(*med), ":", color="#d55e00", label=r"median $\sqrt{d}/(4.5\kappa)$")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("$d$")
        ax.set_ylabel(f"{result['time']} (flow time)")
        ax.set_title(f"{result['time']} against d (points: runs; colours: seeds)")
        ax.legend(frameon=False)
        for k, s in enumerate(seeds):
            sel = sorted((r for r in runs if r["seed"] == s and r["predicted"] and math.isfinite(r["predicted"])),
                         key=lambda r: r["d"])
            ax2.plot([r["d"] for r in sel], [r["time"] / r["predicted"] for r in sel], "-o", ms=2, lw=0.6,
                     alpha=0.6, color=style.teacher_style(k)["color"])
        ax2.axhline(1.0, color="k", lw=0.6, ls=":")
        ax2.set_xscale("log")
        ax2.set_xlabel("$d$")
        ax2.set_ylabel(r"measured / $\sqrt{d}/(4.5\kappa)$")
        ax2.set_title("against the leading-order prediction")
        return style.save(fig, path)


def m_figure(result: dict, path):

    with style.rc_context(style.STYLE):
        fig, ax = style.subplots(figsize=(4.5, 3.2))
        pm = [p for p in result["per_m"] if p["fraction"] is not None]
        m = [p["m"] for p in pm]
        f = np.array([p["fraction"] for p in pm])
        lo = np.array([p["ci"][0] for p in pm])
        hi = np.array([p["ci"][1] for p in pm])
        ax.errorbar(m, f, yerr=[f - lo, hi - f], fmt="o-", color="k", capsize=3)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("student experts $m$")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("fraction recovering every teacher")
        ax.set_title(f"m⋆ = {result['m_star']}, d = {result['d']} (95% Wilson intervals)")
        return style.save(fig, path)
