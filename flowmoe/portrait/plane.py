"""Planes: two coordinates of a reduction varied, the others held, with batched field, Jacobian and leak evaluations."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import SpecError
from .reduction import PSD_TOL, Reduction, _kernels


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
