"""Model and run specifications, validated on construction (docs/maths.md §1).

A :class:`RunSpec` is what a TOML preset holds: the model (:class:`MoESpec`), the teacher
geometry, the initialisation, the solver and the observation settings. Every field is checked when
the object is built; a bad value raises :class:`~flowmoe.errors.SpecError` naming the field
(``"model.m_star"``) and the allowed values.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import SpecError
from .gates import GATES, check_expert_degree, get_expert, get_gate
from .presets import preset_names, preset_text

TEACHER_GEOMETRIES = ("orthonormal", "routers-orthonormal", "experts-orthonormal", "gram")
ROUTER_INITS = ("orthogonal", "plain")
SAMPLERS = ("vectors", "gram")
BACKENDS = ("diffrax", "scipy")
DIFFRAX_METHODS = ("tsit5", "dopri5", "dopri8")
SCIPY_METHODS = ("DOP853", "RK45", "Radau", "LSODA")
STIFF_MODES = ("switch", "off")
"""solver.stiff: what a chunked run (flowmoe run, verify, sweeps) does when an explicit diffrax chunk
needs more than solver.stiff_steps steps: "switch" integrates that chunk again, and the rest of the
run, with scipy's LSODA (implicit BDF when it detects stiffness); "off": no detection, only
solver.max_steps limits a chunk."""
STIFF_SOLVER = ("scipy", "LSODA")
STEADY_CRITERION = ("max over the state of |dG/dt| and |dr/dt| at the end of a chunk < solver.steady_tol "
                    "(0: off). A saddle plateau is slow too: pick a tolerance far below its speed")
NORM_MODES = ("fixed", "state")
DYNAMICS = ("gradient-flow", "online-sgd")
"""dynamics.method: "gradient-flow" (the exact population gradient flow) or "online-sgd" (gradient flow plus
the O(lr) terms of online SGD with step dynamics.lr and batch dynamics.batch, docs/sgd-ode.md)."""
STATES = ("factor", "gram")
SPACINGS = ("linear", "log")
MAX_EXPERTS = 10_000  # m and m⋆: the Gram matrix has (2(m + m⋆))² entries
MAX_DIMENSION = 10**15  # integers stay exact in float64 (the Gram sampler draws χ²(d − k))
MAX_VECTOR_ENTRIES = 200_000_000  # 2(m + m⋆)·d float64 numbers (1.6 GB) for init.sampler = "vectors"


def _int(value, name: str, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) and not (
        isinstance(value, float) and value.is_integer()
    ):
        raise SpecError(name, f"must be an integer ≥ {minimum}, got {value!r}")
    value = int(value)
    if value < minimum:
        raise SpecError(name, f"must be an integer ≥ {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise SpecError(name, f"must be an integer ≤ {maximum:.3g}, got {_show(value)}")
    return value


def _show(value) -> str:
    """A short form of a possibly huge integer (no OverflowError for ints beyond float range)."""
    try:
        return f"{value:.3g}"
    except (OverflowError, ValueError):
        return "an integer beyond the float64 range"


def _float(value, name: str, *, positive: bool = False, nonneg: bool = False) -> float:
    if isinstance(value, (bool, np.bool_, str, bytes)) or np.ndim(value) != 0 or np.iscomplexobj(value):
        raise SpecError(name, f"must be a real number, got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError, OverflowError):
        raise SpecError(name, f"must be a real number, got {value!r}") from None
    if not math.isfinite(value):
        raise SpecError(name, f"must be finite, got {value}")
    if positive and value <= 0:
        raise SpecError(name, f"must be > 0, got {value}")
    if nonneg and value < 0:
        raise SpecError(name, f"must be ≥ 0, got {value}")
    return value


def _choice(value, name: str, allowed) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise SpecError(name, f"got {value!r}; allowed: {list(allowed)}")
    return value


@dataclass(frozen=True)
class TeacherSpec:
    """Teacher geometry. ``gram`` (for geometry ``"gram"``) is the 2m⋆×2m⋆ Gram matrix of
    [v⋆_1..v⋆_m⋆, w⋆_1..w⋆_m⋆]; it must be symmetric positive semi-definite with unit diagonal."""

    geometry: str = "orthonormal"
    gram: tuple | None = None

    def __post_init__(self):
        _choice(self.geometry, "teacher.geometry", TEACHER_GEOMETRIES)
        if self.geometry == "gram" and self.gram is None:
            raise SpecError("teacher.gram", "geometry 'gram' needs teacher.gram (a 2m⋆×2m⋆ matrix)")
        if self.gram is not None:
            if self.geometry != "gram":
                raise SpecError("teacher.gram", f"is only used with teacher.geometry = 'gram' "
                                                f"(geometry is {self.geometry!r})")
            try:
                rows = tuple(tuple(float(x) for x in row) for row in self.gram)
            except (TypeError, ValueError):
                raise SpecError("teacher.gram", f"must be a square matrix of numbers, got {self.gram!r}") from None
            if len({len(r) for r in rows}) > 1:
                raise SpecError("teacher.gram", "rows must all have the same length")
            object.__setattr__(self, "gram", rows)


@dataclass(frozen=True)
class InitSpec:
    """Initialisation of the student: v_i, w_i i.i.d. N(0, I_d/d).

    ``router``: ``"orthogonal"`` makes v_i ⊥ w_i (v_i ← v_i − (v_iᵀw̄_i) w̄_i), ``"plain"`` leaves it.
    ``sampler``: ``"vectors"`` samples the vectors in R^d (needed to share a start with a
    simulation); ``"gram"`` samples the Gram matrix directly with the same law (Bartlett
    decomposition), at a cost independent of d.
    ``vectors``: path of an ``.npz`` file with arrays ``V``, ``W`` (m×d), ``V_star``, ``W_star``
    (m⋆×d): an explicit initial state (and teacher) instead of sampling. The teacher vectors are
    checked against ``teacher.geometry``.
    """

    router: str = "orthogonal"
    sampler: str = "vectors"
    seed: int = 0
    vectors: str | None = None

    def __post_init__(self):
        _choice(self.router, "init.router", ROUTER_INITS)
        _choice(self.sampler, "init.sampler", SAMPLERS)
        object.__setattr__(self, "seed", _int(self.seed, "init.seed", 0))
        if self.vectors is not None and not isinstance(self.vectors, str):
            raise SpecError("init.vectors", f"must be the path of an .npz file, got {self.vectors!r}")


@dataclass(frozen=True)
class MoESpec:
    """The student–teacher soft-routed MoE: f(x) = Σ_i π(v̄_iᵀx) P(w̄_iᵀx) (docs/maths.md §1)."""

    m: int = 25
    m_star: int = 5
    d: int = 1000
    gate: str = "sigmoid"
    expert: str = "he3"
    backend: str = "pair"
    temperature: float = 1.0  # softmax gate only: g_i = exp(r_i/τ) / Σ_j exp(r_j/τ)
    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    init: InitSpec = field(default_factory=InitSpec)

    def __post_init__(self):
        m = _int(self.m, "model.m", 1, MAX_EXPERTS)
        m_star = _int(self.m_star, "model.m_star", 1, MAX_EXPERTS)
        d = _int(self.d, "model.d", 1, MAX_DIMENSION)
        if not isinstance(self.init, InitSpec) or not isinstance(self.teacher, TeacherSpec):
            raise SpecError("model", "teacher and init must be TeacherSpec and InitSpec objects")
        if self.init.sampler == "vectors" and self.init.vectors is None and 2 * (m + m_star) * d > MAX_VECTOR_ENTRIES:
            raise SpecError("model.d", f"d = {d:.3g} is too large for init.sampler = 'vectors' (it would store "
                                       f"2(m + m⋆)·d = {2 * (m + m_star) * d:.3g} numbers, limit "
                                       f"{MAX_VECTOR_ENTRIES:.0e}); use init.sampler = \"gram\", whose cost does "
                                       "not depend on d")
        if m_star >= m:
            raise SpecError("model.m_star", f"the teacher must have fewer experts than the student "
                                            f"(m⋆ < m); got m⋆ = {m_star}, m = {m}")
        if self.teacher.geometry == "orthonormal" and d < 2 * m_star:
            raise SpecError("model.d", f"an orthonormal teacher needs d ≥ 2m⋆ = {2 * m_star}, got d = {d}")
        if self.teacher.geometry in ("routers-orthonormal", "experts-orthonormal") and d < m_star:
            raise SpecError("model.d", f"teacher geometry {self.teacher.geometry!r} needs d ≥ m⋆ = {m_star}")
        gate = _coupled_gate(self.gate, self.temperature, self.backend)
        expert = get_expert(self.expert, "model.expert")
        check_expert_degree(self.gate, expert, "model.expert")
        from .backends import check_backend_name

        check_backend_name(self.backend, "model.backend")
        if self.teacher.gram is not None:
            g = np.asarray(self.teacher.gram, dtype=float)
            if g.shape != (2 * m_star, 2 * m_star):
                raise SpecError("teacher.gram", f"must be {2 * m_star}×{2 * m_star} (2m⋆), got {g.shape}")
            if not np.all(np.isfinite(g)) or not np.allclose(g, g.T, atol=1e-12):
                raise SpecError("teacher.gram", "must be finite and symmetric")
            if not np.allclose(np.diag(g), 1.0, atol=1e-12):
                raise SpecError("teacher.gram", "must have unit diagonal (teacher vectors are unit)")
            if np.linalg.eigvalsh(g).min() < -1e-10:
                raise SpecError("teacher.gram", "must be positive semi-definite")
            if np.linalg.matrix_rank(g, tol=1e-10) > d:
                raise SpecError("model.d", f"teacher.gram has rank > d = {d}")
        object.__setattr__(self, "m", m)
        object.__setattr__(self, "m_star", m_star)
        object.__setattr__(self, "d", d)
        object.__setattr__(self, "expert", expert.name)
        object.__setattr__(self, "gate", gate.name)
        object.__setattr__(self, "temperature", _float(self.temperature, "model.temperature", positive=True))

    @property
    def n_dirs(self) -> int:
        return 2 * (self.m + self.m_star)


def _coupled_gate(name, temperature, backend):
    """The gate of model.gate with model.temperature applied (softmax only); coupled gates
    (softmax, normalised sigmoid) need a backend other than the pair engine."""
    from .gates import softmax_gate

    gate = get_gate(name, "model.gate")
    tau = _float(temperature, "model.temperature", positive=True)
    if tau != 1.0:
        if not gate.name.startswith("softmax"):
            raise SpecError("model.temperature", f"only the softmax gate has a temperature; model.gate is {gate.name!r}")
        gate = softmax_gate(tau)
    if getattr(gate, "coupled", False) and backend == "pair":
        raise SpecError("model.gate", f"{gate.name!r} couples the experts through a normalisation; the exact pair "
                                      "engine handles independent per-expert gates only: set model.backend = 'router'")
    return gate


@dataclass(frozen=True)
class SolverSpec:
    """How to integrate the Gram ODE. Times saved: ``n_save`` points from 0 to ``t_end``."""

    backend: str = "diffrax"
    method: str = "tsit5"
    rtol: float = 1e-8
    atol: float = 1e-10
    t_end: float = 100.0
    n_save: int = 501
    spacing: str = "linear"
    max_steps: int = 1_000_000
    norms: str = "fixed"
    norm_drift_lr: float = 0.0
    state: str = "factor"
    stiff: str = "switch"
    stiff_steps: int = 50_000
    steady_tol: float = 0.0

    def __post_init__(self):
        _choice(self.backend, "solver.backend", BACKENDS)
        allowed = DIFFRAX_METHODS if self.backend == "diffrax" else SCIPY_METHODS
        _choice(self.method, "solver.method", allowed)
        for name in ("rtol", "atol", "t_end"):
            object.__setattr__(self, name, _float(getattr(self, name), f"solver.{name}", positive=True))
        object.__setattr__(self, "n_save", _int(self.n_save, "solver.n_save", 2))
        object.__setattr__(self, "max_steps", _int(self.max_steps, "solver.max_steps", 16))
        _choice(self.spacing, "solver.spacing", SPACINGS)
        _choice(self.norms, "solver.norms", NORM_MODES)
        _choice(self.state, "solver.state", STATES)
        object.__setattr__(self, "norm_drift_lr", _float(self.norm_drift_lr, "solver.norm_drift_lr", nonneg=True))
        if self.norm_drift_lr > 0 and self.norms != "state":
            raise SpecError("solver.norm_drift_lr", "needs solver.norms = 'state'")
        _choice(self.stiff, "solver.stiff", STIFF_MODES)
        object.__setattr__(self, "stiff_steps", _int(self.stiff_steps, "solver.stiff_steps", 16))
        object.__setattr__(self, "steady_tol", _float(self.steady_tol, "solver.steady_tol", nonneg=True))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def times(self) -> np.ndarray:
        if self.spacing == "linear":
            return np.linspace(0.0, self.t_end, self.n_save)
        return np.concatenate([[0.0], np.geomspace(self.t_end * 1e-4, self.t_end, self.n_save - 1)])


@dataclass(frozen=True)
class DynamicsSpec:
    """Which vector field: ``method`` one of :data:`DYNAMICS`. ``"online-sgd"`` (docs/sgd-ode.md) needs
    the step ``lr`` > 0 and the batch size ``batch`` ≥ 1 of the online SGD it stands for (flow time
    t = lr × steps); ``points``, ``unit_points`` (powers of 2) and ``seed`` fix the quadrature of its
    per-sample gradient moments. It integrates the Gram matrix and the norms (``solver.state =
    "gram"``, ``solver.norms = "state"`` are set for it)."""

    method: str = "gradient-flow"
    lr: float = 0.0
    batch: int = 0
    points: int = 2**14
    unit_points: int = 2**11
    seed: int = 0

    def __post_init__(self):
        _choice(self.method, "dynamics.method", DYNAMICS)
        object.__setattr__(self, "lr", _float(self.lr, "dynamics.lr", nonneg=True))
        object.__setattr__(self, "batch", _int(self.batch, "dynamics.batch", 0))
        for name in ("points", "unit_points"):
            n = _int(getattr(self, name), f"dynamics.{name}", 4)
            if n & (n - 1):
                raise SpecError(f"dynamics.{name}", f"must be a power of 2 (Sobol nets), got {n}")
            object.__setattr__(self, name, n)
        object.__setattr__(self, "seed", _int(self.seed, "dynamics.seed", 0))
        if self.method == "online-sgd":
            if self.lr <= 0:
                raise SpecError("dynamics.lr", f"dynamics.method = 'online-sgd' needs the SGD step lr > 0, got {self.lr:g}")
            if self.batch < 1:
                raise SpecError("dynamics.batch", f"dynamics.method = 'online-sgd' needs the batch size ≥ 1, got {self.batch}")
        else:
            for name in ("lr", "batch"):
                if getattr(self, name):
                    raise SpecError(f"dynamics.{name}", f"is only used with dynamics.method = 'online-sgd' "
                                                        f"(method is {self.method!r})")

    @property
    def online_sgd(self) -> bool:
        return self.method == "online-sgd"


@dataclass(frozen=True)
class ObserveSpec:
    """Observation settings (docs/maths.md §4): alignment threshold for T₁ and error tolerance for T_c."""

    threshold: float = 0.9
    error_tol: float = 0.05

    def __post_init__(self):
        t = _float(self.threshold, "observe.threshold")
        if not 0 < t < 1:
            raise SpecError("observe.threshold", f"must be in (0, 1), got {t}")
        _float(self.error_tol, "observe.error_tol", positive=True)


@dataclass(frozen=True)
class RunSpec:
    """Everything ``flowmoe run`` needs; what a preset file holds.

    ``backend_options`` (the ``[backend]`` table) are passed to the expectation backend named by
    ``model.backend`` (e.g. the point count of a quadrature backend); the exact pair engine takes none.
    """

    name: str = "custom"
    model: MoESpec = field(default_factory=MoESpec)
    solver: SolverSpec = field(default_factory=SolverSpec)
    observe: ObserveSpec = field(default_factory=ObserveSpec)
    backend_options: dict = field(default_factory=dict)
    dynamics: DynamicsSpec = field(default_factory=DynamicsSpec)

    def __post_init__(self):
        if not isinstance(self.backend_options, dict):
            raise SpecError("backend", f"must be a table of options, got {self.backend_options!r}")
        if not isinstance(self.dynamics, DynamicsSpec):
            raise SpecError("dynamics", f"must be a DynamicsSpec, got {type(self.dynamics).__name__}")
        if self.dynamics.online_sgd:
            if self.solver.norm_drift_lr > 0:
                raise SpecError("solver.norm_drift_lr", "is superseded by dynamics.method = 'online-sgd' (which "
                                                        "contains the full norm growth); set it to 0")
            object.__setattr__(self, "solver", dataclasses.replace(self.solver, state="gram", norms="state"))
            if self.model.d < self.model.n_dirs:
                raise SpecError("model.d", f"dynamics.method = 'online-sgd' needs d ≥ N = 2(m + m⋆) = "
                                           f"{self.model.n_dirs}, got d = {self.model.d}")

    def __hash__(self):
        return hash(json.dumps(self.to_dict(), sort_keys=True, default=str))

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        teacher = out["model"].pop("teacher")
        init = out["model"].pop("init")
        return {"name": self.name, "model": out["model"], "teacher": teacher, "init": init,
                "solver": out["solver"], "observe": out["observe"], "backend": dict(self.backend_options),
                "dynamics": out["dynamics"]}

    def backend(self):
        """The expectation backend of this spec (cached per structure)."""
        from .backends import model_backend

        m = self.model
        return model_backend(m.backend, m.gate, m.expert, m.m, m.m_star, self.backend_options)

    @classmethod
    def from_dict(cls, data: dict, name: str | None = None) -> "RunSpec":
        known = {"name", "model", "teacher", "init", "solver", "observe", "backend", "dynamics"}
        for key in data:
            if key not in known:
                raise SpecError(str(key), f"unknown section; allowed: {sorted(known)}")
        sections = {}
        for key, klass in (("model", MoESpec), ("teacher", TeacherSpec), ("init", InitSpec),
                           ("solver", SolverSpec), ("observe", ObserveSpec), ("dynamics", DynamicsSpec)):
            if not isinstance(data.get(key, {}), dict):
                raise SpecError(key, f"must be a table of fields (e.g. [{key}] in TOML), got {data[key]!r}")
            section = dict(data.get(key, {}))
            allowed = {f.name for f in dataclasses.fields(klass)} - {"teacher", "init"}
            for k in section:
                if k not in allowed:
                    raise SpecError(f"{key}.{k}", f"unknown field; allowed: {sorted(allowed)}")
            sections[key] = section
        teacher = TeacherSpec(**sections["teacher"])
        init = InitSpec(**sections["init"])
        model = MoESpec(**sections["model"], teacher=teacher, init=init)
        options = data.get("backend", {})
        if not isinstance(options, dict):
            raise SpecError("backend", f"must be a table of options (e.g. [backend] in TOML), got {options!r}")
        return cls(name=name or data.get("name", "custom"), model=model,
                   solver=SolverSpec(**sections["solver"]), observe=ObserveSpec(**sections["observe"]),
                   backend_options=dict(options), dynamics=DynamicsSpec(**sections["dynamics"]))

    def with_overrides(self, overrides: list[str] | dict) -> "RunSpec":
        """Apply ``section.field=value`` overrides (values parsed as TOML scalars)."""
        data = self.to_dict()
        items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides]
        for key, value in items:
            parts = key.split(".")
            if len(parts) != 2 or parts[0] not in data or not isinstance(data[parts[0]], dict):
                raise SpecError(key, "overrides look like section.field=value with section one of "
                                     "model, teacher, init, solver, observe, backend, dynamics")
            data[parts[0]][parts[1]] = value
        return RunSpec.from_dict(data, name=self.name)


def _split(item: str):
    if "=" not in item:
        raise SpecError(item, "an override must look like section.field=value")
    key, raw = item.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word such as sigmoid
    return key.strip(), value


def load_preset(name: str) -> RunSpec:
    names = preset_names()
    if name not in names:
        raise SpecError("preset", f"unknown preset {name!r}; allowed: {names}")
    return RunSpec.from_dict(tomllib.loads(preset_text(name)), name=name)


def load_config(path) -> RunSpec:
    path = Path(path)
    if not path.is_file():
        raise SpecError("config", f"no such file: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise SpecError("config", f"{path} is not UTF-8 text (byte {err.start}: {err.reason}); "
                                  "save the TOML file as UTF-8") from None
    except OSError as err:
        raise SpecError("config", f"cannot read {path}: {err.strerror or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise SpecError("config", f"{path} is not valid TOML: {err}") from None
    return RunSpec.from_dict(data, name=data.get("name", path.stem))


__all__ = ["MoESpec", "TeacherSpec", "InitSpec", "SolverSpec", "ObserveSpec", "DynamicsSpec", "RunSpec",
           "load_preset", "load_config", "preset_names", "GATES"]
