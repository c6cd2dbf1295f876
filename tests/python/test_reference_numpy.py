"""Checks of the numpy oracle (tests/python/reference_numpy.py) itself:
central finite differences for every activation x opening with all
regularisers on, plus hand-computed values for the pieces."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_numpy as ref  # noqa: E402

EPS = 1e-6          # finite-difference step
KINK_MARGIN = 1e-4  # keep pre-activations this far from non-smooth points


def _kinks(activation):
    if activation == "relu":
        return [0.0]                     # sigma' jumps
    if activation == "smooth_relu":
        return [-ref.SMOOTH_RELU_ETA, ref.SMOOTH_RELU_ETA]  # sigma'' jumps
    return []


def _random_problem(rng, opening, n_f=2, w=3, N=4, n_c=3, s=6):
    params = {}
    if opening == "dense":
        params["opening_weight"] = rng.normal(size=(w, n_f))
        params["opening_bias"] = np.float64(rng.normal())
    params["weights"] = rng.normal(scale=0.8, size=(N, w, w))
    params["biases"] = rng.normal(scale=0.3, size=N)
    params["classifier_weight"] = rng.normal(size=(n_c, w))
    params["classifier_bias"] = rng.normal(size=n_c)
    X = rng.normal(size=(s, n_f))
    y = rng.integers(0, n_c, size=s)
    return params, X, y


def _min_kink_distance(params, X, T, activation, opening):
    kinks = _kinks(activation)
    if not kinks:
        return np.inf
    _, preacts, zo = ref.forward(params, X, T, activation, opening)
    allz = np.concatenate([p.ravel() for p in preacts] + ([zo.ravel()] if zo is not None else []))
    return min(np.min(np.abs(allz - k)) for k in kinks)


def _problem_away_from_kinks(activation, opening, T, seed0=0):
    for seed in range(seed0, seed0 + 200):
        rng = np.random.default_rng(seed)
        params, X, y = _random_problem(rng, opening)
        if _min_kink_distance(params, X, T, activation, opening) > KINK_MARGIN:
            return params, X, y
    raise RuntimeError("no kink-free problem found")


@pytest.mark.parametrize("opening", ["dense", "expand"])
@pytest.mark.parametrize("activation", ["tanh", "relu", "smooth_relu"])
def test_gradient_matches_central_differences(activation, opening):
    T = 2.0
    regs = dict(g_tik=0.3, g_class=0.2, g_ddt=0.05)
    params, X, y = _problem_away_from_kinks(activation, opening, T)
    J, loss, acc, grads = ref.objective_and_gradient(params, X, y, T, activation, opening, **regs)
    assert set(grads) == set(params)

    # every regulariser must contribute to J and to the gradient
    assert J - loss > 1e-3
    for k in params:
        assert np.shape(grads[k]) == np.shape(params[k]), k

    shapes = {k: np.shape(v) for k, v in params.items()}
    theta = ref.flatten(params)
    g_flat = ref.flatten(grads)
    fd = np.empty_like(theta)
    for i in range(theta.size):
        tp = theta.copy(); tp[i] += EPS
        tm = theta.copy(); tm[i] -= EPS
        Jp = ref.objective_and_gradient(ref.unflatten(tp, shapes), X, y, T, activation, opening, **regs)[0]
        Jm = ref.objective_and_gradient(ref.unflatten(tm, shapes), X, y, T, activation, opening, **regs)[0]
        fd[i] = (Jp - Jm) / (2 * EPS)
    rel = np.linalg.norm(fd - g_flat) / np.linalg.norm(fd)
    assert rel < 1e-6, rel
    # also entry-wise (catches an error in a single small block)
    scale = np.max(np.abs(fd))
    assert np.max(np.abs(fd - g_flat)) < 1e-6 * scale


@pytest.mark.parametrize("opening", ["dense", "expand"])
def test_regularisation_gradients_alone(opening):
    """With the loss switched off by a zero classifier and no data dependence
    left, the gradient of each regulariser has a closed form."""
    rng = np.random.default_rng(3)
    params, X, y = _random_problem(rng, opening, N=5)
    T = 2.5
    h = T / 5
    g_tik, g_class, g_ddt = 0.7, 0.4, 0.3
    _, _, _, g_all = ref.objective_and_gradient(params, X, y, T, "tanh", opening, g_tik, g_class, g_ddt)
    _, _, _, g_none = ref.objective_and_gradient(params, X, y, T, "tanh", opening, 0.0, 0.0, 0.0)
    K, b = params["weights"], params["biases"]
    lap = np.zeros_like(K)
    lap[0] = K[0] - K[1]
    lap[-1] = K[-1] - K[-2]
    lap[1:-1] = 2 * K[1:-1] - K[:-2] - K[2:]
    np.testing.assert_allclose(g_all["weights"] - g_none["weights"], g_tik * K + g_ddt * lap / h**2, rtol=1e-12, atol=1e-12)
    lapb = np.zeros_like(b)
    lapb[0] = b[0] - b[1]
    lapb[-1] = b[-1] - b[-2]
    lapb[1:-1] = 2 * b[1:-1] - b[:-2] - b[2:]
    np.testing.assert_allclose(g_all["biases"] - g_none["biases"], g_tik * b + g_ddt * lapb / h**2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g_all["classifier_weight"] - g_none["classifier_weight"], g_class * params["classifier_weight"], atol=1e-12)
    if opening == "dense":
        np.testing.assert_allclose(g_all["opening_weight"] - g_none["opening_weight"], g_tik * params["opening_weight"], atol=1e-12)
        np.testing.assert_allclose(g_all["opening_bias"] - g_none["opening_bias"], g_tik * params["opening_bias"], atol=1e-12)


def test_objective_value_by_hand_one_layer():
    """N = 1, w = 2, expand opening, tanh: compute J explicitly."""
    params = {
        "weights": np.array([[[0.5, -1.0], [2.0, 0.25]]]),
        "biases": np.array([0.1]),
        "classifier_weight": np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
        "classifier_bias": np.array([0.0, 0.5, -0.5]),
    }
    X = np.array([[1.0, -2.0], [0.5, 0.0]])
    y = np.array([2, 0])
    T = 0.8
    J, loss, acc, _ = ref.objective_and_gradient(params, X, y, T, "tanh", "expand", 0.1, 0.2, 0.3)
    losses, correct = [], []
    for xi, ci in zip(X, y):
        u1 = xi + T * np.tanh(params["weights"][0] @ xi + 0.1)
        z = params["classifier_weight"] @ u1 + params["classifier_bias"]
        losses.append(-z[ci] + np.log(np.sum(np.exp(z))))
        correct.append(np.argmax(z) == ci)
    expected = np.mean(losses) + 0.05 * (np.sum(params["weights"] ** 2) + 0.01) \
        + 0.1 * (np.sum(params["classifier_weight"] ** 2) + 0.5)  # no ddt with N = 1
    assert J == pytest.approx(expected, rel=1e-13)
    assert loss == pytest.approx(np.mean(losses), rel=1e-13)
    assert acc == np.mean(correct)
    z_all = ref.logits(params, X, T, "tanh", "expand")
    assert z_all.shape == (2, 3)


def test_ddt_term_value():
    rng = np.random.default_rng(1)
    params, X, y = _random_problem(rng, "dense", N=3)
    T = 1.5
    h = T / 3
    J0 = ref.objective_and_gradient(params, X, y, T, "tanh", "dense", 0, 0, 0)[0]
    J1 = ref.objective_and_gradient(params, X, y, T, "tanh", "dense", 0, 0, 2.0)[0]
    K, b = params["weights"], params["biases"]
    expected = (np.sum((K[1:] - K[:-1]) ** 2) + np.sum(np.diff(b) ** 2)) / h**2
    assert J1 - J0 == pytest.approx(expected, rel=1e-12)


def test_activations():
    x = np.array([-1.0, -0.1, -0.05, 0.0, 0.05, 0.1, 1.0])
    sr = ref.activation("smooth_relu", x)
    np.testing.assert_allclose(sr, [0, 0, 0.00625, 0.025, 0.05625, 0.1, 1.0], atol=1e-15)
    np.testing.assert_allclose(ref.activation_derivative("smooth_relu", x), [0, 0, 0.25, 0.5, 0.75, 1, 1])
    np.testing.assert_array_equal(ref.activation_derivative("relu", np.array([-1.0, 0.0, 1.0])), [0, 0, 1])
    np.testing.assert_allclose(ref.activation_derivative("tanh", np.array([0.3])), 1 - np.tanh(0.3) ** 2)


def test_softmax_is_stable_and_labels_one_hot_equivalent():
    rng = np.random.default_rng(2)
    params, X, y = _random_problem(rng, "dense")
    params["classifier_bias"] = params["classifier_bias"] + 1000.0  # huge shift
    onehot = np.eye(3)[y]
    a = ref.objective_and_gradient(params, X, y, 1.0, "smooth_relu", "dense", 0, 0, 0)
    b = ref.objective_and_gradient(params, X, onehot, 1.0, "smooth_relu", "dense", 0, 0, 0)
    assert np.isfinite(a[0]) and a[0] == b[0]
    params["classifier_bias"] = np.array([1000.0, 0.0, 0.0])
    J, loss, acc, g = ref.objective_and_gradient(params, X, np.zeros(6, int), 1.0, "smooth_relu", "dense", 0, 0, 0)
    assert np.isfinite(loss) and loss < 1e-100 and acc == 1.0
