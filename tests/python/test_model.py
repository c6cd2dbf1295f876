"""The compiled dense network against the numpy oracle and finite differences;
the parameter file format; bad inputs at the model boundary."""
from __future__ import annotations

import json

import numpy as np
import pytest

from layerparallel.model import PARAM_KEYS, Regularization, ResNet, read_params

import reference_numpy as ref

REG = Regularization(tikhonov=1e-3, classifier=2e-3, ddt=5e-3)


def make(activation="tanh", opening="dense", width=5, layers=4, nf=3, nc=3, seed=0, scale=0.5):
    m = ResNet(nf, nc, width, layers, 1.3, activation, opening, regularization=REG, seed=seed,
               init_opening=scale, init_hidden=scale, init_classifier=scale)
    # Centre the uniform draws so weights have both signs.
    m.theta -= 0.5 * scale
    rng = np.random.default_rng(seed + 100)
    X = rng.normal(size=(23, nf))
    y = rng.integers(0, nc, size=23)
    return m, X, y


@pytest.mark.parametrize("activation", ["tanh", "relu", "smooth_relu"])
@pytest.mark.parametrize("opening", ["dense", "expand"])
@pytest.mark.parametrize("width", [5, 8, 40])  # runtime width, templated width, BLAS path
def test_matches_numpy_oracle(activation, opening, width):
    m, X, y = make(activation, opening, width=width)
    ev = m.evaluate(X, y)
    J, loss, acc, grads = ref.objective_and_gradient(m.parameters, X, y, m.T, activation, opening,
                                                     REG.tikhonov, REG.classifier, REG.ddt)
    assert ev.objective == pytest.approx(J, rel=1e-12)
    assert ev.loss == pytest.approx(loss, rel=1e-12)
    assert ev.accuracy == pytest.approx(acc)
    g = ev.gradient
    gviews = {name: g[o:o + max(1, int(np.prod(s)))].reshape(s) for name, o, s in m._layout}
    for name in grads:
        np.testing.assert_allclose(gviews[name], grads[name], rtol=1e-10, atol=1e-14, err_msg=name)
    np.testing.assert_allclose(m.logits(X), ref.logits(m.parameters, X, m.T, activation, opening), rtol=1e-12)


def fd_relative_errors(m, X, y, eps=1e-5):
    """Central differences on every coordinate: list of relative errors, and the
    number of coordinates skipped because the perturbation crosses a ReLU kink
    (detected by a second difference far above the smooth-case level)."""
    theta = m.theta.copy()
    g = m.evaluate(X, y).gradient
    # The loss and the regularisers are differenced separately: differencing their sum
    # would add the rounding of a sum near 1 (1 ulp / 2 eps ~ 1e-11) to derivatives
    # as small as 1e-5, a relative error of 1e-6 that says nothing about the gradient.
    e0 = m.evaluate(X, y, gradient=False)
    f0 = e0.objective
    errors, skipped = [], 0
    for k in range(m.size):
        e = np.zeros_like(theta)
        e[k] = eps
        ep = m.evaluate(X, y, theta=theta + e, gradient=False)
        em = m.evaluate(X, y, theta=theta - e, gradient=False)
        fp, fm = ep.objective, em.objective
        if m.activation == "relu" and abs(fp - 2 * f0 + fm) > 1e-9:
            skipped += 1
            continue
        fd = ((ep.loss - em.loss) + (ep.regularization - em.regularization)) / (2 * eps)
        errors.append(abs(fd - g[k]) / max(abs(fd), abs(g[k]), 1e-6))
    return errors, skipped


@pytest.mark.parametrize("activation", ["tanh", "relu", "smooth_relu"])
@pytest.mark.parametrize("opening", ["dense", "expand"])
def test_gradient_finite_differences(activation, opening):
    m, X, y = make(activation, opening, width=6, layers=5)
    errors, skipped = fd_relative_errors(m, X, y)
    assert skipped <= 0.1 * m.size
    assert max(errors) < 1e-6


def test_ddt_gradient_is_not_dropped():
    # The reference code loses this term (integer factor); ours must carry it.
    m, X, y = make("tanh", "dense")
    with_ddt = m.evaluate(X, y).gradient
    m.regularization = Regularization(REG.tikhonov, REG.classifier, 0.0)
    without = m.evaluate(X, y).gradient
    K = m.parameters["weights"]
    h = m.h
    expected = np.zeros_like(K)
    expected[1:] += REG.ddt * (K[1:] - K[:-1]) / h**2
    expected[:-1] -= REG.ddt * (K[1:] - K[:-1]) / h**2
    off = next(o for n, o, _ in m._layout if n == "weights")
    diff = (with_ddt - without)[off:off + K.size].reshape(K.shape)
    np.testing.assert_allclose(diff, expected, rtol=1e-9, atol=1e-15)


def test_threads_do_not_change_results():
    from layerparallel import _core

    m, _, _ = make("smooth_relu", "dense", width=8, layers=3)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3001, 3))
    y = rng.integers(0, 3, 3001)
    old = _core.num_threads()
    try:
        _core.set_num_threads(1)
        a = m.evaluate(X, y)
        _core.set_num_threads(2)
        b = m.evaluate(X, y)
    finally:
        _core.set_num_threads(old)
    assert a.objective == b.objective
    np.testing.assert_array_equal(a.gradient, b.gradient)


# ---------------------------------------------------------------- parameter files
def test_npz_round_trip(tmp_path):
    m, X, y = make("smooth_relu", "dense", width=8, layers=4, nf=2, nc=5)
    path = tmp_path / "params.npz"
    cfg = {"model": {"T": m.T, "activation": "smooth_relu"}, "train": {"mode": "serial"}}
    m.save(path, config=cfg)
    with np.load(path) as f:
        assert sorted(f.files) == sorted(PARAM_KEYS + ("config",))
        assert f["opening_weight"].shape == (8, 2)
        assert f["opening_bias"].shape == ()
        assert f["weights"].shape == (4, 8, 8)
        assert f["biases"].shape == (4,)
        assert f["classifier_weight"].shape == (5, 8)
        assert f["classifier_bias"].shape == (5,)
        assert json.loads(str(f["config"])) == cfg
        # The documented formula reproduces the model's logits from the raw arrays.
        sig = lambda z: np.where(z >= 0.1, z, np.where(z <= -0.1, 0.0, z * z / 0.4 + z / 2 + 0.025))
        u = sig(X[:, :2] @ f["opening_weight"].T + f["opening_bias"])
        Xs = X[:, :2]
    m2 = ResNet.load(path)
    np.testing.assert_array_equal(m2.theta, m.theta)
    with np.load(path) as f:
        u = sig(Xs @ f["opening_weight"].T + f["opening_bias"])
        for n in range(4):
            u = u + (m.T / 4) * sig(u @ f["weights"][n].T + f["biases"][n])
        z = u @ f["classifier_weight"].T + f["classifier_bias"]
    np.testing.assert_allclose(m2.logits(Xs), z, rtol=1e-12)


def test_params_shape_mismatch_is_named(tmp_path):
    m, *_ = make(width=8, layers=4)
    path = tmp_path / "p.npz"
    m.save(path)
    other, *_ = make(width=8, layers=5)
    with pytest.raises(ValueError, match=r"weights has shape \(4, 8, 8\).*needs \(5, 8, 8\)"):
        other.load_parameters(path)


def test_unreadable_params_file(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    m, *_ = make()
    with pytest.raises(ValueError, match="bad.npz"):
        m.load_parameters(bad)
    with pytest.raises(ValueError, match="does not exist"):
        m.load_parameters(tmp_path / "missing.npz")


def test_save_is_atomic(tmp_path, monkeypatch):
    m, *_ = make()
    path = tmp_path / "p.npz"
    m.save(path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(RuntimeError):
        m.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.npz"]


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(width=2, n_classes=5), "width must be at least the number of classes"),
        (dict(layers=0), "layers must be at least 1"),
        (dict(T=0.0), "T must be a positive"),
        (dict(T=float("nan")), "T must be a positive"),
        (dict(activation="sigmoid"), "activation must be one of"),
        (dict(opening="conv"), "opening must be one of"),
        (dict(opening="expand", n_features=9, width=8), "expand opening needs width"),
        (dict(width=8.5), "width must be an integer"),
    ],
)
def test_bad_model_arguments(kwargs, pattern):
    args = dict(n_features=2, n_classes=5, width=8, layers=4, T=1.0, activation="tanh", opening="dense")
    args.update(kwargs)
    with pytest.raises(ValueError, match=pattern):
        ResNet(**args)


@pytest.mark.parametrize(
    "X, y, pattern",
    [
        (np.zeros((4, 3)), np.zeros(4, int), r"features must have shape \(s, 2\), got \(4, 3\)"),
        (np.zeros(4), np.zeros(4, int), r"features must have shape"),
        (np.array([[0.0, np.nan]]), np.zeros(1, int), "features must be finite"),
        (np.array([[0.0, np.inf]]), np.zeros(1, int), "features must be finite"),
        (np.array([["a", "b"]]), np.zeros(1, int), "features must hold real numbers"),
        (np.zeros((0, 2)), np.zeros(0, int), "at least one example"),
        (np.zeros((2, 2)), np.array([0, 5]), r"labels must lie in \[0, 5\)"),
        (np.zeros((2, 2)), np.array([0, -1]), r"labels must lie in"),
        (np.zeros((2, 2)), np.array([0.0, 1.0]), "labels must be an integer array"),
        (np.zeros((2, 2)), np.array([0, 1, 2]), r"labels must have shape \(2,\)"),
    ],
)
def test_bad_batches(X, y, pattern):
    m = ResNet(2, 5, 8, 4, 1.0)
    with pytest.raises(ValueError, match=pattern):
        m.evaluate(X, y)


def test_bad_theta():
    m = ResNet(2, 5, 8, 4, 1.0)
    X, y = np.zeros((2, 2)), np.zeros(2, int)
    with pytest.raises(ValueError, match="theta"):
        m.evaluate(X, y, theta=np.zeros(3))
    t = m.theta.copy()
    t[0] = np.nan
    with pytest.raises(ValueError, match="theta .* must be finite"):
        m.evaluate(X, y, theta=t)
