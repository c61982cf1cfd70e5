"""Claims: named predicates with a margin, evaluated over the runs of a sweep (docs/maths.md §4).

A :class:`Claim` wraps a function of one run (``scope="run"``) or of the list of runs of a sweep
(``scope="sweep"``). The function returns a number, the **margin**: how far the claim is from
failing, ≥ 0 when it holds and < 0 when it fails (NaN: undetermined, counted as not holding), or a
:class:`Verdict` (margin plus a short detail). A run is a :class:`flowmoe.sweep.RunRecord`:
``run.phases`` is its :class:`flowmoe.phases.PhaseReport`, ``run.data`` the job's record,
``run.seed``, ``run.spec``, and ``run.trajectory()`` the saved trajectory (``--keep-trajectories``).

Write your own in a Python file and pass it to ``flowmoe verify --claims FILE``; every
:class:`Claim` at module level (or in a list named ``CLAIMS``) is used::

    from flowmoe.claims import claim

    @claim("experts cross 0.5 before t = 20", description="margin: 20 − latest expert crossing")
    def early_experts(run):
        k = run.phases.levels.index(0.5)
        return 20.0 - max(row[k] for row in run.phases.expert_crossings)

Built-in claims of the paper (:func:`builtin_claims`); each states its margin and unit:

- ``phase1``: every matched pair reaches the threshold in both alignments, and T₁ ≤ T_c;
- ``routers-lag-experts``: each matched pair's router crosses ``lag_level`` after its expert;
- ``recovery-order``: teachers are recovered in the order of their largest initial expert overlap;
- ``phase2-bound``: the phase-2 error terms stay below c_max·(m ε_A² + m² δ_P √d) (proxies, see
  :func:`flowmoe.phases.phase2_constants`);
- ``pruned-loss``: after oracle pruning, gradient flow on the pruned net drives the loss below tol.

:func:`negate` turns a claim into its opposite (margin → −margin); ``routers-first`` =
negate(routers-lag-experts) is a deliberately false claim, useful to see a claim fail.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import SpecError

SCOPES = ("run", "sweep")
LOSS_ROUNDOFF = 1e-15  # float64 round-off of the closed-form loss (a sum of O(1) kernel terms)


@dataclass(frozen=True)
class Verdict:
    """A claim's answer on one run (or sweep): ``margin`` ≥ 0 ⇔ it holds; NaN ⇒ undetermined."""

    margin: float
    detail: str = ""

    @property
    def holds(self) -> bool:
        return not math.isnan(self.margin) and self.margin >= 0

    @property
    def undetermined(self) -> bool:
        return math.isnan(self.margin)


@dataclass(frozen=True)
class Claim:
    """A named predicate with a margin. ``fn(run)`` (scope "run") or ``fn(runs)`` (scope "sweep")
    returns a number or a :class:`Verdict`."""

    name: str
    fn: Callable
    description: str = ""
    scope: str = "run"
    matching: str = ""  # which student–teacher matching it uses; PHASES: that of the runs' phase reports

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise SpecError("claim.name", f"must be a non-empty string, got {self.name!r}")
        if self.scope not in SCOPES:
            raise SpecError("claim.scope", f"got {self.scope!r}; allowed: {list(SCOPES)}")
        if not callable(self.fn):
            raise SpecError("claim.fn", f"must be callable, got {self.fn!r}")

    def evaluate(self, target) -> Verdict:
        """The verdict on ``target``; an exception inside the claim is an undetermined verdict."""
        try:
            out = self.fn(target)
        except Exception as err:  # noqa: BLE001 -- a user's claim must not stop the table
            return Verdict(float("nan"), f"error in claim: {type(err).__name__}: {err}")
        if isinstance(out, Verdict):
            return out
        if isinstance(out, (bool, np.bool_)):
            return Verdict(1.0 if out else -1.0, "boolean claim (margin ±1)")
        try:
            return Verdict(float(out))
        except (TypeError, ValueError):
            return Verdict(float("nan"), f"claim returned {out!r}, not a number or Verdict")


PHASES = "phases"  # Claim.matching: the matching of the phase report (PhaseOptions.matching)


def claim(name: str | None = None, *, description: str = "", scope: str = "run", matching: str = ""):
    """Decorator: turn ``fn(run) -> margin`` into a :class:`Claim` (name defaults to the function's).

    ``matching`` says which student–teacher matching the claim uses, for the verify table
    (:data:`PHASES` if it reads the per-pair numbers of ``run.phases``)."""
    def wrap(fn):
        return Claim(name or fn.__name__, fn, description or (fn.__doc__ or "").strip(), scope, matching)
    return wrap


def negate(c: Claim, name: str | None = None, description: str | None = None) -> Claim:
    """The opposite claim: margin → −margin (holds exactly when ``c`` fails with a nonzero margin)."""
    def fn(target):
        v = c.evaluate(target)
        return Verdict(-v.margin, v.detail)
    return Claim(name or f"not ({c.name})", fn, description if description is not None else
                 f"negation of '{c.name}' (margin = −its margin)", c.scope, c.matching)


# Built-in claims of the paper ---------------------------------------------------------------
def _phases(run):
    p = run.phases
    if p is None:
        raise ValueError("this run has no phase report (run it with flowmoe verify)")
    return p


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float, np.floating)) and math.isfinite(x)


def phase1(run) -> Verdict:
    """Phase 1: every matched pair reaches the threshold in both alignments, by T₁ ≤ T_c.

    margin = min( min_ℓ (peak_ℓ − threshold), (T_c − T₁)/t_end ) with peak_ℓ the largest
    min(γ⁽¹⁾, γ⁽²⁾) of pair ℓ over the run (≥ 0 iff the pair aligned). Dimensionless. The order
    term is left out when it cannot be tested: T_c not reached by the end (the order cannot have
    been violated within the run), or T_c = t₀ (the error terms were below the tolerance from the
    start, as at large d: T_c then marks no end of a phase).
    """
    p = _phases(run)
    align = min(x - p.threshold for x in p.peak_pairs)
    if not _finite(p.T1):
        return Verdict(align, f"{sum(not _finite(t) for t in p.T1_pairs)} of {len(p.pairs)} matched pairs "
                              f"never reached {p.threshold:g}")
    if not _finite(p.Tc):
        return Verdict(align, f"T1 = {p.T1:.4g}; T_c not reached by t_end = {p.t_end:.4g} (order not tested)")
    if p.Tc <= p.t0:
        return Verdict(align, f"T1 = {p.T1:.4g}; error terms below {p.error_tol:g} from the start (order not tested)")
    order = (p.Tc - p.T1) / p.t_end
    return Verdict(min(align, order), f"T1 = {p.T1:.4g}, Tc = {p.Tc:.4g}")


def routers_lag_experts(run) -> Verdict:
    """Routers follow experts: for each matched pair, router crossing − expert crossing at lag_level.

    margin = the smallest lag (flow time). A crossing after the end counts at t_end (a bound).
    """
    p = _phases(run)
    lags = [x for x in p.lags if _finite(x)]
    if not lags:
        return Verdict(float("nan"), f"no matched pair crossed {p.lag_level:g}")
    k = int(np.argmin(lags))
    return Verdict(float(lags[k]), f"lags at {p.lag_level:g}: " + ", ".join(f"{x:.3g}" for x in p.lags))


def recovery_order(run) -> Verdict:
    """Teachers are recovered in the order of κ_max,j = √d max_i γ⁽²⁾_{ij}(0), largest first.

    margin = min over teacher pairs (a, b) with κ_a > κ_b of (R_b − R_a)/t_end, R the recovery
    time (not recovered: t_end; pairs where neither was recovered are skipped). Dimensionless.
    """
    p = _phases(run)
    R = [x if _finite(x) else p.t_end for x in p.recovery_times]
    rec = [_finite(x) for x in p.recovery_times]
    k = p.kappa_max
    worst, where = float("inf"), ""
    for a in range(len(R)):
        for b in range(len(R)):
            if k[a] > k[b] and (rec[a] or rec[b]):
                mg = (R[b] - R[a]) / p.t_end
                if mg < worst:
                    worst, where = mg, f"teacher {a} (κ = {k[a]:.3g}) vs {b} (κ = {k[b]:.3g})"
    if not math.isfinite(worst):
        return Verdict(float("nan"), "fewer than two teachers to compare")
    return Verdict(worst, f"order {p.recovery_order}, expected {p.expected_order}; closest to failing: {where}")


def phase2_bound(c_max: float = 1.0) -> Claim:
    """Phase 2: err ≤ c_max · (m ε_A² + m² δ_P √d) along phase 2; margin = log10(c_max / C) with C
    the smallest constant that makes the bound hold (:func:`flowmoe.phases.phase2_constants`)."""
    c_max = float(c_max)

    def fn(run):
        p2 = _phases(run).phase2
        C = p2["constant"]
        if not _finite(C):
            return Verdict(float("nan"), "no matched pair reached phase 2")
        margin = math.log10(c_max / C) if C > 0 else math.inf
        return Verdict(margin, f"C = {C:.3g} (final {p2['final_constant']:.3g}); ε_A = {p2['eps_A_proxy']}, "
                               f"δ_P = {p2['delta_P_proxy']} = {p2['delta_P']:.3g} (our proxies)")
    return Claim("phase2-bound", fn, f"error terms ≤ {c_max:g}·(m ε_A² + m² δ_P √d) in phase 2; "
                                     "margin log10(c_max / smallest constant)", matching=PHASES)


def pruned_loss(tol: float = 1e-10) -> Claim:
    """After oracle pruning (one student per teacher), fine-tuning by gradient flow drives the loss
    below ``tol``; margin = log10(tol / final loss), the loss floored at the round-off level
    :data:`LOSS_ROUNDOFF` (it may come out as −4e-15). Needs the run's ``pruning`` record."""
    tol = float(tol)

    def fn(run):
        pr = run.data.get("pruning")
        if not pr:
            return Verdict(float("nan"), "no pruning check in this run (flowmoe verify --finetune-t-end > 0)")
        final = pr["final_loss"]
        if final is None:
            return Verdict(float("nan"), "fine-tuning failed: " + str(pr.get("error")))
        below = pr.get("below_threshold") or []
        # The loss is a sum of O(1) terms: below ≈ 1e-15 (it can even come out negative) it is round-off.
        floor = LOSS_ROUNDOFF * max(1.0, abs(pr["loss_before"]))
        margin = math.log10(tol / max(abs(final), floor))
        return Verdict(margin, f"loss {pr['loss_before']:.3g} → {pr['loss_after_prune']:.3g} (pruned) → "
                               f"{final:.3g} after t = {pr['t_end']:g}"
                               + (f"; teachers below threshold at pruning: {below}" if below else ""))
    return Claim("pruned-loss", fn, f"after oracle pruning, fine-tuned loss < {tol:g}; margin log10(tol / loss)",
                 matching="oracle pruning (greedy on the final overlaps)")


PHASE1 = Claim("phase1", phase1, "matched pairs reach the threshold by T1 <= Tc; margin min(peak − thr, (Tc − T1)/t_end)",
               matching=PHASES)
ROUTERS_LAG = Claim("routers-lag-experts", routers_lag_experts,
                    "router crossing after expert crossing for every matched pair; margin = smallest lag (time)",
                    matching=PHASES)
RECOVERY_ORDER = Claim("recovery-order", recovery_order,
                       "teachers recovered in the order of their largest initial expert overlap; margin ≥ 0",
                       matching="none (matching-free recovery times; κ from the initial overlaps)")
ROUTERS_FIRST = negate(ROUTERS_LAG, "routers-first",
                       "DELIBERATELY FALSE: routers align before experts (negation of routers-lag-experts)")


def builtin_claims(c_max: float = 1.0, prune_tol: float = 1e-10) -> list[Claim]:
    """The paper's claims (not the deliberately false one)."""
    return [PHASE1, ROUTERS_LAG, RECOVERY_ORDER, phase2_bound(c_max), pruned_loss(prune_tol)]


def all_named(c_max: float = 1.0, prune_tol: float = 1e-10) -> dict:
    """Every built-in claim by name, including the deliberately false ``routers-first``."""
    return {c.name: c for c in builtin_claims(c_max, prune_tol) + [ROUTERS_FIRST]}


def load_claims(path) -> list[Claim]:
    """The claims defined in a Python file: module-level Claim objects, or the list ``CLAIMS``."""
    path = Path(path)
    if not path.is_file():
        raise SpecError("claims", f"no such file: {path}")
    spec = importlib.util.spec_from_file_location(f"flowmoe_user_claims_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001
        raise SpecError("claims", f"{path} failed to import: {type(err).__name__}: {err}") from None
    if hasattr(module, "CLAIMS"):
        found = list(module.CLAIMS)
    else:
        found = [v for v in vars(module).values() if isinstance(v, Claim)]
    bad = [c for c in found if not isinstance(c, Claim)]
    if bad or not found:
        raise SpecError("claims", f"{path} defines no Claim objects (use @flowmoe.claims.claim or CLAIMS = [...])")
    return found


# Evaluation over a sweep ----------------------------------------------------------------------
@dataclass
class ClaimSummary:
    """A claim over a sweep: how many runs it holds in, the worst margin, the failing runs."""

    claim: Claim
    n: int = 0
    holds: int = 0
    worst_margin: float = float("nan")
    failing: list = field(default_factory=list)   # [(seed, margin, detail)] with margin < 0
    undetermined: list = field(default_factory=list)  # [(seed, detail)] with margin NaN
    verdicts: list = field(default_factory=list)  # [(seed, Verdict)]
    matching: str = ""  # the matching the claim used over this sweep (Claim.matching resolved)

    def to_dict(self) -> dict:
        def num(x):
            return x if math.isfinite(x) else None
        return {"name": self.claim.name, "description": self.claim.description, "scope": self.claim.scope,
                "matching": self.matching, "runs": self.n, "holds": self.holds, "worst_margin": num(self.worst_margin),
                "failing": [{"seed": s, "margin": num(m), "detail": d} for s, m, d in self.failing],
                "undetermined": [{"seed": s, "detail": d} for s, d in self.undetermined],
                "verdicts": [{"seed": s, "margin": num(v.margin), "holds": v.holds, "detail": v.detail}
                             for s, v in self.verdicts]}


def evaluate(claims, records) -> list[ClaimSummary]:
    """Evaluate each claim on each run (scope "run") or on the ok runs together (scope "sweep").

    A run whose solve failed counts as a run in which a run-claim does not hold (margin NaN).
    """
    out = []
    ok = [r for r in records if r.ok]
    used = sorted({r.phases.matching for r in ok if r.phases is not None})
    for c in claims:
        s = ClaimSummary(c, matching=(", ".join(used) or "—") if c.matching == PHASES else (c.matching or "—"))
        if c.scope == "sweep":
            v = c.evaluate(ok)
            s.verdicts.append((None, v))
        else:
            for r in records:
                v = c.evaluate(r) if r.ok else Verdict(float("nan"), f"run failed: {(r.error or '').splitlines()[0]}")
                s.verdicts.append((r.seed, v))
        s.n = len(s.verdicts)
        s.holds = sum(v.holds for _, v in s.verdicts)
        finite = [v.margin for _, v in s.verdicts if not math.isnan(v.margin)]
        s.worst_margin = min(finite) if finite else float("nan")
        s.failing = [(seed, v.margin, v.detail) for seed, v in s.verdicts if not v.holds and not v.undetermined]
        s.undetermined = [(seed, v.detail) for seed, v in s.verdicts if v.undetermined]
        out.append(s)
    return out


def _seed_list(seeds, max_seeds: int) -> str:
    seeds = [str(s) for s in seeds if s is not None]
    return ", ".join(seeds[:max_seeds]) + (f", … (+{len(seeds) - max_seeds})" if len(seeds) > max_seeds else "")


def format_table(summaries, replay: str | None = None, max_seeds: int = 8) -> str:
    """The verify table: claim, holds in x of N runs, worst margin, failing seeds (and how to replay),
    seeds where the claim could not be decided (margin NaN)."""
    rows = [("claim", "holds", "worst margin", "failing runs (seeds)", "undetermined (seeds)", "matching")]
    for s in summaries:
        fail = _seed_list([seed for seed, _, _ in s.failing], max_seeds)
        und = _seed_list([seed for seed, _ in s.undetermined], max_seeds)
        if s.claim.scope == "sweep":
            fail = "the sweep" if s.failing else ""
            und = "the sweep" if s.undetermined else ""
        margin = f"{s.worst_margin:+.4g}" if not math.isnan(s.worst_margin) else "—"
        rows.append((s.claim.name, f"{s.holds}/{s.n}", margin, fail or "—", und or "—", s.matching or "—"))
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if replay and any(s.failing for s in summaries):
        lines += ["", f"replay a failing run: {replay}"]
    return "\n".join(lines)


def rule_predictions(records) -> dict:
    """How often each predictive matching rule named the winners, over the ok runs of a sweep.

    Reads each run's ``summary.matching_rules`` (:func:`flowmoe.observables.summarize`): per rule the
    teachers predicted out of those recovered (``hits`` / ``decided``), and the runs in which every
    recovered teacher was predicted (``all_runs`` / ``runs``).
    """
    out: dict = {}
    for r in records:
        rules = ((r.data or {}).get("summary") or {}).get("matching_rules") if r.ok else None
        for name, v in (rules or {}).items():
            if "hits" not in v:
                continue
            agg = out.setdefault(name, {"hits": 0, "decided": 0, "all_runs": 0, "runs": 0})
            agg["hits"] += v["hits"]
            agg["decided"] += v["decided"]
            agg["all_runs"] += bool(v["all"])
            agg["runs"] += 1
    return out


def format_rule_predictions(pred: dict) -> str:
    """Lines of :func:`rule_predictions` for the verify report."""
    if not pred:
        return ""
    lines = ["which students win, predicted from the start (teachers recovered by t_end):"]
    for name, v in pred.items():
        frac = f"{100 * v['hits'] / v['decided']:.0f} %" if v["decided"] else "—"
        lines.append(f"  {name:12s} {v['hits']}/{v['decided']} teachers ({frac}); every winner in "
                     f"{v['all_runs']}/{v['runs']} runs")
    return "\n".join(lines)
