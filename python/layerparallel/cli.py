"""The ``layerparallel`` command: train, evaluate, gradcheck, info.

Bad input (config, data, parameter files) ends with one line on stderr and
exit status 2; results are written atomically.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .config import load_config
from .data import load_dataset
from .io import dumps_strict, finite_json, write_json, write_text

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="layerparallel",
                                description="Layer-parallel training of deep residual networks with MGRIT.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("config", help="experiment configuration (TOML)")
        sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one configuration value (repeatable)")

    t = sub.add_parser("train", help="run a whole experiment and write its results")
    common(t)
    t.add_argument("--out", help="output folder (default: runs/<config name>)")
    t.add_argument("--quiet", action="store_true", help="print only the final summary")

    e = sub.add_parser("evaluate", help="losses and accuracies of a parameter file (JSON on stdout)")
    common(e)
    e.add_argument("--params", required=True, help="parameter file (.npz) written by train")

    i = sub.add_parser("info", help="version, BLAS, SIMD and vector math, OpenMP, MPI and CUDA of this installation")
    i.add_argument("--json", action="store_true", help="one JSON object instead of lines")

    g = sub.add_parser("gradcheck", help="compare the gradient with central finite differences")
    common(g)
    g.add_argument("--samples", type=int, default=40, help="parameters to check (default 40)")
    g.add_argument("--examples", type=int, default=200, help="training examples used (default 200)")
    g.add_argument("--eps", type=float, default=1e-5, help="finite-difference step (default 1e-5)")
    g.add_argument("--tol", type=float, default=1e-6, help="largest acceptable relative error (default 1e-6)")
    return p


class _Progress:
    """A progress bar on a terminal, one line per iteration otherwise, nothing when quiet."""

    def __init__(self, total: int, quiet: bool, stream: Any = None):
        self.total = max(total, 1)
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def __call__(self, row: dict[str, float]) -> None:
        if self.quiet:
            return
        it = int(row["iteration"])
        text = (f"iter {it:5d}  objective {row['objective']:.6e}  train acc {100 * row['train_accuracy']:6.2f}%  "
                f"val acc {100 * row['val_accuracy']:6.2f}%  |g| {row['grad_norm']:.2e}  {row['seconds']:7.2f}s")
        if self.tty:
            width = 28
            done = int(width * min(it, self.total) / self.total)
            self.stream.write(f"\r[{'#' * done}{'.' * (width - done)}] {text}")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()


def _history_csv(history: Sequence[dict[str, float]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in history:
        w.writerow([int(row[c]) if c in ("iteration", "fwd_cycles", "bwd_cycles", "exact") and np.isfinite(row[c])
                    else repr(float(row[c])) for c in columns])
    return buf.getvalue()


def _load(args: argparse.Namespace):
    cfg = load_config(args.config, args.overrides)
    data = load_dataset(cfg.data, cfg.base_dir)
    return cfg, data


def _check_writable_folder(out: Path) -> None:
    """Refuses, before any training, a run folder that could not be written at the end:
    one that is a file, lies under a file, or whose nearest existing folder is not
    writable. Creates nothing (a run refused later leaves no folder behind)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    probe = out.absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"--out {out} cannot be created: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out} cannot be written: no write permission in {probe}")


def cmd_train(args: argparse.Namespace) -> int:
    from .plots import plot_decision_regions, plot_history, plot_residuals
    from .train import build_model, train

    from . import _core
    from .grid import ProcessGrid

    cfg, data = _load(args)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    _check_writable_folder(out)
    grid = ProcessGrid.create(_world(), cfg.parallel.layer_procs, cfg.parallel.data_procs)
    model = build_model(cfg, data)
    if cfg.train.params:
        model.load_parameters(cfg.train.params)
    from .datasets import class_balance, format_class_balance

    if grid.is_root and not args.quiet:
        print(format_class_balance(data), file=sys.stderr, flush=True)
    # Every process trains (on its share of the examples); only the first one talks and writes.
    progress = _Progress(cfg.optimizer.max_iter, args.quiet or not grid.is_root)
    result = train(model, data, cfg, callback=progress, grid=grid)
    progress.close()
    if not grid.is_root:
        return 0

    summary = {
        **result.final,
        "iterations": result.iterations,
        "seconds": result.seconds,
        "seconds_per_iteration": result.seconds / max(result.iterations, 1),
        "gradient_evaluations": result.gradient_evaluations,
        "stop_reason": result.stop_reason,
        "mode": cfg.train.mode,
        "layers": cfg.model.layers,
        "width": cfg.model.width,
        "processes": grid.size,
        "layer_procs": grid.layer_procs,
        "data_procs": grid.data_procs,
        "threads": _core.num_threads(),
        "class_balance": {split: {str(k): v for k, v in counts.items()}
                          for split, counts in class_balance(data).items()},
        "config": cfg.to_dict(),
    }
    if result.mgrit:
        summary["mgrit"] = result.mgrit
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "history.csv", _history_csv(result.history, result.columns))
    saved_model = cfg.to_dict()["model"] | {"n_features": data.n_features}
    if cfg.model.kind == "conv":
        saved_model |= {"image_height": model.height, "image_width": model.width}
    model.save(out / "params.npz", config=cfg.to_dict() | {"model": saved_model})
    plot_history(result.history, out / "training.png", title=f"{Path(args.config).stem} ({cfg.train.mode})")
    if data.n_features == 2:
        plot_decision_regions(model, data.val_x, data.val_y, out / "decision_regions.png")
    if result.mgrit:
        plot_residuals(result.history, out / "mgrit_residuals.png", switches=result.mgrit["safeguard_switches"],
                       title=f"MGRIT residuals ({cfg.train.mode})")
    summary, non_finite = finite_json(summary)
    if non_finite:  # a diverged run: strict JSON has no NaN, so say where the nulls came from
        summary["stop_reason"] = f"{summary['stop_reason']} (non-finite values written as null: " \
                                 f"{', '.join(non_finite)})"
    write_json(out / "summary.json", summary)
    print(dumps_strict({k: summary[k] for k in ("train_accuracy", "val_accuracy", "val_loss", "iterations",
                                                "seconds", "stop_reason")}), flush=True)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .train import build_model

    cfg, data = _load(args)
    model = build_model(cfg, data)
    model.load_parameters(args.params)
    tr = model.evaluate(data.train_x, data.train_y, gradient=False, regularized=False)
    va = model.evaluate(data.val_x, data.val_y, gradient=False, regularized=False)
    if _world().Get_rank() != 0:  # under mpiexec only the first process prints
        return 0
    print(dumps_strict({"train_loss": tr.loss, "train_accuracy": tr.accuracy,
                      "val_loss": va.loss, "val_accuracy": va.accuracy}))
    return 0


def cmd_gradcheck(args: argparse.Namespace) -> int:
    from .train import build_model

    if args.samples < 1 or args.examples < 1:
        raise ValueError("--samples and --examples must be at least 1")
    if not (args.eps > 0):
        raise ValueError(f"--eps must be positive, got {args.eps}")
    cfg, data = _load(args)
    model = build_model(cfg, data)
    rng = np.random.default_rng(cfg.train.seed)
    # Move off the tiny initial weights so every term of the gradient matters.
    model.theta += 0.3 * rng.standard_normal(model.size)
    X, y = data.train_x[: args.examples], data.train_y[: args.examples]
    theta = model.theta.copy()
    ev = model.evaluate(X, y)
    g = ev.gradient
    # A central difference carries a rounding error of about eps_machine * |f| / eps;
    # a component smaller than that error divided by the tolerance cannot be checked
    # to the tolerance (dead smooth-ReLU units give exact zeros, for instance).
    noise = 4 * np.finfo(float).eps * max(abs(ev.objective), 1.0) / args.eps
    measurable = np.flatnonzero(np.abs(g) >= noise / args.tol)
    if measurable.size == 0:
        raise ValueError("no gradient component is large enough to check against finite differences")
    idx = rng.choice(measurable, size=min(args.samples, measurable.size), replace=False)
    worst, worst_k = 0.0, -1
    for k in idx:
        e = np.zeros_like(theta)
        e[k] = args.eps
        fp = model.evaluate(X, y, theta=theta + e, gradient=False).objective
        fm = model.evaluate(X, y, theta=theta - e, gradient=False).objective
        fd = (fp - fm) / (2 * args.eps)
        rel = abs(fd - g[k]) / max(abs(fd), abs(g[k]))
        if rel > worst:
            worst, worst_k = rel, int(k)
    name = next(n for n, o, s in model.layout[::-1] if o <= worst_k) if worst_k >= 0 else ""
    ok = bool(worst <= args.tol)
    if _world().Get_rank() != 0:
        return 0 if ok else 1
    print(dumps_strict({"max_relative_error": float(worst), "parameter": name, "index": worst_k,
                      "checked": int(len(idx)), "below_noise": int(model.size - measurable.size),
                      "tol": args.tol, "passed": ok}))
    return 0 if ok else 1


def _world() -> Any:
    from .comm import world

    return world()


def cmd_info(args: argparse.Namespace) -> int:
    from .info import show_config
    show_config(as_json=args.json)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "info":
        return cmd_info(args)
    handlers = {"train": cmd_train, "evaluate": cmd_evaluate, "gradcheck": cmd_gradcheck}
    from .comm import abort_on_error

    comm = _world()
    try:
        # Under mpiexec an error on one process ends the whole job (exit 2 for bad
        # input) instead of leaving the others waiting in a collective.
        with abort_on_error(comm):
            return handlers[args.command](args)
    except ValueError as exc:
        print(f"layerparallel: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("layerparallel: interrupted", file=sys.stderr)
        return 130
