"""Every loader reads regular files only, reads a bounded amount, and names the
file it refuses: FIFOs, devices, sockets and folders are refused before they
are opened (opening a FIFO blocks; reading /dev/zero never ends), gzip and
.npz contents are checked against their declared sizes before they are
decompressed, and the messages that used to name no file or mislead now name
it and say what is wrong.

Loads that used to block or run out of memory run in a child interpreter with a
time limit and a 1.5 GiB address-space limit, so a regression fails instead of
hanging the test run."""
from __future__ import annotations

import gzip
import io
import json
import os
import socket
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import layerparallel
from layerparallel import data as D
from layerparallel import datasets as DS
from layerparallel.model import ConvResNet, ResNet, load_model

PYTHONPATH = str(Path(layerparallel.__file__).parent.parent)
LIMIT_BYTES = 3 << 29   # 1.5 GiB of address space for a child
TIMEOUT_S = 30.0        # a refusal takes well under a second; a blocked open never returns

_CHILD = """
import json, resource
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
from layerparallel import data as D, datasets as DS, model as M
try:
    {call}
    out = {{"type": "ok", "message": ""}}
except BaseException as exc:
    out = {{"type": type(exc).__name__, "message": str(exc)}}
print(json.dumps(out))
"""


def run_isolated(call: str, timeout: float = TIMEOUT_S) -> tuple[str, str]:
    """Run one line of Python (with ``D``, ``DS`` and ``M`` imported) in a child with
    bounded memory and time; returns (exception type or "ok", message)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PYTHONPATH, env.get("PYTHONPATH", "")) if p)
    code = _CHILD.format(limit=LIMIT_BYTES, call=call)
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{call}` did not return within {timeout:.0f} s (blocked on its file?)")
    assert r.returncode == 0, f"child failed (status {r.returncode}): {r.stderr[-2000:]}"
    out = json.loads(r.stdout.strip().splitlines()[-1])
    return out["type"], out["message"]


# ---------------------------------------------------------------------------
# Valid files of every format (small)
# ---------------------------------------------------------------------------

def _text_files(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    paths = {}
    for split, n in (("train", 12), ("val", 6)):
        paths[f"{split}_features"] = folder / f"{split}_x.dat"
        paths[f"{split}_labels"] = folder / f"{split}_y.dat"
        np.savetxt(paths[f"{split}_features"], rng.uniform(size=(n, 2)))
        np.savetxt(paths[f"{split}_labels"], np.eye(3)[np.arange(n) % 3])
    return paths


def _idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    return struct.pack(">i", magic) + b"".join(struct.pack(">i", d) for d in arr.shape) + arr.tobytes()


def _mnist_folder(folder: Path, gz: bool = False) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    out = {}
    for prefix, n in (("train", 40), ("t10k", 20)):
        y = np.arange(n) % 10
        x = rng.integers(0, 256, size=(n, 28, 28))
        for stem, raw in ((f"{prefix}-images-idx3-ubyte", _idx_bytes(x, 2051)),
                          (f"{prefix}-labels-idx1-ubyte", _idx_bytes(y, 2049))):
            p = folder / (stem + (".gz" if gz else ""))
            p.write_bytes(gzip.compress(raw) if gz else raw)
            out[stem] = p
    return out


def _pines_folder(folder: Path) -> dict[str, Path]:
    sio = pytest.importorskip("scipy.io", reason="scipy is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    cube = folder / "Indian_pines_corrected.mat"
    gt = folder / "Indian_pines_gt.mat"
    sio.savemat(cube, {"indian_pines_corrected": rng.normal(size=(8, 6, 4))})
    sio.savemat(gt, {"indian_pines_gt": rng.integers(1, 4, size=(8, 6)).astype(np.uint8)})
    return {"cube": cube, "gt": gt}


def _params_file(path: Path) -> Path:
    ResNet(2, 3, width=4, layers=3, seed=0).save(path)
    return path


def _replace_with_fifo(path: Path) -> Path:
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


# ---------------------------------------------------------------------------
# FIFOs: refused before they are opened
# ---------------------------------------------------------------------------

def _fifo_case(tmp_path: Path, kind: str) -> tuple[str, Path]:
    """(call, path of the FIFO) for one kind of input."""
    if kind in ("train_features", "train_labels", "val_features", "val_labels"):
        p = _text_files(tmp_path)
        _replace_with_fifo(p[kind])
        args = ", ".join(repr(str(p[k])) for k in ("train_features", "train_labels",
                                                   "val_features", "val_labels"))
        return f"D.load_files({args})", p[kind]
    if kind == "data_config_files":
        p = _text_files(tmp_path)
        _replace_with_fifo(p["val_labels"])
        cfg = {"name": "files", "train_size": 6, "val_size": 3, **{k: v.name for k, v in p.items()}}
        return f"D.load_dataset({cfg!r}, base_dir={str(tmp_path)!r})", p["val_labels"]
    if kind == "mnist_images":
        p = _mnist_folder(tmp_path)["train-images-idx3-ubyte"]
        return f"DS.load_mnist({str(tmp_path)!r}, 10, 5)", _replace_with_fifo(p)
    if kind == "mnist_labels_gz":
        p = _mnist_folder(tmp_path, gz=True)["t10k-labels-idx1-ubyte"]
        return f"DS.load_mnist({str(tmp_path)!r}, 10, 5)", _replace_with_fifo(p)
    if kind == "idx_direct":
        return f"DS.read_idx_labels({str(tmp_path / 'labels')!r})", _replace_with_fifo(tmp_path / "labels")
    if kind == "indian_pines":
        p = _pines_folder(tmp_path)["cube"]
        return f"DS.load_indian_pines({str(tmp_path)!r}, 20, 10)", _replace_with_fifo(p)
    p = _replace_with_fifo(tmp_path / "params.npz")
    calls = {"load_parameters": f"M.ResNet(2, 3, width=4, layers=3).load_parameters({str(p)!r})",
             "load_model": f"M.load_model({str(p)!r})",
             "resnet_load": f"M.ResNet.load({str(p)!r})",
             "convresnet_load": f"M.ConvResNet.load({str(p)!r})",
             "read_params": f"M.read_params({str(p)!r})"}
    return calls[kind], p


FIFO_KINDS = ["train_features", "train_labels", "val_features", "val_labels", "data_config_files",
              "mnist_images", "mnist_labels_gz", "idx_direct", "indian_pines", "load_parameters",
              "load_model", "resnet_load", "convresnet_load", "read_params"]


@pytest.mark.parametrize("kind", FIFO_KINDS)
def test_fifo_is_refused_without_blocking(tmp_path, kind):
    call, fifo = _fifo_case(tmp_path, kind)
    typ, msg = run_isolated(call)
    assert typ == "ValueError", (typ, msg)
    assert f"{fifo.name}" in msg and "is a FIFO, not a regular file" in msg, msg


def test_symlinks_are_followed(tmp_path):
    """A symlink to a regular file is read; one to a FIFO is refused under the link's name."""
    p = _text_files(tmp_path)
    link = tmp_path / "link_x.dat"
    link.symlink_to(p["train_features"])
    np.testing.assert_array_equal(D.read_features(link), D.read_features(p["train_features"]))
    params = _params_file(tmp_path / "real.npz")
    plink = tmp_path / "plink.npz"
    plink.symlink_to(params)
    assert load_model(plink).size == ResNet(2, 3, width=4, layers=3).size
    fifo_link = tmp_path / "fifo_link.dat"
    fifo_link.symlink_to(_replace_with_fifo(tmp_path / "fifo"))
    typ, msg = run_isolated(f"D.read_features({str(fifo_link)!r})")
    assert typ == "ValueError" and "fifo_link.dat" in msg and "is a FIFO" in msg, (typ, msg)


# ---------------------------------------------------------------------------
# Character devices: refused before a single byte is read
# ---------------------------------------------------------------------------

def _device_case(tmp_path: Path, kind: str, device: str) -> tuple[str, str]:
    """(call, the name the message must give) with ``device`` as one input."""
    if kind == "features":
        return f"D.read_features({device!r})", device
    if kind == "labels_in_load_files":
        p = _text_files(tmp_path)
        return (f"D.load_files({str(p['train_features'])!r}, {device!r}, "
                f"{str(p['val_features'])!r}, {str(p['val_labels'])!r})"), device
    if kind == "idx":
        return f"DS.read_idx_images({device!r})", device
    if kind == "idx_gz_link":
        link = tmp_path / "x-idx3-ubyte.gz"
        link.symlink_to(device)
        return f"DS.read_idx_images({str(link)!r})", str(link)
    if kind == "mnist_link":
        p = _mnist_folder(tmp_path)["train-labels-idx1-ubyte"]
        p.unlink()
        p.symlink_to(device)
        return f"DS.load_mnist({str(tmp_path)!r}, 10, 5)", str(p)
    if kind == "indian_pines_link":
        p = _pines_folder(tmp_path)["gt"]
        p.unlink()
        p.symlink_to(device)
        return f"DS.load_indian_pines({str(tmp_path)!r}, 20, 10)", str(p)
    if kind == "load_parameters":
        return f"M.ResNet(2, 3, width=4, layers=3).load_parameters({device!r})", device
    return f"M.load_model({device!r})", device


DEVICE_CASES = ([(kind, "/dev/zero") for kind in ("features", "labels_in_load_files", "idx", "idx_gz_link",
                                                 "mnist_link", "indian_pines_link", "load_parameters",
                                                 "load_model")]
                + [(kind, dev) for dev in ("/dev/urandom", "/dev/null") for kind in ("features", "load_model")])


@pytest.mark.parametrize("kind,device", DEVICE_CASES)
def test_character_device_is_refused_quickly(tmp_path, kind, device):
    if not os.path.exists(device):
        pytest.skip(f"{device} does not exist here")
    call, name = _device_case(tmp_path, kind, device)
    typ, msg = run_isolated(call)
    assert typ == "ValueError", (typ, msg)
    assert name in msg and "is a character device, not a regular file" in msg, msg


# ---------------------------------------------------------------------------
# Folders and sockets
# ---------------------------------------------------------------------------

def test_folder_is_refused_as_every_input(tmp_path):
    p = _text_files(tmp_path)
    d = tmp_path / "a_folder"
    d.mkdir()
    loads = {
        "features": lambda: D.read_features(d),
        "load_files": lambda: D.load_files(p["train_features"], d, p["val_features"], p["val_labels"]),
        "idx": lambda: DS.read_idx_labels(d),
        "load_parameters": lambda: ResNet(2, 3, width=4, layers=3).load_parameters(d),
        "load_model": lambda: load_model(d),
        "convresnet_load": lambda: ConvResNet.load(d),
    }
    for what, load in loads.items():
        with pytest.raises(ValueError) as info:
            load()
        msg = str(info.value)
        assert "a_folder" in msg and "is a folder, not a regular file" in msg, (what, msg)
    # inside a data folder, a folder with a loader's file name is named as such
    mn = tmp_path / "mnist"
    img = _mnist_folder(mn)["train-images-idx3-ubyte"]
    img.unlink()
    img.mkdir()
    with pytest.raises(ValueError, match="train-images-idx3-ubyte' is a folder, not a regular file"):
        DS.load_mnist(mn, 10, 5)
    pines = _pines_folder(tmp_path / "pines")
    pines["gt"].unlink()
    pines["gt"].mkdir()
    with pytest.raises(ValueError, match="Indian_pines_gt.mat' is a folder, not a regular file"):
        DS.load_indian_pines(tmp_path / "pines", 20, 10)


def test_socket_is_refused(tmp_path):
    path = tmp_path / "s.dat"
    if len(str(path)) > 100:
        pytest.skip("temporary path too long for a Unix socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        with pytest.raises(ValueError, match="s.dat' is a socket, not a regular file"):
            D.read_features(path)
        with pytest.raises(ValueError, match="s.dat is a socket, not a regular file"):
            load_model(path)
    finally:
        sock.close()


# ---------------------------------------------------------------------------
# Messages that named no file or misled
# ---------------------------------------------------------------------------

def test_one_column_labels_file_is_named(tmp_path):
    p = _text_files(tmp_path)
    p["train_labels"].write_text("1\n1\n1\n1\n1\n1\n1\n1\n1\n1\n1\n1\n")
    with pytest.raises(ValueError) as info:
        D.load_files(p["train_features"], p["train_labels"], p["val_features"], p["val_labels"])
    msg = str(info.value)
    assert "train_y.dat" in msg and "one column" in msg and "one-hot" in msg, msg
    # class indices instead of one-hot rows: the same sentence, not "row [2] is not one-hot"
    p["val_labels"].write_text("0\n1\n2\n0\n1\n2\n")
    with pytest.raises(ValueError, match="val_y.dat' has one column"):
        D.read_labels(p["val_labels"])


@pytest.mark.parametrize("gz", [False, True])
def test_idx_header_whose_size_overflows(tmp_path, gz):
    """4294967295^3 bytes overflow int64; the message gives the true product and
    nothing is allocated."""
    raw = struct.pack(">I", 2051) + b"\xff\xff\xff\xff" * 3 + bytes(10)
    p = tmp_path / ("big-idx3-ubyte" + (".gz" if gz else ""))
    p.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(ValueError) as info:
        DS.read_idx_images(p, side=None)
    msg = str(info.value)
    assert p.name in msg and str(4294967295 ** 3) in msg and "truncated" in msg, msg
    assert "12884901887" not in msg


def test_gzip_header_promising_more_than_the_file_can_hold(tmp_path):
    """The header of a 100-byte .gz cannot be right about 47 MB: refused before decompressing."""
    raw = struct.pack(">iiii", 2051, 60000, 28, 28) + bytes(100)
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(raw))
    with pytest.raises(ValueError) as info:
        DS.read_idx_images(p)
    msg = str(info.value)
    assert p.name in msg and "47040000" in msg and "compressed file" in msg, msg


@pytest.mark.parametrize("loader", ["load_parameters", "load_model", "resnet_load", "convresnet_load"])
def test_text_file_as_params_is_not_called_pickled(tmp_path, loader):
    p = tmp_path / "params.txt"
    p.write_text("[model]\nwidth = 4\n")
    load = {"load_parameters": lambda: ResNet(2, 3, width=4, layers=3).load_parameters(p),
            "load_model": lambda: load_model(p), "resnet_load": lambda: ResNet.load(p),
            "convresnet_load": lambda: ConvResNet.load(p)}[loader]
    with pytest.raises(ValueError) as info:
        load()
    msg = str(info.value)
    assert "params.txt" in msg and "not a .npz" in msg and "text file" in msg, msg
    assert "pickle" not in msg


def test_npy_file_as_params_is_named(tmp_path):
    p = tmp_path / "theta.npy"
    np.save(p, np.zeros(5))
    with pytest.raises(ValueError, match="theta.npy is a single .npy array, not a .npz"):
        load_model(p)
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.npz is empty"):
        load_model(empty)


# ---------------------------------------------------------------------------
# Bounded reads
# ---------------------------------------------------------------------------

def test_gzip_bomb_is_refused_without_decompressing_it(tmp_path):
    """A .gz whose header announces 10 labels but that inflates to 4 GiB: at most a little
    more than the announced size is decompressed."""
    head = gzip.compress(_idx_bytes(np.arange(10) % 10, 2049))
    zeros = gzip.compress(bytes(64 << 20), compresslevel=9)
    p = tmp_path / "bomb-idx1-ubyte.gz"
    with open(p, "wb") as fh:
        fh.write(head)
        for _ in range(64):
            fh.write(zeros)
    typ, msg = run_isolated(f"DS.read_idx_labels({str(p)!r})", timeout=20)
    assert typ == "ValueError", (typ, msg)
    assert p.name in msg and "bytes after" in msg, msg


def _npz_with_header(path: Path, name: str, shape: tuple[int, ...], base: Path) -> Path:
    """A copy of the parameter file ``base`` whose member ``name`` declares ``shape`` but
    holds no data."""
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f8", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(base) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = head.getvalue() if info.filename == f"{name}.npy" else src.read(info)
            dst.writestr(info.filename, data)
    return path


def test_npz_declared_shapes_are_checked_before_loading(tmp_path):
    base = _params_file(tmp_path / "good.npz")
    huge = _npz_with_header(tmp_path / "huge.npz", "weights", (1 << 40,), base)
    # against the model's layout: the declared shape is refused, nothing is allocated
    with pytest.raises(ValueError, match=r"huge.npz: weights has shape \(1099511627776,\), "
                                         r"the configuration needs \(3, 4, 4\)"):
        ResNet(2, 3, width=4, layers=3).load_parameters(huge)
    # without a model: the declared size must be what the member holds
    with pytest.raises(ValueError, match=r"huge.npz: weights declares 1099511627776 values .* holds 0 bytes"):
        load_model(huge)


def test_npz_whose_zip_sizes_exceed_the_file(tmp_path):
    """A 2 KB file whose zip directory and .npy header agree on a 2 GiB member: refused from the
    file's size, before numpy allocates the array."""
    path = _params_file(tmp_path / "big.npz")
    count = ((1 << 31) - 128) // 8
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f8", "fortran_order": False, "shape": (count,)})
    assert len(head.getvalue()) == 128
    with zipfile.ZipFile(path) as src:
        members = {info.filename: src.read(info) for info in src.infolist()}
    members["weights.npy"] = head.getvalue() + bytes(64)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as dst:
        for name, data in members.items():
            dst.writestr(name, data)
    raw = bytearray(buf.getvalue())
    at = raw.find(b"PK\x01\x02")              # central directory entries
    while at >= 0:
        length = struct.unpack_from("<H", raw, at + 28)[0]
        if raw[at + 46:at + 46 + length] == b"weights.npy":
            struct.pack_into("<II", raw, at + 20, 1 << 31, 1 << 31)   # compressed and full size
        at = raw.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(raw))
    typ, msg = run_isolated(f"M.load_model({str(path)!r})")
    assert typ == "ValueError", (typ, msg)
    assert "big.npz is truncated: weights claims 2147483648 bytes" in msg, msg


def test_text_tables_are_bounded(tmp_path, monkeypatch):
    p = _text_files(tmp_path)
    size = p["train_features"].stat().st_size
    monkeypatch.setattr(D, "MAX_TEXT_BYTES", size - 1)
    with pytest.raises(ValueError, match=rf"train_x.dat' is {size} bytes, more than the {size - 1}"):
        D.read_features(p["train_features"])
    monkeypatch.undo()
    wide = tmp_path / "wide.dat"
    wide.write_text("1 0\n" + "0 " * 40 + "\n")
    monkeypatch.setattr(D, "MAX_LINE_BYTES", 64)
    with pytest.raises(ValueError, match=r"wide.dat' line 2 is longer than 64 bytes"):
        D.read_features(wide)


# ---------------------------------------------------------------------------
# What tests/python/test_fuzz_loaders.py found (each failed before its fix)
# ---------------------------------------------------------------------------

def test_mat_file_with_an_unknown_data_type_is_refused_not_a_crash(tmp_path):
    """scipy's MAT v5 reader indexes a table with a data element's type code unchecked: type 8
    (a reserved code) in the data of a variable crashed the interpreter (SIGSEGV)."""
    sio = pytest.importorskip("scipy.io", reason="scipy is not installed")
    folder = _pines_folder(tmp_path)
    buf = io.BytesIO()
    sio.savemat(buf, {"indian_pines_corrected": np.random.default_rng(0).normal(size=(8, 6, 4))})
    raw = bytearray(buf.getvalue())
    name_at = raw.index(b"indian_pines_corrected")
    data_tag = name_at + 24                       # the 22-byte name padded to 8 bytes
    assert struct.unpack_from("<I", raw, data_tag)[0] == 9      # miDOUBLE
    struct.pack_into("<I", raw, data_tag, 8)
    folder["cube"].write_bytes(bytes(raw))
    typ, msg = run_isolated(f"DS.load_indian_pines({str(tmp_path)!r}, 20, 10)")
    assert typ == "ValueError", (typ, msg)
    assert "Indian_pines_corrected.mat" in msg and "unknown type 8" in msg, msg


def test_indian_pines_values_too_large_to_normalise(tmp_path):
    """Finite values near 1e308 made the per-band statistics overflow: the loader returned
    features full of inf and nan, or a band of zeros (divided by an infinite deviation)."""
    sio = pytest.importorskip("scipy.io", reason="scipy is not installed")
    folder = _pines_folder(tmp_path)
    cube = np.random.default_rng(0).normal(size=(8, 6, 4))
    cube[:, :, 1] = 1.5e308 * np.where(np.arange(6) % 2, 1.0, -1.0)
    sio.savemat(folder["cube"], {"indian_pines_corrected": cube})
    with pytest.raises(ValueError, match="Indian_pines_corrected.mat' has values too large to normalise"):
        DS.load_indian_pines(tmp_path, 20, 10)


def _params_with_config(tmp_path: Path, config: Any, name: str = "p.npz") -> Path:
    path = tmp_path / name
    ResNet(2, 3, width=4, layers=3).save(path, config=config)
    return path


@pytest.mark.parametrize("config,fragment", [
    ({"model": {"activation": "bogus"}}, "describes a model that cannot be built"),
    ({"model": {"T": None}}, "model.T in its config is None, not a number"),
    ({"model": {"T": "x"}}, "model.T in its config is 'x', not a number"),
    ({"model": {"activation": 3}}, "model.activation in its config is 3, not a string"),
    ({"model": [1, 2]}, "'model' in its config is not a JSON object"),
])
def test_params_config_that_cannot_describe_a_model_names_the_file(tmp_path, config, fragment):
    """A config that builds no model was a core error naming no file, or a TypeError."""
    path = _params_with_config(tmp_path, config)
    for load in (load_model, ResNet.load):
        with pytest.raises(ValueError) as info:
            load(path)
        msg = str(info.value)
        assert "p.npz" in msg and fragment in msg, msg


def test_params_config_outside_unicode_is_refused(tmp_path):
    """A config whose UCS-4 code points lie outside Unicode reached the core as text that
    is not UTF-8 (UnicodeDecodeError naming no file) or made json raise SystemError."""
    good = _params_file(tmp_path / "good.npz")
    text = json.dumps({"model": ResNet(2, 3, width=4, layers=3).spec()})
    codes = np.array(text).reshape(1).view(np.uint32).copy()
    codes[text.index("smooth") + 2] = 0xFB000065
    bad = io.BytesIO()
    np.lib.format.write_array(bad, codes.view(np.array(text).dtype).reshape(()))
    path = tmp_path / "odd.npz"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, bad.getvalue() if info.filename == "config.npy" else src.read(info))
    with pytest.raises(ValueError, match="odd.npz: 'config' holds characters outside Unicode"):
        load_model(path)
