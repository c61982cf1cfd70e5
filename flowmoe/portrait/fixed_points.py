"""Fixed points on a plane: Newton from many starts, Jacobians checked by finite differences, kinds, degenerate curves."""

from __future__ import annotations

import numpy as np

from .plane import Plane


def classify(eigenvalues, tol: float) -> str:
    """sink (all Re λ < −tol), source (all > tol), saddle (both signs), degenerate (some |Re λ| ≤ tol)."""
    re_ = np.real(np.asarray(eigenvalues))
    if re_.size == 0:
        return "degenerate"
    if np.any(np.abs(re_) <= tol):
        return "degenerate"
    if np.all(re_ < 0):
        return "sink"
    if np.all(re_ > 0):
        return "source"
    return "saddle"


def newton(plane: Plane, starts: np.ndarray, iters: int = 80, max_step: float = 0.5, xtol: float = 1e-15):
    """Damped Newton x ← clip(x − J⁺F(x)) from every start at once (J⁺: pseudo-inverse, so that
    zeros with a singular Jacobian, e.g. curves of fixed points, are still approached, linearly).
    Returns (x, F(x), J(x)) at the last iterate."""
    lo = np.array([plane.xlim[0], plane.ylim[0]])
    hi = np.array([plane.xlim[1], plane.ylim[1]])
    x = np.array(starts, dtype=np.float64)
    active = np.ones(len(x), dtype=bool)
    for _ in range(iters):
        F, J = plane.batched("field_jac", x[active])
        step = -np.einsum("nij,nj->ni", np.linalg.pinv(J), F)
        norm = np.linalg.norm(step, axis=1, keepdims=True)
        step = np.where(norm > max_step, step * max_step / np.maximum(norm, 1e-300), step)
        new = np.clip(x[active] + step, lo, hi)
        new = np.where(np.isfinite(new), new, x[active])
        moved = np.max(np.abs(new - x[active]), axis=1)
        x[active] = new
        idx = np.flatnonzero(active)
        active[idx[moved <= xtol]] = False
        if not active.any():
            break
    F, J = plane.batched("field_jac", x)
    return x, F, J


def find_fixed_points(plane: Plane, n_starts: int = 12, iters: int = 80, ftol: float = 1e-10,
                      eig_tol: float = 1e-6, dedupe: float = 1e-6, set_spacing: float = 0.05) -> list[dict]:
    """Zeros of the plane field from an ``n_starts``² grid of starts (see the module docstring).

    Each entry: point, residual |F|∞, jacobian, eigenvalues (real parts; ``eigenvalues_imag`` if
    complex), eigenvectors (columns), kind, directions (per eigenvalue: "both", "one-sided",
    "leaves"), on_boundary, off_plane_speed (the leak; 0 on an invariant plane), set (index of a
    connected set of ≥ 3 degenerate points: a curve of fixed points, thinned to points
    ``set_spacing`` × the box size apart) and note.
    """
    (x0, x1), (y0, y1) = plane.xlim, plane.ylim
    gx = np.linspace(x0, x1, n_starts + 2)[1:-1]
    gy = np.linspace(y0, y1, n_starts + 2)[1:-1]
    starts = np.stack(np.meshgrid(gx, gy, indexing="ij"), -1).reshape(-1, 2)
    starts = np.concatenate([starts, [[x0, y0], [x0, y1], [x1, y0], [x1, y1]]])  # corners too
    starts = starts[plane.valid(starts)]
    if len(starts) == 0:
        return []
    span = max(x1 - x0, y1 - y0)
    roots, F, J = newton(plane, starts, iters, 0.25 * span)
    res = np.max(np.abs(F), axis=1)
    ok = np.all(np.isfinite(roots), axis=1) & (res <= ftol)
    ok[ok] = plane.valid(roots[ok])
    roots, res, J = roots[ok], res[ok], J[ok]
    kept: list[int] = []
    for k in np.argsort(res, kind="stable"):  # best residual first
        if all(np.max(np.abs(roots[k] - roots[j])) > dedupe * span for j in kept):
            kept.append(int(k))
    if not kept:
        return []
    pts = roots[kept]
    F, leak = plane.batched("field_leak", pts)
    out = []
    for p, f, lk, j in zip(pts, F, leak, J[kept]):
        lam, vec = np.linalg.eig(j)
        order = np.argsort(np.real(lam))
        lam, vec = lam[order], vec[:, order]
        directions = _directions(plane, p, lam, vec, 1e-4 * span)
        used = [k for k, d in enumerate(directions) if d != "leaves"]
        kind = classify(lam[used], eig_tol)
        boundary = any(d != "both" for d in directions)
        note = ""
        if len(used) < len(lam):
            note = ("eigenvalue(s) " + ", ".join(f"{np.real(lam[k]):.4g}" for k in range(len(lam)) if k not in used)
                    + " belong to directions that leave the valid region on both sides; left out")
        entry = {"point": [float(v) for v in p], "eigenvalues": [float(v) for v in np.real(lam)], "kind": kind,
                 "residual": float(np.max(np.abs(f))), "jacobian": j.tolist(),
                 "eigenvectors": np.real(vec).tolist(), "directions": directions, "on_boundary": boundary,
                 "off_plane_speed": float(lk), "set": None, "note": note}
        if np.any(np.abs(np.imag(lam)) > 1e-12):
            entry["eigenvalues_imag"] = [float(v) for v in np.imag(lam)]
        out.append(entry)
    out = _group_degenerate(out, 2.5 * span / (n_starts + 1), set_spacing * span)
    rank = {"sink": 0, "saddle": 1, "source": 2, "degenerate": 3}
    return sorted(out, key=lambda p: (p["set"] is not None, rank[p["kind"]], p["point"]))


def _directions(plane: Plane, p, lam, vec, h) -> list[str]:
    """For each eigenvector: does the valid region continue on both sides of p, one, or none?"""
    res = []
    for k in range(len(lam)):
        if abs(np.imag(lam[k])) > 1e-12:
            res.append("both")
            continue
        v = np.real(vec[:, k])
        v = v / np.linalg.norm(v)
        ok = plane.valid(np.stack([p + h * v, p - h * v]))
        res.append("both" if ok.all() else "one-sided" if ok.any() else "leaves")
    return res


def _group_degenerate(points: list[dict], radius: float, spacing: float) -> list[dict]:
    """Connected groups (distance ≤ radius) of ≥ 3 degenerate points get a common ``set`` index
    (a curve of non-isolated fixed points, as found by Newton); each set is thinned so that kept
    points are at least ``spacing`` apart (its extent is kept in ``set_extent``)."""
    idx = [k for k, p in enumerate(points) if p["kind"] == "degenerate"]
    parent = {k: k for k in idx}

    def root(k):
        while parent[k] != k:
            k = parent[k]
        return k
    for a in idx:
        for b in idx:
            if a < b and np.max(np.abs(np.subtract(points[a]["point"], points[b]["point"]))) <= radius:
                parent[root(a)] = root(b)
    groups: dict[int, list[int]] = {}
    for k in idx:
        groups.setdefault(root(k), []).append(k)
    drop = set()
    label = 0
    for members in groups.values():
        if len(members) < 3:
            continue
        P = np.array([points[k]["point"] for k in members])
        extent = [[float(P[:, 0].min()), float(P[:, 0].max())], [float(P[:, 1].min()), float(P[:, 1].max())]]
        axis = int(np.argmax(np.ptp(P, axis=0)))
        last = None
        for k in sorted(members, key=lambda k: points[k]["point"][axis]):
            p = np.array(points[k]["point"])
            if last is not None and np.max(np.abs(p - last)) < spacing:
                drop.add(k)
                continue
            last = p
            points[k]["set"] = label
            points[k]["set_extent"] = extent
            points[k]["note"] = (points[k]["note"] + "; " if points[k]["note"] else "") + \
                f"one of {len(members)} degenerate fixed points found on a connected set (a curve of fixed points)"
        label += 1
    return [p for k, p in enumerate(points) if k not in drop]
