"""CUDA availability as the package reports it. Device cases run only where a
GPU is present and otherwise skip with the compiled library's own reason."""
from __future__ import annotations

import pytest

import layerparallel as lp
from layerparallel import _core
from layerparallel.device import check_device, cuda_available


def _no_device_reason() -> str:
    return f"no usable CUDA device: {_core.cuda_status()}"


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason=_no_device_reason())
class TestOnDevice:
    def test_status_names_the_device(self) -> None:
        assert _core.cuda_status().startswith("CUDA device 0: ")

    def test_device_is_accepted_once_training_on_it_exists(self) -> None:
        # Training on the GPU is not implemented yet: the refusal must say so, not blame the device.
        with pytest.raises(ValueError, match="not implemented"):
            check_device("cuda")


@pytest.mark.skipif(cuda_available(), reason="a CUDA device is present; TestOnDevice covers it")
def test_cuda_refusal_names_the_cause_here() -> None:
    status = _core.cuda_status()
    assert not cuda_available()
    assert lp.cuda_available() is False
    if not _core.built_with_cuda():
        assert status == "layerparallel was built without CUDA"
    else:
        assert status.startswith(("no CUDA device was found", "the CUDA driver is older than the runtime"))
    with pytest.raises(ValueError) as err:
        check_device("cuda")
    assert str(err.value) == f"device 'cuda' is not available: {status}"


def test_cpu_is_always_accepted() -> None:
    assert check_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="'cpu' or 'cuda'"):
        check_device("tpu")
