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


def fooling_vs_dim_figure(
    ms: Sequence[int],
    series: dict[str, tuple[Sequence[float], Sequence[float] | None]],
    lines: dict[str, float] | None = None,
    *,
    ylabel: str = "fooling rate on unseen points",
    title: str = "",
) -> Figure:
    """Fooling rate of random vectors of subspaces against their dimension (001 Fig. 7b).

    Args:
        ms: subspace dimensions.
        series: ``name -> (mean, best)``: the mean fooling rate over the sampled vectors of
            each dimension (solid) and the best of them (dashed, optional).
        lines: ``name -> rate`` drawn as horizontal dotted lines (e.g. the 2017 UAP algorithm
            at the same norm, isotropic noise of that norm).
        ylabel: y-axis label.
        title: figure title.
    """
    ms = np.asarray(ms, dtype=float)
    fig = Figure(figsize=(5.4, 3.6), layout="constrained")
    ax = fig.add_subplot()
    colors = iter(["tab:red", "tab:blue", "tab:gray", "tab:green", "tab:purple", "tab:brown"])
    for name, (mean, best) in series.items():
        color = next(colors)
        ax.plot(ms, np.asarray(mean, float), marker="o", ms=4, color=color, label=f"{name}: mean")
        if best is not None:
            ax.plot(ms, np.asarray(best, float), ls="--", color=color, lw=1, label=f"{name}: best")
    styles = iter([("black", ":"), ("tab:orange", "-."), ("tab:olive", ":")])
    for name, value in (lines or {}).items():
        color, ls = next(styles)
        ax.axhline(float(value), color=color, ls=ls, lw=1.2, label=name)
    if len(ms) > 1 and ms.max() / max(ms.min(), 1) >= 20:
        ax.set_xscale("log")
    ax.set(xlabel="subspace dimension m", ylabel=ylabel, ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def _image(a: np.ndarray) -> np.ndarray:
    """``(C, H, W)``, ``(H, W)`` or flat square -> an ``(H, W)`` or ``(H, W, 3)`` array."""
    a = np.asarray(a, dtype=float)
    if a.ndim == 1:
        side = int(round(np.sqrt(a.size)))
        a = a.reshape(side, side) if side * side == a.size else a[None, :]
    if a.ndim == 3:
        a = a[0] if a.shape[0] != 3 else np.moveaxis(a, 0, -1)
    return a


def upi_figure(
    images: Sequence[Sequence[np.ndarray | None]],
    *,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    notes: Sequence[Sequence[str]] | None = None,
    title: str = "",
) -> Figure:
    """Universal perturbations as images (000 Figs. 2, 6-10): one grid cell per perturbation.

    Each perturbation is drawn with a diverging colormap symmetric about 0 (its own scale,
    ``+-max|delta|``), first channel for multi-channel inputs other than RGB.

    Args:
        images: rows of perturbations ``(C, H, W)``, ``(H, W)`` or flat squares; ``None``
            leaves a cell empty.
        row_labels: one label per row (e.g. model and attribution method).
        col_labels: one label per column (e.g. UPI-Grad, UPI-PCA, ...).
        notes: optional text under each cell (e.g. the mean dissimilarity it reached).
        title: figure title.

    Returns:
        The figure.
    """
    rows, cols = len(images), max((len(r) for r in images), default=0)
    fig = Figure(figsize=(1.7 * cols + 0.8, 1.8 * rows + 0.6), layout="constrained")
    for i, row in enumerate(images):
        for j in range(cols):
            ax = fig.add_subplot(rows, cols, i * cols + j + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            img = row[j] if j < len(row) else None
            if img is not None:
                a = _image(img)
                lim = float(np.abs(a).max()) or 1.0
                ax.imshow(a, cmap="RdBu_r", vmin=-lim, vmax=lim)
            else:
                ax.axis("off")
            if i == 0 and j < len(col_labels):
                ax.set_title(col_labels[j], fontsize=8)
            if j == 0 and i < len(row_labels):
                ax.set_ylabel(row_labels[i], fontsize=8)
            if notes is not None and i < len(notes) and j < len(notes[i]) and notes[i][j]:
                ax.set_xlabel(notes[i][j], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def correlation_heatmap_figure(
    matrix: np.ndarray,
    labels: Sequence[str],
    *,
    title: str = "",
    vmin: float = -1.0,
    vmax: float = 1.0,
    annotate: bool = True,
) -> Figure:
    """Heatmap of a square matrix of cosines (000 Figs. 3-5, cross-correlation of UPIs).

    Args:
        matrix: ``(m, m)`` values, e.g. cosine similarities in ``[-1, 1]``.
        labels: ``m`` names of the rows and columns.
        title: figure title.
        vmin: lower end of the colour scale.
        vmax: upper end of the colour scale.
        annotate: write each value in its cell (only up to 16 labels).

    Returns:
        The figure.
    """
    matrix = np.asarray(matrix, dtype=float)
    m = len(labels)
    if matrix.shape != (m, m):
        raise ValueError(f"`matrix` must be ({m}, {m}) for {m} labels; got {matrix.shape}.")
    side = min(12.0, 2.5 + 0.45 * m)
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(matrix, cmap="RdBu_r", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(m), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(m), labels, fontsize=7)
    if annotate and m <= 16:
        for i in range(m):
            for j in range(m):
                v = matrix[i, j]
                color = "white" if abs(v) > 0.6 * max(abs(vmin), abs(vmax)) else "black"
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color=color)
    fig.colorbar(im, ax=ax, shrink=0.8)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def attribution_maps_figure(
    images: np.ndarray,
    maps_before: dict[str, np.ndarray],
    maps_after: dict[str, np.ndarray],
    *,
    perturbed: np.ndarray | None = None,
    title: str = "",
) -> Figure:
    """Attribution maps of a few images before and after an attack (002 Figs. 1, 3a).

    One row per image: the input, (optionally) the perturbed input, then for every method the
    map at ``x`` and at ``x + delta``, drawn as pixel maps ``sum_c |a_c|`` (Ghorbani et al.) on
    a common scale per (image, method).

    Args:
        images: ``(n, C, H, W)`` inputs in ``[0, 1]``.
        maps_before: ``method -> (n, C, H, W)`` maps at the inputs.
        maps_after: ``method -> (n, C, H, W)`` maps at the perturbed inputs (same keys).
        perturbed: ``(n, C, H, W)`` perturbed inputs.
        title: figure title.

    Returns:
        The figure.
    """
    images = np.asarray(images, dtype=float)
    if set(maps_before) != set(maps_after):
        raise ValueError(
            "`maps_before` and `maps_after` must have the same methods; got "
            f"{sorted(maps_before)} and {sorted(maps_after)}."
        )
    n = len(images)
    cols = 1 + (perturbed is not None) + 2 * len(maps_before)
    fig = Figure(figsize=(1.25 * cols + 0.4, 1.35 * n + 0.6), layout="constrained")

    def pixel(a: np.ndarray) -> np.ndarray:
        a = np.abs(np.asarray(a, dtype=float))
        return a.sum(0) if a.ndim == 3 else a

    for i in range(n):
        panels = [("input", _image(images[i]), "gray", (0.0, 1.0))]
        if perturbed is not None:
            panels.append(("perturbed", _image(np.asarray(perturbed[i], float)), "gray", (0, 1)))
        for name in maps_before:
            b, a = pixel(maps_before[name][i]), pixel(maps_after[name][i])
            top = float(max(b.max(), a.max())) or 1.0
            panels.append((f"{name}\nbefore", b, "inferno", (0.0, top)))
            panels.append((f"{name}\nafter", a, "inferno", (0.0, top)))
        for j, (label, arr, cmap, (lo, hi)) in enumerate(panels):
            ax = fig.add_subplot(n, cols, i * cols + j + 1)
            if arr.ndim == 3:
                ax.imshow(np.clip(arr, 0, 1))
            else:
                ax.imshow(arr, cmap=cmap, vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
