"""The run folder as one unit and one line for every error (issue 16): an earlier run is
refused unless overwritten, a failed or interrupted write leaves the folder as it was,
stale temporaries are cleaned up, modes follow the umask, and errors of any type end
in one line with exit status 2 (1 and a report request for a bug of ours)."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from layerparallel import io as lpio
from layerparallel.cli import main

SMALL = """
[data]
name = "peaks"
seed = 1
train_size = 300
val_size = 60

[model]
width = 6
layers = 6

[optimizer]
max_iter = 5

[train]
seed = 3
"""


@pytest.fixture
def cfg(tmp_path):
    p = tmp_path / "small.toml"
    p.write_text(SMALL)
    return p


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def train(cfg, out, *extra):
    return main(["train", str(cfg), "--out", str(out), "--quiet", *extra])


def test_an_earlier_run_is_refused_unless_overwritten(cfg, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(cfg, out, "--set", 'train.mode="simultaneous"') == 0
    assert (out / "mgrit_residuals.png").exists()
    before = snapshot(out)
    capsys.readouterr()
    assert train(cfg, out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already holds files" in err and "--overwrite" in err
    assert snapshot(out) == before
    # Overwriting replaces the whole folder: the serial run leaves no residual plot of
    # the simultaneous one behind.
    assert train(cfg, out, "--overwrite") == 0
    assert not (out / "mgrit_residuals.png").exists()
    assert json.loads((out / "summary.json").read_text())["mode"] == "serial"
    assert no_temporaries(tmp_path) and no_temporaries(out)


def test_an_empty_existing_folder_is_used(cfg, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    assert train(cfg, out) == 0
    assert (out / "summary.json").exists()


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_failed_write_leaves_the_folder_as_it_was(cfg, tmp_path, capsys, monkeypatch, overwrite):
    out = tmp_path / "run"
    if overwrite:
        assert train(cfg, out) == 0
        before = snapshot(out)
    import layerparallel.plots as plots

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args[1]))

    monkeypatch.setattr(plots, "plot_history", full_disk)  # after history.csv and params.npz
    capsys.readouterr()
    assert train(cfg, out, *(["--overwrite"] if overwrite else [])) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("layerparallel: error: No space left on device: ")
    if overwrite:
        assert snapshot(out) == before  # the earlier run, whole: no new history.csv beside the old summary
    else:
        assert not out.exists()
    assert no_temporaries(tmp_path)


def test_an_interrupt_while_writing_leaves_the_folder_as_it_was(cfg, tmp_path):
    out = tmp_path / "run"
    assert train(cfg, out) == 0
    before = snapshot(out)
    script = f"""
import os, signal, sys
import layerparallel.plots as plots
from layerparallel.cli import main
def interrupt(*a, **k):
    os.kill(os.getpid(), signal.SIGINT)
plots.plot_history = interrupt
sys.exit(main(["train", {str(cfg)!r}, "--out", {str(out)!r}, "--quiet", "--overwrite"]))
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 130, r.stderr
    assert r.stderr.strip() == "layerparallel: interrupted"
    assert snapshot(out) == before
    assert no_temporaries(tmp_path)


def test_sigterm_unwinds_like_an_interrupt(cfg, tmp_path):
    out = tmp_path / "run"
    script = f"""
import sys
import layerparallel.train as t
from layerparallel.cli import main
def slow(*a, **k):
    print("training", flush=True)
    import time
    time.sleep(60)
t.train = slow
sys.exit(main(["train", {str(cfg)!r}, "--out", {str(out)!r}, "--quiet"]))
"""
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "training"
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 130 and err.strip() == "layerparallel: interrupted"
    assert not out.exists()


def test_stale_temporaries_of_dead_processes_are_removed(cfg, tmp_path):
    # A process that no longer runs (it was killed) left a half-written file and a
    # staging folder; a live process's temporaries stay.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    tag = lpio._tag().rsplit("-", 1)[0]
    out = tmp_path / "run"
    out.mkdir()
    stale_file = out / f".summary.json.{tag}-{dead}.abc123.tmp"
    stale_file.write_text("{")
    stale_dir = tmp_path / f".run.{tag}-{dead}.xyz.tmp"
    stale_dir.mkdir()
    (stale_dir / "history.csv").write_text("half")
    live = tmp_path / f".run.{tag}-{os.getpid()}.live.tmp"
    live.mkdir()
    other_host = tmp_path / f".run.elsewhere-{dead}.x.tmp"
    other_host.mkdir()
    assert train(cfg, out) == 0  # the folder held only a temporary: not an earlier run
    assert not stale_file.exists() and not stale_dir.exists()
    assert live.exists() and other_host.exists()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_file_modes_follow_the_umask(cfg, tmp_path, umask, mode):
    out = tmp_path / "run"
    old = os.umask(umask)
    try:
        assert train(cfg, out) == 0
    finally:
        os.umask(old)
    for p in out.iterdir():
        assert p.stat().st_mode & 0o777 == mode, p.name
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask


@pytest.mark.parametrize(
    "error, code, start",
    [
        (MemoryError("Unable to allocate 47.7 GiB for an array"), 2,
         "layerparallel: error: out of memory: Unable to allocate 47.7 GiB for an array; reduce"),
        (MemoryError("std::bad_alloc"), 2, "layerparallel: error: out of memory: an allocation failed; reduce"),
        (PermissionError(errno.EACCES, "Permission denied", "/data/x.csv"), 2,
         "layerparallel: error: Permission denied: /data/x.csv"),
        (TypeError("unsupported operand"), 1,
         "layerparallel: error: internal error (TypeError: unsupported operand); rerun with --debug"),
    ],
)
def test_every_error_is_one_line(cfg, tmp_path, capsys, monkeypatch, error, code, start):
    import layerparallel.train as t

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(t, "build_model", fail)
    assert train(cfg, tmp_path / "run") == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(start), err
    assert not (tmp_path / "run").exists()
    # --debug adds the traceback before the same line.
    assert train(cfg, tmp_path / "run", "--debug") == code
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.strip().splitlines()[-1].startswith(start)


def test_staged_folder_alone(tmp_path):
    dest = tmp_path / "d"
    with lpio.staged_folder(dest) as stage:
        (stage / "a").write_text("1")
    assert (dest / "a").read_text() == "1"
    with pytest.raises(ValueError, match="already holds files"):
        with lpio.staged_folder(dest) as stage:
            (stage / "b").write_text("2")
    with lpio.staged_folder(dest, overwrite=True) as stage:
        (stage / "b").write_text("2")
    assert sorted(p.name for p in dest.iterdir()) == ["b"]
    assert no_temporaries(tmp_path)
    t0 = time.monotonic()
    assert lpio.remove_stale_temporaries(tmp_path / "missing") == []
    assert time.monotonic() - t0 < 1
