"""Command ``flowmoe plot KIND RUN_DIR``: a figure redrawn from the files a command wrote.

Every figure uses :data:`flowmoe.plotting.style.STYLE` (greyscale-readable: teachers differ by line style,
fixed points by marker shape and fill), renders headless (no display, no LaTeX: mathtext only) and
is written as PNG plus SVG by :func:`flowmoe.plotting.style.save`. Each function returns the paths written.

Kinds (``flowmoe plot KIND RUN_DIR [--out PATH]``; default PATH = RUN_DIR/KIND):

- ``alignment`` — from a ``flowmoe run`` folder (trajectory.npz): router and expert alignments of
  every student–teacher pair against time (Fig.-1 style), matched pairs highlighted, T₁ dots;
- ``loss`` — same folder: the population loss on a log scale with T₁ of each matched pair, T₁ overall
  (all pairs aligned) and T_c marked (:mod:`flowmoe.observables`), and beside it the error terms
  that define T_c with their tolerance; ``--matching`` picks the matching (``final``, the default
  as in summary.json: the student that recovered each teacher; or a rule that predicts it from the
  start: ``initial``, ``escape-time``, ``hungarian``, see :func:`flowmoe.observables.match_pairs`);
- ``portrait`` — from a ``flowmoe portrait`` folder (portrait.json + portrait.npz): the phase portrait;
- ``compare`` — from a ``flowmoe compare`` folder (ode.npz, sim-METHOD.npz, summary.json): the ODE
  against each simulation (:func:`flowmoe.plotting.compare.overlay_figure`);
- ``scaling`` — from a ``flowmoe verify --scaling d`` folder (scaling.json): T₁ against d on log-log
  axes, every run as a point (colour: seed), the offset and power fits with the exponent and its
  bootstrap CI, the median leading-order prediction √d/(4.5κ), and beside it measured/predicted
  (:func:`flowmoe.plotting.scaling.d_figure`); from a ``--scaling m`` folder the recovery fraction against m;
- ``finetune`` — from a ``flowmoe prune`` folder (finetune.json, finetune_trajectory.npz): the
  fine-tuning loss with the fitted and the predicted rate and the linearised flow
  (:func:`flowmoe.plotting.finetune.finetune_figure`);
- ``study`` — from a ``flowmoe compare --study`` folder (study.json): the deviation against lr and
  against the batch size with the fitted slopes (:func:`flowmoe.plotting.compare.study_figure`);
- ``rates`` — from a ``flowmoe rates`` folder (rates.json): the Voronoi loss against n with the
  fitted rate (:func:`flowmoe.plotting.rates.rates_figure`).

Trajectories with NaN or inf values, or with saved times that are not increasing, are refused
with one line naming the file and the field (:func:`check_plottable`).

The last five call the figure function of :mod:`flowmoe.plotting` that the writing command used, fed from its saved
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
    flowmoe portrait "--starts=-0.9,0.05;-0.5,0.15;0,0.3;0.5,0.5;-0.3,-0.4;0.6,-0.2;-0.8,-0.9"         --out runs/portrait-pair
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

from ..errors import SpecError
from ..names import MATCHINGS
from ..trajectory import Trajectory


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
    from ..plotting import alignment_figure

    traj = _load_traj(run_dir / "trajectory.npz")
    thr, _ = _observe_settings(traj, run_dir, args)
    return alignment_figure(traj, out, thr, title=_run_title(traj, "alignments"))


@plot_kind("loss", needs=("trajectory.npz",),
           help="loss on a log scale with T1 and T_c marked, and the error terms, from a `flowmoe run` folder")
def _plot_loss(run_dir: Path, out: Path, args) -> list[Path]:
    from ..plotting import loss_figure

    traj = _load_traj(run_dir / "trajectory.npz")
    thr, tol = _observe_settings(traj, run_dir, args)
    return loss_figure(traj, out, thr, tol, title=_run_title(traj, "loss"), match=args.matching)


@plot_kind("portrait", needs=("portrait.json", "portrait.npz"),
           help="phase portrait, from a `flowmoe portrait` folder")
def _plot_portrait(run_dir: Path, out: Path, args) -> list[Path]:
    from ..plotting import portrait_figure
    from ..portrait import Portrait

    return portrait_figure(Portrait.load(run_dir), out)


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
    """The trajectory in ``path``, refused (one line naming the file and the field) if it cannot be
    drawn truthfully: no saved times, times not finite or not increasing, NaN or inf in the data."""
    if not path.is_file():
        raise SpecError("RUN_DIR", f"{path.parent} has no {path.name}")
    try:
        traj = Trajectory.load(path)
    except SpecError as err:
        raise SpecError("RUN_DIR", str(err)) from None
    except (OSError, EOFError, KeyError, IndexError, TypeError, ValueError) as err:  # e.g. malformed arrays
        raise SpecError("RUN_DIR", f"{path} is corrupt ({type(err).__name__}: {err})") from None
    check_plottable(traj, path)
    return traj


def check_plottable(traj: Trajectory, path) -> None:
    """SpecError on ``RUN_DIR`` naming ``path`` and the field when ``traj`` cannot be drawn as it is."""
    t = traj.t
    if len(t) == 0:
        raise SpecError("RUN_DIR", f"{path}: field 't' holds no saved times: nothing to draw")
    for name in ("t", "gram", "norms", "loss"):
        values = getattr(traj, name)
        bad = ~np.isfinite(values.reshape(len(t), -1)).all(axis=1)
        if bad.any():
            k = int(np.argmax(bad))
            at = "" if name == "t" else f" (t = {t[k]:g})"
            raise SpecError("RUN_DIR", f"{path}: field {name!r} has NaN or inf values at saved index {k}{at} and "
                                       f"{int(bad.sum()) - 1} more; refusing to draw it")
    steps = np.diff(t)
    if (steps <= 0).any():
        k = int(np.argmax(steps <= 0)) + 1
        raise SpecError("RUN_DIR", f"{path}: field 't' is not increasing: t[{k - 1}] = {t[k - 1]:g}, "
                                   f"t[{k}] = {t[k]:g}; refusing to draw it")


def _malformed(path: Path, err: Exception) -> SpecError:
    return SpecError("RUN_DIR", f"{path} is malformed ({type(err).__name__}: {err})")


@plot_kind("compare", needs=("ode.npz", "summary.json"),
           help="ODE against each simulation (matched alignments, loss, norms), "
                "from a `flowmoe compare` folder")
def _plot_compare(run_dir: Path, out: Path, args) -> list[Path]:
    """:func:`flowmoe.plotting.compare.overlay_figure` from ode.npz and sim-METHOD.npz, in the order of
    summary.json's rows, with the title ``flowmoe compare`` gave it."""
    from ..compare import overlay_title
    from ..plotting import overlay_figure

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
    sgd = run_dir / "sgd-ode.npz"  # written by flowmoe compare --sgd-ode
    return overlay_figure(ode, sims, out, title=title, sgd_ode=_load_traj(sgd) if sgd.exists() else None)


@plot_kind("study", needs=("study.json",),
           help="deviation against lr (population GD) and batch size (online SGD) with fitted slopes, "
                "from a `flowmoe compare --study` folder")
def _plot_study(run_dir: Path, out: Path, args) -> list[Path]:
    """:func:`flowmoe.plotting.compare.study_figure` from study.json, with the title the study gave it."""
    from ..compare import study_title
    from ..plotting import study_figure

    path = run_dir / "study.json"
    record = _read_json(path)
    _require(record, path, ("spec", "metric", "t_end", "lrs", "gd_deviation", "gd_slope", "lr_sgd", "batches",
                            "sgd_deviation_ode", "sgd_deviation_pop", "sgd_slope_ode", "sgd_slope_pop"),
             "flowmoe compare --study")
    try:
        return study_figure(record, out, title=study_title(record["spec"]))
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise _malformed(path, err) from None


@plot_kind("scaling", needs=("scaling.json",),
           help="T1 against d (log-log, per-seed points, fits with CI, √d/(4.5κ)) or the recovery fraction "
                "against m, from a `flowmoe verify --scaling d|m` folder")
def _plot_scaling(run_dir: Path, out: Path, args) -> list[Path]:
    """:func:`flowmoe.plotting.scaling.d_figure` or :func:`~flowmoe.plotting.scaling.m_figure` from scaling.json
    (None in the file is NaN in memory: :func:`flowmoe.phases.from_json`)."""
    from ..phases import from_json
    from ..plotting import d_figure, m_figure

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
    """:func:`flowmoe.plotting.finetune.finetune_figure` from finetune_trajectory.npz and finetune.json.

    The rate fit is re-made from the saved loss (:func:`~flowmoe.finetune.fit_loss_rate`, a
    log-linear least-squares fit) and must give finetune.json's ``fitted_rate`` (relative 1e-9),
    else the files come from different runs. The linearised loss Σ_k c_k e^{−2λ_k t} comes from
    the saved modes when they hold every mode (their shares add up to ``linear_loss_at_start``);
    otherwise (more than six distinct rates) the modes are recomputed from the pruned state, the
    first frame of finetune_trajectory.npz (:func:`~flowmoe.finetune.modal_decomposition`, the
    Hessian at the teacher point: seconds) and checked against the same total."""
    from ..finetune import LOSS_FLOOR, finetune_title, fit_loss_rate
    from ..plotting import finetune_figure

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
    return finetune_figure(traj, fit, record["predicted_rate"], out, linear=linear, title=title,
                           floor=LOSS_FLOOR)


@plot_kind("rates", needs=("rates.json",),
           help="Voronoi loss against n with the fitted rate, from a `flowmoe rates` folder")
def _plot_rates(run_dir: Path, out: Path, args) -> list[Path]:
    """:func:`flowmoe.plotting.rates.rates_figure` from rates.json."""
    from ..plotting.rates import rates_figure

    path = run_dir / "rates.json"
    record = _read_json(path)
    _require(record, path, ("preset", "loss", "n", "loss_mean", "loss_sem", "loss_median"), "flowmoe rates")
    try:
        return rates_figure(record, out)
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise _malformed(path, err) from None


def _linearised_loss(record: dict, traj: Trajectory, path: Path):
    """The loss of the linearised flow at the saved times, or None if the run had none."""
    from ..finetune import linear_loss, modal_decomposition, predict
    from ..prune import Network

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
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder written by flowmoe run / portrait / compare [--study] / "
                                                         "verify --scaling / prune / rates")
    p.add_argument("--out", help="output path without suffix (default RUN_DIR/KIND); .png and .svg are written")
    p.add_argument("--threshold", type=float, help="alignment threshold for T1 (default: the run's, else 0.9)")
    p.add_argument("--error-tol", type=float, help="error tolerance for T_c (default: the run's, else 0.05)")
    p.add_argument("--matching", choices=MATCHINGS, default="final",
                   help="loss: pair each teacher with the student that recovered it (final, default, as in "
                        "summary.json) or with the student a rule predicts from the start: initial (greedy on the "
                        "initial expert overlaps), escape-time (greedy on the leading-order escape time), hungarian")
    p.set_defaults(func=_cmd_plot)
