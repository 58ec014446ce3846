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


def _class_colors(present: np.ndarray) -> list:
    """One colour per class id: tab10 / tab20 by id (stable across figures), else turbo by rank."""
    from matplotlib import colormaps

    top = int(present.max()) if present.size else 0
    if top < 10:
        return [colormaps["tab10"](int(k)) for k in present]
    if top < 20:
        return [colormaps["tab20"](int(k)) for k in present]
    turbo = colormaps["turbo"]
    return [turbo(i / max(len(present) - 1, 1)) for i in range(len(present))]


def cross_section_figure(
    sections,
    *,
    titles: Sequence[str] | None = None,
    ncols: int | None = None,
    class_names: Sequence[str] | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    aspect: str | float = "equal",
    panel_size: float = 3.0,
    title: str = "",
) -> Figure:
    """Decision regions on 2-d cross-sections, side by side (001, Fig. 5, 6 and 13).

    Each panel shows one :class:`~geomrob.sections.CrossSection`: the regions coloured by label
    (the same colour for a class in every panel, listed in one legend), the boundary of the
    origin's region as a black curve (the contour of the margin at 0), the input ``x`` at the
    origin (white dot) and, for a normal section, the boundary point ``z = x + r(x)`` at
    ``(||r(x)||, 0)`` (black cross). The horizontal axis is the ``a`` coordinate along ``u``
    (``r(x) / ||r(x)||`` for a normal section), the vertical one ``b`` along ``v``: a universal
    perturbation or a direction of ``S_c`` shows the boundary bending towards ``x``, a random
    direction a flat one (001, Fig. 5 top vs bottom).

    Args:
        sections: a :class:`~geomrob.sections.CrossSection` or a non-empty sequence of them.
        titles: one title per panel (e.g. ``"v = UAP"``, ``"v in S_c"``, ``"v random"``).
        ncols: panels per row (default: all in one row).
        class_names: names of the classes, indexed by label (default ``"class k"``).
        xlabel: label of the ``a`` axes (default ``"along r(x)/||r(x)||"`` for normal sections,
            else ``"along u"``).
        ylabel: label of the ``b`` axes (default ``"along v"``).
        aspect: the axes' aspect (``"equal"``: distances in input space are drawn to scale).
        panel_size: width and height of a panel in inches.
        title: figure title.

    Returns:
        A :class:`matplotlib.figure.Figure` (no pyplot state); save it with :func:`save_figure`.

    Raises:
        TypeError: if an entry is not a CrossSection.
        ValueError: for no section, ``titles`` of another length or ``ncols < 1``.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from .sections import CrossSection

    if isinstance(sections, CrossSection):
        sections = [sections]
    sections = list(sections)
    if not sections:
        raise ValueError("`sections` is empty; give at least one CrossSection.")
    for i, s in enumerate(sections):
        if not isinstance(s, CrossSection):
            raise TypeError(
                f"`sections[{i}]` must be a CrossSection (geomrob.cross_section); got "
                f"{type(s).__name__}."
            )
    if titles is not None and len(titles) != len(sections):
        raise ValueError(
            f"`titles` must give one title per section ({len(sections)}); got {len(titles)}."
        )
    ncols = len(sections) if ncols is None else int(ncols)
    if ncols < 1:
        raise ValueError(f"`ncols` must be >= 1; got {ncols}.")
    nrows = -(-len(sections) // ncols)
    ncols = min(ncols, len(sections))

    grids = [
        (
            s.a.detach().cpu().double().numpy(),
            s.b.detach().cpu().double().numpy(),
            s.labels.detach().cpu().numpy(),
            s.margin.detach().cpu().double().numpy(),
        )
        for s in sections
    ]
    present = np.unique(np.concatenate([g[2].ravel() for g in grids]))
    colors = _class_colors(present)
    cmap = ListedColormap(colors)

    def name(k: int) -> str:
        if class_names is not None and 0 <= k < len(class_names):
            return str(class_names[k])
        return f"class {k}"

    fig = Figure(figsize=(panel_size * ncols + 1.6, panel_size * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.ravel()[len(sections) :]:
        ax.set_axis_off()
    for i, (s, (a, b, labels, margin)) in enumerate(zip(sections, grids, strict=True)):
        ax = axes.ravel()[i]
        da, db = (a[1] - a[0]) / 2, (b[1] - b[0]) / 2
        ax.imshow(
            np.searchsorted(present, labels).T,
            origin="lower",
            extent=(a[0] - da, a[-1] + da, b[0] - db, b[-1] + db),
            cmap=cmap,
            vmin=-0.5,
            vmax=len(present) - 0.5,
            interpolation="nearest",
            aspect=aspect,
            alpha=0.85,
        )
        if margin.min() < 0 < margin.max():
            ax.contour(a, b, margin.T, levels=[0.0], colors="black", linewidths=1.4)
        ax.plot(0.0, 0.0, "o", ms=6, mfc="white", mec="black", zorder=3)
        if s.distance is not None:
            ax.plot(s.distance, 0.0, "x", ms=7, mew=1.8, color="black", zorder=3)
        normal = s.distance is not None
        ax.set_xlabel(xlabel or ("along r(x)/||r(x)||" if normal else "along u"), fontsize=8)
        ax.set_ylabel(ylabel or "along v", fontsize=8)
        ax.tick_params(labelsize=7)
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
    handles = [
        Patch(facecolor=c, alpha=0.85, label=name(int(k)))
        for k, c in zip(present, colors, strict=True)
    ]
    handles.append(Line2D([], [], color="black", lw=1.4, label="boundary of k(x)"))
    handles.append(Line2D([], [], ls="", marker="o", mfc="white", mec="black", label="x (origin)"))
    if any(s.distance is not None for s in sections):
        handles.append(
            Line2D([], [], ls="", marker="x", mew=1.8, color="black", label="z = x + r(x)")
        )
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    return fig
