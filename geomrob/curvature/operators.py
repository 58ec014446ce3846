r"""Torch-native linear operators and the averaged boundary Hessian (DESIGN.md section 3).

One small interface (STYLE.md section 3, after curvlinops 3.0): an operator has ``shape (d, d)``,
``dtype``, ``device`` and ``symmetric``; ``op.matvec(v)`` maps ``(d,)`` to ``(d,)`` and a block
``(b, d)`` to ``(b, d)`` -- *rows are vectors*, batch-first like every tensor in geomrob -- and
``op @ v`` is ``op.matvec(v)``. SciPy's column convention lives only in :meth:`to_scipy`.
``A + B``, ``A - B``, ``c * A``, ``A / c`` and ``A @ B`` (for instance ``P @ A @ P`` with a
:class:`ProjectionOperator`) build lazy operators; :meth:`~LinearOperator.dense` multiplies the
identity (tests and toy problems only, refused above :data:`DENSE_LIMIT`).
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from .._model import eval_mode, functional
from .._validation import check_int, check_tensor
from ..models.surrogate import is_piecewise_linear
from .boundary import BoundaryPoints
from .hvp import (
    _setup,
    margin_gradients,
    products,
    stein_samples,
    zero_hessian_error,
)

__all__ = [
    "DENSE_LIMIT",
    "BoundaryHessian",
    "DenseOperator",
    "FunctionOperator",
    "LinearOperator",
    "ProductOperator",
    "ProjectionOperator",
    "ScaledOperator",
    "SumOperator",
]

#: Largest ``d`` for which :meth:`LinearOperator.dense` materialises a ``(d, d)`` matrix.
DENSE_LIMIT = 4096


class LinearOperator:
    """A square linear operator on ``R^d``, applied to rows.

    A subclass implements ``_matvec(v)`` for one vector ``(d,)``; the block product
    ``_matmat(V)`` defaults to ``torch.vmap`` of it over the rows (override it when a native block
    path is cheaper). :meth:`matvec` checks shape, dtype and device first.

    Attributes:
        shape: ``(d, d)``.
        dtype: the dtype of the vectors it takes and returns.
        device: where it computes.
        symmetric: whether ``u . (A v) = v . (A u)`` (eigen-solvers require it).
    """

    def __init__(
        self, d: int, *, dtype: torch.dtype, device: torch.device | str, symmetric: bool
    ) -> None:
        d = check_int(d, "d", low=1)
        self.shape: tuple[int, int] = (d, d)
        self.dtype: torch.dtype = dtype
        self.device: torch.device = torch.device(device)
        self.symmetric: bool = bool(symmetric)

    # -- products -----------------------------------------------------------------------------

    def _matvec(self, v: Tensor) -> Tensor:
        raise NotImplementedError

    def _matmat(self, V: Tensor) -> Tensor:
        return torch.vmap(self._matvec)(V)

    def matvec(self, v: Tensor) -> Tensor:
        """``A v`` for ``v`` of shape ``(d,)``, or ``A v_r`` for each row of a block ``(b, d)``.

        Raises:
            TypeError: if ``v`` is not a tensor or has another dtype than the operator.
            ValueError: for a wrong shape or device.
        """
        check_tensor(v, "v")
        d = self.shape[1]
        if v.ndim not in (1, 2) or v.shape[-1] != d:
            raise ValueError(
                f"`v` must have shape ({d},) or (b, {d}) (rows are vectors); got {tuple(v.shape)}."
            )
        if v.dtype != self.dtype:
            raise TypeError(
                f"`v` has dtype {v.dtype} but the operator is {self.dtype}; convert with "
                f"`v.to({self.dtype})`."
            )
        if v.device != self.device:
            raise ValueError(f"`v` is on {v.device} but the operator is on {self.device}.")
        out = self._matvec(v) if v.ndim == 1 else self._matmat(v)
        assert out.shape == v.shape, (out.shape, v.shape)
        return out

    def __matmul__(self, other: object) -> LinearOperator | Tensor:
        if isinstance(other, LinearOperator):
            return ProductOperator([self, other])
        if isinstance(other, Tensor):
            return self.matvec(other)
        return NotImplemented

    # -- lazy algebra ---------------------------------------------------------------------------

    def __add__(self, other: object) -> LinearOperator:
        if isinstance(other, LinearOperator):
            return SumOperator([self, other])
        return NotImplemented

    def __sub__(self, other: object) -> LinearOperator:
        if isinstance(other, LinearOperator):
            return SumOperator([self, ScaledOperator(-1.0, other)])
        return NotImplemented

    def __neg__(self) -> LinearOperator:
        return ScaledOperator(-1.0, self)

    def __mul__(self, c: object) -> LinearOperator:
        if isinstance(c, numbers.Real) and not isinstance(c, bool):
            return ScaledOperator(float(c), self)
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, c: object) -> LinearOperator:
        if isinstance(c, numbers.Real) and not isinstance(c, bool):
            return ScaledOperator(1.0 / float(c), self)
        return NotImplemented

    # -- conversions ----------------------------------------------------------------------------

    def dense(self, *, max_dim: int = DENSE_LIMIT, block: int = 64) -> Tensor:
        """The ``(d, d)`` matrix ``M`` with ``M v = A v`` (column ``j`` is ``A e_j``).

        ``d`` products with the identity, ``block`` rows at a time.

        Raises:
            ValueError: if ``d > max_dim``.
        """
        d = self.shape[0]
        if d > max_dim:
            raise ValueError(
                f"dense() of a {d} x {d} operator exceeds max_dim={max_dim}: it is meant for "
                "tests and toy problems. Use matvec / lanczos, or raise `max_dim` knowingly."
            )
        block = check_int(block, "block", low=1)
        eye = torch.eye(d, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            rows = torch.cat([self.matvec(eye[i : i + block]) for i in range(0, d, block)])
        return rows.T.contiguous()

    def symmetrized(self, *, max_dim: int = DENSE_LIMIT) -> DenseOperator:
        """The symmetric part ``(A + A^T) / 2`` as a :class:`DenseOperator` (``d`` products).

        The route to eigenvectors of a non-symmetric operator, such as the finite-difference
        :class:`BoundaryHessian`, whose transpose products are not available.
        """
        M = self.dense(max_dim=max_dim)
        return DenseOperator((M + M.T) / 2, symmetric=True)

    def to_scipy(self):  # -> scipy.sparse.linalg.LinearOperator
        """A ``scipy.sparse.linalg.LinearOperator`` (columns are vectors) computing with this one.

        Inputs become tensors on the operator's device and dtype, are multiplied under
        ``torch.no_grad()`` and come back as ``.detach().cpu().numpy()``; ``matmat`` uses the
        block path. Symmetric operators also give ``rmatvec``.
        """
        from scipy.sparse.linalg import LinearOperator as ScipyLinearOperator

        np_dtype = torch.empty((), dtype=self.dtype).numpy().dtype

        def _tensor(x: np.ndarray) -> Tensor:
            return torch.as_tensor(np.ascontiguousarray(x), dtype=self.dtype, device=self.device)

        def matvec(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                out = self.matvec(_tensor(np.asarray(x).reshape(-1)))
            return out.detach().cpu().numpy()

        def matmat(X: np.ndarray) -> np.ndarray:
            X = np.asarray(X)
            with torch.no_grad():
                out = self.matvec(_tensor(X.T))
            return out.detach().cpu().numpy().T

        return ScipyLinearOperator(
            self.shape,
            matvec=matvec,
            matmat=matmat,
            rmatvec=matvec if self.symmetric else None,
            dtype=np_dtype,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype}, "
            f"device={self.device}, symmetric={self.symmetric})"
        )


def _check_compatible(ops: Sequence[LinearOperator]) -> LinearOperator:
    first = ops[0]
    for op in ops:
        if not isinstance(op, LinearOperator):
            raise TypeError(f"Expected LinearOperators; got {type(op).__name__}.")
        if op.shape != first.shape:
            raise ValueError(f"Operator shapes differ: {first.shape} and {op.shape}.")
        if op.dtype != first.dtype:
            raise TypeError(f"Operator dtypes differ: {first.dtype} and {op.dtype}.")
        if op.device != first.device:
            raise ValueError(f"Operator devices differ: {first.device} and {op.device}.")
    return first


class DenseOperator(LinearOperator):
    """A stored ``(d, d)`` matrix ``M`` (``A v = M v``).

    Args:
        matrix: ``(d, d)`` floating tensor.
        symmetric: ``None``: ``M == M^T`` exactly. ``True`` checks ``M ~ M^T`` to
            ``100 eps max|M|``; ``False`` declares it non-symmetric.

    Raises:
        ValueError: if ``matrix`` is not square or ``symmetric=True`` for a non-symmetric one.

    Example:
        >>> A = DenseOperator(torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64)))
        >>> A.symmetric, (2 * A @ A).matvec(torch.ones(2, dtype=torch.float64)).tolist()
        (True, [18.0, 2.0])
    """

    def __init__(self, matrix: Tensor, *, symmetric: bool | None = None) -> None:
        check_tensor(matrix, "matrix")
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"`matrix` must be square (d, d); got {tuple(matrix.shape)}.")
        if not matrix.is_floating_point():
            raise TypeError(f"`matrix` must be floating; got {matrix.dtype}.")
        if symmetric is None:
            symmetric = bool(torch.equal(matrix, matrix.T))
        elif symmetric:
            tol = 100 * torch.finfo(matrix.dtype).eps * float(matrix.abs().max().clamp_min(1e-300))
            gap = float((matrix - matrix.T).abs().max())
            if gap > tol:
                raise ValueError(
                    f"`matrix` is not symmetric (max |M - M^T| = {gap:.3g} > {tol:.3g}); pass "
                    "symmetric=False or symmetrise it, (M + M.T) / 2."
                )
        super().__init__(
            matrix.shape[0], dtype=matrix.dtype, device=matrix.device, symmetric=symmetric
        )
        self.matrix = matrix

    def _matvec(self, v: Tensor) -> Tensor:
        return self.matrix @ v

    def _matmat(self, V: Tensor) -> Tensor:
        return V @ self.matrix.T

    def dense(self, *, max_dim: int = DENSE_LIMIT, block: int = 64) -> Tensor:  # noqa: D102
        return self.matrix.clone()


class FunctionOperator(LinearOperator):
    """An operator from a function ``v (d,) -> A v (d,)`` (and optionally a block version).

    Args:
        matvec: the single-vector product, pure enough for ``torch.vmap`` unless ``matmat`` is
            given.
        n: the dimension ``d``.
        like: a tensor whose dtype and device the operator takes.
        symmetric: whether the function is symmetric (declared, not checked).
        matmat: optional block product ``(b, d) -> (b, d)``, rows are vectors.

    Example:
        >>> x0 = torch.zeros(3, dtype=torch.float64)
        >>> op = FunctionOperator(lambda v: 2 * v, 3, like=x0, symmetric=True)
        >>> op.dense().diagonal().tolist()
        [2.0, 2.0, 2.0]
    """

    def __init__(
        self,
        matvec: Callable[[Tensor], Tensor],
        n: int,
        *,
        like: Tensor,
        symmetric: bool = False,
        matmat: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if not callable(matvec):
            raise TypeError(f"`matvec` must be callable; got {type(matvec).__name__}.")
        check_tensor(like, "like")
        super().__init__(n, dtype=like.dtype, device=like.device, symmetric=symmetric)
        self._fn = matvec
        self._block_fn = matmat

    def _matvec(self, v: Tensor) -> Tensor:
        return self._fn(v)

    def _matmat(self, V: Tensor) -> Tensor:
        if self._block_fn is not None:
            return self._block_fn(V)
        return torch.vmap(self._fn)(V)


class ProjectionOperator(LinearOperator):
    """Orthogonal projection on the span of orthonormal rows ``U (m, d)``, or its complement.

    ``P v = U^T U v`` (``complement=False``) or ``v - U^T U v`` (``complement=True``), e.g. the
    tangent projection ``I - n n^T`` of a unit normal ``n`` with ``U = n[None]``.

    Raises:
        ValueError: if the rows of ``basis`` are not orthonormal (to ``1e3 eps``) or ``m > d``.
    """

    def __init__(self, basis: Tensor, *, complement: bool = False) -> None:
        check_tensor(basis, "basis")
        if basis.ndim != 2 or basis.shape[0] > basis.shape[1] or not basis.is_floating_point():
            raise ValueError(
                f"`basis` must be floating (m, d) with m <= d; got {basis.dtype} "
                f"{tuple(basis.shape)}."
            )
        gram = basis @ basis.T
        eye = torch.eye(basis.shape[0], dtype=basis.dtype, device=basis.device)
        err = float((gram - eye).abs().max()) if basis.shape[0] else 0.0
        if err > 1e3 * torch.finfo(basis.dtype).eps:
            raise ValueError(
                f"The rows of `basis` must be orthonormal; max |U U^T - I| = {err:.3g}. "
                "Orthonormalise them first (torch.linalg.qr(basis.T).Q.T)."
            )
        super().__init__(basis.shape[1], dtype=basis.dtype, device=basis.device, symmetric=True)
        self.basis = basis
        self.complement = bool(complement)

    def _matmat(self, V: Tensor) -> Tensor:
        inside = (V @ self.basis.T) @ self.basis
        return V - inside if self.complement else inside

    def _matvec(self, v: Tensor) -> Tensor:
        return self._matmat(v[None])[0]


class SumOperator(LinearOperator):
    """``sum_t A_t`` (lazy)."""

    def __init__(self, terms: Sequence[LinearOperator]) -> None:
        first = _check_compatible(list(terms))
        flat: list[LinearOperator] = []
        for t in terms:
            flat.extend(t.terms if isinstance(t, SumOperator) else [t])
        super().__init__(
            first.shape[0],
            dtype=first.dtype,
            device=first.device,
            symmetric=all(t.symmetric for t in flat),
        )
        self.terms = flat

    def _matvec(self, v: Tensor) -> Tensor:
        return sum(t.matvec(v) for t in self.terms)

    _matmat = _matvec


class ScaledOperator(LinearOperator):
    """``c A`` (lazy), ``c`` a real number."""

    def __init__(self, c: float, op: LinearOperator) -> None:
        _check_compatible([op])
        super().__init__(op.shape[0], dtype=op.dtype, device=op.device, symmetric=op.symmetric)
        self.c, self.op = float(c), op

    def _matvec(self, v: Tensor) -> Tensor:
        return self.c * self.op.matvec(v)

    _matmat = _matvec


class ProductOperator(LinearOperator):
    """``A_1 A_2 ... A_k`` (lazy; ``A_k`` applied first).

    Symmetric when every factor is and the sequence of factors is a palindrome (by identity),
    as in ``P @ A @ P``.
    """

    def __init__(self, factors: Sequence[LinearOperator]) -> None:
        first = _check_compatible(list(factors))
        flat: list[LinearOperator] = []
        for f in factors:
            flat.extend(f.factors if isinstance(f, ProductOperator) else [f])
        palindrome = all(a is b for a, b in zip(flat, reversed(flat), strict=True))
        super().__init__(
            first.shape[0],
            dtype=first.dtype,
            device=first.device,
            symmetric=palindrome and all(f.symmetric for f in flat),
        )
        self.factors = flat

    def _matvec(self, v: Tensor) -> Tensor:
        for f in reversed(self.factors):
            v = f.matvec(v)
        return v

    _matmat = _matvec


# ---------------------------------------------------------------------------------------------


def _use_distributed(flag: bool | None) -> bool:
    ready = dist.is_available() and dist.is_initialized()
    if flag is None:
        return ready
    if flag and not ready:
        raise ValueError(
            "`distributed=True` needs an initialised torch.distributed process group "
            "(torch.distributed.init_process_group); none is."
        )
    return bool(flag)


class BoundaryHessian(LinearOperator):
    r"""The averaged boundary Hessian :math:`\bar H v = \frac1n \sum_i A_i v` (DESIGN.md 3).

    :math:`A_i = H_i` (default, the choice of 001) or, with ``project=True, normalize=True``,
    the shape operator :math:`A_i = P_i H_i P_i / \|\nabla F_i(z_i)\|`, :math:`P_i = I - n_i
    n_i^T`; each flag also works alone. :math:`H_i` is the Hessian of
    :math:`F_i = f_{\text{adv}_i} - f_{\text{label}_i}` at :math:`z_i` in the chosen ``mode``
    (see :mod:`geomrob.curvature.hvp`). The normal :math:`n_i` and :math:`\|\nabla F_i\|` are
    those of the differentiated network at :math:`z_i` (the surrogate in surrogate mode, the
    model otherwise), so that :math:`\kappa(u) = u^\top \bar H u` is the normal curvature, positive
    when the boundary bends towards :math:`x`.

    Per mode:

    - ``"exact"``, ``"surrogate"``: ``symmetric=True``; each product is a batched
      double backward pass over the points, ``chunk`` points at a time. On a
      piecewise-linear model whose exact products vanish the constructor raises ``ValueError``
      naming the alternatives (it probes one product when no smooth module is found).
    - ``"smoothed"``: ``symmetric=True``, exactly: the constructor draws the ``S`` antithetic
      directions per point from ``generator`` and computes the ``2 n S`` gradients once; with
      the projection and scale folded in, :math:`\bar H = \frac{1}{nS}\sum_{i,s} d_{is}
      e_{is}^\top` is kept as a dense ``(d, d)`` matrix when ``d <= 2 n S`` (cheaper) or as the
      two ``(n S, d)`` factors otherwise, and a product is :math:`\frac12 (\bar H +
      \bar H^\top) v` without any network pass. Memory: ``min(d^2, 2 n S d)`` numbers (MNIST,
      ``d = 784``: 4.9 MB in float64 whatever ``n S``); for ``d`` of 1e5 and more keep ``n S``
      small (``2 n S d`` numbers) or use exact / surrogate products.
    - ``"finite_difference"``: ``symmetric=False``. A product is the average of the directional
      differences :math:`\|w\| (\nabla F_i(z_i + h_i u) - \nabla F_i(z_i - h_i u)) / (2 h_i)`
      (``w = P_i v`` when projecting, ``u = w / \|w\|``), which is linear and symmetric only up
      to :math:`O(h^2)` for a smooth model (tested: the asymmetry of :meth:`dense` quarters when
      ``h`` halves) and neither for a ReLU network: the transpose of a directional difference
      of the gradient is not available from products (its vector-Jacobian product is the exact
      Hessian, zero for ReLU), so no cheap ``(A + A^T) v`` exists. Hence
      :func:`~geomrob.curvature.lanczos.lanczos` refuses it, and the library takes one of two
      routes: :meth:`symmetrized` materialises the ``d`` columns :math:`A e_j` (``2 n d``
      gradients, ``d^2`` memory, ``d <= DENSE_LIMIT``) and returns the exactly symmetric
      :math:`(A + A^T)/2`, the reference "dense symmetric part"; ``mode="smoothed"`` is the
      scalable, exactly symmetric route (the Hessian of the Gaussian-smoothed margin, Stein's
      identity). Quadratic forms :math:`u^\top A u` (curvature along ``u``) are well defined in
      any mode.

    With ``torch.distributed`` initialised (or ``distributed=True``), each rank holds a shard of
    the points; a product all-reduces (SUM) the per-rank partial sums and divides by the global
    number of points, so every rank gets the same result (and the same Lanczos run). A rank
    may then hold no point.

    Args:
        model: classifier returning logits (eval mode during every product, then restored).
        points: :class:`BoundaryPoints` of ``model``; points marked not converged are kept
            (with a warning): select them out with ``points.select(points.converged)``.
        mode: ``"exact"``, ``"finite_difference"``, ``"surrogate"`` or ``"smoothed"``.
        h: finite-difference step (float or ``(n,)``); default ``0.1 * ||r_i||``.
        project: use ``P_i H_i P_i``.
        normalize: divide by ``||grad F_i(z_i)||``.
        chunk: points per batched pass (``None``: all); bounds memory, not the result.
        beta: Softplus sharpness for ``mode="surrogate"`` (required there).
        sigma: smoothing scale for ``mode="smoothed"`` (float or ``(n,)``); default
            ``0.1 * ||r_i||``.
        n_samples: antithetic pairs per point, smoothed mode (default 64).
        generator: source of the smoothed mode's directions (an int seeds a new one).
        orthogonal: smoothed mode: orthogonal directions within blocks of ``d`` (default) or
            i.i.d. Gaussian ones; both exactly ``N(0, I)`` per direction (see
            :func:`~geomrob.curvature.hvp.stein_directions`).
        distributed: ``None``: all-reduce when a process group is initialised.

    Raises:
        TypeError: for a wrong ``model`` / ``points`` type.
        ValueError: for a bad option, a zero gradient with ``project``/``normalize``, no point
            at all, or exact products that vanish on a piecewise-linear model.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3)).double()
        >>> from geomrob.curvature import boundary_points
        >>> x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> pts = boundary_points(net, x)
        >>> op = BoundaryHessian(net, pts, project=True, normalize=True)
        >>> op.shape, op.symmetric
        ((3, 3), True)
        >>> one = BoundaryHessian(net, pts.select(torch.tensor([0])), project=True)
        >>> n0 = pts.normals[0]
        >>> bool(torch.allclose(one @ n0, torch.zeros_like(n0)))  # P n = 0: tangent only
        True
    """

    def __init__(
        self,
        model: nn.Module,
        points: BoundaryPoints,
        *,
        mode: str = "exact",
        h: float | Tensor | None = None,
        project: bool = False,
        normalize: bool = False,
        chunk: int | None = None,
        beta: float | None = None,
        sigma: float | Tensor | None = None,
        n_samples: int | None = None,
        generator: torch.Generator | int | None = None,
        orthogonal: bool = True,
        distributed: bool | None = None,
    ) -> None:
        self.distributed = _use_distributed(distributed)
        setup = _setup(
            model,
            points,
            mode=mode,
            h=h,
            beta=beta,
            sigma=sigma,
            n_samples=n_samples,
            generator=generator,
            orthogonal=orthogonal,
            allow_empty=self.distributed,
        )
        for name, flag in (("project", project), ("normalize", normalize)):
            if not isinstance(flag, bool):
                raise TypeError(f"`{name}` must be a bool; got {type(flag).__name__}.")
        self.chunk = None if chunk is None else check_int(chunk, "chunk", low=1)
        self.mode, self.project, self.normalize = setup.mode, project, normalize
        self.model, self.points, self._setup = setup.model, points, setup
        z = setup.z
        super().__init__(
            setup.d, dtype=z.dtype, device=z.device, symmetric=setup.mode != "finite_difference"
        )
        n = setup.n
        converged = points.converged
        if n and not bool(converged.all()):
            warnings.warn(
                f"{int((~converged).sum())} of {n} points are marked not converged (not on the "
                "boundary); they are used as given. Drop them with "
                "`points.select(points.converged)`.",
                stacklevel=2,
            )
        self._call = functional(setup.net)
        with eval_mode(setup.net), torch.no_grad():
            grads = (
                torch.cat(
                    [
                        margin_gradients(self._call, setup.input_shape, z[s], setup.coef[s])
                        for s in self._slices()
                    ]
                )
                if n
                else z.new_zeros(0, setup.d)
            )
        gnorm = grads.norm(dim=1)
        if (project or normalize) and bool((gnorm == 0).any()):
            bad = torch.nonzero(gnorm == 0).flatten().tolist()
            raise ValueError(
                f"grad F is zero at points {bad[:10]}: their normal (project=True) or "
                "normalisation (normalize=True) is undefined. Drop them."
            )
        self._normals = grads / gnorm[:, None] if project else None
        self._scale = 1 / gnorm if normalize else torch.ones_like(gnorm)
        #: points on this rank, and on all ranks (the divisor of the average)
        self.n_local = n
        self.n_points = int(
            self._all_reduce(torch.tensor(float(n), dtype=torch.float64, device=z.device))
        )
        if self.n_points == 0:
            raise ValueError("`points` is empty (on every rank); give at least one point.")
        self._stein_dense: Tensor | None = None
        self._stein_factors: tuple[Tensor, Tensor] | None = None
        if setup.mode == "smoothed":
            self._precompute_stein()
        elif setup.mode in ("exact", "surrogate") and is_piecewise_linear(setup.net):
            self._probe_zero_hessian()

    # -- internals ------------------------------------------------------------------------------

    def _slices(self) -> list[slice]:
        n = self._setup.n
        size = n if self.chunk is None else self.chunk
        return [slice(i, i + size) for i in range(0, n, max(size, 1))]

    def _all_reduce(self, t: Tensor) -> Tensor:
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def _project(self, W: Tensor, s: slice) -> Tensor:
        """``P_i w`` for each point of ``s`` and each row of ``W (m, b, d)``."""
        nrm = self._normals[s]
        return W - torch.einsum("mbd,md->mb", W, nrm)[..., None] * nrm[:, None]

    def _probe_zero_hessian(self) -> None:
        setup = self._setup
        g = torch.Generator().manual_seed(0)
        probe = torch.randn(setup.d, generator=g, dtype=setup.z.dtype).to(setup.z.device)
        nonzero = 0.0
        with eval_mode(setup.net), torch.no_grad():
            for s in self._slices():
                m = setup.z[s].shape[0]
                out = products(setup, self._call, s, probe.expand(m, 1, setup.d))
                if bool(out.any()):
                    nonzero = 1.0
                    break
        flag = self._all_reduce(torch.tensor(nonzero, device=setup.z.device))
        if float(flag) == 0.0:
            raise zero_hessian_error(setup)

    def _precompute_stein(self) -> None:
        setup = self._setup
        d, S = setup.d, setup.n_samples
        dense = d <= 2 * setup.n * S
        K = setup.z.new_zeros(d, d) if dense else None
        Ds, Es = [], []
        with eval_mode(setup.net), torch.no_grad():
            for s in self._slices():
                D, E = stein_samples(
                    self._call,
                    setup.input_shape,
                    setup.z[s],
                    setup.coef[s],
                    setup.steps[s],
                    S,
                    setup.generator,
                    setup.orthogonal,
                )
                if self.project:
                    D, E = self._project(D, s), self._project(E, s)
                D = D * self._scale[s, None, None]
                D, E = D.reshape(-1, d), E.reshape(-1, d)
                if dense:
                    K += D.T @ E
                else:
                    Ds.append(D)
                    Es.append(E)
        if dense:
            self._stein_dense = (K + K.T) / (2 * S)
        elif Ds:
            self._stein_factors = (torch.cat(Ds), torch.cat(Es))
        else:  # an empty shard
            self._stein_factors = (setup.z.new_zeros(0, d), setup.z.new_zeros(0, d))

    def _local_sum(self, V: Tensor) -> Tensor:
        """``sum_i A_i v`` over this rank's points, for each row of ``V (b, d)``."""
        setup = self._setup
        if setup.mode == "smoothed":
            if self._stein_dense is not None:
                return V @ self._stein_dense
            D, E = self._stein_factors
            return ((V @ E.T) @ D + (V @ D.T) @ E) / (2 * setup.n_samples)
        out = torch.zeros_like(V)
        b, d = V.shape
        with eval_mode(setup.net):
            for s in self._slices():
                m = setup.z[s].shape[0]
                W = V.expand(m, b, d)
                if self.project:
                    W = self._project(W, s)
                P = products(setup, self._call, s, W)
                if self.project:
                    P = self._project(P, s)
                out += torch.einsum("mbd,m->bd", P, self._scale[s])
        return out

    def _matmat(self, V: Tensor) -> Tensor:
        with torch.no_grad():
            total = self._all_reduce(self._local_sum(V.detach()))
        return total / self.n_points

    def _matvec(self, v: Tensor) -> Tensor:
        return self._matmat(v[None])[0]
