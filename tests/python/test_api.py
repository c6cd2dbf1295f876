"""The public Python API: every name of layerparallel.__all__, MgritOptions, Solver in
every mode, lp.train without a configuration (the same numbers as the configuration
path), one meaning of the MGRIT tolerance, and the module layout (no import cycle,
compatibility names)."""
from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

import layerparallel as lp
from layerparallel.config import SCHEMA, config_from_dict

PUBLIC = sorted(n for n in lp.__all__ if n != "__version__")


# ---------------------------------------------------------------------- every public name

@pytest.mark.parametrize("name", PUBLIC)
def test_public_name_is_importable_and_documented(name):
    ns: dict = {}
    exec(f"from layerparallel import {name}", ns)
    obj = ns[name]
    assert obj is getattr(lp, name)
    doc = (getattr(obj, "__doc__", None) or "").strip()
    assert doc, f"layerparallel.{name} has no docstring"
    # A pybind11 signature line alone ("f(x: int) -> None") is not documentation.
    assert not re.fullmatch(r"\w+\(.*\) -> \S+", doc), f"layerparallel.{name} has only a signature"


def test_all_names_the_api_needs_are_public():
    needed = {"Solver", "MgritOptions", "train", "TrainResult", "ProcessGrid", "ResNet", "ConvResNet", "Evaluation",
              "Regularization", "LBFGS", "GradientDescent", "Adam", "Dataset", "generate_peaks", "load_config",
              "load_dataset", "build_model", "load_model", "solve_ode", "check_step"}
    assert needed <= set(lp.__all__)
    assert "_core" not in lp.__all__


def test_train_is_callable_whatever_was_imported_first():
    # layerparallel.train is a module and the training function at once: importing the
    # module first (as the command line does) must not hide the function.
    code = ("import layerparallel.train, layerparallel as lp; from layerparallel.train import build_model; "
            "assert callable(lp.train) and lp.train.TrainResult is layerparallel.train.TrainResult; "
            "import inspect; assert 'optimizer' in inspect.signature(lp.train).parameters")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------- MgritOptions

def test_mgrit_options_have_every_config_key_with_its_default():
    fields = {f.name: f.default for f in dataclasses.fields(lp.MgritOptions)}
    assert list(fields) == list(SCHEMA["mgrit"])
    assert fields == {k: key.default for k, key in SCHEMA["mgrit"].items()}
    cfg = config_from_dict({"mgrit": {"cfactor": 4, "tol": 1e-9, "relax": "FCF"}})
    opts = lp.MgritOptions.coerce(cfg.mgrit)
    assert opts == lp.MgritOptions(cfactor=4, tol=1e-9, relax="FCF")
    assert opts.to_dict() == cfg.mgrit.to_dict()


@pytest.mark.parametrize("field, value, words", [
    ("cfactor", 1, "must be >= 2"),
    ("max_levels", 0, "must be >= 1"),
    ("tol", -1.0, "must be > 0"),
    ("tol", "small", "must be of type float"),
    ("relax", "FF", "must list one relaxation per level"),
    ("cycle", "W", "must be one of"),
    ("store", "some", "must be one of"),
    ("fmg", 1, "must be of type bool"),
    ("fwd_iterations", 1.5, "must be of type int"),
    ("safeguard_factor", float("nan"), "must be a finite number"),
])
def test_mgrit_options_refuse_bad_values_naming_the_field(field, value, words):
    with pytest.raises(ValueError) as err:
        lp.MgritOptions(**{field: value})
    msg = str(err.value)
    assert msg.startswith(f"MgritOptions.{field} ") and words in msg
    assert not re.search(r"\.\s+[A-Z]", msg) and "\n" not in msg  # one sentence


def test_mgrit_options_coerce_refuses_unknown_keys_and_types():
    with pytest.raises(ValueError, match="unknown MGRIT option 'cfactr'"):
        lp.MgritOptions.coerce({"cfactr": 2})
    with pytest.raises(ValueError, match="mgrit must be an MgritOptions"):
        lp.MgritOptions.coerce(4)
    assert lp.MgritOptions.coerce(None) == lp.MgritOptions()
    assert lp.MgritOptions().replace(cfactor=8).cfactor == 8
    with pytest.raises(ValueError, match="MgritOptions.cfactor"):
        lp.MgritOptions().replace(cfactor=0)


# ---------------------------------------------------------------------- Solver

@pytest.fixture(scope="module")
def data():
    return lp.generate_peaks(200, 50, seed=3)


def small_model(layers=16, seed=1):
    return lp.ResNet(2, 5, 8, layers, 5.0, "smooth_relu", "dense", regularization=lp.Regularization(1e-4, 1e-4, 1e-4),
                     seed=seed, init="normal", init_opening=1.0, init_hidden=0.2, init_classifier=0.2)


def test_solver_serial_is_backpropagation(data):
    model = small_model()
    ev = lp.Solver(model)(model.theta, data.train_x, data.train_y)
    ref = model.evaluate(data.train_x, data.train_y)
    assert ev.objective == pytest.approx(ref.objective, rel=1e-14)
    np.testing.assert_allclose(ev.gradient, ref.gradient, rtol=1e-12, atol=1e-15)
    assert ev.mgrit is None and ev.examples == 200


def test_solver_exact_meets_tol_relative_to_the_initial_value(data):
    model = small_model(layers=32)
    tol = 1e-9
    # F-relaxation and factor-2 coarsening: about one digit per cycle, so the bound
    # decides the cycle at which the solve stops.
    solver = lp.Solver(model, mode="exact", mgrit=lp.MgritOptions(cfactor=2, relax="F", tol=tol))
    ev = solver(model.theta, data.train_x, data.train_y)
    ref = model.evaluate(data.train_x, data.train_y)
    np.testing.assert_allclose(ev.gradient, ref.gradient, rtol=0, atol=1e-8 * np.abs(ref.gradient).max())
    fwd = ev.mgrit["forward"]
    assert ev.mgrit["exact"] and fwd["converged"] and fwd["cycles"] >= 1
    u0 = model.states(data.train_x)[0]
    # tol is relative to |u_0|: the last residual meets it, the one before did not.
    assert fwd["residuals"][-1] <= tol * np.linalg.norm(u0) < fwd["residuals"][-2]
    assert fwd["cycles"] >= 5


def test_solver_simultaneous_runs_the_budget_and_warm_starts(data):
    model = small_model()
    solver = lp.Solver(model, mode="simultaneous", mgrit={"cfactor": 4, "fwd_iterations": 2, "bwd_iterations": 1})
    first = solver(model.theta, data.train_x, data.train_y)
    again = solver(model.theta, data.train_x, data.train_y)
    assert (first.mgrit["forward"]["cycles"], first.mgrit["adjoint"]["cycles"]) == (2, 1)
    assert not first.mgrit["exact"]
    # The second call starts from the first one's state: closer to the exact solve.
    assert again.mgrit["forward"]["residuals"][-1] < first.mgrit["forward"]["residuals"][-1]
    assert solver.summary()["evaluations"] == 2


def test_solver_on_the_emulator_matches_the_cpu(data):
    model = small_model(layers=8)
    opts = lp.MgritOptions(cfactor=2, tol=1e-10)
    cpu = lp.Solver(model, "exact", opts)(model.theta, data.train_x, data.train_y)
    emu = lp.Solver(model, "exact", opts, device="emulator")(model.theta, data.train_x, data.train_y)
    assert emu.objective == pytest.approx(cpu.objective, rel=1e-10)
    np.testing.assert_allclose(emu.gradient, cpu.gradient, rtol=0, atol=1e-9 * np.abs(cpu.gradient).max())


def test_solver_takes_image_batches(data):
    model = lp.ConvResNet(4, 4, 3, channels=2, layers=4, seed=0)
    X = np.random.default_rng(0).integers(0, 256, (10, 4, 4)).astype(float)
    y = np.arange(10) % 3
    ev = lp.Solver(model, "exact")(model.theta, X, y)
    assert ev.objective == pytest.approx(model.evaluate(X, y).objective, rel=1e-10)


def test_solver_on_a_one_process_grid_is_the_same(data):
    model = small_model()
    grid = lp.ProcessGrid.create(lp.world(), layer_procs=1)
    a = lp.Solver(model, "simultaneous", grid=grid)(model.theta, data.train_x, data.train_y)
    b = lp.Solver(model, "simultaneous")(model.theta, data.train_x, data.train_y)
    assert a.objective == b.objective and np.array_equal(a.gradient, b.gradient)


@pytest.mark.parametrize("kwargs, words", [
    ({"mode": "fast"}, "mode must be one of 'serial', 'exact', 'simultaneous', got 'fast'"),
    ({"device": "tpu"}, "device must be one of cpu, cuda, emulator, got 'tpu'"),
    ({"grid": 2}, "grid must be a ProcessGrid or None, got int"),
    ({"mgrit": {"cfactor": 1}}, "MgritOptions.cfactor must be >= 2"),
    ({"threads": -1}, "threads must be an integer >= 0"),
])
def test_solver_refuses_bad_input_in_one_sentence(kwargs, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        lp.Solver(small_model(layers=4), **kwargs)


def test_solver_refuses_what_is_not_a_model():
    with pytest.raises(ValueError, match="model must be a ResNet or ConvResNet, got str"):
        lp.Solver("resnet")


# ---------------------------------------------------------------------- train

def small_cfg(mode, **opt):
    return config_from_dict({
        "data": {"train_size": 200, "val_size": 50, "seed": 3},
        "model": {"width": 8, "layers": 16, "init": "normal", "init_opening": 1.0, "init_hidden": 0.2,
                  "init_classifier": 0.2},
        "optimizer": {"max_iter": 6, **opt},
        "train": {"mode": mode, "seed": 2},
        "mgrit": {"cfactor": 4, "min_coarse": 2}})


@pytest.mark.parametrize("mode", ["serial", "exact", "simultaneous"])
def test_train_without_config_gives_the_config_numbers(data, mode):
    cfg = small_cfg(mode)
    m_cfg = lp.build_model(cfg, data)
    by_cfg = lp.train(m_cfg, data, cfg)
    m_api = lp.build_model(cfg, data)
    solver = lp.Solver(m_api, mode=mode, mgrit=lp.MgritOptions(cfactor=4, min_coarse=2))
    by_api = lp.train(m_api, data, optimizer=lp.LBFGS(memory=10), solver=solver, max_iter=6, seed=2)
    assert by_api.columns == by_cfg.columns
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in by_api.history] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in by_cfg.history]
    assert np.array_equal(m_api.theta, m_cfg.theta)
    assert by_api.stop_reason == by_cfg.stop_reason and by_api.iterations == by_cfg.iterations
    assert bool(by_api.mgrit) == (mode != "serial")


def test_train_defaults_and_callback(data):
    model = small_model()
    rows = []
    opt, solver = lp.LBFGS(), lp.Solver(model)
    res = lp.train(model, data, optimizer=opt, solver=solver, max_iter=3, callback=rows.append)
    assert res.iterations == 3 and len(rows) == 4 and rows[0]["iteration"] == 0
    assert res.history == rows and res.columns == lp.TrainResult.__dataclass_fields__["columns"].default
    # The optimiser's inner products are the solver's reproducible (all-reduced) ones.
    assert opt.dot == solver.shard.dot


def test_train_with_adam_minibatches(data):
    model = small_model()
    res = lp.train(model, data, optimizer=lp.Adam(learning_rate=0.01), max_iter=4, batch_size=50,
                   solver=lp.Solver(model, "simultaneous"))
    assert res.iterations == 4 and np.isfinite(res.final["objective"])


@pytest.mark.parametrize("kwargs, words", [
    ({"max_iter": -1}, "max_iter must be an integer >= 0, got -1"),
    ({"max_iter": 2.5}, "max_iter must be an integer >= 0, got 2.5"),
    ({"eval_every": -1}, "eval_every must be an integer >= 0, got -1"),
    ({"epochs": 1.5}, "epochs must be an integer >= 0, got 1.5"),
    ({"batch_size": -5}, "batch_size must be an integer >= 0, got -5"),
    ({"gtol": -1.0}, "gtol must be a number >= 0, got -1.0"),
    ({"optimizer": "lbfgs"}, "optimizer must be an LBFGS, GradientDescent, Adam or SGD"),
    ({"solver": "exact"}, "solver must be a layerparallel.Solver, got str"),
    ({"callback": 3}, "callback must be callable"),
])
def test_train_refuses_bad_input_in_one_sentence(data, kwargs, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        lp.train(small_model(layers=4), data, **kwargs)


def test_train_refuses_a_solver_of_another_model_and_mixed_config(data):
    with pytest.raises(ValueError, match="solver was built for another model"):
        lp.train(small_model(layers=4), data, solver=lp.Solver(small_model(layers=4)))
    with pytest.raises(ValueError, match="train takes max_iter from cfg"):
        lp.train(small_model(layers=4), data, small_cfg("serial"), max_iter=3)
    with pytest.raises(ValueError, match="data must be a Dataset"):
        lp.train(small_model(layers=4), (data.train_x, data.train_y))


# ---------------------------------------------------------------------- tolerances

def test_config_tol_is_the_solver_tol(data):
    cfg = config_from_dict({"mgrit": {"tol": 1e-7}, "train": {"mode": "exact"}})
    from layerparallel.train import solver_from_config

    solver = solver_from_config(cfg, small_model(layers=4))
    assert solver.mgrit.tol == 1e-7 and solver.inner.mgrit.tol == 1e-7


def _linear(u, t0, t1, level):
    return u + (t1 - t0) * (-u)


def test_ode_tol_is_relative_to_the_initial_value():
    # A linear problem: scaling u0 scales every residual, so a tolerance relative to
    # |u0| takes the same cycles at any scale, and an absolute one does not.
    small = lp.solve_ode(_linear, [1.0, 2.0], T=4.0, N=64, cfactor=4, relax="F", tol=1e-10)
    big = lp.solve_ode(_linear, [1e6, 2e6], T=4.0, N=64, cfactor=4, relax="F", tol=1e-10)
    assert small.converged and big.converged and small.iterations == big.iterations >= 2
    assert big.residuals[-1] <= 1e-10 * np.linalg.norm([1e6, 2e6]) < big.residuals[-2]
    absolute = lp.solve_ode(_linear, [1e6, 2e6], T=4.0, N=64, cfactor=4, relax="F", atol=1e-7)
    assert absolute.converged and absolute.iterations > big.iterations
    assert absolute.residuals[-1] <= 1e-7 < absolute.residuals[-2]
    with pytest.raises(ValueError, match="mgrit option atol must be finite and >= 0"):
        lp.solve_ode(_linear, [1.0], T=1.0, N=8, atol=-1.0)


def test_ode_takes_mgrit_options():
    opts = lp.MgritOptions(cfactor=4, relax="F", tol=1e-10)
    a = lp.solve_ode(_linear, [3.0], T=4.0, N=64, mgrit=opts)
    b = lp.solve_ode(_linear, [3.0], T=4.0, N=64, cfactor=4, relax="F", tol=1e-10)
    assert a.iterations == b.iterations and np.array_equal(a.states, b.states)
    c = lp.solve_ode(_linear, [3.0], T=4.0, N=64, mgrit=opts, cfactor=2)  # keywords override
    assert c.levels > a.levels
    # cfactor_fine = 0 means "as cfactor", as in the [mgrit] section.
    d = lp.solve_ode(_linear, [3.0], T=4.0, N=64, cfactor=4, relax="F", tol=1e-10, cfactor_fine=0)
    assert d.steps_per_level == b.steps_per_level and np.array_equal(d.states, b.states)


# ---------------------------------------------------------------------- module layout

def test_data_and_datasets_do_not_import_each_other():
    code = ("import sys, layerparallel.datasets; assert 'layerparallel.data' not in sys.modules, 'datasets->data'; "
            "import layerparallel.data; assert layerparallel.data.Dataset is layerparallel.datasets.Dataset")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_former_names_still_work_with_a_warning():
    from layerparallel import comm, layer_parallel, parallel, scaling

    assert parallel.LayerParallelSolver is layer_parallel.LayerParallelSolver
    assert parallel.ProcessGrid is lp.ProcessGrid and parallel.core_comm is comm.core_comm
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert parallel.CoreComm is comm.core_comm
        assert scaling.Network is scaling.Interconnect
    assert [w.category for w in caught] == [DeprecationWarning, DeprecationWarning]
    assert "core_comm" in str(caught[0].message) and "Interconnect" in str(caught[1].message)


def test_one_class_called_network():
    from layerparallel import model, scaling

    assert "Network" not in vars(scaling) and model.Network.__name__ == "Network"


def test_gather_returns_a_vector_of_its_own(data):
    # Solver.gather's result must not share memory with the solver: a later gather or
    # an evaluation (whose regulariser fills a buffer of the shard) must leave it alone.
    model = lp.ResNet(2, 5, 8, 6, 1.0, seed=0, regularization=lp.Regularization(1e-4, 1e-4, 1e-4))
    solver = lp.Solver(model)
    first = solver.gather(solver.local(model.theta))
    kept = first.copy()
    solver.gather(solver.local(model.theta) + 1.0)
    solver(solver.local(model.theta) * 2.0, data.train_x, data.train_y)
    assert np.array_equal(first, kept)
