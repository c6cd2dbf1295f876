"""Tests for layerparallel.datasets: IDX (MNIST / Fashion-MNIST), scikit-learn
digits and Indian Pines loaders, on small files the tests write themselves."""

import gzip
import struct

import numpy as np
import pytest

from layerparallel import config as C
from layerparallel import data as D
from layerparallel import datasets as DS

# ---------------------------------------------------------------------------
# IDX helpers
# ---------------------------------------------------------------------------


def _idx_bytes(arr, magic):
    arr = np.asarray(arr, dtype=np.uint8)
    head = struct.pack(">i", magic) + b"".join(struct.pack(">i", d) for d in arr.shape)
    return head + arr.tobytes()


def _write(path, raw, gz):
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as fh:
            fh.write(raw)
    else:
        path.write_bytes(raw)
    return path


def _fake_split(n, seed):
    """n images 28x28 whose first pixel is the index (mod 256) and whose second
    is the label, so rows can be traced; labels cycle through 0..9."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 10).astype(np.uint8)
    x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    x[:, 0, 0] = np.arange(n) % 256
    x[:, 0, 1] = y
    return x, y


def _mnist_folder(folder, n_train=120, n_test=50, gz=False):
    folder.mkdir(parents=True, exist_ok=True)
    xt, yt = _fake_split(n_train, 1)
    xs, ys = _fake_split(n_test, 2)
    paths = {
        "train_images": _write(folder / "train-images-idx3-ubyte", _idx_bytes(xt, 2051), gz),
        "train_labels": _write(folder / "train-labels-idx1-ubyte", _idx_bytes(yt, 2049), gz),
        "test_images": _write(folder / "t10k-images-idx3-ubyte", _idx_bytes(xs, 2051), gz),
        "test_labels": _write(folder / "t10k-labels-idx1-ubyte", _idx_bytes(ys, 2049), gz),
    }
    return paths, (xt, yt, xs, ys)


# ---------------------------------------------------------------------------
# MNIST
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_loads_shapes_types_and_pairs(tmp_path, gz):
    _, (xt, yt, xs, ys) = _mnist_folder(tmp_path, gz=gz)
    ds = DS.load_mnist(tmp_path, n_train=60, n_val=20, seed=3)
    assert ds.train_x.shape == (60, 1, 28, 28) and ds.val_x.shape == (20, 1, 28, 28)
    assert ds.train_x.dtype == np.float64 and ds.train_y.dtype == np.int64
    assert ds.n_features == 784 and ds.n_classes == 10
    assert DS.image_shape(ds) == (1, 28, 28)
    assert ds.train_x.min() >= 0 and ds.train_x.max() <= 255
    assert ds.train_x.max() > 1           # raw pixels, not scaled
    # every image keeps its label and comes from the right file
    for x, y in zip(ds.train_x, ds.train_y):
        i = int(x[0, 0, 0])
        assert np.array_equal(x[0], xt[i]) and y == yt[i] == x[0, 0, 1]
    for x, y in zip(ds.val_x, ds.val_y):
        i = int(x[0, 0, 0])
        assert np.array_equal(x[0], xs[i]) and y == ys[i]
    # stratified: classes balanced as in the files
    bal = DS.class_balance(ds)
    assert bal["train"] == {c: 6 for c in range(10)}
    assert bal["val"] == {c: 2 for c in range(10)}
    # no duplicates
    assert len({int(v) for v in ds.train_x[:, 0, 0, 0]}) == 60


def test_mnist_seeded_and_val_from_train(tmp_path):
    _mnist_folder(tmp_path)
    a = DS.load_mnist(tmp_path, 50, 30, seed=5)
    b = DS.load_mnist(tmp_path, 50, 30, seed=5)
    c = DS.load_mnist(tmp_path, 50, 30, seed=6)
    assert np.array_equal(a.train_x, b.train_x) and np.array_equal(a.val_y, b.val_y)
    assert not np.array_equal(a.train_x, c.train_x)
    s = DS.load_mnist(tmp_path, 80, 40, seed=1, val_from="train")
    tr_ids = set(s.train_x[:, 0, 0, 0].astype(int))
    va_ids = set(s.val_x[:, 0, 0, 0].astype(int))
    assert len(tr_ids) == 80 and len(va_ids) == 40 and not tr_ids & va_ids
    assert np.bincount(s.val_y).tolist() == [4] * 10
    # only the train files are needed for val_from="train"
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    DS.load_mnist(tmp_path, 80, 40, seed=1, val_from="train")
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte"):
        DS.load_mnist(tmp_path, 80, 40, seed=1)


def test_mnist_too_many_examples_names_file(tmp_path):
    _mnist_folder(tmp_path, n_train=40, n_test=20)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.*40"):
        DS.load_mnist(tmp_path, 41, 5)
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.*20"):
        DS.load_mnist(tmp_path, 10, 21)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
        DS.load_mnist(tmp_path, 30, 11, val_from="train")


def test_fashion_mnist_same_format(tmp_path):
    _mnist_folder(tmp_path, gz=True)
    ds = DS.load_fashion_mnist(tmp_path, 20, 10, seed=0)
    assert ds.train_x.shape == (20, 1, 28, 28) and ds.n_classes == 10


def test_mnist_missing_folder_and_files(tmp_path):
    with pytest.raises(ValueError, match="nosuch"):
        DS.load_mnist(tmp_path / "nosuch")
    with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
        DS.load_mnist(tmp_path)


def _malformed(kind):
    """(file stem, raw bytes) of a malformed IDX file."""
    x, y = _fake_split(30, 0)
    if kind == "images_magic":
        return "train-images-idx3-ubyte", _idx_bytes(x, 2049)
    if kind == "labels_magic":
        return "train-labels-idx1-ubyte", _idx_bytes(y, 2051)
    if kind == "images_truncated":
        return "train-images-idx3-ubyte", _idx_bytes(x, 2051)[:-100]
    if kind == "labels_truncated":
        return "train-labels-idx1-ubyte", _idx_bytes(y, 2049)[:-1]
    if kind == "header_truncated":
        return "train-images-idx3-ubyte", _idx_bytes(x, 2051)[:10]
    if kind == "tiny":
        return "train-labels-idx1-ubyte", b"\x00\x00"
    if kind == "trailing":
        return "train-labels-idx1-ubyte", _idx_bytes(y, 2049) + b"\x00"
    if kind == "count_mismatch":
        return "train-labels-idx1-ubyte", _idx_bytes(y[:29], 2049)
    if kind == "label_range":
        y = y.copy()
        y[7] = 10
        return "train-labels-idx1-ubyte", _idx_bytes(y, 2049)
    if kind == "wrong_dims":
        return "train-images-idx3-ubyte", _idx_bytes(x[:, :27, :], 2051)
    raise AssertionError(kind)


MALFORMED = {
    "images_magic": "magic number 2049, expected 2051",
    "labels_magic": "magic number 2051, expected 2049",
    "images_truncated": "truncated",
    "labels_truncated": "truncated",
    "header_truncated": "truncated",
    "tiny": "truncated",
    "trailing": "bytes after",
    "count_mismatch": "30 images but",
    "label_range": "label 10 at position 7",
    "wrong_dims": "27 x 28",
}


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_idx_raises_naming_file(tmp_path, kind, gz):
    x, y = _fake_split(30, 0)
    good = {"train-images-idx3-ubyte": _idx_bytes(x, 2051),
            "train-labels-idx1-ubyte": _idx_bytes(y, 2049)}
    stem, raw = _malformed(kind)
    good[stem] = raw
    for name, data in good.items():
        _write(tmp_path / name, data, gz)
    with pytest.raises(ValueError) as info:
        DS.load_mnist(tmp_path, 10, 5, val_from="train")
    msg = str(info.value)
    assert stem in msg, msg
    assert MALFORMED[kind] in msg, msg
    assert msg.endswith("."), msg


def test_corrupt_gzip_names_file(tmp_path):
    x, y = _fake_split(30, 0)
    _write(tmp_path / "train-images-idx3-ubyte", _idx_bytes(x, 2051), gz=False)
    full = gzip.compress(_idx_bytes(y, 2049))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(full[: len(full) // 2])
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz"):
        DS.load_mnist(tmp_path, 10, 5, val_from="train")


def test_read_idx_direct(tmp_path):
    x, y = _fake_split(5, 0)
    p = _write(tmp_path / "imgs", _idx_bytes(x, 2051), gz=True)
    assert np.array_equal(DS.read_idx_images(p), x)
    q = _write(tmp_path / "labs", _idx_bytes(y, 2049), gz=False)
    got = DS.read_idx_labels(q)
    assert got.dtype == np.int64 and np.array_equal(got, y)


def test_dotted_idx_names_accepted(tmp_path):
    x, y = _fake_split(30, 0)
    _write(tmp_path / "train-images.idx3-ubyte", _idx_bytes(x, 2051), gz=False)
    _write(tmp_path / "train-labels.idx1-ubyte", _idx_bytes(y, 2049), gz=False)
    assert DS.load_mnist(tmp_path, 10, 5, val_from="train").n_train == 10


# ---------------------------------------------------------------------------
# Digits
# ---------------------------------------------------------------------------


def test_digits():
    pytest.importorskip("sklearn", reason="scikit-learn is not installed (pip install scikit-learn)")
    ds = DS.load_digits(seed=0)
    assert ds.n_train == 1297 and ds.n_val == 500
    assert ds.train_x.shape == (1297, 1, 8, 8) and ds.train_x.dtype == np.float64
    assert ds.train_y.dtype == np.int64 and ds.n_features == 64 and ds.n_classes == 10
    assert ds.train_x.min() == 0 and ds.train_x.max() == 255.0
    allx = np.concatenate([ds.train_x, ds.val_x]).reshape(1797, -1)
    from sklearn.datasets import load_digits
    ref = load_digits()
    # the split is a partition of all 1797 images (stratified)
    key = {tuple(r): t for r, t in zip(ref.data * 255 / 16, ref.target)}
    for x, y in zip(allx, np.concatenate([ds.train_y, ds.val_y])):
        assert key[tuple(x)] == y
    bal = DS.class_balance(ds)
    assert sum(bal["train"].values()) == 1297 and sum(bal["val"].values()) == 500
    ref_counts = np.bincount(ref.target)
    for c in range(10):
        assert abs(bal["val"][c] - 500 * ref_counts[c] / 1797) <= 1
    again = DS.load_digits(seed=0)
    other = DS.load_digits(seed=1)
    assert np.array_equal(again.train_x, ds.train_x)
    assert not np.array_equal(other.train_x, ds.train_x)
    small = DS.load_digits(100, 50, seed=2)
    assert small.n_train == 100 and small.n_val == 50
    with pytest.raises(ValueError, match="1797"):
        DS.load_digits(1500, 500)


def test_digits_without_sklearn(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def fake(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError("no sklearn")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ValueError, match="pip install scikit-learn"):
        DS.load_digits()


# ---------------------------------------------------------------------------
# Indian Pines
# ---------------------------------------------------------------------------

def _sio():
    return pytest.importorskip("scipy.io", reason="scipy is not installed (pip install scipy)")


def _pines(folder, rows=12, cols=10, bands=20, n_classes=5, corrected=True, seed=0,
           gt=None, cube=None, cube_key=None, gt_key="indian_pines_gt"):
    sio = _sio()
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if gt is None:
        gt = rng.integers(0, n_classes + 1, size=(rows, cols)).astype(np.uint8)
    if cube is None:
        cube = (rng.normal(size=(rows, cols, bands)) * np.arange(1, bands + 1) * 100
                + 1000)
    name = "Indian_pines_corrected.mat" if corrected else "Indian_pines.mat"
    key = cube_key or ("indian_pines_corrected" if corrected else "indian_pines")
    sio.savemat(folder / name, {key: cube})
    sio.savemat(folder / "Indian_pines_gt.mat", {gt_key: gt})
    return cube, gt


def test_indian_pines_shapes_normalisation_split(tmp_path):
    cube, gt = _pines(tmp_path)
    n_lab = int((gt > 0).sum())
    assert n_lab >= 90
    ds = DS.load_indian_pines(tmp_path, n_train=60, n_val=30, seed=1)
    assert ds.train_x.shape == (60, 20) and ds.val_x.shape == (30, 20)
    assert ds.n_features == 20 and ds.n_classes == 16
    assert ds.train_y.dtype == np.int64 and ds.train_x.dtype == np.float64
    assert set(np.unique(np.concatenate([ds.train_y, ds.val_y]))) <= set(range(5))
    np.testing.assert_allclose(ds.train_x.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(ds.train_x.std(axis=0), 1, atol=1e-12)
    assert np.abs(ds.val_x.mean(axis=0)).max() > 1e-6     # training statistics, not its own
    # stratified: class shares follow the labelled pixels; absent classes are 0
    labs = gt[gt > 0].astype(int) - 1
    counts = np.bincount(labs, minlength=16)
    bal = DS.class_balance(ds)
    for c in range(5):
        assert abs(bal["train"][c] - 60 * counts[c] / n_lab) <= 1
        assert abs(bal["val"][c] - 30 * counts[c] / n_lab) <= 1
    assert all(bal["train"][c] == 0 and bal["val"][c] == 0 for c in range(5, 16))


def test_indian_pines_rows_are_labelled_pixels(tmp_path):
    cube, gt = _pines(tmp_path, seed=4)
    ds = DS.load_indian_pines(tmp_path, n_train=50, n_val=20, seed=0)
    # labelled pixels in row-major order, classes 1..5 -> 0..4
    x = cube[gt > 0]
    y = gt[gt > 0].astype(np.int64) - 1
    tr, va = DS.stratified_split(y, 50, 20, seed=0)
    mean, std = x[tr].mean(axis=0), x[tr].std(axis=0)
    np.testing.assert_allclose(ds.train_x, (x[tr] - mean) / std, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ds.val_x, (x[va] - mean) / std, rtol=1e-12, atol=1e-12)
    assert np.array_equal(ds.train_y, y[tr]) and np.array_equal(ds.val_y, y[va])
    assert not set(tr) & set(va)


def test_indian_pines_constant_band_is_only_centred(tmp_path):
    rng = np.random.default_rng(0)
    cube = rng.normal(size=(12, 10, 4))
    cube[:, :, 2] = 7.0
    _pines(tmp_path, cube=cube, gt=np.full((12, 10), 3, dtype=np.uint8))
    ds = DS.load_indian_pines(tmp_path, 30, 10)
    assert np.all(ds.train_x[:, 2] == 0) and np.all(ds.val_x[:, 2] == 0)
    assert np.all(ds.train_y == 2)


def test_indian_pines_seeded_and_variant(tmp_path):
    _pines(tmp_path)
    a = DS.load_indian_pines(tmp_path, 40, 20, seed=7)
    b = DS.load_indian_pines(tmp_path, 40, 20, seed=7)
    c = DS.load_indian_pines(tmp_path, 40, 20, seed=8)
    assert np.array_equal(a.train_x, b.train_x) and np.array_equal(a.val_y, b.val_y)
    assert not np.array_equal(a.train_x, c.train_x)
    # the uncorrected file (220 bands in the real set) when asked or when alone
    un = tmp_path / "un"
    _pines(un, bands=22, corrected=False)
    assert DS.load_indian_pines(un, 40, 20).n_features == 22
    with pytest.raises(ValueError, match="Indian_pines_corrected.mat"):
        DS.load_indian_pines(un, 40, 20, variant="corrected")
    _pines(tmp_path, bands=22, corrected=False)
    assert DS.load_indian_pines(tmp_path, 40, 20).n_features == 20          # auto: corrected
    assert DS.load_indian_pines(tmp_path, 40, 20, variant="uncorrected").n_features == 22


def test_indian_pines_errors(tmp_path):
    # missing files
    with pytest.raises(ValueError, match="Indian_pines_corrected.mat"):
        DS.load_indian_pines(tmp_path, 10, 5)
    f = tmp_path / "a"
    _pines(f)
    (f / "Indian_pines_gt.mat").unlink()
    with pytest.raises(ValueError, match="Indian_pines_gt.mat.*does not exist"):
        DS.load_indian_pines(f, 10, 5)
    # missing keys name file and key
    f = tmp_path / "b"
    _pines(f, cube_key="data")
    with pytest.raises(ValueError, match="Indian_pines_corrected.mat.*'indian_pines_corrected'"):
        DS.load_indian_pines(f, 10, 5)
    f = tmp_path / "c"
    _pines(f, gt_key="gt")
    with pytest.raises(ValueError, match="Indian_pines_gt.mat.*'indian_pines_gt'"):
        DS.load_indian_pines(f, 10, 5)
    # mismatched spatial shapes
    f = tmp_path / "d"
    _pines(f, gt=np.ones((11, 10), dtype=np.uint8))
    with pytest.raises(ValueError, match="Indian_pines_gt.mat.*11 x 10.*12 x 10"):
        DS.load_indian_pines(f, 10, 5)
    # ground truth out of range
    f = tmp_path / "e"
    gt = np.ones((12, 10), dtype=np.int16)
    gt[3, 4] = 17
    _pines(f, gt=gt)
    with pytest.raises(ValueError, match=r"Indian_pines_gt.mat.*17 at pixel \(3, 4\)"):
        DS.load_indian_pines(f, 10, 5)
    gt[3, 4] = -1
    _pines(f, gt=gt)
    with pytest.raises(ValueError, match="Indian_pines_gt.mat.*-1"):
        DS.load_indian_pines(f, 10, 5)
    f = tmp_path / "e2"
    gtf = np.ones((12, 10))
    gtf[0, 1] = 2.5
    _pines(f, gt=gtf)
    with pytest.raises(ValueError, match=r"Indian_pines_gt.mat.*2.5 at pixel \(0, 1\)"):
        DS.load_indian_pines(f, 10, 5)
    # not a MAT file
    f = tmp_path / "g"
    _pines(f)
    (f / "Indian_pines_corrected.mat").write_bytes(b"this is not a mat file at all" * 10)
    with pytest.raises(ValueError, match="Indian_pines_corrected.mat"):
        DS.load_indian_pines(f, 10, 5)
    # cube not 3-D
    f = tmp_path / "h"
    _pines(f, cube=np.ones((12, 10)))
    with pytest.raises(ValueError, match="Indian_pines_corrected.mat.*rows, cols, bands"):
        DS.load_indian_pines(f, 10, 5)
    # no labelled pixels; too few labelled pixels
    f = tmp_path / "i"
    _pines(f, gt=np.zeros((12, 10), dtype=np.uint8))
    with pytest.raises(ValueError, match="Indian_pines_gt.mat.*no labelled pixel"):
        DS.load_indian_pines(f, 10, 5)
    f = tmp_path / "j"
    _pines(f)
    with pytest.raises(ValueError, match="Indian_pines_gt.mat.*fewer than"):
        DS.load_indian_pines(f)                     # default 4000 / 2000


# ---------------------------------------------------------------------------
# Split helper, class balance, config and load_dataset
# ---------------------------------------------------------------------------


def test_stratified_split_properties():
    y = np.repeat(np.arange(4), [50, 30, 15, 5])
    for n_train, n_val in ((60, 40), (99, 1), (1, 99), (70, 30)):
        tr, va = DS.stratified_split(y, n_train, n_val, seed=3)
        assert tr.size == n_train and va.size == n_val
        assert not set(tr) & set(va) and len(set(tr)) == n_train
    tr, va = DS.stratified_split(y, 50, 30, seed=0)
    assert abs(np.bincount(y[tr], minlength=4) - np.array([25, 15, 7.5, 2.5])).max() <= 1
    assert abs(np.bincount(y[va], minlength=4) - np.array([15, 9, 4.5, 1.5])).max() <= 1
    tr2, va2 = DS.stratified_split(y, 50, 30, seed=0)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    with pytest.raises(ValueError, match="100 examples"):
        DS.stratified_split(y, 80, 21, seed=0)


def test_class_balance_and_format():
    ds = D.Dataset(np.zeros((5, 2)), np.array([0, 0, 2, 2, 2]), np.zeros((2, 2)),
                   np.array([1, 2]), 2, 4)
    assert DS.class_balance(ds) == {"train": {0: 2, 1: 0, 2: 3, 3: 0},
                                    "val": {0: 0, 1: 1, 2: 1, 3: 0}}
    text = DS.format_class_balance(ds)
    assert "train (5): 0:2 1:0 2:3 3:0" in text and "val   (2):" in text


def test_config_keys_and_cross_checks():
    for name in ("mnist", "fashion_mnist", "indian_pines"):
        with pytest.raises(ValueError, match=rf'data\.folder is required when data\.name = "{name}"'):
            C.config_from_dict({"data": {"name": name}})
        cfg = C.config_from_dict({"data": {"name": name, "folder": "d"}})
        assert cfg.data.folder == "d"
    cfg = C.config_from_dict({"data": {"name": "digits", "train_size": 1297, "val_size": 500}})
    assert cfg.data.val_from == "test" and cfg.data.variant == "auto"
    with pytest.raises(ValueError, match=r"data\.train_size \+ data\.val_size.*1797"):
        C.config_from_dict({"data": {"name": "digits"}})
    with pytest.raises(ValueError, match=r"data\.val_from"):
        C.config_from_dict({"data": {"val_from": "t10k"}})
    with pytest.raises(ValueError, match=r"data\.variant"):
        C.config_from_dict({"data": {"variant": "raw"}})


def test_load_dataset_dispatch_relative_folder(tmp_path):
    _mnist_folder(tmp_path / "mn", gz=True)
    cfg = C.load_config(_toml(tmp_path, '[data]\nname = "mnist"\nfolder = "mn"\n'
                                        'train_size = 30\nval_size = 20\nseed = 4\n'))
    ds = D.load_dataset(cfg.data, cfg.base_dir)
    assert ds.train_x.shape == (30, 1, 28, 28) and ds.n_val == 20
    ref = DS.load_mnist(tmp_path / "mn", 30, 20, seed=4)
    assert np.array_equal(ds.train_x, ref.train_x)
    cfg2 = cfg.with_overrides(["data.val_from=train", "data.name=fashion_mnist"])
    assert D.load_dataset(cfg2.data, cfg2.base_dir).n_train == 30
    # shuffled/truncated keep the 4-D images
    t = ds.shuffled(1).truncated(10, 5)
    assert t.train_x.shape == (10, 1, 28, 28)

    _pines(tmp_path / "ip")
    ds = D.load_dataset({"name": "indian_pines", "folder": "ip", "train_size": 40,
                         "val_size": 20, "seed": 0}, base_dir=tmp_path)
    assert ds.train_x.shape == (40, 20)
    ds = D.load_dataset({"name": "indian_pines", "folder": str(tmp_path / "ip"),
                         "train_size": 40, "val_size": 20}, base_dir="/nonexistent")
    assert ds.n_val == 20
    with pytest.raises(ValueError, match="data.folder"):
        D.load_dataset({"name": "indian_pines"}, base_dir=tmp_path)


def test_load_dataset_digits():
    pytest.importorskip("sklearn", reason="scikit-learn is not installed (pip install scikit-learn)")
    ds = D.load_dataset({"name": "digits", "train_size": 1297, "val_size": 500, "seed": 0})
    ref = DS.load_digits(seed=0)
    assert np.array_equal(ds.train_x, ref.train_x) and np.array_equal(ds.val_y, ref.val_y)
    with pytest.raises(ValueError, match="1797"):
        D.load_dataset({"name": "digits", "train_size": 5000, "val_size": 200})


def _toml(folder, text):
    p = folder / "run.toml"
    p.write_text(text)
    return p
