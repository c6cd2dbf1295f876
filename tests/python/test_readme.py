"""The README's Python examples run as written: every ```python block is pulled out
of README.md and executed, in order, in one namespace (a later block may continue an
earlier one, as the reader does). The "Many processes" blocks also run under mpiexec
on two processes. User code in the README never touches the compiled module."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end >= 0 else len(README)]


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 5
    assert re.findall(r"```python\n(.*?)```", _section("Python API"), re.S)
    assert re.findall(r"```python\n(.*?)```", _section("Many processes"), re.S)


def test_readme_python_examples_run(monkeypatch, tmp_path):
    # Files the examples write land in tmp_path; the examples folder is where the
    # README says (commands run from the repository root).
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    for index, code in enumerate(BLOCKS):
        exec(compile(code, f"README python block {index}", "exec"), namespace)
    assert (tmp_path / "params.npz").exists()


def test_user_code_in_the_readme_never_touches_the_compiled_module():
    for index, code in enumerate(BLOCKS):
        assert "_core" not in code, f"README python block {index} uses _core"
    # Outside the build notes (the CMake option that builds the module), the README
    # names neither the compiled module nor the private modules' internals.
    text = README.replace(_section("Development"), "")
    assert "_core" not in text
    assert "CoreComm" not in text and "layerparallel.parallel" not in text


MPIEXEC = shutil.which("mpiexec") or next(
    (str(p) for p in [Path(sys.executable).parent / "mpiexec"] if p.exists()), None)


@pytest.mark.mpi
@pytest.mark.skipif(MPIEXEC is None, reason="mpiexec not found")
def test_readme_many_processes_example_runs_under_mpiexec(tmp_path):
    pytest.importorskip("mpi4py")
    script = tmp_path / "readme_mpi.py"
    script.write_text("\n".join(re.findall(r"```python\n(.*?)```", _section("Many processes"), re.S)))
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", PRTE_MCA_rmaps_default_mapping_policy=":oversubscribe",
               OMPI_MCA_btl_vader_single_copy_mechanism="none")
    env.pop("GOMP_SPINCOUNT", None)
    r = subprocess.run([MPIEXEC, "--oversubscribe", "-n", "2", sys.executable, str(script)], capture_output=True,
                       text=True, timeout=180, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if line.strip()]
    # The root prints the validation accuracy, then the predicted wall time of the traced evaluation.
    assert len(lines) == 2, r.stdout
    assert 0.0 <= float(lines[0]) <= 1.0 and float(lines[1]) > 0.0
