"""``layerparallel info`` / ``show_config``: what the build is made of."""
from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys

import pytest

import layerparallel as lp
from layerparallel import _core


def test_config_info_fields():
    info = lp.config_info(mpi=False)
    for key in ("layerparallel", "blas", "blas_threads", "simd", "simd_float64_lanes", "vector_math",
                "openmp_version", "threads", "cores", "cuda_built", "cuda_status"):
        assert key in info, key
    assert info["layerparallel"] == lp.__version__
    assert info["simd_float64_lanes"] >= 1
    assert info["threads"] >= 1
    assert "tanh" in info["vector_math"]


def test_threads_follow_set_num_threads():
    before = _core.num_threads()
    try:
        _core.set_num_threads(1)
        info = lp.config_info(mpi=False)
        assert info["threads"] == 1
        if info["blas_config"]:  # OpenBLAS reports its pool
            assert info["blas_threads"] == 1
    finally:
        _core.set_num_threads(before)


@pytest.mark.skipif(importlib.util.find_spec("scipy_openblas32") is None,
                    reason="the scipy-openblas32 wheel is not installed")
def test_pip_build_has_a_blas():
    # `pip install .` builds against the scipy-openblas32 wheel (a build requirement):
    # a package without BLAS here means the wide layers silently lost their GEMMs.
    assert _core.has_blas()
    assert lp.config_info(mpi=False)["blas"] != "none"


def test_show_config_text_and_json():
    buf = io.StringIO()
    lp.show_config(file=buf, mpi=False)
    text = buf.getvalue()
    assert text.splitlines()[0].startswith("layerparallel:")
    assert "blas:" in text and "simd:" in text
    buf = io.StringIO()
    lp.show_config(file=buf, as_json=True, mpi=False)
    assert json.loads(buf.getvalue())["layerparallel"] == lp.__version__


def test_cli_info():
    r = subprocess.run([sys.executable, "-m", "layerparallel", "info", "--json"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["blas"] == lp.config_info(mpi=False)["blas"]
    assert "mpi_library" in info and info["mpi_library"]


def test_wide_network_without_blas_warns(monkeypatch):
    monkeypatch.setattr(_core, "has_blas", lambda: False)
    with pytest.warns(RuntimeWarning, match="without BLAS"):
        lp.ResNet(2, 5, 40, 2, 1.0, "tanh", "dense")
