"""Training for real workloads (issue 14): a fresh gradient at every step, mini-batch
epochs that never evaluate the whole training set's gradient, metrics once per epoch
from the batches already computed."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import layerparallel as lp
from layerparallel.config import load_config
from layerparallel.data import load_dataset
from layerparallel.train import build_model, planned_steps

ROOT = Path(__file__).resolve().parents[2]


def peaks(*overrides):
    cfg = load_config(ROOT / "examples" / "peaks.toml", list(overrides))
    data = load_dataset(cfg.data, cfg.base_dir)
    return cfg, data


class Recorder:
    """Wraps a solver's inner sweep solver and records the examples of every gradient
    evaluation (the solver's own count is checked too)."""

    def __init__(self, inner):
        self._inner = inner
        self.sizes: list[int] = []

    def __call__(self, theta, X, y, **kw):
        self.sizes.append(X.shape[0])
        return self._inner(theta, X, y, **kw)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def recorded_solver(model):
    solver = lp.Solver(model)
    rec = Recorder(solver.inner)
    solver.inner = rec
    return solver, rec


def test_full_batch_adam_with_sparse_logging_takes_fresh_gradients():
    """The issue's stale-gradient case: Adam with eval_every = 50 reused the gradient of
    the last logged iteration and ended at chance (20%)."""
    cfg, data = peaks('optimizer.name="adam"', "optimizer.max_iter=100", "train.eval_every=50",
                      "optimizer.learning_rate=0.01")
    model = build_model(cfg, data)
    solver, rec = recorded_solver(model)
    r = lp.train(model, data, optimizer=lp.Adam(0.01), solver=solver, max_iter=100, eval_every=50)
    assert r.iterations == 100 and [h["iteration"] for h in r.history] == [0, 50, 100]
    assert len(rec.sizes) == 101 and set(rec.sizes) == {data.train_x.shape[0]}  # one gradient per step
    assert r.final["val_accuracy"] > 0.8  # chance is 0.2


def test_full_batch_adam_from_the_config_matches_logging_every_step():
    # The row interval changes what is logged, never the iterates.
    finals = []
    for every in (1, 7):
        cfg, data = peaks('optimizer.name="adam"', "optimizer.max_iter=20", f"train.eval_every={every}")
        model = build_model(cfg, data)
        lp.train(model, data, cfg)
        finals.append(model.theta.copy())
    assert np.array_equal(finals[0], finals[1])


@pytest.mark.parametrize("batch, epochs", [(100, 2), (128, 1), (37, 3)])
def test_a_minibatch_epoch_evaluates_only_its_batches(batch, epochs):
    cfg, data = peaks()
    n = data.train_x.shape[0]
    model = build_model(cfg, data)
    solver, rec = recorded_solver(model)
    r = lp.train(model, data, optimizer=lp.Adam(0.01), solver=solver, batch_size=batch, epochs=epochs,
                 max_iter=5)  # epochs, not max_iter, sets the length
    per_epoch = math.ceil(n / batch)
    assert r.iterations == epochs * per_epoch == planned_steps(5, epochs, batch, n)
    # Exactly the batches' gradients: no full-set gradient, no second evaluation of a batch.
    assert r.gradient_evaluations == len(rec.sizes) == epochs * per_epoch
    assert max(rec.sizes) == batch and sum(rec.sizes) == epochs * n
    # One row at the start and one per epoch, with the epoch and the throughput.
    assert [h["epoch"] for h in r.history] == [float(e) for e in range(epochs + 1)]
    assert all(h["examples_per_second"] > 0 for h in r.history[1:])
    assert r.columns[-2:] == ("epoch", "examples_per_second")


def test_running_means_are_the_means_of_the_batches():
    cfg, data = peaks()
    model = build_model(cfg, data)
    solver = lp.Solver(model)
    seen = []
    inner = solver.inner

    class Spy(Recorder):
        def __call__(self, theta, X, y, **kw):
            ev = inner(theta, X, y, **kw)
            seen.append((X.shape[0], ev.loss, ev.correct))
            return ev

    solver.inner = Spy(inner)
    r = lp.train(model, data, optimizer=lp.Adam(0.01), solver=solver, batch_size=500, epochs=2)
    k = np.array([s[0] for s in seen], float)
    loss = np.array([s[1] for s in seen])
    correct = np.array([s[2] for s in seen], float)
    for e, row in enumerate(r.history[1:]):
        part = slice(10 * e, 10 * (e + 1))  # 5000 / 500 = 10 batches an epoch
        assert row["train_loss"] == pytest.approx(np.sum(loss[part] * k[part]) / np.sum(k[part]), rel=1e-12)
        assert row["train_accuracy"] == pytest.approx(np.sum(correct[part]) / np.sum(k[part]), rel=1e-12)


def test_full_eval_measures_the_whole_training_set_without_gradients():
    cfg, data = peaks()
    model = build_model(cfg, data)
    solver, rec = recorded_solver(model)
    r = lp.train(model, data, optimizer=lp.Adam(0.01), solver=solver, batch_size=1000, epochs=1,
                 full_eval=True)
    assert len(rec.sizes) == 5 and max(rec.sizes) == 1000
    ev = model.evaluate(data.train_x, data.train_y, gradient=False, regularized=False)
    assert r.final["train_loss"] == pytest.approx(ev.loss, rel=1e-12)
    assert r.final["train_accuracy"] == ev.accuracy


def test_eval_every_counts_steps_with_minibatches():
    cfg, data = peaks()
    model = build_model(cfg, data)
    r = lp.train(model, data, optimizer=lp.Adam(0.01), batch_size=1000, max_iter=12, eval_every=4)
    assert [h["iteration"] for h in r.history] == [0, 4, 8, 12]
    assert [h["epoch"] for h in r.history] == [0.0, 0.8, 1.6, 2.4]


def test_epochs_from_the_config_and_the_batch_order_is_seeded():
    thetas = []
    for _ in range(2):
        cfg, data = peaks('optimizer.name="adam"', "optimizer.batch_size=250", "optimizer.epochs=2",
                          "train.seed=5")
        model = build_model(cfg, data)
        r = lp.train(model, data, cfg)
        assert r.iterations == 40 and len(r.history) == 3
        thetas.append(model.theta.copy())
    assert np.array_equal(*thetas)


def test_bad_epoch_settings_are_refused():
    cfg, data = peaks()
    model = build_model(cfg, data)
    with pytest.raises(ValueError, match="epochs must be an integer >= 0"):
        lp.train(model, data, epochs=-1)
    with pytest.raises(ValueError, match="full_eval must be True or False"):
        lp.train(model, data, full_eval="yes")
    with pytest.raises(ValueError, match="optimizer.epochs"):
        load_config(ROOT / "examples" / "peaks.toml", ["optimizer.epochs=-2"])
