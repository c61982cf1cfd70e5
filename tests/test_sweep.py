"""Sweeps: cache, resume after an interruption, failing members, process pool, chunked integration."""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import flowmoe
from flowmoe.errors import SolveError, SpecError
from flowmoe.sweep import integrate_spec, member_key, parse_seeds, run_sweep, seeds_of


@dataclass(frozen=True)
class CountingJob:
    """A cheap job that logs every call (one line per computed seed) and fails on request."""

    log: str
    fail_seed: int = -1
    crash_seed: int = -1

    def describe(self):
        return {"log": self.log, "fail_seed": self.fail_seed, "crash_seed": self.crash_seed}

    def __call__(self, spec):
        seed = spec.model.init.seed
        with open(self.log, "a") as f:
            f.write(f"{seed}\n")
        if seed == self.fail_seed:
            raise SolveError("synthetic solver failure")
        if seed == self.crash_seed:
            raise RuntimeError("synthetic bug")
        return {"value": seed**2 + spec.model.d}, None


def _calls(log):
    p = Path(log)
    return [int(x) for x in p.read_text().split()] if p.is_file() else []


@pytest.fixture
def specs():
    return seeds_of(flowmoe.load_preset("small"), range(5))


def test_interrupted_sweep_resumes_without_recomputing(tmp_path, specs):
    job = CountingJob(str(tmp_path / "calls.log"))
    seen = []

    def interrupt(rec):
        seen.append(rec.seed)
        if len(seen) == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_sweep(specs, job, tmp_path / "runs", progress=False, on_result=interrupt)
    assert _calls(job.log) == [0, 1]
    res = run_sweep(specs, job, tmp_path / "runs", progress=False)
    assert _calls(job.log) == [0, 1, 2, 3, 4]  # seeds 0 and 1 were not computed again
    assert (res.computed, res.loaded) == (3, 2)
    assert [r.data["value"] for r in res.records] == [s**2 + 50 for s in range(5)]
    assert [r.cached for r in res.records] == [True, True, False, False, False]
    again = run_sweep(specs, job, tmp_path / "runs", progress=False)
    assert (again.computed, again.loaded) == (0, 5) and len(_calls(job.log)) == 5


def test_failing_members_do_not_lose_the_others(tmp_path, specs):
    job = CountingJob(str(tmp_path / "calls.log"), fail_seed=1, crash_seed=3)
    res = run_sweep(specs, job, tmp_path / "runs", progress=False)
    status = {r.seed: r.status for r in res.records}
    assert status == {0: "ok", 1: "failed", 2: "ok", 3: "failed", 4: "ok"}
    errors = {r.seed: r.error for r in res.failed}
    assert "synthetic solver failure" in errors[1] and "RuntimeError: synthetic bug" in errors[3]
    # A SolveError is cached (deterministic); an unexpected exception is not and is retried.
    res2 = run_sweep(specs, job, tmp_path / "runs", progress=False)
    assert _calls(job.log) == [0, 1, 2, 3, 4, 3] and res2.computed == 1
    run_sweep(specs, job, tmp_path / "runs", progress=False, retry_failed=True)
    assert _calls(job.log)[-2:] == [1, 3]


def test_cache_key_depends_on_spec_seed_and_job(tmp_path, specs):
    job = CountingJob("a")
    keys = {member_key(s, job) for s in specs}
    assert len(keys) == 5
    assert member_key(specs[0], job) == member_key(flowmoe.load_preset("small"), job)
    assert member_key(specs[0], job) != member_key(specs[0].with_overrides({"model.d": 51}), job)
    assert member_key(specs[0], job) != member_key(specs[0], CountingJob("b"))


def test_cache_files_hold_spec_and_status(tmp_path, specs):
    job = CountingJob(str(tmp_path / "calls.log"))
    res = run_sweep(specs[:2], job, tmp_path / "runs", progress=False)
    raw = json.loads((tmp_path / "runs" / f"{res.records[1].key}.json").read_text())
    assert raw["status"] == "ok" and raw["seed"] == 1
    assert flowmoe.RunSpec.from_dict(raw["spec"]).to_dict() == specs[1].to_dict()
    assert not list((tmp_path / "runs").glob("*.tmp*"))


def test_process_pool_gives_the_sequential_results(tmp_path, specs):
    job = CountingJob(str(tmp_path / "calls.log"), fail_seed=2)
    res = run_sweep(specs, job, tmp_path / "pool", workers=2, progress=False)
    assert [r.status for r in res.records] == ["ok", "ok", "failed", "ok", "ok"]
    assert [r.data.get("value") for r in res.records] == [0 + 50, 1 + 50, None, 9 + 50, 16 + 50]
    assert sorted(_calls(job.log)) == [0, 1, 2, 3, 4]


def test_parse_seeds_and_bad_workers(tmp_path, specs):
    assert parse_seeds("0-3,7, 9") == [0, 1, 2, 3, 7, 9]
    for bad in ("a-b", "3-1", "-1", ""):
        with pytest.raises(SpecError, match="seeds"):
            parse_seeds(bad)
    with pytest.raises(SpecError, match="workers"):
        run_sweep(specs, CountingJob("x"), tmp_path, workers=0)


def test_chunked_integration_matches_one_solve_and_stops_early():
    spec = flowmoe.load_preset("small").with_overrides({"solver.t_end": 20.0, "solver.n_save": 101})
    ts = spec.solver.times()  # 100 intervals: three chunks of 32 and a padded one of 4
    from flowmoe.init import initial_state

    st = initial_state(spec.model)
    ref = flowmoe.flow_from_gram(st.gram, st.norms, 2, 1, ts, rtol=1e-10, atol=1e-12)
    traj = integrate_spec(spec)
    np.testing.assert_array_equal(traj.t, ts)
    # Restarting the solver at chunk boundaries changes the steps, not the solution: rtol 1e-10.
    np.testing.assert_allclose(traj.gram, ref.gram, atol=1e-8)
    np.testing.assert_allclose(traj.loss, ref.loss, rtol=1e-7, atol=1e-12)
    stop_at = ref.loss[0] * 0.9
    early = integrate_spec(spec, stop=lambda tr: tr.loss[-1] < stop_at)
    assert early.provenance.status == "stopped-early" and early.t[-1] < 20.0 and len(early.t) % 32 == 1
    assert early.loss[-1] < stop_at and np.all(early.loss[:-32] >= stop_at * (1 - 1e-12))
    np.testing.assert_allclose(early.gram, traj.gram[:len(early.t)], atol=1e-12)
