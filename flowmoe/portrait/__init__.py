"""Phase portraits of reduced systems: invariant planes, symmetric reductions and slices.

The vector field is always the engine's own Gram ODE (:func:`flowmoe.ode.gram_ode`, the
right-hand side the integrator uses, norms fixed), evaluated on a family of Gram matrices

    G(x) = C + Σ_k x_k E_k,        x = (x_1, …, x_K),

where each coordinate x_k is an *orbit* of Gram entries E_k that share one value and C holds
everything else (unit diagonal, teacher block, held overlaps). The velocity of a coordinate is
read off the Gram velocity, ẋ_k = mean of dG/dt over its orbit. Three reductions are built in:

- ``pair`` — one student (v̄, w̄) and one teacher (v⋆ ⊥ w⋆), m = m⋆ = 1, Gram layout
  [v̄, w̄, v⋆, w⋆]: the five overlaps α = G₀₂ (router alignment), β = G₁₃ (expert alignment),
  μ = G₀₃, ν = G₁₂, ρ = G₀₁. The plane μ = ν = ρ = 0 is invariant (derivations/reduced-ode.md), on
  it β̇ = 18R₀₀(α)β²(1−β²), α̇ = 6R₁₁(α)β³(1−α²) for sigmoid/He₃;
- ``symmetric`` — m identical students (all v̄_i = v̄, all w̄_i = w̄) against one teacher: the same five
  overlaps; the student–student entries ⟨v̄_i, v̄_k⟩ = ⟨w̄_i, w̄_k⟩ = 1 and ⟨v̄_i, w̄_k⟩ = ρ for all i, k;
- ``slice`` — any spec: two chosen Gram entries vary, every other entry is held at a base state
  (the spec's initial state, or a state along its flow).

A :class:`Plane` picks two coordinates (x, y) and holds the others. The plane is invariant under the
flow iff every held quantity has zero velocity on it; this is *measured*: the off-plane speed

    leak(x) = max( |ẋ_k| for held k,  spread of dG/dt inside each orbit,  |dG/dt| on entries of C
                   that involve a student )

is evaluated on the whole grid, and the portrait is labelled "exact (invariant plane)" only when
max leak ≤ ``invariance_tol`` · max(1, max in-plane speed); otherwise "slice (not invariant)": its
streamlines are not trajectories and its fixed points are not fixed points of the full flow.

Fixed points: damped Newton iterations x ← x − J⁺F(x) (J = ∂F/∂x by ``jax.jacfwd``, J⁺ the
pseudo-inverse, so that non-isolated, degenerate zeros are still reached, linearly) from a grid of
starts, vectorised with ``jax.vmap``; kept if |F|∞ ≤ ``ftol`` and G(x) is a valid (positive
semi-definite) Gram matrix; duplicates merged. Classified by the real parts of the eigenvalues of J
with tolerance ``eig_tol``: sink (all < 0), source (all > 0), saddle (both signs), degenerate
(some |Re λ| ≤ tol). On the boundary of the valid region (|α| = 1, |β| = 1, …) an eigenvector may
leave the region on one side (``"one-sided"``: only that half-line is physical) or on both
(``"leaves"``: that eigenvalue is left out of the classification, and said so).
Separatrices: from each saddle, along ± its unstable eigenvector forward in time and along ± its
stable eigenvector backward in time (the stable manifold), integrating the plane field with
scipy's DOP853. Trajectories: the full Gram ODE (``flowmoe.ode.integrate``) from the embedded
starts, projected on (x, y); on an invariant plane this is exact, on a slice it is the projection
of the full flow and is labelled so. For identical students the reduced coordinates are integrated
instead: that family is invariant but can be transversally unstable (identical students repel), so
round-off in a full-Gram integration would carry the flow off it.

Commands (figures in plots/ are made by these)::

    flowmoe portrait "--starts=-0.9,0.05;-0.5,0.15;0,0.3;0.5,0.5;-0.3,-0.4;0.6,-0.2;-0.8,-0.9" \
        --out runs/portrait-pair                                    # (a) α, β of one pair, μ=ν=ρ=0
    flowmoe plot portrait runs/portrait-pair --out plots/portrait-pair
    flowmoe portrait --reduction symmetric --students 3 --out runs/portrait-sym3   # (c) identical students
    flowmoe plot portrait runs/portrait-sym3 --out plots/portrait-symmetric-m3
    flowmoe portrait --preset paper-fig1 --t-end 40 --out runs/portrait-fig1      # (b) slice at the start
    flowmoe plot portrait runs/portrait-fig1 --out plots/portrait-paper-fig1-slice

``flowmoe portrait`` writes DIR/portrait.png, DIR/portrait.svg, DIR/portrait.json (fixed points with
eigenvalues and kinds, invariance, settings) and DIR/portrait.npz (the grid field, trajectories and
separatrices, so ``flowmoe plot portrait DIR`` redraws without recomputing).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SpecError
from ..io import write_json
from ..progress import Stages
from .curves import default_starts, integrate_plane, separatrices, trajectories, trajectory_mode
from .fixed_points import classify, find_fixed_points, newton
from .plane import Plane, _overlap_value, make_plane
from ..names import OVERLAPS, REDUCTIONS, SLICE_NAMES_HELP
from .reduction import (PSD_TOL, Reduction, gram_entry, pair_reduction,
                        slice_reduction, symmetric_reduction)


# The whole portrait ---------------------------------------------------------------------------


@dataclass
class Portrait:
    """Everything a portrait figure shows; ``save``/``load`` round-trip through DIR/portrait.{json,npz}."""

    info: dict
    X: np.ndarray
    Y: np.ndarray
    U: np.ndarray
    V: np.ndarray
    leak: np.ndarray
    valid: np.ndarray
    fixed_points: list
    separatrices: list = field(default_factory=list)
    trajectories: list = field(default_factory=list)

    def to_json(self) -> dict:
        return {**self.info, "fixed_points": self.fixed_points,
                "separatrices": [{k: v for k, v in s.items() if k != "points"} | {"n_points": len(s["points"])}
                                 for s in self.separatrices],
                "trajectories": [{"start": [float(v) for v in tr["start"]], "end": [float(v) for v in tr["xy"][-1]],
                                  "t_end": float(tr["t"][-1]), "curve": tr.get("curve", ""),
                                  "off_plane": tr["off_plane"]} | ({"splitting": tr["splitting"]}
                                                                   if "splitting" in tr else {})
                                 for tr in self.trajectories]}

    def save(self, out) -> list[Path]:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        arrays = {"X": self.X, "Y": self.Y, "U": self.U, "V": self.V, "leak": self.leak, "valid": self.valid}
        for name, curves in (("sep", self.separatrices), ("traj", self.trajectories)):
            pts = [c["points"] if name == "sep" else c["xy"] for c in curves]
            arrays[f"{name}_xy"] = np.concatenate(pts) if pts else np.zeros((0, 2))
            arrays[f"{name}_len"] = np.array([len(p) for p in pts], dtype=int)
        arrays["traj_t"] = np.concatenate([c["t"] for c in self.trajectories]) if self.trajectories else np.zeros(0)
        np.savez_compressed(out / "portrait.npz", **arrays)
        write_json(out / "portrait.json", self.to_json())
        return [out / "portrait.json", out / "portrait.npz"]

    @classmethod
    def load(cls, folder) -> "Portrait":
        folder = Path(folder)
        if not (folder / "portrait.json").is_file() or not (folder / "portrait.npz").is_file():
            raise SpecError("RUN_DIR", f"{folder} has no portrait.json and portrait.npz (made by `flowmoe portrait`)")
        meta = json.loads((folder / "portrait.json").read_text())
        with np.load(folder / "portrait.npz", allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
        seps, trajs = _split(a["sep_xy"], a["sep_len"]), _split(a["traj_xy"], a["traj_len"])
        tts = _split(a["traj_t"], a["traj_len"])
        sep_list = [dict(s, points=p) for s, p in zip(meta.pop("separatrices"), seps)]
        traj_list = [{"start": np.array(tr["start"]), "t": t, "xy": p, "off_plane": tr["off_plane"],
                      "curve": tr.get("curve", "")}
                     for tr, t, p in zip(meta.pop("trajectories"), tts, trajs)]
        fps = meta.pop("fixed_points")
        return cls(meta, a["X"], a["Y"], a["U"], a["V"], a["leak"], a["valid"].astype(bool), fps, sep_list, traj_list)


def _split(flat, lengths):
    edges = np.concatenate([[0], np.cumsum(lengths)]).astype(int)
    return [flat[edges[k]:edges[k + 1]] for k in range(len(lengths))]


def compute_portrait(plane: Plane, *, grid: int = 41, starts=None, t_end: float = 20.0, n_starts: int = 12,
                     ftol: float = 1e-10, eig_tol: float = 1e-6, invariance_tol: float = 1e-9,
                     with_trajectories: bool = True, with_separatrices: bool = True,
                     base_point=None, description: str = "", progress: bool = False) -> Portrait:
    """Grid field, invariance, fixed points, separatrices and trajectories of one plane
    (``progress``: a bar over these stages on stderr)."""
    if grid < 5:
        raise SpecError("--grid", f"must be ≥ 5, got {grid}")
    stages = Stages(PORTRAIT_STAGES, "portrait", progress)
    try:
        return _compute(plane, stages, grid, starts, t_end, n_starts, ftol, eig_tol, invariance_tol,
                        with_trajectories, with_separatrices, base_point, description)
    finally:
        stages.close()


PORTRAIT_STAGES = ("field", "fixed points", "separatrices", "trajectories")


def _compute(plane, stages, grid, starts, t_end, n_starts, ftol, eig_tol, invariance_tol, with_trajectories,
             with_separatrices, base_point, description) -> Portrait:
    xs = np.linspace(*plane.xlim, grid)
    ys = np.linspace(*plane.ylim, grid)
    X, Y = np.meshgrid(xs, ys)  # rows: y, columns: x (matplotlib's streamplot layout)
    pts = np.stack([X.ravel(), Y.ravel()], -1)
    valid = plane.valid(pts)
    if not valid.any():
        red = plane.reduction
        base = red.gram(plane.held if red.kind != "slice" else red.values)
        w = np.linalg.eigvalsh(base)
        why = (f" the base Gram matrix has rank {int(np.sum(w > 1e-8))} < N = {len(w)}, so changing single entries "
               "leaves the cone;" if np.sum(w > 1e-8) < len(w) else "")
        raise SpecError("--x/--y", "no grid point of this plane is a valid (positive semi-definite) Gram matrix "
                                   f"with the other entries held;{why} choose other observables, --fix values or "
                                   "--xlim/--ylim")
    with stages.stage("field"):
        F, leak = plane.batched("field_leak", pts)
    F[~valid] = np.nan
    leak = np.where(valid, leak, np.nan)
    speed = float(np.nanmax(np.abs(F)))
    leak_max = float(np.nanmax(leak))
    invariant = leak_max <= invariance_tol * max(1.0, speed)
    with stages.stage("fixed points"):
        fps = find_fixed_points(plane, n_starts=n_starts, ftol=ftol * max(1.0, speed), eig_tol=eig_tol)
    for fp in fps:
        fp["fixed_point_of_full_flow"] = bool(fp["off_plane_speed"] <= ftol * max(1.0, speed))
    with stages.stage("separatrices"):
        seps = separatrices(plane, fps) if with_separatrices else []
    if starts is None:
        starts = default_starts(plane, base_point)
    with stages.stage("trajectories"):
        trajs = trajectories(plane, starts, t_end, invariant) if with_trajectories else []
    drift = max((tr["off_plane"] for tr in trajs), default=0.0)
    split = max((tr["splitting"] for tr in trajs if "splitting" in tr), default=None)
    red = plane.reduction
    xname, yname = plane.names
    info = {
        "reduction": red.kind, "description": red.description + (f"; {description}" if description else ""),
        "gate": red.gate, "expert": red.expert, "m": red.m, "m_star": red.m_star,
        "x": xname, "y": yname, "held": plane.held_values, "xlim": list(plane.xlim), "ylim": list(plane.ylim),
        "norms": "fixed (gradient flow conserves them)",
        "invariant": bool(invariant),
        "label": "exact (invariant plane)" if invariant else "slice (not invariant)",
        "max_off_plane_speed": leak_max, "max_in_plane_speed": speed,
        "grid": grid, "valid_fraction": float(valid.mean()),
        "tolerances": {"ftol": ftol, "eig_tol": eig_tol, "invariance_tol": invariance_tol, "psd_tol": PSD_TOL},
        "trajectories_are": ("the flow restricted to the invariant plane (plane field, DOP853)" if invariant else
                             "the full Gram-ODE flow (flowmoe.ode.integrate) projected on the slice (it leaves it)"),
        "whole_system_flow": ("reduced coordinates, students kept identical (DOP853)" if trajectory_mode(red) ==
                              "reduced" else "full Gram ODE (flowmoe.ode.integrate)"),
        "max_whole_system_drift_off_plane": drift,
        "transversally_unstable": bool(invariant and drift > 1e-6),
        "students_split": None if split is None else {
            "initial_asymmetry": 1e-8, "max_deviation": split, "t_end": float(t_end),
            "meaning": "full Gram ODE from the identical-student start with student 1 moved by 1e-8: "
                       "max over time of 1 - <u_0, u_1> (router, expert)"},
        "field": "flowmoe.ode.gram_ode right-hand side (norms fixed), read off on the plane",
        "base_point": None if base_point is None else [float(v) for v in base_point],
    }
    return Portrait(info, X, Y, F[:, 0].reshape(X.shape), F[:, 1].reshape(X.shape), leak.reshape(X.shape),
                    valid.reshape(X.shape), fps, seps, trajs)


# ----------------------------------------------------------------------------------------------
# Command line


__all__ = ["Portrait", "compute_portrait", "Reduction", "pair_reduction", "symmetric_reduction", "slice_reduction",
           "gram_entry", "OVERLAPS", "REDUCTIONS", "SLICE_NAMES_HELP", "PSD_TOL", "Plane", "make_plane", "classify",
           "newton", "find_fixed_points", "integrate_plane", "separatrices", "default_starts", "trajectories",
           "trajectory_mode", "_overlap_value"]
