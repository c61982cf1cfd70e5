"""TOML presets shipped with the package (``flowmoe run --preset NAME``).

Reading the names and the raw tables needs nothing but the standard library, so that the command
line lists presets without importing the numerical stack; :func:`flowmoe.spec.load_preset` turns
a preset into a checked :class:`~flowmoe.spec.RunSpec`.
"""

from __future__ import annotations

import importlib.resources
import tomllib


def preset_names() -> list[str]:
    files = importlib.resources.files(__name__).iterdir()
    return sorted(p.name[:-5] for p in files if p.name.endswith(".toml"))


def preset_text(name: str) -> str:
    """The TOML text of a shipped preset (``name`` must be one of :func:`preset_names`)."""
    return importlib.resources.files(__name__).joinpath(f"{name}.toml").read_text()


def preset_table(name: str) -> dict:
    """The preset as written in its TOML file (unchecked; fields it leaves out are absent)."""
    return tomllib.loads(preset_text(name))
