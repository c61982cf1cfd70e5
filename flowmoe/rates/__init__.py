"""Statistical rates of maximum-likelihood estimation in Gaussian mixture-of-experts models.

A separate pipeline from the gradient-flow code: data (:mod:`models`) → MLE fits (:mod:`fit`) →
Voronoi losses (:mod:`voronoi`) → rate exponents (:mod:`experiment`); identifiability checks in
:mod:`identifiability`. See docs/rates.md.
"""

import jax as _jax

_jax.config.update("jax_enable_x64", True)

from .models import GaussianMoE, sample_x  # noqa: E402

__all__ = ["GaussianMoE", "sample_x"]
