"""Seeded fuzzing of every file loader: valid small files of each format are
truncated, have bytes and bits flipped, runs inserted or deleted, header fields
overwritten with extreme values and (for text) tokens replaced. Every load must
either succeed with arrays of the right kind (right number of dimensions,
finite values) or raise ValueError with a message naming the file; any other
exception, a crash, a hang or runaway memory is a loader bug.

Each format runs in a child interpreter with a 2 GiB address-space limit; each
load has a time limit (faulthandler ends the child and prints where it hung),
and the child names each case on stderr before loading it, so a crash or a
hang names the mutation (they are seeded: the same case comes back on a rerun)."""
from __future__ import annotations

import faulthandler
import gzip
import io
import json
import os
import resource
import subprocess
import sys
import traceback
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import layerparallel
from layerparallel import data as D
from layerparallel import datasets as DS
from layerparallel.model import ConvResNet, Network, ResNet, load_model

PYTHONPATH = str(Path(layerparallel.__file__).parent.parent)
MUTATIONS = 200          # per format
SEED = 20240616
CASE_LIMIT_S = 10        # one load; they take milliseconds
LIMIT_BYTES = 2 << 30    # address space of a child

FORMATS = ["features", "labels", "idx_images", "idx_images_gz", "idx_labels_mnist", "idx_labels_mnist_gz",
           "params_dense", "params_dense_members", "params_expand_compressed", "params_conv",
           "params_conv_members", "mat_cube", "mat_gt_compressed", "mat_gt_v4"]

# ---------------------------------------------------------------------------
# Valid files and what a successful load must return
# ---------------------------------------------------------------------------


def _idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    return (magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
            + arr.tobytes())


def _finite_dataset(ds: Any, ndim: int) -> None:
    for x, y in ((ds.train_x, ds.train_y), (ds.val_x, ds.val_y)):
        assert x.ndim == ndim and x.dtype == np.float64 and np.isfinite(x).all(), (x.shape, x.dtype)
        assert y.ndim == 1 and y.dtype == np.int64 and len(y) == len(x)
        assert ((y >= 0) & (y < ds.n_classes)).all()


def _finite_model(m: Network) -> None:
    assert isinstance(m, Network) and m.theta.shape == (m.size,) and np.isfinite(m.theta).all()


class Target:
    """One format: the file the mutations are applied to, how to write mutated
    content into it, and the load that must succeed or raise ValueError."""

    def __init__(self, path: Path, content: bytes, load: Callable[[], None],
                 write: Callable[[bytes], bytes] = lambda b: b, text: bool = False):
        self.path, self.content, self.load, self.write, self.text = path, content, load, write, text


def _text_target(work: Path, which: str) -> Target:
    rng = np.random.default_rng(0)
    files = {}
    for split, n in (("train", 9), ("val", 6)):
        files[f"{split}_features"] = work / f"{split}_x.dat"
        files[f"{split}_labels"] = work / f"{split}_y.dat"
        np.savetxt(files[f"{split}_features"], rng.uniform(-1, 1, size=(n, 2)))
        np.savetxt(files[f"{split}_labels"], np.eye(3)[np.arange(n) % 3], fmt="%g")
    path = files[f"train_{which}"]

    def load() -> None:
        ds = D.load_files(files["train_features"], files["train_labels"], files["val_features"],
                          files["val_labels"])
        _finite_dataset(ds, 2)
        assert ds.train_x.shape[1] == 2 and ds.n_classes == 3
    return Target(path, path.read_bytes(), load, text=True)


def _idx_images_target(work: Path, gz: bool) -> Target:
    x = np.random.default_rng(1).integers(0, 256, size=(6, 4, 4))
    raw = _idx_bytes(x, 2051)
    path = work / ("x-idx3-ubyte" + (".gz" if gz else ""))

    def load() -> None:
        got = DS.read_idx_images(path, side=None)
        assert got.ndim == 3 and got.dtype == np.uint8 and got.shape[0] >= 1
    return Target(path, raw, load, write=gzip.compress if gz else (lambda b: b))


def _mnist_labels_target(work: Path, gz: bool) -> Target:
    rng = np.random.default_rng(2)
    y = np.arange(30) % 10
    files = {"train-images-idx3-ubyte": _idx_bytes(rng.integers(0, 256, size=(30, 28, 28)), 2051),
             "train-labels-idx1-ubyte": _idx_bytes(y, 2049)}
    for name, raw in files.items():
        (work / (name + (".gz" if gz else ""))).write_bytes(gzip.compress(raw) if gz else raw)
    path = work / ("train-labels-idx1-ubyte" + (".gz" if gz else ""))

    def load() -> None:
        ds = DS.load_mnist(work, 10, 10, seed=0, val_from="train")
        _finite_dataset(ds, 4)
        assert ds.train_x.shape[1:] == (1, 28, 28)
    return Target(path, files["train-labels-idx1-ubyte"], load,
                  write=gzip.compress if gz else (lambda b: b))


def _rezip(members: dict[str, bytes], compression: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _params_target(work: Path, kind: str) -> Target:
    path = work / "params.npz"
    if kind.startswith("params_conv"):
        model: Network = ConvResNet(height=4, width=3, n_classes=3, channels=2, layers=2, seed=0,
                                    bias="channel" if kind == "params_conv" else "pixel")
    else:
        model = ResNet(3, 3, width=4, layers=3, seed=0,
                       opening="expand" if "expand" in kind else "dense")
    model.save(path)
    compression = zipfile.ZIP_DEFLATED if kind.endswith("compressed") else zipfile.ZIP_STORED
    with zipfile.ZipFile(path) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    content = _rezip(members, compression)
    write: Callable[[bytes], bytes] = lambda b: b
    if kind.endswith("_members"):
        # mutate the .npy members (then zip them again, with valid CRCs): the bytes are the
        # members one after another; their lengths stay as they were for the split
        names = list(members)
        sizes = [len(members[n]) for n in names]
        content = b"".join(members[n] for n in names)

        def write(b: bytes) -> bytes:
            parts, start = {}, 0
            for i, (n, size) in enumerate(zip(names, sizes)):
                parts[n] = b[start:] if i == len(names) - 1 else b[start:start + size]
                start += size
            return _rezip(parts, zipfile.ZIP_STORED)
    template = type(model)(**model.spec())

    def load() -> None:
        for m in (load_model(path), type(model).load(path)):
            _finite_model(m)
        template.load_parameters(path)
        _finite_model(template)
    return Target(path, content, load, write=write)


def _mat_target(work: Path, which: str) -> Target:
    sio = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(3)
    options = {"do_compression": True} if which.endswith("compressed") else {}
    sio.savemat(work / "Indian_pines_corrected.mat", {"indian_pines_corrected": rng.normal(size=(5, 4, 3))},
                **options)
    if which.endswith("v4"):   # MATLAB 4 holds 2-D arrays only: the ground truth
        options = {"format": "4"}
    sio.savemat(work / "Indian_pines_gt.mat",
                {"indian_pines_gt": rng.integers(1, 4, size=(5, 4)).astype(np.uint8)}, **options)
    path = work / ("Indian_pines_corrected.mat" if which.startswith("mat_cube") else "Indian_pines_gt.mat")

    def load() -> None:
        ds = DS.load_indian_pines(work, 8, 4, seed=0)
        _finite_dataset(ds, 2)
    return Target(path, path.read_bytes(), load)


def make_target(fmt: str, work: Path) -> Target:
    if fmt in ("features", "labels"):
        return _text_target(work, fmt)
    if fmt.startswith("idx_images"):
        return _idx_images_target(work, fmt.endswith("_gz"))
    if fmt.startswith("idx_labels_mnist"):
        return _mnist_labels_target(work, fmt.endswith("_gz"))
    if fmt.startswith("params"):
        return _params_target(work, fmt)
    return _mat_target(work, fmt)


# ---------------------------------------------------------------------------
# Mutations
# ---------------------------------------------------------------------------

_TOKENS = ["nan", "inf", "-inf", "1e999", "-0", "2", "0.5", "1_0", "0x10", "", "1 0", "\xff", "\x00",
           "1e-400", "+1", "1.0.0", "٣", "\r", "\n\n", "9" * 400]
_FIELDS = [b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00", b"\x00\x00\x00\x00",
           b"\x00\x00\x00\x01", b"\x00\x01\x00\x00"]


def mutate(content: bytes, rng: np.random.Generator, text: bool) -> tuple[bytes, str]:
    """One seeded mutation of ``content``: (mutated bytes, what was done)."""
    b = bytearray(content)
    n = len(b)
    op = int(rng.integers(0, 7 if text else 6))
    if op == 0:
        cut = int(rng.integers(0, n))
        return bytes(b[:cut]), f"truncate to {cut}"
    if op == 1:
        where = rng.integers(0, n, size=int(rng.integers(1, 9)))
        for i in where:
            b[i] = int(rng.integers(0, 256))
        return bytes(b), f"random bytes at {sorted(int(i) for i in where)}"
    if op == 2:
        where = rng.integers(0, n, size=int(rng.integers(1, 5)))
        for i in where:
            b[i] ^= 1 << int(rng.integers(0, 8))
        return bytes(b), f"bit flips at {sorted(int(i) for i in where)}"
    if op == 3:
        i = int(rng.integers(0, n))
        k = int(rng.integers(1, 17))
        if rng.random() < 0.5:
            del b[i:i + k]
            return bytes(b), f"delete {k} at {i}"
        b[i:i] = rng.integers(0, 256, size=k, dtype=np.uint8).tobytes()
        return bytes(b), f"insert {k} at {i}"
    if op == 4:
        i = int(rng.integers(0, max(1, min(n - 3, 64))))
        field = _FIELDS[int(rng.integers(0, len(_FIELDS)))]
        b[i:i + 4] = field
        return bytes(b), f"field {field.hex()} at {i}"
    if op == 5:
        where = rng.integers(0, n, size=int(rng.integers(1, 5)))
        for i in where:
            b[i] = int(rng.integers(0, 256))
        cut = int(rng.integers(0, n))
        return bytes(b[:cut]), f"random bytes at {sorted(int(i) for i in where)}, truncate to {cut}"
    words = bytes(b).decode("utf-8").split(" ")
    i = int(rng.integers(0, len(words)))
    tok = _TOKENS[int(rng.integers(0, len(_TOKENS)))]
    words[i] = tok
    return " ".join(words).encode("utf-8", "surrogatepass"), f"token {tok[:10]!r} at word {i}"


# ---------------------------------------------------------------------------
# The child: fuzz one format, report as JSON
# ---------------------------------------------------------------------------

def _overwrite(path: Path, data: bytes) -> None:
    """Replace a file's content in place (truncating open()s cost milliseconds on ext4)."""
    with open(path, "r+b") as fh:
        fh.write(data)
        fh.truncate()


def fuzz(fmt: str, work: Path, n: int, seed: int) -> dict[str, Any]:
    """Apply ``n`` mutations to the format's file and load each; returns counts and findings.
    Each case is announced on stderr first, so a crash or a hang names it."""
    target = make_target(fmt, work)
    rng = np.random.default_rng([seed, FORMATS.index(fmt)])
    counts = {"loaded": 0, "ValueError": 0}
    findings = []
    target.path.write_bytes(target.write(target.content))
    for case in range(n):
        content, what = mutate(target.content, rng, target.text)
        print(f"{fmt} case {case}: {what}", file=sys.stderr, flush=True)
        _overwrite(target.path, target.write(content))
        faulthandler.dump_traceback_later(CASE_LIMIT_S, exit=True)   # re-arming cancels the last
        try:
            target.load()
            counts["loaded"] += 1
        except ValueError as exc:
            counts["ValueError"] += 1
            msg = str(exc)
            if not msg or str(work) not in msg:
                findings.append({"case": case, "mutation": what, "type": "ValueError",
                                 "message": f"names no file: {msg}"})
        except BaseException as exc:  # noqa: BLE001 - every other outcome is a finding
            keep = work / f"finding_{case}.bin"
            keep.write_bytes(content)
            findings.append({"case": case, "mutation": what, "type": type(exc).__name__,
                             "message": str(exc)[:300], "kept": str(keep),
                             "where": traceback.format_exc().splitlines()[-4:]})
    faulthandler.cancel_dump_traceback_later()
    return {"format": fmt, "counts": counts, "findings": findings}


def child_main(fmt: str, work: str) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_BYTES, LIMIT_BYTES))
    faulthandler.enable()
    print(json.dumps(fuzz(fmt, Path(work), MUTATIONS, SEED)), flush=True)


@pytest.mark.parametrize("fmt", FORMATS)
def test_fuzz_loader(tmp_path, fmt):
    if fmt.startswith("mat"):
        pytest.importorskip("scipy.io")
    env = dict(os.environ)
    here = str(Path(__file__).parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PYTHONPATH, here, env.get("PYTHONPATH", "")) if p)
    code = f"import test_fuzz_loaders as T; T.child_main({fmt!r}, {str(tmp_path)!r})"
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           env=env, cwd=tmp_path)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        pytest.fail(f"fuzzing {fmt} did not finish in 120 s:\n{err[-2000:]}")
    if r.returncode != 0:
        pytest.fail(f"fuzzing {fmt} crashed or hung (status {r.returncode}); the last case named is "
                    f"the culprit:\n{r.stderr[-3000:]}")
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["counts"]["loaded"] + report["counts"]["ValueError"] == MUTATIONS or report["findings"]
    assert not report["findings"], json.dumps(report["findings"][:5], indent=1)
