"""The fine-tuning loss with the fitted and the predicted rate."""

from __future__ import annotations

import numpy as np

from ..trajectory import Trajectory
from . import style


def finetune_figure(traj: Trajectory, fit, predicted: float | None, path, linear=None, title=None, *,
                    floor: float):
    """Loss of the fine-tuning on a log scale, the fitted line (``fit``: a
    :class:`flowmoe.finetune.RateFit` or None), the predicted-rate line through the middle of the
    fit window, and (if given) the loss of the linearised flow; ``floor`` is the loss floor below
    which fits stop (``flowmoe.finetune.floor``)."""

    with style.rc_context(style.STYLE):
        fig, ax = style.subplots(figsize=(5.2, 3.5))
        loss = np.where(traj.loss > 0, traj.loss, np.nan)
        ax.semilogy(traj.t, loss, color="k", label="fine-tuning loss (Gram ODE)")
        if linear is not None:
            ax.semilogy(traj.t, linear, color="0.55", ls="-.", lw=1.0,
                        label="linearised flow (Hessian modes)")
        if fit is not None:
            tt = np.array([fit.t0, fit.t1])
            ax.semilogy(tt, np.exp(fit.log_c - fit.rate * tt), color="#0072b2", ls="--", lw=2.0,
                        label=f"fit: rate {fit.rate:.4g}")
        if predicted:
            t_mid = 0.5 * (fit.t0 + fit.t1) if fit else traj.t[0]
            anchor = fit.log_c - fit.rate * t_mid if fit else np.log(max(traj.loss[0], 1e-300))
            ax.semilogy(traj.t, np.exp(anchor - predicted * (traj.t - t_mid)), color="#d55e00", ls=":",
                        lw=1.6, label=f"predicted $2\\lambda_{{\\min}}$ = {predicted:.4g}")
        ax.axhline(floor, color="0.6", lw=0.6)
        top = np.nanmax(loss) if np.any(np.isfinite(loss)) else 1.0
        ax.set_ylim(floor * 1e-3, top * 10)
        ax.set_xlabel("fine-tuning time $t$")
        ax.set_ylabel("population loss $L$")
        ax.legend(frameon=False, loc="upper right")
        if title:
            ax.set_title(title)
        return style.save(fig, path)
