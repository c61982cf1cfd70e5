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

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy.integrate import solve_ivp

from .errors import SolveError, SpecError
from .gates import get_expert, get_gate
from .io import write_json
from .ode import gram_ode, integrate
from .spec import SolverSpec

OVERLAPS = ("alpha", "beta", "mu", "nu", "rho")
REDUCTIONS = ("pair", "symmetric", "slice")
PSD_TOL = 1e-10


# ----------------------------------------------------------------------------------------------
# Reductions


@dataclass(frozen=True, eq=False)
class Reduction:
    """G(x) = C + Σ_k x_k E_k for one model structure; coordinate k is the orbit ``orbits[k]``.

    ``orbits[k]`` is an (n_k, 2) array of Gram index pairs (p < q) sharing the value x_k;
    ``const`` is C (unit diagonal; zero on orbit entries); ``values`` the base coordinates;
    ``norms`` the fixed norms r of all N directions.
    """

    kind: str
    gate: str
    expert: str
    m: int
    m_star: int
    names: tuple
    orbits: tuple
    const: np.ndarray
    values: np.ndarray
    norms: np.ndarray
    description: str

    @property
    def key(self) -> tuple:
        """Everything the compiled kernels depend on (C, norms and held values are arguments)."""
        return (self.gate, self.expert, self.m, self.m_star,
                tuple(tuple(map(tuple, np.asarray(o).tolist())) for o in self.orbits))

    @property
    def ode(self):
        return gram_ode(get_gate(self.gate), get_expert(self.expert), self.m, self.m_star)

    @property
    def other(self) -> np.ndarray:
        """Mask of the entries of C that involve a student (they must not move on an invariant family)."""
        return _structure(self.key)[3]

    def gram(self, x) -> np.ndarray:
        """G(x)."""
        return np.asarray(_kernels(self.key)["gram"](jnp.asarray(x, dtype=jnp.float64), jnp.asarray(self.const)))

    def velocity(self, x):
        """(ẋ, spread, other): coordinate velocities, max spread of dG/dt inside the orbits, and
        max |dG/dt| on the student entries of C (both zero iff the family is invariant at x)."""
        out = _kernels(self.key)["velocity"](jnp.asarray(x, dtype=jnp.float64), jnp.asarray(self.const),
                                             jnp.asarray(self.norms))
        return tuple(np.asarray(o) for o in out)

    def coordinates(self, gram: np.ndarray) -> np.ndarray:
        """Coordinates of Gram matrices (..., N, N): the mean over each orbit."""
        gram = np.asarray(gram)
        return np.stack([gram[..., o[:, 0], o[:, 1]].mean(axis=-1) for o in self.orbits], axis=-1)

    def index(self, name: str, field: str) -> int:
        if name not in self.names:
            raise SpecError(field, f"unknown observable {name!r} for the {self.kind} reduction; allowed: "
                                   f"{', '.join(self.names)}")
        return self.names.index(name)


@functools.lru_cache(maxsize=None)
def _structure(key):
    gate, expert, m, m_star, orbits = key
    rows = np.array([p for o in orbits for p, _ in o], dtype=int)
    cols = np.array([q for o in orbits for _, q in o], dtype=int)
    owner = np.concatenate([np.full(len(o), k) for k, o in enumerate(orbits)])
    n = 2 * (m + m_star)
    moving = np.arange(n) < 2 * m
    other = (moving[:, None] | moving[None, :]) & ~np.eye(n, dtype=bool)
    other[rows, cols] = other[cols, rows] = False
    counts = np.array([len(o) for o in orbits], dtype=float)
    return rows, cols, owner, other, counts


@functools.lru_cache(maxsize=None)
def _kernels(key, ix: int | None = None, iy: int | None = None) -> dict:
    """Jitted G(x), velocities, and (with ix, iy) the plane helpers, compiled once per structure;
    C, the norms and the held values are arguments, so new base states do not recompile."""
    gate, expert, m, m_star, _ = key
    ode = gram_ode(get_gate(gate), get_expert(expert), m, m_star)
    rows, cols, owner, other, counts = _structure(key)
    n_coords = len(counts)

    def gram(x, C):
        v = x[owner]
        return C.at[rows, cols].set(v).at[cols, rows].set(v)

    def velocity(x, C, r):
        dG = ode.velocity(gram(x, C), r)[0]
        vals = dG[rows, cols]
        dx = jax.ops.segment_sum(vals, owner, num_segments=n_coords) / counts
        spread = jnp.max(jnp.abs(vals - dx[owner]))
        off = jnp.max(jnp.where(other, jnp.abs(dG), 0.0))
        return dx, spread, off

    out = {"gram": jax.jit(gram), "velocity": jax.jit(velocity)}
    if ix is None:
        return out
    axes = jnp.array([ix, iy])
    held_mask = np.ones(n_coords, dtype=bool)
    held_mask[[ix, iy]] = False

    def point(xy, held):
        return held.at[axes].set(xy)

    def field(xy, held, C, r):
        return velocity(point(xy, held), C, r)[0][axes]

    def field_leak(xy, held, C, r):
        dx, spread, off = velocity(point(xy, held), C, r)
        leak = jnp.maximum(jnp.max(jnp.where(held_mask, jnp.abs(dx), 0.0)), jnp.maximum(spread, off))
        return dx[axes], leak

    def field_jac(xy, held, C, r):
        return field(xy, held, C, r), jax.jacfwd(field)(xy, held, C, r)

    batch = (0, None, None, None)
    out.update({
        "field": jax.jit(field),
        "field_leak": jax.jit(jax.vmap(field_leak, in_axes=batch)),
        "field_jac": jax.jit(jax.vmap(field_jac, in_axes=batch)),
        "plane_gram": jax.jit(jax.vmap(lambda xy, held, C: gram(point(xy, held), C), in_axes=(0, None, None))),
    })
    return out


def _check_structure(gate, expert):
    return get_gate(gate, "--gate").name, get_expert(expert, "--expert").name


def pair_reduction(gate="sigmoid", expert="he3") -> Reduction:
    """One student, one teacher (v⋆ ⊥ w⋆), unit norms; coordinates (α, β, μ, ν, ρ), all 0 at base."""
    return symmetric_reduction(1, gate, expert)


def symmetric_reduction(m: int, gate="sigmoid", expert="he3") -> Reduction:
    """m identical students (v̄_i = v̄, w̄_i = w̄) and one teacher (v⋆ ⊥ w⋆), unit norms.

    Layout [v̄_1..v̄_m, w̄_1..w̄_m, v⋆, w⋆]; ⟨v̄_i, v̄_k⟩ = ⟨w̄_i, w̄_k⟩ = 1 (collinear students, so
    R_{p,q} is evaluated at ρ = 1 for those pairs), ⟨v̄_i, w̄_k⟩ = ρ for all i, k.
    """
    if isinstance(m, bool) or int(m) != m or m < 1:
        raise SpecError("--students", f"must be an integer ≥ 1, got {m!r}")
    m = int(m)
    gate, expert = _check_structure(gate, expert)
    vs, ws = 2 * m, 2 * m + 1
    S = np.arange(m)
    orbit = {
        "alpha": [(i, vs) for i in S], "beta": [(m + i, ws) for i in S],
        "mu": [(i, ws) for i in S], "nu": [(m + i, vs) for i in S],
        "rho": [(i, m + k) for i in S for k in S],
    }
    C = np.eye(2 * m + 2)
    for block in (S, m + S):
        C[np.ix_(block, block)] = 1.0
    kind = "pair" if m == 1 else "symmetric"
    desc = ("one student, one teacher (v⋆ ⊥ w⋆), unit norms" if m == 1 else
            f"{m} identical students (same directions) against one teacher (v⋆ ⊥ w⋆), unit norms")
    return Reduction(kind, gate, expert, m, 1, OVERLAPS, tuple(np.array(orbit[n]) for n in OVERLAPS),
                     C, np.zeros(5), np.ones(2 * m + 2), desc)


_NAMED = re.compile(r"^(alpha|beta|mu|nu|vv|ww|vw|G)\[\s*(\d+)\s*,\s*(\d+)\s*\]$")
_RHO = re.compile(r"^rho\[\s*(\d+)\s*\]$")
SLICE_NAMES_HELP = ("alpha[i,j] = ⟨v̄_i, v⋆_j⟩, beta[i,j] = ⟨w̄_i, w⋆_j⟩, mu[i,j] = ⟨v̄_i, w⋆_j⟩, "
                    "nu[i,j] = ⟨w̄_i, v⋆_j⟩, rho[i] = ⟨v̄_i, w̄_i⟩, vv[i,k], ww[i,k], vw[i,k] = ⟨v̄_i, w̄_k⟩, "
                    "G[p,q] (a Gram entry); bare alpha, beta, mu, nu, rho mean index 0")


def gram_entry(name: str, m: int, m_star: int, field: str) -> tuple[int, int]:
    """Gram index pair (p < q) of an observable name (see ``SLICE_NAMES_HELP``)."""
    name = name.strip()
    if name in OVERLAPS:
        name = "rho[0]" if name == "rho" else f"{name}[0,0]"
    n = 2 * (m + m_star)
    if (r := _RHO.match(name)):
        i = int(r.group(1))
        kind, a, b = "vw", i, i
    elif (r := _NAMED.match(name)):
        kind, a, b = r.group(1), int(r.group(2)), int(r.group(3))
    else:
        raise SpecError(field, f"unknown observable {name!r}; allowed: {SLICE_NAMES_HELP}")
    limits = {"alpha": (m, m_star), "beta": (m, m_star), "mu": (m, m_star), "nu": (m, m_star),
              "vv": (m, m), "ww": (m, m), "vw": (m, m), "G": (n, n)}[kind]
    if a >= limits[0] or b >= limits[1]:
        raise SpecError(field, f"{name}: index out of range (m = {m}, m⋆ = {m_star}; indices start at 0)")
    p, q = {"alpha": (a, 2 * m + b), "beta": (m + a, 2 * m + m_star + b), "mu": (a, 2 * m + m_star + b),
            "nu": (m + a, 2 * m + b), "vv": (a, b), "ww": (m + a, m + b), "vw": (a, m + b), "G": (a, b)}[kind]
    if p == q:
        raise SpecError(field, f"{name} is a diagonal entry (always 1), not an observable")
    if p >= 2 * m and q >= 2 * m:
        raise SpecError(field, f"{name} is a teacher–teacher entry: it never moves")
    return (min(p, q), max(p, q))


def slice_reduction(gate, expert, m: int, m_star: int, gram: np.ndarray, norms: np.ndarray,
                    x: str, y: str, description: str) -> Reduction:
    """Two Gram entries (named x, y) vary; every other entry is held at ``gram``."""
    gate, expert = _check_structure(gate, expert)
    ex, ey = gram_entry(x, m, m_star, "--x"), gram_entry(y, m, m_star, "--y")
    if ex == ey:
        raise SpecError("--y", f"{y} is the same Gram entry as --x {x}")
    C = np.array(gram, dtype=np.float64)
    values = np.array([C[ex], C[ey]])
    for p, q in (ex, ey):
        C[p, q] = C[q, p] = 0.0
    return Reduction("slice", gate, expert, m, m_star, (x, y), (np.array([ex]), np.array([ey])), C, values,
                     np.asarray(norms, dtype=np.float64), description)


# ----------------------------------------------------------------------------------------------
# Planes


@dataclass(frozen=True, eq=False)
class Plane:
    """Coordinates ``ix`` (x) and ``iy`` (y) of a reduction vary; the others are held at ``held``."""

    reduction: Reduction
    ix: int
    iy: int
    held: np.ndarray
    xlim: tuple = (-1.0, 1.0)
    ylim: tuple = (-1.0, 1.0)

    @property
    def names(self) -> tuple[str, str]:
        return self.reduction.names[self.ix], self.reduction.names[self.iy]

    @property
    def held_values(self) -> dict:
        return {n: float(v) for k, (n, v) in enumerate(zip(self.reduction.names, self.held))
                if k not in (self.ix, self.iy)}

    @property
    def kernels(self) -> dict:
        return _kernels(self.reduction.key, self.ix, self.iy)

    def _args(self, with_norms: bool = True):
        red = self.reduction
        a = (jnp.asarray(self.held, dtype=jnp.float64), jnp.asarray(red.const))
        return a + (jnp.asarray(red.norms),) if with_norms else a

    def field(self, xy) -> np.ndarray:
        """(ẋ, ẏ) at one point: the Gram ODE right-hand side read off on the plane."""
        return np.asarray(self.kernels["field"](jnp.asarray(xy, dtype=jnp.float64), *self._args()))

    def batched(self, name: str, pts: np.ndarray):
        """A batched helper ("field_leak", "field_jac", "plane_gram") at points (n, 2), in chunks of
        one fixed size per helper (one compilation each; bounded memory for large Gram matrices)."""
        chunk = {"field_leak": 256, "field_jac": 64, "plane_gram": 256}[name]
        fn = self.kernels[name]
        args = self._args(name != "plane_gram")
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        outs = []
        for s in range(0, max(len(pts), 1), chunk):
            part = pts[s:s + chunk]
            padded = np.concatenate([part, np.zeros((chunk - len(part), 2))]) if len(part) < chunk else part
            res = fn(jnp.asarray(padded), *args)
            outs.append(jax.tree_util.tree_map(lambda a: np.asarray(a)[:len(part)], res))
        return jax.tree_util.tree_map(lambda *a: np.concatenate(a), *outs)

    def valid(self, pts, tol: float = PSD_TOL) -> np.ndarray:
        """G(x, y) is a Gram matrix (PSD to ``tol``) and (x, y) lies in the box."""
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        inside = ((pts[:, 0] >= self.xlim[0] - 1e-12) & (pts[:, 0] <= self.xlim[1] + 1e-12)
                  & (pts[:, 1] >= self.ylim[0] - 1e-12) & (pts[:, 1] <= self.ylim[1] + 1e-12))
        G = self.batched("plane_gram", pts)
        return inside & (np.linalg.eigvalsh(G)[:, 0] >= -tol)


def make_plane(reduction: Reduction, x: str | None = None, y: str | None = None, fix: dict | None = None,
               xlim=(-1.0, 1.0), ylim=(-1.0, 1.0)) -> Plane:
    """The (x, y) plane of a pair/symmetric reduction with the other coordinates held (``fix``, default
    base values, i.e. 0). For a slice reduction x, y are its two coordinates."""
    names = reduction.names
    x = x or names[0]
    y = y or names[1]
    ix, iy = reduction.index(x, "--x"), reduction.index(y, "--y")
    if ix == iy:
        raise SpecError("--y", f"must differ from --x (both are {x!r})")
    held = np.array(reduction.values, dtype=np.float64)
    for name, value in (fix or {}).items():
        k = reduction.index(name, "--fix")
        if k in (ix, iy):
            raise SpecError("--fix", f"{name} is an axis of the portrait; fix only the other observables")
        held[k] = _overlap_value(value, f"--fix {name}")
    for lim, name in ((xlim, "--xlim"), (ylim, "--ylim")):
        if not (-1.0 <= lim[0] < lim[1] <= 1.0):
            raise SpecError(name, f"must be two numbers −1 ≤ lo < hi ≤ 1 (overlaps), got {list(lim)}")
    return Plane(reduction, ix, iy, held, tuple(map(float, xlim)), tuple(map(float, ylim)))


def _overlap_value(value, field: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SpecError(field, f"must be a number in [−1, 1], got {value!r}") from None
    if not np.isfinite(v) or abs(v) > 1:
        raise SpecError(field, f"must be a number in [−1, 1] (an overlap of unit vectors), got {value!r}")
    return v


# ----------------------------------------------------------------------------------------------
# Fixed points


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


# ----------------------------------------------------------------------------------------------
# Curves: separatrices (plane field) and trajectories (full flow)


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
    from .ode import gram_factor

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


# ----------------------------------------------------------------------------------------------
# The whole portrait


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
                     base_point=None, description: str = "") -> Portrait:
    """Grid field, invariance, fixed points, separatrices and trajectories of one plane."""
    if grid < 5:
        raise SpecError("--grid", f"must be ≥ 5, got {grid}")
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
    F, leak = plane.batched("field_leak", pts)
    F[~valid] = np.nan
    leak = np.where(valid, leak, np.nan)
    speed = float(np.nanmax(np.abs(F)))
    leak_max = float(np.nanmax(leak))
    invariant = leak_max <= invariance_tol * max(1.0, speed)
    fps = find_fixed_points(plane, n_starts=n_starts, ftol=ftol * max(1.0, speed), eig_tol=eig_tol)
    for fp in fps:
        fp["fixed_point_of_full_flow"] = bool(fp["off_plane_speed"] <= ftol * max(1.0, speed))
    seps = separatrices(plane, fps) if with_separatrices else []
    if starts is None:
        starts = default_starts(plane, base_point)
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


def _parse_fix(items) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SpecError("--fix", f"expected NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _parse_starts(text):
    """"X,Y;X,Y;…" (or separated by spaces) → (n, 2). Write ``--starts=-0.5,0.1;0.2,0.3`` when the
    first number is negative, so that argparse does not read it as an option."""
    if not text:
        return None
    pts = []
    for item in re.split(r"[;\s]+", text.strip()):
        try:
            a, b = (float(s) for s in item.split(","))
        except ValueError:
            raise SpecError("--starts", f"expected X,Y pairs separated by ';', e.g. 0.1,0.2;-0.5,0.3, "
                                        f"got {item!r}") from None
        pts.append((a, b))
    return np.array(pts)


def plane_from_args(args) -> tuple[Plane, np.ndarray | None, str]:
    """The plane, the base point (slices) and a description of the base state, from CLI arguments."""
    fix = _parse_fix(args.fix)
    has_spec = bool(args.preset or args.config)
    reduction = args.reduction or ("slice" if has_spec else "pair")
    if reduction not in REDUCTIONS:
        raise SpecError("--reduction", f"got {reduction!r}; allowed: {list(REDUCTIONS)}")
    if reduction in ("pair", "symmetric"):
        gate, expert = args.gate, args.expert
        if has_spec:
            from .cli import resolve_spec
            model = resolve_spec(args).model
            gate, expert = model.gate, model.expert
        red = (pair_reduction(gate, expert) if reduction == "pair"
               else symmetric_reduction(args.students, gate, expert))
        return make_plane(red, args.x or "alpha", args.y or "beta", fix, args.xlim, args.ylim), None, ""
    if not has_spec:
        raise SpecError("--reduction", "a slice needs a spec: give --preset NAME or --config FILE")
    from .cli import resolve_spec
    spec = resolve_spec(args)
    model = spec.model
    G, r, where = _base_state(spec, args)
    if args.x is None or args.y is None:
        from .observables import greedy_matching
        m, ms = model.m, model.m_star
        i, j = greedy_matching(G[m:2 * m, 2 * m + ms:])[0]
        x, y = args.x or f"alpha[{i},{j}]", args.y or f"beta[{i},{j}]"
    else:
        x, y = args.x, args.y
    for name, value in fix.items():
        p, q = gram_entry(name, model.m, model.m_star, "--fix")
        G[p, q] = G[q, p] = _overlap_value(value, f"--fix {name}")
    desc = f"spec {spec.name} (m = {model.m}, m⋆ = {model.m_star}, d = {model.d}); other entries held at {where}"
    if fix:
        desc += " with " + ", ".join(f"{k} = {v}" for k, v in fix.items())
    red = slice_reduction(model.gate, model.expert, model.m, model.m_star, G, r, x, y, desc)
    plane = make_plane(red, x, y, None, args.xlim, args.ylim)
    return plane, red.values.copy(), ""


def _base_state(spec, args):
    """Gram matrix and norms of the base state: initial, or at time --at along the flow / a saved run."""
    from .init import initial_state
    from .trajectory import Trajectory

    if args.trajectory:
        traj = Trajectory.load(args.trajectory)
        if traj.m != spec.model.m or traj.m_star != spec.model.m_star:
            raise SpecError("--trajectory", f"has m = {traj.m}, m⋆ = {traj.m_star}; the spec has "
                                            f"m = {spec.model.m}, m⋆ = {spec.model.m_star}")
        at = 0.0 if args.at is None else float(args.at)
        k = int(np.argmin(np.abs(traj.t - at)))
        return traj.gram[k].copy(), traj.norms[k].copy(), f"the state of {args.trajectory} at t = {traj.t[k]:g}"
    state = initial_state(spec.model)
    if not args.at:
        return np.array(state.gram), np.array(state.norms), "the initial state"
    if args.at < 0:
        raise SpecError("--at", f"must be ≥ 0, got {args.at}")
    from .api import flow_from_gram
    s = spec.solver
    traj = flow_from_gram(state.gram, state.norms, spec.model.m, spec.model.m_star, np.array([0.0, args.at]),
                          spec.model.gate, spec.model.expert, solver=s, model_backend_name=spec.model.backend,
                          backend_options=spec.backend_options)
    return traj.gram[-1].copy(), traj.norms[-1].copy(), f"the state of the flow at t = {args.at:g}"


def _cmd_portrait(args) -> int:
    from .cli import default_out
    from .figures import portrait_figure

    plane, base, _ = plane_from_args(args)
    red = plane.reduction
    name = red.kind if red.kind != "slice" else (args.preset or Path(args.config).stem)
    out = Path(args.out) if args.out else default_out("portrait", name)
    t_end = args.t_end
    if t_end is None:
        t_end = 20.0
    if t_end <= 0:
        raise SpecError("--t-end", f"must be > 0, got {t_end}")
    portrait = compute_portrait(plane, grid=args.grid, starts=_parse_starts(args.starts), t_end=t_end,
                                n_starts=args.fp_starts, with_trajectories=not args.no_trajectories,
                                base_point=base)
    portrait.info["settings"] = {k: v for k, v in vars(args).items() if k != "func"}
    files = portrait.save(out)
    figs = portrait_figure(portrait, out / "portrait")
    portrait.info["files"] = [p.name for p in files + figs]
    write_json(out / "portrait.json", portrait.to_json())
    print(f"{portrait.info['label']}: {plane.names[0]} × {plane.names[1]}; "
          f"max off-plane speed {portrait.info['max_off_plane_speed']:.3g}")
    sets_done = set()
    for fp in portrait.fixed_points:
        if fp["set"] is not None:
            if fp["set"] not in sets_done:
                sets_done.add(fp["set"])
                (a0, a1), (b0, b1) = fp["set_extent"]
                print(f"  degenerate curve of fixed points (set {fp['set']}): found in {plane.names[0]} ∈ "
                      f"[{a0:.4g}, {a1:.4g}], {plane.names[1]} ∈ [{b0:.4g}, {b1:.4g}]")
            continue
        print(f"  {fp['kind']:10s} at ({fp['point'][0]: .6f}, {fp['point'][1]: .6f}), eigenvalues "
              + ", ".join(f"{v:.4g}" for v in fp["eigenvalues"]))
    for p in files + figs:
        print(p)
    return 0


def register(sub) -> None:
    from .spec import preset_names

    p = sub.add_parser(
        "portrait", help="phase portrait of a reduced system or a 2-D slice (fixed points, nullclines, separatrices)",
        description="Phase portrait in the plane of two observables, with the exact Gram-ODE vector field. "
                    "Default: one student and one teacher in the (alpha, beta) plane at mu = nu = rho = 0 "
                    "(an invariant plane, so the portrait is exact). With --preset/--config: a slice of that "
                    "spec with every other Gram entry held at the initial state (or --at TIME), labelled "
                    "'slice (not invariant)' when it is not invariant. Writes OUT/portrait.png/.svg, "
                    "OUT/portrait.json (fixed points with eigenvalues and kinds) and OUT/portrait.npz.")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--preset", help=f"slice a preset shipped with flowmoe: {', '.join(preset_names())}")
    g.add_argument("--config", help="slice the spec of a TOML file")
    p.add_argument("--set", nargs="+", metavar="SECTION.FIELD=VALUE", default=[], help="override spec fields")
    p.add_argument("--reduction", choices=REDUCTIONS,
                   help="pair (default without a spec), symmetric (--students identical students, one teacher), "
                        "slice (default with a spec)")
    p.add_argument("--students", type=int, default=2, help="number of identical students for --reduction symmetric")
    p.add_argument("--gate", default="sigmoid", help="gate of the pair/symmetric reduction (default sigmoid)")
    p.add_argument("--expert", default="he3", help="expert of the pair/symmetric reduction (default he3)")
    p.add_argument("--x", help="observable on the x axis: alpha, beta, mu, nu, rho (pair/symmetric); for a slice "
                               + SLICE_NAMES_HELP + " (default: alpha of the best-matched pair)")
    p.add_argument("--y", help="observable on the y axis (default beta)")
    p.add_argument("--fix", nargs="+", metavar="NAME=VALUE", default=[],
                   help="hold other observables at these values (pair/symmetric default 0; slices: base state)")
    p.add_argument("--at", type=float, help="slice: hold the other entries at the state of the flow at this time")
    p.add_argument("--trajectory", help="slice: take the base state from this trajectory.npz (with --at)")
    p.add_argument("--xlim", type=float, nargs=2, default=(-1.0, 1.0), metavar=("LO", "HI"))
    p.add_argument("--ylim", type=float, nargs=2, default=(-1.0, 1.0), metavar=("LO", "HI"))
    p.add_argument("--grid", type=int, default=41, help="grid points per axis for the field (default 41)")
    p.add_argument("--fp-starts", type=int, default=12, help="Newton starts per axis for fixed points (default 12)")
    p.add_argument("--starts", metavar="X,Y;X,Y", help="trajectory starts, e.g. --starts=-0.9,0.05;0.3,0.5 "
                                                       "(default: 8 points on an ellipse, plus the base state of a slice)")
    p.add_argument("--t-end", type=float, help="flow time of the trajectories (default 20)")
    p.add_argument("--no-trajectories", action="store_true", help="draw no trajectories")
    p.add_argument("--out", help="output folder (default runs/portrait-NAME-TIME)")
    p.set_defaults(func=_cmd_portrait)
