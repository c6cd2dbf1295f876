"""What this installation is made of: ``layerparallel info`` and :func:`show_config`.

The version, the BLAS the compiled core uses and its threads, the SIMD
instruction set and the vector math of the CPU kernels, OpenMP, the MPI library
that mpi4py finds, and the CUDA build and device. Benchmarks print it first, so
their figures say which build produced them.
"""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, Optional, TextIO

__all__ = ["config_info", "show_config"]

_MPI_PROBE = ("import mpi4py; mpi4py.rc.initialize = False; mpi4py.rc.finalize = False; "
              "from mpi4py import MPI; print(MPI.Get_library_version().strip().splitlines()[0]); "
              "print(mpi4py.__version__)")


def _mpi_info() -> dict[str, Any]:
    """The MPI library of mpi4py, asked in a child process when MPI is not already
    loaded here (importing mpi4py.MPI would otherwise initialise MPI in this one)."""
    mod = sys.modules.get("mpi4py.MPI")
    if mod is not None:
        import mpi4py
        return {"mpi4py": mpi4py.__version__, "library": mod.Get_library_version().strip().splitlines()[0]}
    try:
        import mpi4py  # noqa: F401  (cheap: does not load the MPI library)
    except ImportError:
        return {"mpi4py": None, "library": "mpi4py is not installed (pip install \"layerparallel[mpi]\")"}
    try:
        out = subprocess.run([sys.executable, "-c", _MPI_PROBE], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return {"mpi4py": mpi4py.__version__, "library": f"unknown ({exc})"}
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or len(lines) < 2:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"mpi4py": mpi4py.__version__, "library": f"mpi4py cannot load its MPI library: {last}"}
    return {"mpi4py": lines[1], "library": lines[0]}


def config_info(mpi: bool = True) -> dict[str, Any]:
    """The build and run-time configuration as a dict (what :func:`show_config` prints)."""
    from . import __version__, _core

    b = dict(_core.build_info())
    info: dict[str, Any] = {
        "layerparallel": __version__,
        "python": sys.version.split()[0],
        "blas": b["blas"],
        "blas_config": b["blas_config"],
        "blas_threads": b["blas_threads"],
        "simd": b["simd"],
        "simd_float64_lanes": b["simd_doubles"],
        "vector_math": b["vector_math"],
        "openmp_version": b["openmp_version"],
        "threads": b["openmp_threads"],
        "cores": _core.max_threads(),
        "compiler": b["compiler"],
        "cuda_built": bool(_core.built_with_cuda()),
        "cuda_status": _core.cuda_status(),
    }
    if mpi:
        m = _mpi_info()
        info["mpi4py"] = m["mpi4py"]
        info["mpi_library"] = m["library"]
    return info


def show_config(file: Optional[TextIO] = None, as_json: bool = False, mpi: bool = True, prefix: str = "") -> None:
    """Prints the configuration (one ``key: value`` per line, or one JSON object), each
    line after ``prefix`` (benchmarks print it as ``# `` comment lines)."""
    info = config_info(mpi=mpi)
    out = file or sys.stdout
    if as_json:
        out.write(prefix + json.dumps(info) + "\n")
        return
    if info["blas"] == "none":
        info["blas"] = "none: wide layers (width > 32) run built-in loops, about 10x slower"
    width = max(len(k) for k in info)
    for key, value in info.items():
        out.write(f"{prefix}{key + ':':<{width + 1}} {value}\n")
