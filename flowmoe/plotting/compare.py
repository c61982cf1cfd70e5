"""Figures of the ODE against finite-step training: overlays and the convergence study."""

from __future__ import annotations

import numpy as np

from ..observables import matching
from ..trajectory import Trajectory
from . import style


SIM_LINESTYLES = ["--", ":", "-.", (0, (5, 1, 1, 1))]


def sim_style(s: int) -> dict:
    """Colour and dash style of the ``s``-th simulation of an overlay."""
    return {"color": style.SIM_COLORS[s % len(style.SIM_COLORS)], "ls": SIM_LINESTYLES[s % len(SIM_LINESTYLES)]}


SGD_ODE_COLOR = "#e69f00"


def overlay_figure(ode: Trajectory, sims: dict, path, title: str | None = None, sgd_ode: Trajectory | None = None):
    """Matched router and expert alignments, the loss and the norms: the ODE (thick, grey) against
    each simulation (one colour and one dash style each); in the alignment panels the teacher of a
    matched pair is told by the line style of its ODE curve and by the label. ``sgd_ode``: the
    online-SGD ODE as well (thick, orange, the same line style per teacher as the ODE)."""
    from matplotlib.lines import Line2D

    pairs = matching(ode, 0)
    with style.rc_context(style.STYLE):
        fig, axes = style.subplots(1, 4, figsize=(13.5, 3.3))
        for ax, attr, name in ((axes[0], "router_alignment", r"router $\bar v_{i}^\top v^\star_j$ (matched)"),
                               (axes[1], "expert_alignment", r"expert $\bar w_{i}^\top w^\star_j$ (matched)")):
            for i, j in pairs:
                ts = style.LINESTYLES[j % len(style.LINESTYLES)]
                ax.plot(ode.t, getattr(ode, attr)[:, i, j], color="k", ls=ts, lw=2.2, alpha=0.35,
                        label=f"ODE, student {i} → teacher {j}")
                if sgd_ode is not None:
                    ax.plot(sgd_ode.t, getattr(sgd_ode, attr)[:, i, j], color=SGD_ODE_COLOR, ls=ts, lw=2.0,
                            alpha=0.6)
                for s, (method, traj) in enumerate(sims.items()):
                    ax.plot(traj.t, getattr(traj, attr)[:, i, j], lw=1.1, **sim_style(s),
                            label=method if (i, j) == pairs[0] else None)
            ax.set_ylim(-1.05, 1.05)
            ax.set_xlabel("flow time $t$ (simulation: lr × steps)")
            ax.set_title(name)
        handles = [Line2D([], [], color="k", lw=2.2, alpha=0.35, label="ODE")]
        if sgd_ode is not None:
            handles.append(Line2D([], [], color=SGD_ODE_COLOR, lw=2.0, alpha=0.6, label=_sgd_label(sgd_ode)))
        handles += [Line2D([], [], lw=1.1, label=method, **sim_style(s)) for s, method in enumerate(sims)]
        axes[0].legend(handles=handles, loc="lower right", frameon=False, fontsize=6)
        axes[1].legend(loc="lower right", frameon=False, fontsize=6)
        axes[2].semilogy(ode.t, ode.loss, color="k", lw=2.2, alpha=0.35, label="ODE")
        axes[3].plot(ode.t, np.max(ode.norms[:, :2 * ode.m] / ode.norms[:1, :2 * ode.m], axis=1), color="k",
                     lw=2.2, alpha=0.35, label="ODE")
        if sgd_ode is not None:
            axes[2].semilogy(sgd_ode.t, sgd_ode.loss, color=SGD_ODE_COLOR, lw=2.0, alpha=0.6, label=_sgd_label(sgd_ode))
            ratio = sgd_ode.norms[:, :2 * sgd_ode.m] / sgd_ode.norms[:1, :2 * sgd_ode.m]
            axes[3].plot(sgd_ode.t, np.max(ratio, axis=1), color=SGD_ODE_COLOR, lw=2.0, alpha=0.6,
                         label=f"{_sgd_label(sgd_ode)} (max)")
            axes[3].plot(sgd_ode.t, np.median(ratio, axis=1), color=SGD_ODE_COLOR, lw=1.0, alpha=0.6,
                         label="SGD ODE (median, thin)")
        for s, (method, traj) in enumerate(sims.items()):
            st = sim_style(s)
            axes[2].semilogy(traj.t, traj.loss, lw=1.1, label=method, **st)
            ratio = traj.norms[:, :2 * traj.m] / traj.norms[:1, :2 * traj.m]
            axes[3].plot(traj.t, np.max(ratio, axis=1), lw=1.4, label=f"{method} (max)", **st)
            axes[3].plot(traj.t, np.median(ratio, axis=1), lw=0.8, alpha=0.7, label=f"{method} (median, thin)", **st)
        axes[2].set_title("population loss $L$")
        axes[3].set_title(r"norm growth $\|u\|/\|u(0)\|$ (students)")
        for ax in axes[2:]:
            ax.set_xlabel("flow time $t$")
            ax.legend(frameon=False)
        if title:
            fig.suptitle(title)
        return style.save(fig, path)


def _sgd_label(traj: Trajectory) -> str:
    term = [t for t in traj.provenance.dynamics if t.get("term") == "online-sgd"]
    return f"SGD ODE (lr={term[0]['lr']:g}, B={term[0]['batch']})" if term else "SGD ODE"


def study_figure(res: dict, path, title: str | None = None):
    from matplotlib.ticker import NullFormatter

    with style.rc_context(style.STYLE):
        fig, axes = style.subplots(1, 2, figsize=(8.5, 3.3))
        lrs, dev = np.array(res["lrs"]), np.array(res["gd_deviation"])
        axes[0].loglog(lrs, dev, "o-", color="k", label=f"population GD vs ODE (slope {res['gd_slope']:.2f})")
        axes[0].loglog(lrs, dev[0] * lrs / lrs[0], ":", color="#0072b2", label="slope 1")
        axes[0].set_xlabel("lr")
        axes[0].set_ylabel(f"max deviation ({res['metric']})")
        axes[0].set_title(f"population GD, t ≤ {res['t_end']:g}")
        B = np.array(res["batches"])
        a, b = np.array(res["sgd_deviation_ode"]), np.array(res["sgd_deviation_pop"])
        axes[1].loglog(B, a, "o-", color="k", label=f"SGD vs ODE (slope {res['sgd_slope_ode']:.2f})")
        axes[1].loglog(B, b, "s--", color="#d55e00", label=f"SGD vs population GD (slope {res['sgd_slope_pop']:.2f})")
        axes[1].loglog(B, b[0] * np.sqrt(B[0] / B), ":", color="#0072b2", label="slope −½")
        axes[1].set_xlabel("batch size B")
        axes[1].set_title(f"online SGD, lr = {res['lr_sgd']:g}, t ≤ {res['t_end']:g}")
        for ax in axes:
            ax.legend(frameon=False)
            ax.xaxis.set_minor_formatter(NullFormatter())
        if title:
            fig.suptitle(title)
        return style.save(fig, path)
