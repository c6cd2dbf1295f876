"""The three training modes: exact MGRIT reproduces serial training, the
simultaneous (one-shot) mode trains, and the safeguard catches a stalling MGRIT."""
from __future__ import annotations

import numpy as np
import pytest

from layerparallel import _core
from layerparallel.config import config_from_dict
from layerparallel.data import generate_peaks
from layerparallel.train import MgritSolver, build_model, train


def cfg_for(mode, **sections):
    d = {"data": {"train_size": 500, "val_size": 100, "seed": 2},
         "model": {"width": 8, "layers": 32, "T": 5.0, "init_hidden": 0.1, "init_opening": 0.1,
                   "init_classifier": 0.1},
         "optimizer": {"max_iter": 20},
         "train": {"mode": mode, "seed": 1},
         "mgrit": {"cfactor": 2, "min_coarse": 2}}
    for k, v in sections.items():
        d.setdefault(k, {}).update(v)
    return config_from_dict(d)


@pytest.fixture(scope="module")
def data():
    return generate_peaks(500, 100, seed=2)


def run(cfg, data):
    model = build_model(cfg, data)
    return model, train(model, data, cfg)


def test_exact_mode_reproduces_serial_history(data):
    m_s, serial = run(cfg_for("serial"), data)
    m_e, exact = run(cfg_for("exact"), data)
    assert exact.iterations == serial.iterations == 20
    for rs, re in zip(serial.history, exact.history):
        assert re["objective"] == pytest.approx(rs["objective"], rel=1e-8)
        assert re["grad_norm"] == pytest.approx(rs["grad_norm"], rel=1e-6)
        assert re["exact"] == 1
    np.testing.assert_allclose(m_e.theta, m_s.theta, rtol=1e-6, atol=1e-9)
    assert exact.mgrit["levels"] > 2


@pytest.mark.parametrize("cfactor, relax", [(2, "F,FCF"), (4, "FCF"), (3, "F")])
def test_exact_gradient_equals_serial_gradient(data, cfactor, relax):
    cfg = cfg_for("exact", mgrit={"cfactor": cfactor, "relax": relax})
    model = build_model(cfg, data)
    model.theta += np.random.default_rng(0).normal(scale=0.2, size=model.size)
    ev = model.evaluate(data.train_x, data.train_y)
    solver = MgritSolver(model, cfg.mgrit, "exact")
    me = solver(model.theta, data.train_x, data.train_y)
    assert me.objective == pytest.approx(ev.objective, rel=1e-12)
    np.testing.assert_allclose(me.gradient, ev.gradient, rtol=0, atol=1e-10 * np.abs(ev.gradient).max())
    assert solver.last_report["forward"]["converged"] and solver.last_report["adjoint"]["converged"]


def test_simultaneous_uses_the_budget_and_trains(data):
    cfg = cfg_for("simultaneous", optimizer={"max_iter": 60}, mgrit={"fwd_iterations": 2, "bwd_iterations": 1})
    model, res = run(cfg, data)
    rows = res.history[1:]
    assert all(r["fwd_cycles"] == 2 and r["bwd_cycles"] == 1 for r in rows if not r["exact"])
    assert res.history[-1]["objective"] < 0.7 * res.history[0]["objective"]
    assert res.final["train_accuracy"] > 0.6
    assert res.mgrit["forward_cycles"] >= 2 * res.mgrit["evaluations"] - 2


def test_safeguard_catches_a_stalling_solver(data):
    # Relaxation with the coarse grid far too coarse for a large step h (T = 40):
    # one cycle per evaluation cannot keep up, the convergence factor exceeds the
    # limit, and the safeguard switches to exact solves and logs it.
    cfg = cfg_for("simultaneous", model={"T": 40.0, "layers": 32, "init_hidden": 0.5},
                  optimizer={"max_iter": 15},
                  mgrit={"cfactor": 8, "relax": "F", "fwd_iterations": 1, "bwd_iterations": 1,
                         "safeguard_factor": 0.5, "safeguard_iterations": 2})
    model, res = run(cfg, data)
    switches = res.mgrit["safeguard_switches"]
    assert switches, "the safeguard never fired"
    assert all("factor" in s["reason"] or "line search" in s["reason"] for s in switches)
    assert any(r["exact"] == 1 for r in res.history[1:])
    # Without the safeguard the same run never solves exactly.
    cfg_off = cfg_for("simultaneous", model={"T": 40.0, "layers": 32, "init_hidden": 0.5},
                      optimizer={"max_iter": 15},
                      mgrit={"cfactor": 8, "relax": "F", "fwd_iterations": 1, "bwd_iterations": 1,
                             "safeguard": False})
    _, res_off = run(cfg_off, data)
    assert not res_off.mgrit["safeguard_switches"]
    assert all(r["exact"] == 0 for r in res_off.history[1:])


def test_minibatches_with_mgrit_restart_per_batch(data):
    cfg = cfg_for("simultaneous", optimizer={"name": "adam", "batch_size": 100, "max_iter": 10,
                                             "learning_rate": 0.01})
    model, res = run(cfg, data)
    assert res.iterations == 10 and np.isfinite(res.final["objective"])


def test_interval_threads_do_not_change_results(data):
    out = []
    for threads in (1, 2):
        cfg = cfg_for("simultaneous", optimizer={"max_iter": 5}, mgrit={"threads": threads})
        _, res = run(cfg, data)
        out.append([r["objective"] for r in res.history])
    _core.set_num_threads(0)
    assert out[0] == out[1]


@pytest.mark.parametrize("options", [
    {"store": "cpoints"},
    {"fmg": True},
    {"skip_first_down": True},
    {"cycle": "F"},
    {"relax": "FCF,FCFCF", "cfactor": 3},
    {"cfactor_fine": 4, "cfactor": 2, "max_levels": 3},
])
def test_engine_options_give_the_serial_gradient(data, options):
    cfg = cfg_for("exact", mgrit=options)
    model = build_model(cfg, data)
    model.theta += np.random.default_rng(1).normal(scale=0.2, size=model.size)
    ev = model.evaluate(data.train_x, data.train_y)
    solver = MgritSolver(model, cfg.mgrit, "exact")
    for _ in range(2):  # the second call is warm-started
        me = solver(model.theta, data.train_x, data.train_y)
        assert me.objective == pytest.approx(ev.objective, rel=1e-12)
        np.testing.assert_allclose(me.gradient, ev.gradient, rtol=0, atol=1e-10 * np.abs(ev.gradient).max())
