"""Opening input files safely: every loader reads regular files only (symlinks
to them are followed) and reads a bounded amount.

A FIFO, a character or block device, a socket or a folder is refused with one
sentence naming the file, decided by ``os.stat`` before the file is opened
(opening a FIFO blocks until a writer appears; reading ``/dev/zero`` never
ends). The file is then opened without blocking and checked again with
``fstat``, so one swapped in between is refused too.
"""
from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import BinaryIO, Iterator

__all__ = ["GZIP_MAX_RATIO", "file_kind", "open_regular", "read_at_most", "regular_stat"]

#: Deflate inflates at most 1032:1; a gzip stream of n bytes holds fewer than this many times n.
GZIP_MAX_RATIO = 1100

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words ("a FIFO", "a folder", ...)."""
    for test, words in _KINDS:
        if test(mode):
            return words
    return "not a file of any known kind"


def _refuse(name: str, mode: int, end: str) -> ValueError:
    return ValueError(f"{name} is {file_kind(mode)}, not a regular file{end}")


def regular_stat(path: str | os.PathLike[str], name: str, end: str = ".") -> os.stat_result:
    """``os.stat(path)`` (following symlinks) of a regular file; otherwise ValueError
    ``"{name} does not exist"``, ``"{name} is a FIFO, not a regular file"``, ...
    ``name`` is how the caller's messages call the file, ``end`` ends the sentence."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ValueError(f"{name} does not exist{end}") from None
    except OSError as exc:
        raise ValueError(f"cannot read {name}: {exc.strerror or exc}{end}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(name, st.st_mode, end)
    return st


@contextlib.contextmanager
def open_regular(path: str | os.PathLike[str], name: str,
                 end: str = ".") -> Iterator[tuple[BinaryIO, os.stat_result]]:
    """Open a regular file for binary reading: yields ``(file, fstat result)``.

    Refuses what :func:`regular_stat` refuses, before opening; the open itself does
    not block, and the opened file is checked again (it may have been replaced)."""
    before = regular_stat(path, name, end)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(Path(path), flags)
    except FileNotFoundError:
        raise ValueError(f"{name} does not exist{end}") from None
    except OSError as exc:
        raise ValueError(f"cannot read {name}: {exc.strerror or exc}{end}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(name, st.st_mode, end)
        if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            raise ValueError(f"{name} was replaced while it was being opened{end}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fh:
        yield fh, st


def read_at_most(stream: BinaryIO, n: int, chunk: int = 1 << 20) -> bytearray:
    """Up to ``n`` bytes of ``stream`` (fewer at its end), read in chunks so that
    nothing larger than what the stream really holds is ever allocated."""
    out = bytearray()
    while len(out) < n:
        piece = stream.read(min(chunk, n - len(out)))
        if not piece:
            break
        out += piece
    return out
