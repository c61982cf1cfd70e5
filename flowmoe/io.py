"""Files: the one place where flowmoe writes JSON and checks output folders.

- :func:`jsonable` turns numpy scalars/arrays into Python values and NaN/±inf into ``null``
  (JSON has no NaN; a reader must never meet a bare ``NaN`` token), recursively; other objects
  (paths, dataclasses) by ``str`` or ``dataclasses.asdict``.
- :func:`json_text` / :func:`write_json`: the NaN-safe serialisation; ``write_json`` writes to a
  temporary name and renames, so an interrupted write never leaves a truncated file.
- :func:`check_out_dir`: the output folder is usable (not a file, not under a file, writable),
  checked *before* any computation starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import SpecError


def jsonable(x):
    """A JSON-ready copy of ``x``: NaN/inf → None, numpy → Python, tuples → lists."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    if x is None or isinstance(x, str):
        return x
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return jsonable(dataclasses.asdict(x))
    if hasattr(x, "to_dict"):
        return jsonable(x.to_dict())
    return str(x)


def json_text(obj, indent: int | None = None) -> str:
    return json.dumps(jsonable(obj), indent=indent, allow_nan=False)


def write_text(path, text: str) -> Path:
    """Write ``text`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path, obj, indent: int = 2) -> Path:
    return write_text(path, json_text(obj, indent=indent) + "\n")


def read_json(path, field: str = "file") -> dict:
    """JSON from ``path``; a missing, unreadable or malformed file is a SpecError naming ``field``."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(field, f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SpecError(field, f"{path} is not a readable JSON file: {err}") from None


def check_out_dir(path, field: str = "--out") -> Path:
    """Create (if needed) and return the output folder; refuse a file, a path under a file, or a
    folder that cannot be written — before any computation is spent."""
    path = Path(path)
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir():
            where = "is a file" if parent == path else f"is under a file ({parent})"
            raise SpecError(field, f"{path} {where}; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".flowmoe-write-test-", delete=True)
        probe.close()
    except OSError as err:
        raise SpecError(field, f"{path} is not a writable folder: {err.strerror or err}") from None
    return path


__all__ = ["jsonable", "json_text", "write_json", "write_text", "read_json", "check_out_dir"]
