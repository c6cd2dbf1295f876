"""Device-resident training against the CPU (``pytest -m cuda``).

Every case runs on two devices: ``cuda`` (a GPU; skipped with the compiled
library's own reason when none is usable) and ``emulator`` (the same CUDA kernel
bodies over their launch grids on the CPU, driven by the same orchestration:
states in device memory, one launch per level, staged messages). The emulator
cases therefore run everywhere and test everything but the CUDA launch glue.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import layerparallel as lp
from layerparallel import _core
from layerparallel.config import config_from_dict
from layerparallel.data import generate_peaks
from layerparallel.device import check_device, cuda_available, locate_cublas
from layerparallel.model import ConvResNet, ResNet
from layerparallel.train import MgritSolver, build_model, train

pytestmark = pytest.mark.cuda


def _no_device_reason() -> str:
    return f"no usable CUDA device: {_core.cuda_status()}"


DEVICES = [
    pytest.param("cuda", marks=pytest.mark.skipif(not cuda_available(), reason=_no_device_reason())),
    "emulator",
]

OPTIONS = {"cfactor": 4, "min_coarse": 2, "relax": ["F", "FCF"], "max_iter": 60, "threads": 1}


@pytest.fixture(scope="module")
def data():
    return generate_peaks(300, 60, seed=4)


def model_for(width=8, layers=32, activation="smooth_relu", opening="dense", seed=3):
    m = ResNet(2, 5, width, layers, 5.0, activation, opening, seed=seed, init="normal", init_opening=1.0,
               init_hidden=0.2, init_classifier=0.2)
    return m


def pair(model, s, device, options=OPTIONS):
    cpu = _core.ResNetMgrit(model.core, s, options, options)
    dev = _core.ResNetMgrit(model.core, s, options, options, None, device)
    for x in (cpu, dev):
        # Well above the rounding floor, so that the device's differently rounded
        # reductions cannot change the number of cycles an exact solve takes.
        x.set_relative_tolerance(1e-10)
    return cpu, dev


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("width, activation, opening", [(8, "smooth_relu", "dense"), (5, "tanh", "dense"),
                                                        (16, "relu", "expand"), (32, "tanh", "dense"),
                                                        (40, "smooth_relu", "dense")])  # 40: the GEMM path
def test_forward_adjoint_and_gradient_match_cpu(data, device, width, activation, opening):
    model = model_for(width, 20, activation, opening)
    X, y = data.train_x[:130], data.train_y[:130]
    cpu, dev = pair(model, 130, device)
    assert dev.device == device
    a = cpu.evaluate(model.theta, X, y, 1e-4, 1e-4, 1e-3)
    b = dev.evaluate(model.theta, X, y, 1e-4, 1e-4, 1e-3)
    assert b["objective"] == pytest.approx(a["objective"], rel=1e-12)
    assert b["correct"] == a["correct"]
    np.testing.assert_allclose(b["gradient"], a["gradient"], rtol=0, atol=1e-11 * np.abs(a["gradient"]).max())
    np.testing.assert_allclose(dev.states(), cpu.states(), rtol=0, atol=1e-12 * np.abs(cpu.states()).max())
    np.testing.assert_allclose(dev.adjoints(), cpu.adjoints(), rtol=0, atol=1e-11 * np.abs(cpu.adjoints()).max())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bias", ["pixel", "channel"])
def test_convolutional_network_matches_cpu(device, bias):
    model = ConvResNet(6, 5, 3, channels=2, layers=8, T=1.0, activation="tanh", bias=bias, opening="replicate",
                       seed=2)
    model.theta += np.random.default_rng(5).normal(scale=0.1, size=model.size)
    rng = np.random.default_rng(6)
    X, y = rng.uniform(0, 255, size=(9, 30)), rng.integers(0, 3, size=9)
    opts = dict(OPTIONS, cfactor=2)
    cpu, dev = pair(model, 9, device, opts)
    for budget in (-1, 2):
        a = cpu.evaluate(model.theta, X, y, 1e-4, 1e-4, 1e-3, budget, budget)
        b = dev.evaluate(model.theta, X, y, 1e-4, 1e-4, 1e-3, budget, budget)
        assert b["objective"] == pytest.approx(a["objective"], rel=1e-12)
        np.testing.assert_allclose(b["gradient"], a["gradient"], rtol=0, atol=1e-11 * np.abs(a["gradient"]).max())
    np.testing.assert_allclose(dev.states(), cpu.states(), rtol=0, atol=1e-12 * np.abs(cpu.states()).max())


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_matches_finite_differences(data, device):
    model = model_for(8, 12)
    X, y = data.train_x[:40], data.train_y[:40]
    _, dev = pair(model, 40, device)
    g = dev.evaluate(model.theta, X, y, 1e-4, 1e-4, 1e-3)["gradient"]
    rng = np.random.default_rng(1)
    for k in rng.choice(model.size, size=6, replace=False):
        e = 1e-6
        tp, tm = model.theta.copy(), model.theta.copy()
        tp[k] += e
        tm[k] -= e
        fp = dev.evaluate(tp, X, y, 1e-4, 1e-4, 1e-3, gradient=False)["objective"]
        fm = dev.evaluate(tm, X, y, 1e-4, 1e-4, 1e-3, gradient=False)["objective"]
        assert g[k] == pytest.approx((fp - fm) / (2 * e), rel=1e-5, abs=1e-8), f"parameter {k}"


@pytest.mark.parametrize("device", DEVICES)
def test_mgrit_solves_match_cpu(data, device):
    """Exact and fixed-budget (one-shot) solves: the same cycles, residual histories and work."""
    model = model_for(8, 32)
    X, y = data.train_x[:64], data.train_y[:64]
    cpu, dev = pair(model, 64, device)
    for budget in (-1, 2, 1):
        theta = model.theta * (1 + 0.01 * budget)
        a = cpu.evaluate(theta, X, y, forward_budget=budget, adjoint_budget=budget)
        b = dev.evaluate(theta, X, y, forward_budget=budget, adjoint_budget=budget)
        for side in ("forward", "adjoint"):
            assert b[side]["cycles"] == a[side]["cycles"]
            assert b[side]["steps"] == a[side]["steps"]
            ra, rb = np.array(a[side]["residuals"]), np.array(b[side]["residuals"])
            ok = np.isfinite(ra)
            # 1e-9 relative, down to the rounding floor of the states once converged.
            np.testing.assert_allclose(rb[ok], ra[ok], rtol=1e-9, atol=1e-12 * ra[ok][0])
        np.testing.assert_allclose(b["gradient"], a["gradient"], rtol=0, atol=1e-10 * np.abs(a["gradient"]).max())
    assert dev.levels == cpu.levels == 3


def _cfg(mode, device):
    return config_from_dict({
        "data": {"train_size": 300, "val_size": 60, "seed": 4},
        "model": {"width": 8, "layers": 16, "init": "normal", "init_opening": 1.0, "init_hidden": 0.1,
                  "init_classifier": 0.1},
        "optimizer": {"max_iter": 8},
        "train": {"mode": mode, "seed": 1, "device": device},
        "mgrit": {"cfactor": 4}})


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["serial", "exact", "simultaneous"])
def test_short_training_matches_cpu(data, device, mode):
    histories, thetas = [], []
    for dev in ("cpu", device):
        cfg = _cfg(mode, dev)
        model = build_model(cfg, data)
        result = train(model, data, cfg)
        histories.append(result.history)
        thetas.append(model.theta)
    assert len(histories[1]) == len(histories[0]) == 9
    for a, b in zip(*histories):
        assert b["objective"] == pytest.approx(a["objective"], rel=1e-9)
        assert b["val_accuracy"] == a["val_accuracy"]
    np.testing.assert_allclose(thetas[1], thetas[0], rtol=1e-7, atol=1e-9)


def test_cli_trains_on_the_emulator(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "layerparallel", "train", "examples/peaks.toml",
                        "--set", "train.device=\"emulator\"", "--set", "train.mode=\"simultaneous\"",
                        "--set", "optimizer.max_iter=3", "--set", "data.train_size=200",
                        "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 3


@pytest.mark.skipif(cuda_available(), reason="a CUDA device is present; the cuda cases cover it")
def test_cuda_refusal_names_the_cause_here() -> None:
    status = _core.cuda_status()
    assert not cuda_available()
    assert lp.cuda_available() is False
    if not _core.built_with_cuda():
        assert status == "layerparallel was built without CUDA"
    else:
        assert status.startswith(("no CUDA device was found", "the CUDA driver is older than the runtime"))
    with pytest.raises(ValueError) as err:
        check_device("cuda")
    assert str(err.value) == f"device 'cuda' is not available: {status}"
    # The compiled solver refuses with the same reason.
    model = model_for(8, 4)
    with pytest.raises(RuntimeError, match=re.escape(status.split(" (")[0])):
        _core.ResNetMgrit(model.core, 4, OPTIONS, OPTIONS, None, "cuda")


@pytest.mark.skipif(not cuda_available(), reason=_no_device_reason())
def test_status_names_the_device() -> None:
    assert _core.cuda_status().startswith("CUDA device 0: ")
    assert check_device("cuda") == "cuda"


def test_bad_devices_are_refused_in_one_sentence(data) -> None:
    assert check_device("cpu") == "cpu"
    assert check_device("emulator") == "emulator"
    with pytest.raises(ValueError, match="device must be one of cpu, cuda, emulator, got 'tpu'"):
        check_device("tpu")
    assert check_device("emulator", "conv", "replicate") == "emulator"
    with pytest.raises(ValueError, match="replicate opening"):
        check_device("emulator", "conv", "conv")
    with pytest.raises(ValueError, match="train.device"):
        config_from_dict({"train": {"device": "gpu"}})
    many = ResNet(2, 70, 70, 4, 1.0, "tanh", "dense")
    with pytest.raises(ValueError, match="classes"):
        _core.ResNetMgrit(many.core, 4, OPTIONS, OPTIONS, None, "emulator")


def test_cublas_of_the_nvidia_wheel_is_found(tmp_path, monkeypatch) -> None:
    # The wheel's layout: site-packages/nvidia/cu13/lib/libcublas.so.13 beside libcublasLt.
    lib = tmp_path / "nvidia" / "cu13" / "lib"
    lib.mkdir(parents=True)
    (lib / "libcublasLt.so.13").write_bytes(b"")
    (lib / "libcublas.so.13").write_bytes(b"")
    monkeypatch.delenv("LP_CUBLAS_LIBRARY", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "nvidia", raising=False)
    assert locate_cublas() == str(lib / "libcublas.so.13")
    assert os.environ["LP_CUBLAS_LIBRARY"] == str(lib / "libcublas.so.13")
    monkeypatch.setenv("LP_CUBLAS_LIBRARY", "/opt/mine/libcublas.so.13")  # an explicit choice wins
    assert locate_cublas() == "/opt/mine/libcublas.so.13"
