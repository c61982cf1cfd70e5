"""Sweeps on Dask: the same records as the local executor, resume after an interruption, a cluster of
flowmoe's own, one-line errors.

The cluster is a ``distributed.LocalCluster`` started here (two single-threaded worker processes,
no XLA flags of its own: flowmoe's worker plugin must set them, or the numbers would differ from the
local pool's in the last bits). One tiny verify sweep on the local pool is the reference.
"""

import json
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import xarray as xr
from distributed import LocalCluster

import flowmoe
from flowmoe.cli import main
from flowmoe.dask_executor import DaskExecutor
from flowmoe.errors import SpecError
from flowmoe.sweep import XLA_SINGLE_THREAD, run_sweep, seeds_of
from flowmoe.verify import VerifyJob

SETS = ["solver.t_end=12", "solver.n_save=25"]
SEEDS = [0, 1, 2]
ARGS = ["verify", "--preset", "small", "--set", *SETS, "--seeds", "0-2", "--finetune-t-end", "0", "--quiet",
        "--workers", "2"]
# The job `flowmoe verify` builds from its default options.
JOB = VerifyJob(tuple(sorted({"eps_A": "threshold", "delta_P": "offtarget-sq", "lag_level": 0.5,
                              "matching": "initial"}.items())), False, 0.0)


def untimed(x):
    """A JSON record without its wall-clock times (keys ending in _s), which differ between any two runs."""
    if isinstance(x, dict):
        return {k: untimed(v) for k, v in x.items() if not k.endswith("_s")}
    return x


def cached_runs(folder: Path) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in sorted((folder / "runs").glob("*.json"))}


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c:
        yield c


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """`flowmoe verify` on the local process pool (--workers 2)."""
    out = tmp_path_factory.mktemp("local")
    assert main(ARGS + ["--out", str(out)]) == 0
    return out


def test_dask_verify_gives_the_local_records(cluster, reference, tmp_path):
    out = tmp_path / "dask"
    dask_args = ["--executor", "dask", "--scheduler", cluster.scheduler_address, "--out", str(out)]
    assert main(ARGS + dask_args) == 0
    local, dask = cached_runs(reference), cached_runs(out)
    assert len(local) == 3 and local.keys() == dask.keys()
    for key in local:
        assert local[key]["status"] == "ok"
        assert untimed(dask[key]) == untimed(local[key])  # bit for bit: JSON keeps every float's 17 digits
    claims = [json.loads((f / "verify.json").read_text())["claims"] for f in (reference, out)]
    assert claims[0] == claims[1]
    ds = [xr.load_dataset(f / "verify.nc") for f in (reference, out)]
    timed = [v for v in ds[0].data_vars if v.endswith("_s")]
    xr.testing.assert_identical(ds[0].drop_vars(timed), ds[1].drop_vars(timed))
    # The cluster was started without XLA flags: flowmoe's worker plugin set them on each worker.
    from distributed import Client

    with Client(cluster, set_as_default=False) as client:
        flags = client.run(_xla_flags)
    assert len(flags) == 2 and set(flags.values()) == {os.environ.get("XLA_FLAGS", XLA_SINGLE_THREAD)}


def _xla_flags():
    return os.environ.get("XLA_FLAGS")


def _specs():
    return seeds_of(flowmoe.load_preset("small").with_overrides(SETS), SEEDS)


def test_interrupted_dask_sweep_resumes_from_its_cache(cluster, tmp_path):
    from distributed import Client

    specs, folder = seeds_of(flowmoe.load_preset("small").with_overrides(SETS), range(6)), tmp_path / "runs"
    seen = []

    def stop_after_first(rec):
        seen.append(rec)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(specs, JOB, folder, progress=False, executor="dask", scheduler=cluster.scheduler_address,
                  on_result=stop_after_first)
    assert len(seen) == 1
    # Members running at the interruption finished and were cached completely; none was half-written.
    assert not list(folder.glob("*.tmp*"))
    before = {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}
    assert seen[0].key in before and len(before) < 6  # at most the two running ones besides: not all
    full = run_sweep(specs, JOB, tmp_path / "full", progress=False, executor="dask",
                     scheduler=cluster.scheduler_address)  # the same sweep, not interrupted
    with Client(cluster, set_as_default=False) as client:  # resume, on a client the caller owns this time
        res = run_sweep(specs, JOB, folder, progress=False, executor=DaskExecutor(client=client))
        assert client.status == "running"  # not closed by the sweep
    assert (res.loaded, res.computed) == (len(before), 6 - len(before))
    for rec, ref in zip(res.records, full.records):
        raw = json.loads((folder / f"{rec.key}.json").read_text())
        if rec.key in before:  # loaded, not recomputed: the very record of the first pass
            assert rec.cached and raw == before[rec.key]
        else:
            assert not rec.cached and rec.key in res.keys_computed
        uninterrupted = json.loads((tmp_path / "full" / f"{ref.key}.json").read_text())
        assert rec.key == ref.key and untimed(raw) == untimed(uninterrupted)


@dataclass(frozen=True)
class EnvJob:
    """No JAX: reports the worker's process and XLA_FLAGS."""

    def describe(self):
        return {}

    def __call__(self, spec):
        seed = spec.model.init.seed
        return {"value": seed**2 + 0.5, "pid": os.getpid(), "xla_flags": os.environ.get("XLA_FLAGS")}, None


def test_dask_executor_runs_on_its_own_local_cluster_and_closes_it(tmp_path):
    specs = seeds_of(flowmoe.load_preset("small"), range(4))
    seq = run_sweep(specs, EnvJob(), tmp_path / "seq", progress=False)
    children = {p.pid for p in multiprocessing.active_children()}
    res = run_sweep(specs, EnvJob(), tmp_path / "dask", workers=1, progress=False, executor="dask")
    assert {p.pid for p in multiprocessing.active_children()} <= children  # its cluster is gone
    values = [r.data["value"] for r in res.records]
    assert values == [r.data["value"] for r in seq.records] == [0.5, 1.5, 4.5, 9.5]
    pids = {r.data["pid"] for r in res.records}
    assert os.getpid() not in pids and len(pids) == 1  # --workers 1: one worker process
    assert {r.data["xla_flags"] for r in res.records} == {os.environ.get("XLA_FLAGS", XLA_SINGLE_THREAD)}
    again = run_sweep(specs, EnvJob(), tmp_path / "dask", workers=1, progress=False, executor="dask")
    assert (again.loaded, again.computed) == (4, 0)  # all cached: no cluster needed


def test_executor_errors_are_one_line(tmp_path, capsys, monkeypatch):
    base = ["verify", "--preset", "small", "--seeds", "0", "--quiet", "--out", str(tmp_path)]
    assert main(base + ["--executor", "nosuch"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "executor: got 'nosuch'; allowed: local, dask" in err
    assert main(base + ["--scheduler", "tcp://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "scheduler: needs --executor dask" in err
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "distributed", None)  # as if dask were not installed
        assert main(base + ["--executor", "dask"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pip install 'flowmoe[dask]'" in err
    assert not list(tmp_path.glob("runs/*.json"))  # nothing ran
    t0 = time.perf_counter()
    with pytest.raises(SpecError, match=r"^scheduler: cannot reach the Dask scheduler at 'tcp://127\.0\.0\.1:9'"):
        DaskExecutor(scheduler="tcp://127.0.0.1:9", timeout=1.0)
    assert time.perf_counter() - t0 < 10
    with pytest.raises(SpecError, match="executor"):
        run_sweep(_specs(), JOB, tmp_path, executor=object())
