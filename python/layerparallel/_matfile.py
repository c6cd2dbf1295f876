"""MATLAB files read safely: the structure of a v5 file is walked and checked before
scipy sees it (scipy's reader is not hardened against damaged files and can crash on
one flipped bit), and a variable's declared size is bounded before it is read."""
from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import numpy as np

from ._files import GZIP_MAX_RATIO, open_regular, read_at_most

__all__ = ["MAX_MAT_VALUES", "load_mat_variable"]

#: MAT variables declaring more values than this (2 GiB as float64) are refused.
MAX_MAT_VALUES = 1 << 28


# MAT v5 data element types whose data scipy reads through its table of dtypes (miINT8 ..
# miUINT32, miDOUBLE, miINT64, miUINT64, miUTF8 .. miUTF32); miMATRIX and miCOMPRESSED hold variables.
_MI_DATA = frozenset({1, 2, 3, 4, 5, 6, 7, 9, 12, 13, 16, 17, 18})
_MI_INT8, _MI_INT32, _MI_UINT32, _MI_MATRIX, _MI_COMPRESSED, _MI_UTF8 = 1, 5, 6, 14, 15, 16
# array classes: cell, struct and object hold variables; function handles and opaque objects
# are not read here; the rest (char, sparse, numeric) hold data elements only.
_MX_CONTAINERS = frozenset({1, 2, 3})
_MX_DATA = frozenset({4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
_MAT_MAX_DEPTH = 32


def _mat_elements(buf: memoryview, order: str, name: str) -> Iterator[tuple[int, memoryview]]:
    """The data elements (type, payload) one after another in ``buf``, in the full or the
    small (4-byte) form of the MAT v5 format."""
    pos = 0
    while pos < len(buf):
        if len(buf) - pos < 8:
            raise ValueError(f"{name} is damaged: a data element is cut short.")
        first, count = struct.unpack_from(order + "II", buf, pos)
        if first >> 16:   # small data element: the count is in the upper half of the type
            mdtype, count = first & 0xFFFF, first >> 16
            if count > 4:
                raise ValueError(f"{name} is damaged: a small data element claims {count} bytes.")
            yield mdtype, buf[pos + 4:pos + 4 + count]
            pos += 8
            continue
        if count > len(buf) - pos - 8:
            raise ValueError(f"{name} is damaged: a data element claims {count} bytes where "
                             f"{len(buf) - pos - 8} are left.")
        yield first, buf[pos + 8:pos + 8 + count]
        pos += 8 + count + (-count % 8)


def _check_mat_matrix(payload: memoryview, order: str, name: str, depth: int = 0) -> None:
    """Check a miMATRIX element's payload, and the variables it holds, before scipy reads it:
    scipy's reader looks data types up in a table without checking them, and crashes on a
    damaged file (a type it has no entry for)."""
    if depth > _MAT_MAX_DEPTH:
        raise ValueError(f"{name} nests variables more than {_MAT_MAX_DEPTH} deep.")
    if not len(payload):
        return   # an empty matrix
    elements = list(_mat_elements(payload, order, name))
    if len(elements) < 2 or elements[0][0] != _MI_UINT32 or len(elements[0][1]) != 8:
        raise ValueError(f"{name} is damaged: a variable does not start with its array flags.")
    mclass = struct.unpack_from(order + "I", elements[0][1])[0] & 0xFF
    if mclass not in _MX_CONTAINERS and mclass not in _MX_DATA:
        raise ValueError(f"{name} holds a variable of MATLAB class {mclass}, not a numeric array.")
    if elements[1][0] not in (_MI_INT32, _MI_UINT32) or len(elements) < 3 \
            or elements[2][0] not in (_MI_INT8, _MI_UTF8):
        raise ValueError(f"{name} is damaged: a variable lacks its dimensions or its name.")
    for mdtype, data in elements[3:]:
        if mdtype == _MI_MATRIX and mclass in _MX_CONTAINERS:
            _check_mat_matrix(data, order, name, depth + 1)
        elif mdtype not in _MI_DATA:
            raise ValueError(f"{name} is damaged: it has a data element of unknown type {mdtype}.")


def _check_mat(fh: BinaryIO, name: str) -> None:
    """Walk a MAT v5 file's variables (decompressing them, at most to the size
    :data:`MAX_MAT_VALUES` allows) and check their structure; v4 and v7.3 files are
    left to scipy (its v4 reader is numpy code; v7.3 files it refuses)."""
    head = fh.read(128)
    if not head:
        raise ValueError(f"{name} is empty.")
    # scipy's own tests: any 0 in the first 4 bytes is v4; the major version byte is
    # before or after the minor one as the endian mark says; anything but "IM" is big-endian
    if 0 in head[:4]:
        return
    if len(head) < 128:
        raise ValueError(f"{name} is truncated: {len(head)} bytes, shorter than the 128-byte "
                         f"header of a MAT file.")
    if head[124 + (head[126] == ord("I"))] != 1:
        return
    order = "<" if head[126:128] == b"IM" else ">"
    bound = 8 * MAX_MAT_VALUES + (1 << 20)
    while True:
        tag = fh.read(8)
        if not tag:
            return
        if len(tag) < 8:
            raise ValueError(f"{name} is damaged: it ends inside a variable's tag.")
        mdtype, count = struct.unpack(order + "II", tag)
        if mdtype not in (_MI_MATRIX, _MI_COMPRESSED):
            raise ValueError(f"{name} is damaged: it has a top-level element of type {mdtype}, "
                             f"not a variable.")
        payload = read_at_most(fh, count)
        if len(payload) < count:
            raise ValueError(f"{name} is truncated: a variable claims {count} bytes where "
                             f"{len(payload)} are left.")
        if mdtype == _MI_COMPRESSED:
            inflate = zlib.decompressobj()
            try:
                payload = bytearray(inflate.decompress(payload, bound + 1))
            except zlib.error as exc:
                raise ValueError(f"cannot read {name} (a compressed variable is damaged: {exc}).") from None
            if len(payload) > bound:
                raise ValueError(f"{name} has a compressed variable of more than {bound} bytes.")
            inner = list(_mat_elements(memoryview(payload), order, name))
            if len(inner) != 1 or inner[0][0] != _MI_MATRIX:
                raise ValueError(f"{name} is damaged: a compressed element does not hold one variable.")
            _check_mat_matrix(inner[0][1], order, name)
        else:
            _check_mat_matrix(memoryview(payload), order, name)


def _scipy_read(name: str, read: Callable[[], Any]) -> Any:
    """``read()`` (a scipy.io call) with its errors as one ValueError naming the file."""
    try:
        return read()
    except NotImplementedError:
        raise ValueError(f"{name} is a MATLAB v7.3 (HDF5) file, which scipy cannot "
                         f"read; save it with -v7 instead.") from None
    except Exception as exc:  # scipy raises several types on malformed files
        raise ValueError(f"cannot read {name} ({exc or type(exc).__name__}).") from None


def load_mat_variable(path: Path, key: str) -> np.ndarray:
    """The variable ``key`` of a MAT file, its declared size checked before it is read."""
    try:
        from scipy.io import loadmat, whosmat
    except ImportError:
        raise ValueError("the Indian Pines data set needs scipy: pip install scipy.") from None
    name = f"MAT file '{path}'"
    with open_regular(path, name) as (fh, st):
        _check_mat(fh, name)
        fh.seek(0)
        found = {v[0]: v[1] for v in _scipy_read(name, lambda: whosmat(fh))}
        if key not in found:
            names = ", ".join(repr(k) for k in found if not k.startswith("__")) or "none"
            raise ValueError(f"{name} has no variable '{key}' (found: {names}).")
        shape = tuple(int(d) for d in found[key])
        count = math.prod(shape)
        declares = f"{name} variable '{key}' declares {' x '.join(map(str, shape))} = {count} values"
        # a MAT file stores at least one byte per value, and compresses at most 1032:1
        if count > GZIP_MAX_RATIO * st.st_size:
            raise ValueError(f"{declares}, more than a file of {st.st_size} bytes can hold.")
        if count > MAX_MAT_VALUES:
            raise ValueError(f"{declares}, more than the {MAX_MAT_VALUES} a MAT variable may have.")
        fh.seek(0)
        mat = _scipy_read(name, lambda: loadmat(fh, variable_names=[key]))
    if key not in mat:
        raise ValueError(f"cannot read {name}: scipy returned no variable '{key}'.")
    return np.asarray(mat[key])
