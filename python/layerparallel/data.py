"""Data sets for layerparallel: the Peaks generator, the reference text-file
reader, input validation for the model and :func:`load_dataset` (the ``[data]``
section; the named data sets are in :mod:`layerparallel.datasets`, the
container in :mod:`layerparallel.dataset`).

Peaks
-----
Two features ``(x, y)`` on the regular 256 x 256 grid over ``[-3, 3]^2``
(spacing 6/255). The class of a point is the band of MATLAB's ``peaks``
surface it falls into: the range ``[min z, max z]`` over that grid is cut into
five bands of equal width (edges near -6.55, -3.62, -0.69, 2.24, 5.17, 8.11),
class 0 is the lowest band and class 4 the highest. A value exactly on an
interior edge belongs to the upper band. These labels reproduce the reference
files of the paper's code (``shared/data/peaks``) exactly.

Reference text format
---------------------
One example per line, whitespace-separated floats, no header. Blank lines are
ignored. Label files hold one-hot rows (at least two columns); the class is the
position of the 1. Only regular files (or symlinks to them) are read, of at most
``MAX_TEXT_BYTES`` (1 GiB) with lines of at most ``MAX_LINE_BYTES`` (4 MiB); a
FIFO, a device, a socket or a folder is refused before it is opened.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from array import array
from pathlib import Path
from typing import Iterator

import numpy as np

from ._files import open_regular
from .dataset import Dataset, section_value

__all__ = [
    "PEAKS_GRID_SIZE",
    "PEAKS_N_CLASSES",
    "Dataset",
    "check_inputs",
    "generate_peaks",
    "load_dataset",
    "load_files",
    "peaks",
    "peaks_band_edges",
    "peaks_classes",
    "peaks_grid",
    "read_features",
    "read_labels",
    "shuffle",
]

#: Text tables (features and labels files) larger than this are refused: their
#: values take up to four times as much memory as their text.
MAX_TEXT_BYTES = 1 << 30
#: Lines longer than this are refused (no data set here has rows of a million values).
MAX_LINE_BYTES = 4 << 20

PEAKS_GRID_SIZE = 256
PEAKS_N_CLASSES = 5
PEAKS_LOW = -3.0
PEAKS_HIGH = 3.0


# ---------------------------------------------------------------------------
# Peaks
# ---------------------------------------------------------------------------

def peaks(x, y):
    """MATLAB's ``peaks`` surface, vectorised over numpy arrays.

    z = 3 (1-x)^2 exp(-x^2 - (y+1)^2) - 10 (x/5 - x^3 - y^5) exp(-x^2 - y^2)
        - 1/3 exp(-(x+1)^2 - y^2)
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return (3.0 * (1.0 - x) ** 2 * np.exp(-x ** 2 - (y + 1.0) ** 2)
            - 10.0 * (x / 5.0 - x ** 3 - y ** 5) * np.exp(-x ** 2 - y ** 2)
            - np.exp(-(x + 1.0) ** 2 - y ** 2) / 3.0)


@functools.lru_cache(maxsize=1)
def _grid_cached() -> np.ndarray:
    g = np.linspace(PEAKS_LOW, PEAKS_HIGH, PEAKS_GRID_SIZE)
    gx, gy = np.meshgrid(g, g, indexing="ij")
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
    pts.setflags(write=False)
    return pts


def peaks_grid() -> np.ndarray:
    """All 256*256 grid points of ``[-3, 3]^2`` as a (65536, 2) float64 array
    (row ``i*256 + j`` is ``(g_i, g_j)`` with ``g = linspace(-3, 3, 256)``)."""
    return _grid_cached().copy()


@functools.lru_cache(maxsize=1)
def _edges_cached() -> np.ndarray:
    pts = _grid_cached()
    z = peaks(pts[:, 0], pts[:, 1])
    lo, hi = float(z.min()), float(z.max())
    edges = lo + (hi - lo) * np.arange(PEAKS_N_CLASSES + 1) / PEAKS_N_CLASSES
    edges[0], edges[-1] = lo, hi
    edges.setflags(write=False)
    return edges


def peaks_band_edges() -> np.ndarray:
    """The six band edges ``min z, ..., max z`` (five equal-width bands) of the
    peaks surface over the 256 x 256 grid."""
    return _edges_cached().copy()


def peaks_classes(points) -> np.ndarray:
    """Class labels 0..4 (int64) of points ``(n, 2)`` by the band of ``peaks``.

    Points whose surface value lies outside the grid's range are put into the
    lowest / highest class.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(
            f"peaks_classes expects points of shape (n, 2), got shape {pts.shape}.")
    z = peaks(pts[:, 0], pts[:, 1])
    interior = _edges_cached()[1:-1]
    return np.searchsorted(interior, z, side="right").astype(np.int64)


def generate_peaks(n_train: int = 5000, n_val: int = 200, seed: int = 0) -> "Dataset":
    """Balanced Peaks data drawn from the 256 x 256 grid.

    Each class gets ``n_train/5`` training and ``n_val/5`` validation points,
    all distinct grid points (so training and validation are disjoint). Both
    splits are shuffled. Everything is drawn from ``np.random.default_rng(seed)``.
    """
    for arg, val in (("n_train", n_train), ("n_val", n_val)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)):
            raise ValueError(f"{arg} must be an integer, got {type(val).__name__} {val!r}.")
        if val < PEAKS_N_CLASSES or val % PEAKS_N_CLASSES != 0:
            raise ValueError(
                f"{arg} must be a positive multiple of {PEAKS_N_CLASSES} so that the "
                f"classes are balanced, got {val}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    n_train, n_val = int(n_train), int(n_val)
    per_train = n_train // PEAKS_N_CLASSES
    per_val = n_val // PEAKS_N_CLASSES

    pts = _grid_cached()
    labels = peaks_classes(pts)
    counts = np.bincount(labels, minlength=PEAKS_N_CLASSES)
    need = per_train + per_val
    if need > counts.min():
        smallest = int(counts.argmin())
        raise ValueError(
            f"n_train={n_train} and n_val={n_val} need {need} distinct grid points "
            f"per class but class {smallest} has only {int(counts.min())} on the "
            f"{PEAKS_GRID_SIZE}x{PEAKS_GRID_SIZE} grid.")

    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    for c in range(PEAKS_N_CLASSES):
        members = np.flatnonzero(labels == c)
        chosen = rng.choice(members, size=need, replace=False)
        train_idx.append(chosen[:per_train])
        val_idx.append(chosen[per_train:])
    train_idx = np.concatenate(train_idx)
    val_idx = np.concatenate(val_idx)
    train_idx = train_idx[rng.permutation(train_idx.size)]
    val_idx = val_idx[rng.permutation(val_idx.size)]
    return Dataset(
        train_x=np.ascontiguousarray(pts[train_idx], dtype=np.float64),
        train_y=np.ascontiguousarray(labels[train_idx], dtype=np.int64),
        val_x=np.ascontiguousarray(pts[val_idx], dtype=np.float64),
        val_y=np.ascontiguousarray(labels[val_idx], dtype=np.int64),
        n_features=2,
        n_classes=PEAKS_N_CLASSES,
    )


# ---------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------

def shuffle(x, y, seed: int):
    """Return ``(x[p], y[p])`` for a permutation ``p`` drawn from
    ``np.random.default_rng(seed)``. The inputs are not modified."""
    x = np.asarray(x)
    y = np.asarray(y)
    if len(x) != len(y):
        raise ValueError(
            f"shuffle needs as many labels as examples, got {len(x)} examples and {len(y)} labels.")
    perm = np.random.default_rng(seed).permutation(len(x))
    return np.ascontiguousarray(x[perm]), np.ascontiguousarray(y[perm])


# ---------------------------------------------------------------------------
# Reference text files
# ---------------------------------------------------------------------------

def _short(token: str, limit: int = 40) -> str:
    """A token as messages show it: at most ``limit`` characters, unprintable ones escaped."""
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in token[:limit])
    return shown if len(token) <= limit else shown + "..."


def _rows(path, kind: str) -> Iterator[tuple[int, list[float]]]:
    """The non-blank rows of a whitespace-separated table of finite floats, each
    with its (1-based) line number; every row has as many values as the first.

    Only a regular file of at most :data:`MAX_TEXT_BYTES` bytes with lines of at
    most :data:`MAX_LINE_BYTES` bytes is read; errors name the file and the line."""
    p = Path(path)
    name = f"{kind} file '{p}'"
    with open_regular(p, name) as (fh, st):
        if st.st_size > MAX_TEXT_BYTES:
            raise ValueError(f"{name} is {st.st_size} bytes, more than the {MAX_TEXT_BYTES} bytes "
                             f"a text table may have.")
        width, width_line, lineno = None, 0, 0
        while True:
            raw = fh.readline(MAX_LINE_BYTES + 1)
            if not raw:
                break
            if len(raw) > MAX_LINE_BYTES:
                raise ValueError(f"{name} line {lineno + 1} is longer than {MAX_LINE_BYTES} bytes.")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"{name} line {lineno + 1} is not UTF-8 text ({exc.reason} at "
                                 f"byte {exc.start + 1} of the line).") from None
            # universal newlines, as text mode reads them: a lone \r ends a line too
            for line in text.replace("\r\n", "\n").split("\r"):
                lineno += 1
                tokens = line.split()
                if not tokens:
                    continue
                values = []
                for tok in tokens:
                    try:
                        v = float(tok)
                    except ValueError:
                        raise ValueError(f"{name} line {lineno}: '{_short(tok)}' is not a number.") from None
                    if not math.isfinite(v):
                        raise ValueError(f"{name} line {lineno}: value '{_short(tok)}' is not finite.")
                    values.append(v)
                if width is None:
                    width, width_line = len(values), lineno
                elif len(values) != width:
                    raise ValueError(f"{name} line {lineno}: expected {width} values as on line "
                                     f"{width_line}, got {len(values)}.")
                yield lineno, values
    if width is None:
        raise ValueError(f"{name} is empty.")


def _read_table(path, kind: str) -> np.ndarray:
    """Read a whitespace-separated table of finite floats (see :func:`_rows`)
    into a float64 array (n, width)."""
    values = array("d")
    width = 0
    for _, row in _rows(path, kind):
        values.extend(row)
        width = len(row)
    return np.frombuffer(values, dtype=np.float64).reshape(-1, width)


def read_features(path) -> np.ndarray:
    """Read a features file: returns a C-contiguous float64 array (n, n_features)."""
    return np.ascontiguousarray(_read_table(path, "features"))


def read_labels(path) -> np.ndarray:
    """Read a one-hot labels file: returns the class indices, int64 (n,).

    Every row must contain exactly one 1 and zeros elsewhere, and there must be
    at least two columns (classes)."""
    return _read_onehot(path)[0]


def _read_onehot(path):
    """Class indices and the width (number of classes) of a one-hot file."""
    classes = array("q")
    width = 0
    with contextlib.closing(_rows(path, "labels")) as rows:
        for lineno, row in rows:
            width = len(row)
            if width == 1:
                raise ValueError(
                    f"labels file '{Path(path)}' has one column, but labels must be one-hot rows "
                    f"with one column per class (at least 2), not class indices.")
            if not (row.count(1.0) == 1 and row.count(0.0) == width - 1):
                text = " ".join(f"{v:g}" for v in row[:20]) + (" ..." if width > 20 else "")
                raise ValueError(
                    f"labels file '{Path(path)}' line {lineno}: row [{text}] is not one-hot "
                    f"(exactly one 1 and zeros elsewhere).")
            classes.append(row.index(1.0))
    return np.frombuffer(classes, dtype=np.int64).copy(), width


def load_files(train_features, train_labels, val_features, val_labels,
               n_classes: int | None = None) -> Dataset:
    """Read the four reference files into a :class:`Dataset` (file order kept;
    shuffle before truncating or mini-batching).

    ``n_classes`` defaults to the width of the one-hot label rows; if given it
    must equal that width."""
    tx = read_features(train_features)
    vx = read_features(val_features)
    ty, t_width = _read_onehot(train_labels)
    vy, v_width = _read_onehot(val_labels)
    for fx, x, fy, y in ((train_features, tx, train_labels, ty),
                         (val_features, vx, val_labels, vy)):
        if x.shape[0] != y.shape[0]:
            raise ValueError(
                f"features file '{Path(fx)}' has {x.shape[0]} examples but labels file "
                f"'{Path(fy)}' has {y.shape[0]}.")
    if tx.shape[1] != vx.shape[1]:
        raise ValueError(
            f"features file '{Path(train_features)}' has {tx.shape[1]} features per example "
            f"but '{Path(val_features)}' has {vx.shape[1]}.")
    if t_width != v_width:
        raise ValueError(
            f"labels file '{Path(train_labels)}' has {t_width} classes per row "
            f"but '{Path(val_labels)}' has {v_width}.")
    if n_classes is not None and int(n_classes) != t_width:
        raise ValueError(
            f"labels files '{Path(train_labels)}' and '{Path(val_labels)}' have {t_width} "
            f"classes per row but n_classes={n_classes} was requested.")
    return Dataset(train_x=tx, train_y=ty, val_x=vx, val_y=vy,
                   n_features=int(tx.shape[1]), n_classes=int(t_width))


# ---------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------

def check_inputs(x, y, n_features: int, n_classes: int, name: str = "features",
                 labels_name: str = "labels"):
    """Validate a batch for the model and return ``(x, y)`` as C-contiguous
    float64 / int64 arrays.

    ``x`` must be a 2-D real array (s, n_features), s >= 1, with finite values;
    ``y`` a 1-D integer array of length s with values in [0, n_classes).
    ``y`` may be None (prediction only); then ``(x, None)`` is returned.
    Errors are ValueError with one sentence naming the input (``name`` for x,
    ``labels_name`` for y)."""
    try:
        xa = np.asarray(x)
    except Exception as exc:  # ragged nested lists and the like
        raise ValueError(f"{name} must be a 2-D real array of shape (s, {n_features}), "
                         f"got an object that is not an array ({exc}).") from None
    if xa.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be a 2-D real array of shape (s, {n_features}), "
                         f"got dtype {xa.dtype}.")
    if xa.ndim != 2 or xa.shape[1] != n_features:
        raise ValueError(f"{name} must be a 2-D array of shape (s, {n_features}), "
                         f"got shape {xa.shape}.")
    if xa.shape[0] == 0:
        raise ValueError(f"{name} must contain at least one example, got shape {xa.shape}.")
    xa = np.ascontiguousarray(xa, dtype=np.float64)
    finite = np.isfinite(xa)
    if not finite.all():
        i, j = np.argwhere(~finite)[0]
        raise ValueError(f"{name} must contain only finite values, got {xa[i, j]} "
                         f"at row {i}, column {j}.")
    if y is None:
        return xa, None

    try:
        ya = np.asarray(y)
    except Exception as exc:
        raise ValueError(f"{labels_name} must be a 1-D integer array of length {xa.shape[0]}, "
                         f"got an object that is not an array ({exc}).") from None
    if ya.dtype.kind not in "iu":
        raise ValueError(f"{labels_name} must be a 1-D integer array of class indices, "
                         f"got dtype {ya.dtype}.")
    if ya.ndim != 1:
        raise ValueError(f"{labels_name} must be a 1-D integer array of length {xa.shape[0]}, "
                         f"got shape {ya.shape}.")
    if ya.shape[0] != xa.shape[0]:
        raise ValueError(f"{labels_name} must have one entry per row of {name} "
                         f"({xa.shape[0]}), got {ya.shape[0]}.")
    bad = np.flatnonzero((ya < 0) | (ya >= n_classes))
    if bad.size:
        k = int(bad[0])
        raise ValueError(f"{labels_name} must lie in [0, {n_classes}), got {int(ya[k])} "
                         f"at position {k}.")
    return xa, np.ascontiguousarray(ya, dtype=np.int64)


# ---------------------------------------------------------------------------
# From the [data] config section
# ---------------------------------------------------------------------------

def load_dataset(data_cfg, base_dir=".") -> Dataset:
    """Build the :class:`Dataset` described by a ``[data]`` config section
    (mapping or attribute object).

    * ``name = "peaks"``: :func:`generate_peaks` with ``train_size``,
      ``val_size`` and ``seed``.
    * ``name = "files"``: read the four files (relative paths are resolved
      against ``base_dir``, the config file's folder), shuffle both splits with
      ``seed`` (the reference files are sorted by class), then keep the first
      ``train_size`` / ``val_size`` examples. Asking for more examples than a
      file holds is an error.
    * ``name = "mnist"``, ``"fashion_mnist"``, ``"digits"``,
      ``"indian_pines"``: :func:`layerparallel.datasets.load_named` (files in
      ``folder``, relative to ``base_dir``; image sets have 4-D ``train_x``).
    """
    name = section_value(data_cfg, "name", "peaks")
    seed = int(section_value(data_cfg, "seed", 0))
    train_size = int(section_value(data_cfg, "train_size", 5000))
    val_size = int(section_value(data_cfg, "val_size", 200))
    if name == "peaks":
        for key, val in (("train_size", train_size), ("val_size", val_size)):
            if val < PEAKS_N_CLASSES or val % PEAKS_N_CLASSES:
                raise ValueError(f"data.{key} must be a positive multiple of "
                                 f"{PEAKS_N_CLASSES} for the peaks data set, got {val}.")
        return generate_peaks(train_size, val_size, seed)
    if name == "files":
        base = Path(base_dir)
        paths = {}
        for key in ("train_features", "train_labels", "val_features", "val_labels"):
            raw = section_value(data_cfg, key, "") or ""
            if not str(raw).strip():
                raise ValueError(f"data.{key} is required when data.name = \"files\".")
            p = Path(os.path.expanduser(str(raw)))
            paths[key] = p if p.is_absolute() else base / p
        ds = load_files(paths["train_features"], paths["train_labels"],
                        paths["val_features"], paths["val_labels"]).shuffled(seed)
        if train_size > ds.n_train:
            raise ValueError(f"data.train_size is {train_size} but training file "
                             f"'{paths['train_features']}' holds only {ds.n_train} examples.")
        if val_size > ds.n_val:
            raise ValueError(f"data.val_size is {val_size} but validation file "
                             f"'{paths['val_features']}' holds only {ds.n_val} examples.")
        return ds.truncated(train_size, val_size)
    if name in ("mnist", "fashion_mnist", "digits", "indian_pines"):
        from .datasets import load_named
        return load_named(data_cfg, base_dir)
    raise ValueError(f"data.name must be one of \"peaks\", \"files\", \"mnist\", "
                     f"\"fashion_mnist\", \"digits\", \"indian_pines\", got {name!r}.")
