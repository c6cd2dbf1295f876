"""layerparallel: layer-parallel training of deep residual networks with MGRIT.

A compiled C++ engine (``layerparallel._core``, never needed in user code) under
a Python API::

    import layerparallel as lp
    data = lp.generate_peaks(500, 100)
    model = lp.ResNet(n_features=2, n_classes=5, width=8, layers=32)
    solver = lp.Solver(model, mode="simultaneous", mgrit=lp.MgritOptions(cfactor=4))
    result = lp.train(model, data, optimizer=lp.LBFGS(), solver=solver, max_iter=20)

Modules: :mod:`config` (TOML experiments), :mod:`data` and :mod:`datasets`
(data sets), :mod:`model` (the networks), :mod:`options` (MGRIT options),
:mod:`solver` (gradient solvers), :mod:`optim` (L-BFGS, gradient descent,
Adam), :mod:`train` (the training loop), :mod:`comm`, :mod:`grid` and
:mod:`layer_parallel` (many processes), :mod:`device` (GPUs), :mod:`threads`,
:mod:`ode` (MGRIT for any ODE), :mod:`scaling` (predicted wall time), :mod:`cli`
(the command line).
"""
from __future__ import annotations

import os
from importlib import import_module
from typing import Any

# OpenMP threads that wait at a barrier spin for a while before sleeping. With
# libgomp's default spin a loaded or oversubscribed machine (several MPI ranks
# per core, a CI runner) turns every barrier into a lost time slice: measured
# here 24x slower on the test suite with one busy core. A shorter spin costs
# nothing on an idle machine. Users who set either variable keep their choice.
if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "10000"

__version__ = "0.1.0"


def _preload_openblas() -> None:
    """Loads the scipy-openblas32 wheel's library when the compiled core needs it and
    cannot find it through its run path (the wheel installed in another site-packages
    than this package, e.g. a virtual environment over the system's packages)."""
    try:
        import ctypes
        import scipy_openblas32
    except ImportError:
        return
    lib = os.path.join(scipy_openblas32.get_lib_dir(), f"lib{scipy_openblas32.get_library()}.so")
    if os.path.exists(lib):
        ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)


try:
    from . import _core  # noqa: F401
except ImportError as _exc:  # pragma: no cover - depends on the installation
    if "scipy_openblas" in str(_exc):
        _preload_openblas()
    del _exc

# Names resolved on first use, so that the pure-Python modules (config, data,
# optim) import without the compiled core (useful while building it).
_LAZY = {
    "ResNet": "model",
    "ConvResNet": "model",
    "Network": "model",
    "Regularization": "model",
    "Evaluation": "model",
    "load_model": "model",
    "MgritOptions": "options",
    "Solver": "solver",
    "train": "train",
    "TrainResult": "train",
    "build_model": "train",
    "ProcessGrid": "grid",
    "world": "comm",
    "load_config": "config",
    "Config": "config",
    "generate_peaks": "data",
    "load_dataset": "data",
    "Dataset": "dataset",
    "LBFGS": "optim",
    "GradientDescent": "optim",
    "Adam": "optim",
    "SGD": "optim",
    "make_schedule": "optim",
    "Checkpointer": "checkpoint",
    "TrainingInterrupted": "train",
    "solve_ode": "ode",
    "check_step": "ode",
    "set_num_threads": "threads",
    "num_threads": "threads",
    "cuda_available": "device",
    "cuda_status": "device",
    "show_config": "info",
    "config_info": "info",
}

__all__ = sorted(_LAZY) + ["__version__"]


_RENAMED = {"solve_ode": "solve"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'layerparallel' has no attribute {name!r}")
    mod = import_module(f".{module}", __name__)
    # lp.train is the train module itself, which is callable as train.train: the
    # package attribute of a submodule and a function of the same name cannot differ.
    value = mod if name == "train" else getattr(mod, _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
