"""flowmoe: exact gradient-flow dynamics of soft-routed mixture-of-experts models.

float64: JAX builds float32 constants unless 64-bit mode is on when they are built. Importing
flowmoe switches it on before anything of flowmoe imports JAX: through the environment variable
``JAX_ENABLE_X64`` that JAX reads when it is first imported, or, if JAX was imported already,
through ``jax.config``. The public names below are imported on first use, so that the command
line (``flowmoe --help``, ``flowmoe presets``) starts without loading JAX, sympy or matplotlib.
"""

import os as _os
import sys as _sys
import types as _types

if "jax" in _sys.modules:
    _sys.modules["jax"].config.update("jax_enable_x64", True)
else:
    _os.environ["JAX_ENABLE_X64"] = "1"

__version__ = "0.1.0"

# public name -> submodule that defines it (imported on first access)
_EXPORTS = {
    "population_loss": "api", "population_grad": "api", "gradient_flow": "api", "flow_from_gram": "api",
    "simulate": "simulate", "Trajectory": "trajectory", "SolverSpec": "spec", "Layout": "layout",
    "Provenance": "provenance", "MoESpec": "spec", "RunSpec": "spec", "load_preset": "spec",
    "load_config": "spec", "SpecError": "errors", "SolveError": "errors",
}

__all__ = list(_EXPORTS) + ["__version__"]


def __getattr__(name):
    """A public name (imported from its submodule on first use), or a submodule: ``flowmoe.init``
    works after ``import flowmoe`` alone, as it did when the package imported its API eagerly."""
    import importlib
    import importlib.util

    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    if not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'flowmoe' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(_types.ModuleType):
    """``flowmoe.simulate`` is the function, as before the lazy imports: importing the submodule of
    the same name (which binds it on the package) does not replace the function."""

    def __setattr__(self, name, value):
        if name == "simulate" and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
