"""Where every direction sits in the Gram matrix: the only owner of block positions.

The Gram matrix G holds the inner products of unit directions, in this order of blocks:

    [student routers v̄_1..v̄_m | student experts w̄_1..w̄_m | teacher routers v⋆_1..v⋆_m⋆ |
     teacher experts w⋆_1..w⋆_m⋆ | student shared experts | teacher shared experts | extra fixed]

(the first four blocks are the layout of every trajectory file). Shared experts are always-on
experts without a router; *extra* directions are fixed directions that a data distribution adds
(e.g. the means of a Gaussian mixture). Only students move.

A *routed unit* is a (router, expert) pair; units are numbered students first, then teachers, and
:attr:`Layout.router`, :attr:`Layout.expert`, :attr:`Layout.sign` are indexed by unit. Code
elsewhere asks for the index sets by name (``layout.student_experts``, ``layout.block("teacher
routers")``) and never computes positions such as ``2*m + m_star + j`` itself.

>>> lay = Layout(m=3, m_star=1)
>>> lay.n_dirs, lay.student_experts.tolist(), lay.teacher_routers.tolist()
(8, [3, 4, 5], [6])
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

BLOCKS = ("student routers", "student experts", "teacher routers", "teacher experts",
          "student shared", "teacher shared", "extra")


@dataclass(frozen=True)
class Layout:
    """Block positions for m students, m⋆ teachers, shared experts and extra fixed directions."""

    m: int
    m_star: int
    shared: int = 0
    shared_star: int = 0
    extra: int = 0

    def __post_init__(self):
        for name in ("m", "m_star", "shared", "shared_star", "extra"):
            object.__setattr__(self, name, int(getattr(self, name)))

    # Blocks -------------------------------------------------------------------------------
    @functools.cached_property
    def _sizes(self) -> dict:
        m, ms = self.m, self.m_star
        return dict(zip(BLOCKS, (m, m, ms, ms, self.shared, self.shared_star, self.extra)))

    @functools.cached_property
    def _starts(self) -> dict:
        starts, pos = {}, 0
        for name in BLOCKS:
            starts[name] = pos
            pos += self._sizes[name]
        return starts

    def block(self, name: str) -> np.ndarray:
        """Gram indices of one block (one of :data:`BLOCKS`)."""
        if name not in self._sizes:
            raise KeyError(f"unknown block {name!r}; blocks: {list(BLOCKS)}")
        return self._starts[name] + np.arange(self._sizes[name])

    def span(self, name: str) -> slice:
        """The block as a slice (for views such as ``gram[..., lay.span('student experts'), :]``)."""
        start = self._starts[name]
        return slice(start, start + self._sizes[name])

    @property
    def n_dirs(self) -> int:
        return sum(self._sizes.values())

    @property
    def n_units(self) -> int:
        """Routed units: students then teachers."""
        return self.m + self.m_star

    @property
    def student_routers(self) -> np.ndarray:
        return self.block("student routers")

    @property
    def student_experts(self) -> np.ndarray:
        return self.block("student experts")

    @property
    def teacher_routers(self) -> np.ndarray:
        return self.block("teacher routers")

    @property
    def teacher_experts(self) -> np.ndarray:
        return self.block("teacher experts")

    @property
    def student_shared(self) -> np.ndarray:
        return self.block("student shared")

    @property
    def teacher_shared(self) -> np.ndarray:
        return self.block("teacher shared")

    @property
    def extra_dirs(self) -> np.ndarray:
        return self.block("extra")

    @property
    def students(self) -> np.ndarray:
        """Every moving direction: student routers, experts and shared experts."""
        return np.concatenate([self.student_routers, self.student_experts, self.student_shared])

    # Routed units ---------------------------------------------------------------------------
    @functools.cached_property
    def router(self) -> np.ndarray:
        """Gram index of the router of each routed unit (students, then teachers)."""
        return np.concatenate([self.student_routers, self.teacher_routers])

    @functools.cached_property
    def expert(self) -> np.ndarray:
        """Gram index of the expert of each routed unit (students, then teachers)."""
        return np.concatenate([self.student_experts, self.teacher_experts])

    @functools.cached_property
    def sign(self) -> np.ndarray:
        """+1 for student units, −1 for teacher units (L = ½ Σ s s' K)."""
        return np.concatenate([np.ones(self.m), -np.ones(self.m_star)])

    @functools.cached_property
    def moving(self) -> np.ndarray:
        """1.0 for student directions (they move), 0.0 for teacher and extra directions."""
        out = np.zeros(self.n_dirs)
        out[self.students] = 1.0
        return out

    # Saved blocks of a Gram path (T, N, N) -----------------------------------------------------
    def router_alignment(self, gram) -> np.ndarray:
        """γ⁽¹⁾_{i,j} = ⟨v̄_i, v⋆_j⟩ from Gram matrices (..., N, N): shape (..., m, m⋆)."""
        return gram[..., self.span("student routers"), self.span("teacher routers")]

    def expert_alignment(self, gram) -> np.ndarray:
        """γ⁽²⁾_{i,j} = ⟨w̄_i, w⋆_j⟩ from Gram matrices (..., N, N): shape (..., m, m⋆)."""
        return gram[..., self.span("student experts"), self.span("teacher experts")]

    def subset(self, students) -> tuple["Layout", np.ndarray]:
        """The layout with only the given student units kept, and the Gram indices to keep."""
        keep = np.asarray(students, dtype=int)
        idx = np.concatenate([self.student_routers[keep], self.student_experts[keep], self.teacher_routers,
                              self.teacher_experts, self.student_shared, self.teacher_shared, self.extra_dirs])
        return Layout(len(keep), self.m_star, self.shared, self.shared_star, self.extra), idx


__all__ = ["Layout", "BLOCKS"]
