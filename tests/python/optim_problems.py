"""Small optimisation problems shared by the optimiser tests."""
from __future__ import annotations

import numpy as np


def quadratic(n=6, seed=0, cond=50.0):
    """f(x) = x^T A x / 2 - b^T x with A of condition number ``cond``; returns
    (fun, A, b, x*), fun(x) -> (f, g)."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    A = Q @ np.diag(np.geomspace(1.0, cond, n)) @ Q.T
    b = rng.normal(size=n)
    xstar = np.linalg.solve(A, b)

    def fun(x):
        return float(0.5 * x @ A @ x - b @ x), A @ x - b
    return fun, A, b, xstar
