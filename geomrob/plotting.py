"""Matplotlib figures. Every function returns a :class:`matplotlib.figure.Figure` built without
pyplot, so no global figure state leaks into the caller's session."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

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


def curvature_spectrum_figure(
    values: Sequence[float],
    *,
    title: str = "",
) -> Figure:
    """The top eigenvalues of the averaged boundary operator (the spectrum of ``S_c``).

    Args:
        values: eigenvalues, descending (index 1 is the most curved direction).
        title: figure title.
    """
    values = np.asarray(values, dtype=float)
    fig = Figure(figsize=(5.0, 3.4), layout="constrained")
    ax = fig.add_subplot()
    idx = np.arange(1, len(values) + 1)
    ax.bar(idx, values, color=np.where(values >= 0, "tab:red", "tab:blue"), width=0.8)
    ax.axhline(0.0, color="black", lw=0.6)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="eigenvector index", ylabel="eigenvalue of the averaged Hessian")
    ax.grid(alpha=0.3, axis="y")
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def curvature_profile_figure(
    ms: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    random_mean: Sequence[float] | None = None,
    random_std: Sequence[float] | None = None,
    *,
    ylabel: str = "average normal curvature K_S",
    title: str = "",
) -> Figure:
    """``K_S`` against the subspace dimension: the curved subspace vs random ones (001 Fig. 7a).

    Args:
        ms: subspace dimensions.
        mean: mean of ``K_S`` over points, per dimension, along the first ``m`` directions of
            the curved subspace.
        std: its standard deviation over points (drawn as a band of +- one std).
        random_mean: the same along random ``m``-dimensional subspaces (optional).
        random_std: its standard deviation over points.
        ylabel: y-axis label.
        title: figure title.
    """
    ms = np.asarray(ms, dtype=float)
    fig = Figure(figsize=(5.0, 3.4), layout="constrained")
    ax = fig.add_subplot()
    series = [("curved subspace S_c", mean, std, "tab:red", "o")]
    if random_mean is not None:
        series.append(("random subspaces", random_mean, random_std, "tab:gray", "s"))
    for label, mu, sd, color, marker in series:
        mu = np.asarray(mu, dtype=float)
        ax.plot(ms, mu, marker=marker, ms=4, color=color, label=label)
        if sd is not None:
            sd = np.asarray(sd, dtype=float)
            ax.fill_between(ms, mu - sd, mu + sd, color=color, alpha=0.2, lw=0)
    ax.axhline(0.0, color="black", lw=0.6)
    if len(ms) > 1 and ms.max() / max(ms.min(), 1) >= 20:
        ax.set_xscale("log")
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="subspace dimension m", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    return fig
