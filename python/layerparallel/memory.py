"""How much memory a training run needs, how much this process may use, and the
plan a dry run prints.

:func:`estimate_memory` counts, per process, what a run of a configuration keeps
at its peak: the data, the parameter vectors and gradients of the training loop,
the optimiser's memory, the forward states, the adjoints, the activation
derivatives act'(.) kept for the adjoint, the network's workspace and what writing
a checkpoint copies. It follows
the code that allocates them (``ResidualNetwork::evaluate`` and its per-thread
workspace for serial sweeps; ``Mgrit``'s per-level storage and ``ResNetMgrit``
for the MGRIT modes and for serial sweeps over split layers or on a device; the
layer shard, the solver and the optimisers in Python), so it is an estimate from
above of the measured peak, not a measurement. :func:`available_memory` is what
this process may use (free memory, cgroup limit, address-space limit) and
:func:`check_memory` refuses, in one sentence, a run that cannot fit.

:func:`dry_run_plan` and :func:`format_dry_run` give the plan of
``layerparallel train CONFIG --dry-run``: sizes, mode, processes, threads and the
memory, after the same checks training makes, without training.

Mini-batches shrink what a gradient needs (the states, adjoints and derivatives
of one batch), but not the forward passes without gradient over the validation
set and, for the first history row (and ``train.full_eval``), over the training
set: the serial sweep keeps all N + 1 states of the set it runs over even without
a gradient (``ResidualNetwork::evaluate``).
"""
from __future__ import annotations

import math
import os
import resource
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

__all__ = ["MemoryEstimate", "estimate_memory", "parameter_count", "available_memory", "check_memory",
           "format_bytes", "dry_run_plan", "format_dry_run", "WARN_FRACTION"]

#: Above this fraction of the available memory :func:`check_memory` warns.
WARN_FRACTION = 0.8

_F64 = 8
#: Dense layers up to this width run fused chains on the cpu (kFusedMaxWidth, dense.h):
#: act'(.) is recomputed, weights are transposed per chain, gradients go through slots.
_FUSED_MAX_WIDTH = 32
#: Examples per gradient partial sum (kReduceChunk, dense.h).
_REDUCE_CHUNK = 256
#: Parameter-sized vectors the training loop keeps besides the optimiser's: full
#: length on every process (model.theta, the solver's scatter buffer, the shard's
#: gather buffer, the regulariser's full vector and gradient, the compiled
#: gradient), and the length of this process's share (its parameters, gradient,
#: trial point and trial gradient, the gradient's owned entries, the regulariser's
#: and their sum).
_FULL_VECTORS = 6
_LOCAL_VECTORS = 7
#: Parameter-sized temporaries of an optimiser step and its evaluations (trial
#: point, direction, gradients of the trial), free again when a checkpoint is written.
_STEP_TEMPORARIES = 8
#: Python and allocator overhead on top of the counted arrays (interpreter objects,
#: per-call vectors of pointers, malloc arenas), counted as workspace.
_OVERHEAD = 16 * 2**20


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one process needs at its peak, by component.

    ``data``: the training and validation sets (every process loads both) and a
    mini-batch copy. ``parameters``: parameter vectors and gradients of the training
    loop (and the shard's index). ``optimizer``: L-BFGS's 2 m history vectors, Adam's
    two moments, and each step's temporaries. ``states``: forward states (all N + 1
    of the batch for serial sweeps; MGRIT's finest points, coarse right-hand sides,
    predictions and first steps, kept between evaluations as the warm start).
    ``adjoints``: the same for the adjoint (two buffers for a serial sweep).
    ``derivatives``: act'(.) of every layer kept for the adjoint. ``workspace``:
    gradient partial sums, transposed weights, the forward passes without gradient
    (validation), scratch, interpreter overhead. ``checkpoint``: the copies a
    checkpoint holds while it is written (the optimiser's state and, in the MGRIT
    modes on the cpu, the forward and adjoint warm starts); the command line writes
    one every ``train.checkpoint_every`` steps and on SIGINT / SIGTERM.

    ``device_bytes`` is the part that lives in GPU memory (``train.device =
    "cuda"``: states, adjoints, derivatives, and ``device_workspace`` of the
    workspace: parameters and gradient there); :attr:`host` is the rest, by
    component in :meth:`host_components`. ``details`` holds the sizes the estimate
    used (examples and layers per process, state width, parameter count, levels)."""

    data: int
    parameters: int
    optimizer: int
    states: int
    adjoints: int
    derivatives: int
    workspace: int
    checkpoint: int = 0
    device: str = "cpu"
    device_bytes: int = 0
    device_workspace: int = 0
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    COMPONENTS = ("data", "parameters", "optimizer", "states", "adjoints", "derivatives", "workspace", "checkpoint")

    @property
    def total(self) -> int:
        """All components, host and device."""
        return sum(self.components().values())

    @property
    def host(self) -> int:
        """The components in host memory (all of them unless ``device = "cuda"``)."""
        return self.total - self.device_bytes

    def components(self) -> dict[str, int]:
        """``{component: bytes}`` in the order of :attr:`COMPONENTS`."""
        return {name: int(getattr(self, name)) for name in self.COMPONENTS}

    def host_components(self) -> dict[str, int]:
        """:meth:`components` less what lives in GPU memory."""
        out = self.components()
        if self.device_bytes:
            out.update(states=0, adjoints=0, derivatives=0, workspace=out["workspace"] - self.device_workspace)
        return out

    def breakdown(self, largest: int = 3, host: bool = False) -> str:
        """``"states 48.0 GB, optimizer 3.6 GB, ..."``: the ``largest`` components (of
        host memory only with ``host``)."""
        comps = self.host_components() if host else self.components()
        parts = sorted(comps.items(), key=lambda kv: -kv[1])[:largest]
        return ", ".join(f"{name} {format_bytes(b)}" for name, b in parts if b > 0)

    def to_dict(self) -> dict[str, Any]:
        return {**self.components(), "total": self.total, "host": self.host, "device": self.device,
                "device_bytes": self.device_bytes, "device_workspace": self.device_workspace,
                "details": dict(self.details)}


def format_bytes(n: float) -> str:
    """``51200000000`` -> ``"51.2 GB"`` (decimal units)."""
    n = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError  # pragma: no cover


# --------------------------------------------------------------------------- sizes


def _get(section: Any, key: str, default: Any = None) -> Any:
    if isinstance(section, dict):
        return section.get(key, default)
    return getattr(section, key, default)


def _cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b) if a > 0 else 0


def _split_max(n: int, parts: int) -> int:
    """The largest block of ``n`` items split contiguously over ``parts``."""
    return _ceil_div(n, max(1, parts))


def _hierarchy(n_steps: int, cfactor_fine: int, cfactor: int, min_coarse: int,
               max_levels: int) -> list[tuple[int, int, int]]:
    """(intervals, coarsening factor (1 on the coarsest), stride) per level, as
    ``Hierarchy`` (hierarchy.cpp) builds them."""
    out: list[tuple[int, int, int]] = []
    n, stride = n_steps, 1
    while True:
        level = len(out)
        m = cfactor_fine if level == 0 else cfactor
        if level + 1 < max_levels and n > min_coarse and n // m >= 1:
            out.append((n, m, stride))
            n //= m
            stride *= m
        else:
            out.append((n, 1, stride))
            return out


def _contiguous_bounds(n_steps: int, parts: int) -> list[int]:
    base, extra = divmod(n_steps, parts)
    bounds = [0]
    for r in range(parts):
        bounds.append(bounds[-1] + base + (1 if r < extra else 0))
    return bounds


def _mgrit_states(n_steps: int, parts: int, levels: list[tuple[int, int, int]], cpoints: bool,
                  threads: int) -> int:
    """States one ``Mgrit`` solver stores on the process that stores most (mgrit_storage.cpp):
    level 0's points (only its C-points and a trajectory with ``store = "cpoints"``),
    per coarse level the right-hand sides and first steps, per non-coarsest level the
    predictions, a ghost per level, u_0, and the relaxation's scratch pairs."""
    cpoints = cpoints and len(levels) > 1
    bounds = _contiguous_bounds(n_steps, parts)
    worst = 0
    for q in range(parts):
        fb = (0 if q == 0 else bounds[q] + 1, bounds[q + 1] + 1)
        count = 1  # u0
        for lev, (n, m, stride) in enumerate(levels):
            coarsest = lev == len(levels) - 1
            jb = min(_ceil_div(fb[0], stride), n + 1)
            je = max(jb, min(_ceil_div(fb[1], stride), n + 1))
            cbeg = _ceil_div(jb, m)
            cend = max(cbeg, _ceil_div(je, m))
            fbeg = _ceil_div(jb - 1, m)
            fend = max(fbeg, _ceil_div(je - 1, m))
            n_own, n_c = je - jb, cend - cbeg
            count += 1  # ghost
            if lev == 0:
                count += n_c if cpoints else n_own
                if cpoints:
                    count += 1 + n_own  # tail, trajectory
            else:
                count += n_own + (1 if coarsest else fend - fbeg)
            if not coarsest:
                count += n_c
        worst = max(worst, count)
    if cpoints:
        worst += 2 * max(1, threads)  # per-interval scratch pairs on the host
    return worst


@dataclass(frozen=True)
class _Shape:
    state_width: int
    per_layer: int  # parameters per layer
    opening: int
    classifier: int
    n_features: int
    conv: bool
    fused: bool  # narrow dense layers: fused chains on the cpu


def _shape(cfg: Any, n_features: int, n_classes: int, image_shape: Optional[tuple[int, ...]]) -> _Shape:
    m = cfg.model
    if _get(m, "kind", "dense") == "conv":
        C = int(_get(m, "channels", 4))
        pixels = int(math.prod(image_shape[1:])) if image_shape else int(n_features)
        bias = C if _get(m, "bias", "pixel") == "channel" else pixels
        width = C * pixels
        opening = C * 9 + bias if _get(m, "opening", "replicate") == "conv" else 0
        return _Shape(width, C * C * 9 + bias, opening, n_classes * width + n_classes, pixels, True, False)
    w = int(_get(m, "width", 8))
    opening = w * n_features + 1 if _get(m, "opening", "dense") == "dense" else 0
    return _Shape(w, w * w + 1, opening, n_classes * w + n_classes, int(n_features), False, w <= _FUSED_MAX_WIDTH)


def parameter_count(cfg: Any, n_features: int, n_classes: int, image_shape: Optional[tuple[int, ...]] = None) -> int:
    """Entries of the flat parameter vector of the network ``cfg`` describes (the
    compiled layouts' arithmetic, without building the network)."""
    sh = _shape(cfg, n_features, n_classes, image_shape)
    return sh.opening + int(cfg.model.layers) * sh.per_layer + sh.classifier


# --------------------------------------------------------------------------- the estimate


def estimate_memory(cfg: Any, n_train: int, n_val: int, n_features: int, n_classes: int, *,
                    layer_procs: int = 1, data_procs: int = 1,
                    image_shape: Optional[tuple[int, ...]] = None, threads: int = 0,
                    checkpoint: bool = True) -> MemoryEstimate:
    """Bytes one process of a run of ``cfg`` (a :class:`~layerparallel.config.Config`)
    needs at its peak on ``n_train`` training and ``n_val`` validation examples of
    ``n_features`` features (image data: ``image_shape`` ``(C, H, W)``) and
    ``n_classes`` classes, with the layers split over ``layer_procs`` and the examples
    over ``data_procs`` processes. ``threads``: the threads of a process (0: the
    cores here), for per-thread scratch. ``checkpoint``: count what writing a
    checkpoint holds (the command line can always write one). Allocates nothing."""
    for name, v, lo in (("n_train", n_train, 1), ("n_val", n_val, 0), ("n_features", n_features, 1),
                        ("n_classes", n_classes, 1), ("layer_procs", layer_procs, 1), ("data_procs", data_procs, 1),
                        ("threads", threads, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    threads = threads or _cores()
    m, t, o = cfg.model, cfg.train, cfg.optimizer
    sh = _shape(cfg, n_features, n_classes, image_shape)
    N = int(m.layers)
    mode, device = str(t.mode), str(_get(t, "device", "cpu"))
    on_gpu = device == "cuda"
    host_net = device == "cpu"  # the host backend (the emulator keeps host memory but runs the device code)

    # Examples and layers of the process that holds most. Gradients are evaluated on
    # the whole training set, or on mini-batches (of batch_size, and the remainder);
    # forward passes without gradient run over the validation set and, with
    # mini-batches, over the training set (the training metrics of the first row).
    s = _split_max(n_train, data_procs)
    s_val = _split_max(n_val, data_procs)
    n_local = _split_max(N, layer_procs)
    bs = int(_get(o, "batch_size", 0))
    mini = 0 < bs < n_train
    if mini:
        grad_sizes = [_split_max(bs, data_procs)] + ([_split_max(n_train % bs, data_procs)] if n_train % bs else [])
        forward_sizes = [s, s_val]
    else:
        grad_sizes, forward_sizes = [s], [s_val]
    b_max = max(grad_sizes)
    ss = sh.state_width * _F64  # bytes of one example's state

    # Data: both splits (features and int64 labels) on every process, a mini-batch copy.
    feature_bytes = n_features * _F64
    data = (n_train + n_val) * (feature_bytes + 8) + (bs * (feature_bytes + 8) if mini else 0)

    # Parameter vectors: full length everywhere, the own share, the shard's int64 index.
    P = parameter_count(cfg, n_features, n_classes, image_shape)
    P_local = n_local * sh.per_layer + sh.opening + sh.classifier if layer_procs > 1 else P
    # + the int64 index of the own entries; + the running mean gradient of mini-batches
    local_vectors = _LOCAL_VECTORS + 1 + (3 if mini else 0)
    if data_procs > 1:
        local_vectors += 2  # the gradient's all-reduce buffers
    parameters = (_FULL_VECTORS * P + local_vectors * P_local) * _F64
    name = str(_get(o, "name", "lbfgs"))
    if name == "lbfgs":
        kept = 2 * int(_get(o, "memory", 10))  # the (s, y) pairs
        opt_vectors = kept + 3  # two-loop q, r and the trial step
    elif name == "gd":
        kept, opt_vectors = 0, 2  # direction, trial step
    elif name == "sgd":
        kept, opt_vectors = 1, 3  # momentum buffer; direction, update
    else:
        kept, opt_vectors = 2, 2 + 4  # Adam's moments; m_hat, v_hat and the update's temporaries
    optimizer = opt_vectors * P_local * _F64
    # A checkpoint (written between steps) copies the optimiser's state and the
    # parameters; the step's temporaries are gone by then.
    ckpt = max(0, kept + 1 - _STEP_TEMPORARIES) * P_local * _F64

    states = adjoints = derivatives = workspace = 0
    levels = [(N, 1, 1)]
    mgrit = mode != "serial" or layer_procs > 1 or not host_net
    if not mgrit:
        # ResidualNetwork::evaluate: all N + 1 states of a batch in one buffer that the
        # forward passes reuse, two adjoint buffers and dJ/du_N; act'(.) for wide or
        # conv layers, gradient partial sums and per-chain transposed weights for
        # narrow ones.
        states = (N + 1) * max(b_max, *forward_sizes) * ss
        adjoints = 3 * b_max * ss
        if sh.fused:
            workspace = (_ceil_div(b_max, _REDUCE_CHUNK) + 1) * N * sh.per_layer * _F64
        else:
            derivatives = N * b_max * ss
    else:
        g = cfg.mgrit
        max_levels = 1 if mode == "serial" else int(_get(g, "max_levels", 10))
        cf = int(_get(g, "cfactor", 2))
        cff = int(_get(g, "cfactor_fine", 0)) or cf
        levels = _hierarchy(N, cff, cf, int(_get(g, "min_coarse", 2)), max_levels)
        cpoints = str(_get(g, "store", "all")) == "cpoints"
        mgrit_threads = int(_get(g, "threads", 0)) or int(_get(t, "threads", 0)) or threads
        fwd = _mgrit_states(N, layer_procs, levels, cpoints, mgrit_threads)
        # ResNetMgrit per batch size (kept between evaluations: the warm start):
        # forward and adjoint solvers (the adjoint's blocks mirror the forward's), u_0
        # and lambda_N, act'(.) of the own layers, and the fused gradient's partial
        # sums (one process, narrow dense layers on the cpu).
        for b in grad_sizes:
            states += (fwd + 1) * b * ss
            adjoints += (fwd + 1) * b * ss
            derivatives += n_local * b * ss
            if layer_procs == 1 and host_net and sh.fused:
                workspace += _ceil_div(b, _REDUCE_CHUNK) * N * sh.per_layer * _F64
            if host_net:
                ckpt += 2 * (n_local + 1) * b * ss  # the warm starts' trajectories (own points filled)
        if sh.conv:
            workspace += threads * b_max * ss  # act'(.) scratch per thread
        if on_gpu:
            workspace += 2 * P * _F64  # parameters and gradient on the device
        # Forward passes without gradient: one process sweeps on the host (all states
        # of the largest set in one buffer); split layers keep a one-level solver per set.
        if layer_procs == 1:
            workspace += (N + 1) * max(forward_sizes) * ss
        else:
            workspace += sum((2 * (n_local + 3) + n_local) * f * ss for f in forward_sizes)
    device_workspace = 2 * P * _F64 if on_gpu else 0
    device_bytes = states + adjoints + derivatives + device_workspace if on_gpu else 0
    details = {"examples": s, "validation_examples": s_val, "batch_sizes": grad_sizes, "layers": n_local,
               "state_width": sh.state_width, "parameters": P, "local_parameters": P_local,
               "levels": len(levels), "mgrit": mgrit, "layer_procs": layer_procs, "data_procs": data_procs}
    return MemoryEstimate(data=data, parameters=parameters, optimizer=optimizer, states=states,
                          adjoints=adjoints, derivatives=derivatives, workspace=workspace + _OVERHEAD,
                          checkpoint=ckpt if checkpoint else 0, device=device,
                          device_bytes=device_bytes, device_workspace=device_workspace, details=details)


# --------------------------------------------------------------------------- available memory


def _read_int(path: str) -> Optional[int]:
    try:
        text = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text or text == "max":
        return None
    try:
        return int(text.split()[0])
    except ValueError:
        return None


def _meminfo_available() -> Optional[int]:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    parts = line.split()
                    return int(parts[1]) * (1024 if len(parts) < 3 or parts[2].lower() == "kb" else 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _inactive_file(folder: str, key: str) -> int:
    """Reclaimable page cache a cgroup's usage includes (``memory.stat``)."""
    try:
        for line in Path(folder, "memory.stat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _cgroup_available(proc_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> Optional[int]:
    """The room under the tightest memory limit of this process's cgroup and its
    ancestors: v2 ``memory.max - memory.current``, v1 ``memory.limit_in_bytes -
    memory.usage_in_bytes`` (usage less the inactive page cache); None: no limit."""
    paths = {"v2": "", "v1": ""}
    try:
        for line in Path(proc_cgroup).read_text().splitlines():
            hier, _, rest = line.partition(":")
            controllers, _, path = rest.partition(":")
            if hier == "0" and not controllers:
                paths["v2"] = path
            elif "memory" in controllers.split(","):
                paths["v1"] = path
    except OSError:
        return None
    layouts = (("v2", root, "memory.max", "memory.current", "inactive_file"),
               ("v1", f"{root}/memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"))
    best: Optional[int] = None
    for kind, base, limit_file, usage_file, inactive in layouts:
        rel = paths[kind].strip("/")
        parts = rel.split("/") if rel else []
        for depth in range(len(parts), -1, -1):
            folder = "/".join([base, *parts[:depth]])
            limit = _read_int(f"{folder}/{limit_file}")
            if limit is None or limit >= 2**60:  # "max", v1's "unlimited", or not there
                continue
            usage = max(0, (_read_int(f"{folder}/{usage_file}") or 0) - _inactive_file(folder, inactive))
            room = max(0, limit - usage)
            best = room if best is None else min(best, room)
    return best


def _address_space_left() -> Optional[int]:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    try:
        with open("/proc/self/statm") as fh:
            used = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        used = 0
    return max(0, soft - used)


def available_memory() -> Optional[int]:
    """Bytes this process may still allocate: the least of MemAvailable (/proc/meminfo),
    the room under its cgroup's memory limit (v2 ``memory.max - memory.current``, v1
    ``memory.limit_in_bytes - memory.usage_in_bytes``) and, when RLIMIT_AS is set, the
    address space left under it. None when none of them is known."""
    known = [v for v in (_meminfo_available(), _cgroup_available(), _address_space_left()) if v is not None]
    return min(known) if known else None


# --------------------------------------------------------------------------- the check


_ADVICE = ("reduce model.layers, model.width (model.channels) or data.train_size, "
           "or split the run over processes on more machines (parallel.layer_procs, parallel.data_procs)")


def check_memory(estimate: MemoryEstimate, available: Optional[int] = None, *, processes: int = 1,
                 device_available: Optional[int] = None, warn: bool = True) -> bool:
    """Raise ValueError with one sentence when the host part of ``estimate``, times the
    ``processes`` of the run on this machine (they share its memory), does not fit in
    ``available`` bytes (default :func:`available_memory`; unknown: no check), or its
    GPU part in ``device_available`` (when given). Returns True, and warns
    (``RuntimeWarning``) when ``warn``, when either needs more than
    :data:`WARN_FRACTION` of its memory; False otherwise."""
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes must be an integer >= 1, got {processes!r}")
    if available is None:
        available = available_memory()
    here = f", {format_bytes(processes * estimate.host)} for the {processes} processes on this machine" \
        if processes > 1 else ""
    checks = [("", estimate.host, processes * estimate.host, here, available, estimate.breakdown(host=True))]
    if estimate.device_bytes and device_available is not None:
        gpu = {k: v for k, v in estimate.components().items() if k in ("states", "adjoints", "derivatives")}
        gpu["parameters and gradient"] = estimate.device_workspace
        text = ", ".join(f"{k} {format_bytes(v)}" for k, v in sorted(gpu.items(), key=lambda kv: -kv[1])[:3] if v)
        checks.append((" of GPU memory", estimate.device_bytes, estimate.device_bytes, "", device_available, text))
    tight = False
    for where, each, need, total, avail, parts in checks:
        if avail is None:
            continue
        if need > avail:
            raise ValueError(f"the run needs about {format_bytes(each)}{where} per process ({parts}){total} but "
                             f"{format_bytes(avail)} is available; {_ADVICE}.")
        if need > WARN_FRACTION * avail:
            tight = True
            if warn:
                warnings.warn(f"the run needs about {format_bytes(each)}{where} per process ({parts}){total}, "
                              f"{100 * need / max(avail, 1):.0f}% of the {format_bytes(avail)} available",
                              RuntimeWarning, stacklevel=2)
    return tight


# --------------------------------------------------------------------------- the dry run


def _threads(cfg: Any, processes: int) -> tuple[int, int]:
    """(threads of the compiled loops, MGRIT interval threads) training would use."""
    from . import _core
    from .comm import local_processes

    n = int(cfg.train.threads)
    if not n:
        n = max(1, _core.max_threads() // local_processes()) if processes > 1 else int(_core.num_threads())
    return n, int(cfg.mgrit.threads) or n


def _check_shape(cfg: Any, n_features: int, n_classes: int, shape: Optional[tuple[int, ...]], lp: int) -> None:
    """The network's shape rules (the compiled constructors' and the layer split's),
    checked without building anything, so that a huge run is refused for what is wrong
    with it before its size is."""
    m = cfg.model
    if m.kind == "conv":
        if shape is None:
            raise ValueError(f'model.kind = "conv" needs image data; data.name = "{cfg.data.name}" gives vectors')
        if shape[0] != 1:
            raise ValueError(f"the replicate opening needs one input channel, the images have {shape[0]}")
    else:
        if m.width < n_classes:
            raise ValueError(f"model.width must be at least the number of classes ({n_classes}), got {m.width}")
        if m.opening == "expand" and m.width < n_features:
            raise ValueError(f"the expand opening needs model.width >= the {n_features} features, got {m.width}")
    if m.layers < lp:
        raise ValueError(f"the {m.layers} layers cannot be split over parallel.layer_procs = {lp} processes: "
                         "each needs at least one layer")


def dry_run_plan(cfg: Any, data: Any, grid: Any = None, *, available: Optional[int] = None,
                 validate: bool = True) -> dict[str, Any]:
    """The plan of a training run of ``cfg`` on ``data`` (a
    :class:`~layerparallel.dataset.Dataset`) over ``grid`` (a
    :class:`~layerparallel.grid.ProcessGrid`, or None: ``parallel.layer_procs`` x
    ``parallel.data_procs`` with 0 read as 1), without training: sizes, mode,
    optimiser, processes, threads, MGRIT levels and the memory estimate per process
    against ``available`` (default :func:`available_memory`).

    Checks first what needs no allocation (the network's shape, the device, the
    MGRIT options), raising their ValueError. When the run fits, ``validate`` then
    makes the remaining checks training makes before its first step by building the
    network (and reading ``train.params``) and the solver. When it does not fit it
    builds nothing: ``plan["memory"]["fits"]`` is False and
    ``plan["memory"]["message"]`` the one-sentence refusal of :func:`check_memory`."""
    from .comm import local_processes
    from .datasets import image_shape as _image_shape
    from .device import check_device
    from .options import MgritOptions

    n_train, n_val = int(data.train_x.shape[0]), int(data.val_x.shape[0])
    n_features, n_classes = int(data.n_features), int(data.n_classes)
    shape = _image_shape(data)
    if grid is not None:
        lp, dp, size = int(grid.layer_procs), int(grid.data_procs), int(grid.size)
    else:
        lp, dp = int(cfg.parallel.layer_procs), int(cfg.parallel.data_procs) or 1
        size = lp * dp
    m, o = cfg.model, cfg.optimizer
    _check_shape(cfg, n_features, n_classes, shape, lp)
    mgrit = MgritOptions.coerce(cfg.mgrit)
    check_device(cfg.train.device, m.kind, m.opening)
    threads, mgrit_threads = _threads(cfg, size)
    est = estimate_memory(cfg, n_train, n_val, n_features, n_classes, layer_procs=lp, data_procs=dp,
                          image_shape=shape, threads=threads)
    avail = available_memory() if available is None else available
    here = min(size, local_processes())  # processes sharing this machine's memory
    fits, tight, message = True, False, ""
    if avail is not None:
        try:
            tight = check_memory(est, avail, processes=here, warn=False)
        except ValueError as exc:
            fits, message = False, str(exc)
        if tight:
            message = (f"the run needs about {format_bytes(here * est.host)} on this machine, "
                       f"{100 * here * est.host / avail:.0f}% of the {format_bytes(avail)} available")
    batch = int(o.batch_size)
    epochs = int(_get(o, "epochs", 0) or 0)
    mini = 0 < batch < n_train
    steps = epochs * (math.ceil(n_train / batch) if mini else 1) if epochs else int(o.max_iter)
    sizes: dict[str, Any] = {
        "kind": m.kind, "layers": int(m.layers), "parameters": est.details["parameters"],
        "state_width": est.details["state_width"], "train_examples": n_train, "val_examples": n_val,
        "features": n_features, "classes": n_classes, "batch_size": batch if mini else n_train,
    }
    if m.kind == "conv":
        sizes.update(channels=int(m.channels), image=list(shape) if shape else None)
    else:
        sizes["width"] = int(m.width)
    plan: dict[str, Any] = {
        "sizes": sizes,
        "mode": cfg.train.mode,
        "device": cfg.train.device,
        "optimizer": {"name": o.name, "steps": steps, "epochs": epochs,
                      **({"memory": int(o.memory)} if o.name == "lbfgs" else {})},
        "processes": {"total": size, "layer_procs": lp, "data_procs": dp,
                      "layers_per_process": est.details["layers"], "examples_per_process": est.details["examples"]},
        "threads": {"threads": threads, **({"mgrit_threads": mgrit_threads} if est.details["mgrit"] else {})},
        "mgrit": ({"levels": est.details["levels"], "cfactor": mgrit.cfactor,
                   "cfactor_fine": mgrit.cfactor_fine or mgrit.cfactor, "store": mgrit.store}
                  if cfg.train.mode != "serial" else None),
        "memory": {"per_process": est.to_dict(), "processes_here": here, "available": avail, "fits": fits,
                   "tight": tight, "message": message},
    }
    if validate and fits:
        _validate_run(cfg, data, grid)
    return plan


def _validate_run(cfg: Any, data: Any, grid: Any) -> None:
    """The checks training makes before its first step: build the network and the solver."""
    from .train import build_model, solver_from_config

    model = build_model(cfg, data)
    if cfg.train.params:
        model.load_parameters(cfg.train.params)
    solver_from_config(cfg, model, grid)


def format_dry_run(plan: dict[str, Any]) -> str:
    """The lines ``layerparallel train --dry-run`` prints for a :func:`dry_run_plan`."""
    z, p, th, mem, opt = plan["sizes"], plan["processes"], plan["threads"], plan["memory"], plan["optimizer"]
    est = mem["per_process"]
    shape = (f"{z['channels']} channels of {'x'.join(str(d) for d in z['image'][1:])} pixels" if z["kind"] == "conv"
             else f"width {z['width']}")
    length = f"{opt['epochs']} epochs ({opt['steps']:,} steps)" if opt["epochs"] else f"{opt['steps']:,} steps"
    mg = plan["mgrit"]
    lines = [
        f"network    {z['kind']}, {z['layers']:,} layers, {shape}, {z['parameters']:,} parameters",
        f"data       {z['train_examples']:,} training and {z['val_examples']:,} validation examples, "
        f"{z['features']:,} features, {z['classes']} classes, batch {z['batch_size']:,}",
        f"training   {plan['mode']} mode on {plan['device']}, {opt['name']}"
        + (f" (memory {opt['memory']})" if "memory" in opt else "") + f", {length}"
        + (f", {mg['levels']} MGRIT levels (cfactor {mg['cfactor_fine']} then {mg['cfactor']})" if mg else ""),
        f"processes  {p['total']} = {p['layer_procs']} splitting the layers x {p['data_procs']} splitting the "
        f"examples (at most {p['layers_per_process']:,} layers and {p['examples_per_process']:,} examples each)",
        f"threads    {th['threads']} per process"
        + (f", {th['mgrit_threads']} over MGRIT intervals" if "mgrit_threads" in th else ""),
        f"memory     about {format_bytes(est['host'])} per process"
        + (f" and {format_bytes(est['device_bytes'])} of GPU memory" if est["device_bytes"] else ""),
    ]
    gpu = ("states", "adjoints", "derivatives") if est["device_bytes"] else ()
    for name in MemoryEstimate.COMPONENTS:
        lines.append(f"  {name:<12}{format_bytes(est[name]):>10}" + (" (GPU)" if name in gpu else ""))
    avail = mem["available"]
    verdict = "" if avail is None else ", fits" if not mem["tight"] and mem["fits"] else \
        ", fits tightly" if mem["fits"] else ", does not fit"
    here = mem["processes_here"]
    shared = f" for the {here} processes on this machine" if here > 1 else ""
    lines.append(f"available  {format_bytes(avail) if avail is not None else 'unknown'}{shared}{verdict}")
    if mem["message"] and mem["fits"]:  # a refusal is the caller's one-line error
        lines.append(mem["message"])
    return "\n".join(lines)
