"""Batched sweeps (``executor="batched"``): members of one structure in vmapped diffrax solves.

The reference is the per-run path (each member integrated alone by ``integrate_spec``): the batched
records must equal it to rtol 1e-6 on T₁ and the final loss, with and without a stopping rule, and
a member that stops in its batch must be reported and then get the record it gets alone.
"""

from dataclasses import dataclass

import numpy as np
import pytest

import flowmoe
from flowmoe.errors import SpecError
from flowmoe.observables import summarize
from flowmoe.sweep import integrate_spec, run_sweep, seeds_of

RTOL = 1e-6


@dataclass(frozen=True)
class FlowJob:
    """Integrate (optionally until the loss drops below ``stop_loss``); record T₁ and the final loss."""

    stop_loss: float = 0.0

    def describe(self):
        return {"stop_loss": self.stop_loss}

    def batch_times(self, spec):
        return spec.solver.times()

    def __call__(self, spec):
        stop = (lambda tr: tr.loss[-1] < self.stop_loss) if self.stop_loss else None
        traj = integrate_spec(spec, stop=stop)
        return {"T1": summarize(traj, 0.9, 0.05)["T1"], "loss": float(traj.loss[-1]), "t_stop": float(traj.t[-1]),
                "status": traj.provenance.status}, None


BASE = {"model.m": 4, "model.m_star": 2, "model.d": 100, "solver.t_end": 60.0, "solver.n_save": 121}


def _close(a, b):
    assert a.status == b.status
    if not a.ok:
        assert a.error == b.error
        return
    assert a.data["status"] == b.data["status"] and a.data["t_stop"] == b.data["t_stop"]
    assert (a.data["T1"] is None) == (b.data["T1"] is None)
    if a.data["T1"] is not None:
        assert b.data["T1"] == pytest.approx(a.data["T1"], rel=RTOL)
    assert b.data["loss"] == pytest.approx(a.data["loss"], rel=RTOL)


@pytest.mark.parametrize("stop_loss", [0.0, 0.05])
def test_batched_records_equal_the_per_run_records(tmp_path, stop_loss):
    specs = seeds_of(flowmoe.load_preset("paper-fig1").with_overrides(BASE), range(4))
    job = FlowJob(stop_loss)
    alone = run_sweep(specs, job, tmp_path / "alone", progress=False)
    batched = run_sweep(specs, job, tmp_path / "batched", progress=False, executor="batched")
    assert batched.alone == {} and batched.computed == 4
    for a, b in zip(alone.records, batched.records):
        _close(a, b)
    if stop_loss:  # the stopping rule stopped some members, at different times
        assert {r.data["status"] for r in batched.records} == {"stopped-early", "complete"}
    t1_values = {r.data["T1"] for r in batched.records}
    assert len(t1_values) > 2  # the members differ (a batch is not one member repeated)


def test_a_member_that_stops_in_its_batch_is_reported_and_runs_alone(tmp_path):
    """Two members at d = 100 need more than max_steps = 120 steps per chunk, the one at d = 10⁶ (on
    its plateau) does not: the batch reports the two, and their records are the per-run failures."""
    base = flowmoe.load_preset("paper-fig1").with_overrides(
        {**BASE, "solver.max_steps": 120, "solver.stiff": "off", "init.sampler": "gram"})
    specs = seeds_of(base, range(2)) + [base.with_overrides({"model.d": 10**6})]
    alone = run_sweep(specs, FlowJob(), tmp_path / "alone", progress=False)
    batched = run_sweep(specs, FlowJob(), tmp_path / "batched", progress=False, executor="batched")
    assert sorted(batched.alone) == [0, 1] and all("max_steps 120" in w for w in batched.alone.values())
    assert [r.status for r in batched.records] == ["failed", "failed", "ok"]
    for a, b in zip(alone.records, batched.records):
        _close(a, b)


def test_integrate_batch_reports_a_non_finite_member():
    from flowmoe.backends import make_backend
    from flowmoe.init import initial_state
    from flowmoe.layout import Layout
    from flowmoe.ode import integrate_batch, terms_for, vector_field
    from flowmoe.spec import SolverSpec

    spec = flowmoe.load_preset("paper-fig1").with_overrides(BASE)
    st = initial_state(spec.model)
    vf = vector_field(make_backend("pair", "sigmoid", "he3", Layout(4, 2)), terms_for(SolverSpec()))
    G = np.stack([st.gram, st.gram])
    r = np.stack([st.norms, st.norms])
    r[1, 0] = np.nan
    gram, norms, ok, stats = integrate_batch(vf, G, r, np.linspace(0.0, 1.0, 5), SolverSpec(max_steps=200))
    assert ok.tolist() == [True, False]
    assert np.all(np.isfinite(gram[0])) and stats[0]["steps"] > 0


def test_batched_bad_input_is_one_line(tmp_path):
    specs = seeds_of(flowmoe.load_preset("paper-fig1").with_overrides(BASE), range(2))
    with pytest.raises(SpecError, match="^workers: executor 'batched'"):
        run_sweep(specs, FlowJob(), tmp_path, workers=2, progress=False, executor="batched")

    class NoTimes:
        def describe(self):
            return {}

        def __call__(self, spec):
            return {}, None
    with pytest.raises(SpecError, match="^executor: 'batched' needs a job with batch_times"):
        run_sweep(specs, NoTimes(), tmp_path, progress=False, executor="batched")
