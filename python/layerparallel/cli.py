"""The ``layerparallel`` command: train, evaluate, gradcheck, info.

Bad input (config, data, parameter files, an unwritable folder, a run that
does not fit in memory) ends with one line on stderr and exit status 2, on
one process or many; a run's results appear in its folder all at once.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .config import load_config
from .data import load_dataset
from .errors import Reported, describe, report
from .io import (dumps_strict, finite_json, folder_entries, remove_stale_temporaries, staged_folder, write_json,
                 write_text)

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="layerparallel",
                                description="Layer-parallel training of deep residual networks with MGRIT.")
    sub = p.add_subparsers(dest="command", required=True)

    def debug(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--debug", action="store_true", help="print the traceback of an error, not only its line")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("config", help="experiment configuration (TOML)")
        sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one configuration value (repeatable)")
        debug(sp)

    t = sub.add_parser("train", help="run a whole experiment and write its results")
    t.add_argument("config", nargs="?", help="experiment configuration (TOML); omitted with --resume")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one configuration value (repeatable)")
    debug(t)
    t.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the run whose checkpoint is in RUN_DIR (its configuration, its folder)")
    t.add_argument("--out", help="output folder (default: runs/<config name>)")
    t.add_argument("--quiet", action="store_true", help="print only the final summary")
    t.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier run in --out (refused otherwise)")
    t.add_argument("--dry-run", action="store_true",
                   help="check everything and print the plan (sizes, memory, processes, threads) without training")

    e = sub.add_parser("evaluate", help="losses and accuracies of a parameter file (JSON on stdout)")
    common(e)
    e.add_argument("--params", required=True, help="parameter file (.npz) written by train")

    i = sub.add_parser("info", help="version, BLAS, SIMD and vector math, OpenMP, MPI and CUDA of this installation")
    i.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    debug(i)

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


def _fingerprint(cfg: Any, data: Any) -> str:
    """A hash of the settings and the data a process will train with (the labels and a
    sample of the features), to compare across the processes of a job."""
    h = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode())
    for a in (data.train_x, data.train_y, data.val_x, data.val_y):
        a = np.asarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        step = max(1, a.shape[0] // 1000) if a.ndim else 1
        h.update(np.ascontiguousarray(a[::step]).tobytes())
    return h.hexdigest()


def _together(comm: Any, prepare: Any, fingerprint: Any = None) -> Any:
    """Run ``prepare`` (no communication inside) on every process of the job and agree on
    its outcome before any collective: if a process failed, the first such process prints
    its one line and every process raises :class:`Reported` with its exit status; if the
    processes were given different settings (``fingerprint`` differs), the first process
    says so. One process: ``prepare``'s exceptions pass through unchanged."""
    if comm.Get_size() == 1:
        return prepare()
    result, error = None, None
    try:
        result = prepare()
    except Exception as exc:  # noqa: BLE001 - every kind is reported below, once
        error = exc
    mine = (describe(error) if error is not None else None,
            fingerprint(result) if error is None and fingerprint else None)
    everyone = comm.allgather(mine)
    rank = comm.Get_rank()
    failed = [r for r, (err, _) in enumerate(everyone) if err is not None]
    if failed:
        if rank == failed[0]:
            report(error, rank=rank, debug=False)
        raise Reported(everyone[failed[0]][0][1])
    prints = [fp for _, fp in everyone]
    if any(fp != prints[0] for fp in prints):
        other = next(r for r, fp in enumerate(prints) if fp != prints[0])
        if rank == 0:
            print(f"layerparallel: error: the processes were given different settings or data: process {other}'s "
                  "configuration differs from process 0's; every process of the job must run the same command "
                  "with the same files", file=sys.stderr, flush=True)
        raise Reported(2)
    return result


def _check_writable_folder(out: Path, overwrite: bool = False) -> None:
    """Refuses, before any training, a run folder that could not be written at the end:
    one that is a file, lies under a file, or whose nearest existing folder is not
    writable; and one that holds an earlier run unless ``overwrite``. Creates nothing
    (a run refused later leaves no folder behind)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    probe = out.absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"--out {out} cannot be created: {probe} is a file, not a folder")
    writable = probe.parent if probe == out.absolute() else probe  # the folder is replaced from its parent
    if not os.access(writable, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out} cannot be written: no write permission in {writable}")
    held = folder_entries(out)
    if held and not overwrite:
        if "checkpoint.json" in held:
            raise ValueError(f"--out {out} holds the checkpoint of an unfinished run; continue it with "
                             f"layerparallel train --resume {out}, or pass --overwrite to start afresh")
        shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        raise ValueError(f"--out {out} already holds files ({shown}); pass --overwrite to replace them "
                         "or choose another folder")


def cmd_train(args: argparse.Namespace) -> int:
    from . import _core
    from .checkpoint import Checkpointer, read_manifest
    from .comm import local_processes
    from .config import config_from_dict
    from .datasets import class_balance, format_class_balance, image_shape
    from .grid import ProcessGrid
    from .memory import (available_memory, check_memory, dry_run_plan, estimate_memory, format_bytes,
                         format_dry_run)
    from .plots import plot_decision_regions, plot_history, plot_residuals
    from .train import TrainingInterrupted, build_model, planned_steps, train

    comm = _world()
    if args.resume is not None:
        if args.config is not None or args.overrides or args.out is not None or args.overwrite:
            raise ValueError("--resume RUN_DIR continues a run as it was configured: give no CONFIG, --set, "
                             "--out or --overwrite with it")
        out = Path(args.resume)
    elif args.config is None:
        raise ValueError("train needs a CONFIG file (or --resume RUN_DIR)")
    else:
        out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    name = Path(args.config).stem if args.config else out.name

    def prepare():
        if args.resume is not None:
            manifest = read_manifest(out)
            cfg = config_from_dict(manifest["config"], base_dir=manifest.get("base_dir"))
            data = load_dataset(cfg.data, cfg.base_dir)
        else:
            cfg, data = _load(args)
        if comm.Get_rank() == 0 and args.resume is None and not args.dry_run:
            _check_writable_folder(out, args.overwrite)
        lps, dps = ProcessGrid.check(comm.Get_size(), cfg.parallel.layer_procs, cfg.parallel.data_procs)
        if args.dry_run:
            return cfg, data, None
        # The memory the run will need, against what this machine has, before any of it
        # is allocated (one sentence with the estimate when it cannot fit).
        est = estimate_memory(cfg, data.n_train, data.n_val, data.n_features, data.n_classes, layer_procs=lps,
                              data_procs=dps, image_shape=image_shape(data))
        here = min(comm.Get_size(), local_processes())
        if check_memory(est, processes=here, warn=False) and comm.Get_rank() == 0:
            print(f"layerparallel: warning: the run needs about {format_bytes(here * est.host)} on this machine, "
                  f"close to the {format_bytes(available_memory() or 0)} available", file=sys.stderr, flush=True)
        model = build_model(cfg, data)
        if cfg.train.params and args.resume is None:
            model.load_parameters(cfg.train.params)
        return cfg, data, model

    cfg, data, model = _together(comm, prepare, lambda r: _fingerprint(r[0], r[1]))
    if args.dry_run:  # everything checked, the plan printed, nothing trained or written
        grid = ProcessGrid.create(comm, cfg.parallel.layer_procs, cfg.parallel.data_procs)
        plan = dry_run_plan(cfg, data, grid)
        if grid.is_root:
            print(format_dry_run(plan), flush=True)
            if not plan["memory"]["fits"]:
                print(f"layerparallel: error: {plan['memory']['message']}", file=sys.stderr, flush=True)
        return 0 if plan["memory"]["fits"] else 2
    # Checkpoints go into the run folder while the run goes on (every
    # train.checkpoint_every steps, and on SIGINT / SIGTERM); the results replace them.
    ckpt = Checkpointer(out, cfg.train.checkpoint_every, comm if comm.Get_size() > 1 else None,
                        config=cfg.to_dict(), extra={"base_dir": str(Path(cfg.base_dir).absolute())})
    grid = ProcessGrid.create(comm, cfg.parallel.layer_procs, cfg.parallel.data_procs)
    if grid.is_root:
        remove_stale_temporaries(out.absolute().parent)
        remove_stale_temporaries(out)
        if not args.quiet:
            print(format_class_balance(data), file=sys.stderr, flush=True)
    # Every process trains (on its share of the examples); only the first one talks and writes.
    o = cfg.optimizer
    steps = planned_steps(o.max_iter, o.epochs, o.batch_size, len(data.train_y))
    progress = _Progress(steps, args.quiet or not grid.is_root)
    try:
        result = train(model, data, cfg, callback=progress, grid=grid, checkpoint=ckpt,
                       resume=args.resume is not None)
    except TrainingInterrupted as exc:
        progress.close()
        if grid.is_root:
            print(f"layerparallel: {exc} (continue with: layerparallel train --resume {out})", file=sys.stderr,
                  flush=True)
        return 130
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
    summary, non_finite = finite_json(summary)
    if non_finite:  # a diverged run: strict JSON has no NaN, so say where the nulls came from
        summary["stop_reason"] = f"{summary['stop_reason']} (non-finite values written as null: " \
                                 f"{', '.join(non_finite)})"
    # Every file goes into a fresh folder that replaces --out in one step at the end, so
    # a failure or an interrupt while writing leaves --out as it was.
    with staged_folder(out, overwrite=args.overwrite or args.resume is not None or ckpt.written > 0) as stage:
        write_text(stage / "history.csv", _history_csv(result.history, result.columns))
        saved_model = cfg.to_dict()["model"] | {"n_features": data.n_features}
        if cfg.model.kind == "conv":
            saved_model |= {"image_height": model.height, "image_width": model.width}
        model.save(stage / "params.npz", config=cfg.to_dict() | {"model": saved_model})
        plot_history(result.history, stage / "training.png", title=f"{name} ({cfg.train.mode})")
        if data.n_features == 2:
            plot_decision_regions(model, data.val_x, data.val_y, stage / "decision_regions.png")
        if result.mgrit:
            plot_residuals(result.history, stage / "mgrit_residuals.png", switches=result.mgrit["safeguard_switches"],
                           title=f"MGRIT residuals ({cfg.train.mode})")
        write_json(stage / "summary.json", summary)
    print(dumps_strict({k: summary[k] for k in ("train_accuracy", "val_accuracy", "val_loss", "iterations",
                                                "seconds", "stop_reason")}), flush=True)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .train import build_model

    def prepare():
        cfg, data = _load(args)
        model = build_model(cfg, data)
        model.load_parameters(args.params)
        return cfg, data, model

    cfg, data, model = _together(_world(), prepare, lambda r: _fingerprint(r[0], r[1]))
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
    def prepare():
        cfg, data = _load(args)
        return cfg, data, build_model(cfg, data)

    cfg, data, model = _together(_world(), prepare, lambda r: _fingerprint(r[0], r[1]))
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
    handlers = {"train": cmd_train, "evaluate": cmd_evaluate, "gradcheck": cmd_gradcheck, "info": cmd_info}
    from .comm import abort_on_error

    # SIGTERM (a batch system ending the job) unwinds like Ctrl-C: results being
    # written are dropped and --out stays as it was.
    previous = None
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        comm = _world()
        # Under mpiexec an error on one process ends the whole job (exit 2 for bad
        # input) instead of leaving the others waiting in a collective.
        with abort_on_error(comm, debug=args.debug):
            return handlers[args.command](args)
    except Reported as exc:  # printed once already, by the process where it happened
        return exc.code
    except Exception as exc:  # noqa: BLE001 - one line for every kind; a traceback with --debug
        return report(exc, debug=args.debug)
    except KeyboardInterrupt as exc:
        return report(exc)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
