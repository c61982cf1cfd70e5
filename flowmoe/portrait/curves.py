"""Curves on a plane: trajectories (restricted and of the whole system, projected) and separatrices."""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp

from ..errors import SolveError
from ..ode import integrate
from ..spec import SolverSpec
from .plane import Plane
from .reduction import Reduction


def integrate_plane(plane: Plane, start, t_end: float, backward: bool = False, rtol=1e-9, atol=1e-12,
                    n_out: int = 400, return_times: bool = False):
    """Integrate the 2-D plane field (DOP853) from ``start``, output at ``n_out`` equally spaced times
    in [0, t_end]; stops at the box edge, when G leaves the PSD cone, or when the speed falls below
    1e-10 (a fixed point is reached). Returns the points (and the times if ``return_times``)."""
    f = plane.field
    sign = -1.0 if backward else 1.0
    (x0, x1), (y0, y1) = plane.xlim, plane.ylim
    pad = 1e-9

    def rhs(t, z):
        return sign * f(z)

    def leave(t, z):
        return min(z[0] - x0 + pad, x1 + pad - z[0], z[1] - y0 + pad, y1 + pad - z[1])
    leave.terminal = True

    def rest(t, z):
        return float(np.max(np.abs(rhs(t, z)))) - 1e-10
    rest.terminal = True
    sol = solve_ivp(rhs, (0.0, t_end), np.asarray(start, dtype=float), method="DOP853", rtol=rtol, atol=atol,
                    events=(leave, rest), dense_output=True)
    ts = np.linspace(0.0, t_end, n_out)
    ts = ts[ts <= sol.t[-1]]
    pts = sol.sol(ts).T if len(ts) else np.zeros((0, 2))
    good = plane.valid(pts, tol=1e-8)
    stop = int(np.argmin(good)) if not good.all() else len(pts)
    return (ts[:stop], pts[:stop]) if return_times else pts[:stop]


def separatrices(plane: Plane, fixed_points: list[dict], t_end: float = 400.0, h: float = 1e-6) -> list[dict]:
    """Stable (backward in time) and unstable (forward) manifolds of each saddle, both branches."""
    out = []
    span = max(plane.xlim[1] - plane.xlim[0], plane.ylim[1] - plane.ylim[0])
    for k, fp in enumerate(fixed_points):
        if fp["kind"] != "saddle":
            continue
        p = np.array(fp["point"])
        V = np.array(fp["eigenvectors"])
        for lam, vec, d in zip(fp["eigenvalues"], V.T, fp["directions"]):
            if d == "leaves":
                continue
            manifold = "unstable" if lam > 0 else "stable"
            for s in (1.0, -1.0):
                start = p + s * h * span * vec / np.linalg.norm(vec)
                if not plane.valid(start[None])[0]:
                    continue
                curve = integrate_plane(plane, start, t_end, backward=(manifold == "stable"))
                if len(curve) >= 2:
                    out.append({"saddle": k, "manifold": manifold, "branch": int(s),
                                "points": np.vstack([p, curve])})
    return out


def default_starts(plane: Plane, base: np.ndarray | None = None) -> np.ndarray:
    """The base point (slices) and 8 points on an ellipse at 60 % of the half-widths, rotated by π/8."""
    (x0, x1), (y0, y1) = plane.xlim, plane.ylim
    cx, cy, hx, hy = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    th = np.pi / 8 + np.arange(8) * np.pi / 4
    pts = np.stack([cx + 0.6 * hx * np.cos(th), cy + 0.6 * hy * np.sin(th)], -1)
    if base is not None:
        pts = np.vstack([base, pts])
    return pts


def trajectory_mode(reduction: Reduction) -> str:
    """How the whole system is integrated: "full" (the engine's integrator on the whole Gram matrix:
    pair and slices) or "reduced" (identical students: the K reduced coordinates, which keeps them
    exactly identical; a full-Gram integration would let round-off split them, see below)."""
    return "reduced" if reduction.kind == "symmetric" else "full"


def trajectories(plane: Plane, starts, t_end: float, invariant: bool, n_save: int = 401, rtol=1e-9,
                 atol=1e-11) -> list[dict]:
    """Trajectories from each valid start.

    The whole system is integrated (see :func:`trajectory_mode`) and projected on (x, y) (``xy_full``);
    ``off_plane`` is the largest deviation of the held coordinates (and, for full flows, of the other
    entries of C) from their plane values along the way. On a slice the drawn curve ``xy`` is that
    projection. On an invariant plane ``xy`` is the flow restricted to the plane (the plane field,
    DOP853): the exact dynamics there. The whole-system flow then stays on the plane only if the plane
    is transversally stable: if round-off grows (``off_plane`` ≫ tolerance) the plane repels; e.g.
    identical students repel each other (a 1e-6 asymmetry grows to O(1) by t ≈ 2 for 3 students in
    the (μ, ν) plane), and that plane also repels in α, β, ρ.
    """
    red = plane.reduction
    starts = np.asarray(starts, dtype=float).reshape(-1, 2)
    ts = np.linspace(0.0, float(t_end), int(n_save))
    held_idx = [k for k in range(len(red.names)) if k not in (plane.ix, plane.iy)]
    other = red.other
    mode = trajectory_mode(red)
    out = []
    for s in starts[plane.valid(starts)]:
        if mode == "reduced":
            x0 = np.array(plane.held, dtype=float)
            x0[[plane.ix, plane.iy]] = s
            sol = solve_ivp(lambda t, x: red.velocity(x)[0], (0.0, ts[-1]), x0, method="DOP853", t_eval=ts,
                            rtol=rtol, atol=atol)
            tt, X = sol.t, sol.y.T
            dev = np.zeros(len(tt))
        else:
            G0 = plane.batched("plane_gram", s[None])[0]
            try:
                gram, _, _ = integrate(red.ode, G0, red.norms, ts, SolverSpec(rtol=rtol, atol=atol))
                tt = ts
            except SolveError as err:
                tt, gram = err.partial[:2]
            X = red.coordinates(gram)
            dev = np.max(np.abs(gram - red.const) * other, axis=(1, 2))
        if len(tt) < 2:
            continue
        if held_idx:
            dev = np.maximum(dev, np.max(np.abs(X[:, held_idx] - plane.held[held_idx]), axis=1))
        entry = {"start": s, "t": tt, "xy": X[:, [plane.ix, plane.iy]], "xy_full": X[:, [plane.ix, plane.iy]],
                 "off_plane": float(np.max(dev)), "curve": "whole system, projected"}
        if mode == "reduced":
            entry["splitting"] = _splitting(red, X[0], ts, rtol, atol)
        if invariant:
            t_in, xy_in = integrate_plane(plane, s, ts[-1], n_out=len(ts), rtol=rtol, atol=atol * 1e-1,
                                          return_times=True)
            if len(t_in) >= 2:
                entry.update(t=t_in, xy=xy_in, curve="restricted to the plane")
        out.append(entry)
    return out


def _splitting(red: Reduction, x0, ts, rtol, atol, eps: float = 1e-8) -> float:
    """Identical students: perturb student 1's directions by ``eps`` (random, fixed seed), integrate the
    full Gram ODE, and return max_t max |1 − ⟨ū_0, ū_1⟩| over its router and expert (≈ eps if the
    students stay together, O(1) if they repel and split)."""
    from ..ode import gram_factor

    m = red.m
    X = gram_factor(red.gram(x0))
    rng = np.random.default_rng(0)
    for row in (1, m + 1):
        X[row] += eps * rng.standard_normal(X.shape[1])
        X[row] /= np.linalg.norm(X[row])
    try:
        gram, _, _ = integrate(red.ode, X @ X.T, red.norms, ts, SolverSpec(rtol=rtol, atol=atol))
    except SolveError as err:
        gram = err.partial[1]
    return float(np.max(np.abs(1.0 - np.stack([gram[:, 0, 1], gram[:, m, m + 1]]))))
