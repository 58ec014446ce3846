r"""How far apart two attribution maps are, per image.

Every metric takes two batches of maps ``a`` (original) and ``b`` (perturbed) of the same shape
``(B, *shape)`` and returns ``(B,)`` values, one per image:

- :func:`dissimilarity`: :math:`\|a - b\|_2 / \|a\|_2` (000 Eq. 9).
- :func:`topk_intersection`: the fraction of the ``k`` features of largest :math:`|a_i|` that are
  also among the ``k`` largest :math:`|b_i|` (Ghorbani et al.; 002 Supp. C1 ranks
  :math:`n(z) = |z| / \|z\|_1`, i.e. by absolute value).
- :func:`spearman`: Spearman's rank correlation, ties given their average rank
  (``scipy.stats.spearmanr``).
- :func:`mass_center_dislocation`: the l2 distance, in pixels, between the centers of mass of the
  pixel maps (absolute values summed over channels; Ghorbani et al.; 002 Supp. C1).
- :func:`cosine_distance`: :math:`1 - \langle a, b \rangle / (\|a\|_2 \|b\|_2)` (002 Supp. C1),
  in ``[0, 2]``.

Ghorbani et al. and 002 evaluate top-k intersection and Spearman's correlation on the pixel map
of :func:`pixel_map` (so that ``k`` counts pixels, as in 002 Table 1); pass ``pixel_map(a)``
to get that, or the maps themselves to compare every feature. :func:`auc_log_eps` aggregates a
metric over attack budgets as 002 (Fig. 2a, Table 1) does.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from .._validation import check_batch, check_int, check_positive, check_tensor

__all__ = [
    "auc_log_eps",
    "cosine_distance",
    "dissimilarity",
    "mass_center",
    "mass_center_dislocation",
    "pixel_map",
    "robustness_metrics",
    "ROBUSTNESS_METRICS",
    "spearman",
    "topk_intersection",
]


def _pair(a: object, b: object) -> tuple[Tensor, Tensor]:
    a = check_batch(a, "a")
    b = check_batch(b, "b")
    if a.shape != b.shape:
        raise ValueError(
            f"`a` and `b` must have the same shape (B, *shape); got {tuple(a.shape)} and "
            f"{tuple(b.shape)}."
        )
    if a.device != b.device:
        raise ValueError(f"`a` is on {a.device} but `b` is on {b.device}; move one of them.")
    return a, b


def _nonzero(norm: Tensor, name: str, what: str) -> None:
    zero = (norm == 0).nonzero().flatten()
    if zero.numel():
        raise ValueError(
            f"`{name}` has {what} zero for images {zero.tolist()[:10]}"
            f"{' ...' if zero.numel() > 10 else ''}; the metric is undefined there."
        )


def dissimilarity(a: Tensor, b: Tensor) -> Tensor:
    r"""Normalised dissimilarity :math:`\|a - b\|_2 / \|a\|_2` per image (000 Eq. 9).

    Args:
        a: ``(B, *shape)`` original maps (no image may be all zero).
        b: ``(B, *shape)`` perturbed maps.

    Returns:
        ``(B,)`` dissimilarities (0 for equal maps; 1 for ``b = 2a`` or ``b = 0``).

    Raises:
        TypeError, ValueError: for bad input, or an all-zero map in ``a``.

    Example:
        >>> a = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
        >>> dissimilarity(a, 2 * a).tolist(), dissimilarity(a, torch.zeros(2, 2)).tolist()
        ([1.0, 1.0], [1.0, 1.0])
    """
    a, b = _pair(a, b)
    norm = a.flatten(1).norm(dim=1)
    _nonzero(norm, "a", "l2 norm")
    return (a - b).flatten(1).norm(dim=1) / norm


def cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    r"""Cosine distance :math:`1 - \langle a, b \rangle / (\|a\|_2 \|b\|_2)` per image.

    002 Supp. C1; the values lie in ``[0, 2]`` (0: same direction, 2: opposite).

    Args:
        a: ``(B, *shape)`` maps (no image may be all zero).
        b: ``(B, *shape)`` maps (no image may be all zero).

    Returns:
        ``(B,)`` distances.

    Raises:
        TypeError, ValueError: for bad input, or an all-zero map.

    Example:
        >>> a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
        >>> cosine_distance(a, torch.tensor([[0.0, 2.0], [-3.0, -3.0]])).tolist()
        [1.0, 2.0]
    """
    a, b = _pair(a, b)
    fa, fb = a.flatten(1), b.flatten(1)
    na, nb = fa.norm(dim=1), fb.norm(dim=1)
    _nonzero(na, "a", "l2 norm")
    _nonzero(nb, "b", "l2 norm")
    return 1.0 - (fa * fb).sum(1) / (na * nb)


def topk_intersection(a: Tensor, b: Tensor, k: int, *, absolute: bool = True) -> Tensor:
    r"""Fraction of the top-``k`` features of ``a`` that are among the top-``k`` of ``b``.

    :math:`|K_k(a) \cap K_k(b)| / k`, with :math:`K_k(z)` the indices of the ``k`` largest
    :math:`|z_i|` (``absolute=True``, as 002 Supp. C1 and Ghorbani et al. rank; the l1
    normalisation of 002's :math:`n(z)` does not change the order) or the ``k`` largest
    :math:`z_i` (``absolute=False``). Features are all non-batch entries; for pixels, as in 002
    Table 1, pass :func:`pixel_map` of the maps. Among entries tied at the ``k``-th value the
    choice is ``torch.topk``'s.

    Args:
        a: ``(B, *shape)`` original maps.
        b: ``(B, *shape)`` perturbed maps.
        k: 1 <= ``k`` <= number of features.
        absolute: rank by absolute value (default) or by value.

    Returns:
        ``(B,)`` fractions in ``[0, 1]``, multiples of ``1 / k``.

    Raises:
        TypeError, ValueError: for bad input or ``k``.

    Example:
        >>> a = torch.tensor([[5.0, -4.0, 3.0, 0.1]])
        >>> b = torch.tensor([[0.0, 9.0, 1.0, 8.0]])
        >>> topk_intersection(a, b, 2).tolist(), topk_intersection(a, b, 3).tolist()
        ([0.5], [0.6666666865348816])
    """
    a, b = _pair(a, b)
    fa, fb = a.flatten(1), b.flatten(1)
    k = check_int(k, "k", low=1, high=fa.shape[1])
    if not isinstance(absolute, bool):
        raise TypeError(f"`absolute` must be True or False; got {absolute!r}.")
    if absolute:
        fa, fb = fa.abs(), fb.abs()
    top_a = fa.topk(k, dim=1).indices
    top_b = fb.topk(k, dim=1).indices
    in_b = torch.zeros_like(fb, dtype=torch.bool).scatter_(1, top_b, True)
    return in_b.gather(1, top_a).sum(1).to(a.dtype) / k


def _average_ranks(v: Tensor) -> Tensor:
    """``(B, d)`` ranks ``1..d`` of each row, ties given the mean of their ranks (float64)."""
    n, d = v.shape
    sorted_v, order = v.sort(dim=1, stable=True)
    new = torch.ones_like(sorted_v, dtype=torch.bool)
    new[:, 1:] = sorted_v[:, 1:] != sorted_v[:, :-1]
    group = new.long().cumsum(1) - 1 + d * torch.arange(n, device=v.device).unsqueeze(1)
    pos = torch.arange(d, device=v.device, dtype=torch.float64).expand(n, d).flatten()
    flat = group.flatten()
    first = torch.full((n * d,), math.inf, dtype=torch.float64, device=v.device)
    first = first.scatter_reduce(0, flat, pos, "amin")
    last = torch.full((n * d,), -math.inf, dtype=torch.float64, device=v.device)
    last = last.scatter_reduce(0, flat, pos, "amax")
    avg = ((first[flat] + last[flat]) / 2 + 1).view(n, d)
    return torch.empty_like(avg).scatter_(1, order, avg)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    r"""Spearman's rank correlation between the features of ``a`` and ``b``, per image.

    The Pearson correlation of the ranks, ties given their average rank: what
    ``scipy.stats.spearmanr(a[i].ravel(), b[i].ravel())`` returns (002 Supp. C1, "cor").
    Computed in float64, returned in the dtype of ``a``. Ranks are of the values as given; 002
    and Ghorbani et al. rank :func:`pixel_map` of the maps.

    Args:
        a: ``(B, *shape)`` maps with at least 2 features.
        b: ``(B, *shape)`` maps.

    Returns:
        ``(B,)`` correlations in ``[-1, 1]``; ``nan`` (with a warning, as scipy does) for an
        image whose ``a`` or ``b`` is constant.

    Raises:
        TypeError, ValueError: for bad input.

    Example:
        >>> a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
        >>> spearman(a, torch.tensor([[10.0, 20.0, 30.0, 99.0], [4.0, 3.0, 2.0, 1.0]])).tolist()
        [1.0, -1.0]
    """
    a, b = _pair(a, b)
    fa, fb = a.flatten(1), b.flatten(1)
    if fa.shape[1] < 2:
        raise ValueError(f"`a` needs at least 2 features per image; got {fa.shape[1]}.")
    ra, rb = _average_ranks(fa), _average_ranks(fb)
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    den = (ra.pow(2).sum(1) * rb.pow(2).sum(1)).sqrt()
    constant = den == 0
    if bool(constant.any()):
        warnings.warn(
            f"{int(constant.sum())} of {len(den)} images have a constant map in `a` or `b`; "
            "their Spearman correlation is undefined (nan).",
            UserWarning,
            stacklevel=2,
        )
    rho = (ra * rb).sum(1) / torch.where(constant, torch.ones_like(den), den)
    rho = torch.where(constant, torch.full_like(rho, math.nan), rho.clamp(-1.0, 1.0))
    return rho.to(a.dtype)


def pixel_map(a: Tensor) -> Tensor:
    r"""The pixel map :math:`m_{ij} = \sum_c |a_{cij}|` of each image (Ghorbani et al.).

    Args:
        a: ``(B, C, H, W)`` maps, or ``(B, H, W)`` single-channel maps.

    Returns:
        ``(B, H, W)`` non-negative maps.

    Raises:
        TypeError, ValueError: for bad input or another number of dimensions.

    Example:
        >>> pixel_map(torch.tensor([[[[1.0, -2.0]], [[-3.0, 0.5]]]])).tolist()
        [[[4.0, 2.5]]]
    """
    a = check_batch(a, "a", min_ndim=3)
    if a.ndim == 4:
        return a.abs().sum(1)
    if a.ndim == 3:
        return a.abs()
    raise ValueError(
        f"`a` must be (B, C, H, W) or (B, H, W) attribution maps; got shape {tuple(a.shape)}."
    )


def mass_center(a: Tensor) -> Tensor:
    r"""Center of mass ``(row, column)`` of the pixel map of each image, in pixel indices.

    :math:`C(a) = \sum_{ij} m_{ij} (i, j) / \sum_{ij} m_{ij}` with ``m = pixel_map(a)``.

    Args:
        a: ``(B, C, H, W)`` or ``(B, H, W)`` maps, none all zero.

    Returns:
        ``(B, 2)`` centers.

    Raises:
        TypeError, ValueError: for bad input or an all-zero map.

    Example:
        >>> m = torch.zeros(1, 3, 4)
        >>> m[0, 2, 3], m[0, 0, 1] = 3.0, -1.0
        >>> mass_center(m).tolist()
        [[1.5, 2.5]]
    """
    m = pixel_map(a)
    total = m.sum((1, 2))
    _nonzero(total, "a", "total absolute mass")
    h, w = m.shape[1:]
    rows = torch.arange(h, device=m.device, dtype=m.dtype)
    cols = torch.arange(w, device=m.device, dtype=m.dtype)
    ci = (m.sum(2) * rows).sum(1) / total
    cj = (m.sum(1) * cols).sum(1) / total
    return torch.stack([ci, cj], dim=1)


def mass_center_dislocation(a: Tensor, b: Tensor) -> Tensor:
    r"""Distance in pixels between the centers of mass of two maps, :math:`\|C(a) - C(b)\|_2`.

    The "cdl" of 002 Supp. C1 (after Ghorbani et al.), on the absolute maps summed over
    channels (:func:`mass_center`).

    Args:
        a: ``(B, C, H, W)`` or ``(B, H, W)`` original maps.
        b: maps of the same shape.

    Returns:
        ``(B,)`` distances.

    Raises:
        TypeError, ValueError: for bad input or an all-zero map.

    Example:
        >>> a, b = torch.zeros(1, 1, 5, 5), torch.zeros(1, 1, 5, 5)
        >>> a[0, 0, 0, 0], b[0, 0, 3, 4] = 1.0, -2.0
        >>> mass_center_dislocation(a, b).tolist()
        [5.0]
    """
    a, b = _pair(a, b)
    return (mass_center(a) - mass_center(b)).norm(dim=1)


def auc_log_eps(
    eps: Sequence[float] | Tensor, values: Sequence[float] | Tensor, *, base: float = 2.0
) -> Tensor:
    r"""Area under a metric-vs-:math:`\log_2 \epsilon` curve, as 002 aggregates attacks.

    002 (Sec. 5.1, Fig. 2a, Table 1) averages a metric over images at each budget
    :math:`\epsilon_\infty \in \{2, 4, 8, 16\}` and reports the area under the curve of the
    average against :math:`\log \epsilon`, by the trapezoid rule and without dividing by the
    width of the range. The base is 2: the abscissae are then 1, 2, 3, 4, a range of width 3,
    and the AUC of a metric in ``[0, 1]`` is at most 3, as in 002 Table 1 (top-k intersection
    up to 2.95, which natural logarithms, a width of :math:`3 \ln 2 = 2.08`, could not reach).

    .. math::

        \mathrm{AUC} = \sum_{i} \tfrac12 (v_i + v_{i+1})
            (\log_b \epsilon_{i+1} - \log_b \epsilon_i)

    Args:
        eps: ``(m,)`` budgets, ``m >= 2``, positive and strictly increasing.
        values: ``(m,)`` or ``(m, ...)`` metric values at each budget (e.g. ``(m, B)`` per
            image: the AUC is then per image).
        base: base of the logarithm, > 0 and != 1.

    Returns:
        The AUC, of shape ``values.shape[1:]`` (a 0-dim tensor for ``(m,)`` values); float64
        when ``values`` is a sequence.

    Raises:
        TypeError, ValueError: for bad input.

    Example:
        >>> float(auc_log_eps([2, 4, 8, 16], [1.0, 1.0, 1.0, 1.0]))
        3.0
        >>> round(float(auc_log_eps([2, 4, 8, 16], [0.9, 0.8, 0.6, 0.2])), 12)
        1.95
    """
    if not isinstance(values, Tensor):
        values = torch.as_tensor(values, dtype=torch.float64)
    if not values.is_floating_point():
        values = values.to(torch.float64)
    if not isinstance(eps, Tensor):
        eps = torch.as_tensor(eps, dtype=torch.float64)
    check_tensor(eps, "eps")
    if eps.ndim != 1 or eps.shape[0] < 2:
        raise ValueError(
            f"`eps` must be 1-D with at least 2 budgets; got shape {tuple(eps.shape)}."
        )
    if values.ndim < 1 or values.shape[0] != eps.shape[0]:
        raise ValueError(
            f"`values` must have shape ({eps.shape[0]}, ...), one row per budget; got "
            f"{tuple(values.shape)}."
        )
    eps = eps.to(device=values.device, dtype=torch.float64)
    if not bool(torch.isfinite(eps).all()) or bool((eps <= 0).any()):
        raise ValueError(f"`eps` must be finite and > 0; got {eps.tolist()}.")
    if bool((eps[1:] <= eps[:-1]).any()):
        raise ValueError(f"`eps` must be strictly increasing; got {eps.tolist()}.")
    if not bool(torch.isfinite(values).all()):
        raise ValueError("`values` contains NaN or infinite entries; all must be finite.")
    base = check_positive(base, "base")
    if base == 1.0:
        raise ValueError("`base` must not be 1.")
    t = (eps.log() / math.log(base)).to(values.dtype)
    return torch.trapezoid(values, t, dim=0)


#: The short names of 002's four metrics, as :func:`robustness_metrics` returns them.
ROBUSTNESS_METRICS = ("k-in", "cor", "cdl", "cosd")


def robustness_metrics(a: Tensor, b: Tensor, k: int) -> dict[str, Tensor]:
    """002's four metrics between original maps ``a`` and perturbed maps ``b``, per image.

    Top-k intersection (``k`` pixels) and Spearman's correlation of the pixel maps
    ``sum_c |a_c|``, mass-center dislocation in pixels, cosine distance of the maps
    (the functions of this module).

    Args:
        a: ``(B, C, H, W)`` maps at the clean inputs.
        b: ``(B, C, H, W)`` maps at the perturbed inputs.
        k: pixels of the top-k intersection.

    Returns:
        ``{"k-in", "cor", "cdl", "cosd"}`` -> ``(B,)`` values.

    Example:
        >>> a = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
        >>> values = robustness_metrics(a, a, 3)
        >>> {q: [abs(round(v, 6)) for v in t.tolist()] for q, t in values.items()}
        {'k-in': [1.0, 1.0], 'cor': [1.0, 1.0], 'cdl': [0.0, 0.0], 'cosd': [0.0, 0.0]}
    """
    pa, pb = pixel_map(a), pixel_map(b)
    return {
        "k-in": topk_intersection(pa, pb, k),
        "cor": spearman(pa, pb),
        "cdl": mass_center_dislocation(a, b),
        "cosd": cosine_distance(a, b),
    }
