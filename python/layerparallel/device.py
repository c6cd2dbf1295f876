"""Device selection. This build runs on the CPU; the CUDA backend arrives with its issue."""
from __future__ import annotations

from . import _core

__all__ = ["cuda_available", "check_device"]


def cuda_available() -> bool:
    """True when the CUDA backend is compiled in and a device can be used."""
    return False


def check_device(device: str) -> str:
    """Return the device name or raise ValueError saying why it cannot be used."""
    if device == "cpu":
        return device
    if device == "cuda":
        if not _core.built_with_cuda():
            raise ValueError("device 'cuda' is not available: layerparallel was built without CUDA")
        raise ValueError("device 'cuda' is not available: the CUDA backend is not implemented in this version")
    raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
