"""The one-shot evaluation forms act' and the parameter gradient inside the last
finest sweeps of its fixed-budget solves (ResNetMgrit.set_fused_final_sweep): the
same objective, gradient and step counts bit for bit as separate passes, over
activations, hierarchies, budgets and warm-started iterations."""
from __future__ import annotations

import numpy as np
import pytest

from layerparallel import _core
from layerparallel.data import generate_peaks
from layerparallel.model import Regularization, ResNet

CONFIGS = [  # layers, cfactor, relaxation, levels
    (32, 4, "F,FCF", 2),
    (30, 2, "FCF", 3),
    (33, 4, "F", 3),
    (16, 2, "F", 4),
]


@pytest.mark.parametrize("activation", ["tanh", "relu", "smooth_relu"])
@pytest.mark.parametrize("layers,cfactor,relax,levels", CONFIGS)
@pytest.mark.parametrize("examples", [200, 700])  # one partial chunk of 256 examples; several
def test_fused_final_sweep_equals_separate_passes(activation, layers, cfactor, relax, levels, examples):
    data = generate_peaks(examples, 10, seed=1)
    X, y = data.train_x, data.train_y
    model = ResNet(2, 5, 8, layers, 5.0, activation, "dense", regularization=Regularization(1e-7, 1e-7, 1e-7),
                   seed=2, init="normal", init_opening=1.0, init_hidden=0.3, init_classifier=0.3)
    opts = {"max_levels": levels, "cfactor": cfactor, "min_coarse": 2, "relax": relax, "skip_first_down": True}
    fused = _core.ResNetMgrit(model.core, X.shape[0], opts, opts)
    separate = _core.ResNetMgrit(model.core, X.shape[0], opts, opts)
    separate.set_fused_final_sweep(False)
    theta = model.theta.copy()
    r = model.regularization
    for it in range(4):
        budgets = (2, 1 + it % 2)
        a = fused.evaluate(theta, X, y, r.tikhonov, r.classifier, r.ddt, *budgets, True)
        b = separate.evaluate(theta, X, y, r.tikhonov, r.classifier, r.ddt, *budgets, True)
        assert np.array_equal(a["gradient"], b["gradient"]), f"iteration {it}"
        assert a["objective"] == b["objective"]
        assert a["forward"]["steps"] == b["forward"]["steps"]
        assert a["adjoint"]["steps"] == b["adjoint"]["steps"]
        np.testing.assert_array_equal(a["adjoint"]["residuals"], b["adjoint"]["residuals"])
        theta -= 0.1 * a["gradient"]


def test_fused_final_sweep_matches_serial_gradient_when_converged():
    # Warm-started cycles at fixed parameters converge: the one-shot gradient (formed
    # in the final sweeps) becomes the serial one.
    data = generate_peaks(400, 10, seed=3)
    model = ResNet(2, 5, 8, 24, 5.0, "tanh", "dense", seed=4, init="normal", init_hidden=0.3)
    opts = {"max_levels": 2, "cfactor": 4, "min_coarse": 2, "relax": "F,FCF"}
    solver = _core.ResNetMgrit(model.core, 400, opts, opts)
    for _ in range(8):
        d = solver.evaluate(model.theta, data.train_x, data.train_y, 0.0, 0.0, 0.0, 3, 3, True)
    ev = model.evaluate(data.train_x, data.train_y, regularized=False)
    np.testing.assert_allclose(d["gradient"], ev.gradient, rtol=1e-9, atol=1e-13)
