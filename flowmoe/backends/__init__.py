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

from ..errors import SpecError
from ..gates import get_expert, get_gate
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
    return backend


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

__all__ = ["ExpectationBackend", "make_backend", "register_backend", "backend_names", "check_backend_name"]
