"""TOML run configuration for layerparallel.

The whole schema is the table :data:`SCHEMA` below: one entry per section,
one :class:`Key` per option (type, default, allowed choices, range). Adding a
section such as ``[mgrit]`` is a few lines there; cross-key rules live in
:func:`_check_cross`.

Usage::

    cfg = load_config("run.toml", overrides=["model.layers=64", "optimizer.name=adam"])
    cfg.model.width, cfg.data.seed, cfg.base_dir
    cfg.to_json()

All validation errors are ``ValueError`` with one sentence naming the key as
``section.key``.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "SCHEMA",
    "Config",
    "Key",
    "Section",
    "config_from_dict",
    "default_config",
    "load_config",
    "parse_override",
]


@dataclass(frozen=True)
class Key:
    """One configuration option.

    ``type`` is ``int``, ``float``, ``str`` or ``bool``. ``lo``/``hi`` bound
    numeric values (inclusive unless ``lo_open``/``hi_open``); ``choices``
    restricts strings."""

    type: type
    default: Any
    choices: tuple[str, ...] | None = None
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    doc: str = ""


def _ge(lo):
    return {"lo": lo}


def _gt(lo):
    return {"lo": lo, "lo_open": True}


_UNIT_OPEN = {"lo": 0, "hi": 1, "lo_open": True, "hi_open": True}     # (0, 1)
_UNIT_HALF = {"lo": 0, "hi": 1, "hi_open": True}                      # [0, 1)

SCHEMA: dict[str, dict[str, Key]] = {
    "data": {
        "name": Key(str, "peaks", choices=("peaks", "files", "mnist", "fashion_mnist", "digits",
                                           "indian_pines"), doc="data set"),
        "seed": Key(int, 0, **_ge(0), doc="generator / shuffling seed"),
        "train_size": Key(int, 5000, **_ge(1), doc="training examples"),
        "val_size": Key(int, 200, **_ge(1), doc="validation examples"),
        "train_features": Key(str, "", doc="path (name = files)"),
        "train_labels": Key(str, "", doc="path (name = files)"),
        "val_features": Key(str, "", doc="path (name = files)"),
        "val_labels": Key(str, "", doc="path (name = files)"),
        "folder": Key(str, "", doc="folder of the data files (mnist, fashion_mnist, indian_pines); "
                                   "relative to the config file's folder"),
        "val_from": Key(str, "test", choices=("test", "train"),
                        doc="mnist, fashion_mnist: validation from the t10k files or split off "
                            "the train files"),
        "variant": Key(str, "auto", choices=("auto", "corrected", "uncorrected"),
                       doc="indian_pines: Indian_pines_corrected.mat (200 bands), Indian_pines.mat "
                           "(220 bands), or auto = corrected if present"),
    },
    "model": {
        "kind": Key(str, "dense", choices=("dense", "conv"), doc="dense layers or 3x3 convolutions"),
        "channels": Key(int, 4, **_ge(1), doc="conv: channels per layer"),
        "bias": Key(str, "pixel", choices=("pixel", "channel"), doc="conv: bias per pixel (paper) or channel"),
        "width": Key(int, 8, **_ge(1)),
        "layers": Key(int, 32, **_ge(1)),
        "T": Key(float, 5.0, **_gt(0)),
        "activation": Key(str, "smooth_relu", choices=("tanh", "relu", "smooth_relu")),
        "opening": Key(str, "dense", choices=("dense", "expand", "replicate", "conv")),
        "init": Key(str, "uniform", choices=("uniform", "normal"),
                    doc="uniform [0,1) (the paper) or standard normal, times the scales below"),
        "init_opening": Key(float, 1e-3),
        "init_hidden": Key(float, 1e-3),
        "init_classifier": Key(float, 1e-3),
    },
    "regularization": {
        "tikhonov": Key(float, 1e-7, **_ge(0)),
        "classifier": Key(float, 1e-7, **_ge(0)),
        "ddt": Key(float, 1e-7, **_ge(0)),
    },
    "optimizer": {
        "name": Key(str, "lbfgs", choices=("lbfgs", "gd", "adam", "sgd")),
        "max_iter": Key(int, 100, **_ge(0), doc="optimiser steps (mini-batches, or iterations in full batch); "
                                                 "used when epochs = 0"),
        "epochs": Key(int, 0, **_ge(0), doc="passes over the training set (max_iter is then not used); "
                                            "0 = run max_iter steps"),
        "memory": Key(int, 10, **_ge(1)),
        "c1": Key(float, 1e-4, **_UNIT_OPEN),
        "shrink": Key(float, 0.5, **_UNIT_OPEN),
        "max_trials": Key(int, 20, **_ge(1)),
        "gtol": Key(float, 1e-4, **_ge(0)),
        "learning_rate": Key(float, 1e-2, **_gt(0)),
        "batch_size": Key(int, 0, **_ge(0), doc="0 = full batch"),
        "beta1": Key(float, 0.9, **_UNIT_HALF),
        "beta2": Key(float, 0.999, **_UNIT_HALF),
        "eps": Key(float, 1e-8, **_gt(0)),
        "momentum": Key(float, 0.0, **_UNIT_HALF, doc="sgd: heavy-ball momentum"),
        "nesterov": Key(bool, False, doc="sgd: Nesterov momentum (needs momentum > 0)"),
        "weight_decay": Key(float, 0.0, **_ge(0), doc="sgd, adam: weight decay"),
        "decoupled": Key(bool, True, doc="adam: decoupled weight decay (AdamW); false = L2 in the gradient"),
        "schedule": Key(str, "constant", choices=("constant", "step", "cosine"),
                        doc="sgd, adam: learning-rate schedule over the run's steps"),
        "warmup_steps": Key(int, 0, **_ge(0), doc="sgd, adam: linear warm-up steps before the schedule"),
        "step_size": Key(int, 0, **_ge(0), doc="schedule = step: steps between decays (>= 1 there)"),
        "gamma": Key(float, 0.1, lo=0.0, hi=1.0, lo_open=True, doc="schedule = step: decay factor"),
        "min_lr_factor": Key(float, 0.0, lo=0.0, hi=1.0, doc="schedule = cosine: final learning rate / initial"),
    },
    "train": {
        "mode": Key(str, "serial", choices=("serial", "exact", "simultaneous"),
                    doc="serial sweeps | MGRIT to tolerance | one-shot MGRIT budget"),
        "seed": Key(int, 0, **_ge(0)),
        "threads": Key(int, 0, **_ge(0), doc="0 = all cores"),
        "eval_every": Key(int, 0, **_ge(0), doc="a history row every k steps; 0 = once per epoch (every "
                                                "iteration in full batch)"),
        "checkpoint_every": Key(int, 0, **_ge(0), doc="write a checkpoint into the run folder every k steps "
                                                      "(0 = only when SIGINT or SIGTERM stops the run)"),
        "full_eval": Key(bool, False, doc="mini-batches: training metrics from a forward pass over the whole "
                                          "training set instead of the running means of the batches"),
        "device": Key(str, "cpu", choices=("cpu", "cuda", "emulator"),
                      doc="cpu | cuda (states, adjoints, parameters and gradients on the GPU; dense networks, "
                          "and convolutional ones with the replicate opening; the serial mode runs as one-level "
                          "MGRIT) | emulator (the CUDA kernels run on the CPU: slow, for testing without a GPU)"),
        "params": Key(str, "", doc="start from this params.npz (a restart; every process reads it and "
                                   "keeps its own layers); empty = initialise from the seed"),
    },
    "parallel": {
        "layer_procs": Key(int, 1, **_ge(1), doc="processes splitting the layers (contiguous blocks, N >= layer_procs)"),
        "data_procs": Key(int, 0, **_ge(0), doc="processes splitting the examples, 0 = all the rest"),
    },
    "mgrit": {
        "max_levels": Key(int, 10, **_ge(1), doc="grid levels (1 = serial propagation)"),
        "cfactor": Key(int, 2, **_ge(2), doc="coarsening factor on coarse levels"),
        "cfactor_fine": Key(int, 0, **_ge(0), doc="coarsening factor on the finest level, 0 = cfactor"),
        "min_coarse": Key(int, 2, **_ge(1), doc="stop coarsening at this many intervals"),
        "relax": Key(str, "F,FCF", doc="relaxation per level, F(CF)^k; the last entry repeats"),
        "cycle": Key(str, "V", choices=("V", "F")),
        "tol": Key(float, 1e-11, **_gt(0), doc="exact solves stop once |finest C-point residual| <= tol * "
                                               "|initial value| (|u_0| forward, |lambda_N| adjoint; 2-norms "
                                               "over the batch), the one meaning of tol (options.MgritOptions)"),
        "max_iter": Key(int, 100, **_ge(1), doc="cycles per exact solve at most"),
        "fwd_iterations": Key(int, 2, **_ge(1), doc="simultaneous: forward cycles per evaluation"),
        "bwd_iterations": Key(int, 2, **_ge(1), doc="simultaneous: adjoint cycles per evaluation"),
        "threads": Key(int, 0, **_ge(0), doc="threads over intervals, 0 = train.threads"),
        "fmg": Key(bool, False, doc="nested-iteration initial guess"),
        "skip_first_down": Key(bool, False, doc="skip relaxation on the first down-cycle"),
        "store": Key(str, "all", choices=("all", "cpoints"), doc="keep every point or only C-points"),
        "compute_residuals": Key(bool, True, doc="simultaneous: compute the residual norm after every cycle "
                                                 "(one all-reduce each with split layers); false saves them, "
                                                 "and the safeguard then watches only the line search"),
        "safeguard": Key(bool, True, doc="simultaneous: tighten the solves when MGRIT stalls"),
        "safeguard_factor": Key(float, 1.0, **_gt(0), doc="convergence factor that triggers the safeguard"),
        "safeguard_iterations": Key(int, 5, **_ge(1), doc="iterations solved exactly after a trigger"),
        "adaptive": Key(bool, False, doc="simultaneous: choose the cycles of every evaluation from measured "
                                         "quantities (solve to adaptive_eta * |g| / |g_0| relative to the "
                                         "initial value, at most adaptive_max_cycles) instead of the fixed "
                                         "fwd_iterations / bwd_iterations"),
        "adaptive_eta": Key(float, 0.1, **_gt(0), doc="adaptive: relative residual bound at |g| = |g_0|"),
        "adaptive_max_cycles": Key(int, 8, **_ge(1), doc="adaptive: cycles per solve at most"),
    },
}

_FILE_KEYS = ("train_features", "train_labels", "val_features", "val_labels")
_DIGITS_IMAGES = 1797  # sklearn.datasets.load_digits


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, Mapping):
        return "table"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


_INT_MAX = 2**31 - 1


def _coerce(section: str, name: str, spec: Key, value: Any) -> Any:
    """Type-check, convert (int -> float) and range-check one value."""
    where = f"{section}.{name}"
    t = spec.type
    ok = False
    if t is bool:
        ok = isinstance(value, bool)
    elif t is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif t is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif t is str:
        ok = isinstance(value, str)
    if not ok:
        raise ValueError(f"{where} must be of type {t.__name__}, got "
                         f"{_type_name(value)} {value!r}.")
    if t is int and not name.endswith("seed") and abs(value) > _INT_MAX:
        # Sizes, counts and factors go to the compiled core as 32-bit integers; a
        # larger value would fail there with a cast error. Seeds stay Python integers.
        raise ValueError(f"{where} must be at most {_INT_MAX} (a 32-bit integer), got {value!r}.")
    if t is float:
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{where} must be a finite number, got {value!r}.")
    if spec.choices is not None and value not in spec.choices:
        allowed = ", ".join(f'"{c}"' for c in spec.choices)
        raise ValueError(f"{where} must be one of {allowed}, got {value!r}.")
    if spec.lo is not None or spec.hi is not None:
        lo_ok = spec.lo is None or (value > spec.lo if spec.lo_open else value >= spec.lo)
        hi_ok = spec.hi is None or (value < spec.hi if spec.hi_open else value <= spec.hi)
        if not (lo_ok and hi_ok):
            raise ValueError(f"{where} must be {_range_text(spec)}, got {value!r}.")
    return value


def _range_text(spec: Key) -> str:
    if spec.lo is not None and spec.hi is not None:
        left = "(" if spec.lo_open else "["
        right = ")" if spec.hi_open else "]"
        return f"in {left}{spec.lo:g}, {spec.hi:g}{right}"
    if spec.lo is not None:
        return f"{'>' if spec.lo_open else '>='} {spec.lo:g}"
    return f"{'<' if spec.hi_open else '<='} {spec.hi:g}"


_RELAX_RE = re.compile(r"^F(CF)*$", re.IGNORECASE)


def relax_levels(text: str) -> list[str]:
    """``"F,FCF"`` -> ``["F", "FCF"]`` (commas or spaces separate levels)."""
    return [t for t in re.split(r"[,\s]+", text.strip()) if t]


def check_relax(text: str, where: str) -> list[str]:
    """The relaxation per level of ``text`` (see :func:`relax_levels`); ValueError naming
    ``where`` unless every entry has the form F(CF)^k."""
    levels = relax_levels(text)
    if not levels or not all(_RELAX_RE.match(t) for t in levels):
        raise ValueError(f"{where} must list one relaxation per level of the form F, FCF, FCFCF, ... "
                         f"separated by commas, got {text!r}.")
    return levels


def _check_cross(values: dict[str, dict[str, Any]]) -> None:
    """Rules that involve more than one key."""
    model = values["model"]
    if model["kind"] == "conv" and model["opening"] not in ("replicate", "conv"):
        raise ValueError(f'model.opening must be "replicate" or "conv" for model.kind = "conv", '
                         f'got "{model["opening"]}".')
    if model["kind"] == "dense" and model["opening"] in ("replicate", "conv"):
        raise ValueError(f'model.opening = "{model["opening"]}" needs model.kind = "conv".')
    check_relax(values["mgrit"]["relax"], "mgrit.relax")
    data = values["data"]
    if data["name"] == "files":
        for k in _FILE_KEYS:
            if not data[k].strip():
                raise ValueError(f'data.{k} is required when data.name = "files".')
    if data["name"] in ("mnist", "fashion_mnist", "indian_pines") and not data["folder"].strip():
        raise ValueError(f'data.folder is required when data.name = "{data["name"]}".')
    if data["name"] == "digits" and data["train_size"] + data["val_size"] > _DIGITS_IMAGES:
        raise ValueError(f"data.train_size + data.val_size must be at most {_DIGITS_IMAGES} for "
                         f"the digits data set, got {data['train_size']} + {data['val_size']} "
                         f"(e.g. 1297 and 500).")
    if data["name"] == "peaks":
        for k in ("train_size", "val_size"):
            if data[k] % 5:
                raise ValueError(f"data.{k} must be a multiple of 5 for the peaks data set "
                                 f"(balanced classes), got {data[k]}.")


def _validate(d: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    if not isinstance(d, Mapping):
        raise ValueError(f"the configuration must be a table, got {_type_name(d)}.")
    out = {sec: {k: spec.default for k, spec in keys.items()} for sec, keys in SCHEMA.items()}
    for sec, body in d.items():
        if sec not in SCHEMA:
            raise ValueError(f"unknown config section '{sec}' (known sections: "
                             f"{', '.join(SCHEMA)}).")
        if not isinstance(body, Mapping):
            raise ValueError(f"config section '{sec}' must be a table, got "
                             f"{_type_name(body)} {body!r}.")
        for name, value in body.items():
            if name not in SCHEMA[sec]:
                raise ValueError(f"unknown config key '{sec}.{name}' (known keys in [{sec}]: "
                                 f"{', '.join(SCHEMA[sec])}).")
            out[sec][name] = _coerce(sec, name, SCHEMA[sec][name], value)
    _check_cross(out)
    return out


class Section(Mapping):
    """Read-only view of one config section: ``sec.key`` or ``sec["key"]``."""

    __slots__ = ("_name", "_values")

    def __init__(self, name: str, values: Mapping[str, Any]):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"config section [{self._name}] has no key '{key}'") from None

    def __setattr__(self, key, value):
        raise AttributeError("config sections are read-only; use Config.with_overrides")

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def to_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def __repr__(self) -> str:
        return f"Section({self._name!r}, {self._values!r})"


class Config:
    """Validated configuration: one :class:`Section` attribute per schema
    section, plus ``base_dir`` (the TOML file's folder, for data paths)."""

    def __init__(self, values: Mapping[str, Mapping[str, Any]], base_dir: Path | str | None = None):
        self._values = {sec: dict(values[sec]) for sec in SCHEMA}
        self._sections = {sec: Section(sec, v) for sec, v in self._values.items()}
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()

    def __getattr__(self, name: str) -> Section:
        sections = self.__dict__.get("_sections")
        if sections is not None and name in sections:
            return sections[name]
        raise AttributeError(f"Config has no section or attribute '{name}'")

    def __getitem__(self, section: str) -> Section:
        return self._sections[section]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self._values == other._values

    def __repr__(self) -> str:
        return f"Config({self._values!r}, base_dir={str(self.base_dir)!r})"

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict (a copy), section -> key -> value."""
        return {sec: dict(v) for sec, v in self._values.items()}

    def to_json(self) -> str:
        """Stable JSON text (sorted keys, 2-space indent)."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)

    def with_overrides(self, overrides: Iterable[str]) -> "Config":
        """A new Config with ``"section.key=value"`` strings applied."""
        return Config(_validate(_merge_overrides(self.to_dict(), overrides)), self.base_dir)


def _merge_overrides(d: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Copy of ``d`` (section -> table) with the parsed overrides applied."""
    out: dict[str, Any] = {}
    for sec, body in d.items():
        out[sec] = dict(body) if isinstance(body, Mapping) else body
    for text in _as_list(overrides):
        sec, key, value = parse_override(text)
        body = out.setdefault(sec, {})
        if not isinstance(body, dict):
            raise ValueError(f"config section '{sec}' must be a table, got "
                             f"{_type_name(body)} {body!r}.")
        body[key] = value
    return out


def _as_list(overrides) -> list[str]:
    if isinstance(overrides, str):
        return [overrides]
    return list(overrides or ())


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split ``"section.key=value"`` into ``(section, key, value)``.

    The value is parsed as a TOML value when possible (``3``, ``1e-7``,
    ``"x"``, ``true``); otherwise it is the bare string (``tanh``). Section
    and key are checked against the schema."""
    if not isinstance(text, str) or "=" not in text:
        raise ValueError(f"override {text!r} must have the form section.key=value.")
    lhs, raw = text.split("=", 1)
    lhs = lhs.strip()
    if lhs.count(".") != 1:
        raise ValueError(f"override {text!r} must have the form section.key=value.")
    sec, key = (part.strip() for part in lhs.split("."))
    if sec not in SCHEMA:
        raise ValueError(f"unknown config section '{sec}' in override {text!r} "
                         f"(known sections: {', '.join(SCHEMA)}).")
    if key not in SCHEMA[sec]:
        raise ValueError(f"unknown config key '{sec}.{key}' in override {text!r} "
                         f"(known keys in [{sec}]: {', '.join(SCHEMA[sec])}).")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return sec, key, value


def config_from_dict(d: Mapping[str, Any] | None = None, base_dir: Path | str | None = None,
                     overrides: Iterable[str] = ()) -> Config:
    """Validate a nested dict (missing sections / keys get their defaults);
    ``overrides`` are applied before validation."""
    d = {} if d is None else d
    if not isinstance(d, Mapping):
        raise ValueError(f"the configuration must be a table, got {_type_name(d)}.")
    return Config(_validate(_merge_overrides(d, overrides)), base_dir)


def default_config(base_dir: Path | str | None = None) -> Config:
    """All defaults."""
    return config_from_dict({}, base_dir)


def load_config(path, overrides: Iterable[str] = ()) -> Config:
    """Read and validate a TOML file; ``overrides`` are ``"section.key=value"``
    strings applied on top (before validation, so e.g. the data paths required
    by ``data.name = "files"`` may come from overrides). ``cfg.base_dir`` is
    the file's folder."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            d = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file '{p}' is not valid TOML: {exc}.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read config file '{p}': {exc}.") from None
    merged = _merge_overrides(d, overrides)
    try:
        values = _validate(merged)
    except ValueError as exc:
        raise ValueError(f"config file '{p}': {exc}") from None
    return Config(values, p.resolve().parent)
