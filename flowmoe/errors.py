"""Errors that name the offending input.

Every check on user input raises :class:`SpecError` (a ``ValueError``) whose message starts with
the dotted name of the field, states the value that was given and the values that are allowed.
"""

from __future__ import annotations


class SpecError(ValueError):
    """Bad input: ``field`` names the offending input, the message says what is allowed."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


class SolveError(RuntimeError):
    """A solve or simulation that stopped early; ``partial`` holds what was computed.

    ``reason``: ``"budget"`` (step budget reached or step size collapsed), ``"nonfinite"`` (the
    state became NaN/inf) or ``""`` (other)."""

    def __init__(self, message: str, partial=None, reason: str = ""):
        self.partial = partial
        self.reason = reason
        super().__init__(message)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a computation; ``partial`` holds what was computed (or None)."""

    def __init__(self, message: str = "interrupted", partial=None):
        self.partial = partial
        super().__init__(message)
