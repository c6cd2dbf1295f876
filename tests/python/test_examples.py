"""The shipped examples train to the promised accuracy in every mode, from the command line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from layerparallel.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["serial", "simultaneous", "exact"])
def test_peaks_example_reaches_95_percent(mode, tmp_path, capsys):
    out = tmp_path / mode
    assert main(["train", str(EXAMPLES / "peaks.toml"), "--out", str(out), "--quiet",
                 "--set", f'train.mode="{mode}"']) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == mode
    assert summary["val_accuracy"] >= 0.95, summary["val_accuracy"]
    if mode != "serial":
        assert (out / "mgrit_residuals.png").exists()
        m = summary["mgrit"]
        assert m["levels"] == 2 and m["forward_cycles"] > 0 and m["adjoint_cycles"] > 0
        for switch in m["safeguard_switches"]:
            assert {"iteration", "reason", "action"} <= set(switch)
