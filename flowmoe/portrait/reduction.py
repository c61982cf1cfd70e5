"""Reductions: families of Gram matrices described by a few overlaps (one pair, m identical students, a slice of a preset), with the engine's vector field read off on them."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import SpecError
from ..gates import get_expert, get_gate
from ..names import OVERLAPS, SLICE_NAMES_HELP
from ..ode import gram_ode


PSD_TOL = 1e-10


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
