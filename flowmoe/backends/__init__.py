"""Expectation backends and their registry.

``make_backend(name, gate, expert, layout, **options)`` returns the (cached) backend of one model
structure. Built in: ``"pair"`` (the exact pair engine) and ``"router"`` (router-space quadrature, for
coupled gates such as softmax). A new backend is registered with
:func:`register_backend` (a factory ``(gate, expert, layout, **options) -> ExpectationBackend``)
or named in a spec by import path, ``model.backend = "package.module:Factory"``; nothing else in
flowmoe changes.
"""

from __future__ import annotations

import functools
import importlib

import numpy as np

from ..errors import SpecError
from ..gates import check_expert_degree, get_expert, get_gate
from ..layout import Layout
from .base import ExpectationBackend

_FACTORIES: dict = {}


def register_backend(name: str, factory) -> None:
    """Make ``model.backend = name`` build ``factory(gate, expert, layout, **options)``."""
    _FACTORIES[name] = factory
    _cached.cache_clear()


def backend_names() -> list[str]:
    return sorted(_FACTORIES)


def _factory(name: str, field: str = "model.backend"):
    if name in _FACTORIES:
        return _FACTORIES[name]
    if isinstance(name, str) and ":" in name:
        module, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise SpecError(field, f"cannot import backend {name!r}: {err}") from None
    raise SpecError(field, f"unknown backend {name!r}; allowed: {backend_names()} or 'package.module:Factory'")


def check_backend_name(name, field: str = "model.backend") -> str:
    if not isinstance(name, str):
        raise SpecError(field, f"must be a backend name, got {name!r}; allowed: {backend_names()}")
    _factory(name, field)
    return name


def make_backend(name: str, gate, expert, layout, **options) -> ExpectationBackend:
    """The backend ``name`` for (gate, expert, layout), cached on canonical names."""
    gate, expert = get_gate(gate), get_expert(expert)
    return _cached(name, gate.name, expert.name, layout, tuple(sorted(options.items())))


@functools.lru_cache(maxsize=None)
def _cached(name, gate_name, expert_name, layout, options):
    backend = _factory(name)(get_gate(gate_name), get_expert(expert_name), layout, **dict(options))
    if not isinstance(backend, ExpectationBackend):
        raise SpecError("model.backend", f"{name!r} did not build an ExpectationBackend (got {type(backend).__name__})")
    backend.build = {"name": name, "options": dict(options)}  # what rebuilds it (see flowmoe.api.vector_field_of)
    return backend


def model_backend(name, gate, expert, m: int, m_star: int, options: dict | None = None) -> ExpectationBackend:
    """The expectation backend ``name`` (``"pair"``, a registered name, or ``"module:Factory"``) of a
    structure; gate and expert by name or object, options as in the spec's ``[backend]`` table."""
    if isinstance(name, ExpectationBackend):
        return name
    gate, expert = get_gate(gate, "gate"), get_expert(expert, "expert")
    check_expert_degree(gate, expert, "expert")
    options = {} if options is None else options
    if not isinstance(options, dict):
        raise SpecError("backend", f"must be a table of options, got {options!r}")
    for key, value in options.items():
        if not isinstance(key, str):
            raise SpecError("backend", f"option names must be strings, got {key!r}")
        if not isinstance(value, (str, int, float, bool, type(None))):
            raise SpecError(f"backend.{key}", f"must be a number, a string or a boolean, got {value!r}")
    return make_backend(name, gate, expert, Layout(_count(m, "m"), _count(m_star, "m_star")), **options)


def _count(value, field: str) -> int:
    """A positive integer (numpy integers and integral floats accepted), else a SpecError."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise SpecError(field, f"must be a positive integer, got {value!r}")
    if not float(value).is_integer() or value < 1:
        raise SpecError(field, f"must be a positive integer, got {value!r}")
    return int(value)



def _pair(gate, expert, layout, **options):
    from .pair import PairBackend

    if options:
        raise SpecError("backend", f"the pair backend takes no options, got {sorted(options)}")
    if getattr(gate, "coupled", False):
        raise SpecError("model.gate", f"{gate.name!r} couples the experts through a normalisation; the exact pair "
                                      "engine handles independent per-expert gates only: use model.backend = 'router'")
    return PairBackend(gate, expert, layout)


def _router(gate, expert, layout, **options):
    from .router import RouterBackend

    allowed = {"points", "scrambles", "seed", "teacher_gate", "jitter"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise SpecError(f"backend.{unknown[0]}", f"unknown option of the router backend; allowed: {sorted(allowed)}")
    return RouterBackend(gate, expert, layout, **options)


register_backend("pair", _pair)
register_backend("router", _router)

__all__ = ["ExpectationBackend", "make_backend", "register_backend", "backend_names", "check_backend_name",
           "model_backend"]
