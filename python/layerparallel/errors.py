"""How an error reaches the user: one line and an exit status.

A user's mistake (a bad value, a file that cannot be read or written, a run
that does not fit in memory) is one line naming the input and exit status 2,
whatever its Python type; anything else is a bug of ours, one line asking for
a report and exit status 1. ``--debug`` (or ``LAYERPARALLEL_DEBUG=1``) adds the
traceback. Under MPI, :class:`Reported` marks an error that every process
already knows about and that one process already printed.
"""
from __future__ import annotations

import os
import sys
import traceback

__all__ = ["USER_ERRORS", "Reported", "describe", "report", "debug_enabled"]

#: Exception types that mean the input, the files or the machine's resources are at fault.
USER_ERRORS = (ValueError, OSError, MemoryError)


class Reported(Exception):
    """An error already printed (once, by the process where it happened) that every
    process of the job raises together, so the job ends without an abort."""

    def __init__(self, code: int):
        super().__init__(f"exit status {code}")
        self.code = code


def debug_enabled() -> bool:
    return os.environ.get("LAYERPARALLEL_DEBUG", "") not in ("", "0")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def describe(exc: BaseException) -> tuple[str, int]:
    """The one-line message and exit status for ``exc``."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", 130
    if isinstance(exc, MemoryError):
        detail = _one_line(str(exc))
        if detail in ("", "std::bad_alloc"):
            detail = "an allocation failed"
        return (f"out of memory: {detail}; reduce model.layers, model.width or the batch size, "
                "or use more processes"), 2
    if isinstance(exc, OSError):
        names = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        what = exc.strerror or _one_line(str(exc)) or type(exc).__name__
        return (f"{what}: {names}" if names else what), 2
    if isinstance(exc, ValueError):
        return _one_line(str(exc)) or type(exc).__name__, 2
    return (f"internal error ({type(exc).__name__}: {_one_line(str(exc))}); "
            "rerun with --debug for the traceback and please report it"), 1


def report(exc: BaseException, rank: int | None = None, debug: bool = False) -> int:
    """Print ``exc`` as one line on stderr (after its traceback when debugging); returns
    the exit status."""
    line, code = describe(exc)
    if debug or debug_enabled():
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    where = f"rank {rank}: " if rank is not None else ""
    print(f"layerparallel: {where}error: {line}" if code != 130 else f"layerparallel: {where}{line}",
          file=sys.stderr, flush=True)
    return code
