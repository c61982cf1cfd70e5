"""Sweep results as labelled arrays (flowmoe.labelled): a d × seed grid written as netCDF, opened with
xarray and sliced, against the sweep's own JSON records; failed members; sweeps that are not a grid."""

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
import xarray as xr

import flowmoe
from flowmoe.errors import SolveError
from flowmoe.labelled import sweep_dataset, write_dataset
from flowmoe.sweep import run_sweep, seeds_of


@dataclass(frozen=True)
class MixedJob:
    """Records with every kind of leaf: floats, big and small ints, bools, None, strings, nested lists."""

    fail: tuple = ()

    def describe(self):
        return {"fail": list(self.fail)}

    def __call__(self, spec):
        d, seed = spec.model.d, spec.model.init.seed
        if (d, seed) in self.fail:
            raise SolveError(f"synthetic failure at d={d}, seed={seed} (≥ non-ASCII é)")
        return {"time": math.sqrt(d) / (seed + 1.0) + 1e-17, "steps": 100 * d + seed, "big": 2**40 + seed,
                "reached": seed % 2 == 0, "maybe": None if seed == 1 else 0.1 * seed, "name": f"run-{seed}",
                "d": d, "nested": {"pairs": [[seed, 1], [2, None]], "per_level": [0.5 * d] * (seed + 1)},
                "ragged": [[1.0], [1.0, 2.0]]}, None


def _specs(ds, seeds):
    base = flowmoe.load_preset("small")
    return [s for d in ds for s in seeds_of(base.with_overrides({"model.d": d}), seeds)]


def test_d_by_seed_grid_round_trips_through_netcdf(tmp_path):
    job = MixedJob(fail=((1000, 2),))
    res = run_sweep(_specs([1000, 10], [2, 0, 1]), job, tmp_path / "runs", progress=False)
    path = write_dataset(res.records, tmp_path / "sweep.nc")
    ds = xr.open_dataset(path)
    assert dict(ds.sizes)["d"] == 2 and dict(ds.sizes)["seed"] == 3
    assert ds["d"].values.tolist() == [10, 1000] and ds["seed"].values.tolist() == [0, 1, 2]  # sorted
    assert json.loads(ds.attrs["dims"]) == {"d": "model.d", "seed": "init.seed"}
    for p in (tmp_path / "runs").glob("*.json"):
        raw = json.loads(p.read_text())
        d, seed = raw["spec"]["model"]["d"], raw["spec"]["init"]["seed"]
        one = ds.sel(d=d, seed=seed)
        assert str(one["status"].values) == raw["status"] and str(one["key"].values) == raw["key"] == p.stem
        assert float(one["wall_s"]) == raw["wall_s"]
        if raw["status"] != "ok":
            assert str(one["error"].values) == raw["error"] and "é" in raw["error"]
            for name in ("time", "steps", "big", "reached", "data.d", "nested.pairs"):
                assert np.all(np.isnan(one[name].values)), name
            continue
        data = raw["data"]
        assert str(one["error"].values) == ""
        assert float(one["time"]) == data["time"]  # exact float64
        assert int(one["steps"]) == data["steps"] and float(one["big"]) == data["big"]
        assert float(one["reached"]) == float(data["reached"])
        assert (math.isnan(one["maybe"]) if data["maybe"] is None else float(one["maybe"]) == data["maybe"])
        assert str(one["name"].values) == data["name"]
        assert int(one["data.d"]) == data["d"] == d  # the job's own "d" beside the dimension d
        pairs = np.array([[math.nan if x is None else x for x in row] for row in data["nested"]["pairs"]])
        np.testing.assert_array_equal(one["nested.pairs"].values, pairs)
        levels = one["nested.per_level"].values  # padded with NaN to the longest member (seed 2: 3 levels)
        np.testing.assert_array_equal(levels[:seed + 1], data["nested"]["per_level"])
        assert np.all(np.isnan(levels[seed + 1:])) and levels.shape == (3,)
    assert "ragged" not in ds  # not an array: left to the JSON
    # Slicing as a user would: the times of seed 0 against d.
    t = ds["time"].sel(seed=0)
    assert t.dims == ("d",) and t.values.tolist() == [math.sqrt(10) + 1e-17, math.sqrt(1000) + 1e-17]
    # Integers wider than netCDF3's int32 and booleans with gaps come back as float64.
    assert ds["big"].dtype == np.float64 and ds["reached"].dtype == np.float64


def test_without_failures_integers_and_booleans_keep_their_type(tmp_path):
    res = run_sweep(_specs([10], [0, 1]), MixedJob(), tmp_path / "runs", progress=False)
    ds = xr.open_dataset(write_dataset(res.records, tmp_path / "s.nc"))
    assert ds["steps"].dtype == np.int32 and ds["reached"].dtype == bool
    assert ds["reached"].values.tolist() == [True, False] and ds["steps"].values.tolist() == [1000, 1001]
    assert list(ds["seed"].dims) == ["seed"] and "d" not in ds.dims  # d is not varied here


def test_members_that_are_not_a_grid_get_one_member_dimension(tmp_path):
    base = flowmoe.load_preset("small")
    specs = [base.with_overrides({"model.d": 10, "init.seed": 0}), base.with_overrides({"model.d": 20, "init.seed": 0}),
             base.with_overrides({"model.d": 20, "init.seed": 1})]  # (10, 1) is missing
    res = run_sweep(specs, MixedJob(), tmp_path / "runs", progress=False)
    ds = sweep_dataset(res.records)
    assert ds["time"].dims == ("member",)
    assert ds["d"].values.tolist() == [10, 20, 20] and ds["seed"].values.tolist() == [0, 0, 1]
    back = xr.open_dataset(write_dataset(res.records, tmp_path / "m.nc"))
    assert back["time"].sel(member=2).item() == res.records[2].data["time"]
    for i, rec in enumerate(res.records):
        assert ds["time"].values[i] == pytest.approx(rec.data["time"], rel=0, abs=0)
