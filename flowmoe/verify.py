"""``flowmoe verify``: the paper's claims over a sweep of seeds, and scaling laws (docs/maths.md §4).

``flowmoe verify [--preset P | --config F] [--set ...] --seeds 0-7 [--claims FILE.py] --out DIR``
integrates each seed (cached per run under DIR/runs, resumable, in parallel with ``--workers``),
analyses its phases (:mod:`flowmoe.phases`), evaluates the built-in and the user's claims
(:mod:`flowmoe.claims`), prints a table (claim, holds in x of N runs, worst margin, failing seeds
with the command that replays one) and writes DIR/verify.json and DIR/verify.md.

``flowmoe verify --scaling d --out DIR`` sweeps d (default 10²…10⁶) × seeds and fits the alignment
time against d (:func:`flowmoe.scaling.d_sweep`); ``--scaling m`` sweeps m for fixed m⋆ and reports
the fraction of runs recovering every teacher (:func:`flowmoe.scaling.m_sweep`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .errors import SolveError
from .phases import PhaseOptions, analyze
from .spec import RunSpec


@dataclass(frozen=True)
class VerifyJob:
    """Integrate a spec over its own save grid, analyse the phases, and (if ``finetune_t_end`` > 0)
    prune the final state with the oracle rule and fine-tune the pruned network by gradient flow."""

    phase_options: tuple = ()          # PhaseOptions fields as sorted (name, value) pairs
    keep_trajectory: bool = False
    finetune_t_end: float = 200.0

    def describe(self) -> dict:
        return {"phase_options": dict(self.phase_options), "keep_trajectory": self.keep_trajectory,
                "finetune_t_end": self.finetune_t_end}

    def batch_times(self, spec: RunSpec):
        """The save times of this job's integration (for ``executor="batched"``)."""
        return spec.solver.times()

    def options(self, spec: RunSpec) -> PhaseOptions:
        opts = {"threshold": spec.observe.threshold, "error_tol": spec.observe.error_tol}
        opts.update(dict(self.phase_options))
        return PhaseOptions(**opts)

    def __call__(self, spec: RunSpec):
        from .observables import summarize
        from .sweep import integrate_spec

        opts = self.options(spec)
        t0 = time.perf_counter()
        traj = integrate_spec(spec)
        t1 = time.perf_counter()
        report = analyze(traj, opts, d=spec.model.d)
        t2 = time.perf_counter()
        data = {"phases": report.to_dict(),
                "summary": summarize(traj, opts.threshold, opts.error_tol),
                "steps": traj.provenance.stats["steps"], "solve_s": t1 - t0, "analyze_s": t2 - t1}
        if self.finetune_t_end > 0:
            data["pruning"] = pruning_check(traj, spec, opts.threshold, self.finetune_t_end)
            data["pruning_s"] = time.perf_counter() - t2
        return data, (traj if self.keep_trajectory else None)


def pruning_check(traj, spec: RunSpec, threshold: float, t_end: float) -> dict:
    """Oracle pruning of the final state, then exact gradient flow of the pruned net to ``t_end``."""
    from .finetune import finetune
    from .prune import Network, Oracle, prune

    net = Network.from_trajectory(traj, -1, spec.model.gate, spec.model.expert)
    res = prune(net, Oracle(threshold))
    out = {"rule": "oracle", "kept": res.kept, "below_threshold": res.details.get("below_threshold", []),
           "loss_before": res.loss_before, "loss_after_prune": res.loss_after, "t_end": t_end,
           "final_loss": None, "error": None}
    try:
        ft = finetune(res.network, t_end)
        out["final_loss"] = float(ft.loss[-1])
    except SolveError as err:
        out["error"] = str(err)
    return out


__all__ = ["VerifyJob", "pruning_check"]
