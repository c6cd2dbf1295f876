"""Tests for layerparallel.memory: the memory estimate of a run, the memory this
process may use, the refusal of a run that cannot fit, and the dry-run plan."""

import json
import re
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from layerparallel import ResNet, _core
from layerparallel.config import load_config
from layerparallel.data import load_dataset
from layerparallel.memory import (MemoryEstimate, available_memory, check_memory, dry_run_plan, estimate_memory,
                                  format_bytes, format_dry_run)
from layerparallel.memory import _hierarchy

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PEAKS = EXAMPLES / "peaks.toml"


def _peaks(*overrides: str):
    return load_config(PEAKS, list(overrides))


def _estimate(*overrides: str, n_train: int = 5000, n_val: int = 200, **kw) -> MemoryEstimate:
    return estimate_memory(_peaks(*overrides), n_train, n_val, 2, 5, **kw)


# ------------------------------------------------------------------ the estimate


@pytest.mark.parametrize("mode", ["serial", "exact", "simultaneous"])
def test_estimate_grows_linearly_in_layers(mode):
    est = {n: _estimate(f"model.layers={n}", f"train.mode={mode}", "mgrit.cfactor=2", "mgrit.min_coarse=2")
           for n in (1024, 2048, 4096)}
    network = {n: e.states + e.adjoints + e.derivatives for n, e in est.items()}
    step1 = network[2048] - network[1024]
    step2 = network[4096] - network[2048]
    assert step1 > 0
    assert step2 == pytest.approx(2 * step1, rel=1e-3)
    assert est[4096].total - est[2048].total == pytest.approx(2 * (est[2048].total - est[1024].total), rel=1e-2)


@pytest.mark.parametrize("mode", ["serial", "simultaneous"])
def test_estimate_grows_linearly_in_examples(mode):
    est = {n: _estimate("model.layers=500", f"train.mode={mode}", n_train=n) for n in (1000, 2000, 4000)}
    for e in est.values():
        assert e.states > 0
    assert est[2000].states == pytest.approx(2 * est[1000].states, rel=0.01)
    assert est[4000].states == pytest.approx(2 * est[2000].states, rel=0.01)
    assert est[4000].data > est[2000].data > est[1000].data


def test_estimate_per_process_shrinks_with_processes():
    one = _estimate("model.layers=2000", "train.mode=simultaneous")
    layers = _estimate("model.layers=2000", "train.mode=simultaneous", layer_procs=4)
    examples = _estimate("model.layers=2000", "train.mode=simultaneous", data_procs=4)
    assert layers.states == pytest.approx(one.states / 4, rel=0.05)
    assert examples.states == pytest.approx(one.states / 4, rel=0.05)
    assert layers.details["layers"] == 500 and examples.details["examples"] == 1250


def test_estimate_counts_the_optimiser_memory():
    small = _estimate("model.layers=1000", "optimizer.memory=2")
    large = _estimate("model.layers=1000", "optimizer.memory=20")
    P = small.details["parameters"]
    assert large.optimizer - small.optimizer == 2 * 18 * P * 8  # 2 m vectors of the L-BFGS history
    adam = _estimate("model.layers=1000", "optimizer.name=adam")
    assert adam.optimizer >= 2 * P * 8  # two moments


def test_estimate_of_a_cuda_run_puts_the_network_on_the_gpu():
    est = _estimate("model.layers=1000", "train.device=cuda")
    assert est.device_bytes >= est.states + est.adjoints + est.derivatives > 0
    assert est.host == est.total - est.device_bytes
    assert est.host_components()["states"] == 0


def test_hierarchy_matches_the_engine():
    for layers, cf, cff, min_coarse, levels in ((1000, 2, 0, 2, 10), (1000, 4, 0, 10, 10), (777, 3, 8, 5, 3),
                                                (64, 2, 0, 2, 1)):
        net = ResNet(n_features=2, n_classes=5, width=8, layers=layers)
        opts = {"max_levels": levels, "cfactor": cf, "cfactor_fine": cff or -1, "min_coarse": min_coarse}
        engine = _core.ResNetMgrit(net.core, 1, opts, opts)
        assert len(_hierarchy(layers, cff or cf, cf, min_coarse, levels)) == engine.levels


# ------------------------------------------------------------------ the check


def test_a_run_that_cannot_fit_is_refused_in_one_sentence_without_allocating():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    est = _estimate("model.layers=160000")
    with pytest.raises(ValueError) as info:
        check_memory(est, available=24 * 10**9)
    assert time.perf_counter() - t0 < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 * 1024  # kB: nothing allocated
    msg = str(info.value)
    assert re.match(r"the run needs about \d\d\.\d GB per process \(states 51\.2 GB, ", msg), msg
    assert "but 24.0 GB is available; reduce model.layers" in msg
    assert msg.endswith(".") and ". " not in msg and "\n" not in msg  # one sentence


def test_check_memory_warns_when_tight():
    est = _estimate("model.layers=1000")
    with pytest.warns(RuntimeWarning, match=r"the run needs about .* of the .* available"):
        assert check_memory(est, available=int(est.host / 0.9)) is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_memory(est, available=2 * est.host) is False
        assert check_memory(est, available=int(est.host / 0.9), warn=False) is True


def test_check_memory_checks_the_gpu_part_when_its_size_is_given():
    est = _estimate("model.layers=20000", "train.device=cuda")
    check_memory(est, available=10 * est.host)  # the GPU part is not host memory
    with pytest.raises(ValueError, match=r"of GPU memory per process \(states "):
        check_memory(est, available=10 * est.host, device_available=est.device_bytes // 2)


def test_format_bytes():
    assert format_bytes(51_234_000_000) == "51.2 GB"
    assert format_bytes(999) == "999 B"
    assert format_bytes(1500) == "1.5 kB"


# ------------------------------------------------------------------ estimate against the measured peak

_MEASURE = """
import json, os, resource, sys, tempfile
from layerparallel.checkpoint import Checkpointer
from layerparallel.config import load_config
from layerparallel.data import load_dataset
from layerparallel.datasets import image_shape
from layerparallel.memory import estimate_memory
from layerparallel.train import build_model, train
every = int(sys.argv[2])
cfg = load_config(sys.argv[1], sys.argv[3:])
data = load_dataset(cfg.data, cfg.base_dir)
with open("/proc/self/statm") as fh:
    base = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")  # imports and data loaded
with tempfile.TemporaryDirectory() as folder:
    train(build_model(cfg, data), data, cfg, checkpoint=Checkpointer(folder, every) if every else None)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
est = estimate_memory(cfg, data.n_train, data.n_val, data.n_features, data.n_classes, image_shape=image_shape(data),
                      checkpoint=bool(every))
print(json.dumps({"measured": peak - base, "estimate": est.total - est.data, "checkpoint": est.checkpoint}))
"""


@pytest.mark.parametrize("every, overrides", [
    (0, ("model.layers=1000", "optimizer.memory=2", "optimizer.max_iter=2")),
    (0, ("model.layers=400", "data.train_size=2000", "optimizer.memory=2", "optimizer.max_iter=2",
         "train.mode=simultaneous")),
    (1, ("model.layers=400", "data.train_size=2000", "optimizer.memory=2", "optimizer.max_iter=2",
         "train.mode=simultaneous")),
], ids=["serial", "simultaneous", "simultaneous-checkpoints"])
def test_estimate_is_within_a_factor_1_5_above_the_measured_peak(every, overrides):
    """Peak RSS of a fresh process training a few iterations (writing a checkpoint
    after every step with ``every``), less its RSS after the imports and the data,
    against the estimate less the data. (Over dense, wide, conv, MGRIT, emulator,
    checkpointing and MPI-split runs of 0.25-23 GB the ratio measured 1.00-1.18.)"""
    r = subprocess.run([sys.executable, "-c", _MEASURE, str(PEAKS), str(every), *overrides], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["measured"] > 100e6  # the network dominates
    assert (got["checkpoint"] > 50e6) == bool(every)  # the warm starts a checkpoint copies
    assert 0.95 <= got["estimate"] / got["measured"] <= 1.5, got


# ------------------------------------------------------------------ available memory


def test_available_memory_is_a_positive_int_here():
    avail = available_memory()
    assert isinstance(avail, int) and avail > 0


def test_available_memory_honours_rlimit_as():
    code = """
import resource
from layerparallel.memory import available_memory
with open("/proc/self/statm") as fh:
    used = int(fh.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + 300 * 2**20, resource.getrlimit(resource.RLIMIT_AS)[1]))
print(available_memory())
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    avail = int(r.stdout.strip())
    assert 200 * 2**20 < avail <= 300 * 2**20


# ------------------------------------------------------------------ the dry run


def test_dry_run_plan_of_a_run_that_fits():
    cfg = _peaks("train.mode=simultaneous", "data.train_size=500", "data.val_size=100")
    data = load_dataset(cfg.data, cfg.base_dir)
    plan = dry_run_plan(cfg, data, available=10**12)
    json.dumps(plan)
    assert plan["sizes"]["layers"] == 32 and plan["sizes"]["width"] == 8
    assert plan["sizes"]["parameters"] == 2 * 8 + 1 + 32 * 65 + 5 * 8 + 5
    assert plan["sizes"]["train_examples"] == 500 and plan["sizes"]["val_examples"] == 100
    assert plan["processes"] == {"total": 1, "layer_procs": 1, "data_procs": 1, "layers_per_process": 32,
                                 "examples_per_process": 500}
    assert plan["threads"]["threads"] >= 1 and plan["mgrit"]["levels"] >= 2
    assert plan["memory"]["fits"] and not plan["memory"]["tight"] and not plan["memory"]["message"]
    text = format_dry_run(plan)
    for word in ("network", "32 layers", "2,142 parameters", "simultaneous mode", "processes", "threads",
                 "memory", "states", "adjoints", "available", "fits"):
        assert word in text


def test_dry_run_plan_of_a_run_that_cannot_fit_builds_nothing():
    cfg = _peaks("model.layers=160000")
    data = load_dataset(cfg.data, cfg.base_dir)
    t0 = time.perf_counter()
    plan = dry_run_plan(cfg, data, available=24 * 10**9)
    assert time.perf_counter() - t0 < 1.0
    assert not plan["memory"]["fits"]
    assert plan["memory"]["message"].startswith("the run needs about ")
    text = format_dry_run(plan)
    assert "does not fit" in text and "51.2 GB" in text


def test_dry_run_plan_of_a_convolutional_run():
    cfg = load_config(EXAMPLES / "digits.toml", ["train.mode=exact"])
    data = load_dataset(cfg.data, cfg.base_dir)
    plan = dry_run_plan(cfg, data, available=10**12)
    assert plan["sizes"]["kind"] == "conv" and plan["sizes"]["image"] == [1, 8, 8]
    assert plan["sizes"]["state_width"] == 4 * 64
    assert "4 channels of 8x8 pixels" in format_dry_run(plan)


@pytest.mark.parametrize("overrides, match", [
    (("model.width=3",), r"model\.width must be at least the number of classes \(5\)"),
    (("model.layers=2", "parallel.layer_procs=3"), r"cannot be split over parallel\.layer_procs = 3"),
])
def test_dry_run_plan_makes_the_checks_of_training(overrides, match):
    cfg = _peaks("data.train_size=50", "data.val_size=10", *overrides)
    data = load_dataset(cfg.data, cfg.base_dir)
    with pytest.raises(ValueError, match=match):
        dry_run_plan(cfg, data, available=10**12)


def _write(folder: Path, **files: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("_", ".", 1)).write_text(text)


def test_cgroup_v2_limit_of_the_cgroup_or_an_ancestor(tmp_path):
    from layerparallel.memory import _cgroup_available
    proc = tmp_path / "cgroup"
    proc.write_text("0::/job/step\n")
    root = tmp_path / "fs"
    _write(root / "job" / "step", memory_max="max\n", memory_current="100\n")
    assert _cgroup_available(str(proc), str(root)) is None
    _write(root / "job", memory_max="5000\n", memory_current="1000\n", memory_stat="anon 800\ninactive_file 200\n")
    assert _cgroup_available(str(proc), str(root)) == 5000 - (1000 - 200)
    _write(root / "job" / "step", memory_max="3000\n", memory_current="2500\n")
    assert _cgroup_available(str(proc), str(root)) == 500


def test_cgroup_v1_limit(tmp_path):
    from layerparallel.memory import _cgroup_available
    proc = tmp_path / "cgroup"
    proc.write_text("5:cpu,cpuacct:/\n4:memory:/slurm/job\n0::/\n")
    root = tmp_path / "fs"
    _write(root / "memory" / "slurm" / "job", memory_limit_in_bytes="9223372036854771712\n",
           memory_usage_in_bytes="10\n")
    assert _cgroup_available(str(proc), str(root)) is None
    _write(root / "memory" / "slurm", memory_limit_in_bytes="8000\n", memory_usage_in_bytes="3000\n",
           memory_stat="total_inactive_file 1000\n")
    assert _cgroup_available(str(proc), str(root)) == 8000 - 2000


def test_processes_on_one_machine_share_its_memory():
    est = _estimate("model.layers=1000")
    check_memory(est, available=3 * est.host, processes=2, warn=False)
    with pytest.raises(ValueError, match=r"per process \(.*\), .* for the 4 processes on this machine but"):
        check_memory(est, available=3 * est.host, processes=4)
