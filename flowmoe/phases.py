"""Phases of a trajectory: precise threshold crossings, T₁, T_c, plateaus, recovery order, lags (docs/maths.md §4).

**Crossing times.** A crossing of a level by a quantity x(t) = f(G(t)) is first bracketed on the
saved grid (first saved index k with x ≥ level). For an ODE trajectory the bracket [t_{k−1}, t_k] is
then integrated again from the saved state (G_{k−1}, r_{k−1}) with the trajectory's own solver
settings and a fixed number of fine save points (:data:`N_FINE`, so that one compile serves every
bracket); on the fine grid x is located in a sub-interval, where G(t) is replaced by the cubic
Hermite interpolant built from the fine states and the ODE right-hand side dG/dt at both ends, and
the root of f(G(t)) − level is found by Brent's method. The interpolation error is
O(h⁴ max|d⁴G/dt⁴|) with h the fine spacing, well below the integrator's tolerance for smooth runs.
Trajectories that did not come from the ODE (simulations, synthetic data) fall back to linear
interpolation between saved times (the rule of :func:`flowmoe.observables.first_crossing`).

**Definitions** (ours; the paper names the quantities without defining them in what we have):

- crossings of γ⁽¹⁾ (router) and γ⁽²⁾ (expert) of each matched pair at ``levels`` (default 0.1, 0.5,
  0.9, 0.99): first time the alignment is ≥ the level;
- T₁ of a matched pair: first time min(γ⁽¹⁾, γ⁽²⁾) ≥ ``threshold`` (0.9); T₁ overall: the largest;
- T_c: first time from which every error term (``tc_terms``, :mod:`flowmoe.observables`) of every
  matched pair stays below ``error_tol`` until the end (NaN if they do not settle);
- recovery of teacher j (matching-free): first time *some* student i has min(γ⁽¹⁾_{ij}, γ⁽²⁾_{ij}) ≥
  ``threshold``; "T1-first" is the first recovery (first pair to align, any student and teacher),
  "T1-all" the last one (all teachers recovered); "expert-first" is the first time some γ⁽²⁾_{ij}
  ≥ ``threshold`` (the escape of an expert, the part the leading-order prediction describes);
- κ of a pair: √d·γ⁽²⁾_{ij}(0); leading-order escape time √d/(4.5κ) = 1/(4.5 γ⁽²⁾_{ij}(0)) (docs/maths.md §4);
- recovery order: teachers sorted by recovery time; expected order: by κ_max,j = √d·max_i γ⁽²⁾_{ij}(0),
  largest first;
- lag of a matched pair at ``lag_level``: (router crossing) − (expert crossing); > 0 means the router
  follows the expert ("guided by the experts");
- plateaus: maximal stretches of saved times on which (max L − min L) ≤ ``plateau_flat`` · max L and
  whose length is ≥ ``plateau_min`` × (t_end − t_0);
- phase-2 constants: see :func:`phase2_constants`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field

import jax
import numpy as np
from scipy.interpolate import CubicHermiteSpline
from scipy.optimize import brentq

from .errors import SolveError, SpecError
from .spec import _float
from .names import MATCHINGS
from .observables import DEFAULT_TC_TERMS, ERROR_TERMS, error_terms, greedy_matching, match_pairs
from .trajectory import Trajectory

N_FINE = 33  # fine save points per re-integrated bracket (also the chunk size of flowmoe.sweep)
LEVELS = (0.1, 0.5, 0.9, 0.99)
ESCAPE_RATE = 4.5  # 18 R₀₀(0) = 18/4: dβ/dt ≈ 4.5 β² at small β (docs/maths.md §4)
EPS_A_CHOICES = ("threshold", "at-T1", "initial")
DELTA_P_CHOICES = ("offtarget-sq", "offtarget-max", "inv-d", "inv-sqrt-d")


# Options ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PhaseOptions:
    """What :func:`analyze` computes; every field is validated (bad values raise SpecError).

    ``eps_A`` and ``delta_P`` choose the proxies of ε_{A,ℓ} and δ_P in the phase-2 bound shape
    m·ε_{A,ℓ}² + m²·δ_P·√d (see :func:`phase2_constants`): a name from :data:`EPS_A_CHOICES` /
    :data:`DELTA_P_CHOICES` or a positive number.
    """

    levels: tuple = LEVELS
    threshold: float = 0.9
    error_tol: float = 0.05
    tc_terms: tuple = DEFAULT_TC_TERMS
    matching: str = "final"
    lag_level: float = 0.5
    plateau_flat: float = 0.02
    plateau_min: float = 0.05
    eps_A: str | float = "threshold"
    delta_P: str | float = "offtarget-sq"
    refine: bool = True

    def __post_init__(self):
        levels = tuple(float(x) for x in np.atleast_1d(self.levels))
        if not levels or any(not (-1 < x < 1) for x in levels):
            raise SpecError("phases.levels", f"levels must lie in (−1, 1), got {list(levels)}")
        object.__setattr__(self, "levels", levels)
        for name in ("threshold", "lag_level"):
            x = _number(getattr(self, name), f"phases.{name}")
            if not 0 < x < 1:
                raise SpecError(f"phases.{name}", f"must be in (0, 1), got {x}")
            object.__setattr__(self, name, x)
        for name in ("error_tol", "plateau_flat", "plateau_min"):
            x = _number(getattr(self, name), f"phases.{name}")
            if x <= 0:
                raise SpecError(f"phases.{name}", f"must be > 0, got {x}")
            object.__setattr__(self, name, x)
        terms = tuple(self.tc_terms)
        bad = [t for t in terms if t not in ERROR_TERMS]
        if not terms or bad:
            raise SpecError("phases.tc_terms", f"unknown error terms {bad}; allowed: {list(ERROR_TERMS)}")
        object.__setattr__(self, "tc_terms", terms)
        if self.matching not in MATCHINGS:
            raise SpecError("phases.matching", f"got {self.matching!r}; allowed: {list(MATCHINGS)}")
        object.__setattr__(self, "eps_A", _proxy(self.eps_A, "phases.eps_A", EPS_A_CHOICES))
        object.__setattr__(self, "delta_P", _proxy(self.delta_P, "phases.delta_P", DELTA_P_CHOICES))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _number(value, name: str) -> float:
    return _float(value, name)


def _proxy(value, name: str, choices) -> str | float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            if value not in choices:
                raise SpecError(name, f"got {value!r}; allowed: {list(choices)} or a number > 0") from None
            return value
    x = _number(value, name)
    if x <= 0:
        raise SpecError(name, f"must be > 0, got {x}")
    return x


# Crossing machinery ----------------------------------------------------------------------
def first_index(values: np.ndarray, level: float) -> np.ndarray:
    """Index of the first saved time with values ≥ level, along axis 0; T if never."""
    above = np.asarray(values) >= level
    return np.where(above.any(axis=0), above.argmax(axis=0), above.shape[0])


@functools.cache
@functools.lru_cache(maxsize=None)
def _batched_velocity(ode):
    return jax.jit(jax.vmap(lambda G, r: ode.velocity(G, r)[0]))


class CrossingFinder:
    """Precise crossing times on one trajectory (see the module docstring).

    ``refine=None`` refines when the trajectory's provenance says which ODE made it (source
    ``"ode"``, the model's gate, expert and backend, the solver and its terms: see
    :func:`flowmoe.api.vector_field_of`), otherwise interpolates linearly. Re-integrated
    brackets are cached, so all quantities crossing in the same bracket share one solve.
    ``stats`` counts the re-integrations and records the largest mismatch between a re-integrated
    bracket end and the saved state there (a check that the refinement follows the same solution).
    """

    def __init__(self, traj: Trajectory, refine: bool | None = None, n_fine: int = N_FINE, **solver):
        self.traj = traj
        self.n_fine = int(n_fine)
        self._ode, self._solver = _ode_of(traj, solver)
        self.refined = self._ode is not None if refine is None else bool(refine)
        if self.refined and self._ode is None:
            raise SpecError("refine", "this trajectory's provenance does not name the ODE that made it (source, "
                                      "gate, expert, solver); use refine=False (linear interpolation)")
        self._cache: dict[int, tuple] = {}
        self.stats = {"reintegrations": 0, "max_end_mismatch": 0.0}

    # One bracket, integrated again --------------------------------------------------------
    def fine(self, k: int):
        """(ts, G, dG) on [t_k, t_{k+1}] from the saved state at k, ``n_fine`` points."""
        if k not in self._cache:
            from .ode import integrate

            t = self.traj.t
            ts = np.linspace(t[k], t[k + 1], self.n_fine)
            G0, r0 = self.traj.gram[k], self.traj.norms[k]
            try:
                G, r, _ = integrate(self._ode, G0, r0, ts, self._solver)
            except SolveError:
                self._cache[k] = None
                return None
            dG = np.asarray(_batched_velocity(self._ode)(G, r))
            self.stats["reintegrations"] += 1
            mismatch = float(np.max(np.abs(G[-1] - self.traj.gram[k + 1])))
            self.stats["max_end_mismatch"] = max(self.stats["max_end_mismatch"], mismatch)
            self._cache[k] = (ts, G, dG)
        return self._cache[k]

    def _root(self, fn, level, k: int, upward: bool) -> float | None:
        """Root of fn(G(t)) = level in [t_k, t_{k+1}]: the first upward or the last downward crossing."""
        fine = self.fine(k)
        if fine is None:
            return None
        ts, G, dG = fine
        v = fn(G)
        if upward:
            hit = np.flatnonzero(v >= level)
            if hit.size == 0:
                return None
            j = int(hit[0])
            if j == 0:
                return float(ts[0])
        else:
            hit = np.flatnonzero(v >= level)
            if hit.size == 0:
                return float(ts[0])
            j = int(hit[-1]) + 1
            if j == len(ts):
                return None
        n = G.shape[-1]
        spline = CubicHermiteSpline(ts[j - 1:j + 1], G[j - 1:j + 1].reshape(2, -1), dG[j - 1:j + 1].reshape(2, -1))

        def h(tt):
            return float(fn(spline(tt).reshape(1, n, n))[0]) - level

        a, b = ts[j - 1], ts[j]
        ha, hb = h(a), h(b)
        if ha == 0.0:
            return float(a)
        if hb == 0.0 or np.sign(ha) == np.sign(hb):
            return float(b)
        return float(brentq(h, a, b, xtol=1e-15 * max(1.0, abs(b)), rtol=4 * np.finfo(float).eps, maxiter=200))

    # Public queries --------------------------------------------------------------------------
    def first_up(self, fn, level: float, values: np.ndarray | None = None) -> float:
        """First time fn(G(t)) ≥ level; NaN if never. ``fn`` maps grams (T, N, N) → (T,)."""
        t = self.traj.t
        v = fn(self.traj.gram) if values is None else values
        k = int(first_index(v, level))
        if k == len(t):
            return float("nan")
        if k == 0:
            return float(t[0])
        if self.refined:
            root = self._root(fn, level, k - 1, upward=True)
            if root is not None:
                return root
        return float(t[k - 1] + (level - v[k - 1]) * (t[k] - t[k - 1]) / (v[k] - v[k - 1]))

    def settle_below(self, fn, level: float, values: np.ndarray | None = None) -> float:
        """First time from which fn(G(t)) < level until the end; NaN if it is ≥ level at the end."""
        t = self.traj.t
        v = fn(self.traj.gram) if values is None else values
        bad = np.flatnonzero(v >= level)
        if bad.size == 0:
            return float(t[0])
        k = int(bad[-1])
        if k == len(t) - 1:
            return float("nan")
        if self.refined:
            root = self._root(fn, level, k, upward=False)
            if root is not None:
                return root
        return float(t[k] + (v[k] - level) * (t[k + 1] - t[k]) / (v[k] - v[k + 1]))


def _ode_of(traj: Trajectory, overrides: dict):
    """(VectorField, SolverSpec) rebuilt from the trajectory's provenance, or (None, None)."""
    from .api import vector_field_of

    return vector_field_of(traj, **overrides)


# Blocks of the Gram matrix as functions of G -----------------------------------------------
def _router(m, ms, i, j):
    return lambda G: G[:, i, 2 * m + j]


def _expert(m, ms, i, j):
    return lambda G: G[:, m + i, 2 * m + ms + j]


def _both(m, ms, i, j):
    return lambda G: np.minimum(G[:, i, 2 * m + j], G[:, m + i, 2 * m + ms + j])


def _worst_error(m, ms, pairs, terms):
    def fn(G):
        sub = Trajectory(np.arange(G.shape[0], dtype=float), G, np.ones(G.shape[:2]), np.zeros(G.shape[0]), m, ms)
        errs = error_terms(sub, pairs)
        return np.max(np.stack([errs[k] for k in terms]), axis=(0, 2))
    return fn


# The report ----------------------------------------------------------------------------
@dataclass
class PhaseReport:
    """Everything :func:`analyze` finds on one trajectory; missing times are NaN (``None`` in JSON).

    Times are flow times. Pair lists are [student i, teacher j]. Per-pair lists follow ``pairs``.
    """

    t0: float
    t_end: float
    m: int
    m_star: int
    d: float
    refined: bool
    threshold: float
    levels: list
    pairs: list                 # the matching the per-pair numbers use ([i, j], ordered by teacher)
    matching: str               # the rule of PhaseOptions.matching (flowmoe.observables.MATCHING_RULES)
    matchings_agree: bool
    expert_crossings: list      # [pair][level]
    router_crossings: list      # [pair][level]
    T1_pairs: list
    peak_pairs: list            # per matched pair: max over saved times of min(γ⁽¹⁾, γ⁽²⁾)
    T1: float                   # max over matched pairs (NaN unless all aligned)
    Tc: float
    error_tol: float
    first: dict                 # T1-first: {"time", "student", "teacher", "kappa", "predicted"}
    expert_first: dict          # first γ⁽²⁾ ≥ threshold: same keys
    recovery_times: list        # per teacher j, matching-free
    recovery_students: list
    recovery_kappa: list        # κ of the recovering student
    kappa_max: list             # per teacher: √d max_i γ⁽²⁾_{ij}(0)
    recovery_order: list        # teachers, by recovery time (recovered only)
    expected_order: list        # teachers, by kappa_max (largest first)
    T1_all: float
    lag_level: float
    lags: list                  # per matched pair at lag_level: router − expert crossing
    lag_censored: list          # True where one crossing is past the end (lag is a bound)
    plateaus: list              # [[t_start, t_end, mean loss], ...]
    phase2: dict
    loss_initial: float
    loss_final: float
    stats: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return to_json(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> PhaseReport:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: from_json(v) for k, v in data.items() if k in names})

    def first_time(self, which: str) -> float:
        """The time named by ``which``: "T1-first", "T1-all", "expert-first" or "T1" (matched pairs)."""
        table = {"T1-first": self.first["time"], "T1-all": self.T1_all, "expert-first": self.expert_first["time"],
                 "T1": self.T1}
        if which not in table:
            raise SpecError("time", f"got {which!r}; allowed: {list(table)}")
        return float(table[which])


def to_json(x):
    """NaN/inf → None, numpy scalars/arrays → Python, recursively."""
    if isinstance(x, dict):
        return {k: to_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_json(v) for v in x]
    if isinstance(x, np.ndarray):
        return to_json(x.tolist())
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(float(x)) else float(x)
    return x


def from_json(x):
    """None → NaN, recursively (the inverse of :func:`to_json` for numbers)."""
    if x is None:
        return float("nan")
    if isinstance(x, dict):
        return {k: from_json(v) for k, v in x.items()}
    if isinstance(x, list):
        return [from_json(v) for v in x]
    return x


def _dimension(traj: Trajectory, d) -> float:
    """d from the argument, else from the spec in the provenance, else estimated as 1/mean(initial student–teacher overlap²)."""
    if d is not None:
        return float(d)
    spec = traj.provenance.spec or {}
    if "model" in spec and "d" in spec["model"]:
        return float(spec["model"]["d"])
    m = traj.m
    block = traj.gram[0, :2 * m, 2 * m:]
    ms2 = float(np.mean(block**2))
    return 1.0 / ms2 if ms2 > 0 else float("nan")


def recovery(traj: Trajectory, finder: CrossingFinder, threshold: float, d: float) -> dict:
    """Matching-free recovery times per teacher, T1-first, T1-all and expert-first (refined)."""
    m, ms = traj.m, traj.m_star
    g2_0 = traj.expert_alignment[0]
    both = np.minimum(traj.router_alignment, traj.expert_alignment)  # (T, m, m⋆)
    idx = first_index(both, threshold)  # (m, m⋆)
    T = len(traj)
    times, students = [], []
    for j in range(ms):
        kmin = int(idx[:, j].min())
        if kmin == T:
            times.append(float("nan"))
            students.append(float("nan"))
            continue
        cands = np.flatnonzero(idx[:, j] == kmin)
        tc = [finder.first_up(_both(m, ms, int(i), j), threshold, both[:, i, j]) for i in cands]
        best = int(np.argmin(tc))
        times.append(tc[best])
        students.append(int(cands[best]))
    times_arr = np.array(times)
    kappa = [float(math.sqrt(d) * g2_0[int(s), j]) if np.isfinite(s) else float("nan")
             for j, s in enumerate(students)]
    kappa_max = [float(math.sqrt(d) * g2_0[:, j].max()) for j in range(ms)]

    def entry(time, i, j):
        if not np.isfinite(time):
            return {"time": float("nan"), "student": float("nan"), "teacher": float("nan"),
                    "kappa": float("nan"), "predicted": float("nan")}
        beta0 = float(g2_0[i, j])
        return {"time": float(time), "student": int(i), "teacher": int(j), "kappa": math.sqrt(d) * beta0,
                "predicted": 1.0 / (ESCAPE_RATE * beta0) if beta0 > 0 else float("nan")}

    if np.all(np.isnan(times_arr)):
        first = entry(float("nan"), 0, 0)
    else:
        j = int(np.nanargmin(times_arr))
        first = entry(times_arr[j], students[j], j)
    # Expert escape: first γ⁽²⁾_{ij} ≥ threshold over all pairs.
    g2 = traj.expert_alignment
    idx2 = first_index(g2, threshold)
    k2 = int(idx2.min())
    if k2 == T:
        expert_first = entry(float("nan"), 0, 0)
    else:
        cands = np.argwhere(idx2 == k2)
        tc = [finder.first_up(_expert(m, ms, int(i), int(j)), threshold, g2[:, i, j]) for i, j in cands]
        b = int(np.argmin(tc))
        expert_first = entry(tc[b], int(cands[b][0]), int(cands[b][1]))
    order = [int(j) for j in np.argsort(np.where(np.isnan(times_arr), np.inf, times_arr)) if np.isfinite(times_arr[j])]
    expected = [int(j) for j in np.argsort(-np.asarray(kappa_max), kind="stable")]
    return {"recovery_times": times, "recovery_students": students, "recovery_kappa": kappa,
            "kappa_max": kappa_max, "recovery_order": order, "expected_order": expected,
            "T1_all": float(np.max(times_arr)) if np.all(np.isfinite(times_arr)) else float("nan"),
            "first": first, "expert_first": expert_first}


def plateaus(t: np.ndarray, loss: np.ndarray, flat: float = 0.02, min_fraction: float = 0.05) -> list:
    """Maximal stretches [t_a, t_b] with (max L − min L) ≤ flat · max L and t_b − t_a ≥ min_fraction · (t_end − t_0).

    Scans left to right: from each start a, extend b as far as the flatness holds; a stretch long
    enough is recorded and the scan resumes after it, otherwise it resumes at a + 1.
    Returns [[t_a, t_b, mean L], ...].
    """
    t = np.asarray(t, dtype=float)
    L = np.asarray(loss, dtype=float)
    min_len = min_fraction * (t[-1] - t[0])
    out, a, n = [], 0, len(t)
    while a < n - 1:
        lo = hi = L[a]
        b = a
        while b + 1 < n:
            lo2, hi2 = min(lo, L[b + 1]), max(hi, L[b + 1])
            if hi2 - lo2 > flat * abs(hi2):
                break
            lo, hi, b = lo2, hi2, b + 1
        if b > a and t[b] - t[a] >= min_len:
            out.append([float(t[a]), float(t[b]), float(np.mean(L[a:b + 1]))])
            a = b + 1
        else:
            a += 1
    return out


def phase2_constants(traj: Trajectory, pairs, T1_pairs, options: PhaseOptions, d: float) -> dict:
    """Smallest constants C with err_ℓ(t) ≤ C·B_ℓ, B_ℓ = m·ε_{A,ℓ}² + m²·δ_P·√d, in phase 2.

    For each matched pair ℓ that aligned, phase 2 is t ≥ T₁ of that pair (saved times). For each
    error term of ``options.tc_terms``: ``constants[term]`` = max_ℓ max_{t ≥ T₁,ℓ} err_ℓ(t)/B_ℓ
    (the smallest C that makes the bound hold along the whole of phase 2) and ``final[term]`` the
    same ratio at the last saved time (the bound on where the errors decayed to).

    ε_{A,ℓ} and δ_P are not defined in the material we have; these are **our proxies**:

    - ε_{A,ℓ}: ``"threshold"`` (default) 1 − threshold, the alignment precision phase 1 hands to
      phase 2; ``"at-T1"`` 1 − min(γ⁽¹⁾, γ⁽²⁾)_ℓ at the first saved time ≥ T₁,ℓ; ``"initial"``
      1 − γ⁽²⁾_ℓ(0); or a number;
    - δ_P: ``"offtarget-sq"`` (default) the mean square of the initial overlaps of the matched
      students' routers (experts) with every teacher direction other than their target v⋆_j (w⋆_j),
      cross-type ones included (≈ 1/d);
      ``"offtarget-max"`` their largest absolute value (≈ √(2 log n / d)); ``"inv-d"`` 1/d;
      ``"inv-sqrt-d"`` 1/√d; or a number.
    """
    m, ms = traj.m, traj.m_star
    errs = error_terms(traj, pairs)
    G0 = traj.gram[0]
    thr = options.threshold
    eps = []
    for col, (i, j) in enumerate(pairs):
        if options.eps_A == "threshold":
            eps.append(1.0 - thr)
        elif options.eps_A == "initial":
            eps.append(1.0 - float(G0[m + i, 2 * m + ms + j]))
        elif options.eps_A == "at-T1":
            if np.isfinite(T1_pairs[col]):
                k = min(int(np.searchsorted(traj.t, T1_pairs[col])), len(traj) - 1)
                eps.append(1.0 - float(min(traj.gram[k, i, 2 * m + j], traj.gram[k, m + i, 2 * m + ms + j])))
            else:
                eps.append(float("nan"))
        else:
            eps.append(float(options.eps_A))
    off = []  # overlaps of the matched router v̄_i / expert w̄_i with every teacher direction but its own target
    for i, j in pairs:
        for row, target in ((i, j), (m + i, ms + j)):
            for col in range(2 * ms):
                if col != target:
                    off.append(G0[row, 2 * m + col])
    off = np.asarray(off) if off else np.zeros(1)
    delta = {"offtarget-sq": float(np.mean(off**2)), "offtarget-max": float(np.max(np.abs(off))),
             "inv-d": 1.0 / d, "inv-sqrt-d": 1.0 / math.sqrt(d)}.get(options.delta_P, options.delta_P)
    delta = float(delta)
    bound = [m * e**2 + m**2 * delta * math.sqrt(d) for e in eps]
    constants, final = {}, {}
    for term in options.tc_terms:
        worst, last = float("nan"), float("nan")
        for col in range(len(pairs)):
            if not (np.isfinite(T1_pairs[col]) and np.isfinite(bound[col])):
                continue
            window = traj.t >= T1_pairs[col]
            if not window.any():
                continue
            c = float(np.max(errs[term][window, col]) / bound[col])
            f = float(errs[term][-1, col] / bound[col])
            worst = c if not np.isfinite(worst) else max(worst, c)
            last = f if not np.isfinite(last) else max(last, f)
        constants[term], final[term] = worst, last
    finite = [c for c in constants.values() if np.isfinite(c)]
    finite_f = [c for c in final.values() if np.isfinite(c)]
    return {"eps_A": eps, "delta_P": delta, "eps_A_proxy": options.eps_A, "delta_P_proxy": options.delta_P,
            "d": d, "bound": bound, "constants": constants, "final_constants": final,
            "constant": max(finite) if finite else float("nan"),
            "final_constant": max(finite_f) if finite_f else float("nan")}


def analyze(traj: Trajectory, options: PhaseOptions | None = None, d: float | None = None,
            finder: CrossingFinder | None = None) -> PhaseReport:
    """The :class:`PhaseReport` of one trajectory (definitions in the module docstring)."""
    options = options or PhaseOptions()
    if finder is None:
        finder = CrossingFinder(traj, refine=None if options.refine else False)
    m, ms = traj.m, traj.m_star
    d = _dimension(traj, d)
    start = greedy_matching(traj.expert_alignment[0])
    end = greedy_matching(traj.expert_alignment[-1])
    pairs = match_pairs(traj, options.matching)
    g1, g2 = traj.router_alignment, traj.expert_alignment
    exp_x, rout_x = [], []
    for i, j in pairs:
        exp_x.append([finder.first_up(_expert(m, ms, i, j), lv, g2[:, i, j]) for lv in options.levels])
        rout_x.append([finder.first_up(_router(m, ms, i, j), lv, g1[:, i, j]) for lv in options.levels])
    thr = options.threshold
    T1_pairs = [finder.first_up(_both(m, ms, i, j), thr, np.minimum(g1[:, i, j], g2[:, i, j])) for i, j in pairs]
    T1 = float(np.max(T1_pairs)) if np.all(np.isfinite(T1_pairs)) else float("nan")
    worst = _worst_error(m, ms, pairs, options.tc_terms)
    Tc = finder.settle_below(worst, options.error_tol)
    rec = recovery(traj, finder, thr, d)
    lags, censored = [], []
    t_last = float(traj.t[-1])
    for i, j in pairs:
        te = finder.first_up(_expert(m, ms, i, j), options.lag_level, g2[:, i, j])
        tr = finder.first_up(_router(m, ms, i, j), options.lag_level, g1[:, i, j])
        if np.isfinite(te) and np.isfinite(tr):
            lags.append(tr - te)
            censored.append(False)
        elif np.isfinite(te):
            lags.append(t_last - te)  # the router had not crossed by the end: lag ≥ this
            censored.append(True)
        elif np.isfinite(tr):
            lags.append(tr - t_last)  # the expert had not crossed: lag ≤ this
            censored.append(True)
        else:
            lags.append(float("nan"))
            censored.append(True)
    p2 = phase2_constants(traj, pairs, T1_pairs, options, d)
    return PhaseReport(
        t0=float(traj.t[0]), t_end=t_last, m=m, m_star=ms, d=d, refined=finder.refined, threshold=thr,
        levels=list(options.levels), pairs=[list(p) for p in pairs], matching=options.matching,
        matchings_agree=sorted(start) == sorted(end), expert_crossings=exp_x, router_crossings=rout_x,
        T1_pairs=T1_pairs, T1=T1,
        peak_pairs=[float(np.max(np.minimum(g1[:, i, j], g2[:, i, j]))) for i, j in pairs], Tc=Tc, error_tol=options.error_tol, lag_level=options.lag_level,
        lags=lags, lag_censored=censored,
        plateaus=plateaus(traj.t, traj.loss, options.plateau_flat, options.plateau_min), phase2=p2,
        loss_initial=float(traj.loss[0]), loss_final=float(traj.loss[-1]), stats=dict(finder.stats), **rec)
