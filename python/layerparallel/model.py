"""The dense residual network as a Python object over the compiled core.

Parameters live in one flat float64 vector ``theta`` (what the optimisers
work on); :attr:`ResNet.parameters` gives named, writeable views into it with
the shapes of the ``.npz`` format::

    opening_weight (w, n_f), opening_bias ()      # opening = "dense" only
    weights (N, w, w), biases (N,)
    classifier_weight (n_c, w), classifier_bias (n_c,)
"""
from __future__ import annotations

import json
import math
import os
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from . import _core
from ._files import GZIP_MAX_RATIO, open_regular
from .io import atomic_path

#: Widths above this run BLAS GEMMs in the compiled core (kFusedMaxWidth in dense.h).
WIDE = 32

__all__ = ["Network", "ResNet", "ConvResNet", "Evaluation", "Regularization", "PARAM_KEYS", "CONV_PARAM_KEYS",
           "load_model"]

#: The keys of a dense network's parameter file, in flat order.
PARAM_KEYS = ("opening_weight", "opening_bias", "weights", "biases", "classifier_weight", "classifier_bias")
#: The keys of a convolutional network's parameter file (the replicate opening has none).
CONV_PARAM_KEYS = ("weights", "biases", "classifier_weight", "classifier_bias")


def as_matrix(features: np.ndarray) -> np.ndarray:
    """Examples as rows: image batches (s, C, H, W) or (s, H, W) become (s, C*H*W) views."""
    a = np.asarray(features)
    return a.reshape(a.shape[0], -1) if a.ndim > 2 else a


@dataclass(frozen=True)
class Regularization:
    """Weights of the Tikhonov, classifier and smoothness (ddt) terms."""

    tikhonov: float = 0.0
    classifier: float = 0.0
    ddt: float = 0.0


@dataclass
class Evaluation:
    """One evaluation of the objective on a batch: the objective (mean loss plus the
    regularisers), the mean loss, the accuracy (``correct`` of ``examples``), the
    gradient (flat, like theta; None when not asked for) and, in the MGRIT modes of a
    :class:`layerparallel.Solver`, ``mgrit``: the forward and adjoint solves
    (``cycles``, ``steps``, ``residuals``, ``converged``, ...) and ``exact``."""

    objective: float
    loss: float
    regularization: float
    accuracy: float
    correct: int
    examples: int
    gradient: np.ndarray | None
    mgrit: dict[str, Any] | None = None


def _require_integers(**values: Any) -> None:
    """ValueError naming the first argument that is not an integer (bools are not)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {value!r}")


def _block_scales(init_opening: float, init_hidden: float, init_classifier: float) -> dict[str, float]:
    """Initialisation scale of every named parameter block."""
    return {"opening_weight": init_opening, "opening_bias": init_opening,
            "weights": init_hidden, "biases": init_hidden,
            "classifier_weight": init_classifier, "classifier_bias": init_classifier}


class Network:
    """What every network model shares: the flat float64 parameter vector ``theta``,
    named views into it (:attr:`parameters`), evaluation through the compiled
    core, prediction and parameter files. :class:`ResNet` (dense) and
    :class:`ConvResNet` build the compiled network."""

    _net: Any
    _layout: list[tuple[str, int, tuple[int, ...]]]
    regularization: Regularization
    theta: np.ndarray

    def _setup(self, net: Any, regularization: Regularization | None, theta: np.ndarray | None, seed: int,
               scales: dict[str, float], init: str) -> None:
        self._net = net
        self.regularization = regularization or Regularization()
        self._layout = [(name, int(off), tuple(int(d) for d in shape)) for name, off, shape in net.layout()]
        if theta is not None:
            theta = np.asarray(theta, dtype=np.float64)
            if theta.shape != (net.param_size,):
                raise ValueError(f"theta must have shape ({net.param_size},), got {theta.shape}")
            self.theta = theta.copy()
        else:
            self.theta = np.zeros(net.param_size)
            self._initialize(seed, scales, init)

    def _initialize(self, seed: int, scales: dict[str, float], init: str) -> None:
        if init not in ("uniform", "normal"):
            raise ValueError(f"init must be 'uniform' or 'normal', got {init!r}")
        rng = np.random.default_rng(seed)
        draw = rng.random if init == "uniform" else rng.standard_normal
        for name, view in self.parameters.items():
            view[...] = scales[name] * draw(view.shape)

    @property
    def layout(self) -> list[tuple[str, int, tuple[int, ...]]]:
        """The parameter blocks of :attr:`theta` in order: (name, offset, shape), as the
        compiled network describes them (opening_weight and opening_bias when the opening
        has parameters, weights and biases with the layer count first, classifier_weight,
        classifier_bias)."""
        return list(self._layout)

    @property
    def core(self) -> Any:
        """The compiled network object (for the engine and the bindings)."""
        return self._net

    n_features = property(lambda self: self._net.n_features)
    n_classes = property(lambda self: self._net.n_classes)
    layers = property(lambda self: self._net.layers)
    T = property(lambda self: self._net.T)
    activation = property(lambda self: self._net.activation)

    @property
    def h(self) -> float:
        return self.T / self.layers

    @property
    def size(self) -> int:
        return int(self._net.param_size)

    @property
    def parameters(self) -> dict[str, np.ndarray]:
        """Named views into :attr:`theta` (writing to them changes the model)."""
        out = {}
        for name, off, shape in self._layout:
            n = int(np.prod(shape)) if shape else 1
            out[name] = self.theta[off:off + n].reshape(shape)
        return out

    def spec(self) -> dict[str, Any]:
        raise NotImplementedError

    def copy(self) -> "Network":
        return type(self)(**self.spec(), regularization=self.regularization, theta=self.theta)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, features: np.ndarray, labels: np.ndarray, *, theta: np.ndarray | None = None,
                 gradient: bool = True, regularized: bool = True) -> Evaluation:
        """Objective, mean loss, accuracy and the gradient (serial sweeps)."""
        r = self.regularization if regularized else Regularization()
        d = self._net.evaluate(self.theta if theta is None else theta, as_matrix(features), labels,
                               r.tikhonov, r.classifier, r.ddt, gradient)
        return Evaluation(objective=d["objective"], loss=d["loss"], regularization=d["regularization"],
                          accuracy=d["accuracy"], correct=int(d["correct"]), examples=int(d["examples"]),
                          gradient=d["gradient"])

    def objective_and_gradient(self, theta: np.ndarray, features: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
        ev = self.evaluate(features, labels, theta=theta, gradient=True)
        assert ev.gradient is not None
        return ev.objective, ev.gradient

    def logits(self, features: np.ndarray) -> np.ndarray:
        return self._net.logits(self.theta, as_matrix(features))

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Class index per example (argmax of the logits)."""
        return np.argmax(self.logits(features), axis=1)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        z = self.logits(features)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def states(self, features: np.ndarray) -> np.ndarray:
        """All states u_0..u_N, shape (N+1, s, state width)."""
        return self._net.forward_states(self.theta, as_matrix(features))

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike[str], config: Mapping[str, Any] | str | None = None) -> None:
        """Write the parameters as ``.npz`` (atomically) with the run's config as JSON."""
        if config is None:
            config = {"model": self.spec()}
        text = config if isinstance(config, str) else json.dumps(config, sort_keys=True)
        arrays = {name: np.array(view) for name, view in self.parameters.items()}
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, config=np.array(text), **arrays)

    def load_parameters(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Read a parameter file into this model; returns the stored config (dict). The file's
        array names and declared shapes are checked against the model before its data is read."""
        expected = {name: shape for name, _, shape in self._layout}
        arrays, config = read_params(path, expected)
        for name in expected:
            if not np.all(np.isfinite(arrays[name])):
                raise ValueError(f"parameter file {path}: {name} holds non-finite values")
        for name, view in self.parameters.items():
            view[...] = arrays[name]
        return config


class ResNet(Network):
    """Dense ResNet ``u_{n+1} = u_n + (T/N) sigma(K_n u_n + b_n)`` with a softmax classifier.

    Initialisation (seeded with ``numpy.random.default_rng(seed)``, block after
    block in flat order): ``init="uniform"`` draws uniform [0, 1) times the
    block's scale (the paper's scheme); ``init="normal"`` draws standard normal
    times the scale. Scales: ``init_opening`` for the opening layer,
    ``init_hidden`` for the residual layers, ``init_classifier`` for the
    classifier.
    """

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        width: int = 8,
        layers: int = 32,
        T: float = 5.0,
        activation: str = "smooth_relu",
        opening: str = "dense",
        *,
        regularization: Regularization | None = None,
        seed: int = 0,
        init_opening: float = 1e-3,
        init_hidden: float = 1e-3,
        init_classifier: float = 1e-3,
        init: str = "uniform",
        theta: np.ndarray | None = None,
    ) -> None:
        _require_integers(n_features=n_features, n_classes=n_classes, width=width, layers=layers)
        net = _core.DenseResNet(int(n_features), int(n_classes), int(width), int(layers), float(T),
                                str(activation), str(opening))
        if int(width) > WIDE and not _core.has_blas():
            warnings.warn(f"layerparallel was built without BLAS: this width-{int(width)} network's layers run "
                          "built-in loops, about 10x slower (reinstall with `pip install .`, which brings "
                          "OpenBLAS from PyPI; `layerparallel info` shows the build)", RuntimeWarning, stacklevel=2)
        self._setup(net, regularization, theta, seed, _block_scales(init_opening, init_hidden, init_classifier), init)

    width = property(lambda self: self._net.width)
    opening = property(lambda self: self._net.opening)

    def spec(self) -> dict[str, Any]:
        return {"n_features": self.n_features, "n_classes": self.n_classes, "width": self.width,
                "layers": self.layers, "T": self.T, "activation": self.activation, "opening": self.opening}

    @classmethod
    def load(cls, path: str | os.PathLike[str], **overrides: Any) -> "ResNet":
        """Build a model from a parameter file (shape from the stored config and arrays)."""
        arrays, config = read_params(path)
        model_cfg = _model_config(path, config)
        weights, classifier = arrays.get("weights"), arrays.get("classifier_weight")
        if weights is None or weights.ndim != 3 or classifier is None or classifier.ndim != 2:
            raise ValueError(f"parameter file {path} lacks a valid 'weights' or 'classifier_weight' array")
        N, w, _ = weights.shape
        nc = classifier.shape[0]
        opening = "dense" if "opening_weight" in arrays else "expand"
        if opening == "dense":
            if arrays["opening_weight"].ndim != 2:
                raise ValueError(f"parameter file {path}: opening_weight has shape {arrays['opening_weight'].shape}, "
                                 f"not (width, n_features)")
            nf = arrays["opening_weight"].shape[1]
        else:
            nf = _config_number(path, "model.n_features", model_cfg.get("n_features", 0), int)
        if opening == "expand" and nf < 1:
            raise ValueError(f"parameter file {path} has no opening layer and its config does not give n_features")
        spec = {"n_features": int(nf), "n_classes": int(nc), "width": int(w), "layers": int(N),
                "T": _config_number(path, "model.T", model_cfg.get("T", 5.0), float),
                "activation": _config_text(path, "model.activation", model_cfg.get("activation", "smooth_relu")),
                "opening": opening}
        spec.update(overrides)
        model = _build(cls, path, spec)
        model.load_parameters(path)
        return model


class ConvResNet(Network):
    """Convolutional ResNet ``u_{n+1} = u_n + (T/N) sigma(conv3x3(K_n, u_n) + b_n)`` on
    ``channels`` x ``height`` x ``width`` images: the replicate opening (every
    channel gets ``tanh(6 p / 255 - 3) + 1`` of pixel p), zero padding, one bias
    per pixel shared over channels (``bias="pixel"``, the paper) or per channel,
    and a softmax classifier on the flattened final image. ``opening="conv"``
    learns the opening instead: ``u_0 = sigma(conv3x3(K_o, p / 255) + b_o)``.
    Parameter file keys: [``opening_weight (C, 1, 3, 3)``, ``opening_bias (H, W)``
    or ``(C,)``,] ``weights (N, C, C, 3, 3)``, ``biases (N, H, W)`` or ``(N, C)``,
    ``classifier_weight (n_c, C*H*W)``, ``classifier_bias (n_c,)``.
    Inputs are pixel values 0..255, (s, H, W), (s, 1, H, W) or (s, H*W).
    """

    def __init__(
        self,
        height: int,
        width: int,
        n_classes: int,
        channels: int = 4,
        layers: int = 32,
        T: float = 5.0,
        activation: str = "tanh",
        bias: str = "pixel",
        opening: str = "replicate",
        *,
        regularization: Regularization | None = None,
        seed: int = 0,
        init_opening: float = 1e-3,
        init_hidden: float = 1e-3,
        init_classifier: float = 1e-3,
        init: str = "uniform",
        theta: np.ndarray | None = None,
    ) -> None:
        _require_integers(height=height, width=width, n_classes=n_classes, channels=channels, layers=layers)
        net = _core.ConvResNet(int(channels), int(height), int(width), int(n_classes), int(layers), float(T),
                               str(activation), str(bias), str(opening))
        self._setup(net, regularization, theta, seed, _block_scales(init_opening, init_hidden, init_classifier), init)

    channels = property(lambda self: self._net.channels)
    height = property(lambda self: self._net.height)
    width = property(lambda self: self._net.width)
    bias = property(lambda self: self._net.bias)
    opening = property(lambda self: self._net.opening)

    def spec(self) -> dict[str, Any]:
        return {"height": self.height, "width": self.width, "n_classes": self.n_classes, "channels": self.channels,
                "layers": self.layers, "T": self.T, "activation": self.activation, "bias": self.bias,
                "opening": self.opening}

    @classmethod
    def load(cls, path: str | os.PathLike[str], **overrides: Any) -> "ConvResNet":
        """Build a model from a parameter file (shapes from the arrays, T and activation from its config)."""
        arrays, config = read_params(path)
        model_cfg = _model_config(path, config)
        weights, classifier, b = arrays.get("weights"), arrays.get("classifier_weight"), arrays.get("biases")
        if (weights is None or weights.ndim != 5 or classifier is None or classifier.ndim != 2
                or b is None or b.ndim not in (2, 3)):
            raise ValueError(f"parameter file {path} lacks valid 'weights', 'biases' or 'classifier_weight' "
                             f"arrays of a convolutional network")
        N, C = weights.shape[:2]
        nc, flat = classifier.shape
        if b.ndim == 3:
            H, W, bias = b.shape[1], b.shape[2], "pixel"
        else:
            # Per-channel biases do not carry the image size: the config does
            # (image_height/image_width from the command line, height/width from spec()).
            bias = "channel"
            if C < 1:
                raise ValueError(f"parameter file {path}: weights has shape {weights.shape}, with no channels")
            side = int(round(np.sqrt(flat // C)))
            H = _config_number(path, "model.image_height (or model.height)",
                               model_cfg.get("image_height", model_cfg.get("height", side)), int)
            W = _config_number(path, "model.image_width (or model.width)",
                               model_cfg.get("image_width", model_cfg.get("width", side) if "height" in model_cfg
                                             else side), int)
            if H * W * C != flat:
                raise ValueError(f"parameter file {path}: cannot tell the image size of a per-channel-bias "
                                 f"network ({flat // C} pixels, not square); its config lacks model.height")
        spec = {"height": int(H), "width": int(W), "n_classes": int(nc), "channels": int(C), "layers": int(N),
                "T": _config_number(path, "model.T", model_cfg.get("T", 5.0), float),
                "activation": _config_text(path, "model.activation", model_cfg.get("activation", "tanh")),
                "bias": bias, "opening": "conv" if "opening_weight" in arrays else "replicate"}
        spec.update(overrides)
        model = _build(cls, path, spec)
        model.load_parameters(path)
        return model


def _model_config(path: str | os.PathLike[str], config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``model`` table of a parameter file's config (empty when absent)."""
    model_cfg = config.get("model", {})
    if not isinstance(model_cfg, dict):
        raise ValueError(f"parameter file {path}: 'model' in its config is not a JSON object")
    return model_cfg


def _config_number(path: str | os.PathLike[str], key: str, value: Any, kind: type) -> Any:
    """``kind(value)`` for a number of a parameter file's config; ValueError naming the file otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"parameter file {path}: {key} in its config is {value!r}, not a number")
    try:
        return kind(value)
    except (ValueError, OverflowError):
        raise ValueError(f"parameter file {path}: {key} in its config is {value!r}, not a finite number") from None


def _config_text(path: str | os.PathLike[str], key: str, value: Any) -> str:
    """A string of a parameter file's config; ValueError naming the file otherwise."""
    if not isinstance(value, str):
        raise ValueError(f"parameter file {path}: {key} in its config is {value!r}, not a string")
    return value


def _build(cls: type, path: str | os.PathLike[str], spec: dict[str, Any]) -> Any:
    """``cls(**spec)``, a refusal reported against the parameter file the spec comes from."""
    try:
        return cls(**spec)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(f"parameter file {path} describes a model that cannot be built ({exc})") from None


def load_model(path: str | os.PathLike[str]) -> Network:
    """A dense or convolutional model from a parameter file (told apart by the shape of ``weights``)."""
    arrays, _ = read_params(path)
    w = arrays.get("weights")
    if w is not None and w.ndim == 5:
        return ConvResNet.load(path)
    return ResNet.load(path)


#: Zip methods of parameter files (np.savez stores, np.savez_compressed deflates) and how many
#: times its stored size a member may inflate to.
_ZIP_RATIO = {zipfile.ZIP_STORED: 1, zipfile.ZIP_DEFLATED: GZIP_MAX_RATIO}
#: What reading a zip archive raises on a damaged one.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError,
               UnicodeDecodeError, struct.error, OverflowError)


@dataclass(frozen=True)
class _Member:
    """One array of a parameter file as its headers declare it."""

    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype
    held: int  #: bytes of data after the header


def _check_signature(p: Path, fh: Any) -> None:
    """ValueError unless the file starts like a zip archive (what a .npz file is)."""
    head = fh.read(512)
    fh.seek(0)
    if not head:
        raise ValueError(f"parameter file {p} is empty")
    if head.startswith(b"PK"):
        return
    if head.startswith(b"\x93NUMPY"):
        raise ValueError(f"parameter file {p} is a single .npy array, not a .npz parameter file "
                         f"(write one with model.save)")
    try:
        text = b"\0" not in head and bool(head.decode("utf-8"))
    except UnicodeDecodeError as exc:
        text = b"\0" not in head and exc.start >= len(head) - 3  # a character cut at byte 512
    what = "it is a text file" if text else "it does not start with the zip signature"
    raise ValueError(f"parameter file {p} is not a .npz file: {what}")


def _read_member_header(p: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, size: int) -> _Member:
    """The declared shape and dtype of one member (its zip sizes checked against the file's
    size and its zip method)."""
    if info.header_offset + info.compress_size > size:
        raise ValueError(f"parameter file {p} is truncated: {key} claims {info.compress_size} bytes "
                         f"at offset {info.header_offset} of a {size}-byte file")
    if info.flag_bits & 0x1:
        raise ValueError(f"parameter file {p}: {key} is encrypted")
    ratio = _ZIP_RATIO.get(info.compress_type)
    if ratio is None:
        raise ValueError(f"parameter file {p}: {key} is compressed with zip method {info.compress_type}; "
                         f"parameter files are stored or deflated (np.savez, np.savez_compressed)")
    if info.file_size > ratio * info.compress_size + (2 if ratio > 1 else 0):
        raise ValueError(f"parameter file {p}: {key} claims {info.file_size} bytes stored in "
                         f"{info.compress_size}, more than its zip method allows")
    try:
        with zf.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(member)
            else:
                raise ValueError(f".npy format version {version[0]}.{version[1]}")
            offset = member.tell()
    except _ZIP_ERRORS as exc:
        raise ValueError(f"parameter file {p} is damaged: {key}: {exc}") from None
    except Exception as exc:  # numpy's header parser: ValueError and, on odd headers, others
        raise ValueError(f"parameter file {p}: {key} is not a readable .npy array ({exc})") from None
    if any(d < 0 for d in shape):
        raise ValueError(f"parameter file {p}: {key} declares the shape {shape}")
    if dtype.kind not in ("U" if key == "config" else "fiu") or dtype.fields is not None:
        what = "a text" if key == "config" else "numeric"
        raise ValueError(f"parameter file {p}: {key} is not {what} (dtype {dtype})")
    return _Member(info, tuple(int(d) for d in shape), dtype, info.file_size - offset)


def _check_size(p: Path, key: str, m: _Member) -> None:
    """ValueError unless a member holds exactly the bytes its header declares."""
    count = math.prod(m.shape)
    if count * m.dtype.itemsize != m.held:
        raise ValueError(f"parameter file {p}: {key} declares {count} values of {m.dtype} "
                         f"({count * m.dtype.itemsize} bytes) but holds {m.held} bytes")


def _check_layout(p: Path, shapes: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]]) -> None:
    """ValueError unless the arrays are exactly the expected ones with the expected shapes."""
    missing = sorted(set(expected) - set(shapes))
    extra = sorted(set(shapes) - set(expected))
    if missing or extra:
        raise ValueError(f"parameter file {p} does not match the model: "
                         f"missing keys {missing}, unexpected keys {extra}")
    for name, shape in expected.items():
        if shapes[name] != tuple(shape):
            raise ValueError(f"parameter file {p}: {name} has shape {shapes[name]}, "
                             f"the configuration needs {tuple(shape)}")


def read_params(path: str | os.PathLike[str], expected: Mapping[str, tuple[int, ...]] | None = None,
                ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a ``.npz`` parameter file: (arrays as float64, config dict). ValueError naming the file
    on failure.

    Only a regular file is read (a FIFO, a device or a folder is refused before it is opened).
    Every member's ``.npy`` header is read first and its declared size checked against the size the
    zip archive stores, and, with ``expected`` (name -> shape, the config apart), the names and
    shapes against those, so nothing larger than the file really holds is ever allocated."""
    p = Path(path)
    with open_regular(p, f"parameter file {p}", end="") as (fh, st):
        _check_signature(p, fh)
        try:
            zf = zipfile.ZipFile(fh)
        except _ZIP_ERRORS + (ValueError,) as exc:
            raise ValueError(f"parameter file {p} is not a readable .npz file ({exc})") from None
        with zf:
            members: dict[str, _Member] = {}
            for info in zf.infolist():
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if key in members:
                    raise ValueError(f"parameter file {p} holds two arrays named {key}")
                members[key] = _read_member_header(p, zf, info, key, st.st_size)
            if expected is not None:
                _check_layout(p, {k: m.shape for k, m in members.items() if k != "config"}, expected)
            for key, m in members.items():
                _check_size(p, key, m)
            arrays = {}
            for key, m in members.items():
                try:
                    with zf.open(m.info) as member:
                        arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
                except _ZIP_ERRORS + (ValueError,) as exc:
                    raise ValueError(f"parameter file {p} is damaged: {key}: {exc}") from None
                except MemoryError:
                    raise ValueError(f"parameter file {p}: {key} needs {m.held} bytes, more than "
                                     f"can be allocated") from None
    config: dict[str, Any] = {}
    if "config" in arrays:
        text = arrays.pop("config")
        if text.ndim != 0:
            raise ValueError(f"parameter file {p}: 'config' must be one string, got shape {text.shape}")
        if (np.frombuffer(text.astype(text.dtype.newbyteorder("<")).tobytes(), dtype="<u4") > 0x10FFFF).any():
            raise ValueError(f"parameter file {p}: 'config' holds characters outside Unicode")
        try:
            config = json.loads(str(text))
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"parameter file {p}: 'config' is not valid JSON ({exc})") from None
        if not isinstance(config, dict):
            raise ValueError(f"parameter file {p}: 'config' must be a JSON object")
    for k, a in arrays.items():
        arrays[k] = a.astype(np.float64)
    return arrays, config
