"""Matplotlib figures. Every function returns a :class:`matplotlib.figure.Figure` built without
pyplot, so no global figure state leaks into the caller's session."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ._io import atomic_write


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 120) -> Path:
    """Save atomically; the format follows the suffix (``.png``, ``.pdf``)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    return atomic_write(
        path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
    )


def training_figure(
    history: Sequence[dict[str, float]],
    images: np.ndarray | None = None,
    labels: Sequence[int] | None = None,
    predictions: Sequence[int] | None = None,
    *,
    title: str = "",
) -> Figure:
    """Loss and accuracy per epoch, and optionally a grid of test images with predictions.

    Args:
        history: rows with ``epoch``, ``loss``, ``train_accuracy``, ``test_accuracy``.
        images: ``(n, C, H, W)`` array in [0, 1] (first channel shown, or RGB when C == 3).
        labels: true labels of ``images``.
        predictions: predicted labels of ``images`` (wrong ones are drawn in red).
        title: figure title.
    """
    n_img = 0 if images is None else min(len(images), 16)
    fig = Figure(figsize=(10 if n_img else 7, 3.4), layout="constrained")
    cols = 3 if n_img else 2
    grid = fig.add_gridspec(1, cols, width_ratios=[1, 1, 1.1][:cols])
    epochs = [h["epoch"] for h in history]
    ax = fig.add_subplot(grid[0, 0])
    ax.plot(epochs, [h["loss"] for h in history], marker="o", ms=3)
    ax.set(xlabel="epoch", ylabel="training loss", yscale="log")
    ax = fig.add_subplot(grid[0, 1])
    ax.plot(epochs, [h["train_accuracy"] for h in history], marker="o", ms=3, label="train")
    ax.plot(epochs, [h["test_accuracy"] for h in history], marker="s", ms=3, label="test")
    ax.set(xlabel="epoch", ylabel="accuracy")
    ax.legend(loc="lower right")
    if n_img:
        sub = grid[0, 2].subgridspec(4, 4, wspace=0.05, hspace=0.35)
        for i in range(n_img):
            a = fig.add_subplot(sub[i // 4, i % 4])
            img = images[i]
            a.imshow(
                img.transpose(1, 2, 0) if img.shape[0] == 3 else img[0], cmap="gray", vmin=0, vmax=1
            )
            a.set_xticks([])
            a.set_yticks([])
            if predictions is not None:
                wrong = labels is not None and predictions[i] != labels[i]
                a.set_title(
                    str(predictions[i]), fontsize=7, color="red" if wrong else "black", pad=1
                )
    if title:
        fig.suptitle(title)
    return fig


def uap_figure(
    xis: Sequence[float],
    rates: Sequence[float],
    perturbations: Sequence[np.ndarray],
    images: np.ndarray,
    *,
    title: str = "",
) -> Figure:
    """Fooling rate against the UAP norm, the perturbations, and images with the largest one.

    Args:
        xis: norms of the universal perturbations.
        rates: their held-out fooling rates.
        perturbations: the perturbations, each ``(C, H, W)``.
        images: a few ``(C, H, W)`` images shown with the largest perturbation added.
        title: figure title.
    """
    k, m = len(perturbations), min(len(images), 4)
    fig = Figure(figsize=(3.2 + 1.6 * max(k, m), 4.0), layout="constrained")
    grid = fig.add_gridspec(2, 1 + max(k, m), width_ratios=[2] + [1] * max(k, m))
    ax = fig.add_subplot(grid[:, 0])
    ax.plot(xis, rates, marker="o")
    ax.set(
        xlabel="norm xi of the universal perturbation", ylabel="held-out fooling rate", ylim=(0, 1)
    )
    ax.grid(alpha=0.3)

    def show(a, img, cmap, vmin, vmax, label):
        a.imshow(
            img.transpose(1, 2, 0) if img.shape[0] == 3 else img[0], cmap=cmap, vmin=vmin, vmax=vmax
        )
        a.set_xticks([])
        a.set_yticks([])
        a.set_title(label, fontsize=8)

    for i, (xi, v) in enumerate(zip(xis, perturbations, strict=True)):
        s = float(np.abs(v).max()) or 1.0
        show(fig.add_subplot(grid[0, 1 + i]), v, "RdBu_r", -s, s, f"v, xi={xi:.3g}")
    for i in range(m):
        show(fig.add_subplot(grid[1, 1 + i]), images[i] + perturbations[-1], "gray", 0, 1, "x + v")
    if title:
        fig.suptitle(title)
    return fig
