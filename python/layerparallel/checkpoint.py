"""Checkpoints of a training run, and resuming from them.

A checkpoint is everything the training loop needs to continue exactly where it
stopped: the parameters, the optimiser's state (L-BFGS pairs, Adam and SGD
moments), the MGRIT warm starts of the simultaneous mode, the random generator
and the position in the epoch, the running metrics, the history so far and the
solver's counters. Resuming from it gives the same parameters and history, bit
for bit, as the run that was never interrupted (the wall-clock columns aside).

On disk, in the run folder::

    checkpoint.json               which checkpoint is complete: iteration, folder, processes
    checkpoint-00000040/
        rank00000.npz             one file per process: its share (its layers' parameters
        rank00001.npz             and optimiser state, its warm starts)

Each process writes its file atomically; after all have written, the first
process replaces ``checkpoint.json`` (atomically) and only then removes the
older checkpoint folders. A process killed at any moment (SIGKILL included)
leaves the previous complete checkpoint loadable. Parameter-sized vectors are
stored whole, so the serial and exact modes resume on any number of processes;
the simultaneous mode, whose warm starts are split like the layers, resumes on
the same process grid.
"""
from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ._files import open_regular
from .io import atomic_path, write_json

__all__ = ["Checkpointer", "read_manifest"]

_MANIFEST = "checkpoint.json"
_FOLDER = re.compile(r"^checkpoint-(\d{8})$")


def _split(prefix: str, d: dict[str, Any], arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    for k, v in d.items():
        if isinstance(v, np.ndarray):
            arrays[f"{prefix}{k}"] = v
        else:
            meta[k] = v.item() if isinstance(v, np.generic) else v


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of the last complete checkpoint in ``folder`` (ValueError naming the
    folder when there is none or it cannot be read)."""
    path = Path(folder) / _MANIFEST
    if not path.is_file():
        raise ValueError(f"{folder} holds no checkpoint ({_MANIFEST} is missing): nothing to resume")
    try:
        manifest = json.loads(path.read_text())
        int(manifest["iteration"]), str(manifest["folder"]), int(manifest["processes"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"checkpoint manifest {path} cannot be read: {exc}") from None
    if not _FOLDER.match(manifest["folder"]):
        raise ValueError(f"checkpoint manifest {path} names no checkpoint folder")
    return manifest


class Checkpointer:
    """Writes and reads the checkpoints of one run in ``folder``; ``comm`` is the job's
    communicator (None: one process). ``config`` (a dict) and ``extra`` are stored in
    the manifest, for ``layerparallel train --resume``."""

    def __init__(self, folder: str | Path, every: int = 0, comm: Any = None, config: Optional[dict] = None,
                 extra: Optional[dict] = None):
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 0:
            raise ValueError(f"checkpoint_every must be an integer >= 0, got {every!r}")
        self.folder = Path(folder)
        self.every = int(every)
        self.comm = comm
        self.config = config
        self.extra = dict(extra or {})
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = comm.Get_size() if comm is not None else 1
        self.written = 0

    def _barrier(self) -> None:
        if self.size > 1:
            self.comm.Barrier()

    def save(self, iteration: int, state: dict[str, dict[str, Any]]) -> Path:
        """Write this process's ``state`` (sections of numbers, strings, lists and arrays)
        as the checkpoint of ``iteration``; every process calls it together."""
        name = f"checkpoint-{iteration:08d}"
        target = self.folder / name
        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {}
        for section, values in state.items():
            sub: dict[str, Any] = {}
            _split(f"{section}.", values, arrays, sub)
            meta[section] = sub
        meta["iteration"] = int(iteration)
        target.mkdir(parents=True, exist_ok=True)
        with atomic_path(target / f"rank{self.rank:05d}.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, __meta__=np.array(json.dumps(meta)), **arrays)
        self._barrier()  # every share is on disk before the manifest names it
        if self.rank == 0:
            write_json(self.folder / _MANIFEST, {"iteration": int(iteration), "folder": name,
                                                 "processes": self.size, "config": self.config, **self.extra})
            for old in self.folder.iterdir():
                if _FOLDER.match(old.name) and old.name != name:
                    shutil.rmtree(old, ignore_errors=True)
        self._barrier()
        self.written += 1
        return target

    def load(self, other_counts: bool = False) -> tuple[dict[str, dict[str, Any]], bool]:
        """This process's file of the last complete checkpoint, as ``save`` was given it,
        and whether it was written by as many processes as this job has (every process
        calls it). ``other_counts``: a checkpoint of another process count is read from
        the first process's file (the caller keeps what does not depend on the count);
        otherwise it is refused."""
        manifest = read_manifest(self.folder)
        same = manifest["processes"] == self.size
        if not same and not other_counts:
            raise ValueError(f"the checkpoint in {self.folder} was written by {manifest['processes']} processes; "
                             f"resume it with the same number (this job has {self.size}), or in the serial "
                             "or exact mode, which resume on any number")
        path = self.folder / manifest["folder"] / f"rank{self.rank if same else 0:05d}.npz"
        try:
            with open_regular(path, f"checkpoint file {path}") as (fh, _):
                with np.load(fh, allow_pickle=False) as z:
                    meta = json.loads(str(z["__meta__"]))
                    arrays = {k: z[k] for k in z.files if k != "__meta__"}
        except (OSError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"checkpoint file {path} cannot be read: {exc}") from None
        if meta.get("iteration") != manifest["iteration"]:
            raise ValueError(f"checkpoint file {path} is of iteration {meta.get('iteration')}, the manifest "
                             f"names {manifest['iteration']}")
        state: dict[str, dict[str, Any]] = {}
        for section, values in meta.items():
            if isinstance(values, dict):
                state[section] = dict(values)
        for key, arr in arrays.items():
            section, _, name = key.partition(".")
            state.setdefault(section, {})[name] = arr
        return state, same
