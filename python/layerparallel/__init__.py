"""layerparallel: layer-parallel training of deep residual networks with MGRIT.

A compiled C++ engine (``layerparallel._core``) under a thin Python API.
Modules: :mod:`config` (TOML experiments), :mod:`data` (Peaks and files),
:mod:`model` (the network), :mod:`optim` (L-BFGS, gradient descent, Adam),
:mod:`train` (the training loop), :mod:`cli` (the command line).
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Names resolved on first use, so that the pure-Python modules (config, data,
# optim) import without the compiled core (useful while building it).
_LAZY = {
    "ResNet": "model",
    "Regularization": "model",
    "Evaluation": "model",
    "load_config": "config",
    "Config": "config",
    "generate_peaks": "data",
    "load_dataset": "data",
    "Dataset": "data",
    "LBFGS": "optim",
    "GradientDescent": "optim",
    "Adam": "optim",
    "solve_ode": "ode",
    "check_step": "ode",
    "set_num_threads": "_core",
    "num_threads": "_core",
    "cuda_available": "device",
}

__all__ = sorted(_LAZY) + ["__version__"]


_RENAMED = {"solve_ode": "solve"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'layerparallel' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
