"""Atomic file output: nothing is ever left half-written.

Every writer goes through :func:`atomic_path`, which hands out a temporary file
in the destination folder and renames it over the destination only when the
writer finished without an exception.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

__all__ = ["atomic_path", "write_text", "write_json", "finite_json", "dumps_strict"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix + ".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def finite_json(obj: Any, where: str = "") -> tuple[Any, list[str]]:
    """``obj`` with every NaN or infinite float (Python or NumPy) replaced by None, and
    the paths of the replaced values ("val_loss", "history[3].loss"): strict JSON has
    no NaN or Infinity, and a reader that follows the standard refuses them."""
    if isinstance(obj, (float, np.floating)):
        return (float(obj), []) if math.isfinite(obj) else (None, [where or "value"])
    if isinstance(obj, np.integer):
        return int(obj), []
    if isinstance(obj, np.ndarray):
        return finite_json(obj.tolist(), where)
    if isinstance(obj, dict):
        out, bad = {}, []
        for k, v in obj.items():
            out[k], b = finite_json(v, f"{where}.{k}" if where else str(k))
            bad += b
        return out, bad
    if isinstance(obj, (list, tuple)):
        items = [finite_json(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return [v for v, _ in items], [p for _, b in items for p in b]
    return obj, []


def dumps_strict(obj: Any, **kwargs: Any) -> str:
    """json.dumps with non-finite numbers as null (finite_json), never bare NaN."""
    return json.dumps(finite_json(obj)[0], allow_nan=False, **kwargs)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, dumps_strict(obj, indent=2, sort_keys=True) + "\n")
