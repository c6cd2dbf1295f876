"""The adaptive simultaneous mode (issue 14): every evaluation solves to tolerances that
follow the gradient norm (adjoint eta * gamma, forward eta * gamma^2 with
gamma = |g| / |g_0|), within adaptive_max_cycles; the history reports the cycles."""
from __future__ import annotations

import math

import numpy as np
import pytest

import layerparallel as lp
from layerparallel.solver import MGRIT_COLUMNS


@pytest.fixture(scope="module")
def data():
    return lp.generate_peaks(300, 50, seed=4)


def model():
    return lp.ResNet(2, 5, 6, 24, 5.0, seed=2, init="normal", init_opening=1.0, init_hidden=0.1,
                     init_classifier=0.1)


def test_the_tolerances_follow_the_gradient_norm():
    m = model()
    s = lp.Solver(m, "simultaneous", lp.MgritOptions(cfactor=4, adaptive=True, adaptive_eta=0.2, tol=1e-9))
    inner = s.inner
    assert inner.tolerances() == (0.2, 0.2)  # nothing measured yet
    inner.observe_gradient(2.0)
    inner.observe_gradient(0.5)
    f, a = inner.tolerances()
    assert a == pytest.approx(0.2 * 0.25) and f == pytest.approx(0.2 * 0.25 ** 2)
    inner.observe_gradient(1e-12)
    assert inner.tolerances() == (1e-9, 1e-9)  # never below tol
    inner.observe_gradient(5.0)
    assert inner.tolerances() == (0.2, 0.2)  # never above eta


def test_adaptive_evaluations_solve_to_the_tolerance(data):
    m = model()
    opts = lp.MgritOptions(cfactor=4, adaptive=True, adaptive_eta=0.1, adaptive_max_cycles=6)
    s = lp.Solver(m, "simultaneous", opts)
    ev = s(m.theta, data.train_x, data.train_y)
    g0 = math.sqrt(np.dot(ev.gradient, ev.gradient))
    assert s.inner.g0 == pytest.approx(g0, rel=1e-12)
    # The same point again: the warm start already meets the tolerance, no cycle runs.
    again = s(m.theta, data.train_x, data.train_y)
    assert again.mgrit["forward"]["cycles"] == 0 and again.mgrit["adjoint"]["cycles"] == 0
    # A moved point: cycles until the relative residual meets the bound, at most 6.
    theta = m.theta + 0.05 * np.random.default_rng(0).standard_normal(m.size)
    ev = s(theta, data.train_x, data.train_y)
    for name in ("forward", "adjoint"):
        rep = ev.mgrit[name]
        assert 1 <= rep["cycles"] <= 6
        assert rep["cycles"] == 6 or rep["converged"]
    # The solves are much closer to exact than the bound requires of the gradient:
    exact = lp.Solver(m, "serial")(theta, data.train_x, data.train_y)
    err = np.linalg.norm(ev.gradient - exact.gradient) / np.linalg.norm(exact.gradient)
    assert err < 0.1


def test_the_fixed_budget_stays_available(data):
    m = model()
    s = lp.Solver(m, "simultaneous", lp.MgritOptions(cfactor=4, fwd_iterations=2, bwd_iterations=1))
    s(m.theta, data.train_x, data.train_y)
    ev = s(m.theta, data.train_x, data.train_y)
    assert ev.mgrit["forward"]["cycles"] == 2 and ev.mgrit["adjoint"]["cycles"] == 1


def test_adaptive_training_reports_its_cycles_and_trains(data):
    m = model()
    s = lp.Solver(m, "simultaneous", lp.MgritOptions(cfactor=4, adaptive=True))
    r = lp.train(m, data, solver=s, max_iter=60)
    assert "cycles" in MGRIT_COLUMNS and "cycles" in r.columns
    total = sum(h["cycles"] for h in r.history)
    assert total == r.mgrit["forward_cycles"] + r.mgrit["adjoint_cycles"]
    assert all(h["cycles"] >= 0 for h in r.history)
    assert r.final["train_accuracy"] > 0.6


@pytest.mark.parametrize("key, value, words", [
    ("adaptive_eta", 0.0, "adaptive_eta"),
    ("adaptive_max_cycles", 0, "adaptive_max_cycles"),
    ("adaptive", "yes", "adaptive"),
])
def test_bad_adaptive_options_are_refused(key, value, words):
    with pytest.raises(ValueError, match=words):
        lp.MgritOptions(**{key: value})
