"""Sweep results as labelled arrays: one xarray Dataset per sweep, written next to its JSON.

:func:`sweep_dataset` turns the records of a sweep (:class:`flowmoe.sweep.RunRecord`) into an
``xarray.Dataset``:

- **dimensions** are the spec fields the sweep varies, named by their last component
  (``init.seed`` → ``seed``, ``model.d`` → ``d``, ``model.m`` → ``m``; the dotted name with ``_`` when two
  would clash), with the sorted values as coordinates. When the members do not fill the grid of
  those values (e.g. two fields vary together) there is one dimension ``member`` instead, with every
  varying field as a coordinate along it (as JSON text when it is not a number or a string);
- **variables**: ``status``, ``error`` ("" when none), ``key`` (the cache key: ``OUT/runs/KEY.json``),
  ``wall_s``, and every leaf of the job's record, named by its dotted path (``phases.T1``,
  ``summary.final_loss``, ``recovery.first.time``, …; ``data.NAME`` when NAME is a dimension).
  Numbers are float64 with NaN where the JSON has null or the member failed (integers without gaps
  stay integers, as int32), booleans stay booleans when no member lacks them, strings are strings.
  A list of numbers becomes a float64 variable with extra dimensions ``NAME.dim0``, ``NAME.dim1``, …,
  padded with NaN to the longest member (at least one entry: an empty list is one NaN); lists of other things (and leaves whose type differs
  between members) are left to the JSON;
- **attributes**: ``spec`` (JSON of the first member's spec), ``dims`` (JSON: dimension → spec field),
  ``left_out`` (JSON list of the record paths not stored), ``flowmoe`` (version); each variable's
  ``field`` attribute is its path in the cached JSON record.

:func:`write_dataset` writes it as netCDF with xarray's ``scipy`` engine (netCDF3: no netCDF4/HDF5
library needed; it has no 64-bit integers, hence int32 or float64 above). Open it with
``xarray.open_dataset(path)`` and slice, e.g. ``ds["phases.T1"].sel(seed=3)``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

INT32 = np.iinfo(np.int32)


def flatten(tree, prefix: str = "") -> dict:
    """{dotted path: leaf} of nested dicts (lists are leaves)."""
    out = {}
    for k, v in tree.items():
        name = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, name))
        else:
            out[name] = v
    return out


def _dims(records) -> tuple[list, dict, list]:
    """(dimension names, {name: spec field}, flattened specs) of the spec fields that vary across records."""
    specs = [flatten(r.spec.to_dict()) for r in records]
    fields = []
    for name in specs[0]:
        values = {json.dumps(s.get(name), sort_keys=True) for s in specs}
        if len(values) > 1:
            fields.append(name)
    fields.sort(key=lambda f: f == "init.seed")  # seed last, the others in spec order
    short = [f.rsplit(".", 1)[-1] for f in fields]
    names = [s if short.count(s) == 1 else f.replace(".", "_") for s, f in zip(short, fields)]
    return names, dict(zip(names, fields)), specs


def _column(values):
    """A numpy array (and extra trailing shape) for one leaf over the members, or None to skip it."""
    present = [v for v in values if v is not None]
    if not present:
        return np.full(len(values), np.nan)
    if all(isinstance(v, bool) for v in present):
        if len(present) == len(values):
            return np.array(values, dtype=bool)
        return np.array([np.nan if v is None else float(v) for v in values])
    if all(_is_number(v) for v in present):
        if (len(present) == len(values) and all(isinstance(v, int) for v in present)
                and INT32.min <= min(present) and max(present) <= INT32.max):
            return np.array(values, dtype=np.int32)
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    if all(isinstance(v, str) for v in present):
        return np.array(["" if v is None else v for v in values], dtype=str)
    if all(isinstance(v, list) for v in present):
        arrays = []
        for v in values:
            if v is None:
                arrays.append(None)
                continue
            try:
                a = np.array(_nan_for_none(v), dtype=np.float64)
            except (TypeError, ValueError):
                return None  # ragged or not numbers
            arrays.append(a)
        ndims = {a.ndim for a in arrays if a is not None}
        if len(ndims) != 1:
            return None
        # At least one entry per axis: netCDF3 takes a dimension of length 0 for its unlimited one.
        shape = tuple(max([1] + [a.shape[k] for a in arrays if a is not None]) for k in range(ndims.pop()))
        out = np.full((len(values),) + shape, np.nan)
        for i, a in enumerate(arrays):
            if a is not None:
                out[(i,) + tuple(slice(0, n) for n in a.shape)] = a
        return out
    return None


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _nan_for_none(x):
    if x is None:
        return math.nan
    if isinstance(x, list):
        return [_nan_for_none(v) for v in x]
    if isinstance(x, (bool, int, float)):
        return float(x)
    raise TypeError(type(x).__name__)


def sweep_dataset(records):
    """The labelled arrays of a sweep's records (see the module docstring)."""
    import xarray as xr

    from . import __version__

    records = list(records)
    if not records:
        raise ValueError("no records")
    names, fields, specs = _dims(records)
    # A grid needs sortable coordinates: per field, all numbers or all strings.
    grid = all(all(_is_number(s[f]) for s in specs) or all(isinstance(s[f], str) for s in specs)
               for f in fields.values())
    if grid:
        coords = {n: sorted({s[fields[n]] for s in specs}) for n in names}
        cells = [tuple(coords[n].index(s[fields[n]]) for n in names) for s in specs]
        grid = len(set(cells)) == len(cells) == int(np.prod([len(coords[n]) for n in names]))
    if grid:
        dims, shape = tuple(names), tuple(len(coords[n]) for n in names)
        order = np.empty(len(records), dtype=int)  # member index at each flat cell
        for i, c in enumerate(cells):
            order[np.ravel_multi_index(c, shape) if names else 0] = i
        ds_coords = {n: np.asarray(coords[n]) for n in names}
    else:
        dims, shape, order = ("member",), (len(records),), np.arange(len(records))
        ds_coords = {"member": np.arange(len(records))}
        for n in names:
            values = [s[fields[n]] for s in specs]
            plain = all(_is_number(v) for v in values) or all(isinstance(v, str) for v in values)
            ds_coords[n] = ("member", np.asarray(values if plain else [json.dumps(v) for v in values]))

    leaves = [dict({"status": r.status, "error": r.error or "", "key": r.key, "wall_s": r.wall_s},
                   **{f"data.{k}": v for k, v in flatten(r.data).items()}) for r in records]
    paths = list(dict.fromkeys(p for leaf in leaves for p in leaf))
    variables, left_out = {}, []
    reserved = set(names) | {"member", "status", "error", "key", "wall_s"}
    for path in paths:
        col = _column([leaves[i].get(path) for i in order])
        if col is None:
            left_out.append(path)
            continue
        name = path[5:] if path.startswith("data.") else path
        if path.startswith("data.") and name in reserved:
            name = path  # e.g. a job's own "d" or "seed" beside the dimension of that name
        extra = tuple(f"{name}.dim{k}" for k in range(col.ndim - 1))
        variables[name] = xr.Variable(dims + extra, col.reshape(shape + col.shape[1:]), attrs={"field": path})
    attrs = {"spec": json.dumps(records[0].spec.to_dict(), sort_keys=True), "dims": json.dumps(fields),
             "left_out": json.dumps(left_out), "flowmoe": __version__}
    return xr.Dataset(variables, coords=ds_coords, attrs=attrs)


def write_dataset(records, path) -> Path:
    """Write :func:`sweep_dataset` of ``records`` to ``path`` (netCDF3, scipy engine; atomic rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}{path.suffix}")
    sweep_dataset(records).to_netcdf(tmp, engine="scipy")
    os.replace(tmp, path)
    return path
