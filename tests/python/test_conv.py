"""The convolutional network from Python: gradient against finite differences,
MGRIT against serial, parameter files, and training from the command line."""
from __future__ import annotations

import json

import numpy as np
import pytest

from layerparallel.config import config_from_dict
from layerparallel.model import CONV_PARAM_KEYS, ConvResNet, Regularization, load_model
from layerparallel.train import MgritSolver

REG = Regularization(1e-3, 2e-3, 3e-3)


def small(bias="pixel", layers=3, opening="replicate"):
    m = ConvResNet(5, 4, 3, channels=2, layers=layers, T=1.0, activation="tanh", bias=bias, opening=opening,
                   regularization=REG, init="normal", init_opening=0.5, init_hidden=0.3, init_classifier=0.3, seed=1)
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 255, (6, 1, 5, 4))
    y = rng.integers(0, 3, 6)
    return m, X, y


@pytest.mark.parametrize("bias", ["pixel", "channel"])
@pytest.mark.parametrize("opening", ["replicate", "conv"])
def test_gradient_matches_finite_differences(bias, opening):
    m, X, y = small(bias, opening=opening)
    g = m.evaluate(X, y).gradient
    theta = m.theta.copy()
    eps = 1e-5
    for k in range(m.size):
        e = np.zeros_like(theta)
        e[k] = eps
        fd = (m.evaluate(X, y, theta=theta + e, gradient=False).objective
              - m.evaluate(X, y, theta=theta - e, gradient=False).objective) / (2 * eps)
        assert abs(fd - g[k]) / max(abs(fd), abs(g[k]), 1e-6) < 1e-6, k


def test_layout_and_parameter_file(tmp_path):
    m, X, y = small("pixel")
    p = m.parameters
    assert p["weights"].shape == (3, 2, 2, 3, 3) and p["biases"].shape == (3, 5, 4)
    assert p["classifier_weight"].shape == (3, 2 * 5 * 4) and p["classifier_bias"].shape == (3,)
    m.save(tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz") as f:
        assert set(f.files) == set(CONV_PARAM_KEYS) | {"config"}
    m2 = load_model(tmp_path / "c.npz")
    assert isinstance(m2, ConvResNet)
    np.testing.assert_array_equal(m2.logits(X), m.logits(X))
    mc, *_ = small("channel")
    mc.save(tmp_path / "d.npz")
    assert load_model(tmp_path / "d.npz").parameters["biases"].shape == (3, 2)


def test_replicate_opening_reads_pixels_0_to_255():
    m, X, y = small()
    u0 = m.states(X)[0].reshape(6, 2, 5, 4)
    for c in range(2):
        np.testing.assert_allclose(u0[:, c], np.tanh(6 * X[:, 0] / 255 - 3) + 1, rtol=1e-13)


def test_exact_mgrit_equals_serial_for_a_conv_network():
    m, X, y = small(layers=24)
    Xf = X.reshape(6, -1)
    ev = m.evaluate(Xf, y)
    cfg = config_from_dict({"mgrit": {"cfactor": 2, "min_coarse": 2}})
    me = MgritSolver(m, cfg.mgrit, "exact")(m.theta, Xf, y)
    assert me.objective == pytest.approx(ev.objective, rel=1e-12)
    np.testing.assert_allclose(me.gradient, ev.gradient, rtol=0, atol=1e-10 * np.abs(ev.gradient).max())


def test_bad_conv_arguments():
    with pytest.raises(ValueError, match="bias must be"):
        ConvResNet(4, 4, 3, bias="row")
    with pytest.raises(ValueError, match="channels must be at least 1"):
        ConvResNet(4, 4, 3, channels=0)
    m, X, y = small()
    with pytest.raises(ValueError, match="features must have shape"):
        m.evaluate(np.zeros((2, 1, 4, 4)), np.zeros(2, int))


def test_digits_trains_from_the_command_line(tmp_path):
    pytest.importorskip("sklearn")
    from layerparallel.cli import main

    out = tmp_path / "digits"
    assert main(["train", "examples/digits.toml", "--out", str(out), "--quiet", "--set", "optimizer.max_iter=12",
                 "--set", "data.train_size=400", "--set", "data.val_size=200"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["val_accuracy"] > 0.7
    with np.load(out / "params.npz") as f:
        assert f["weights"].shape == (8, 4, 4, 3, 3)


def test_conv_opening_layout_and_file(tmp_path):
    m, X, y = small("channel", opening="conv")  # a 5x4 image: not square
    assert m.parameters["opening_weight"].shape == (2, 1, 3, 3)
    assert m.parameters["opening_bias"].shape == (2,)
    m.save(tmp_path / "o.npz")
    m2 = load_model(tmp_path / "o.npz")
    assert m2.opening == "conv"
    np.testing.assert_array_equal(m2.logits(X), m.logits(X))


def test_cli_written_conv_params_load_with_their_image_size(tmp_path):
    from layerparallel.cli import main

    pytest.importorskip("sklearn")
    out = tmp_path / "r"
    assert main(["train", "examples/digits.toml", "--out", str(out), "--quiet", "--set", "optimizer.max_iter=1",
                 "--set", 'model.bias="channel"', "--set", 'model.opening="conv"', "--set", "data.train_size=50",
                 "--set", "data.val_size=20"]) == 0
    m = load_model(out / "params.npz")
    assert (m.height, m.width, m.bias, m.opening) == (8, 8, "channel", "conv")
