"""Sweep results as labelled arrays (flowmoe.labelled): `flowmoe verify`'s verify.nc and a d × seed grid,
written as netCDF, opened with xarray and sliced, against the sweep's own JSON records; failed members;
sweeps that are not a grid."""

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
import xarray as xr

import flowmoe
from flowmoe.cli import main
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
                "ragged": [[1.0], [1.0, 2.0]], "empty": []}, None


def _specs(ds, seeds):
    base = flowmoe.load_preset("small")
    return [s for d in ds for s in seeds_of(base.with_overrides({"model.d": d}), seeds)]


def test_d_by_seed_grid_round_trips_through_netcdf(tmp_path):
    job = MixedJob(fail=((1000, 2),))
    res = run_sweep(_specs([1000, 10], [2, 0, 1]), job, tmp_path / "runs", progress=False)
    path = write_dataset(res.records, tmp_path / "sweep.nc")
    ds = xr.load_dataset(path)
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
    assert "ragged" not in ds and json.loads(ds.attrs["left_out"]) == ["data.ragged"]  # not an array
    # Empty in every member: one NaN (netCDF3 would read a dimension of length 0 as its unlimited one).
    assert ds["empty"].shape == (2, 3, 1) and np.all(np.isnan(ds["empty"].values))
    # Slicing as a user would: the times of seed 0 against d.
    t = ds["time"].sel(seed=0)
    assert t.dims == ("d",) and t.values.tolist() == [math.sqrt(10) + 1e-17, math.sqrt(1000) + 1e-17]
    # Integers wider than netCDF3's int32 and booleans with gaps come back as float64.
    assert ds["big"].dtype == np.float64 and ds["reached"].dtype == np.float64


def test_without_failures_integers_and_booleans_keep_their_type(tmp_path):
    res = run_sweep(_specs([10], [0, 1]), MixedJob(), tmp_path / "runs", progress=False)
    ds = xr.load_dataset(write_dataset(res.records, tmp_path / "s.nc"))
    assert ds["steps"].dtype == np.int32 and ds["reached"].dtype == bool
    assert ds["reached"].values.tolist() == [True, False] and ds["steps"].values.tolist() == [1000, 1001]
    assert list(ds["seed"].dims) == ["seed"] and "d" not in ds.dims  # d is not varied here


def test_members_that_are_not_a_grid_get_one_member_dimension(tmp_path):
    base = flowmoe.load_preset("small")
    specs = [base.with_overrides({"model.d": d, "init.seed": s}) for d, s in ((10, 0), (20, 0), (20, 1))]
    # (10, 1) is missing: not a grid
    res = run_sweep(specs, MixedJob(), tmp_path / "runs", progress=False)
    ds = sweep_dataset(res.records)
    assert ds["time"].dims == ("member",)
    assert ds["d"].values.tolist() == [10, 20, 20] and ds["seed"].values.tolist() == [0, 0, 1]
    back = xr.load_dataset(write_dataset(res.records, tmp_path / "m.nc"))
    assert back["time"].sel(member=2).item() == res.records[2].data["time"]
    for i, rec in enumerate(res.records):
        assert ds["time"].values[i] == pytest.approx(rec.data["time"], rel=0, abs=0)


def _leaves(tree, prefix=""):
    for k, v in tree.items():
        name = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            yield from _leaves(v, name)
        else:
            yield name, v


def test_verify_nc_sliced_by_seed_equals_each_cached_json_record(tmp_path):
    out = tmp_path / "v"
    assert main(["verify", "--preset", "small", "--set", "solver.t_end=12", "solver.n_save=25", "--seeds", "0-1",
                 "--finetune-t-end", "0", "--quiet", "--out", str(out)]) == 0
    with xr.open_dataset(out / "verify.nc") as ds:
        ds.load()
    assert ds["seed"].values.tolist() == [0, 1] and json.loads(ds.attrs["left_out"]) == []
    checked = 0
    for path in sorted((out / "runs").glob("*.json")):
        raw = json.loads(path.read_text())
        one = ds.sel(seed=raw["seed"])
        assert str(one["status"].values) == raw["status"] == "ok" and str(one["key"].values) == raw["key"]
        for name, value in _leaves(raw["data"]):
            got = one[name].values
            if isinstance(value, str):
                assert str(got) == value, name
            elif isinstance(value, list):
                want = np.array([[math.nan if x is None else x for x in row] if isinstance(row, list)
                                 else (math.nan if row is None else row) for row in value], dtype=float)
                if want.size:  # the member's own entries; any rest is padding to the longest member
                    sub = got[tuple(slice(0, n) for n in want.shape)]
                    np.testing.assert_array_equal(sub, want, err_msg=name)
            elif value is None:
                assert np.isnan(got), name
            else:
                assert got == value, name  # exact: float64 (or int32/bool) both ways
            checked += 1
    assert checked > 2 * 50
