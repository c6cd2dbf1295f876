"""Atomic file output: nothing is ever left half-written.

Every writer goes through :func:`atomic_path`, which hands out a temporary file
in the destination folder and renames it over the destination only when the
writer finished without an exception. A whole run folder is written the same
way by :func:`staged_folder`: into a fresh hidden folder beside it that replaces
the destination in one rename, so a reader never sees the files of two runs
side by side. Temporary names carry the host and process id
(``.NAME.HOST-PID.XXXX.tmp``), so :func:`remove_stale_temporaries` can remove
those a killed process left behind without touching a live one's. Files and
folders get the modes the umask gives (not the 0600 of ``mkstemp``).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

__all__ = ["atomic_path", "staged_folder", "remove_stale_temporaries", "folder_entries", "write_text", "write_json",
           "finite_json", "dumps_strict"]


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but brief)
    os.umask(mask)
    return mask


def _tag() -> str:
    host = "".join(c if c.isalnum() or c == "-" else "_" for c in socket.gethostname()) or "host"
    return f"{host}-{os.getpid()}"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.{_tag()}.", suffix=suffix + ".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def folder_entries(folder: Path) -> list[str]:
    """The names in ``folder`` other than temporaries (sorted; empty when it does not exist)."""
    if not folder.is_dir():
        return []
    return sorted(e.name for e in os.scandir(folder) if not (e.name.startswith(".") and e.name.endswith(".tmp")))


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files and folders in ``folder`` that a process of this host
    left behind when it was killed (its id no longer runs); returns what was removed.
    Temporaries of live processes, and of other hosts sharing the file system, stay."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    host = _tag().rsplit("-", 1)[0]
    removed = []
    for entry in os.scandir(folder):
        name = entry.name
        if not (name.startswith(".") and name.endswith(".tmp")):
            continue
        parts = name[1:-4].split(".")
        owner = next((p for p in reversed(parts) if p.startswith(host + "-")), None)
        pid = owner[len(host) + 1:] if owner else ""
        if not pid.isdigit() or _alive(int(pid)):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 with RENAME_EXCHANGE); False
    where the system or file system cannot."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


@contextlib.contextmanager
def staged_folder(dest: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh hidden folder beside ``dest`` to write a whole run into. On success
    it takes ``dest``'s place in one step: renamed onto a missing or empty ``dest``, or,
    with ``overwrite``, exchanged with the old folder, which is then removed. On an
    exception (an interrupt included) it is removed and ``dest`` is left as it was."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{_tag()}.", suffix=".tmp", dir=dest.parent))
    try:
        yield stage
        os.chmod(stage, 0o777 & ~_umask())
        if dest.is_dir() and folder_entries(dest) and not overwrite:
            raise ValueError(f"{dest} already holds files ({', '.join(folder_entries(dest)[:4])}); "
                             "refusing to mix two runs")
        if dest.is_dir() and any(os.scandir(dest)):
            if not _exchange(stage, dest):
                old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{_tag()}.old.", suffix=".tmp", dir=dest.parent))
                os.replace(dest, old / dest.name)
                os.replace(stage, dest)
                stage = old
            shutil.rmtree(stage, ignore_errors=True)
        else:
            os.replace(stage, dest)  # onto a missing or empty folder
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
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
