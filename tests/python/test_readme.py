"""The README's Python examples run as written (with fewer iterations)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, monkeypatch, tmp_path):
    code = BLOCKS[index].replace("range(100)", "range(5)").replace('"optimizer.max_iter=50"', '"optimizer.max_iter=5"')
    code = code.replace('model.save("params.npz")', f'model.save({str(tmp_path / "params.npz")!r})')
    monkeypatch.chdir(ROOT)
    exec(compile(code, f"README block {index}", "exec"), {})
