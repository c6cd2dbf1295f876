"""Strict JSON everywhere (issue 16): a diverged run used to write bare NaN into
summary.json and the stdout summary, which standard JSON readers refuse. Non-finite
numbers are written as null, and the summary's stop_reason says which ones."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from layerparallel import cli
from layerparallel.io import dumps_strict, finite_json, write_json


def strict_loads(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def test_non_finite_values_become_null_with_their_paths():
    obj = {"a": math.nan, "b": [1.0, math.inf], "c": {"d": np.float64(-np.inf), "e": np.float32(2.5)},
           "f": np.arange(3), "g": "text", "h": None, "i": True}
    clean, bad = finite_json(obj)
    assert bad == ["a", "b[1]", "c.d"]
    assert clean == {"a": None, "b": [1.0, None], "c": {"d": None, "e": 2.5}, "f": [0, 1, 2], "g": "text",
                     "h": None, "i": True}
    assert strict_loads(dumps_strict(obj)) == clean


def test_write_json_is_strict(tmp_path):
    p = tmp_path / "x.json"
    write_json(p, {"loss": float("nan"), "history": [{"loss": float("inf")}]})
    text = p.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert strict_loads(text) == {"loss": None, "history": [{"loss": None}]}


def test_a_diverged_run_writes_strict_json_and_says_why(tmp_path, capsys, monkeypatch):
    """The training loop is replaced by one whose loss came out NaN, as a diverged run's does."""
    import layerparallel.train as train_module

    real = train_module.train

    def diverged(*args, **kwargs):
        result = real(*args, **kwargs)
        result.final["val_loss"] = float("nan")
        result.final["train_loss"] = float("inf")
        return result

    monkeypatch.setattr(train_module, "train", diverged)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nname = "peaks"\ntrain_size = 100\nval_size = 20\n[model]\nwidth = 8\nlayers = 4\n'
                   '[optimizer]\nmax_iter = 2\n')
    out = tmp_path / "run"
    assert cli.main(["train", str(cfg), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    line = strict_loads(printed)
    summary = strict_loads((out / "summary.json").read_text())
    assert summary["val_loss"] is None and line["val_loss"] is None
    assert "non-finite values written as null: " in summary["stop_reason"]
    assert "val_loss" in summary["stop_reason"] and "train_loss" in summary["stop_reason"]
    assert line["stop_reason"] == summary["stop_reason"]
