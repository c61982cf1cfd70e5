"""Claims: margins on closed-form trajectories, a deliberately false claim on real runs, user claims, CLI."""

import math
from pathlib import Path

import numpy as np
import pytest

import flowmoe
from flowmoe.claims import (
    PHASE1,
    RECOVERY_ORDER,
    ROUTERS_FIRST,
    ROUTERS_LAG,
    Claim,
    Verdict,
    evaluate,
    format_table,
    load_claims,
    negate,
    phase2_bound,
    pruned_loss,
)
from flowmoe.cli import main
from flowmoe.observables import first_crossing
from flowmoe.phases import PhaseOptions, analyze
from flowmoe.sweep import RunRecord, run_sweep, seeds_of
from flowmoe.trajectory import Trajectory
from flowmoe.verify import VerifyJob

from conftest import great_circle_grams

SMALL = flowmoe.load_preset("small").with_overrides({"solver.t_end": 60, "solver.n_save": 301})


def _t(level, r, delay=0.0, start=0.0):
    return delay - math.log(1 - (math.asin(level) - start) / (np.pi / 2 - start)) / r


def _record(traj, d=100, data=None, seed=0):
    data = dict(data or {})
    data["phases"] = analyze(traj, PhaseOptions(), d=d).to_dict()
    spec = SMALL.with_overrides({"init.seed": seed})
    return RunRecord("synthetic", spec, "ok", None, data, Path("."))


@pytest.fixture(scope="module")
def synthetic():
    t = np.linspace(0, 30, 30001)
    specs = [(0, 0.2, 0.5, 2.0), (1, 0.1, 0.25, 3.0)]
    G = great_circle_grams(t, specs, 2)
    return Trajectory(t, G, np.ones(G.shape[:2]), np.exp(-t), 2, 2), specs


def test_margins_of_built_in_claims_in_closed_form(synthetic):
    traj, specs = synthetic
    run = _record(traj)
    lags = [_t(0.5, r, tau) - _t(0.5, r, 0.0, th0) for _, th0, r, tau in specs]
    v = ROUTERS_LAG.evaluate(run)
    assert v.holds and v.margin == pytest.approx(min(lags), rel=1e-5)
    f = ROUTERS_FIRST.evaluate(run)
    assert not f.holds and f.margin == pytest.approx(-min(lags), rel=1e-5)
    R = [_t(0.9, r, tau) for _, _, r, tau in specs]
    o = RECOVERY_ORDER.evaluate(run)
    assert o.holds and o.margin == pytest.approx((R[1] - R[0]) / 30.0, rel=1e-5)
    # Peak alignment at t_end = 30 is sin of the (delayed) router angle of the slower pair.
    peak = math.sin(np.pi / 2 * (1 - math.exp(-0.25 * (30 - 3.0))))
    # Off-target, cross and self overlaps are all zero here, so T_c = 0 and only the alignment counts.
    p = PHASE1.evaluate(run)
    assert p.holds and p.margin == pytest.approx(peak - 0.9, rel=1e-9) and "from the start" in p.detail


def test_recovery_order_fails_when_the_smaller_overlap_wins():
    t = np.linspace(0, 30, 3001)
    specs = [(0, 0.1, 0.5, 1.0), (1, 0.2, 0.2, 1.0)]  # teacher 1 has the larger κ but is recovered later
    G = great_circle_grams(t, specs, 2)
    run = _record(Trajectory(t, G, np.ones(G.shape[:2]), np.exp(-t), 2, 2))
    R = [_t(0.9, r, tau) for _, _, r, tau in specs]
    v = RECOVERY_ORDER.evaluate(run)
    assert not v.holds and v.margin == pytest.approx((R[0] - R[1]) / 30.0, rel=1e-3)


def test_pruning_claim_reads_its_record(synthetic):
    traj, _ = synthetic
    run = _record(traj, data={"pruning": {"final_loss": 1e-14, "loss_before": 1.0, "loss_after_prune": 0.5,
                                          "t_end": 10.0, "below_threshold": []}})
    assert pruned_loss(1e-10).evaluate(run).margin == pytest.approx(4.0)
    assert pruned_loss(1e-16).evaluate(run).margin == pytest.approx(-2.0)
    run.data["pruning"]["final_loss"] = -4e-15  # round-off: its size counts
    assert pruned_loss(1e-10).evaluate(run).margin == pytest.approx(math.log10(1e-10 / 4e-15))
    run.data["pruning"]["final_loss"] = 1e-18  # below the round-off floor 1e-15
    assert pruned_loss(1e-10).evaluate(run).margin == pytest.approx(5.0)
    assert math.isnan(pruned_loss().evaluate(_record(traj)).margin)  # no pruning record: undetermined


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory):
    """Two real runs of the small preset (seeds 1, 2 align within t_end = 60), trajectories kept."""
    folder = tmp_path_factory.mktemp("verify")
    job = VerifyJob((), keep_trajectory=True, finetune_t_end=0.0)
    return run_sweep(seeds_of(SMALL, [1, 2]), job, folder, progress=False).records


def test_phase2_constant_against_a_direct_computation(small_runs):
    # C = max over error terms and saved t ≥ T₁ of err(t) / (m ε² + m² δ √d), ε = 1 − 0.9,
    # δ = mean square of the initial off-target overlaps (router with w⋆, expert with v⋆ when m⋆ = 1).
    from flowmoe.observables import DEFAULT_TC_TERMS, error_terms

    for rec in small_runs:
        traj, p = rec.trajectory(), rec.phases
        (i, j), = p.pairs
        m, d = 2, 50
        G0 = traj.gram[0]
        delta = np.mean([G0[i, 2 * m + 1] ** 2, G0[m + i, 2 * m] ** 2])
        B = m * 0.1**2 + m**2 * delta * math.sqrt(d)
        errs = error_terms(traj, [(i, j)])
        late = traj.t >= p.T1_pairs[0]
        C = max(np.max(errs[k][late, 0]) for k in DEFAULT_TC_TERMS) / B
        assert p.phase2["constant"] == pytest.approx(C, rel=1e-12)
        assert phase2_bound(2 * C).evaluate(rec).margin == pytest.approx(math.log10(2), rel=1e-9)
        assert not phase2_bound(C / 10).evaluate(rec).holds


def test_deliberately_false_claim_fails_with_negative_margin(small_runs):
    out = evaluate([ROUTERS_FIRST, ROUTERS_LAG], small_runs)
    false, true = out
    assert false.holds == 0 and len(false.failing) == 2 and false.worst_margin < 0
    assert true.holds == 2 and true.worst_margin > 0
    for rec, (seed, v) in zip(small_runs, false.verdicts):
        # Independent check of the margin: the same start integrated with another Runge–Kutta method
        # (Dopri8) saved every ≈ 0.003, crossings by linear interpolation (error ~h²/8·|x''/x'| < 1e-5);
        # no re-integrated brackets, no Hermite interpolation.
        traj = rec.trajectory()
        (i, j), = rec.phases.pairs
        t_end = rec.phases.router_crossings[0][rec.phases.levels.index(0.5)] + 1.0
        ref = flowmoe.flow_from_gram(traj.gram[0], traj.norms[0], 2, 1, np.linspace(0, t_end, 4001),
                                     method="dopri8", rtol=1e-11, atol=1e-13)
        te, tr = (first_crossing(ref.t, x[:, i, j], 0.5) for x in (ref.expert_alignment, ref.router_alignment))
        assert v.margin == pytest.approx(-(tr - te), abs=1e-5)


def test_user_claims_from_a_file_and_the_table(tmp_path, small_runs):
    path = tmp_path / "mine.py"
    path.write_text(
        "from flowmoe.claims import claim, Claim\n"
        "@claim('loss halves', description='final loss below half the initial; margin = ratio gap')\n"
        "def halves(run):\n"
        "    return 0.5 - run.phases.loss_final / run.phases.loss_initial\n"
        "@claim('broken')\n"
        "def broken(run):\n"
        "    raise KeyError('oops')\n"
        "NEVER = Claim('sweep has 3 runs', lambda runs: len(runs) - 3, scope='sweep')\n")
    mine = load_claims(path)
    assert sorted(c.name for c in mine) == ["broken", "loss halves", "sweep has 3 runs"]
    out = {s.claim.name: s for s in evaluate(mine, small_runs)}
    for seed, v in out["loss halves"].verdicts:
        rec = next(r for r in small_runs if r.seed == seed)
        assert v.margin == pytest.approx(0.5 - rec.trajectory().loss[-1] / rec.trajectory().loss[0], rel=1e-12)
    assert out["broken"].holds == 0 and len(out["broken"].undetermined) == 2
    assert "KeyError" in out["broken"].undetermined[0][1]
    assert out["sweep has 3 runs"].verdicts[0][1].margin == -1
    table = format_table(list(out.values()), replay="flowmoe run --preset small --set init.seed=SEED")
    assert "sweep has 3 runs" in table and "the sweep" in table and "replay" in table


def test_claim_helpers():
    assert Verdict(0.0).holds and not Verdict(-1e-12).holds and Verdict(math.inf).holds
    assert not Verdict(math.nan).holds and Verdict(math.nan).undetermined
    c = Claim("pos", lambda x: x)
    assert negate(c).evaluate(2.0).margin == -2.0
    assert c.evaluate(True).margin == 1.0 and c.evaluate("x").undetermined
    with pytest.raises(flowmoe.SpecError, match="claim.scope"):
        Claim("x", lambda r: 0, scope="batch")
    with pytest.raises(flowmoe.SpecError, match="claims"):
        load_claims("/nonexistent/claims.py")


def test_verify_command(tmp_path, capsys):
    claims = tmp_path / "c.py"
    claims.write_text("from flowmoe.claims import claim\n@claim('t_end is 60')\ndef f(run):\n"
                      "    return 60 - run.phases.t_end\n")
    args = ["verify", "--preset", "small", "--set", "solver.t_end=60", "solver.n_save=301", "--seeds", "1-2",
            "--out", str(tmp_path / "v"), "--quiet",
            "--finetune-t-end", "0", "--claims", str(claims)]
    assert main(args + ["--only", "routers-first", "routers-lag-experts", "t_end is 60"]) == 0
    out = capsys.readouterr().out
    assert "routers-first" in out and "0/2" in out and "2/2" in out and "init.seed=SEED" in out
    assert (tmp_path / "v" / "verify.json").is_file() and (tmp_path / "v" / "verify.md").is_file()
    assert main(args + ["--only", "routers-first", "--strict"]) == 1
    assert main(args + ["--only", "no-such-claim"]) == 2
    assert "only: unknown claims" in capsys.readouterr().err
    assert main(["verify", "--preset", "small", "--seeds", "x", "--out", str(tmp_path / "w")]) == 2
    assert main(["verify", "--list-claims"]) == 0
