r"""Two-dimensional cross-sections of a classifier's decision regions (001, Fig. 5, 6 and 13).

After Moosavi-Dezfooli et al., "Robustness of classifiers to universal perturbations: a geometric
perspective" (ICLR 2018, ``001`` in ``shared/seeds``), section 5: the labels
:math:`k(x + a u + b v)` on a grid of the plane through ``x`` spanned by ``u`` and ``v``.

- :func:`cross_section`: any plane ``(u, v)``; directions unit-normalised by default, ``v``
  orthogonalised against ``u`` on request.
- :func:`normal_section`: the *normal* section of 001: ``u = r(x) / ||r(x)||`` (the minimal
  perturbation to the boundary, :func:`~geomrob.curvature.boundary.boundary_points`) and ``v``
  orthogonalised against it, so that the boundary point ``z = x + r(x)`` sits at
  ``(a, b) = (||r(x)||, 0)``.

Besides the labels, a :class:`CrossSection` holds the *margin* of the origin's class
:math:`k_0 = k(x)`,

.. math::

    \mu(a, b) = f_{k_0}(x + a u + b v) - \max_{j \ne k_0} f_j(x + a u + b v),

positive inside the decision region of ``x``, zero on its boundary and negative outside: the
contour :math:`\mu = 0` draws the boundary of x's region as a curve
(:func:`geomrob.plotting.cross_section_figure`), and :meth:`CrossSection.boundary_distance` reads
it off along ``u``. With DESIGN.md's sign convention a boundary of positive curvature bends
towards ``x``: in a normal section the curve ``a*(b)`` then lies at ``a*(b) < ||r(x)||`` for
``b != 0`` (001, Fig. 3 left, Fig. 5 top).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._model import check_inputs, eval_mode
from ._validation import check_finite, check_int, check_logits, check_model, check_positive
from .curvature.boundary import BoundaryPoints, boundary_points
from .results import Result

__all__ = ["DEFAULT_EXTENT_FACTOR", "CrossSection", "cross_section", "normal_section"]

#: ``normal_section(extent=None)``: both axes span ``[-3 ||r(x)||, 3 ||r(x)||]``.
DEFAULT_EXTENT_FACTOR = 3.0
#: Default chunk: about this many input entries (grid points x d) per forward pass.
_ENTRIES_PER_BATCH = 2**22


@dataclass(frozen=True, eq=False)
class CrossSection(Result):
    """Labels and the origin's margin on the grid ``x + a_i u + b_j v`` (``'ij'`` indexing).

    Attributes:
        a: ``(n_a,)`` coordinates along ``u``, ascending, from ``-extent_a`` to ``extent_a``.
        b: ``(n_b,)`` coordinates along ``v``, ascending.
        labels: ``(n_a, n_b)`` int64, ``labels[i, j] = k(x + a[i] u + b[j] v)``.
        margin: ``(n_a, n_b)`` ``f_{k0} - max_{j != k0} f_j`` at the grid points, with
            ``k0 = origin_label``: > 0 inside x's decision region, 0 on its boundary.
        u: ``(d,)`` the direction of the ``a`` axis as used (unit norm when ``normalized``).
        v: ``(d,)`` the direction of the ``b`` axis as used (orthogonal to ``u`` when
            ``orthogonalized``).
        origin_label: ``k(x)``.
        origin_margin: the margin at ``x`` itself.
        cosine: cosine between the given ``u`` and ``v`` (before any orthogonalisation).
        normalized: whether ``u`` and ``v`` were scaled to unit norm.
        orthogonalized: whether ``v`` was made orthogonal to ``u``.
        logits: ``(n_a, n_b, L)`` the logits, or ``None`` unless ``keep_logits=True``.
        distance: ``||r(x)||`` for a :func:`normal_section` (the boundary point ``z`` is at
            ``(distance, 0)``), else ``None``.
        adv_label: the class across the boundary at ``z`` (normal sections), else ``None``.
    """

    a: Tensor
    b: Tensor
    labels: Tensor
    margin: Tensor
    u: Tensor
    v: Tensor
    origin_label: int
    origin_margin: float
    cosine: float
    normalized: bool
    orthogonalized: bool
    logits: Tensor | None = None
    distance: float | None = None
    adv_label: int | None = None

    @property
    def extent(self) -> tuple[float, float]:
        """``(extent_a, extent_b)``: the half-widths of the grid along ``u`` and ``v``."""
        return float(self.a[-1]), float(self.b[-1])

    def boundary_distance(self) -> Tensor:
        """``(n_b,)``: per column ``b_j``, where the boundary of x's region meets the ``a`` axis.

        Walking from the first grid value ``a >= 0`` towards larger ``a``, the first sign change
        of the margin (from > 0 to <= 0), located by linear interpolation between the two grid
        points around it (exact for a margin linear in ``a``, else an error of order the grid
        step squared). ``NaN`` where the margin is already <= 0 at the start or never changes
        sign. For a :func:`normal_section`, ``boundary_distance()`` at ``b = 0`` is about
        ``||r(x)||`` and the curve ``(boundary_distance(), b)`` is the normal section of the
        boundary; it bends towards ``x`` (smaller values off ``b = 0``) where the curvature is
        positive.

        Returns:
            A float tensor of the dtype and device of ``margin``.
        """
        start = int(torch.searchsorted(self.a, self.a.new_zeros(())))
        a = self.a[start:]
        mu = self.margin[start:]  # (k, n_b)
        out = torch.full((mu.shape[1],), math.nan, dtype=mu.dtype, device=mu.device)
        if a.numel() < 2:
            return out
        inside = mu > 0
        # first index i >= 1 with mu[i] <= 0 while mu[0..i-1] > 0
        crossed = ~inside[1:] & torch.cumprod(inside[:-1].to(torch.int8), dim=0).bool()
        found = crossed.any(dim=0)
        i = crossed.to(torch.int8).argmax(dim=0) + 1  # (n_b,)
        cols = torch.arange(mu.shape[1], device=mu.device)
        m0, m1 = mu[i - 1, cols], mu[i, cols]
        a0, a1 = a[i - 1], a[i]
        root = a0 + (a1 - a0) * m0 / (m0 - m1)
        return torch.where(found, root, out)


# ---------------------------------------------------------------------------------------------
# validation


def _check_pair(value: object, name: str, check) -> tuple:
    """A scalar (used for both axes) or a pair ``(for a, for b)``, each passed to ``check``."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(
                f"`{name}` must be a number or a pair (for a, for b); got {len(value)} values "
                f"{value!r}."
            )
        return check(value[0], f"{name}[0]"), check(value[1], f"{name}[1]")
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, (numbers.Real, bool)) or value is None:
        one = check(value, name)
        return one, one
    raise TypeError(f"`{name}` must be a number or a pair of numbers; got {type(value).__name__}.")


def _check_direction(w: object, name: str, x: Tensor) -> Tensor:
    """A finite, non-zero floating vector of ``d`` entries shaped ``(d,)``, like one input or
    like ``x``; returned flat."""
    if not isinstance(w, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor; got {type(w).__name__}.")
    shape = tuple(x.shape[1:])
    d = x[0].numel()
    if tuple(w.shape) not in {(d,), shape, tuple(x.shape)}:
        raise ValueError(
            f"`{name}` must have shape ({d},) (flat), {shape} (one input) or {tuple(x.shape)}; "
            f"got {tuple(w.shape)}."
        )
    if not w.is_floating_point():
        raise TypeError(f"`{name}` must be floating; got dtype {w.dtype}.")
    if w.dtype != x.dtype:
        raise TypeError(f"`{name}` has dtype {w.dtype} but `x` has {x.dtype}; convert one.")
    if w.device != x.device:
        raise ValueError(f"`{name}` is on {w.device} but `x` on {x.device}; move one of them.")
    check_finite(w, name)
    flat = w.detach().reshape(d)
    if not bool(flat.any()):
        raise ValueError(f"`{name}` is the zero vector; a cross-section needs a direction.")
    return flat


def _check_origin(model: nn.Module, x: object) -> Tensor:
    """``x`` as a batch of one; returns the logits of ``x`` (call inside ``eval_mode``)."""
    if isinstance(x, Tensor) and (x.ndim < 2 or x.shape[0] != 1):
        raise ValueError(
            f"`x` must be a batch of one input, shape (1, *input_shape); got {tuple(x.shape)}. "
            "Select one input with `x[i : i + 1]`."
        )
    return check_inputs(model, x, "x")


def _margin(logits: Tensor, k0: int) -> Tensor:
    """``f_k0 - max_{j != k0} f_j`` per row of ``(n, L)`` logits."""
    others = logits.clone()
    others[:, k0] = -math.inf
    return logits[:, k0] - others.max(dim=1).values


# ---------------------------------------------------------------------------------------------
# the sections


def cross_section(
    model: nn.Module,
    x: Tensor,
    u: Tensor,
    v: Tensor,
    *,
    extent: float | tuple[float, float],
    resolution: int | tuple[int, int] = 101,
    normalize: bool = True,
    orthogonalize: bool = False,
    batch_size: int | None = None,
    keep_logits: bool = False,
) -> CrossSection:
    r"""Labels of ``model`` on the plane ``x + a u + b v`` (001, Fig. 5, 6, 13).

    On the grid :math:`a_i \in [-e_a, e_a]` (``n_a`` points), :math:`b_j \in [-e_b, e_b]`
    (``n_b`` points), ``labels[i, j]`` :math:`= k(x + a_i u + b_j v)` and ``margin[i, j]``
    :math:`= f_{k_0} - \max_{j \ne k_0} f_j` at that point, :math:`k_0 = k(x)` (its zero
    contour is the boundary of x's decision region). Grid points are evaluated in chunks of
    ``batch_size`` inputs; the chunking does not change the result.

    By default ``u`` and ``v`` are scaled to unit norm, so that ``a`` and ``b`` are l2 distances
    in input space; with ``normalize=False`` they are multiples of the given vectors. A *normal*
    section (001) takes ``u`` the unit normal ``r(x) / ||r(x)||`` and ``v`` orthogonal to it:
    pass ``orthogonalize=True`` to replace ``v`` by :math:`v - (v \cdot \hat u) \hat u` (or
    use :func:`normal_section`).

    Args:
        model: classifier ``(n, *input_shape) -> (n, L)`` logits (evaluated in eval mode).
        x: ``(1, *input_shape)`` the origin of the plane.
        u: direction of the ``a`` axis: ``(d,)``, ``(*input_shape)`` or ``(1, *input_shape)``.
        v: direction of the ``b`` axis, same shapes; not parallel to ``u``.
        extent: half-width ``e > 0`` of the grid on both axes, or a pair ``(e_a, e_b)``.
        resolution: grid points per axis (``>= 2``), or a pair ``(n_a, n_b)``.
        normalize: scale ``u`` and ``v`` to unit norm.
        orthogonalize: make ``v`` orthogonal to ``u`` first (then normalise it).
        batch_size: grid points per forward pass (``None``: about ``2**22 / d``).
        keep_logits: also return the ``(n_a, n_b, L)`` logits.

    Returns:
        :class:`CrossSection`, on the device and with the dtype of ``x``.

    Raises:
        TypeError: for a non-module ``model``, non-tensor or non-floating ``x``, ``u``, ``v``,
            a dtype mismatch, or non-numeric ``extent`` / ``resolution``.
        ValueError: for ``x`` not a batch of one, a direction of the wrong shape, zero,
            non-finite or on another device, ``u`` parallel to ``v``, ``extent <= 0``,
            ``resolution < 2`` or ``batch_size < 1``.

    Example:
        >>> lin = nn.Linear(2, 2).double()
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
        ...     _ = lin.bias.copy_(torch.tensor([0.0, -1.0]))
        >>> x = torch.zeros(1, 2, dtype=torch.float64)
        >>> e = torch.eye(2, dtype=torch.float64)
        >>> s = cross_section(lin, x, e[0], e[1], extent=2.0, resolution=5)
        >>> s.a.tolist(), s.labels[:, 0].tolist()  # class 1 where a > 1
        ([-2.0, -1.0, 0.0, 1.0, 2.0], [0, 0, 0, 0, 1])
        >>> s.boundary_distance().tolist()  # the boundary a = 1, whatever b
        [1.0, 1.0, 1.0, 1.0, 1.0]
    """
    check_model(model)
    ext_a, ext_b = _check_pair(extent, "extent", check_positive)
    n_a, n_b = _check_pair(resolution, "resolution", lambda r, name: check_int(r, name, low=2))
    for name, flag in (
        ("normalize", normalize),
        ("orthogonalize", orthogonalize),
        ("keep_logits", keep_logits),
    ):
        if not isinstance(flag, bool):
            raise TypeError(f"`{name}` must be a bool; got {type(flag).__name__}.")
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", low=1)
    with eval_mode(model):
        out0 = _check_origin(model, x)
        U = _check_direction(u, "u", x)
        V = _check_direction(v, "v", x)
        nu, nv = U.norm(), V.norm()
        cosine = float((U @ V) / (nu * nv))
        u_hat = U / nu
        v_perp = V - (V @ u_hat) * u_hat
        # rounding leaves ~eps * ||v|| of an exactly parallel v: 1e3 eps flags near-parallel pairs
        if float(v_perp.norm()) <= 1e3 * torch.finfo(V.dtype).eps * float(nv):
            raise ValueError(
                f"`u` and `v` are parallel (cosine {cosine:.6g}): they span a line, not a plane. "
                "Give two independent directions."
            )
        if orthogonalize:
            V = v_perp
        if normalize:
            U, V = u_hat, V / V.norm()
        k0 = int(out0.argmax(dim=1))
        origin_margin = float(_margin(out0, k0))

        a = torch.linspace(-ext_a, ext_a, n_a, dtype=x.dtype, device=x.device)
        b = torch.linspace(-ext_b, ext_b, n_b, dtype=x.dtype, device=x.device)
        total, d = n_a * n_b, U.numel()
        size = max(1, _ENTRIES_PER_BATCH // d) if batch_size is None else batch_size
        x0 = x.detach().reshape(1, d)
        labels, margins, logits = [], [], []
        with torch.no_grad():
            for start in range(0, total, size):
                k = torch.arange(start, min(start + size, total), device=x.device)
                pts = x0 + a[k // n_b, None] * U + b[k % n_b, None] * V
                out = check_logits(model(pts.view(-1, *x.shape[1:])), k.numel())
                labels.append(out.argmax(dim=1))
                margins.append(_margin(out, k0))
                if keep_logits:
                    logits.append(out)
    return CrossSection(
        a=a,
        b=b,
        labels=torch.cat(labels).view(n_a, n_b),
        margin=torch.cat(margins).view(n_a, n_b),
        u=U.clone(),
        v=V.clone(),
        origin_label=k0,
        origin_margin=origin_margin,
        cosine=cosine,
        normalized=normalize,
        orthogonalized=orthogonalize,
        logits=torch.cat(logits).view(n_a, n_b, -1) if keep_logits else None,
    )


def normal_section(
    model: nn.Module,
    x: Tensor,
    v: Tensor,
    *,
    extent: float | tuple[float, float] | None = None,
    resolution: int | tuple[int, int] = 101,
    points: BoundaryPoints | None = None,
    batch_size: int | None = None,
    keep_logits: bool = False,
) -> CrossSection:
    r"""The normal section of 001 through ``x``: the plane ``(r(x), v)``, ``v`` made orthogonal.

    ``u = r(x) / ||r(x)||`` with ``r(x) = z - x`` the minimal perturbation to the boundary point
    ``z`` (:func:`~geomrob.curvature.boundary.boundary_points`: DeepFool's direction, root of
    the margin on the segment), and ``v`` replaced by its unit component orthogonal to ``u``.
    Then ``z`` lies at ``(a, b) = (||r(x)||, 0)`` and the boundary curve through it is the normal
    section of the decision boundary along ``v`` (001, Fig. 4 left, Fig. 5, 6, 13): for ``v`` in
    a direction of positive curvature (e.g. a universal perturbation, or a vector of
    :math:`S_c`) it bends towards ``x``.

    Args:
        model: classifier returning logits.
        x: ``(1, *input_shape)`` the input.
        v: ``(d,)``, ``(*input_shape)`` or ``(1, *input_shape)``, not parallel to ``r(x)``.
        extent: half-width(s) of the grid; ``None``: ``DEFAULT_EXTENT_FACTOR * ||r(x)||``
            (3 ``||r(x)||``) on both axes.
        resolution: grid points per axis, or a pair.
        points: the :class:`BoundaryPoints` of ``x`` (computed with the defaults when
            ``None``).
        batch_size: grid points per forward pass.
        keep_logits: also return the logits.

    Returns:
        :class:`CrossSection` with ``orthogonalized=True``, ``normalized=True``,
        ``distance = ||r(x)||`` and ``adv_label`` the class across ``z``.

    Raises:
        TypeError, ValueError: as :func:`cross_section`; and if ``points`` does not belong to
            ``x``, or the boundary point did not converge (no normal to draw).

    Example:
        >>> lin = nn.Linear(2, 2).double()
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
        ...     _ = lin.bias.copy_(torch.tensor([0.0, -2.0]))
        >>> x = torch.zeros(1, 2, dtype=torch.float64)
        >>> s = normal_section(lin, x, torch.tensor([1.0, 0.0], dtype=torch.float64),
        ...                    resolution=7)
        >>> round(s.distance, 6), s.u.mul(2**0.5).round(decimals=6).tolist(), s.cosine > 0
        (1.414214, [1.0, 1.0], True)
    """
    check_model(model)
    if points is None:
        with eval_mode(model):
            _check_origin(model, x)
        points = boundary_points(model, x)
    elif not isinstance(points, BoundaryPoints):
        raise TypeError(
            f"`points` must be a BoundaryPoints (from geomrob.boundary_points); got "
            f"{type(points).__name__}."
        )
    elif not (
        isinstance(x, Tensor) and points.x.shape == x.shape and torch.equal(points.x, x.detach())
    ):
        raise ValueError("`points` must be the boundary points of `x` itself (points.x == x).")
    if not bool(points.converged[0]):
        raise ValueError(
            "The boundary point of `x` did not converge (DeepFool did not cross a boundary or "
            "the root was not reached): r(x) and the normal section are undefined. Raise "
            "DeepFool's max_iter or pick another input."
        )
    r = points.r[0].detach()
    distance = float(r.norm())
    if distance == 0.0:
        raise ValueError("`x` lies on the boundary (r(x) = 0): the normal section is undefined.")
    if extent is None:
        extent = DEFAULT_EXTENT_FACTOR * distance
    section = cross_section(
        model,
        x,
        r.reshape(-1),
        v,
        extent=extent,
        resolution=resolution,
        normalize=True,
        orthogonalize=True,
        batch_size=batch_size,
        keep_logits=keep_logits,
    )
    return CrossSection(
        **{
            **section.__dict__,
            "distance": distance,
            "adv_label": int(points.adv_label[0]),
        }
    )
