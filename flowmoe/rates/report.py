"""The Markdown report and the log–log figure of a rate experiment (from its rates.json summary)."""

from __future__ import annotations

from pathlib import Path


from ..io import write_text


def _fmt_ci(ci):
    return "—" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def write_report(summary: dict, path, figure: str | None = None) -> Path:
    s = summary
    a = "—" if s.get("alpha") is None else f"{s['alpha']:.3f}"
    a1 = "—" if s.get("alpha_inv_n") is None else f"{s['alpha_inv_n']:.3f}"
    lines = [
        f"# Rate experiment `{s['preset']}`", "",
        *([f"command: `{s['command']}`", ""] if s.get("command") else []),
        s["description"], "",
        f"Loss {s['loss']}; {s['settings']['reps']} replications per n; MLE by {s['settings']['method']} "
        f"(tolerance {s['settings']['tol']:g}, at most {s['settings']['max_steps']} iterations); "
        f"initial perturbation scale {s['settings']['init_scale']}; seed {s['settings']['seed']}.", "",
    ]
    if s.get("note"):
        lines += [f"Note: {s['note']}", ""]
    lines += [
        "| fit | α | 95 % bootstrap CI | theory |", "| --- | --- | --- | --- |",
        f"| mean loss ∝ [log(n)/n]^α | {a} | {_fmt_ci(s.get('alpha_ci'))} | 0.5 |",
        f"| mean loss ∝ n^(−α) | {a1} | {_fmt_ci(s.get('alpha_inv_n_ci'))} | 0.5 (up to log) |",
        "", f"α fitted to the medians instead: {s.get('alpha_median') if s.get('alpha_median') is None else round(s['alpha_median'], 3)}.",
        "", f"{s['fits']} fits; {s['fits_per_second']:.2f} fits per second of fitting time." if s.get("fits_per_second")
        else "", "",
        "| n | mean loss | ± s.e.m. | median | converged | mean iterations | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, n in enumerate(s["n"]):
        sem = s["loss_sem"][i]
        lines.append(f"| {n} | {s['loss_mean'][i]:.4g} | {'—' if sem is None else f'{sem:.2g}'} | "
                     f"{s['loss_median'][i]:.4g} | {s['converged_fraction'][i]:.0%} | {s['steps_mean'][i]:.0f} | "
                     f"{s['seconds'][i]:.1f} |")
    if "reference" in s:
        lines += ["", f"D₄ is measured against the KL projection Ǧ (population likelihood maximised on a "
                      f"quadrature); KL(truth ‖ Ǧ) = {s['reference']['kl']:.3g}."]
    if figure:
        lines += ["", f"![log–log plot of the loss]({figure})"]
    return write_text(path, "\n".join(lines) + "\n")


__all__ = ["write_report"]
