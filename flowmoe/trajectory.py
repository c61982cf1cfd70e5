"""The Trajectory: the one currency shared by the ODE, the simulators, observables and plots.

A trajectory stores, at each saved time, the full Gram matrix of the unit directions (layout of
:class:`flowmoe.kernel.Layout`), the norms of the raw vectors, and the population loss. Every
observable is computed from these, so a definition can change without re-integrating.

File layout of ``trajectory.npz`` (all float64):

- ``t`` (T,): flow time (for finite-step methods t = lr × steps);
- ``gram`` (T, N, N): Gram matrix of [v̄_1..v̄_m, w̄_1..w̄_m, v⋆_1..v⋆_m⋆, w⋆_1..w⋆_m⋆];
- ``norms`` (T, N): ‖v_i‖, ‖w_i‖ (students), 1 for the teacher;
- ``loss`` (T,): population loss ½E[(f − f⋆)²];
- ``m``, ``m_star`` (scalars), ``meta`` (a JSON string: source, conventions, solver, ...).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import SpecError


@dataclass
class Trajectory:
    t: np.ndarray
    gram: np.ndarray
    norms: np.ndarray
    loss: np.ndarray
    m: int
    m_star: int
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.t = np.asarray(self.t, dtype=np.float64)
        self.gram = np.asarray(self.gram, dtype=np.float64)
        self.norms = np.asarray(self.norms, dtype=np.float64)
        self.loss = np.asarray(self.loss, dtype=np.float64)
        n = 2 * (self.m + self.m_star)
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
        m, ms = self.m, self.m_star
        return self.gram[:, :m, 2 * m:2 * m + ms]

    @property
    def expert_alignment(self) -> np.ndarray:
        """γ⁽²⁾_{i,j}(t) = ⟨w̄_i, w⋆_j⟩, shape (T, m, m⋆)."""
        m, ms = self.m, self.m_star
        return self.gram[:, m:2 * m, 2 * m + ms:]

    def slice(self, stop: int) -> "Trajectory":
        return Trajectory(self.t[:stop], self.gram[:stop], self.norms[:stop], self.loss[:stop],
                          self.m, self.m_star, dict(self.meta))

    # Files -------------------------------------------------------------------------------
    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, t=self.t, gram=self.gram, norms=self.norms, loss=self.loss,
                            m=self.m, m_star=self.m_star, meta=json.dumps(self.meta, default=str))
        return path

    @classmethod
    def load(cls, path) -> "Trajectory":
        path = Path(path)
        if not path.is_file():
            raise SpecError("trajectory", f"no such file: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(t=data["t"], gram=data["gram"], norms=data["norms"], loss=data["loss"],
                           m=int(data["m"]), m_star=int(data["m_star"]), meta=json.loads(str(data["meta"])))
        except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise SpecError("trajectory", f"{path} is not a flowmoe trajectory file: {err}") from None
