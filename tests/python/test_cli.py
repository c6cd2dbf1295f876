"""The command line: train writes a complete run folder, evaluate and gradcheck
print JSON, bad input exits 2 with one clear line and writes nothing."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from layerparallel.cli import main

ROOT = Path(__file__).resolve().parents[2]

SMALL = """
[data]
name = "peaks"
seed = 1
train_size = 500
val_size = 100

[model]
width = 8
layers = 8
T = 2.0

[optimizer]
name = "lbfgs"
max_iter = 40

[train]
seed = 3
"""


@pytest.fixture
def small_config(tmp_path):
    p = tmp_path / "small.toml"
    p.write_text(SMALL)
    return p


def test_train_writes_run_folder(small_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(small_config), "--out", str(out), "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    summary = json.loads((out / "summary.json").read_text())
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "iterations", "seconds",
                "seconds_per_iteration", "mode", "layers", "width", "processes"):
        assert key in summary, key
    assert summary["mode"] == "serial" and summary["layers"] == 8 and summary["width"] == 8
    assert summary["processes"] == 1
    assert printed["val_accuracy"] == summary["val_accuracy"]
    with open(out / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["iteration", "objective", "train_loss", "train_accuracy", "val_loss",
                             "val_accuracy", "grad_norm", "step", "seconds"]
    assert int(rows[-1]["iteration"]) == summary["iterations"]
    # Training improved the fit: objective down, accuracy up.
    assert float(rows[-1]["objective"]) < 0.8 * float(rows[0]["objective"])
    assert float(rows[-1]["train_accuracy"]) > float(rows[0]["train_accuracy"]) + 0.2
    with np.load(out / "params.npz") as f:
        assert set(f.files) == {"opening_weight", "opening_bias", "weights", "biases", "classifier_weight",
                                "classifier_bias", "config"}
        assert json.loads(str(f["config"]))["model"]["layers"] == 8
    for png in ("training.png", "decision_regions.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # evaluate on the written parameters reproduces the summary's metrics.
    assert main(["evaluate", str(small_config), "--params", str(out / "params.npz")]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["val_accuracy"] == pytest.approx(summary["val_accuracy"])
    assert ev["train_loss"] == pytest.approx(summary["train_loss"], rel=1e-12)


def test_progress_lines_when_not_a_terminal(small_config, tmp_path, capsys):
    assert main(["train", str(small_config), "--out", str(tmp_path / "r"), "--set", "optimizer.max_iter=3"]) == 0
    err = capsys.readouterr().err
    assert len([l for l in err.splitlines() if l.startswith("iter")]) == 4  # iterations 0..3


def test_set_overrides_and_results_are_seeded(small_config, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert main(["train", str(small_config), "--out", str(out), "--quiet", "--set", "optimizer.max_iter=5",
                     "--set", "model.layers=4"]) == 0
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sa["layers"] == 4 and sa["iterations"] == 5
    assert sa["val_loss"] == sb["val_loss"]


def test_gradcheck_passes(small_config, capsys):
    assert main(["gradcheck", str(small_config), "--samples", "25", "--examples", "50"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["passed"] and res["max_relative_error"] < 1e-6 and res["checked"] == 25


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.widht=8"], "model.widht"),
        (["model.width=2"], "width must be at least the number of classes"),
        (["model.layers=0"], "model.layers"),
        (["model.T=-1"], "model.T"),
        (["model.activation=\"sigmoid\""], "model.activation"),
        (["model.opening=\"conv\""], "model.opening"),
        (["optimizer.max_iter=\"ten\""], "optimizer.max_iter"),
        (["data.name=\"files\"", "data.train_features=\"nope.dat\"", "data.train_labels=\"nope.dat\"",
          "data.val_features=\"nope.dat\"", "data.val_labels=\"nope.dat\""], "nope.dat"),
        # Limits (issue 16): 100000 threads used to segfault, 2**32 + 1 layers to end in a cast error.
        (["train.threads=100000"], "number of threads"),
        (["train.mode=\"simultaneous\"", "mgrit.threads=100000"], "MgritOptions.threads"),
        ([f"model.layers={2**32 + 1}"], "model.layers must be at most 2147483647"),
        ([f"model.width={2**32 + 5}"], "model.width must be at most 2147483647"),
        ([f"mgrit.cfactor={2**32 + 2}"], "mgrit.cfactor must be at most 2147483647"),
        # Memory (issue 16): about 60 GB used to end in a std::bad_alloc traceback.
        (["model.layers=160000", "data.train_size=5000"], "GB per process (states 51.2 GB"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(small_config, tmp_path, capsys, overrides, message):
    out = tmp_path / "run"
    args = ["train", str(small_config), "--out", str(out), "--quiet"]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1
    assert not out.exists()


def test_seeds_stay_python_integers(small_config, tmp_path):
    out = tmp_path / "run"
    assert main(["train", str(small_config), "--out", str(out), "--quiet", "--set", f"train.seed={2**40}"]) == 0
    assert (out / "params.npz").exists()
    assert np.isfinite(np.load(out / "params.npz")["weights"]).all()


def test_out_under_a_file_is_refused_before_training(small_config, tmp_path, capsys):
    """Issue 16: an --out whose parent is a file used to fail only when the results were
    written, after the whole run, losing the trained result."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = blocker / "run"
    assert main(["train", str(small_config), "--out", str(out), "--set", "optimizer.max_iter=100000"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == f"layerparallel: error: --out {out} cannot be created: {blocker} is a file, not a folder"
    assert captured.out == ""  # refused before any training output


def test_malformed_toml_and_missing_file(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nwidth = 8\n")
    assert main(["train", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "bad.toml" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml" in capsys.readouterr().err


def test_evaluate_with_mismatched_params(small_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(small_config), "--out", str(out), "--quiet", "--set", "optimizer.max_iter=2"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(small_config), "--set", "model.layers=9", "--params", str(out / "params.npz")]) == 2
    assert "weights has shape (8, 8, 8)" in capsys.readouterr().err


def test_module_entry_point_and_console_script(small_config, tmp_path):
    r = subprocess.run([sys.executable, "-m", "layerparallel", "train", str(small_config), "--out",
                        str(tmp_path / "m"), "--quiet", "--set", "optimizer.max_iter=2"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "layerparallel", "train", str(small_config), "--set", "model.layers=-3"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "model.layers" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("optimizer", ["gd", "adam", "sgd", "lbfgs"])
def test_every_optimizer_trains_on_minibatches(small_config, tmp_path, optimizer):
    out = tmp_path / optimizer
    assert main(["train", str(small_config), "--out", str(out), "--quiet", "--set", f'optimizer.name="{optimizer}"',
                 "--set", "optimizer.batch_size=100", "--set", "optimizer.max_iter=30",
                 "--set", "optimizer.learning_rate=0.05", "--set", "train.full_eval=true"]) == 0
    with open(out / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    # Rows once per epoch (5 batches), the objective of the whole set (full_eval).
    assert [int(r["iteration"]) for r in rows] == [0, 5, 10, 15, 20, 25, 30]
    assert float(rows[-1]["objective"]) < float(rows[0]["objective"])


def test_dry_run_prints_the_plan_and_writes_nothing(small_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(small_config), "--out", str(out), "--dry-run", "--set", 'train.mode="simultaneous"']) == 0
    text = capsys.readouterr().out
    for words in ("network    dense, 8 layers, width 8", "training   simultaneous mode on cpu", "processes  1 = 1",
                  "threads", "memory     about", "available"):
        assert words in text, words
    assert not out.exists()
    # A run that cannot fit: the plan, then the one-line refusal and exit 2.
    assert main(["train", str(small_config), "--dry-run", "--set", "model.layers=200000",
                 "--set", "model.width=64"]) == 2
    captured = capsys.readouterr()
    assert "does not fit" in captured.out
    assert captured.err.startswith("layerparallel: error: the run needs about") and len(captured.err.splitlines()) == 1
    # Everything else is checked too.
    assert main(["train", str(small_config), "--dry-run", "--set", "model.width=2"]) == 2
    assert "width must be at least the number of classes" in capsys.readouterr().err
