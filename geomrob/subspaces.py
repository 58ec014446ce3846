r"""Subspaces of the input space and the curvature of the decision boundary along them.

After Moosavi-Dezfooli et al., "Robustness of classifiers to universal perturbations: a geometric
perspective" (ICLR 2018, ``001`` in ``shared/seeds``), section 5 (DESIGN.md section 3):

- :func:`curved_subspace`: :math:`S_c`, the span of the top-``m`` eigenvectors of the averaged
  boundary operator :math:`\bar H = \frac1n \sum_i A_i` built on the boundary points of ``n``
  (training) inputs (:class:`~geomrob.curvature.operators.BoundaryHessian`, Lanczos).
- :func:`normal_subspace`: :math:`S_f`, the top-``m`` right singular vectors of the matrix whose
  rows are the minimal perturbations :math:`r(x_i)` (unit rows by default).
- :func:`random_subspace`: a Haar-random ``m``-dimensional subspace (QR of a Gaussian matrix).
- :func:`sample_subspace`: random vectors of norm :math:`\rho` in a subspace,
  :math:`v = \rho U^\top g / \|g\|`, :math:`g \sim N(0, I_m)`.
- :func:`average_curvature`: :math:`K_S(x) = E_{v \sim \text{unit sphere of } S}
  [(P v)^\top H_z (P v) / \|P v\|^2]` at the boundary point ``z`` of ``x``, with
  :math:`P = I - n n^\top` the tangent projection, raw and divided by :math:`\|\nabla F(z)\|`
  (the normal curvature; positive when the boundary bends towards ``x``).
  :func:`curvature_profile` gives it for nested subspaces (the first ``m`` rows) against random
  subspaces of the same dimension (001, Fig. 7a).
- :func:`principal_angles`: cosines of the principal angles between two subspaces.
- :func:`subspace_fooling`: fooling rates of random vectors of a fixed norm drawn from nested
  subspaces (001, Fig. 7b); :func:`diversity`: their pairwise normalised inner products
  (001, Fig. 9).

A subspace is a :class:`Subspace`: a ``(m, d)`` basis with orthonormal rows (flat vectors of the
input space, ``d = prod(input_shape)``), its eigen- or singular values and diagnostics.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ._model import eval_mode, functional
from ._random import as_generator, randn
from ._threads import few_threads as _few_threads
from ._validation import check_choice, check_finite, check_int, check_model, check_positive
from .curvature.boundary import BoundaryPoints, boundary_points
from .curvature.hvp import (
    DEFAULT_SAMPLES,
    MODES,
    _Setup,
    _setup,
    margin_gradients,
    products,
    stein_products,
    stein_samples,
    zero_hessian_error,
)
from .curvature.lanczos import BACKENDS, lanczos
from .curvature.operators import DENSE_LIMIT, BoundaryHessian, _use_distributed
from .models.surrogate import is_piecewise_linear
from .results import Result

__all__ = [
    "KINDS",
    "CurvatureProfile",
    "CurvatureResult",
    "Subspace",
    "average_curvature",
    "curvature_profile",
    "curved_subspace",
    "normal_subspace",
    "principal_angles",
    "random_subspace",
    "sample_subspace",
    "SubspaceFooling",
    "subspace_fooling",
    "Diversity",
    "diversity",
]

#: What a :class:`Subspace` was built from.
KINDS = ("curved", "normal", "random")

#: Directions per batched pass of :func:`average_curvature`, at least (a memory bound).
_DIRECTION_BLOCK = 64
#: At most about this many (point, direction) products per batched pass (with ``chunk=None``).
_PRODUCTS_PER_PASS = 2048


# ---------------------------------------------------------------------------------------------
# the Subspace result


def _orthonormality_error(basis: Tensor) -> float:
    if basis.shape[0] == 0:
        return 0.0
    gram = basis @ basis.T
    eye = torch.eye(basis.shape[0], dtype=basis.dtype, device=basis.device)
    return float((gram - eye).abs().max())


def _orthonormality_tol(basis: Tensor) -> float:
    # rounding of d-term inner products grows like sqrt(d) eps
    return 1e3 * torch.finfo(basis.dtype).eps * max(1.0, math.sqrt(basis.shape[1]) / 30)


def _check_basis(basis: object, name: str) -> Tensor:
    """A floating, finite ``(m, d)`` tensor with ``1 <= m <= d`` and orthonormal rows."""
    if not isinstance(basis, Tensor):
        raise TypeError(
            f"`{name}` must be a Subspace or a (m, d) torch.Tensor with orthonormal rows; got "
            f"{type(basis).__name__}."
        )
    if basis.ndim != 2 or not 1 <= basis.shape[0] <= basis.shape[1]:
        raise ValueError(
            f"`{name}` must be a basis of shape (m, d) with 1 <= m <= d (rows are vectors); got "
            f"shape {tuple(basis.shape)}."
        )
    if not basis.is_floating_point():
        raise TypeError(f"`{name}` must be floating; got dtype {basis.dtype}.")
    check_finite(basis, name)
    err = _orthonormality_error(basis)
    if err > _orthonormality_tol(basis):
        raise ValueError(
            f"The rows of `{name}` must be orthonormal; max |U U^T - I| = {err:.3g}. "
            "Orthonormalise them first (torch.linalg.qr(basis.T).Q.T)."
        )
    return basis


@dataclass(frozen=True, eq=False)
class Subspace(Result):
    """An ``m``-dimensional subspace of the input space ``R^d``.

    Attributes:
        basis: ``(m, d)`` orthonormal rows spanning it.
        values: ``(m,)`` eigenvalues of the averaged boundary operator (``kind="curved"``,
            descending), singular values of the normals' matrix (``"normal"``), or ``None``
            (``"random"``).
        kind: ``"curved"``, ``"normal"`` or ``"random"``.
        residuals: ``(m,)`` Ritz residuals ``||H v - lambda v||`` (curved), else ``None``.
        mode: the Hessian-vector product mode of a curved subspace.
        n_points: points the operator (or the SVD) averaged over, excluded ones not counted.
        excluded: ``(k,)`` indices of the input points left out of a curved subspace's
            average (boundary point not converged; empty when none was), ``None`` for the
            other kinds.
        matvecs: products with the averaged operator (curved).
        info: the options that built it (JSON-ready).
    """

    basis: Tensor
    values: Tensor | None
    kind: str
    residuals: Tensor | None = None
    mode: str | None = None
    n_points: int | None = None
    excluded: Tensor | None = None
    matvecs: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_basis(self.basis, "basis")
        check_choice(self.kind, "kind", KINDS)
        m = self.basis.shape[0]
        for name in ("values", "residuals"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, Tensor) or value.shape != (m,)):
                raise ValueError(
                    f"`{name}` must be None or a tensor of shape ({m},), one per basis row; got "
                    f"{getattr(value, 'shape', type(value).__name__)}."
                )

    @property
    def m(self) -> int:
        """The dimension of the subspace."""
        return self.basis.shape[0]

    @property
    def d(self) -> int:
        """The dimension of the ambient input space."""
        return self.basis.shape[1]

    def project(self, v: Tensor) -> Tensor:
        """The orthogonal projection ``U^T U v`` on the subspace, same shape as ``v``.

        Args:
            v: ``(d,)``, ``(b, d)`` or input-shaped ``(b, *input_shape)`` with
                ``prod(input_shape) = d``.

        Returns:
            The projection, with the shape, dtype and device of ``v``.

        Raises:
            TypeError: if ``v`` is not a floating tensor.
            ValueError: if its shape does not hold vectors of length ``d``.
        """
        if not isinstance(v, Tensor) or not v.is_floating_point():
            raise TypeError(f"`v` must be a floating torch.Tensor; got {type(v).__name__}.")
        d = self.d
        if v.shape[-1] == d:
            flat = v.reshape(-1, d)
        elif v.ndim >= 2 and v[0].numel() == d:
            flat = v.reshape(v.shape[0], d)
        else:
            raise ValueError(
                f"`v` must have shape ({d},), (b, {d}) or (b, *input_shape) with {d} entries per "
                f"row; got {tuple(v.shape)}."
            )
        U = self.basis.to(device=v.device, dtype=v.dtype)
        return ((flat @ U.T) @ U).reshape(v.shape)

    def first(self, m: int) -> Subspace:
        """The subspace spanned by the first ``m`` rows (the top ``m`` for curved / normal)."""
        m = check_int(m, "m", low=1, high=self.m)
        cut = {
            "basis": self.basis[:m],
            "values": None if self.values is None else self.values[:m],
            "residuals": None if self.residuals is None else self.residuals[:m],
        }
        return Subspace(**{**self.__dict__, **cut})


# ---------------------------------------------------------------------------------------------
# small subspaces: random, normal, sampling, principal angles


def random_subspace(
    d: int,
    m: int,
    *,
    generator: torch.Generator | int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
) -> Subspace:
    """A uniformly (Haar) distributed ``m``-dimensional subspace of ``R^d``.

    The Q factor of a ``(d, m)`` standard Gaussian matrix, with the signs fixed so that the
    diagonal of R is positive (then Q is exactly Haar distributed).

    Args:
        d: ambient dimension.
        m: subspace dimension, ``1 <= m <= d``.
        generator: source of the Gaussian matrix (an int seeds a new CPU generator).
        dtype: floating dtype of the basis (``None``: torch's default dtype).
        device: device of the basis.

    Returns:
        A :class:`Subspace` with ``kind="random"`` and ``values=None``.

    Raises:
        TypeError: for a non-integer ``d`` or ``m`` or a non-floating ``dtype``.
        ValueError: unless ``1 <= m <= d``.

    Example:
        >>> s = random_subspace(5, 2, generator=0, dtype=torch.float64)
        >>> s.basis.shape, bool(torch.allclose(s.basis @ s.basis.T, torch.eye(2, dtype=s.basis.dtype)))
        (torch.Size([2, 5]), True)
    """  # noqa: E501
    d = check_int(d, "d", low=1)
    m = check_int(m, "m", low=1)
    if m > d:
        raise ValueError(f"`m` must be <= d = {d}; got m = {m}.")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"`dtype` must be a floating torch.dtype; got {dtype!r}.")
    gen = as_generator(generator, "cpu")
    G = randn(d, m, generator=gen, device=torch.device(device), dtype=dtype)
    with _few_threads(d * m):
        Q, R = torch.linalg.qr(G)
    signs = torch.sign(torch.diagonal(R))
    Q = Q * torch.where(signs == 0, torch.ones_like(signs), signs)
    return Subspace(basis=Q.T.contiguous(), values=None, kind="random", info={"d": d, "m": m})


def normal_subspace(r: Tensor, m: int, *, unit_rows: bool = True) -> Subspace:
    r""":math:`S_f`: the top-``m`` right singular vectors of the matrix of normals (001, Sec. 5).

    The rows of ``r`` are minimal perturbations :math:`r(x_i)` (e.g. DeepFool's, or
    ``BoundaryPoints.r``), each normal to the decision boundary.

    Args:
        r: ``(n, d)`` or ``(n, *input_shape)`` normals, one per point.
        m: subspace dimension, ``1 <= m <= min(n, d)``.
        unit_rows: divide every row by its norm first (default), so that every point counts
            the same whatever its distance to the boundary.

    Returns:
        A :class:`Subspace` with ``kind="normal"``, ``values`` the top ``m`` singular values
        (descending) and ``n_points = n``.

    Raises:
        TypeError: if ``r`` is not a floating tensor or ``unit_rows`` not a bool.
        ValueError: for an empty, non-finite or 1-d ``r``, a bad ``m``, or a zero row with
            ``unit_rows=True``.

    Example:
        >>> r = torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0], [2.0, 0.0, 0.0]])
        >>> s = normal_subspace(r, 1)
        >>> s.basis.abs().tolist(), s.values.tolist()
        ([[1.0, 0.0, 0.0]], [1.4142135381698608])
    """
    if not isinstance(r, Tensor):
        raise TypeError(f"`r` must be a torch.Tensor of normals (n, d); got {type(r).__name__}.")
    if r.ndim < 2 or r.shape[0] == 0:
        raise ValueError(
            f"`r` must be a non-empty batch (n, d) or (n, *input_shape); got shape "
            f"{tuple(r.shape)}."
        )
    if not r.is_floating_point():
        raise TypeError(f"`r` must be floating; got dtype {r.dtype}.")
    check_finite(r, "r")
    if not isinstance(unit_rows, bool):
        raise TypeError(f"`unit_rows` must be a bool; got {type(unit_rows).__name__}.")
    R = r.detach().flatten(1)
    n, d = R.shape
    m = check_int(m, "m", low=1)
    if m > min(n, d):
        raise ValueError(
            f"`m` must be <= min(n, d) = min({n}, {d}) (the rank of the normals' matrix); got "
            f"m = {m}."
        )
    if unit_rows:
        norms = R.norm(dim=1)
        zero = torch.nonzero(norms == 0).flatten().tolist()
        if zero:
            raise ValueError(
                f"`r` has zero rows {zero[:10]} which cannot be unit-normalised; drop them or "
                "pass unit_rows=False."
            )
        R = R / norms[:, None]
    with _few_threads(n * d):
        _, S, Vh = torch.linalg.svd(R, full_matrices=False)
    basis = Vh[:m]
    # a deterministic sign: the largest entry of each row is positive
    idx = basis.abs().argmax(dim=1)
    signs = torch.sign(basis.gather(1, idx[:, None]))
    basis = basis * torch.where(signs == 0, torch.ones_like(signs), signs)
    return Subspace(
        basis=basis.contiguous(),
        values=S[:m].clone(),
        kind="normal",
        n_points=n,
        info={"unit_rows": unit_rows},
    )


def _as_basis(subspace: object, name: str = "subspace") -> Tensor:
    if isinstance(subspace, Subspace):
        return subspace.basis
    return _check_basis(subspace, name)


def sample_subspace(
    subspace: Subspace | Tensor,
    n: int,
    norm: float,
    *,
    generator: torch.Generator | int | None = None,
) -> Tensor:
    r"""``n`` random vectors of norm ``norm`` uniformly distributed on the sphere of a subspace.

    :math:`v = \rho\, U^\top g / \|g\|`, :math:`g \sim N(0, I_m)` (DESIGN.md section 3).

    Args:
        subspace: a :class:`Subspace` or a ``(m, d)`` basis with orthonormal rows.
        n: number of vectors, ``>= 1``.
        norm: their l2 norm :math:`\rho > 0`.
        generator: source of ``g`` (an int seeds a new CPU generator).

    Returns:
        ``(n, d)`` with the basis' dtype and device.

    Raises:
        TypeError, ValueError: for a bad basis, ``n < 1`` or ``norm <= 0``.

    Example:
        >>> s = random_subspace(10, 3, generator=0, dtype=torch.float64)
        >>> v = sample_subspace(s, 4, 2.5, generator=1)
        >>> v.norm(dim=1).round(decimals=12).tolist(), bool(torch.allclose(s.project(v), v))
        ([2.5, 2.5, 2.5, 2.5], True)
    """
    U = _as_basis(subspace)
    n = check_int(n, "n", low=1)
    norm = check_positive(norm, "norm")
    gen = as_generator(generator, "cpu")
    g = randn(n, U.shape[0], generator=gen, device=U.device, dtype=U.dtype)
    g = g / g.norm(dim=1, keepdim=True)
    return norm * (g @ U)


@dataclass(frozen=True, eq=False)
class SubspaceFooling(Result):
    """Fooling rates of random vectors drawn from nested subspaces (001, Fig. 7b).

    Attributes:
        ms: ``(k,)`` subspace dimensions (the first ``m`` rows of the basis).
        rates: ``(k, n_vectors)`` float64 fooling rate of each sampled vector.
        norm: the l2 norm of every vector.
        n_points: the number of inputs the rates are over.
    """

    ms: Tensor
    rates: Tensor
    norm: float
    n_points: int

    @property
    def mean(self) -> Tensor:
        """``(k,)`` mean rate over the vectors: what a random vector of ``S_m`` achieves."""
        return self.rates.mean(dim=1)

    @property
    def std(self) -> Tensor:
        """``(k,)`` standard deviation over the vectors (0 for one vector)."""
        if self.rates.shape[1] < 2:
            return torch.zeros_like(self.mean)
        return self.rates.std(dim=1)

    @property
    def best(self) -> Tensor:
        """``(k,)`` the best of the vectors: "the best universal perturbation" of 001 Sec. 5."""
        return self.rates.amax(dim=1)


def subspace_fooling(
    model: nn.Module,
    x: Tensor,
    subspace: Subspace | Tensor,
    ms: Sequence[int],
    norm: float,
    *,
    n_vectors: int = 10,
    generator: torch.Generator | int | None = None,
    batch_size: int | None = None,
    bounds: tuple[float, float] | None = None,
) -> SubspaceFooling:
    r"""Fooling rates on ``x`` of random vectors of norm ``norm`` from the first ``m`` rows.

    001, Sec. 5 and Fig. 7b: perturbations "sampled uniformly at random from the unit sphere in"
    :math:`S_c` (or :math:`S_f`) "and scaled to have a fixed norm", evaluated on unseen points.
    For each ``m`` in ``ms``, ``n_vectors`` vectors :math:`v = \rho U_m^\top g / \|g\|`
    (:func:`sample_subspace`, one stream from ``generator`` in the order of ``ms``) are
    evaluated with :func:`~geomrob.attacks.fooling_rates` (all vectors of all ``m`` share one
    computation of the clean labels).

    Args:
        model: classifier returning logits.
        x: ``(n, *input_shape)`` inputs (unseen by the subspace, for the paper's protocol).
        subspace: a :class:`Subspace` or a ``(M, d)`` basis with orthonormal rows.
        ms: dimensions, each in ``[1, M]``.
        norm: the l2 norm of the vectors, ``> 0``.
        n_vectors: vectors per ``m``.
        generator: source of the vectors (an int seeds a new CPU generator).
        batch_size: inputs per forward pass.
        bounds: optional box: perturbed inputs are clipped to it (no clipping by default).

    Returns:
        :class:`SubspaceFooling`.

    Example:
        >>> lin = torch.nn.Linear(3, 2).double()
        >>> gen = torch.Generator().manual_seed(0)
        >>> x = torch.randn(50, 3, dtype=torch.float64, generator=gen)
        >>> s = random_subspace(3, 2, generator=0, dtype=torch.float64)
        >>> res = subspace_fooling(lin, x, s, [1, 2], 0.5, n_vectors=4, generator=0)
        >>> res.rates.shape, res.mean.shape
        (torch.Size([2, 4]), torch.Size([2]))
    """
    from .attacks.universal import fooling_rates

    U = _as_basis(subspace)
    ms = _check_ms(ms, U.shape[0])
    norm = check_positive(norm, "norm")
    n_vectors = check_int(n_vectors, "n_vectors", low=1)
    gen = as_generator(generator, "cpu")
    V = torch.cat([sample_subspace(U[:m], n_vectors, norm, generator=gen) for m in ms])
    V = V.to(device=x.device, dtype=x.dtype)
    rates = fooling_rates(model, x, V, batch_size=batch_size, bounds=bounds)
    return SubspaceFooling(
        ms=torch.tensor(ms),
        rates=rates.view(len(ms), n_vectors).cpu(),
        norm=norm,
        n_points=len(x),
    )


def _check_ms(ms: object, limit: int) -> list[int]:
    if isinstance(ms, (int, Tensor)) and not isinstance(ms, Tensor):
        raise TypeError(f"`ms` must be a sequence of dimensions; got {ms!r}.")
    values = [check_int(m, "ms", low=1, high=limit) for m in list(ms)]  # type: ignore[arg-type]
    if not values:
        raise ValueError("`ms` must not be empty.")
    return values


@dataclass(frozen=True, eq=False)
class Diversity(Result):
    r"""Pairwise normalised inner products of perturbations (001, Fig. 9).

    Attributes:
        cosines: ``(p,)`` the ``p = n (n - 1) / 2`` values :math:`v_i^\top v_j /
            (\|v_i\| \|v_j\|)`, ``i < j``.
        max_abs: the largest :math:`|\cos|`.
        mean_abs: the mean :math:`|\cos|`.
        expected_abs: :math:`E|\cos|` of two independent uniform directions of the ``m``-dim
            span they were drawn from, :math:`\Gamma(m/2) / (\sqrt{\pi}\,\Gamma((m+1)/2))`,
            or ``None`` when ``m`` is not given.
    """

    cosines: Tensor
    max_abs: float
    mean_abs: float
    expected_abs: float | None


def diversity(V: Tensor, *, m: int | None = None) -> Diversity:
    r"""Pairwise normalised inner products of the rows of ``V`` (001, Fig. 9).

    001 reports that perturbations sampled from :math:`S_c` are diverse: "the normalized inner
    product between two perturbations is less than 0.1". For two independent uniform unit
    vectors of an ``m``-dimensional space, :math:`E|\cos| = \Gamma(m/2) / (\sqrt\pi\,
    \Gamma((m+1)/2)) pprox \sqrt{2 / (\pi m)}`, given as ``expected_abs`` when ``m`` is known,
    so a reader can tell diversity that comes from the dimension from anything else.

    Args:
        V: ``(n, d)`` or ``(n, *input_shape)`` perturbations, ``n >= 2``, none zero.
        m: the dimension of the space they were drawn from (optional).

    Returns:
        :class:`Diversity`.

    Example:
        >>> V = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
        >>> res = diversity(V, m=2)
        >>> [round(c, 4) for c in res.cosines.tolist()], round(res.expected_abs, 4)
        ([0.0, 0.7071, 0.7071], 0.6366)
    """
    check_finite(V, "V")
    if V.dim() < 2 or V.shape[0] < 2:
        raise ValueError(
            f"`V` must hold at least 2 perturbations (rows); got shape {tuple(V.shape)}."
        )
    flat = V.flatten(1).double()
    norms = flat.norm(dim=1)
    if bool((norms == 0).any()):
        raise ValueError("`V` has a zero row: its direction is undefined.")
    unit = flat / norms.unsqueeze(1)
    i, j = torch.triu_indices(len(unit), len(unit), offset=1)
    cos = (unit[i] * unit[j]).sum(1).cpu()
    expected = None
    if m is not None:
        m = check_int(m, "m", low=1)
        expected = math.exp(math.lgamma(m / 2) - math.lgamma((m + 1) / 2)) / math.sqrt(math.pi)
    return Diversity(
        cosines=cos,
        max_abs=float(cos.abs().max()),
        mean_abs=float(cos.abs().mean()),
        expected_abs=expected,
    )


def _numpy_basis(a: object, name: str) -> np.ndarray:
    if isinstance(a, Subspace):
        a = a.basis
    if isinstance(a, Tensor):
        a = a.detach().cpu().double().numpy()
    if not isinstance(a, np.ndarray):
        raise TypeError(
            f"`{name}` must be a Subspace, a (m, d) torch.Tensor or numpy array; got "
            f"{type(a).__name__}."
        )
    if a.ndim != 2 or a.shape[0] == 0 or not np.issubdtype(a.dtype, np.floating):
        raise ValueError(
            f"`{name}` must be a floating (m, d) array of row vectors with m >= 1; got "
            f"{a.dtype} {a.shape}."
        )
    if not np.isfinite(a).all():
        raise ValueError(f"`{name}` contains NaN or infinite entries.")
    return np.asarray(a, dtype=np.float64)


def principal_angles(
    a: Subspace | Tensor | np.ndarray, b: Subspace | Tensor | np.ndarray
) -> Tensor:
    """Cosines of the principal angles between the row spans of ``a`` and ``b``, descending.

    ``scipy.linalg.subspace_angles`` on the bases as columns (it orthonormalises them, so the
    rows need not be orthonormal, only independent); cosine 1 = a shared direction, 0 =
    orthogonal directions.

    Args:
        a: a :class:`Subspace` or ``(m_a, d)`` rows (tensor or numpy array).
        b: a :class:`Subspace` or ``(m_b, d)`` rows.

    Returns:
        ``(min(m_a, m_b),)`` float64 CPU tensor of cosines in ``[0, 1]``, descending.

    Raises:
        TypeError: for another type.
        ValueError: for different ``d``, non-finite entries or linearly dependent rows.

    Example:
        >>> e = torch.eye(4, dtype=torch.float64)
        >>> principal_angles(e[:2], e[[1, 3]]).round(decimals=12).tolist()
        [1.0, 0.0]
    """  # noqa: E501
    from scipy.linalg import subspace_angles

    A, B = _numpy_basis(a, "a"), _numpy_basis(b, "b")
    if A.shape[1] != B.shape[1]:
        raise ValueError(
            f"`a` and `b` must live in the same space; got d = {A.shape[1]} and d = {B.shape[1]}."
        )
    angles = subspace_angles(A.T, B.T)
    k = min(A.shape[0], B.shape[0])
    if len(angles) < k:
        raise ValueError(
            f"The rows of `a` or `b` are linearly dependent: {len(angles)} principal angles "
            f"instead of {k}; give bases of independent rows."
        )
    cos = np.clip(np.cos(angles), 0.0, 1.0)
    return torch.from_numpy(np.sort(cos)[::-1].copy())


# ---------------------------------------------------------------------------------------------
# the curved subspace S_c


def _rank_world(distributed: bool) -> tuple[int, int]:
    if not distributed:
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def _shard(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous shard ``[start, stop)`` of ``n`` items for ``rank`` (sizes differ by <= 1)."""
    return n * rank // world, n * (rank + 1) // world


def _generator_fingerprint(gen: torch.Generator) -> int:
    digest = hashlib.sha256(gen.get_state().numpy().tobytes()).digest()
    return int.from_bytes(digest[:7], "little")


def _common_generator(gen: torch.Generator | None, distributed: bool) -> torch.Generator | None:
    """The generator every rank uses: checked identical across ranks, or seeded by rank 0."""
    if not distributed:
        return gen
    if gen is None:
        seed = torch.randint(0, 2**62, (1,)) if dist.get_rank() == 0 else torch.zeros(1)
        seed = seed.to(torch.int64)
        dist.all_reduce(seed, op=dist.ReduceOp.SUM)
        return torch.Generator().manual_seed(int(seed))
    fp = _generator_fingerprint(gen)
    both = torch.tensor([fp, -fp], dtype=torch.int64)
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    if int(both[0]) != fp or int(-both[1]) != fp:
        raise ValueError(
            "`generator` differs across ranks: with torch.distributed every rank must pass a "
            "generator in the same state (e.g. the same seed), so that Lanczos starts from the "
            "same vector everywhere; or pass None and rank 0 seeds it."
        )
    return gen


def _shard_steps(value: object, n: int, index: Tensor) -> object:
    """Per-point ``h`` / ``sigma`` tensors of all ``n`` inputs follow the points kept."""
    if isinstance(value, Tensor) and value.ndim == 1 and value.shape[0] == n:
        return value[index.to(value.device)]
    return value


def curved_subspace(
    model: nn.Module,
    x: Tensor | None,
    m: int,
    *,
    mode: str = "exact",
    points: BoundaryPoints | None = None,
    project: bool = False,
    normalize: bool = False,
    which: str = "LA",
    h: float | Tensor | None = None,
    beta: float | None = None,
    sigma: float | Tensor | None = None,
    n_samples: int | None = None,
    chunk: int | None = None,
    tol: float = 1e-6,
    ncv: int | None = None,
    lanczos_max_iter: int | None = None,
    backend: str = "torch",
    generator: torch.Generator | int | None = None,
    overshoot: float = 0.02,
    deepfool_max_iter: int = 50,
    num_candidates: int = 10,
    bounds: tuple[float, float] | None = None,
    distributed: bool | None = None,
    progress: bool = False,
) -> Subspace:
    r""":math:`S_c`: the top-``m`` eigenvectors of the averaged boundary operator (001, Sec. 5).

    :math:`\bar H = \frac1n \sum_i A_i` over the boundary points :math:`z_i` of ``x``
    (:func:`~geomrob.curvature.boundary.boundary_points`, unless ``points`` is given), with
    :math:`A_i = H_{z_i}` (the paper's choice) or the shape operator
    :math:`P_i H_{z_i} P_i / \|\nabla F_i\|` (``project=True, normalize=True``); see
    :class:`~geomrob.curvature.operators.BoundaryHessian`. The ``m`` largest algebraic
    eigenpairs (``which="LA"``: directions where the boundary bends most towards the data)
    come from :func:`~geomrob.curvature.lanczos.lanczos`.

    Points whose boundary point did not converge (DeepFool did not cross, or the root was not
    reached) are **excluded** from the average with a warning saying how many, and listed in
    ``Subspace.excluded``.

    Per mode: ``"exact"``, ``"surrogate"`` (ReLU -> Softplus(``beta``)) and ``"smoothed"``
    (Gaussian-smoothed Hessian by Stein's identity, exactly symmetric) run Lanczos on the
    operator itself. ``"finite_difference"`` products are not symmetric (far from it for ReLU
    networks: the transpose of a gradient difference is not available from products), so
    :math:`S_c` is taken from the symmetric part :math:`(\bar H + \bar H^\top)/2`, materialised
    by ``BoundaryHessian.symmetrized()`` with ``d`` products (``d <= DENSE_LIMIT``); above that
    use ``mode="smoothed"``, the scalable symmetric route.

    With ``torch.distributed`` initialised (or ``distributed=True``), ``x`` / ``points`` are the
    *same full set on every rank*: rank ``r`` of ``W`` takes the contiguous shard
    ``[n r / W, n (r + 1) / W)``, computes its boundary points, and the operator all-reduces the
    partial sums; Lanczos then runs identically everywhere (``generator`` must be in the same
    state on every rank -- checked -- or ``None``, and rank 0 draws the seed). The smoothed
    mode's directions are drawn point after point from one stream, so the result equals that of
    a single process (up to the rounding of the reduction).

    Args:
        model: classifier returning logits.
        x: ``(n, *input_shape)`` inputs, or ``None`` when ``points`` is given.
        m: dimension of :math:`S_c`, ``1 <= m <= d``.
        mode: ``"exact"``, ``"finite_difference"``, ``"surrogate"`` or ``"smoothed"``.
        points: boundary points of ``x`` (then ``x`` must be ``None`` or ``points.x``).
        project: tangent projection :math:`P_i` in :math:`A_i`.
        normalize: divide :math:`A_i` by :math:`\|\nabla F_i(z_i)\|`.
        which: ``"LA"`` (the top ``m``: :math:`S_c`) or ``"SA"`` (the ``m`` most negative
            eigenpairs, where the boundary bends away from the data: a control).
        h: finite-difference step (float, or ``(n,)`` tensor over all inputs); default
            ``0.1 ||r_i||``.
        beta: Softplus sharpness, required with ``mode="surrogate"``.
        sigma: smoothing scale (float or ``(n,)``), smoothed mode; default ``0.1 ||r_i||``.
        n_samples: antithetic samples per point, smoothed mode (default 64).
        chunk: points per batched pass (memory bound).
        tol: Lanczos relative residual tolerance.
        ncv: Lanczos basis size (default ``min(d, max(2m + 1, 20))``).
        lanczos_max_iter: Lanczos budget of products (default ``20 ncv``).
        backend: ``"torch"`` or ``"scipy"`` (``eigsh``).
        generator: the one source of randomness (Lanczos start vector, smoothed directions);
            an int seeds a new CPU generator.
        overshoot: DeepFool's overshoot (only when ``points`` is None).
        deepfool_max_iter: DeepFool's iteration budget (only when ``points`` is None).
        num_candidates: DeepFool's candidate classes (only when ``points`` is None).
        bounds: DeepFool's box (only when ``points`` is None).
        distributed: ``None``: shard and all-reduce when a process group is initialised.
        progress: tqdm bar for the Lanczos products.

    Returns:
        A :class:`Subspace` with ``kind="curved"``, ``values`` the Ritz values (descending),
        ``residuals``, ``mode``, ``n_points`` (points averaged), ``excluded`` (indices into
        ``x``), ``matvecs`` and ``info`` (the options and Lanczos' ``converged`` flags).

    Raises:
        TypeError: for wrong argument types.
        ValueError: for a bad option, ``m`` outside ``[1, d]``, no converged point, a
            finite-difference operator above ``DENSE_LIMIT``, or generators that differ across
            ranks.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3)).double()
        >>> x = torch.randn(8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> s = curved_subspace(net, x, 2, generator=0)
        >>> s.basis.shape, s.kind, s.n_points, bool(s.values[0] >= s.values[1])
        (torch.Size([2, 4]), 'curved', 8, True)
    """
    check_model(model)
    mode = check_choice(mode, "mode", MODES)
    which = check_choice(which, "which", ("LA", "SA"))
    backend = check_choice(backend, "backend", BACKENDS)
    for name, flag in (("project", project), ("normalize", normalize)):
        if not isinstance(flag, bool):
            raise TypeError(f"`{name}` must be a bool; got {type(flag).__name__}.")
    use_dist = _use_distributed(distributed)
    rank, world = _rank_world(use_dist)

    # -- the points of this rank ----------------------------------------------------------------
    if points is None:
        if x is None:
            raise ValueError("Give the inputs `x` or their boundary points `points=`.")
        if not isinstance(x, Tensor):
            raise TypeError(f"`x` must be a torch.Tensor; got {type(x).__name__}.")
        if x.ndim < 2 or x.shape[0] == 0:
            raise ValueError(f"`x` must be a non-empty batch (n, *input_shape); got {x.shape}.")
        d = _check_dimension(m, mode, _input_dim(x, None))
        n_all = x.shape[0]
        start, stop = _shard(n_all, rank, world)
        local = (
            boundary_points(
                model,
                x[start:stop],
                overshoot=overshoot,
                max_iter=deepfool_max_iter,
                num_candidates=num_candidates,
                bounds=bounds,
            )
            if stop > start
            else None
        )
    else:
        if not isinstance(points, BoundaryPoints):
            raise TypeError(
                f"`points` must be a BoundaryPoints (from geomrob.boundary_points); got "
                f"{type(points).__name__}."
            )
        if x is not None and (
            not isinstance(x, Tensor) or x.shape != points.x.shape or not torch.equal(x, points.x)
        ):
            raise ValueError(
                "`x` and `points` disagree: pass x=None with `points`, or the very inputs "
                "`points.x` they were computed from."
            )
        n_all = len(points)
        if n_all == 0:
            raise ValueError("`points` is empty; give at least one boundary point.")
        d = _check_dimension(m, mode, _input_dim(None, points))
        start, stop = _shard(n_all, rank, world)
        local = points.select(torch.arange(start, stop, device=points.z.device))

    # -- converged points only (all ranks agree on the global mask) -----------------------------
    device = points.z.device if points is not None else x.device
    mask = torch.zeros(n_all, dtype=torch.float64, device=device)
    if local is not None and len(local):
        mask[start:stop] = local.converged.to(torch.float64)
    if use_dist:
        dist.all_reduce(mask, op=dist.ReduceOp.SUM)
    converged = mask > 0
    excluded = torch.nonzero(~converged).flatten().cpu()
    n_used = int(converged.sum())
    if n_used == 0:
        raise ValueError(
            f"None of the {n_all} boundary points converged (DeepFool did not cross or the root "
            "was not reached); there is no operator to average. Raise DeepFool's max_iter."
        )
    if len(excluded):
        warnings.warn(
            f"curved_subspace: {len(excluded)} of {n_all} boundary points did not converge and "
            f"are excluded from the averaged operator (n = {n_used}); their indices are in "
            "Subspace.excluded.",
            stacklevel=2,
        )
    if local is None:  # an empty shard: keep the structure, no point
        ref = points if points is not None else None
        local_used = _empty_points(model, x, ref)
    else:
        local_used = local.select(local.converged)
    keep = torch.nonzero(converged[start:stop]).flatten() + start

    # -- randomness: one stream for the operator, one for Lanczos, identical on all ranks -------
    gen = _common_generator(as_generator(generator, "cpu"), use_dist)
    op_gen = lanczos_gen = None
    if gen is not None:
        seeds = torch.randint(0, 2**62, (2,), generator=gen, device=gen.device)
        op_gen = torch.Generator().manual_seed(int(seeds[0]))
        lanczos_gen = torch.Generator().manual_seed(int(seeds[1]))
    if mode == "smoothed" and op_gen is not None and start > 0:
        # skip the draws of the converged points of the lower ranks (same stream as one process)
        S = DEFAULT_SAMPLES if n_samples is None else check_int(n_samples, "n_samples", low=1)
        for _ in range(int(converged[:start].sum())):
            randn(S, d, generator=op_gen, device=device, dtype=local_used.z.dtype)

    op = BoundaryHessian(
        model,
        local_used,
        mode=mode,
        h=_shard_steps(h, n_all, keep),
        project=project,
        normalize=normalize,
        chunk=chunk,
        beta=beta,
        sigma=_shard_steps(sigma, n_all, keep),
        n_samples=n_samples,
        generator=op_gen if mode == "smoothed" else None,
        distributed=use_dist,
    )
    extra = 0
    target = op
    if mode == "finite_difference":
        target = op.symmetrized()
        extra = d
    res = lanczos(
        target,
        m,
        which=which,
        tol=tol,
        max_iter=lanczos_max_iter,
        backend=backend,
        generator=lanczos_gen,
        ncv=ncv,
        progress=progress,
    )
    info = {
        "which": which,
        "project": project,
        "normalize": normalize,
        "tol": tol,
        "backend": backend,
        "ritz_converged": res.converged.tolist(),
        "restarts": res.restarts,
        "n_inputs": n_all,
        "world_size": world,
    }
    for name, value in (("h", h), ("beta", beta), ("sigma", sigma), ("n_samples", n_samples)):
        if value is not None:
            info[name] = value.tolist() if isinstance(value, Tensor) else value
    if mode == "finite_difference":
        info["symmetrized"] = True
    return Subspace(
        basis=res.vectors,
        values=res.values,
        kind="curved",
        residuals=res.residuals,
        mode=mode,
        n_points=n_used,
        excluded=excluded,
        matvecs=res.matvecs + extra,
        info=info,
    )


def _check_dimension(m: object, mode: str, d: int) -> int:
    """Validate ``m`` against ``d`` (and the finite-difference cap) before any work; return d."""
    m = check_int(m, "m", low=1)
    if m > d:
        raise ValueError(f"`m` must be <= d = {d} (the input dimension); got m = {m}.")
    if mode == "finite_difference" and d > DENSE_LIMIT:
        raise ValueError(
            f"mode='finite_difference' takes S_c from the dense symmetric part of the operator "
            f"(d products, d x d memory), capped at d <= DENSE_LIMIT = {DENSE_LIMIT}; got "
            f"d = {d}. Use mode='smoothed' (exactly symmetric, scalable) or mode='surrogate'."
        )
    return d


def _input_dim(x: Tensor | None, points: BoundaryPoints | None) -> int:
    ref = points.z if points is not None else x
    return ref[0].numel()


def _empty_points(
    model: nn.Module, x: Tensor | None, points: BoundaryPoints | None
) -> BoundaryPoints:
    """Zero boundary points shaped like the inputs (a rank with an empty shard)."""
    if points is not None:
        return points.select(torch.zeros(len(points), dtype=torch.bool, device=points.z.device))
    assert x is not None
    z = x[:0].detach()
    long = torch.zeros(0, dtype=torch.long, device=x.device)
    flt = torch.zeros(0, dtype=x.dtype, device=x.device)
    return BoundaryPoints(
        x=z,
        z=z,
        r=z,
        label=long,
        adv_label=long,
        grad=z,
        residual=flt,
        converged=torch.zeros(0, dtype=torch.bool, device=x.device),
        t=flt,
    )


# ---------------------------------------------------------------------------------------------
# average curvature K_S


@dataclass(frozen=True, eq=False)
class CurvatureResult(Result):
    r"""Average normal curvature :math:`K_S` along a subspace, one value per point.

    Attributes:
        raw: ``(n,)`` :math:`K_S(x) = \frac1{N}\sum_j (P w_j)^\top H_z (P w_j) / \|P w_j\|^2`;
            NaN for a point whose boundary point did not converge.
        normalized: ``(n,)`` ``raw / ||grad F(z)||``, the normal curvature (1 / length).
        per_direction: ``(n, n_dirs)`` the raw quadratic forms; NaN where ``P w_j = 0``.
        coefficients: ``(n_dirs, m)`` unit vectors ``g_j / ||g_j||``: the directions are
            ``w_j = coefficients[j] @ basis``, the same for every point.
        grad_norm: ``(n,)`` ``||grad F(z)||`` of the differentiated network (NaN if excluded).
        converged: ``(n,)`` bool, the points that were evaluated.
        mode: the Hessian-vector product mode.
    """

    raw: Tensor
    normalized: Tensor
    per_direction: Tensor
    coefficients: Tensor
    grad_norm: Tensor
    converged: Tensor
    mode: str


def _curvature_setup(
    model: nn.Module,
    points: object,
    *,
    mode: str,
    h: object,
    beta: object,
    sigma: object,
    n_samples: object,
    generator: object,
) -> tuple[BoundaryPoints, Tensor, _Setup]:
    """Validated converged points, their mask, and the hvp setup (surrogate built once)."""
    if not isinstance(points, BoundaryPoints):
        raise TypeError(
            "`points` must be a BoundaryPoints (from geomrob.boundary_points); got "
            f"{type(points).__name__}."
        )
    n = len(points)
    if n == 0:
        raise ValueError("`points` is empty; give at least one boundary point.")
    converged = points.converged.to(torch.bool)
    if not bool(converged.any()):
        raise ValueError(
            f"None of the {n} boundary points converged; K_S is only defined on the boundary."
        )
    if not bool(converged.all()):
        warnings.warn(
            f"{int((~converged).sum())} of {n} boundary points did not converge: their "
            "curvature is NaN (not evaluated); see the result's `converged`.",
            stacklevel=3,
        )
    index = torch.nonzero(converged).flatten()
    used = points.select(converged)
    setup = _setup(
        model,
        used,
        mode=mode,
        h=_shard_steps(h, n, index),
        beta=beta,
        sigma=_shard_steps(sigma, n, index),
        n_samples=n_samples,
        generator=generator,
    )
    return used, converged, setup


def _tangent_forms(
    setup: _Setup, directions: list[tuple[Tensor, Tensor]], chunk: int | None
) -> tuple[Tensor, Tensor]:
    """Raw forms ``(n, b)`` of the directions at every point, and ``||grad F||`` ``(n,)``.

    ``directions`` is a list of ``(coefficients (b_i, k_i), basis (k_i, d))``: the directions
    ``coefficients @ basis``, ``b = sum b_i`` in that order, materialised a block at a time (so
    that memory is ``block x d``, not ``b x d``). ``w = P v`` (tangent projection at each point),
    form ``w^T H w / ||w||^2``, NaN where ``w`` vanishes. Points go ``chunk`` at a time; in
    smoothed mode each point's Stein samples are drawn once for all its directions.
    """
    n = setup.n
    b = sum(c.shape[0] for c, _ in directions)
    size = (
        min(n, max(1, _PRODUCTS_PER_PASS // min(b, _DIRECTION_BLOCK))) if chunk is None else chunk
    )
    block = min(b, max(_DIRECTION_BLOCK, _PRODUCTS_PER_PASS // size))
    slices = [slice(i, i + size) for i in range(0, n, size)]
    call = functional(setup.net)
    check_zero = setup.mode in ("exact", "surrogate") and is_piecewise_linear(setup.net)
    forms, norms = [], []
    with eval_mode(setup.net), torch.no_grad():
        for s in slices:
            z, coef = setup.z[s], setup.coef[s]
            grads = margin_gradients(call, setup.input_shape, z, coef)
            gnorm = grads.norm(dim=1)
            if bool((gnorm == 0).any()):
                bad = (torch.nonzero(gnorm == 0).flatten() + s.start).tolist()
                raise ValueError(
                    f"grad F is zero at the (converged) points {bad[:10]}: their tangent "
                    "projection is undefined. Drop them."
                )
            normal = grads / gnorm[:, None]
            stein = None
            if setup.mode == "smoothed":
                stein = stein_samples(
                    call,
                    setup.input_shape,
                    z,
                    coef,
                    setup.steps[s],
                    setup.n_samples,
                    setup.generator,
                    setup.orthogonal,
                )
            rows = []
            for Vj in _direction_blocks(directions, block):
                W = Vj.expand(z.shape[0], *Vj.shape)
                W = W - torch.einsum("mbd,md->mb", W, normal)[..., None] * normal[:, None]
                w2 = (W * W).sum(-1)
                HW = stein_products(*stein, W) if stein is not None else products(setup, call, s, W)
                q = (W * HW).sum(-1) / torch.where(w2 > 0, w2, torch.ones_like(w2))
                tiny = w2 <= (1e3 * torch.finfo(W.dtype).eps) ** 2 * (Vj * Vj).sum(-1)
                rows.append(torch.where(tiny, torch.full_like(q, math.nan), q))
                if check_zero and bool(W.any()) and not bool(HW.any()):
                    raise zero_hessian_error(setup)
                check_zero = False
            forms.append(torch.cat(rows, dim=1))
            norms.append(gnorm)
    return torch.cat(forms), torch.cat(norms)


def _direction_blocks(directions: list[tuple[Tensor, Tensor]], block: int):
    """The directions ``coefficients @ basis`` in order, ``(<= block, d)`` rows at a time."""
    for coef, basis in directions:
        for i in range(0, coef.shape[0], block):
            yield coef[i : i + block] @ basis


def _direction_coefficients(k: int, m: int, gen: torch.Generator | None, like: Tensor) -> Tensor:
    g = randn(k, m, generator=gen, device=like.device, dtype=like.dtype)
    return g / g.norm(dim=1, keepdim=True)


def _scatter(values: Tensor, mask: Tensor) -> Tensor:
    """Rows of ``values`` for the ``True`` entries of ``mask``; NaN rows elsewhere."""
    out = values.new_full((mask.shape[0], *values.shape[1:]), math.nan)
    out[mask.to(values.device)] = values
    return out


def average_curvature(
    model: nn.Module,
    points: BoundaryPoints,
    subspace: Subspace | Tensor,
    *,
    n_dirs: int = 32,
    mode: str = "exact",
    h: float | Tensor | None = None,
    beta: float | None = None,
    sigma: float | Tensor | None = None,
    n_samples: int | None = None,
    generator: torch.Generator | int | None = None,
    chunk: int | None = None,
) -> CurvatureResult:
    r"""Average normal curvature of the boundary along a subspace, per point (001, Sec. 5).

    .. math::

        K_S(x) = E_{v \sim \text{unit sphere of } S}
        \frac{(P v)^\top H_z (P v)}{\|P v\|^2}, \qquad P = I - n n^\top,

    at the boundary point ``z`` of each ``x`` (:math:`H_z` the Hessian of
    :math:`F = f_{\text{adv}} - f_{\text{label}}` in ``mode``, :math:`n` the unit normal of the
    differentiated network), estimated by Monte Carlo with ``n_dirs`` directions
    :math:`v_j = U^\top g_j / \|g_j\|`, :math:`g_j \sim N(0, I_m)`, the same for all points.
    ``raw`` is :math:`K_S`; ``normalized`` divides it by :math:`\|\nabla F(z)\|` (a normal
    curvature, positive when the boundary bends towards ``x``). For a direction set spanning
    a subspace orthogonal to every normal the expectation is :math:`\operatorname{tr}(U H_z
    U^\top) / m`; for a random subspace it is about :math:`\operatorname{tr}(P H_z P) / (d - 1)`.

    All products are batched over points and directions (``products`` of
    :mod:`geomrob.curvature.hvp`); points whose boundary point did not converge are not
    evaluated (NaN, with a warning).

    Args:
        model: classifier returning logits.
        points: :class:`BoundaryPoints` of ``model`` (typically of unseen inputs).
        subspace: a :class:`Subspace` or a ``(m, d)`` basis with orthonormal rows.
        n_dirs: Monte Carlo directions, ``>= 1``.
        mode: ``"exact"``, ``"finite_difference"``, ``"surrogate"`` or ``"smoothed"``.
        h: finite-difference step (float or ``(n,)``), default ``0.1 ||r_i||``.
        beta: Softplus sharpness, required with ``mode="surrogate"``.
        sigma: smoothed mode's scale (float or ``(n,)``), default ``0.1 ||r_i||``.
        n_samples: smoothed mode's antithetic samples per point (default 64).
        generator: source of the directions (then of the smoothed mode's samples).
        chunk: points per batched pass (``None``: about 2048 products per pass).

    Returns:
        :class:`CurvatureResult`.

    Raises:
        TypeError, ValueError: for bad arguments (the message names them), a basis of another
            ``d`` than the points, no converged point, or exact products that vanish on a
            piecewise-linear network.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3)).double()
        >>> x = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> from geomrob.curvature import boundary_points
        >>> pts = boundary_points(net, x)
        >>> k = average_curvature(net, pts, random_subspace(4, 2, generator=0), n_dirs=8)
        >>> k.raw.shape, k.per_direction.shape, bool(torch.isfinite(k.normalized).all())
        (torch.Size([5]), torch.Size([5, 8]), True)
    """
    U = _as_basis(subspace)
    n_dirs = check_int(n_dirs, "n_dirs", low=1)
    if chunk is not None:
        chunk = check_int(chunk, "chunk", low=1)
    gen = as_generator(generator, "cpu")
    used, converged, setup = _curvature_setup(
        model,
        points,
        mode=check_choice(mode, "mode", MODES),
        h=h,
        beta=beta,
        sigma=sigma,
        n_samples=n_samples,
        generator=gen,
    )
    if U.shape[1] != setup.d:
        raise ValueError(
            f"`subspace` lives in R^{U.shape[1]} but the points in R^{setup.d} "
            f"(input shape {setup.input_shape})."
        )
    U = U.to(device=setup.z.device, dtype=setup.z.dtype)
    coef = _direction_coefficients(n_dirs, U.shape[0], gen, U)
    forms, gnorm = _tangent_forms(setup, [(coef, U)], chunk)
    raw = forms.nanmean(dim=1)
    return CurvatureResult(
        raw=_scatter(raw, converged),
        normalized=_scatter(raw / gnorm, converged),
        per_direction=_scatter(forms, converged),
        coefficients=coef,
        grad_norm=_scatter(gnorm, converged),
        converged=converged,
        mode=setup.mode,
    )


@dataclass(frozen=True, eq=False)
class CurvatureProfile(Result):
    """:math:`K_S` for nested subspaces ``S_m`` (first ``m`` rows) and random baselines.

    Statistics are over the converged points (population std). ``k = len(ms)``.

    Attributes:
        ms: ``(k,)`` subspace dimensions.
        mean: ``(k,)`` mean over points of the normalised :math:`K_{S_m}` (1 / length).
        std: ``(k,)`` their standard deviation over points.
        raw_mean: ``(k,)`` the same for the raw :math:`K_{S_m}`.
        raw_std: ``(k,)``.
        per_point: ``(k, n)`` normalised :math:`K_{S_m}(x_i)` (NaN if not converged).
        raw_per_point: ``(k, n)``.
        random_mean: ``(k,)`` mean normalised curvature along random ``m``-dimensional
            subspaces (each point averaged over ``n_random`` subspaces x ``n_dirs``
            directions), or ``None`` without the baseline.
        random_std: ``(k,)`` or ``None``.
        random_raw_mean: ``(k,)`` or ``None``.
        random_raw_std: ``(k,)`` or ``None``.
        random_per_point: ``(k, n)`` normalised, or ``None``.
        converged: ``(n,)`` bool, the points evaluated.
        n_dirs: directions per subspace.
        n_random: random subspaces per ``m`` (0 without the baseline).
        mode: the Hessian-vector product mode.
    """

    ms: Tensor
    mean: Tensor
    std: Tensor
    raw_mean: Tensor
    raw_std: Tensor
    per_point: Tensor
    raw_per_point: Tensor
    random_mean: Tensor | None
    random_std: Tensor | None
    random_raw_mean: Tensor | None
    random_raw_std: Tensor | None
    random_per_point: Tensor | None
    converged: Tensor
    n_dirs: int
    n_random: int
    mode: str


def _stats(values: Tensor, converged: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and population std over the converged points (columns) of ``(k, n)``."""
    sel = values[:, converged.to(values.device)]
    return sel.mean(dim=1), sel.std(dim=1, correction=0)


def curvature_profile(
    model: nn.Module,
    points: BoundaryPoints,
    subspace: Subspace | Tensor,
    ms: Sequence[int],
    *,
    n_dirs: int = 32,
    mode: str = "exact",
    h: float | Tensor | None = None,
    beta: float | None = None,
    sigma: float | Tensor | None = None,
    n_samples: int | None = None,
    generator: torch.Generator | int | None = None,
    chunk: int | None = None,
    random_baseline: bool = True,
    n_random: int = 4,
) -> CurvatureProfile:
    r""":math:`K_{S_m}` of the nested subspaces :math:`S_m` = span of the first ``m`` rows.

    001, Fig. 7a: the average curvature along the top-``m`` curved directions (estimated on
    training points, evaluated on unseen ones) against random ``m``-dimensional subspaces. For
    each ``m`` in ``ms``, ``n_dirs`` directions :math:`U_m^\top g / \|g\|` (the same for every
    point) give :math:`K_{S_m}` as in :func:`average_curvature`; the baseline draws
    ``n_random`` Haar-random ``m``-dimensional subspaces (:func:`random_subspace`) with
    ``n_dirs`` directions each. All directions of all ``m`` go through one batched pass per
    chunk of points (in smoothed mode, one Stein estimate per point for all of them).

    Args:
        model: classifier returning logits.
        points: :class:`BoundaryPoints` of ``model``.
        subspace: a :class:`Subspace` or ``(M, d)`` orthonormal rows, most curved first.
        ms: subspace dimensions, each in ``[1, M]``.
        n_dirs: directions per subspace, ``>= 1``.
        mode: Hessian-vector product mode (see :func:`average_curvature`).
        h: finite-difference step (finite_difference mode).
        beta: Softplus sharpness (surrogate mode).
        sigma: smoothing scale (smoothed mode).
        n_samples: antithetic samples per point (smoothed mode).
        generator: source of all directions and random subspaces (and smoothed samples).
        chunk: points per batched pass.
        random_baseline: also evaluate random subspaces.
        n_random: random subspaces per ``m``, ``>= 1`` (ignored without the baseline).

    Returns:
        :class:`CurvatureProfile`.

    Raises:
        TypeError, ValueError: for bad arguments, as :func:`average_curvature`, and for an
            empty ``ms`` or one outside ``[1, M]``.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3)).double()
        >>> x = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> from geomrob.curvature import boundary_points
        >>> pts = boundary_points(net, x)
        >>> s = curved_subspace(net, None, 3, points=pts, generator=0)
        >>> prof = curvature_profile(net, pts, s, [1, 3], n_dirs=8, n_random=2, generator=0)
        >>> prof.mean.shape, prof.random_mean.shape, prof.per_point.shape
        (torch.Size([2]), torch.Size([2]), torch.Size([2, 6]))
    """
    U = _as_basis(subspace)
    if isinstance(ms, (Tensor, np.ndarray)) and ms.ndim == 1:
        ms = ms.tolist()
    if not isinstance(ms, Sequence) or isinstance(ms, str) or len(ms) == 0:
        raise ValueError(f"`ms` must be a non-empty sequence of ints; got {ms!r}.")
    ms = [check_int(k, "ms[i]", low=1, high=U.shape[0]) for k in ms]
    n_dirs = check_int(n_dirs, "n_dirs", low=1)
    if not isinstance(random_baseline, bool):
        raise TypeError(f"`random_baseline` must be a bool; got {type(random_baseline).__name__}.")
    n_random = check_int(n_random, "n_random", low=1) if random_baseline else 0
    if chunk is not None:
        chunk = check_int(chunk, "chunk", low=1)
    gen = as_generator(generator, "cpu")
    used, converged, setup = _curvature_setup(
        model,
        points,
        mode=check_choice(mode, "mode", MODES),
        h=h,
        beta=beta,
        sigma=sigma,
        n_samples=n_samples,
        generator=gen,
    )
    d = setup.d
    if U.shape[1] != d:
        raise ValueError(
            f"`subspace` lives in R^{U.shape[1]} but the points in R^{d} "
            f"(input shape {setup.input_shape})."
        )
    U = U.to(device=setup.z.device, dtype=setup.z.dtype)
    directions = []  # per m: n_dirs directions in S_m, then n_random * n_dirs random ones
    for k in ms:
        directions.append((_direction_coefficients(n_dirs, k, gen, U), U[:k]))
        for _ in range(n_random):
            R = random_subspace(d, k, generator=gen, dtype=U.dtype, device=U.device).basis
            directions.append((_direction_coefficients(n_dirs, k, gen, U), R))
    forms, gnorm = _tangent_forms(setup, directions, chunk)
    per_m = forms.view(forms.shape[0], len(ms), 1 + n_random, n_dirs)
    raw = per_m[:, :, 0].nanmean(dim=-1).T  # (k, n_used)
    raw_pp = _scatter(raw.T, converged).T
    norm_pp = _scatter((raw / gnorm).T, converged).T
    mean, std = _stats(norm_pp, converged)
    raw_mean, raw_std = _stats(raw_pp, converged)
    rnd = dict.fromkeys(
        ("random_mean", "random_std", "random_raw_mean", "random_raw_std", "random_per_point")
    )
    if n_random:
        rraw = per_m[:, :, 1:].flatten(2).nanmean(dim=-1).T
        rraw_pp = _scatter(rraw.T, converged).T
        rnorm_pp = _scatter((rraw / gnorm).T, converged).T
        rnd["random_mean"], rnd["random_std"] = _stats(rnorm_pp, converged)
        rnd["random_raw_mean"], rnd["random_raw_std"] = _stats(rraw_pp, converged)
        rnd["random_per_point"] = rnorm_pp
    return CurvatureProfile(
        ms=torch.tensor(ms),
        mean=mean,
        std=std,
        raw_mean=raw_mean,
        raw_std=raw_std,
        per_point=norm_pp,
        raw_per_point=raw_pp,
        converged=converged,
        n_dirs=n_dirs,
        n_random=n_random,
        mode=setup.mode,
        **rnd,
    )
