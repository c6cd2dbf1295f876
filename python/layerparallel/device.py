"""Device selection. Training runs on the CPU; the compiled CUDA kernels exist
(dense layer, block propagation, gradients), device-resident training does not yet."""
from __future__ import annotations

from . import _core

__all__ = ["cuda_available", "check_device"]


def cuda_available() -> bool:
    """True when the CUDA backend is compiled in and a usable device is present."""
    return _core.built_with_cuda() and _core.cuda_status().startswith("CUDA device")


def check_device(device: str) -> str:
    """Return the device name or raise ValueError saying why it cannot be used."""
    if device == "cpu":
        return device
    if device == "cuda":
        if not cuda_available():
            raise ValueError(f"device 'cuda' is not available: {_core.cuda_status()}")
        raise ValueError(
            "device 'cuda' is not available: training on the GPU is not implemented in this version "
            f"(the CUDA kernels are built; {_core.cuda_status()})"
        )
    raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
