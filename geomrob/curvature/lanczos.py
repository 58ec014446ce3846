r"""Extreme eigenpairs of a symmetric operator: thick-restart Lanczos in torch (DESIGN.md 3).

The Krylov basis and the projected matrix are float64 on the operator's device (``T`` on the
CPU); every new vector is reorthogonalised against the whole basis, twice (classical
Gram-Schmidt), because subspaces need accurate vectors (curvlinops' ``fast_lanczos`` skips it;
it only needs densities). The basis grows to ``ncv`` vectors (default
``min(d, max(2k + 1, 20))``, as ARPACK), then restarts thickly (Wu and Simon, 2000): the
``p = k + (ncv - k) // 2`` most wanted Ritz vectors are kept with the last residual direction,
and the iteration goes on until the ``k`` wanted Ritz pairs satisfy
:math:`\|A y - \theta y\| \le \text{tol} \cdot \max|\theta|` (residual estimates
:math:`|\beta_m s_{m,i}|` during the run, true residuals reported at the end) or ``max_iter``
products (then a warning, and the result says which pairs converged).

Memory: the basis is ``(ncv + 1) x d`` float64, e.g. 401 x 1e5 x 8 B = 320 MB for ``k = 200``
with the default ``ncv``, plus the operator's own needs. Breakdown (an invariant subspace, as for
an operator with few distinct eigenvalues) restarts the recurrence from a random vector
orthogonal to the basis.

Repeated eigenvalues: a single-vector Krylov space holds one direction of each eigenspace
(rounding brings in the others only slowly), so copies of a repeated eigenvalue can be missed:
with ``3.0`` four times at the top and ``k = 4`` the plain iteration returns ``[3, 3, 3, 1]``.
Hence the multiplicity check (``check_multiplicity=True``, the default), a deflation check by
locking: once the ``k`` wanted pairs have converged, their Ritz vectors ``Y`` are locked (kept
unchanged as the first basis vectors, out of the Rayleigh-Ritz, so their residuals stay below
the tolerance) and the recurrence restarts from a fresh random vector orthogonal to them, i.e.
runs on the deflated operator :math:`(I - Y Y^T) A (I - Y Y^T)`, whose wanted end is a missed
eigenvalue if there is one. If within ``_CHECK_STEPS = 10`` products a Ritz value of it beats the
``k``-th wanted one by more than :math:`\text{tol} \cdot \max|\theta|`, it joins the wanted set,
the thick restart goes on (locked vectors stay in front) and the check is repeated once that set
has converged; otherwise the run stops and returns ``Y`` as it was. Cost when nothing is missed:
``min(10, d - k)`` products, the result otherwise unchanged (no check when ``max_iter`` ends
the run first). A missed eigenvalue well separated from the rest of the deflated spectrum shows
within a few steps; on synthetic spectra (a double or quadruple eigenvalue above a bulk spread
over ``[-1, 1]``, ``d`` = 50 or 300) 10 steps found every missed copy for a gap of 0.2 and most
for 0.1, so the check is a cheap safeguard, not a proof (a block method would be the thorough
one); with ``ncv`` close to ``k + 2`` it is restarted within its 10 steps and weaker. Ties are
not misses: for ``k`` below the multiplicity any ``k`` orthonormal vectors of the eigenspace
are a correct answer.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._random import as_generator, randn
from .._validation import check_choice, check_int, check_positive
from ..results import Result
from .operators import LinearOperator

__all__ = ["BACKENDS", "WHICH", "EigResult", "lanczos"]

WHICH = ("LA", "SA", "LM")
BACKENDS = ("torch", "scipy")
#: Length of the multiplicity check's run on the deflated operator (products).
_CHECK_STEPS = 10


@dataclass(frozen=True, eq=False)
class EigResult(Result):
    """``k`` eigenpairs of a symmetric operator, ordered by ``which``.

    Attributes:
        values: ``(k,)`` Ritz values: descending for ``"LA"``, ascending for ``"SA"``,
            by descending magnitude for ``"LM"``.
        vectors: ``(k, d)`` orthonormal rows, in the operator's dtype and device.
        residuals: ``(k,)`` true residual norms ``||A v - lambda v||``.
        matvecs: products with the operator (the final residual check included).
        converged: ``(k,)`` bool, ``residual <= tol * max |Ritz value|``.
        restarts: thick restarts (torch backend; 0 for scipy).
    """

    values: Tensor
    vectors: Tensor
    residuals: Tensor
    matvecs: int
    converged: Tensor
    restarts: int = 0


def _eigh_small(T: Tensor) -> tuple[Tensor, Tensor]:
    """``eigh`` of the small projected matrix, single-threaded.

    Multithreaded LAPACK on a matrix of a few hundred rows gains nothing and, on a loaded
    machine, spin-waits: measured 150 ms instead of 0.6 ms for 60 x 60 on two busy cores.
    """
    threads = torch.get_num_threads()
    if threads == 1 or T.shape[0] > 512:
        return torch.linalg.eigh(T)
    torch.set_num_threads(1)
    try:
        return torch.linalg.eigh(T)
    finally:
        torch.set_num_threads(threads)


def _order(theta: Tensor, which: str) -> Tensor:
    if which == "LA":
        return torch.argsort(theta, descending=True, stable=True)
    if which == "SA":
        return torch.argsort(theta, stable=True)
    return torch.argsort(theta.abs(), descending=True, stable=True)


def _beats(value: float, reference: float, which: str, margin: float) -> bool:
    """Whether Ritz value ``value`` is more wanted than ``reference`` by more than ``margin``."""
    if which == "LA":
        return value > reference + margin
    if which == "SA":
        return value < reference - margin
    return abs(value) > abs(reference) + margin


def lanczos(
    op: LinearOperator,
    k: int,
    *,
    which: str = "LA",
    tol: float = 1e-6,
    max_iter: int | None = None,
    backend: str = "torch",
    generator: torch.Generator | int | None = None,
    ncv: int | None = None,
    progress: bool = False,
    check_multiplicity: bool = True,
) -> EigResult:
    r"""``k`` extreme eigenpairs of a symmetric operator by Lanczos (or SciPy's ``eigsh``).

    See the module docstring for the algorithm, its memory cost and its stopping rule.

    Args:
        op: a symmetric :class:`~geomrob.curvature.operators.LinearOperator` ``(d, d)``.
        k: number of eigenpairs, ``1 <= k <= d`` (``k < d`` for scipy).
        which: ``"LA"`` largest algebraic, ``"SA"`` smallest algebraic, ``"LM"`` largest
            magnitude.
        tol: relative residual tolerance, ``||A v - lambda v|| <= tol * max|lambda|``.
        max_iter: budget of products (default ``20 * ncv``); scipy gets
            ``max_iter // (ncv - k)`` ARPACK restarts.
        backend: ``"torch"`` or ``"scipy"`` (``eigsh(op.to_scipy(), ...)``, a reference).
        generator: source of the starting vector (and of breakdown restarts); an int seeds a
            new one. The same generator state gives the same result.
        ncv: basis size, ``k + 2 <= ncv <= d`` (or ``ncv = d``); default
            ``min(d, max(2k + 1, 20))``.
        progress: show a tqdm bar of the products.
        check_multiplicity: after convergence, look for a missed copy of a repeated eigenvalue
            by a short run (``min(10, d - k)`` products) on the operator deflated by the
            converged vectors, and go on if it finds a better one (module docstring). torch
            backend only; ``False`` saves those products where eigenvalues are known simple.

    Returns:
        :class:`EigResult`.

    Raises:
        TypeError: if ``op`` is not a LinearOperator.
        ValueError: for a non-symmetric operator (with the routes to a symmetric one) or a bad
            ``k``, ``which``, ``tol``, ``max_iter``, ``backend`` or ``ncv``.
        RuntimeError: if scipy's ARPACK does not converge.

    Example:
        >>> from geomrob.curvature.operators import DenseOperator
        >>> A = DenseOperator(torch.diag(torch.arange(10.0, dtype=torch.float64)))
        >>> res = lanczos(A, 3, generator=0)
        >>> res.values.round(decimals=8).tolist(), bool(res.converged.all()), res.vectors.shape
        ([9.0, 8.0, 7.0], True, torch.Size([3, 10]))
        >>> lanczos(A, 2, which="SA", generator=0).values.round(decimals=8).abs().tolist()
        [0.0, 1.0]
    """
    if not isinstance(op, LinearOperator):
        raise TypeError(
            f"`op` must be a geomrob LinearOperator (e.g. BoundaryHessian); got "
            f"{type(op).__name__}. Wrap a function with FunctionOperator."
        )
    if not op.symmetric:
        raise ValueError(
            f"lanczos needs a symmetric operator; {type(op).__name__} has symmetric=False (a "
            "finite-difference BoundaryHessian is only approximately symmetric, and far from it "
            "for ReLU networks). Use op.symmetrized() (the dense symmetric part (A + A^T)/2, "
            "for moderate d) or mode='smoothed' (exactly symmetric)."
        )
    backend = check_choice(backend, "backend", BACKENDS)
    which = check_choice(which, "which", WHICH)
    d = op.shape[0]
    k_max = d if backend == "torch" else d - 1
    k = check_int(k, "k", low=1)
    if k > k_max:
        hint = " (scipy's eigsh needs k < d; use backend='torch')" if backend == "scipy" else ""
        raise ValueError(f"`k` must be <= {k_max} for a {d} x {d} operator; got {k}{hint}.")
    tol = check_positive(tol, "tol")
    if ncv is None:
        ncv = min(d, max(2 * k + 1, 20))
    else:
        ncv = check_int(ncv, "ncv", high=d)
        if ncv < min(k + 2, d):
            raise ValueError(f"`ncv` must be >= min(k + 2, d) = {min(k + 2, d)}; got {ncv}.")
    max_iter = 20 * ncv if max_iter is None else check_int(max_iter, "max_iter", low=k)
    gen = as_generator(generator, "cpu")
    if backend == "scipy":
        return _lanczos_scipy(op, k, which, tol, max_iter, ncv, gen)
    return _lanczos_torch(op, k, which, tol, max_iter, ncv, gen, progress, bool(check_multiplicity))


def _true_residuals(op: LinearOperator, values: Tensor, Y: Tensor) -> Tensor:
    out = []
    for i in range(0, Y.shape[0], 64):
        block = Y[i : i + 64]
        out.append((op.matvec(block) - values[i : i + 64, None] * block).norm(dim=1))
    return torch.cat(out)


def _finish(
    op: LinearOperator,
    values: Tensor,
    vectors: Tensor,
    scale: float,
    tol: float,
    matvecs: int,
    restarts: int,
    budget_hit: bool,
) -> EigResult:
    values = values.to(device=op.device, dtype=op.dtype)
    vectors = vectors.to(device=op.device, dtype=op.dtype).contiguous()
    with torch.no_grad():
        residuals = _true_residuals(op, values, vectors)
    matvecs += vectors.shape[0]
    converged = residuals <= tol * scale
    if not bool(converged.all()):
        why = "after max_iter products" if budget_hit else "(rounding of the operator)"
        warnings.warn(
            f"lanczos: {int((~converged).sum())} of {len(values)} Ritz pairs did not reach "
            f"||A v - lambda v|| <= tol * max|lambda| = {tol * scale:.3g} {why}; worst residual "
            f"{float(residuals.max()):.3g}. See EigResult.converged; raise max_iter or ncv.",
            RuntimeWarning,
            stacklevel=3,
        )
    return EigResult(
        values=values,
        vectors=vectors,
        residuals=residuals,
        matvecs=matvecs,
        converged=converged,
        restarts=restarts,
    )


def _lanczos_torch(
    op: LinearOperator,
    k: int,
    which: str,
    tol: float,
    max_iter: int,
    ncv: int,
    gen: torch.Generator | None,
    progress: bool,
    check_multiplicity: bool = True,
) -> EigResult:
    d, dev, f64 = op.shape[0], op.device, torch.float64
    Q = torch.zeros(ncv + 1, d, dtype=f64, device=dev)
    T = torch.zeros(ncv, ncv, dtype=f64)
    matvecs = restarts = 0
    bar = tqdm(total=max_iter, desc=f"lanczos ({dev})", disable=not progress, leave=False)

    def apply(x: Tensor) -> Tensor:
        nonlocal matvecs
        matvecs += 1
        bar.update(1)
        with torch.no_grad():
            return op.matvec(x.to(op.dtype)).to(f64)

    def orthogonalize(w: Tensor, m: int) -> tuple[Tensor, Tensor]:
        basis = Q[:m]
        coef = basis @ w
        w = w - coef @ basis
        again = basis @ w
        return w - again @ basis, coef + again

    def random_unit(m: int) -> Tensor:
        # m < d: a Gaussian vector has a nonzero component off the basis with probability 1
        w = orthogonalize(randn(d, generator=gen, device=dev, dtype=f64), m)[0]
        return w / w.norm()

    def ritz(m: int) -> tuple[Tensor, Tensor]:
        # Ritz pairs of T[:m, :m] ((m,) values, (m, m) coefficients). The first `nlock` basis
        # vectors, locked by the multiplicity check, stay as they are (hard locking): the
        # Rayleigh-Ritz is on the rest, the Krylov space of the deflated operator.
        if nlock == 0:
            return _eigh_small(T[:m, :m])
        values, vectors = _eigh_small(T[nlock:m, nlock:m])
        S = torch.zeros(m, m, dtype=f64)
        S[:nlock, :nlock] = torch.eye(nlock, dtype=f64)
        S[nlock:, nlock:] = vectors
        return torch.cat([T.diagonal()[:nlock], values]), S

    Q[0] = random_unit(0)
    m, coupling, anorm = 0, 0.0, 0.0
    check_every = max(1, k // 10)
    converged = False
    theta = S = None
    # multiplicity check: probe_left products left in the run on the deflated operator
    probing, probe_left, checked, locked_kth, nlock = False, 0, not check_multiplicity, 0.0, 0
    while True:
        w = apply(Q[m])
        anorm = max(anorm, float(w.norm()))
        w, coef = orthogonalize(w, m + 1)
        coef = coef.cpu()
        T[: m + 1, m] = coef
        T[m, : m + 1] = coef
        beta = float(w.norm())
        m += 1
        if probing:
            probe_left -= 1
        breakdown = False
        if m == d:
            coupling = 0.0
        elif beta <= 1e-12 * anorm:
            Q[m] = random_unit(m)
            coupling, breakdown = 0.0, True
        else:
            Q[m] = w / beta
            coupling = beta
        full = m == d
        theta = None
        cadence = probing or (m - k) % check_every == 0 or m == ncv
        if m >= k and (full or (not breakdown and cadence)):
            theta, S = ritz(m)
            wanted = _order(theta, which)[:k]
            estimates = (coupling * S[m - 1, wanted]).abs()
            scale = float(theta.abs().max())
            converged = bool((estimates <= tol * scale).all())
            if probing:
                if _beats(float(theta[wanted[-1]]), locked_kth, which, tol * scale):
                    probing = False  # a missed eigenvalue: converge again, then check again
                elif probe_left > 0 and not full:
                    converged = False
                else:
                    probing, checked = False, True
            if converged and not checked and not full and matvecs < max_iter:
                # Lock the k converged Ritz vectors and restart from a fresh random vector
                # orthogonal to them: Lanczos on the deflated operator (module docstring).
                locked_kth = float(theta[wanted[-1]])
                Q[:k] = S[:, wanted].T.to(dev) @ Q[:m]
                Q[k:] = 0
                T.zero_()
                T[:k, :k] = torch.diag(theta[wanted])
                m, nlock, coupling, theta = k, k, 0.0, None
                Q[m] = random_unit(m)
                probing, probe_left, converged = True, min(_CHECK_STEPS, d - k), False
                restarts += 1
        if converged or full or matvecs >= max_iter:
            break
        if m == ncv:
            if theta is None:
                theta, S = ritz(m)
            p = min(ncv - 1, k + (ncv - k) // 2)
            order = _order(theta, which)
            if nlock:  # locked vectors stay in front
                order = torch.cat([torch.arange(nlock), order[order >= nlock]])
            keep = order[:p]
            nxt = Q[m].clone()
            Q[:p] = S[:, keep].T.to(dev) @ Q[:m]
            Q[p] = nxt
            Q[p + 1 :] = 0
            T.zero_()
            T[:p, :p] = torch.diag(theta[keep])
            m = p
            restarts += 1
    bar.close()
    theta, S = ritz(m)
    wanted = _order(theta, which)[:k]
    vectors = S[:, wanted].T.to(dev) @ Q[:m]
    scale = float(theta.abs().max())
    return _finish(
        op, theta[wanted], vectors, scale, tol, matvecs, restarts, budget_hit=not converged
    )


def _lanczos_scipy(
    op: LinearOperator,
    k: int,
    which: str,
    tol: float,
    max_iter: int,
    ncv: int,
    gen: torch.Generator | None,
) -> EigResult:
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh
    from scipy.sparse.linalg import LinearOperator as ScipyLinearOperator

    inner = op.to_scipy()
    count = [0]

    def matvec(x):
        count[0] += 1
        return inner.matvec(x)

    def matmat(X):
        count[0] += X.shape[1]
        return inner.matmat(X)

    counted = ScipyLinearOperator(op.shape, matvec=matvec, matmat=matmat, dtype=inner.dtype)
    v0 = randn(op.shape[0], generator=gen, device="cpu", dtype=torch.float64)
    v0 = v0.numpy().astype(inner.dtype)
    ncv = max(ncv, k + 1) if ncv < op.shape[0] else op.shape[0]
    try:
        values, vectors = eigsh(
            counted,
            k=k,
            which=which,
            v0=v0,
            tol=tol,
            ncv=ncv,
            maxiter=max(1, max_iter // max(1, ncv - k)),
        )
    except ArpackNoConvergence as exc:
        raise RuntimeError(
            f"scipy eigsh did not converge ({exc}); raise max_iter or ncv, or use backend='torch'."
        ) from exc
    values = torch.from_numpy(values).to(torch.float64)
    vectors = torch.from_numpy(vectors.T.copy())
    order = _order(values, which)
    scale = float(values.abs().max())
    return _finish(op, values[order], vectors[order], scale, tol, count[0], 0, budget_hit=False)
