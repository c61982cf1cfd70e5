"""The Trajectory: the one currency shared by the ODE, the simulators, observables and plots.

A trajectory stores, at each saved time, the full Gram matrix of the unit directions (blocks of
:class:`flowmoe.layout.Layout`), the norms of the raw vectors, and the population loss, with a
typed :class:`~flowmoe.provenance.Provenance` (what produced it, conventions, solver, status).
Every observable is computed from these, so a definition can change without re-integrating.

File layout of ``trajectory.npz`` (all float64):

- ``t`` (T,): flow time (for finite-step methods t = lr × steps);
- ``gram`` (T, N, N): Gram matrix of [v̄_1..v̄_m, w̄_1..w̄_m, v⋆_1..v⋆_m⋆, w⋆_1..w⋆_m⋆];
- ``norms`` (T, N): ‖v_i‖, ‖w_i‖ (students), 1 for the teacher;
- ``loss`` (T,): population loss ½E[(f − f⋆)²];
- ``m``, ``m_star`` (scalars), ``layout`` (JSON: the block sizes), ``provenance`` (JSON, see
  :mod:`flowmoe.provenance`). Files of flowmoe 0.1 (with a free ``meta`` string) still load.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import SpecError
from .layout import Layout
from .provenance import Provenance


@dataclass
class Trajectory:
    """Saved times ``t`` (T,), Gram matrices ``gram`` (T, N, N), norms (T, N), loss (T,).

    ``provenance`` is immutable: use :meth:`with_provenance` / :meth:`annotate` for a copy with
    more information. A dict given as ``provenance`` is read as a flowmoe 0.1 ``meta`` dict.
    """

    t: np.ndarray
    gram: np.ndarray
    norms: np.ndarray
    loss: np.ndarray
    m: int
    m_star: int
    provenance: Provenance = field(default_factory=Provenance)
    layout: Layout | None = None

    def __post_init__(self):
        self.t = np.asarray(self.t, dtype=np.float64)
        self.gram = np.asarray(self.gram, dtype=np.float64)
        self.norms = np.asarray(self.norms, dtype=np.float64)
        self.loss = np.asarray(self.loss, dtype=np.float64)
        self.m, self.m_star = int(self.m), int(self.m_star)
        if isinstance(self.provenance, dict):
            self.provenance = Provenance.from_dict(self.provenance)
        if self.layout is None:
            self.layout = Layout(self.m, self.m_star)
        if (self.layout.m, self.layout.m_star) != (self.m, self.m_star):
            raise ValueError(f"layout {self.layout} does not match m={self.m}, m⋆={self.m_star}")
        n = self.layout.n_dirs
        T = self.t.shape[0]
        if self.gram.shape != (T, n, n) or self.norms.shape != (T, n) or self.loss.shape != (T,):
            raise ValueError(f"inconsistent trajectory shapes: t {self.t.shape}, gram {self.gram.shape}, "
                             f"norms {self.norms.shape}, loss {self.loss.shape} for m={self.m}, m⋆={self.m_star}")

    def __len__(self) -> int:
        return self.t.shape[0]

    # Blocks of the Gram matrix -------------------------------------------------------------
    @property
    def router_alignment(self) -> np.ndarray:
        """γ⁽¹⁾_{i,j}(t) = ⟨v̄_i, v⋆_j⟩, shape (T, m, m⋆)."""
        return self.layout.router_alignment(self.gram)

    @property
    def expert_alignment(self) -> np.ndarray:
        """γ⁽²⁾_{i,j}(t) = ⟨w̄_i, w⋆_j⟩, shape (T, m, m⋆)."""
        return self.layout.expert_alignment(self.gram)

    def slice(self, stop: int) -> "Trajectory":
        return Trajectory(self.t[:stop], self.gram[:stop], self.norms[:stop], self.loss[:stop],
                          self.m, self.m_star, self.provenance, self.layout)

    def with_provenance(self, **changes) -> "Trajectory":
        """The same data with provenance fields replaced (``status=``, ``spec=``, ...)."""
        return dataclasses.replace(self, provenance=self.provenance.replace(**changes))

    def annotate(self, **notes) -> "Trajectory":
        """The same data with ``provenance.notes`` updated."""
        return dataclasses.replace(self, provenance=self.provenance.annotate(**notes))

    # Files -------------------------------------------------------------------------------
    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lay = self.layout
        layout = json.dumps({"shared": lay.shared, "shared_star": lay.shared_star, "extra": lay.extra})
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez_compressed(tmp, t=self.t, gram=self.gram, norms=self.norms, loss=self.loss,
                            m=self.m, m_star=self.m_star, layout=layout, provenance=self.provenance.to_json())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path) -> "Trajectory":
        path = Path(path)
        if not path.is_file():
            raise SpecError("trajectory", f"no such file: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                m, m_star = int(data["m"]), int(data["m_star"])
                if "provenance" in data.files:
                    prov = Provenance.from_json(str(data["provenance"]))
                else:
                    prov = Provenance.from_dict(json.loads(str(data["meta"])))
                extra = json.loads(str(data["layout"])) if "layout" in data.files else {}
                return cls(t=data["t"], gram=data["gram"], norms=data["norms"], loss=data["loss"],
                           m=m, m_star=m_star, provenance=prov, layout=Layout(m, m_star, **extra))
        except (KeyError, ValueError, TypeError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise SpecError("trajectory", f"{path} is not a flowmoe trajectory file: {err}") from None
