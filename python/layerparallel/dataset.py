"""The :class:`Dataset` container shared by the data loaders (:mod:`layerparallel.data`,
:mod:`layerparallel.datasets`), in a module of its own so that neither loader
module imports the other for it."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Dataset", "section_value"]


@dataclass
class Dataset:
    """Training and validation data: features float64 (n, n_features), labels
    int64 (n,) with values in [0, n_classes)."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    n_features: int
    n_classes: int

    @property
    def n_train(self) -> int:
        return int(self.train_x.shape[0])

    @property
    def n_val(self) -> int:
        return int(self.val_x.shape[0])

    def shuffled(self, seed: int) -> "Dataset":
        """A copy with the training and the validation split each permuted
        (one ``default_rng(seed)`` stream: training permutation first)."""
        rng = np.random.default_rng(seed)
        pt = rng.permutation(self.n_train)
        pv = rng.permutation(self.n_val)
        return Dataset(
            train_x=np.ascontiguousarray(self.train_x[pt]),
            train_y=np.ascontiguousarray(self.train_y[pt]),
            val_x=np.ascontiguousarray(self.val_x[pv]),
            val_y=np.ascontiguousarray(self.val_y[pv]),
            n_features=self.n_features,
            n_classes=self.n_classes,
        )

    def truncated(self, n_train: int | None = None, n_val: int | None = None) -> "Dataset":
        """A copy keeping the first ``n_train`` / ``n_val`` examples (shuffle first!)."""
        nt = self.n_train if n_train is None else int(n_train)
        nv = self.n_val if n_val is None else int(n_val)
        return Dataset(
            train_x=self.train_x[:nt].copy(), train_y=self.train_y[:nt].copy(),
            val_x=self.val_x[:nv].copy(), val_y=self.val_y[:nv].copy(),
            n_features=self.n_features, n_classes=self.n_classes,
        )


def section_value(section: Any, key: str, default: Any = None) -> Any:
    """``section[key]`` of a config section given as a mapping or an attribute object."""
    if isinstance(section, Mapping):
        return section.get(key, default)
    return getattr(section, key, default)
