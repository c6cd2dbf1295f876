"""Plain numpy reference implementation of the dense ResNet objective and its
gradient (docs/algorithm.md sections 1-2).  It is the test oracle for the C++ core.

Conventions
-----------
* Examples are rows: ``X`` has shape ``(s, n_f)``; states ``u_n`` are stored
  as ``(s, w)`` arrays, so a layer computes ``U @ K.T``.
* ``y`` are class indices ``(s,)`` (ints) or one-hot rows ``(s, n_c)``.
* ``params`` is a dict with keys (CONTRACTS.md layout)::

      opening_weight    (w, n_f)   only for opening == "dense"
      opening_bias      ()         only for opening == "dense"
      weights           (N, w, w)
      biases            (N,)
      classifier_weight (n_c, w)
      classifier_bias   (n_c,)

* Layer ``n``: ``u_{n+1} = u_n + h * sigma(K_n u_n + b_n)`` with ``h = T / N``
  and one scalar bias per layer.  Dense opening ``u_0 = sigma(K_o y + b_o)``;
  "expand" zero-pads the input to width ``w`` (no parameters).
* Objective::

      J = mean_i CE_i
        + g_tik/2   (|K_o|^2 + b_o^2 [dense only] + sum_n |K_n|^2 + b_n^2)
        + g_class/2 (|W|^2 + |mu|^2)
        + g_ddt/2   sum_{n=1}^{N-1} (|K_n - K_{n-1}|^2 + (b_n - b_{n-1})^2) / h^2

The code is deliberately straightforward (no fusion, no in-place tricks) so
that it is easy to audit against the maths.
"""
from __future__ import annotations

import numpy as np

SMOOTH_RELU_ETA = 0.1
ACTIVATIONS = ("tanh", "relu", "smooth_relu")
OPENINGS = ("dense", "expand")


# ----------------------------------------------------------------------------
# activations
# ----------------------------------------------------------------------------
def activation(name: str, x: np.ndarray) -> np.ndarray:
    """sigma(x) for the named activation."""
    if name == "tanh":
        return np.tanh(x)
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "smooth_relu":
        eta = SMOOTH_RELU_ETA
        inner = x * x / (4.0 * eta) + x / 2.0 + eta / 4.0
        return np.where(np.abs(x) < eta, inner, np.maximum(x, 0.0))
    raise ValueError(f"unknown activation {name!r}")


def activation_derivative(name: str, x: np.ndarray) -> np.ndarray:
    """sigma'(x); relu'(0) = 0."""
    if name == "tanh":
        t = np.tanh(x)
        return 1.0 - t * t
    if name == "relu":
        return (x > 0.0).astype(np.float64)
    if name == "smooth_relu":
        eta = SMOOTH_RELU_ETA
        inner = x / (2.0 * eta) + 0.5
        return np.where(np.abs(x) < eta, inner, (x > 0.0).astype(np.float64))
    raise ValueError(f"unknown activation {name!r}")


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
def _class_indices(y: np.ndarray, n_c: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2:
        if y.shape[1] != n_c:
            raise ValueError("one-hot labels have the wrong number of classes")
        return np.argmax(y, axis=1)
    return y.astype(np.int64)


def _check(params: dict, X: np.ndarray, opening: str):
    if opening not in OPENINGS:
        raise ValueError(f"unknown opening {opening!r}")
    K = np.asarray(params["weights"], dtype=np.float64)
    if K.ndim != 3 or K.shape[1] != K.shape[2]:
        raise ValueError("weights must have shape (N, w, w)")
    N, w, _ = K.shape
    if np.shape(params["biases"]) != (N,):
        raise ValueError("biases must have shape (N,)")
    if X.ndim != 2:
        raise ValueError("X must have shape (s, n_f)")
    if opening == "dense":
        if np.shape(params["opening_weight"]) != (w, X.shape[1]):
            raise ValueError("opening_weight must have shape (w, n_f)")
    elif X.shape[1] > w:
        raise ValueError("expand opening needs n_f <= w")
    return N, w


def forward(params: dict, X, T: float, activation_name: str, opening: str):
    """Forward sweep.

    Returns ``(states, preacts, opening_preact)``: ``states`` is a list of the
    ``N + 1`` states ``u_0..u_N`` (each ``(s, w)``), ``preacts`` the ``N``
    pre-activations ``K_n u_n + b_n`` and ``opening_preact`` the opening's
    pre-activation ``K_o y + b_o`` (``None`` for "expand").
    """
    X = np.asarray(X, dtype=np.float64)
    N, w = _check(params, X, opening)
    h = T / N
    if opening == "dense":
        Ko = np.asarray(params["opening_weight"], dtype=np.float64)
        bo = float(params["opening_bias"])
        zo = X @ Ko.T + bo
        u = activation(activation_name, zo)
    else:
        zo = None
        u = np.zeros((X.shape[0], w))
        u[:, : X.shape[1]] = X
    states = [u]
    preacts = []
    for n in range(N):
        Kn = params["weights"][n]
        z = u @ Kn.T + params["biases"][n]
        u = u + h * activation(activation_name, z)
        preacts.append(z)
        states.append(u)
    return states, preacts, zo


def logits(params: dict, X, T: float, activation: str, opening: str) -> np.ndarray:
    """Classifier output ``z = W u_N + mu`` for every example, shape (s, n_c)."""
    states, _, _ = forward(params, X, T, activation, opening)
    W = np.asarray(params["classifier_weight"], dtype=np.float64)
    mu = np.asarray(params["classifier_bias"], dtype=np.float64)
    return states[-1] @ W.T + mu


def regularisation(params: dict, T: float, opening: str, g_tik: float,
                   g_class: float, g_ddt: float) -> float:
    """The three regularisation terms of J (without the loss)."""
    K = np.asarray(params["weights"], dtype=np.float64)
    b = np.asarray(params["biases"], dtype=np.float64)
    N = K.shape[0]
    h = T / N
    tik = np.sum(K * K) + np.sum(b * b)
    if opening == "dense":
        tik += np.sum(np.asarray(params["opening_weight"]) ** 2)
        tik += float(params["opening_bias"]) ** 2
    W = np.asarray(params["classifier_weight"])
    mu = np.asarray(params["classifier_bias"])
    cls = np.sum(W * W) + np.sum(mu * mu)
    ddt = np.sum((K[1:] - K[:-1]) ** 2) + np.sum((b[1:] - b[:-1]) ** 2)
    return float(0.5 * g_tik * tik + 0.5 * g_class * cls + 0.5 * g_ddt * ddt / h**2)


# ----------------------------------------------------------------------------
# objective and gradient
# ----------------------------------------------------------------------------
def objective_and_gradient(params: dict, X, y, T: float, activation: str,
                           opening: str, g_tik: float, g_class: float,
                           g_ddt: float):
    """Objective, loss, accuracy and exact gradient (discrete adjoint).

    Returns ``(J, loss, accuracy, grads)`` where ``grads`` has the same keys
    and shapes as ``params`` (``opening_*`` only for the dense opening).
    """
    act = activation
    X = np.asarray(X, dtype=np.float64)
    states, preacts, zo = forward(params, X, T, act, opening)
    K = np.asarray(params["weights"], dtype=np.float64)
    b = np.asarray(params["biases"], dtype=np.float64)
    W = np.asarray(params["classifier_weight"], dtype=np.float64)
    mu = np.asarray(params["classifier_bias"], dtype=np.float64)
    N = K.shape[0]
    h = T / N
    s = X.shape[0]
    n_c = W.shape[0]
    c = _class_indices(y, n_c)
    if c.shape != (s,):
        raise ValueError("labels do not match the number of examples")

    # classifier + softmax cross-entropy (shifted by the max for stability)
    uN = states[-1]
    z = uN @ W.T + mu
    zmax = z.max(axis=1, keepdims=True)
    ez = np.exp(z - zmax)
    sum_ez = ez.sum(axis=1, keepdims=True)
    lse = np.log(sum_ez)[:, 0] + zmax[:, 0]
    rows = np.arange(s)
    loss = float(np.mean(lse - z[rows, c]))
    accuracy = float(np.mean(np.argmax(z, axis=1) == c))
    J = loss + regularisation(params, T, opening, g_tik, g_class, g_ddt)

    # dJ/dz = (softmax - onehot) / s
    P = ez / sum_ez
    P[rows, c] -= 1.0
    P /= s
    grads = {
        "classifier_weight": P.T @ uN + g_class * W,
        "classifier_bias": P.sum(axis=0) + g_class * mu,
    }

    # adjoint sweep: lambda_N = W^T P, lambda_n = lambda_{n+1} + h K_n^T (sigma' * lambda_{n+1})
    lam = P @ W
    gK = np.zeros_like(K)
    gb = np.zeros_like(b)
    for n in range(N - 1, -1, -1):
        t = activation_derivative(act, preacts[n]) * lam  # (s, w)
        gK[n] = h * (t.T @ states[n])
        gb[n] = h * t.sum()
        lam = lam + h * (t @ K[n])

    # Tikhonov and time-derivative (ddt) terms
    gK += g_tik * K
    gb += g_tik * b
    if N > 1:
        cK = g_ddt / h**2
        dK = K[1:] - K[:-1]
        db = b[1:] - b[:-1]
        gK[1:] += cK * dK
        gK[:-1] -= cK * dK
        gb[1:] += cK * db
        gb[:-1] -= cK * db
    grads["weights"] = gK
    grads["biases"] = gb

    if opening == "dense":
        Ko = np.asarray(params["opening_weight"], dtype=np.float64)
        bo = float(params["opening_bias"])
        t = activation_derivative(act, zo) * lam
        grads["opening_weight"] = t.T @ X + g_tik * Ko
        grads["opening_bias"] = np.float64(t.sum() + g_tik * bo)
    return J, loss, accuracy, grads


# ----------------------------------------------------------------------------
# flat-vector helpers (CONTRACTS.md ordering), handy for optimisers and tests
# ----------------------------------------------------------------------------
PARAM_ORDER = ("opening_weight", "opening_bias", "weights", "biases",
               "classifier_weight", "classifier_bias")


def param_shapes(n_f: int, w: int, N: int, n_c: int, opening: str) -> dict:
    shapes = {}
    if opening == "dense":
        shapes["opening_weight"] = (w, n_f)
        shapes["opening_bias"] = ()
    shapes["weights"] = (N, w, w)
    shapes["biases"] = (N,)
    shapes["classifier_weight"] = (n_c, w)
    shapes["classifier_bias"] = (n_c,)
    return shapes


def flatten(params: dict) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(params[k], dtype=np.float64))
                           for k in PARAM_ORDER if k in params])


def unflatten(theta: np.ndarray, shapes: dict) -> dict:
    out, pos = {}, 0
    for k in PARAM_ORDER:
        if k not in shapes:
            continue
        size = int(np.prod(shapes[k], dtype=np.int64))
        out[k] = theta[pos:pos + size].reshape(shapes[k])
        pos += size
    if pos != theta.size:
        raise ValueError("theta has the wrong length")
    return out
