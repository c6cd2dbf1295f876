"""Device selection: ``train.device`` / ``device=`` is ``"cpu"``, ``"cuda"`` (a GPU:
states, adjoints, activation derivatives, parameters and gradients stay in device
memory; every interval of an MGRIT level is one kernel launch) or ``"emulator"``
(the same kernel bodies run on the CPU over their launch grids: slow, exact, for
testing device-resident training where no GPU exists)."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from . import _core

__all__ = ["DEVICES", "cuda_available", "cuda_status", "check_device", "locate_cublas"]

DEVICES = ("cpu", "cuda", "emulator")


def cuda_available() -> bool:
    """True when the CUDA backend is compiled in and a usable device is present."""
    return _core.built_with_cuda() and _core.cuda_status().startswith("CUDA device")


def cuda_status() -> str:
    """One sentence saying whether the CUDA backend can be used here and, if not, why
    (built without CUDA, no device, a driver older than the runtime, ...)."""
    return str(_core.cuda_status())


def locate_cublas() -> str | None:
    """The cuBLAS library of an installed ``nvidia-cublas`` wheel, exported as
    ``LP_CUBLAS_LIBRARY`` for the engine (which opens cuBLAS at run time and whose
    ``dlopen`` does not search site-packages). An explicit ``LP_CUBLAS_LIBRARY`` wins;
    None when neither exists (the engine then tries the system's ``libcublas``)."""
    if os.environ.get("LP_CUBLAS_LIBRARY"):
        return os.environ["LP_CUBLAS_LIBRARY"]
    spec = importlib.util.find_spec("nvidia")
    for base in (spec.submodule_search_locations or []) if spec else []:
        for pattern in ("cu*/lib/libcublas.so.*", "cublas/lib/libcublas.so.*"):
            hits = sorted(Path(base).glob(pattern))
            if hits:
                os.environ["LP_CUBLAS_LIBRARY"] = str(hits[-1])
                return str(hits[-1])
    return None


def check_device(device: str, kind: str = "dense", opening: str = "") -> str:
    """Return ``device`` or raise ValueError with one sentence saying why it cannot be used
    (unknown name, a convolutional model with the learned conv opening, or no usable CUDA
    device and why)."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu":
        return device
    if kind == "conv" and opening == "conv":
        raise ValueError(f"device {device!r} trains convolutional networks with the replicate opening; "
                         "model.opening = \"conv\" runs on the cpu")
    if device == "cuda":
        if not cuda_available():
            raise ValueError(f"device 'cuda' is not available: {cuda_status()}")
        locate_cublas()
    return device
