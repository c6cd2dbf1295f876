"""Real data sets: MNIST, Fashion-MNIST, scikit-learn's 8x8 digits and Indian
Pines. Every loader validates what it reads and raises ``ValueError`` with one
sentence naming the offending file; nothing is ever downloaded.

All loaders return the :class:`~layerparallel.data.Dataset` of
:mod:`layerparallel.data`. For the **image** sets ``train_x`` / ``val_x`` are
4-D float64 arrays ``(n, channels, height, width)`` of raw pixel values in
``[0, 255]`` (the network's ``replicate`` opening applies
``tanh(6 p/255 - 3) + 1`` itself) and ``n_features`` is ``C*H*W`` (use
:func:`image_shape` for ``(C, H, W)``; ``x.reshape(n, -1)`` gives the flat
view). Indian Pines is 2-D ``(n, bands)``. Labels are int64 ``(n,)``.

Files
-----
Only regular files (or symlinks to them) are read; a FIFO, a device, a socket
or a folder is refused before it is opened. An IDX header is checked against
the file's size before any data is read (a ``.gz`` file is decompressed only up
to the size its header announces, so a gzip bomb is refused after a few bytes
too many), and IDX files announcing more than ``MAX_IDX_BYTES`` (2 GiB) are
refused. A MAT variable's declared shape is checked before it is read (at most
``MAX_MAT_VALUES``, 2^28 values).

Splits
------
Every split is seeded (``np.random.default_rng(seed)``) and **stratified**:
each class gets its share of the training and of the validation examples
(largest-remainder rounding), then both splits are shuffled. Training and
validation never share an example. The same seed gives the same split.

MNIST / Fashion-MNIST
    The standard IDX files ``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte`` (each plain or ``.gz``; the ``train-images.idx3-ubyte``
    spelling is accepted too) in a folder the user names. Get them from
    https://yann.lecun.com/exdb/mnist/ (or a mirror) and
    https://github.com/zalandoresearch/fashion-mnist. Default split
    (``val_from="test"``): training examples drawn from the train files,
    validation examples from the t10k files (the official, disjoint test set).
    ``val_from="train"`` draws both from the train files (the t10k files are
    then not needed). Default sizes 5000 / 200 (as the ``[data]`` config
    defaults); the full set is 60000 / 10000.

Digits
    ``sklearn.datasets.load_digits`` (1797 images 8x8, shipped with
    scikit-learn): pixel values 0..16 are scaled by 255/16 to ``[0, 255]``.
    Default split 1297 / 500.

Indian Pines
    ``Indian_pines_corrected.mat`` (key ``indian_pines_corrected``, 200 bands)
    or ``Indian_pines.mat`` (key ``indian_pines``, 220 bands) with
    ``Indian_pines_gt.mat`` (key ``indian_pines_gt``; 0 = unlabelled, classes
    1..16, mapped to 0..15). Only labelled pixels are used; the paper's
    4000 / 2000 split; each band is normalised to zero mean and unit variance
    with statistics of the training split (applied to both splits; a constant
    band is only centred). Get the files from
    https://www.ehu.eus/ccwintco/index.php/Hyperspectral_Remote_Sensing_Scenes.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ._files import GZIP_MAX_RATIO, open_regular, read_at_most
from ._matfile import MAX_MAT_VALUES, load_mat_variable  # noqa: F401 (MAX_MAT_VALUES: documented here)
from .dataset import Dataset, section_value

__all__ = [
    "DIGITS_DEFAULT_SIZES",
    "INDIAN_PINES_DEFAULT_SIZES",
    "INDIAN_PINES_N_CLASSES",
    "MNIST_DEFAULT_SIZES",
    "class_balance",
    "format_class_balance",
    "image_shape",
    "load_digits",
    "load_fashion_mnist",
    "load_indian_pines",
    "load_mnist",
    "read_idx_images",
    "read_idx_labels",
    "stratified_split",
]

MNIST_DEFAULT_SIZES = (5000, 200)
DIGITS_DEFAULT_SIZES = (1297, 500)
DIGITS_N_IMAGES = 1797
INDIAN_PINES_DEFAULT_SIZES = (4000, 2000)
INDIAN_PINES_N_CLASSES = 16

IDX_IMAGES_MAGIC = 2051   # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049   # 0x00000801: unsigned bytes, 1 dimension
MNIST_SIDE = 28
MNIST_N_CLASSES = 10

#: IDX files announcing more data than this (2 GiB, 45 times MNIST) are refused.
MAX_IDX_BYTES = 1 << 31
#: Trailing data after an IDX file's values is counted up to this many bytes.
IDX_SLACK_BYTES = 1 << 16


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def _check_size(name: str, value: Any, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}.")
    return int(value)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    return int(seed)


def _largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers ``q`` with ``sum(q) == total`` proportional to ``weights``
    (largest-remainder rounding; ties go to the lower class index)."""
    w = np.asarray(weights, dtype=np.float64)
    exact = total * w / w.sum()
    q = np.floor(exact).astype(np.int64)
    rest = total - int(q.sum())
    if rest > 0:
        order = np.argsort(-(exact - q), kind="stable")
        q[order[:rest]] += 1
    return q


def stratified_split(labels, n_train: int, n_val: int, seed: int,
                     what: str = "the data") -> tuple[np.ndarray, np.ndarray]:
    """Disjoint index arrays ``(train, val)`` of sizes ``n_train`` / ``n_val``
    into ``labels`` (int, ``(n,)``), each class represented in proportion to
    its frequency; both are shuffled. Seeded by ``default_rng(seed)``."""
    y = np.asarray(labels)
    n_train = _check_size("n_train", n_train)
    n_val = _check_size("n_val", n_val)
    seed = _check_seed(seed)
    n = y.shape[0]
    if n_train + n_val > n:
        raise ValueError(f"{what} holds {n} examples, fewer than the {n_train} training plus "
                         f"{n_val} validation examples asked for.")
    classes, counts = np.unique(y, return_counts=True)
    # floor(t*c/N) + 1 <= c for t < N, so no class is asked for more than it has
    take = _largest_remainder(n_train + n_val, counts)
    take_train = _largest_remainder(n_train, take)
    rng = np.random.default_rng(seed)
    tr, va = [], []
    for c, k, kt in zip(classes, take, take_train):
        members = np.flatnonzero(y == c)
        chosen = rng.choice(members, size=int(k), replace=False)
        tr.append(chosen[:kt])
        va.append(chosen[kt:])
    tr = np.concatenate(tr)
    va = np.concatenate(va)
    return tr[rng.permutation(tr.size)], va[rng.permutation(va.size)]


def _subset(labels, n: int, seed: int, what: str) -> np.ndarray:
    """Stratified, shuffled subset of ``n`` indices (all of them if n == len)."""
    y = np.asarray(labels)
    n = _check_size("size", n)
    if n > y.shape[0]:
        raise ValueError(f"{what} holds {y.shape[0]} examples, fewer than the {n} asked for.")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    take = _largest_remainder(n, counts)
    idx = np.concatenate([rng.choice(np.flatnonzero(y == c), size=int(k), replace=False)
                          for c, k in zip(classes, take)])
    return idx[rng.permutation(idx.size)]


def image_shape(dataset: Dataset) -> tuple[int, ...] | None:
    """``(C, H, W)`` of an image data set, ``None`` for a flat one."""
    x = np.asarray(dataset.train_x)
    return tuple(int(s) for s in x.shape[1:]) if x.ndim == 4 else None


def class_balance(dataset: Dataset) -> dict[str, dict[int, int]]:
    """Examples per class: ``{"train": {0: n0, 1: n1, ...}, "val": {...}}``
    (every class ``0..n_classes-1`` listed, absent ones with 0)."""
    out = {}
    for split, y in (("train", dataset.train_y), ("val", dataset.val_y)):
        counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=int(dataset.n_classes))
        out[split] = {int(c): int(k) for c, k in enumerate(counts)}
    return out


def format_class_balance(dataset: Dataset) -> str:
    """Two-line text of :func:`class_balance` for the command line."""
    bal = class_balance(dataset)
    lines = []
    for split in ("train", "val"):
        total = sum(bal[split].values())
        parts = " ".join(f"{c}:{k}" for c, k in bal[split].items())
        lines.append(f"{split:5s} ({total}): {parts}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST)
# ---------------------------------------------------------------------------

def _read_idx(path, magic: int, ndim: int) -> np.ndarray:
    """Parse one IDX file of unsigned bytes with ``ndim`` dimensions (plain, or
    gzip when the name ends in ``.gz``). The header is checked against the file's
    size before the data is read, and a gzip stream is decompressed only up to
    the size its header announces (plus a little to detect trailing data)."""
    p = Path(path)
    name = f"IDX file '{p}'"
    kind = "images" if magic == IDX_IMAGES_MAGIC else "labels"
    header = 4 + 4 * ndim
    gz = p.name.endswith(".gz")
    with open_regular(p, name) as (fh, st):
        try:
            stream: BinaryIO = gzip.GzipFile(fileobj=fh, mode="rb") if gz else fh  # type: ignore[assignment]
            head = bytes(read_at_most(stream, header))
            if len(head) < 4:
                raise ValueError(f"{name} is truncated: {len(head)} bytes, too short for a header.")
            got = int.from_bytes(head[:4], "big")
            if got != magic:
                raise ValueError(f"{name} has magic number {got}, expected {magic} for an IDX {kind} file.")
            if len(head) < header:
                raise ValueError(f"{name} is truncated: {len(head)} bytes, shorter than its "
                                 f"{header}-byte header.")
            dims = tuple(int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
            expected = math.prod(dims)    # Python integers: no overflow
            promise = f"{' x '.join(map(str, dims))} = {expected} bytes of data"
            if gz:
                most = GZIP_MAX_RATIO * st.st_size - header
                if expected > most:
                    raise ValueError(f"{name} is truncated: its header promises {promise} but a "
                                     f"compressed file of {st.st_size} bytes holds at most {most}.")
            elif st.st_size - header < expected:
                raise ValueError(f"{name} is truncated: its header promises {promise} but it holds "
                                 f"{st.st_size - header}.")
            if expected > MAX_IDX_BYTES:
                raise ValueError(f"{name} announces {promise}, more than the {MAX_IDX_BYTES} bytes "
                                 f"an IDX file may hold.")
            raw = read_at_most(stream, expected + IDX_SLACK_BYTES + 1)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"cannot read {name} ({exc}).") from None
    payload = len(raw)
    if payload < expected:
        raise ValueError(f"{name} is truncated: its header promises {promise} but it holds {payload}.")
    if payload > expected + IDX_SLACK_BYTES:
        raise ValueError(f"{name} has more than {IDX_SLACK_BYTES} bytes after the "
                         f"{' x '.join(map(str, dims))} values its header announces.")
    if payload > expected:
        raise ValueError(f"{name} has {payload - expected} bytes after the "
                         f"{' x '.join(map(str, dims))} values its header announces.")
    return np.frombuffer(raw, dtype=np.uint8).reshape(dims)


def read_idx_images(path, side: int | None = MNIST_SIDE) -> np.ndarray:
    """The uint8 images ``(n, rows, cols)`` of an IDX3 file (magic 2051).
    With ``side`` given, rows and cols must both equal it."""
    x = _read_idx(path, IDX_IMAGES_MAGIC, 3)
    n, r, c = x.shape
    if n == 0 or r == 0 or c == 0 or (side is not None and (r != side or c != side)):
        want = f"{side} x {side}" if side is not None else "non-empty"
        raise ValueError(f"IDX file '{Path(path)}' holds {n} images of {r} x {c} pixels, "
                         f"expected at least one image of {want} pixels.")
    return x


def read_idx_labels(path, n_classes: int = MNIST_N_CLASSES) -> np.ndarray:
    """The labels of an IDX1 file (magic 2049) as int64, all in ``[0, n_classes)``."""
    y = _read_idx(path, IDX_LABELS_MAGIC, 1)
    if y.size == 0:
        raise ValueError(f"IDX file '{Path(path)}' holds no labels.")
    bad = np.flatnonzero(y >= n_classes)
    if bad.size:
        k = int(bad[0])
        raise ValueError(f"IDX file '{Path(path)}' has label {int(y[k])} at position {k}, "
                         f"outside 0..{n_classes - 1}.")
    return y.astype(np.int64)


def _find_idx(folder: Path, stem: str) -> Path:
    """``stem`` or ``stem.gz`` (also with ``-idx`` spelled ``.idx``) in ``folder``:
    the first regular file of these names, else the first that exists (which the
    reader then refuses, saying what it is)."""
    names = []
    for s in dict.fromkeys((stem, stem.replace("-idx", ".idx"))):
        names += [s, s + ".gz"]
    for exists in (os.path.isfile, os.path.lexists):
        for name in names:
            p = folder / name
            if exists(p):
                return p
    raise ValueError(f"IDX file '{folder / stem}' (or '{stem}.gz') does not exist; "
                     f"put the standard files in the data folder (they are never downloaded).")


def _read_pair(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray, Path, Path]:
    ip = _find_idx(folder, f"{prefix}-images-idx3-ubyte")
    lp = _find_idx(folder, f"{prefix}-labels-idx1-ubyte")
    x = read_idx_images(ip)
    y = read_idx_labels(lp)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"IDX file '{ip}' holds {x.shape[0]} images but '{lp}' holds "
                         f"{y.shape[0]} labels.")
    return x, y, ip, lp


def _as_images(x_uint8: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x_uint8[:, None, :, :], dtype=np.float64)


def _check_folder(folder, what: str) -> Path:
    if folder is None or not str(folder).strip():
        raise ValueError(f"the {what} loader needs the folder that holds its files.")
    p = Path(os.path.expanduser(str(folder)))
    if not p.is_dir():
        raise ValueError(f"{what} data folder '{p}' does not exist or is not a folder.")
    return p


def load_mnist(folder, n_train: int = MNIST_DEFAULT_SIZES[0], n_val: int = MNIST_DEFAULT_SIZES[1],
               seed: int = 0, val_from: str = "test", *, _what: str = "MNIST") -> Dataset:
    """MNIST from the four IDX files in ``folder`` (see the module doc).

    Images float64 ``(n, 1, 28, 28)`` of raw pixels 0..255, labels int64 0..9.
    ``val_from="test"``: ``n_train`` stratified examples from the train files
    and ``n_val`` from the t10k files; ``val_from="train"``: a stratified split
    of the train files. Seeded by ``seed``."""
    n_train = _check_size("n_train", n_train)
    n_val = _check_size("n_val", n_val)
    seed = _check_seed(seed)
    if val_from not in ("test", "train"):
        raise ValueError(f'val_from must be "test" or "train", got {val_from!r}.')
    root = _check_folder(folder, _what)
    x, y, ip, _ = _read_pair(root, "train")
    if val_from == "train":
        tr, va = stratified_split(y, n_train, n_val, seed, what=f"IDX file '{ip}'")
        xt, yt, xv, yv = x[tr], y[tr], x[va], y[va]
    else:
        tr = _subset(y, n_train, seed, what=f"IDX file '{ip}'")
        xt, yt = x[tr], y[tr]
        xs, ys, ips, _ = _read_pair(root, "t10k")
        if xs.shape[1:] != x.shape[1:]:
            raise ValueError(f"IDX file '{ips}' holds images of {xs.shape[1:]} pixels but "
                             f"'{ip}' of {x.shape[1:]}.")
        va = _subset(ys, n_val, seed + 1, what=f"IDX file '{ips}'")
        xv, yv = xs[va], ys[va]
    return Dataset(train_x=_as_images(xt), train_y=np.ascontiguousarray(yt),
                   val_x=_as_images(xv), val_y=np.ascontiguousarray(yv),
                   n_features=int(np.prod(x.shape[1:])), n_classes=MNIST_N_CLASSES)


def load_fashion_mnist(folder, n_train: int = MNIST_DEFAULT_SIZES[0],
                       n_val: int = MNIST_DEFAULT_SIZES[1], seed: int = 0,
                       val_from: str = "test") -> Dataset:
    """Fashion-MNIST: the same file names and format as :func:`load_mnist`."""
    return load_mnist(folder, n_train, n_val, seed, val_from, _what="Fashion-MNIST")


# ---------------------------------------------------------------------------
# scikit-learn digits
# ---------------------------------------------------------------------------

def load_digits(n_train: int = DIGITS_DEFAULT_SIZES[0], n_val: int = DIGITS_DEFAULT_SIZES[1],
                seed: int = 0) -> Dataset:
    """The 1797 8x8 digits of ``sklearn.datasets.load_digits`` (no download):
    images float64 ``(n, 1, 8, 8)`` scaled to 0..255, labels int64 0..9;
    stratified seeded split."""
    n_train = _check_size("n_train", n_train)
    n_val = _check_size("n_val", n_val)
    seed = _check_seed(seed)
    try:
        from sklearn.datasets import load_digits as _sk_digits
    except ImportError:
        raise ValueError("the digits data set needs scikit-learn: pip install scikit-learn.") from None
    bunch = _sk_digits()
    images = np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0)
    y = np.asarray(bunch.target, dtype=np.int64)
    tr, va = stratified_split(y, n_train, n_val, seed,
                              what="the scikit-learn digits set")
    return Dataset(train_x=np.ascontiguousarray(images[tr][:, None]),
                   train_y=np.ascontiguousarray(y[tr]),
                   val_x=np.ascontiguousarray(images[va][:, None]),
                   val_y=np.ascontiguousarray(y[va]),
                   n_features=int(images.shape[1] * images.shape[2]), n_classes=10)


# ---------------------------------------------------------------------------
# Indian Pines
# ---------------------------------------------------------------------------

_PINES_FILES = {
    "corrected": ("Indian_pines_corrected.mat", "indian_pines_corrected"),
    "uncorrected": ("Indian_pines.mat", "indian_pines"),
}
_PINES_GT = ("Indian_pines_gt.mat", "indian_pines_gt")


def load_indian_pines(folder, n_train: int = INDIAN_PINES_DEFAULT_SIZES[0],
                      n_val: int = INDIAN_PINES_DEFAULT_SIZES[1], seed: int = 0,
                      variant: str = "auto") -> Dataset:
    """Indian Pines labelled pixels: features float64 ``(n, bands)`` normalised
    per band with training statistics, labels int64 0..15 (16 classes).

    ``variant``: ``"corrected"`` (``Indian_pines_corrected.mat``, 200 bands),
    ``"uncorrected"`` (``Indian_pines.mat``, 220 bands) or ``"auto"`` (the
    corrected file if present, else the uncorrected one)."""
    n_train = _check_size("n_train", n_train)
    n_val = _check_size("n_val", n_val)
    seed = _check_seed(seed)
    if variant not in ("auto", "corrected", "uncorrected"):
        raise ValueError(f'variant must be "auto", "corrected" or "uncorrected", got {variant!r}.')
    root = _check_folder(folder, "Indian Pines")
    if variant == "auto":
        variant = "corrected" if os.path.lexists(root / _PINES_FILES["corrected"][0]) else "uncorrected"
        if not os.path.lexists(root / _PINES_FILES[variant][0]):
            raise ValueError(f"MAT file '{root / _PINES_FILES['corrected'][0]}' (or "
                             f"'{_PINES_FILES['uncorrected'][0]}') does not exist.")
    fname, key = _PINES_FILES[variant]
    cube_path, gt_path = root / fname, root / _PINES_GT[0]
    cube = load_mat_variable(cube_path, key)
    gt = load_mat_variable(gt_path, _PINES_GT[1])

    if cube.ndim != 3 or min(cube.shape) == 0 or cube.dtype.kind not in "iuf":
        raise ValueError(f"MAT file '{cube_path}' variable '{key}' must be a numeric "
                         f"(rows, cols, bands) array, got {cube.dtype} of shape {cube.shape}.")
    if gt.ndim != 2 or gt.dtype.kind not in "iuf":
        raise ValueError(f"MAT file '{gt_path}' variable '{_PINES_GT[1]}' must be a numeric "
                         f"(rows, cols) array, got {gt.dtype} of shape {gt.shape}.")
    if gt.shape != cube.shape[:2]:
        raise ValueError(f"MAT file '{gt_path}' has ground truth of {gt.shape[0]} x "
                         f"{gt.shape[1]} pixels but '{cube_path}' has {cube.shape[0]} x "
                         f"{cube.shape[1]}.")
    g = gt.astype(np.float64)
    bad = ~np.isfinite(g) | (g != np.round(g)) | (g < 0) | (g > INDIAN_PINES_N_CLASSES)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"MAT file '{gt_path}' has ground truth {gt[r, c].item()} at pixel "
                         f"({r}, {c}), expected an integer in 0..{INDIAN_PINES_N_CLASSES} "
                         f"(0 = unlabelled).")
    g = g.astype(np.int64)
    mask = g > 0
    if not mask.any():
        raise ValueError(f"MAT file '{gt_path}' has no labelled pixel (all ground truth is 0).")
    x = cube[mask].astype(np.float64)           # (n, bands), row-major pixel order
    y = g[mask] - 1
    if not np.isfinite(x).all():
        raise ValueError(f"MAT file '{cube_path}' has values that are not finite.")
    tr, va = stratified_split(y, n_train, n_val, seed,
                              what=f"MAT file '{gt_path}' (labelled pixels)")
    xt, xv = x[tr], x[va]
    with np.errstate(over="ignore", invalid="ignore"):
        mean = xt.mean(axis=0)
        std = xt.std(axis=0)
        std[std == 0] = 1.0
        xt = (xt - mean) / std
        xv = (xv - mean) / std
    if not (np.isfinite(std).all() and np.isfinite(xt).all() and np.isfinite(xv).all()):
        raise ValueError(f"MAT file '{cube_path}' has values too large to normalise (up to "
                         f"{np.abs(x).max():g} in magnitude).")
    return Dataset(train_x=np.ascontiguousarray(xt), train_y=np.ascontiguousarray(y[tr]),
                   val_x=np.ascontiguousarray(xv), val_y=np.ascontiguousarray(y[va]),
                   n_features=int(x.shape[1]), n_classes=INDIAN_PINES_N_CLASSES)


# ---------------------------------------------------------------------------
# From the [data] config section (called by data.load_dataset)
# ---------------------------------------------------------------------------

NAMES = ("mnist", "fashion_mnist", "digits", "indian_pines")


def load_named(data_cfg, base_dir=".") -> Dataset:
    """The data set ``data_cfg.name`` (one of :data:`NAMES`) with
    ``train_size``, ``val_size``, ``seed``, ``folder`` (relative to
    ``base_dir``), ``val_from`` and ``variant`` from the ``[data]`` section."""
    name = section_value(data_cfg, "name")
    seed = int(section_value(data_cfg, "seed", 0))
    defaults = {"digits": DIGITS_DEFAULT_SIZES,
                "indian_pines": INDIAN_PINES_DEFAULT_SIZES}.get(name, MNIST_DEFAULT_SIZES)
    n_train = int(section_value(data_cfg, "train_size", defaults[0]))
    n_val = int(section_value(data_cfg, "val_size", defaults[1]))
    if name == "digits":
        if n_train + n_val > DIGITS_N_IMAGES:
            raise ValueError(f"data.train_size + data.val_size is {n_train + n_val} but the "
                             f"digits set has only {DIGITS_N_IMAGES} images (e.g. 1297 and 500).")
        return load_digits(n_train, n_val, seed)
    if name not in NAMES:
        raise ValueError(f"data.name must be one of {', '.join(NAMES)}, got {name!r}.")
    raw = str(section_value(data_cfg, "folder", "") or "")
    if not raw.strip():
        raise ValueError(f'data.folder is required when data.name = "{name}".')
    folder = Path(os.path.expanduser(raw))
    if not folder.is_absolute():
        folder = Path(base_dir) / folder
    if name == "indian_pines":
        return load_indian_pines(folder, n_train, n_val, seed,
                                 variant=str(section_value(data_cfg, "variant", "auto")))
    loader = load_mnist if name == "mnist" else load_fashion_mnist
    return loader(folder, n_train, n_val, seed, val_from=str(section_value(data_cfg, "val_from", "test")))
