"""Input distributions: the sampler that the simulators in R^d use, and the fixed directions it adds.

Every expectation flowmoe computes assumes x ~ N(0, I_d), for which the loss is a function of
the Gram matrix of the model's directions alone. A distribution with structure (a Gaussian mixture
with cluster means μ_c, for the latent-cluster setting) keeps the Gram closure if its fixed
directions are added to the layout (:attr:`flowmoe.layout.Layout.extra`); this module is where
such a distribution declares them.

Implementer's contract for a new distribution:

1. ``sample(key, n, d, dtype) -> X``: n inputs in R^d as an (n, d) JAX array, from a JAX key
   (pure, traceable: it runs inside the simulators' compiled loops).
2. ``directions(d) -> array (k, d)``: the fixed unit directions it adds to the layout (k = 0 for
   the standard Gaussian); they are appended as the layout's ``extra`` block.
3. ``describe() -> dict`` (JSON provenance) and ``key`` (hashable identity).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import jax
import numpy as np


class InputDistribution(abc.ABC):
    @abc.abstractmethod
    def sample(self, key, n: int, d: int, dtype):
        """(n, d) inputs."""

    def directions(self, d: int) -> np.ndarray:
        return np.zeros((0, d))

    @abc.abstractmethod
    def describe(self) -> dict:
        """JSON provenance."""

    @property
    def key(self) -> tuple:
        return (type(self).__name__, tuple(sorted(self.describe().items())))


@dataclass(frozen=True)
class StandardGaussian(InputDistribution):
    """x ~ N(0, I_d): the distribution of every expectation backend."""

    def sample(self, key, n: int, d: int, dtype):
        return jax.random.normal(key, (n, d), dtype)

    def describe(self) -> dict:
        return {"name": "standard-gaussian", "law": "x ~ N(0, I_d)"}


__all__ = ["InputDistribution", "StandardGaussian"]
