"""Device selection: ``train.device`` / ``device=`` is ``"cpu"``, ``"cuda"`` (a GPU:
states, adjoints, activation derivatives, parameters and gradients stay in device
memory; every interval of an MGRIT level is one kernel launch) or ``"emulator"``
(the same kernel bodies run on the CPU over their launch grids: slow, exact, for
testing device-resident training where no GPU exists)."""
from __future__ import annotations

from . import _core

__all__ = ["DEVICES", "cuda_available", "check_device"]

DEVICES = ("cpu", "cuda", "emulator")


def cuda_available() -> bool:
    """True when the CUDA backend is compiled in and a usable device is present."""
    return _core.built_with_cuda() and _core.cuda_status().startswith("CUDA device")


def check_device(device: str, kind: str = "dense") -> str:
    """Return ``device`` or raise ValueError with one sentence saying why it cannot be used
    (unknown name, a convolutional model, or no usable CUDA device and why)."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu":
        return device
    if kind != "dense":
        raise ValueError(f"device {device!r} trains dense networks only; model.kind = {kind!r} runs on the cpu")
    if device == "cuda" and not cuda_available():
        raise ValueError(f"device 'cuda' is not available: {_core.cuda_status()}")
    return device
