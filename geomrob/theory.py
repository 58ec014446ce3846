r"""The bounds of 001 as functions, the quantities they assume, and models where they hold.

After Moosavi-Dezfooli, Fawzi, Fawzi, Soatto, Frossard, "Robustness of classifiers to universal
perturbations: a geometric perspective" (ICLR 2018, ``001`` in ``shared/seeds``), sections 3-4
and appendices A-B. All lengths are in units of :math:`\|r(x)\|` (the paper assumes
:math:`\|r(x)\|_2 = 1`): multiply a radius by a typical :math:`\|r(x)\|` to compare it with
perturbation norms in input units.

Bounds:

- :func:`lemma1_betas`, :func:`lemma1_probability`, :func:`lemma1_monte_carlo`: Lemma 1 (App. A),
  the concentration of :math:`\|P_m v\|^2` for :math:`v` uniform on :math:`S^{d-1}`.
- :func:`theorem1_radius`: Theorem 1, flat boundaries whose normals lie close to an
  ``m``-dimensional subspace ``S``.
- :func:`theorem2_constant`, :func:`theorem2_radius`: Theorem 2, boundaries positively curved
  along ``S``; the constant ``C`` derived from the proof (App. B).

Measured hypotheses:

- :func:`measure_xi`: :math:`\xi = 1 - \min_x \|P_S\, r(x)/\|r(x)\|\|` (Theorem 1).
- :func:`normal_section_curvature`: the curvature of normal sections ``(r(x), v)``, ``v`` in
  ``S``, as Theorem 2 assumes it (the smallest eigenvalue of the Hessian compressed to the plane),
  through the Hessian-vector products of :mod:`geomrob.curvature.hvp`.

Synthetic classifiers where the hypotheses hold exactly (checks of the bounds by Monte Carlo):

- :func:`flat_model` (:class:`FlatSlabClassifier`): Theorem 1's model :math:`L_S(x, \rho)`.
- :func:`curved_model` (:class:`QuadraticBoundaryClassifier`): Theorem 2's model
  :math:`Q(x, \rho)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ._model import eval_mode, functional
from ._random import as_generator, randn
from ._validation import check_finite, check_int, check_real
from .curvature.boundary import BoundaryPoints
from .curvature.hvp import MODES, margin_gradients, products, zero_hessian_error
from .models.surrogate import is_piecewise_linear
from .results import Result
from .subspaces import Subspace, _as_basis, _curvature_setup, _scatter, random_subspace

__all__ = [
    "FlatSlabClassifier",
    "Lemma1Betas",
    "Lemma1MonteCarlo",
    "QuadraticBoundaryClassifier",
    "SectionCurvature",
    "SyntheticModel",
    "XiResult",
    "curved_model",
    "flat_model",
    "lemma1_betas",
    "lemma1_monte_carlo",
    "lemma1_probability",
    "measure_xi",
    "normal_section_curvature",
    "theorem1_radius",
    "theorem2_constant",
    "theorem2_radius",
]

#: Monte Carlo draws of :func:`lemma1_monte_carlo` per chunk, at most about this many entries.
_ENTRIES_PER_CHUNK = 2**20


def _check_delta(delta: object) -> float:
    return check_real(delta, "delta", low=0.0, high=1.0, low_inclusive=False)


# ---------------------------------------------------------------------------------------------
# Lemma 1


@dataclass(frozen=True)
class Lemma1Betas(Result):
    """The constants of Lemma 1; unpacks as ``beta1, beta2 = lemma1_betas(m, delta)``.

    Attributes:
        beta1: lower constant, ``<= 1``.
        beta2: upper constant, ``>= 1``.
    """

    beta1: float
    beta2: float

    def __iter__(self):
        return iter((self.beta1, self.beta2))


def lemma1_betas(m: int, delta: float) -> Lemma1Betas:
    r"""The constants :math:`\beta_1(\delta, m)` and :math:`\beta_2(\delta, m)` of Lemma 1 (001).

    .. math::

        \beta_1 = \max\Big(\tfrac1e \delta^{2/m},\ 1 - \sqrt{2 (1 - \delta^{2/m})}\Big),
        \qquad
        \beta_2 = 1 + 2 \sqrt{\frac{\ln(1/\delta)}{m}} + \frac{2 \ln(1/\delta)}{m},

    such that :math:`P(\beta_1 \frac md \le \|P_m v\|^2 \le \beta_2 \frac md) \ge 1 - \delta`
    for :math:`v` uniform on :math:`S^{d-1}` (Fawzi et al., 2016, after Dasgupta and Gupta,
    2003). The lower tail alone is :math:`\le \delta` (the first branch of :math:`\beta_1` is
    Dasgupta-Gupta's bound :math:`\beta^{m/2} e^{(1 - \beta) m / 2}`), the upper tail alone is
    :math:`\le \delta` (Laurent-Massart's :math:`\chi^2_m` bound with :math:`t = \ln(1/\delta)`).

    Args:
        m: the dimension projected on, ``>= 1``.
        delta: failure probability in ``(0, 1]``.

    Returns:
        :class:`Lemma1Betas` (unpacks to ``beta1, beta2``).

    Raises:
        TypeError, ValueError: for a non-integer ``m < 1`` or ``delta`` outside ``(0, 1]``.

    Example:
        >>> b1, b2 = lemma1_betas(1, 0.5)
        >>> round(b1, 6) == round(0.25 / math.e, 6), round(b2, 6)
        (True, 4.051404)
    """
    m = check_int(m, "m", low=1)
    delta = _check_delta(delta)
    q = delta ** (2.0 / m)
    beta1 = max(q / math.e, 1.0 - math.sqrt(2.0 * (1.0 - q)))
    log = math.log(1.0 / delta)
    beta2 = 1.0 + 2.0 * math.sqrt(log / m) + 2.0 * log / m
    return Lemma1Betas(beta1=beta1, beta2=beta2)


def _check_dims(d: object, m: object) -> tuple[int, int]:
    d = check_int(d, "d", low=1)
    m = check_int(m, "m", low=1)
    if m > d:
        raise ValueError(f"`m` must be <= d = {d}; got m = {m}.")
    return d, m


def lemma1_probability(d: int, m: int, delta: float) -> float:
    r"""The exact probability of Lemma 1's event, :math:`P(\beta_1 \frac md \le \|P_m v\|^2 \le
    \beta_2 \frac md)`.

    For :math:`v` uniform on :math:`S^{d-1}`, :math:`\|P_m v\|^2 \sim
    \mathrm{Beta}(m/2, (d - m)/2)` (a ratio of independent :math:`\chi^2_m` and
    :math:`\chi^2_{d-m}`), evaluated with ``scipy.stats.beta``; for ``m = d`` it is 1.
    Lemma 1 states that this is at least ``1 - delta``.

    Args:
        d: ambient dimension, ``>= 1``.
        m: projected dimension, ``1 <= m <= d``.
        delta: in ``(0, 1]``.

    Returns:
        The probability, a float in ``[0, 1]``.

    Raises:
        TypeError, ValueError: for bad ``d``, ``m`` or ``delta``.

    Example:
        >>> lemma1_probability(100, 5, 0.1) >= 0.9
        True
    """
    from scipy.stats import beta as beta_dist

    d, m = _check_dims(d, m)
    beta1, beta2 = lemma1_betas(m, delta)
    lo, hi = beta1 * m / d, beta2 * m / d
    if m == d:
        return 1.0 if lo <= 1.0 <= hi else 0.0
    law = beta_dist(m / 2, (d - m) / 2)
    return float(law.cdf(min(hi, 1.0)) - law.cdf(lo))


@dataclass(frozen=True)
class Lemma1MonteCarlo(Result):
    """Lemma 1 checked by sampling ``n`` vectors uniform on the sphere.

    Attributes:
        probability: fraction of draws with ``beta1 m/d <= ||P_m v||^2 <= beta2 m/d``.
        standard_error: ``sqrt(p (1 - p) / n)``.
        below: fraction with ``||P_m v||^2 < beta1 m / d`` (the lower tail).
        above: fraction with ``||P_m v||^2 > beta2 m / d`` (the upper tail).
        exact: :func:`lemma1_probability` (the Beta-distribution value).
        bound: ``1 - delta``, what Lemma 1 promises.
        beta1: Lemma 1's lower constant.
        beta2: Lemma 1's upper constant.
        d: ambient dimension.
        m: projected dimension.
        delta: the failure probability.
        n: number of draws.
    """

    probability: float
    standard_error: float
    below: float
    above: float
    exact: float
    bound: float
    beta1: float
    beta2: float
    d: int
    m: int
    delta: float
    n: int


def lemma1_monte_carlo(
    d: int,
    m: int,
    delta: float,
    n: int,
    generator: torch.Generator | int | None = None,
) -> Lemma1MonteCarlo:
    r"""The empirical probability that :math:`\beta_1 \frac md \le \|P_m v\|^2 \le \beta_2
    \frac md` for :math:`v` uniform on :math:`S^{d-1}` (Lemma 1 of 001).

    ``v = g / ||g||`` with ``g ~ N(0, I_d)`` in float64, drawn in chunks (about ``2**20``
    entries each), ``P_m`` the projection on the first ``m`` coordinates.

    Args:
        d: ambient dimension, ``>= 1``.
        m: projected dimension, ``1 <= m <= d``.
        delta: in ``(0, 1]``.
        n: number of draws, ``>= 1``.
        generator: source of ``g`` (an int seeds a new CPU generator).

    Returns:
        :class:`Lemma1MonteCarlo`, with the exact probability beside the estimate.

    Raises:
        TypeError, ValueError: for bad ``d``, ``m``, ``delta`` or ``n``.

    Example:
        >>> mc = lemma1_monte_carlo(50, 3, 0.2, 4000, generator=0)
        >>> mc.probability >= mc.bound, abs(mc.probability - mc.exact) < 5 * mc.standard_error
        (True, True)
    """
    d, m = _check_dims(d, m)
    beta1, beta2 = lemma1_betas(m, delta)
    n = check_int(n, "n", low=1)
    gen = as_generator(generator, "cpu")
    lo, hi = beta1 * m / d, beta2 * m / d
    rows = max(1, _ENTRIES_PER_CHUNK // d)
    below = above = 0
    for start in range(0, n, rows):
        g = randn(min(rows, n - start), d, generator=gen, device="cpu", dtype=torch.float64)
        q = (g[:, :m] ** 2).sum(1) / (g**2).sum(1)
        below += int((q < lo).sum())
        above += int((q > hi).sum())
    p = 1.0 - (below + above) / n
    return Lemma1MonteCarlo(
        probability=p,
        standard_error=math.sqrt(p * (1.0 - p) / n),
        below=below / n,
        above=above / n,
        exact=lemma1_probability(d, m, delta),
        bound=1.0 - delta,
        beta1=beta1,
        beta2=beta2,
        d=d,
        m=m,
        delta=delta,
        n=n,
    )


# ---------------------------------------------------------------------------------------------
# Theorems 1 and 2


def theorem1_radius(m: int, delta: float, xi: float, sharp: bool = False) -> float:
    r"""Theorem 1 of 001: the norm of a universal *direction* for flat boundaries.

    If :math:`\|P_S r(x)\|_2 \ge 1 - \xi` for almost all ``x`` (unit :math:`\|r(x)\|`, ``S`` of
    dimension ``m``) and the flat model :math:`L_S(x, \rho)` holds, then a random ``v`` of norm

    .. math::

        \rho = \frac{\sqrt{e\, m}}{\delta\, (1 - \xi)}

    in ``S`` satisfies :math:`k(x + v) \ne k(x)` or :math:`k(x - v) \ne k(x)` for at least
    ``1 - delta`` of the points, on average over ``v`` (so some ``v`` does).

    The proof (001, App. A) needs :math:`|\hat a^\top v|^2 \ge 1 / (\rho (1 - \xi))^2` with
    :math:`\hat a = P_S r / \|P_S r\|` a fixed unit vector of ``S`` and ``v`` uniform on the
    unit sphere of ``S``: Lemma 1 *in dimension m, projecting on one coordinate* (its ``d`` is
    ``m``, its ``m`` is 1) gives :math:`(\hat a^\top v)^2 \ge \beta_1(\delta, 1) / m` with
    probability :math:`\ge 1 - \delta`. Hence the sharper radius (``sharp=True``)

    .. math::

        \rho = \frac{\sqrt{m / \beta_1(\delta, 1)}}{1 - \xi}, \qquad
        \beta_1(\delta, 1) = \max\big(\delta^2 / e,\ 1 - \sqrt{2 (1 - \delta^2)}\big)
        \ge \delta^2 / e,

    which equals the first form for :math:`\delta \le 0.856` and is smaller above.

    Args:
        m: dimension of ``S``, ``>= 1``.
        delta: in ``(0, 1]``.
        xi: in ``[0, 1)``.
        sharp: return the form before the last inequality.

    Returns:
        :math:`\rho`, in units of :math:`\|r(x)\|`.

    Raises:
        TypeError, ValueError: for bad arguments.

    Example:
        >>> round(theorem1_radius(4, 0.5, 0.0), 6) == round(math.sqrt(4 * math.e) / 0.5, 6)
        True
        >>> theorem1_radius(4, 0.95, 0.0, sharp=True) < theorem1_radius(4, 0.95, 0.0)
        True
    """
    m = check_int(m, "m", low=1)
    delta = _check_delta(delta)
    xi = check_real(xi, "xi", low=0.0, high=1.0, high_inclusive=False)
    if not isinstance(sharp, bool):
        raise TypeError(f"`sharp` must be a bool; got {type(sharp).__name__}.")
    if sharp:
        return math.sqrt(m / lemma1_betas(1, delta).beta1) / (1.0 - xi)
    return math.sqrt(math.e * m) / (delta * (1.0 - xi))


def theorem2_constant(kappa: float, delta: float) -> float:
    r"""The constant ``C`` of Theorem 2, :math:`C = |1 - 2\kappa| \sqrt{2 \ln(2/\delta)}`.

    See :func:`theorem2_radius` for the derivation from 001, App. B.

    Args:
        kappa: the curvature of Theorem 2, ``> 0``.
        delta: in ``(0, 1]``.

    Returns:
        ``C >= 0``.

    Raises:
        TypeError, ValueError: for ``kappa <= 0`` or ``delta`` outside ``(0, 1]``.

    Example:
        >>> round(theorem2_constant(0.25, 2 * math.exp(-2.0)), 12)
        1.0
    """
    kappa = check_real(kappa, "kappa", low=0.0, low_inclusive=False)
    delta = _check_delta(delta)
    return abs(1.0 - 2.0 * kappa) * math.sqrt(2.0 * math.log(2.0 / delta))


def theorem2_radius(
    kappa: float, m: int, delta: float, C: float | None = None, *, exact: bool = False
) -> float:
    r"""Theorem 2 of 001: the norm of a universal *vector* for positively curved boundaries.

    If the quadratic model :math:`Q(x, \rho)` holds and, for almost all ``x``, a random unit
    ``v`` of the ``m``-dimensional ``S`` satisfies with probability :math:`\ge 1 - \beta`
    :math:`\alpha_x^{-1} u^\top \Pi^\top H_z \Pi u \ge \kappa \|u\|^2` for all
    :math:`u \in \mathbb R^2` (:math:`\Pi` an orthonormal basis of :math:`\mathrm{span}(r(x),
    v)`; see :func:`normal_section_curvature`), then some ``v`` with :math:`\|v\| \le \rho`
    fools at least :math:`1 - \delta - \beta` of the points, where

    .. math::

        \rho = \frac{C}{\kappa \sqrt m} + \kappa^{-1/2}
        \quad\text{bounds the positive root}\quad
        \rho_* = \frac{C / \sqrt m + \sqrt{C^2 / m + 4 \kappa}}{2 \kappa}
        \quad\text{of}\quad \rho^2 = \kappa^{-1} (C \rho\, m^{-1/2} + 1)

    (:math:`\sqrt{a + b} \le \sqrt a + \sqrt b`); ``exact=True`` returns :math:`\rho_*`.

    **Derivation of C** (001, App. B, with :math:`\|r\| = 1`, ``v`` uniform on the unit sphere
    of ``S``, :math:`w = \rho v - r \in \mathrm{span}(r, v)`). Under the curvature hypothesis
    :math:`\alpha^{-1} w^\top H w \ge \kappa \|w\|^2`, so ``x`` is fooled as soon as
    :math:`\kappa \|w\|^2 + r^\top w \ge 0`. Expanding with :math:`t = v^\top r`,

    .. math::

        \kappa \|w\|^2 + r^\top w = \rho (1 - 2\kappa)\, t + \kappa \rho^2 + \kappa - 1,

    hence for any :math:`\epsilon > 0` the point is missed only if
    :math:`\rho (1 - 2 \kappa) t \le -\epsilon` or :math:`\kappa \rho^2 + \kappa - 1 <
    \epsilon`. Choose :math:`\epsilon = \kappa \rho^2 - 1` (the quadratic above, with
    :math:`\epsilon = C \rho / \sqrt m`): the second event is then empty (:math:`\kappa > 0`).
    For the first, concentration on the sphere :math:`S^{m-1}` (Matousek, 2002, Thm. 14.1.1:
    :math:`P(v^\top a \ge s) \le 2 e^{-m s^2 / 2}` for a unit ``a``; :math:`v^\top r = v^\top
    P_S r` with :math:`\|P_S r\| \le 1` only helps; ``t`` is symmetric) gives

    .. math::

        P\Big(\rho (1 - 2\kappa) t \le -\frac{C \rho}{\sqrt m}\Big)
        \le 2 \exp\Big(-\frac{C^2}{2 (1 - 2\kappa)^2}\Big) = \delta
        \iff C = |1 - 2 \kappa| \sqrt{2 \ln(2 / \delta)},

    the default ``C`` (:func:`theorem2_constant`): :math:`O(\sqrt{\log(2/\delta)})` as the
    paper says, and 0 at :math:`\kappa = 1/2`. Averaging over ``v`` then gives a ``v`` fooling
    :math:`\ge 1 - \delta - \beta`.

    Conventions. Taking :math:`\alpha_x = 2 \|\nabla F(z)\| / \|r(x)\|` makes :math:`Q(x,
    \rho)` exactly the second-order Taylor model of :math:`F` at ``z``; the hypothesis then
    reads :math:`\kappa = \|r\|\, \lambda_{\min}(\Pi^\top H_z \Pi) / (2 \|\nabla F(z)\|)`, half
    the smallest normal curvature of the section times :math:`\|r\|`, and the disk of 001's
    Fig. 4 (right) has radius :math:`1/(2\kappa)`. With :math:`r(x)` the *minimal*
    perturbation (the boundary point nearest to ``x``), the model is consistent only for
    :math:`\kappa < 1/2` (else the boundary crosses the ray from ``x`` along :math:`-r` at
    distance :math:`1/\kappa - 1 < 1`), so :math:`\rho > \sqrt 2` always: the guaranteed
    universal perturbation is a few times :math:`\|r(x)\|`.

    Args:
        kappa: the curvature :math:`\kappa > 0` (dimensionless, units of :math:`1/\|r\|`).
        m: dimension of ``S``, ``>= 1``.
        delta: in ``(0, 1]``.
        C: the constant (default :func:`theorem2_constant`), ``>= 0``.
        exact: return the exact root :math:`\rho_*` instead of the bound.

    Returns:
        :math:`\rho`, in units of :math:`\|r(x)\|`.

    Raises:
        TypeError, ValueError: for bad arguments.

    Example:
        >>> rho = theorem2_radius(0.25, 16, 0.1, C=1.0)
        >>> rho, theorem2_radius(0.25, 16, 0.1, C=1.0, exact=True)
        (3.0, 2.5615528128088303)
    """
    kappa = check_real(kappa, "kappa", low=0.0, low_inclusive=False)
    m = check_int(m, "m", low=1)
    delta = _check_delta(delta)
    C = theorem2_constant(kappa, delta) if C is None else check_real(C, "C", low=0.0)
    if not isinstance(exact, bool):
        raise TypeError(f"`exact` must be a bool; got {type(exact).__name__}.")
    s = C / math.sqrt(m)
    if exact:
        return (s + math.sqrt(s * s + 4.0 * kappa)) / (2.0 * kappa)
    return s / kappa + kappa**-0.5


# ---------------------------------------------------------------------------------------------
# measured hypotheses


@dataclass(frozen=True, eq=False)
class XiResult(Result):
    r"""Theorem 1's :math:`\xi` for a subspace and a set of normals.

    Attributes:
        xi: :math:`1 - \min_i \|P_S \hat r_i\|`, in ``[0, 1]``.
        projection_norms: ``(n,)`` :math:`\|P_S \hat r_i\|`, :math:`\hat r_i = r_i / \|r_i\|`.
        worst: index of the point attaining the minimum.
    """

    xi: float
    projection_norms: Tensor
    worst: int


def measure_xi(subspace: Subspace | Tensor, r: Tensor) -> XiResult:
    r"""How far the normals are from a subspace: :math:`\xi = 1 - \min_x \|P_S\, n(x)\|`.

    With :math:`n(x) = r(x) / \|r(x)\|` and :math:`P_S` the orthogonal projection on ``S``,
    Theorem 1 of 001 holds with this :math:`\xi` for the points given (its hypothesis
    :math:`\|P_S r(x)\| \ge 1 - \xi` for unit :math:`r`).

    Args:
        subspace: a :class:`~geomrob.subspaces.Subspace` or ``(m, d)`` orthonormal rows.
        r: ``(n, d)`` or ``(n, *input_shape)`` normals (e.g. ``BoundaryPoints.r``), non-zero.

    Returns:
        :class:`XiResult` with the per-point projection norms.

    Raises:
        TypeError: for non-floating or non-tensor arguments.
        ValueError: for a bad basis, an empty or non-finite ``r``, a zero row, or another
            ``d``.

    Example:
        >>> e = torch.eye(3, dtype=torch.float64)
        >>> r = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 1.0]], dtype=torch.float64)
        >>> res = measure_xi(e[:2], r)
        >>> round(res.xi, 6), res.projection_norms.round(decimals=6).tolist(), res.worst
        (0.292893, [1.0, 0.707107], 1)
    """
    U = _as_basis(subspace)
    if not isinstance(r, Tensor):
        raise TypeError(f"`r` must be a torch.Tensor of normals (n, d); got {type(r).__name__}.")
    if r.ndim < 2 or r.shape[0] == 0:
        raise ValueError(f"`r` must be a non-empty batch (n, d); got shape {tuple(r.shape)}.")
    if not r.is_floating_point():
        raise TypeError(f"`r` must be floating; got dtype {r.dtype}.")
    check_finite(r, "r")
    R = r.detach().flatten(1)
    if R.shape[1] != U.shape[1]:
        raise ValueError(
            f"`r` has d = {R.shape[1]} entries per row but the subspace lives in R^{U.shape[1]}."
        )
    norms = R.norm(dim=1)
    zero = torch.nonzero(norms == 0).flatten().tolist()
    if zero:
        raise ValueError(f"`r` has zero rows {zero[:10]}: their direction is undefined.")
    U = U.to(device=R.device, dtype=R.dtype)
    proj = ((R / norms[:, None]) @ U.T).norm(dim=1).clamp(max=1.0)
    worst = int(proj.argmin())
    return XiResult(xi=1.0 - float(proj[worst]), projection_norms=proj, worst=worst)


@dataclass(frozen=True, eq=False)
class SectionCurvature(Result):
    r"""Curvatures of the normal sections ``span(n(z), v_j)`` at boundary points.

    At each boundary point ``z`` (``F = f_adv - f_label``, unit normal
    :math:`\hat n = \nabla F / \|\nabla F\|` pointing away from ``x``) and each direction
    :math:`v_j`, with :math:`e = P v_j / \|P v_j\|` (:math:`P = I - \hat n \hat n^\top`), the
    section's 2 x 2 form :math:`\Pi^\top H_z \Pi`, :math:`\Pi = [\hat n, e]`, divided by
    :math:`g = \|\nabla F(z)\|`. Values for points whose boundary point did not converge, and
    for directions parallel to the normal, are NaN.

    Attributes:
        tangent: ``(n, k)`` :math:`e^\top H e / g`: the normal curvature of the boundary along
            ``e`` (1 / length; > 0 when it bends towards ``x``, DESIGN.md section 3).
        normal: ``(n,)`` :math:`\hat n^\top H \hat n / g`.
        cross: ``(n, k)`` :math:`\hat n^\top H e / g` (symmetrised).
        minimum: ``(n, k)`` :math:`\lambda_{\min}(\Pi^\top H \Pi) / g` (1 / length).
        kappa: ``(n, k)`` Theorem 2's dimensionless :math:`\kappa(x, v_j) = \|r\| \cdot`
            ``minimum / 2`` (see :func:`theorem2_radius` for the factor 2).
        grad_norm: ``(n,)`` :math:`g`.
        r_norm: ``(n,)`` :math:`\|r(x)\| = \|z - x\|`.
        converged: ``(n,)`` bool, the points evaluated.
        mode: the Hessian-vector product mode.
    """

    tangent: Tensor
    normal: Tensor
    cross: Tensor
    minimum: Tensor
    kappa: Tensor
    grad_norm: Tensor
    r_norm: Tensor
    converged: Tensor
    mode: str

    def theorem_kappa(self, beta: float = 0.0) -> Tensor:
        r"""``(n,)``: per point, the largest :math:`\kappa_x` with
        :math:`\hat P_v(\kappa(x, v) \ge \kappa_x) \ge 1 - \beta` over the sampled directions.

        The empirical ``beta``-quantile (from below) of ``kappa`` over the finite directions of
        each point (index ``floor(beta k)`` of the ascending values): Theorem 2's hypothesis
        holds at ``x`` with this :math:`\kappa` and failure probability ``beta`` (up to the
        Monte Carlo error of ``k`` directions). Its minimum over points is the :math:`\kappa`
        of "almost all x"; NaN for a point without a finite value.

        Args:
            beta: in ``[0, 1)``.

        Returns:
            A float tensor of the dtype of ``kappa``.
        """
        beta = check_real(beta, "beta", low=0.0, high=1.0, high_inclusive=False)
        values = self.kappa
        finite = torch.isfinite(values)
        ordered = torch.where(finite, values, torch.full_like(values, math.inf)).sort(dim=1).values
        count = finite.sum(dim=1)
        index = torch.floor(beta * count.to(values.dtype)).long().clamp(min=0)
        index = torch.minimum(index, (count - 1).clamp(min=0))
        picked = ordered.gather(1, index[:, None]).squeeze(1)
        return torch.where(count > 0, picked, torch.full_like(picked, math.nan))


def normal_section_curvature(
    model: nn.Module,
    points: BoundaryPoints,
    directions: Tensor,
    *,
    mode: str = "exact",
    h: float | Tensor | None = None,
    beta: float | None = None,
    sigma: float | Tensor | None = None,
    n_samples: int | None = None,
    generator: torch.Generator | int | None = None,
    chunk: int | None = None,
) -> SectionCurvature:
    r"""The curvature of normal sections as Theorem 2 of 001 assumes it.

    Theorem 2's hypothesis is on the *whole* 2 x 2 form of the Hessian on the normal section
    :math:`\mathrm{span}(r(x), v)`: :math:`\alpha_x^{-1} u^\top \Pi^\top H_z \Pi u \ge \kappa
    \|u\|^2` for all :math:`u \in \mathbb R^2`, i.e. its smallest eigenvalue, which involves
    the second derivative along the normal and the mixed term, not only the tangent curvature
    :math:`e^\top H e / \|\nabla F\|` of :func:`~geomrob.subspaces.average_curvature`. Both
    are returned, per point and direction; ``kappa`` is the theorem's dimensionless value
    :math:`\|r\| \lambda_{\min}(\Pi^\top H_z \Pi) / (2 \|\nabla F(z)\|)` to pass to
    :func:`theorem2_radius` (through :meth:`SectionCurvature.theorem_kappa`).

    The normal is :math:`\hat n = \nabla F(z) / \|\nabla F(z)\|` of the network differentiated
    (parallel to ``r(x)`` at a converged boundary point). The products are those of
    :func:`~geomrob.curvature.hvp.hvp` in ``mode`` (``H n`` and ``H e_j`` in one block per
    point, so the smoothed mode uses one Stein estimate per point); the mixed term is
    symmetrised, :math:`(\hat n^\top H e + e^\top H \hat n) / 2`.

    Args:
        model: classifier returning logits.
        points: :class:`~geomrob.curvature.boundary.BoundaryPoints` of ``model`` (``n``).
        directions: ``(k, d)`` the same directions for every point (e.g.
            :func:`~geomrob.subspaces.sample_subspace` of ``S``), or ``(n, k, d)`` per point.
        mode: ``"exact"``, ``"finite_difference"``, ``"surrogate"`` or ``"smoothed"``.
        h: finite-difference step (float or ``(n,)``).
        beta: Softplus sharpness (surrogate mode).
        sigma: smoothing scale (smoothed mode).
        n_samples: antithetic samples per point (smoothed mode).
        generator: source of the smoothed mode's samples.
        chunk: points per batched pass (``None``: all).

    Returns:
        :class:`SectionCurvature`.

    Raises:
        TypeError, ValueError: for bad arguments (as :func:`~geomrob.curvature.hvp.hvp`),
            ``directions`` of the wrong shape, dtype or device, no converged point, or exact
            products that vanish on a piecewise-linear network.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2)).double()
        >>> x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> from geomrob.curvature import boundary_points
        >>> pts = boundary_points(net, x)
        >>> sc = normal_section_curvature(net, pts, torch.eye(3, dtype=torch.float64)[:2])
        >>> sc.kappa.shape, bool((sc.minimum <= sc.tangent + 1e-12).all())
        (torch.Size([4, 2]), True)
    """
    if chunk is not None:
        chunk = check_int(chunk, "chunk", low=1)
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {list(MODES)}; got {mode!r}.")
    used, converged, setup = _curvature_setup(
        model,
        points,
        mode=mode,
        h=h,
        beta=beta,
        sigma=sigma,
        n_samples=n_samples,
        generator=as_generator(generator, "cpu"),
    )
    n_all, d = len(points), setup.d
    if not isinstance(directions, Tensor):
        raise TypeError(f"`directions` must be a torch.Tensor; got {type(directions).__name__}.")
    if not directions.is_floating_point() or directions.dtype != setup.z.dtype:
        raise TypeError(
            f"`directions` must have the points' dtype {setup.z.dtype}; got {directions.dtype}."
        )
    if directions.device != setup.z.device:
        raise ValueError(
            f"`directions` is on {directions.device} but the points on {setup.z.device}."
        )
    check_finite(directions, "directions")
    if directions.ndim == 2 and directions.shape[1] == d and directions.shape[0] >= 1:
        D = directions.detach().expand(setup.n, *directions.shape)
    elif directions.ndim == 3 and directions.shape[0] == n_all and directions.shape[2] == d:
        D = directions.detach()[converged.to(directions.device)]
    else:
        raise ValueError(
            f"`directions` must have shape (k, d) = (k, {d}) or (n, k, d) = ({n_all}, k, {d}); "
            f"got {tuple(directions.shape)}."
        )
    size = setup.n if chunk is None else chunk
    call = functional(setup.net)
    pieces: list[tuple[Tensor, ...]] = []
    eps = torch.finfo(setup.z.dtype).eps
    check_zero = setup.mode in ("exact", "surrogate") and is_piecewise_linear(setup.net)
    with eval_mode(setup.net), torch.no_grad():
        for start in range(0, setup.n, size):
            s = slice(start, start + size)
            grads = margin_gradients(call, setup.input_shape, setup.z[s], setup.coef[s])
            g = grads.norm(dim=1)
            if bool((g == 0).any()):
                raise ValueError("grad F vanishes at a boundary point: its normal is undefined.")
            nh = grads / g[:, None]
            Ds = D[s]
            E = Ds - torch.einsum("mkd,md->mk", Ds, nh)[..., None] * nh[:, None]
            en = E.norm(dim=2)
            tiny = en <= 1e3 * eps * Ds.norm(dim=2)
            E = E / torch.where(tiny, torch.ones_like(en), en)[..., None]
            W = torch.cat([nh[:, None], E], dim=1)
            HW = products(setup, call, s, W)
            if check_zero and bool(W.any()) and not bool(HW.any()):
                raise zero_hessian_error(setup)
            check_zero = False
            h11 = (nh * HW[:, 0]).sum(-1)
            h22 = (E * HW[:, 1:]).sum(-1)
            h12 = ((nh[:, None] * HW[:, 1:]).sum(-1) + (E * HW[:, :1]).sum(-1)) / 2
            lam = (h11[:, None] + h22) / 2 - torch.sqrt(((h11[:, None] - h22) / 2) ** 2 + h12**2)
            nan = torch.full_like(h22, math.nan)
            pieces.append(
                (
                    torch.where(tiny, nan, h22) / g[:, None],
                    h11 / g,
                    torch.where(tiny, nan, h12) / g[:, None],
                    torch.where(tiny, nan, lam) / g[:, None],
                    g,
                )
            )
    tangent, normal, cross, minimum, gnorm = (torch.cat(p) for p in zip(*pieces, strict=True))
    r_norm = used.r.flatten(1).norm(dim=1).to(minimum.dtype)
    kappa = r_norm[:, None] * minimum / 2
    return SectionCurvature(
        tangent=_scatter(tangent, converged),
        normal=_scatter(normal, converged),
        cross=_scatter(cross, converged),
        minimum=_scatter(minimum, converged),
        kappa=_scatter(kappa, converged),
        grad_norm=_scatter(gnorm, converged),
        r_norm=_scatter(r_norm, converged),
        converged=converged,
        mode=setup.mode,
    )


# ---------------------------------------------------------------------------------------------
# synthetic classifiers where the theorems' models hold exactly


def _nearest(y: Tensor, anchors: Tensor) -> Tensor:
    """Index of the nearest anchor per row (exact differences, no ``|a|^2 - 2ab`` expansion)."""
    return ((y[:, None, :] - anchors[None]) ** 2).sum(-1).argmin(dim=1)


class FlatSlabClassifier(nn.Module):
    r"""Theorem 1's flat model :math:`L_S(x, \rho)` (001, Eq. 3, Fig. 2a) as a classifier.

    Around each anchor :math:`x_i` with normal :math:`r_i` (the nearest anchor decides), with
    :math:`s = r_i^\top (y - x_i) / \|r_i\|^2` the logits are :math:`(0, s - 1, -s - 1)`:
    class 0 inside the slab :math:`|s| < 1`, class 1 beyond it on the side of :math:`r_i`,
    class 2 on the other side. The two boundaries are flat, at distance :math:`\|r_i\|` from
    :math:`x_i` with normals :math:`\pm r_i` (DeepFool finds :math:`r(x_i) = \pm r_i`), and
    :math:`k(x_i + v) \ne k(x_i)` iff :math:`|r_i^\top v| > \|r_i\|^2`, the same for
    :math:`-v`, as long as :math:`x_i + v` stays in the cell of :math:`x_i`.

    Args:
        anchors: ``(n, d)`` the data points :math:`x_i`.
        normals: ``(n, d)`` non-zero :math:`r_i`.
    """

    def __init__(self, anchors: Tensor, normals: Tensor) -> None:
        super().__init__()
        _check_anchor_pair(anchors, normals)
        self.anchors = nn.Parameter(anchors.detach().clone(), requires_grad=False)
        self.normals = nn.Parameter(normals.detach().clone(), requires_grad=False)

    def forward(self, y: Tensor) -> Tensor:
        y = y.flatten(1)
        i = _nearest(y, self.anchors)
        r = self.normals[i]
        s = ((y - self.anchors[i]) * r).sum(1) / (r * r).sum(1)
        return torch.stack([torch.zeros_like(s), s - 1.0, -s - 1.0], dim=1)


class QuadraticBoundaryClassifier(nn.Module):
    r"""Theorem 2's curved model :math:`Q(x, \rho)` (001, Sec. 4, Fig. 2b) as a classifier.

    Around each anchor :math:`x_i` (the nearest anchor decides), with unit
    :math:`\hat r_i = r_i / \|r_i\|` and :math:`e = y - x_i - r_i`, the logits are
    :math:`(0, F_i(y))`,

    .. math::

        F_i(y) = \hat r_i^\top e + \tfrac12 e^\top H_i e,

    so :math:`z_i = x_i + r_i` is on the boundary, :math:`\nabla F_i(z_i) = \hat r_i` (unit) and
    :math:`\nabla^2 F_i = H_i`: the quadratic model is the classifier itself.

    Args:
        anchors: ``(n, d)`` the data points :math:`x_i`.
        normals: ``(n, d)`` non-zero :math:`r_i`.
        hessians: ``(n, d, d)`` symmetric :math:`H_i`.
    """

    def __init__(self, anchors: Tensor, normals: Tensor, hessians: Tensor) -> None:
        super().__init__()
        n, d = _check_anchor_pair(anchors, normals)
        if not isinstance(hessians, Tensor) or hessians.shape != (n, d, d):
            raise ValueError(
                f"`hessians` must be a tensor of shape (n, d, d) = ({n}, {d}, {d}); got "
                f"{getattr(hessians, 'shape', type(hessians).__name__)}."
            )
        if hessians.dtype != anchors.dtype:
            raise TypeError(f"`hessians` must have dtype {anchors.dtype}; got {hessians.dtype}.")
        check_finite(hessians, "hessians")
        asym = float((hessians - hessians.transpose(1, 2)).abs().max())
        if asym > 1e3 * torch.finfo(hessians.dtype).eps * max(1.0, float(hessians.abs().max())):
            raise ValueError(f"`hessians` must be symmetric; max |H - H^T| = {asym:.3g}.")
        self.anchors = nn.Parameter(anchors.detach().clone(), requires_grad=False)
        self.normals = nn.Parameter(normals.detach().clone(), requires_grad=False)
        self.hessians = nn.Parameter(hessians.detach().clone(), requires_grad=False)

    def forward(self, y: Tensor) -> Tensor:
        y = y.flatten(1)
        i = _nearest(y, self.anchors)
        r = self.normals[i]
        e = y - self.anchors[i] - r
        He = (self.hessians[i] @ e[:, :, None]).squeeze(2)
        F = (e * r).sum(1) / r.norm(dim=1) + 0.5 * (e * He).sum(1)
        return torch.stack([torch.zeros_like(F), F], dim=1)


def _check_anchor_pair(anchors: object, normals: object) -> tuple[int, int]:
    for name, t in (("anchors", anchors), ("normals", normals)):
        if not isinstance(t, Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor; got {type(t).__name__}.")
        if t.ndim != 2 or t.shape[0] == 0 or not t.is_floating_point():
            raise ValueError(
                f"`{name}` must be a non-empty floating (n, d) tensor; got {t.dtype} "
                f"{tuple(t.shape)}."
            )
        check_finite(t, name)
    if anchors.shape != normals.shape or anchors.dtype != normals.dtype:
        raise ValueError(
            f"`anchors` and `normals` must have the same shape and dtype; got "
            f"{tuple(anchors.shape)} {anchors.dtype} and {tuple(normals.shape)} {normals.dtype}."
        )
    if bool((normals.norm(dim=1) == 0).any()):
        raise ValueError("`normals` has a zero row: every point needs a normal.")
    return anchors.shape


@dataclass(frozen=True, eq=False)
class SyntheticModel(Result):
    """A synthetic classifier of :func:`flat_model` or :func:`curved_model` and its data.

    Attributes:
        model: the classifier (:class:`FlatSlabClassifier` or
            :class:`QuadraticBoundaryClassifier`).
        x: ``(n, d)`` the data points (anchors).
        basis: ``(m, d)`` orthonormal rows of the subspace ``S``.
        normals: ``(n, d)`` unit normals :math:`r(x_i)` (``||r|| = 1``, as 001 assumes).
        radius: the model holds for perturbations of norm ``< radius`` (half the anchors'
            spacing: ``x_i + v`` stays in the cell of ``x_i``).
        kind: ``"flat"`` or ``"curved"``.
        params: the construction's parameters.
    """

    model: nn.Module
    x: Tensor
    basis: Tensor
    normals: Tensor
    radius: float
    kind: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain Python, without the model (its parameters are the data)."""
        out = super().to_dict()
        out["model"] = type(self.model).__name__
        return out


def _unit_rows(G: Tensor) -> Tensor:
    return G / G.norm(dim=1, keepdim=True)


def _common(d: object, m: object, n: object, spacing: object, dtype: object) -> tuple:
    d, m = _check_dims(d, m)
    n = check_int(n, "n", low=1)
    spacing = check_real(spacing, "spacing", low=0.0, low_inclusive=False)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"`dtype` must be a floating torch.dtype; got {dtype!r}.")
    return d, m, n, spacing


def _anchors(n: int, d: int, spacing: float, dtype: torch.dtype) -> Tensor:
    """``n`` points on the first axis, ``spacing`` apart: the cells are slabs of that width."""
    x = torch.zeros(n, d, dtype=dtype)
    x[:, 0] = (torch.arange(n, dtype=dtype) - (n - 1) / 2) * spacing
    return x


def flat_model(
    d: int,
    m: int,
    n: int,
    xi: float,
    *,
    spacing: float = 1000.0,
    generator: torch.Generator | int | None = None,
    dtype: torch.dtype = torch.float64,
) -> SyntheticModel:
    r"""A classifier satisfying Theorem 1's hypotheses exactly, with a known ``S`` and ``xi``.

    ``S`` is a Haar-random ``m``-dimensional subspace; each unit normal is
    :math:`r_i = (1 - \xi) a_i + \sqrt{1 - (1 - \xi)^2}\, b_i` with :math:`a_i` uniform on the
    unit sphere of ``S`` and :math:`b_i` on that of :math:`S^\perp`, so
    :math:`\|P_S r_i\| = 1 - \xi` exactly (:func:`measure_xi` returns ``xi``). The anchors sit
    ``spacing`` apart on a line and the classifier is :class:`FlatSlabClassifier`: for
    :math:`\|v\| <` ``radius`` :math:`= \text{spacing}/2`, :math:`k(x_i \pm v) \ne k(x_i)` iff
    :math:`|r_i^\top v| > 1`: the model :math:`L_S(x_i, \rho)`.

    Args:
        d: input dimension.
        m: dimension of ``S``, ``1 <= m <= d`` (``m < d`` when ``xi > 0``).
        n: number of data points.
        xi: in ``[0, 1)``.
        spacing: distance between anchors (> 0).
        generator: source of ``S`` and the normals (an int seeds a new CPU generator).
        dtype: floating dtype of the model and data.

    Returns:
        :class:`SyntheticModel` with ``kind="flat"``.

    Raises:
        TypeError, ValueError: for bad arguments.

    Example:
        >>> sm = flat_model(10, 3, 5, 0.2, generator=0)
        >>> round(measure_xi(sm.basis, sm.normals).xi, 12), sm.model(sm.x).argmax(1).tolist()
        (0.2, [0, 0, 0, 0, 0])
    """
    d, m, n, spacing = _common(d, m, n, spacing, dtype)
    xi = check_real(xi, "xi", low=0.0, high=1.0, high_inclusive=False)
    if xi > 0 and m == d:
        raise ValueError(f"`xi` > 0 needs m < d (normals partly outside S); got m = d = {d}.")
    gen = as_generator(generator, "cpu")
    U = random_subspace(d, m, generator=gen, dtype=dtype).basis
    a = _unit_rows(randn(n, m, generator=gen, device="cpu", dtype=dtype)) @ U
    normals = (1.0 - xi) * a
    if m < d:
        G = randn(n, d, generator=gen, device="cpu", dtype=dtype)
        b = _unit_rows(G - (G @ U.T) @ U)
        normals = normals + math.sqrt(1.0 - (1.0 - xi) ** 2) * b
    x = _anchors(n, d, spacing, dtype)
    return SyntheticModel(
        model=FlatSlabClassifier(x, normals),
        x=x,
        basis=U,
        normals=normals,
        radius=spacing / 2,
        kind="flat",
        params={"d": d, "m": m, "n": n, "xi": xi, "spacing": spacing},
    )


def curved_model(
    d: int,
    m: int,
    n: int,
    kappa: float,
    *,
    kappa_out: float = 0.0,
    spacing: float = 1000.0,
    generator: torch.Generator | int | None = None,
    dtype: torch.dtype = torch.float64,
) -> SyntheticModel:
    r"""A classifier satisfying Theorem 2's hypotheses exactly (with :math:`\beta = 0`).

    ``S`` is a Haar-random ``m``-dimensional subspace, the unit normals :math:`r_i` are uniform
    on :math:`S^{d-1}` (Theorem 2 assumes nothing about them), and
    :math:`H_i = 2\kappa\, Q_i + 2\kappa_{out} (I - Q_i)` with :math:`Q_i` the projection on
    :math:`\mathrm{span}(r_i) + S`; the classifier is :class:`QuadraticBoundaryClassifier`
    (:math:`\|\nabla F_i(z_i)\| = 1`). For every unit ``v`` in ``S`` the section
    :math:`\mathrm{span}(r_i, v)` lies in the range of :math:`Q_i`, so
    :math:`\lambda_{\min}(\Pi^\top H_i \Pi) = 2\kappa` and Theorem 2's :math:`\kappa(x_i, v)
    = \|r\| \cdot 2\kappa / 2 = \kappa` exactly (what :func:`normal_section_curvature`
    measures). Directions outside ``S`` see :math:`\kappa_{out}` (e.g. negative: the boundary
    bends away from ``x`` there).

    ``r_i`` is the minimal perturbation of :math:`x_i` as long as
    :math:`\max(\kappa, \kappa_{out}) < 1/2` (inside the ball :math:`\|w\| < 1`,
    :math:`\hat r^\top e < -\|e\|^2/2` and :math:`F < 0`); hence the requirement.

    Args:
        d: input dimension.
        m: dimension of ``S``, ``1 <= m < d``.
        n: number of data points.
        kappa: curvature along ``S``, ``0 < kappa < 1/2``.
        kappa_out: curvature outside ``span(r_i) + S``, ``< 1/2``.
        spacing: distance between anchors (> 0); the model holds for ``||v|| < spacing / 2``.
        generator: source of ``S`` and the normals.
        dtype: floating dtype.

    Returns:
        :class:`SyntheticModel` with ``kind="curved"``.

    Raises:
        TypeError, ValueError: for bad arguments.

    Example:
        >>> sm = curved_model(8, 2, 3, 0.25, generator=0)
        >>> sm.model(sm.x).argmax(1).tolist(), sm.model(sm.x + 1.01 * sm.normals).argmax(1).tolist()
        ([0, 0, 0], [1, 1, 1])
    """  # noqa: E501
    d, m, n, spacing = _common(d, m, n, spacing, dtype)
    if m >= d:
        raise ValueError(f"`m` must be < d = {d} (S plus the normal must fit); got m = {m}.")
    kappa = check_real(kappa, "kappa", low=0.0, high=0.5, low_inclusive=False)
    if kappa >= 0.5:
        raise ValueError(
            f"`kappa` must be < 1/2 for r(x) to be the minimal perturbation; got {kappa}."
        )
    kappa_out = check_real(kappa_out, "kappa_out", high=0.5, high_inclusive=False)
    gen = as_generator(generator, "cpu")
    U = random_subspace(d, m, generator=gen, dtype=dtype).basis
    normals = _unit_rows(randn(n, d, generator=gen, device="cpu", dtype=dtype))
    eye = torch.eye(d, dtype=dtype)
    H = torch.empty(n, d, d, dtype=dtype)
    for i in range(n):
        Qb = torch.linalg.qr(torch.cat([U, normals[i : i + 1]]).T).Q  # (d, m + 1)
        Q = Qb @ Qb.T
        H[i] = 2 * kappa * Q + 2 * kappa_out * (eye - Q)
    H = (H + H.transpose(1, 2)) / 2
    x = _anchors(n, d, spacing, dtype)
    return SyntheticModel(
        model=QuadraticBoundaryClassifier(x, normals, H),
        x=x,
        basis=U,
        normals=normals,
        radius=spacing / 2,
        kind="curved",
        params={
            "d": d,
            "m": m,
            "n": n,
            "kappa": kappa,
            "kappa_out": kappa_out,
            "spacing": spacing,
        },
    )
