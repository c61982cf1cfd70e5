"""Typed provenance of a Trajectory: what produced it, under which conventions, and how it ended.

A :class:`Provenance` is immutable; tools that add to it make a new one with :meth:`replace` or
:meth:`annotate` (``traj.with_provenance(...)``), so no caller mutates a shared dict. It is saved
as JSON inside every trajectory file and read back with :meth:`from_json`.

Fields:

- ``source``: ``"ode"`` (an integrated vector field) or ``"simulation"`` (finite steps in R^d);
- ``model``: ``{"gate", "expert"}`` conventions (formula and description) and ``"backend"`` (the
  expectation backend's description), enough to rebuild the vector field;
- ``time``: the time map (``"gradient-flow time t"`` or ``"t = lr * steps"``);
- ``solver``: the :class:`~flowmoe.spec.SolverSpec` fields used (ODE only);
- ``dynamics``: the vector-field terms (ODE) as their descriptions;
- ``stats``: solver steps, rejected steps, RHS evaluations, wall time;
- ``status``: ``"complete"``, ``"partial"`` (the solver stopped early), ``"interrupted"`` (Ctrl-C),
  ``"stopped-early"`` (a stopping rule ended it), or ``"diverged"`` (a simulation); ``error`` says why;
- ``simulation``: the options of a finite-step run (method, lr, batch, n, seed, dtype, ...);
- ``spec``: the full RunSpec (as a dict) when a command produced it;
- ``notes``: free annotations of downstream tools (e.g. ``pruned_from``, ``rule``, ``labels``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

STATUSES = ("complete", "partial", "interrupted", "stopped-early", "diverged")


@dataclass(frozen=True)
class Provenance:
    source: str = "ode"
    model: dict = field(default_factory=dict)
    time: str = "gradient-flow time t"
    solver: dict = field(default_factory=dict)
    dynamics: tuple = ()
    stats: dict = field(default_factory=dict)
    status: str = "complete"
    error: str | None = None
    simulation: dict = field(default_factory=dict)
    spec: dict | None = None
    notes: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"provenance.status: {self.status!r}; allowed: {list(STATUSES)}")
        object.__setattr__(self, "dynamics", tuple(self.dynamics))

    def replace(self, **changes) -> "Provenance":
        return dataclasses.replace(self, **changes)

    def annotate(self, **notes) -> "Provenance":
        """A copy with ``notes`` updated."""
        return dataclasses.replace(self, notes={**self.notes, **notes})

    @property
    def ok(self) -> bool:
        return self.status in ("complete", "stopped-early")

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["dynamics"] = list(self.dynamics)
        return out

    def to_json(self) -> str:
        from .io import json_text

        return json_text(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict) -> "Provenance":
        names = {f.name for f in dataclasses.fields(cls)}
        if "source" in data and "status" in data and set(data) <= names:
            return cls(**data)
        return cls._from_legacy(data)

    @classmethod
    def _from_legacy(cls, meta: dict) -> "Provenance":
        """Trajectory files of flowmoe 0.1 stored a free ``meta`` dict."""
        meta = dict(meta)
        status = {"ok": "complete", None: "complete"}.get(meta.get("status"), meta.get("status"))
        if status not in STATUSES:
            status = "partial"
        if meta.get("stopped_early"):
            status = "stopped-early"
        source = meta.pop("source", "ode")
        model = {k: meta.pop(k) for k in ("gate", "expert") if k in meta}
        solver = meta.pop("solver", {}) or {}
        stats = {k: solver.pop(k) for k in ("steps", "rejected_steps", "rhs_evaluations", "wall_time_s")
                 if k in solver}
        sim = {}
        if source == "simulation":
            for k in ("method", "lr", "batch", "n", "seed", "steps", "steps_requested", "save_every", "dtype",
                      "max_norm_growth", "d", "samples_per_step", "grad_transform", "project"):
                if k in meta:
                    sim[k] = meta.pop(k)
            if "wall_time_s" in meta:
                stats["wall_time_s"] = meta.pop("wall_time_s")
        return cls(source=source, model=model, time=meta.pop("time", "gradient-flow time t"), solver=solver,
                   stats=stats, status=status, error=meta.pop("error", None), simulation=sim,
                   spec=meta.pop("spec", None), notes={k: v for k, v in meta.items()
                                                       if k not in ("status", "stopped_early")})

    @classmethod
    def from_json(cls, text: str) -> "Provenance":
        return cls.from_dict(json.loads(text))


__all__ = ["Provenance", "STATUSES"]
