"""Checkpoint and resume (issue 14): 40 steps straight equal 20 + resume + 20, bit for bit,
in the serial and simultaneous modes, with L-BFGS on the full batch and Adam on
mini-batches; SIGINT writes a checkpoint the run resumes from; a run killed while
writing a checkpoint leaves the previous one loadable."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import layerparallel as lp
from layerparallel.checkpoint import Checkpointer, read_manifest
from layerparallel.cli import main
from layerparallel.config import config_from_dict
from layerparallel.data import load_dataset
from layerparallel.train import TrainingInterrupted, build_model

SMALL = {
    "data": {"name": "peaks", "seed": 2, "train_size": 400, "val_size": 50},
    "model": {"width": 6, "layers": 16, "init": "normal", "init_opening": 1.0, "init_hidden": 0.1,
              "init_classifier": 0.1},
    "optimizer": {"max_iter": 40},
    "mgrit": {"cfactor": 4},
    "train": {"seed": 1},
}

SETUPS = {
    "serial-lbfgs": ({"train": {"mode": "serial"}}, {}),
    "simultaneous-lbfgs": ({"train": {"mode": "simultaneous"}}, {}),
    "adaptive-lbfgs": ({"train": {"mode": "simultaneous"}, "mgrit": {"adaptive": True}}, {}),
    "serial-adam-batches": ({"train": {"mode": "serial"}}, {"name": "adam", "batch_size": 64, "learning_rate": 0.01}),
    "simultaneous-adam-batches": ({"train": {"mode": "simultaneous"}},
                                  {"name": "adam", "batch_size": 64, "learning_rate": 0.01}),
}


def config(setup, **train):
    d = json.loads(json.dumps(SMALL))
    extra, opt = SETUPS[setup]
    d["train"].update(extra["train"], **train)
    d["mgrit"].update(extra.get("mgrit", {}))
    d["optimizer"].update(opt)
    return config_from_dict(d)


def run(cfg, folder, *, max_iter=None, resume=False, every=0):
    data = load_dataset(cfg.data, cfg.base_dir)
    if max_iter is not None:
        cfg = cfg.with_overrides([f"optimizer.max_iter={max_iter}"])
    model = build_model(cfg, data)
    ck = Checkpointer(folder, every)
    result = lp.train(model, data, cfg, checkpoint=ck, resume=resume)
    return model, result


def same_history(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        for k in ra:
            if k in ("seconds", "examples_per_second"):
                continue
            va, vb = ra[k], rb[k]
            assert va == vb or (np.isnan(va) and np.isnan(vb)), (ra["iteration"], k, va, vb)


@pytest.mark.parametrize("setup", list(SETUPS))
def test_resume_continues_bit_for_bit(setup, tmp_path):
    cfg = config(setup)
    straight, r40 = run(cfg, tmp_path / "a")
    # 20 steps with a checkpoint every 10, then a fresh process state resumes to 40.
    _, r20 = run(cfg, tmp_path / "b", max_iter=20, every=10)
    assert read_manifest(tmp_path / "b")["iteration"] == 20
    assert [p.name for p in sorted((tmp_path / "b").iterdir())] == ["checkpoint-00000020", "checkpoint.json"]
    resumed, r = run(cfg, tmp_path / "b", resume=True)
    assert np.array_equal(straight.theta, resumed.theta)
    same_history(r40.history, r.history)
    assert r.iterations == r40.iterations and r.gradient_evaluations == r40.gradient_evaluations
    if r40.mgrit:
        for k in ("forward_cycles", "adjoint_cycles", "evaluations", "safeguard_switches"):
            assert r.mgrit[k] == r40.mgrit[k], k


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    cfg = config("serial-lbfgs")
    run(cfg, tmp_path / "b", max_iter=5, every=5)
    other = cfg.with_overrides(["model.layers=8"])
    with pytest.raises(ValueError, match="resume with the configuration and processes that wrote it"):
        run(other, tmp_path / "b", resume=True)
    with pytest.raises(ValueError, match="holds no checkpoint"):
        run(cfg, tmp_path / "empty", resume=True)


def test_the_signal_handlers_are_restored(tmp_path):
    before = signal.getsignal(signal.SIGINT)
    run(config("serial-lbfgs"), tmp_path / "x", max_iter=2)
    assert signal.getsignal(signal.SIGINT) is before


TOML = """
[data]
name = "peaks"
seed = 2
train_size = 400
val_size = 50
[model]
width = 6
layers = 16
init = "normal"
init_opening = 1.0
init_hidden = 0.1
init_classifier = 0.1
[optimizer]
max_iter = 40
[train]
seed = 1
mode = "simultaneous"
"""


def cli(*args, **kw):
    env = dict(os.environ) | kw.pop("env", {})
    return subprocess.run([sys.executable, "-m", "layerparallel", *args], capture_output=True, text=True,
                          timeout=180, env=env, **kw)


def test_sigint_writes_a_checkpoint_that_resumes(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text(TOML)
    assert main(["train", str(cfg), "--out", str(tmp_path / "straight"), "--quiet"]) == 0
    straight = json.loads((tmp_path / "straight" / "summary.json").read_text())

    # A run that is sent SIGINT in the middle: the loop finishes its step, writes a
    # checkpoint and exits with one line and status 130.
    out = tmp_path / "stopped"
    script = f"""
import os, signal, sys
import layerparallel.solver as s
from layerparallel.cli import main
calls = [0]
orig = s.MgritSolver.__call__
def call(self, *a, **k):
    calls[0] += 1
    if calls[0] == 12:
        os.kill(os.getpid(), signal.SIGINT)
    return orig(self, *a, **k)
s.MgritSolver.__call__ = call
sys.exit(main(["train", {str(cfg)!r}, "--out", {str(out)!r}, "--quiet"]))
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert r.returncode == 130, r.stderr
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and line.startswith("layerparallel: interrupted after iteration ")
    assert f"layerparallel train --resume {out}" in line
    stopped_at = read_manifest(out)["iteration"]
    assert 0 < stopped_at < 40 and not (out / "summary.json").exists()

    # An earlier run's folder cannot be trained into by mistake; --resume continues it.
    assert main(["train", str(cfg), "--out", str(out), "--quiet"]) == 2
    assert f"continue it with layerparallel train --resume {out}" in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    resumed = json.loads((out / "summary.json").read_text())
    for k in ("train_loss", "val_loss", "train_accuracy", "iterations", "gradient_evaluations"):
        assert resumed[k] == straight[k], k
    assert (out / "history.csv").read_text().splitlines()[1:] and not (out / "checkpoint.json").exists()
    h1 = [l.split(",")[:8] for l in (tmp_path / "straight" / "history.csv").read_text().splitlines()]
    h2 = [l.split(",")[:8] for l in (out / "history.csv").read_text().splitlines()]
    assert h1 == h2


def test_resume_refuses_other_arguments(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--set", "model.layers=3"]) == 2
    assert "give no CONFIG, --set, --out or --overwrite" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err
    assert main(["train"]) == 2
    assert "train needs a CONFIG file" in capsys.readouterr().err


def test_sigkill_while_writing_a_checkpoint_leaves_the_previous_one(tmp_path):
    folder = tmp_path / "ck"
    cfg = config("serial-lbfgs")
    run(cfg, folder, max_iter=10, every=10)
    assert read_manifest(folder)["iteration"] == 10
    # A process killed in the middle of writing the next checkpoint's share.
    script = f"""
import os, signal
import numpy as np
from layerparallel.checkpoint import Checkpointer
real = np.savez
def dying(fh, **arrays):
    fh.write(b"PK partial")
    fh.flush()
    os.kill(os.getpid(), signal.SIGKILL)
np.savez = dying
Checkpointer({str(folder)!r}).save(20, {{"loop": {{"x": np.zeros(3)}}}})
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == -signal.SIGKILL
    assert read_manifest(folder)["iteration"] == 10
    _, res = run(cfg, folder, resume=True)
    assert res.iterations == 40
