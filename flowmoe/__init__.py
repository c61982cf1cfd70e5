"""flowmoe: exact gradient-flow dynamics of soft-routed mixture-of-experts models.

float64 is switched on at import, before any JAX constant is built (a JAX constant built earlier would be float32).
"""

import jax as _jax

_jax.config.update("jax_enable_x64", True)

from .api import flow_from_gram, gradient_flow, population_grad, population_loss  # noqa: E402
from .errors import SolveError, SpecError  # noqa: E402
from .simulate import simulate  # noqa: E402
from .layout import Layout  # noqa: E402
from .provenance import Provenance  # noqa: E402
from .spec import MoESpec, RunSpec, SolverSpec, load_config, load_preset  # noqa: E402
from .trajectory import Trajectory  # noqa: E402

__version__ = "0.1.0"

__all__ = ["population_loss", "population_grad", "gradient_flow", "flow_from_gram", "simulate", "Trajectory",
           "SolverSpec", "Layout", "Provenance",
           "MoESpec", "RunSpec", "load_preset", "load_config", "SpecError", "SolveError", "__version__"]
