"""PNG plots of a run: training curves and, for 2-D inputs, decision regions.

Uses matplotlib's non-interactive Agg backend and writes atomically.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from .io import atomic_path

__all__ = ["plot_history", "plot_decision_regions", "plot_residuals"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike[str]) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)


def plot_history(history: Sequence[dict[str, float]], path: str | os.PathLike[str], title: str = "") -> None:
    """Objective (log scale), losses and accuracies against the iteration."""
    plt = _pyplot()
    it = [r["iteration"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].semilogy(it, [max(r["objective"], 1e-300) for r in history], label="objective")
    axes[0].semilogy(it, [max(r["grad_norm"], 1e-300) for r in history], label="|gradient|")
    axes[1].plot(it, [r["train_loss"] for r in history], label="train")
    axes[1].plot(it, [r["val_loss"] for r in history], label="validation")
    axes[2].plot(it, [100 * r["train_accuracy"] for r in history], label="train")
    axes[2].plot(it, [100 * r["val_accuracy"] for r in history], label="validation")
    for ax, name in zip(axes, ("objective and gradient norm", "loss (cross-entropy)", "accuracy (%)")):
        ax.set_xlabel("iteration")
        ax.set_title(name)
        ax.legend()
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def plot_decision_regions(model: Any, features: np.ndarray, labels: np.ndarray, path: str | os.PathLike[str],
                          title: str = "", resolution: int = 200) -> None:
    """Predicted class over the bounding square of the 2-D inputs, with the points on top."""
    plt = _pyplot()
    lo = features.min(axis=0)
    hi = features.max(axis=0)
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution))
    pred = model.predict(np.column_stack([gx.ravel(), gy.ravel()])).reshape(gx.shape)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    n_classes = int(model.n_classes)
    cmap = plt.get_cmap("viridis", n_classes)
    ax.contourf(gx, gy, pred, levels=np.arange(n_classes + 1) - 0.5, cmap=cmap, alpha=0.45)
    sc = ax.scatter(features[:, 0], features[:, 1], c=labels, cmap=cmap, vmin=-0.5, vmax=n_classes - 0.5,
                    s=10, edgecolors="k", linewidths=0.2)
    fig.colorbar(sc, ax=ax, ticks=range(n_classes), label="class")
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    ax.set_title(title or "decision regions (points: validation set)")
    _save(fig, path)


def plot_residuals(history: Sequence[dict[str, float]], path: str | os.PathLike[str],
                   switches: Sequence[dict[str, Any]] = (), title: str = "") -> None:
    """Final forward/adjoint MGRIT residual and last convergence factor per iteration;
    iterations where the safeguard switched to exact solves are marked."""
    plt = _pyplot()
    it = [r["iteration"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for key, label in (("fwd_residual", "forward"), ("bwd_residual", "adjoint")):
        axes[0].semilogy(it, [max(r[key], 1e-300) for r in history], label=label)
    for key, label in (("fwd_factor", "forward"), ("bwd_factor", "adjoint")):
        axes[1].plot(it, [r[key] for r in history], ".", label=label)
    axes[1].axhline(1.0, color="k", lw=0.8, ls="--")
    for sw in switches:
        for ax in axes:
            ax.axvline(sw["iteration"], color="r", alpha=0.4, lw=0.8)
    axes[0].set_title("C-point residual after the cycles")
    axes[1].set_title("last cycle's convergence factor")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.legend()
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    _save(fig, path)
