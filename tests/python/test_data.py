"""Tests for layerparallel.data (pure Python, no compiled core needed)."""

from pathlib import Path

import numpy as np
import pytest

from layerparallel import data as D

REF_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "peaks"
needs_ref = pytest.mark.skipif(
    not (REF_DIR / "features_training.dat").exists(),
    reason=f"reference peaks files not found in {REF_DIR}",
)


# ---------------------------------------------------------------- peaks ----

def test_peaks_formula_known_values():
    # peaks(0, 0) = 3 e^{-1} - (1/3) e^{-1}
    assert D.peaks(0.0, 0.0) == pytest.approx(3 * np.exp(-1) - np.exp(-1) / 3, rel=1e-15)
    # MATLAB's peaks(1, -1): 0 - 10 (0.2 - 1 + 1) e^{-2} - (1/3) e^{-5}
    assert D.peaks(1.0, -1.0) == pytest.approx(-2 * np.exp(-2) - np.exp(-5) / 3, rel=1e-14)
    z = D.peaks(np.array([[0.0, 1.0]]), np.array([[0.0, -1.0]]))
    assert z.shape == (1, 2)


def test_band_edges_match_readme():
    e = D.peaks_band_edges()
    assert e.shape == (6,)
    assert np.allclose(np.diff(e), np.diff(e)[0])  # equal widths
    assert e[0] == pytest.approx(-6.5497, abs=1e-3)
    assert e[-1] == pytest.approx(8.1054, abs=1e-3)
    assert e[1:5] == pytest.approx([-3.6187, -0.6877, 2.2433, 5.1744], abs=1e-3)


def test_peaks_classes_values_and_range():
    e = D.peaks_band_edges()
    grid = D.peaks_grid()
    assert grid.shape == (256 * 256, 2)
    assert grid.min() == -3.0 and grid.max() == 3.0
    c = D.peaks_classes(grid)
    assert c.dtype == np.int64
    assert set(np.unique(c)) == {0, 1, 2, 3, 4}
    z = D.peaks(grid[:, 0], grid[:, 1])
    for k in range(5):
        zk = z[c == k]
        assert zk.min() >= e[k] and zk.max() <= e[k + 1]
    # the grid's minimum is class 0, its maximum class 4
    assert c[np.argmin(z)] == 0 and c[np.argmax(z)] == 4


def test_peaks_classes_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        D.peaks_classes(np.zeros((4, 3)))


@needs_ref
@pytest.mark.parametrize("split", ["training", "validation"])
def test_peaks_classes_reproduce_reference_labels(split):
    x = D.read_features(REF_DIR / f"features_{split}.dat")
    y = D.read_labels(REF_DIR / f"labels_{split}.dat")
    assert x.shape == ((5000, 2) if split == "training" else (200, 2))
    assert np.bincount(y).tolist() == ([1000] * 5 if split == "training" else [40] * 5)
    c = D.peaks_classes(x)
    mismatches = int(np.sum(c != y))
    assert mismatches == 0, f"{mismatches} reference points disagree"
    # the reference points lie on the 256x256 grid
    idx = (x + 3.0) * 255.0 / 6.0
    assert np.abs(idx - np.round(idx)).max() < 1e-9


# ------------------------------------------------------------ generator ----

def _keys(x):
    return {tuple(np.round((row + 3.0) * 255.0 / 6.0).astype(int)) for row in x}


def test_generate_peaks_balanced_disjoint_labelled():
    ds = D.generate_peaks(500, 100, seed=3)
    assert ds.train_x.shape == (500, 2) and ds.val_x.shape == (100, 2)
    assert ds.train_x.dtype == np.float64 and ds.train_y.dtype == np.int64
    assert ds.val_y.dtype == np.int64
    assert ds.n_features == 2 and ds.n_classes == 5
    assert np.bincount(ds.train_y, minlength=5).tolist() == [100] * 5
    assert np.bincount(ds.val_y, minlength=5).tolist() == [20] * 5
    # labels agree with the band rule
    assert np.array_equal(D.peaks_classes(ds.train_x), ds.train_y)
    assert np.array_equal(D.peaks_classes(ds.val_x), ds.val_y)
    # on the grid, no duplicates, train and val disjoint
    kt, kv = _keys(ds.train_x), _keys(ds.val_x)
    assert len(kt) == 500 and len(kv) == 100
    assert kt.isdisjoint(kv)
    grid_keys = _keys(D.peaks_grid()[:10])  # sanity of the key function
    assert len(grid_keys) == 10


def test_generate_peaks_shuffled_not_sorted():
    ds = D.generate_peaks(500, 100, seed=0)
    # sorted-by-class data would have only 4 label changes
    assert np.count_nonzero(np.diff(ds.train_y)) > 100
    assert np.count_nonzero(np.diff(ds.val_y)) > 20


def test_generate_peaks_deterministic_and_seeded():
    a = D.generate_peaks(100, 50, seed=7)
    b = D.generate_peaks(100, 50, seed=7)
    c = D.generate_peaks(100, 50, seed=8)
    assert np.array_equal(a.train_x, b.train_x) and np.array_equal(a.train_y, b.train_y)
    assert np.array_equal(a.val_x, b.val_x) and np.array_equal(a.val_y, b.val_y)
    assert not np.array_equal(a.train_x, c.train_x)


def test_generate_peaks_defaults():
    ds = D.generate_peaks()
    assert ds.n_train == 5000 and ds.n_val == 200


@pytest.mark.parametrize("kwargs,arg", [
    ({"n_train": 501}, "n_train"),
    ({"n_val": 7}, "n_val"),
    ({"n_train": 0}, "n_train"),
    ({"n_train": 10.0}, "n_train"),
])
def test_generate_peaks_rejects_unbalanced_sizes(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        D.generate_peaks(**kwargs)


def test_generate_peaks_rejects_too_many_points():
    with pytest.raises(ValueError, match="per class"):
        D.generate_peaks(n_train=9000, n_val=200)


# -------------------------------------------------------------- Dataset ----

def test_shuffle_and_shuffled_are_permutations():
    x = np.arange(20, dtype=np.float64).reshape(10, 2)
    y = np.arange(10, dtype=np.int64)
    xs, ys = D.shuffle(x, y, seed=1)
    assert not np.array_equal(ys, y)
    assert np.array_equal(xs[:, 0], 2 * ys)  # rows stay paired
    assert sorted(ys.tolist()) == list(range(10))
    xs2, ys2 = D.shuffle(x, y, seed=1)
    assert np.array_equal(ys, ys2)
    assert np.array_equal(y, np.arange(10))  # input untouched

    ds = D.Dataset(x, y, x[:4].copy(), y[:4].copy(), 2, 10)
    s = ds.shuffled(5)
    assert np.array_equal(s.train_x[:, 0], 2 * s.train_y)
    assert sorted(s.train_y.tolist()) == list(range(10))
    assert sorted(s.val_y.tolist()) == [0, 1, 2, 3]
    assert np.array_equal(ds.train_y, np.arange(10))
    assert np.array_equal(ds.shuffled(5).train_y, s.train_y)


# --------------------------------------------------------------- reader ----

def _write(path, text):
    path.write_text(text)
    return path


def test_reader_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, size=(7, 3))
    y = np.array([0, 2, 1, 3, 3, 0, 2])
    onehot = np.eye(4)[y]
    fx = tmp_path / "f.dat"
    fy = tmp_path / "l.dat"
    np.savetxt(fx, x, fmt="%1.14e")
    np.savetxt(fy, onehot, fmt="%f")  # like the reference validation labels
    xr = D.read_features(fx)
    yr = D.read_labels(fy)
    assert xr.dtype == np.float64 and xr.flags.c_contiguous
    assert yr.dtype == np.int64
    np.testing.assert_allclose(xr, x, rtol=1e-13)
    assert yr.tolist() == y.tolist()


def test_reader_ignores_blank_lines(tmp_path):
    f = _write(tmp_path / "f.dat", "1 2\n\n3 4\n\n")
    assert D.read_features(f).tolist() == [[1.0, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize("reader,text,fragment", [
    ("features", "", "empty"),
    ("features", "\n  \n", "empty"),
    ("features", "1 2\n3\n", "line 2"),
    ("features", "1 2\n3 abc\n", "line 2"),
    ("features", "1 nan\n", "line 1"),
    ("features", "1 2\n3 inf\n", "line 2"),
    ("labels", "", "empty"),
    ("labels", "1 0 0\n0 1\n", "line 2"),
    ("labels", "1 0 0\n0 1 1\n", "line 2"),
    ("labels", "1 0 0\n0 0 0\n", "line 2"),
    ("labels", "0.5 0.5 0\n", "line 1"),
    ("labels", "1 0 0\n2 0 0\n", "line 2"),
    ("labels", "1 0 x\n", "line 1"),
    ("labels", "1 0 nan\n", "line 1"),
])
def test_reader_rejects_malformed(tmp_path, reader, text, fragment):
    f = _write(tmp_path / f"bad_{reader}_file.dat", text)
    read = D.read_features if reader == "features" else D.read_labels
    with pytest.raises(ValueError) as info:
        read(f)
    msg = str(info.value)
    assert f"bad_{reader}_file.dat" in msg
    assert fragment in msg


def test_reader_missing_file_names_file(tmp_path):
    with pytest.raises(ValueError, match="no_such_file.dat"):
        D.read_features(tmp_path / "no_such_file.dat")


def _four_files(tmp_path, n_train=6, n_val=4, n_train_labels=None):
    rng = np.random.default_rng(1)
    paths = {}
    for split, n, nl in (("train", n_train, n_train_labels or n_train), ("val", n_val, n_val)):
        x = rng.uniform(size=(n, 2))
        y = np.sort(np.arange(nl) % 3)  # sorted by class, like the reference
        paths[f"{split}_features"] = tmp_path / f"{split}_x.dat"
        paths[f"{split}_labels"] = tmp_path / f"{split}_y.dat"
        np.savetxt(paths[f"{split}_features"], x)
        np.savetxt(paths[f"{split}_labels"], np.eye(3)[y])
    return paths


def test_load_files(tmp_path):
    p = _four_files(tmp_path)
    ds = D.load_files(p["train_features"], p["train_labels"], p["val_features"], p["val_labels"])
    assert ds.n_features == 2 and ds.n_classes == 3
    assert ds.train_x.shape == (6, 2) and ds.val_y.tolist() == [0, 0, 1, 2]
    ds2 = D.load_files(p["train_features"], p["train_labels"], p["val_features"],
                       p["val_labels"], n_classes=3)
    assert ds2.n_classes == 3
    with pytest.raises(ValueError, match="n_classes=4"):
        D.load_files(p["train_features"], p["train_labels"], p["val_features"],
                     p["val_labels"], n_classes=4)


def test_load_files_count_mismatch_names_both_files(tmp_path):
    p = _four_files(tmp_path, n_train=6, n_train_labels=5)
    with pytest.raises(ValueError) as info:
        D.load_files(p["train_features"], p["train_labels"], p["val_features"], p["val_labels"])
    assert "train_x.dat" in str(info.value) and "train_y.dat" in str(info.value)


def test_load_dataset_files_shuffles_and_resolves_relative_paths(tmp_path):
    p = _four_files(tmp_path, n_train=30, n_val=9)
    cfg = {"name": "files", "seed": 0, "train_size": 30, "val_size": 9,
           **{k: v.name for k, v in p.items()}}  # relative to base_dir
    ds = D.load_dataset(cfg, base_dir=tmp_path)
    assert ds.n_train == 30 and ds.n_val == 9
    assert np.bincount(ds.train_y).tolist() == [10, 10, 10]
    # the files are sorted by class; the loaded data must not be
    assert not np.all(np.diff(ds.train_y) >= 0)
    # rows stay paired with their labels
    raw_x = D.read_features(p["train_features"])
    raw_y = D.read_labels(p["train_labels"])
    for xi, yi in zip(ds.train_x, ds.train_y):
        j = np.flatnonzero((raw_x == xi).all(axis=1))[0]
        assert raw_y[j] == yi
    # seeded
    again = D.load_dataset(cfg, base_dir=tmp_path)
    assert np.array_equal(again.train_y, ds.train_y)
    # truncation after shuffling gives several classes, not only class 0
    cfg_small = dict(cfg, train_size=9)
    small = D.load_dataset(cfg_small, base_dir=tmp_path)
    assert small.n_train == 9 and len(np.unique(small.train_y)) > 1
    with pytest.raises(ValueError, match="data.train_size"):
        D.load_dataset(dict(cfg, train_size=31), base_dir=tmp_path)


def test_load_dataset_files_requires_paths():
    with pytest.raises(ValueError, match="data.train_features"):
        D.load_dataset({"name": "files"}, base_dir=".")


def test_load_dataset_peaks_and_attribute_object():
    class Section:
        name = "peaks"
        seed = 4
        train_size = 50
        val_size = 10
    ds = D.load_dataset(Section(), base_dir=".")
    ref = D.generate_peaks(50, 10, seed=4)
    assert np.array_equal(ds.train_x, ref.train_x)
    with pytest.raises(ValueError, match="data.name"):
        D.load_dataset({"name": "mnist"}, base_dir=".")
    with pytest.raises(ValueError, match="data.train_size"):
        D.load_dataset({"name": "peaks", "train_size": 12}, base_dir=".")


@needs_ref
def test_load_dataset_reference_files():
    cfg = {"name": "files", "seed": 0, "train_size": 5000, "val_size": 200,
           "train_features": "peaks/features_training.dat",
           "train_labels": "peaks/labels_training.dat",
           "val_features": "peaks/features_validation.dat",
           "val_labels": "peaks/labels_validation.dat"}
    ds = D.load_dataset(cfg, base_dir=REF_DIR.parent)
    assert ds.n_train == 5000 and ds.n_val == 200 and ds.n_classes == 5
    assert np.array_equal(D.peaks_classes(ds.train_x), ds.train_y)
    assert len(np.unique(ds.train_y[:200])) == 5


# --------------------------------------------------------- check_inputs ----

def test_check_inputs_accepts_and_converts():
    x = np.asfortranarray(np.arange(6, dtype=np.float32).reshape(3, 2))
    y = np.array([0, 4, 2], dtype=np.int32)
    xo, yo = D.check_inputs(x, y, n_features=2, n_classes=5)
    assert xo.dtype == np.float64 and xo.flags.c_contiguous
    assert yo.dtype == np.int64 and yo.flags.c_contiguous
    assert xo.tolist() == x.tolist() and yo.tolist() == [0, 4, 2]
    xo, yo = D.check_inputs([[1, 2]], [1], 2, 5)
    assert xo.dtype == np.float64 and yo.tolist() == [1]
    xo, yo = D.check_inputs(x, None, 2, 5)
    assert yo is None


GOOD_X = np.zeros((3, 2))
GOOD_Y = np.array([0, 1, 2])


@pytest.mark.parametrize("x,y,who,what", [
    (np.zeros(3), GOOD_Y, "features", "shape"),
    (np.zeros((3, 3)), GOOD_Y, "features", "(3, 3)"),
    (np.zeros((3, 2, 1)), GOOD_Y, "features", "shape"),
    (np.zeros((0, 2)), GOOD_Y[:0], "features", "at least one"),
    (np.zeros((3, 2), dtype=complex), GOOD_Y, "features", "complex"),
    (np.array([["a", "b"]] * 3), GOOD_Y, "features", "dtype"),
    (np.array([[0.0, np.nan]] * 3), GOOD_Y, "features", "finite"),
    (np.array([[0.0, 1.0], [np.inf, 0.0], [0.0, 0.0]]), GOOD_Y, "features", "row 1"),
    (GOOD_X, np.array([0.0, 1.0, 2.0]), "labels", "float64"),
    (GOOD_X, np.array([True, False, True]), "labels", "dtype"),
    (GOOD_X, np.array([[0, 1, 2]]), "labels", "shape"),
    (GOOD_X, np.array([0, 1]), "labels", "got 2"),
    (GOOD_X, np.array([0, 1, 5]), "labels", "got 5"),
    (GOOD_X, np.array([0, -1, 2]), "labels", "got -1"),
])
def test_check_inputs_rejects(x, y, who, what):
    with pytest.raises(ValueError) as info:
        D.check_inputs(x, y, n_features=2, n_classes=5)
    msg = str(info.value)
    assert msg.startswith(who), msg
    assert what in msg, msg
    assert msg.count(". ") == 0 and msg.endswith(".")  # one sentence


def test_check_inputs_uses_given_names():
    with pytest.raises(ValueError, match="^validation features"):
        D.check_inputs(np.zeros((3, 1)), GOOD_Y, 2, 5, name="validation features")
    with pytest.raises(ValueError, match="^validation labels"):
        D.check_inputs(GOOD_X, np.array([0, 9, 0]), 2, 5, labels_name="validation labels")
