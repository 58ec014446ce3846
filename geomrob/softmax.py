r"""Adversarial directions of the softmax layer (Zou, Su, Pang and Zhu, ``003`` in shared/seeds).

A classifier ``S(W^T g(x) + b)`` maps an input to features ``h = g(x)`` in ``R^l`` and then to
``m`` class probabilities by a final linear layer ``W`` (``l x m``) and a softmax ``S``. Since
``S(z + c 1_m) = S(z)`` for every ``c`` and only then, a direction ``d`` of the feature space
leaves the output unchanged along the whole line ``h + theta d`` (003, Definition 1) iff
``W^T d`` lies in ``span(1_m)``:

.. math::

    S(W^\top (h + \theta d) + b) = S(W^\top h + b)\ \forall \theta
    \iff (I - \tfrac1m 1 1^\top) W^\top d = 0 .

- :func:`softmax_null_space`: an orthonormal basis of that null space. Its dimension is
  ``l - rank((I - 11^T/m) W^T) >= l - m + 1``, hence ``>= l - m`` (003, Theorem 1).
- :func:`direction_invariance`: the largest change of the probabilities and the fraction of
  unchanged labels along ``h + theta d``; for null directions the first is rounding and the
  second is 1 at every ``theta``, so every decision region is unbounded (003, Theorem 2).
- :func:`parallel_pairs`: whether two class pairs have parallel decision boundaries
  (003, Definition 2, the "parallel" softmax layers excluded by the conjecture).
- :func:`split_last_linear`: a classifier cut into the feature map ``g`` and its final
  ``nn.Linear``, so that features can be moved along null directions.
- :func:`feature_collision`: the experiment behind 003's conjecture: from ``x``, find ``x*``
  close to ``x`` with ``g(x*) = g(x') + theta d'`` (``d'`` a null direction), by Adam.

Conventions: ``W`` is ``(l, m)`` as in the paper; an ``nn.Linear`` stores ``W^T`` as its
``weight`` ``(m, l)``. Feature vectors are rows ``(n, l)``; a basis is ``(k, l)`` with
orthonormal rows.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._model import check_inputs, eval_mode, functional
from ._random import as_generator, randn
from ._validation import (
    check_batch,
    check_bounds,
    check_finite,
    check_floating,
    check_int,
    check_model,
    check_positive,
    check_real,
    check_tensor,
)
from .results import Result

__all__ = [
    "DirectionInvariance",
    "FeatureCollision",
    "ParallelPairs",
    "SoftmaxNullSpace",
    "SplitModel",
    "direction_invariance",
    "feature_collision",
    "parallel_pairs",
    "softmax_null_space",
    "split_last_linear",
]

#: The ``theta`` values of :func:`direction_invariance` when none are given.
DEFAULT_THETAS = (1.0, 10.0, 100.0, 1000.0)


# ---------------------------------------------------------------------------------------------
# the final layer


def _check_layer(W: object, b: object) -> tuple[Tensor, Tensor | None]:
    """``W`` as ``(l, m)`` and ``b`` as ``(m,)`` or ``None``, from a tensor pair or nn.Linear."""
    if isinstance(W, nn.Linear):
        if b is not None:
            raise ValueError(
                "`b` must be None when `W` is an nn.Linear (its own bias is used); got a `b`."
            )
        weight = W.weight.detach().T
        bias = None if W.bias is None else W.bias.detach()
        check_finite(weight, "W.weight")
        if bias is not None:
            check_finite(bias, "W.bias")
    else:
        if isinstance(W, nn.Module):
            raise TypeError(
                f"`W` must be a (l, m) tensor or an nn.Linear; got the module {type(W).__name__}. "
                "Use split_last_linear(model) to get a classifier's final layer."
            )
        weight = check_tensor(W, "W")
        if weight.ndim != 2:
            raise ValueError(
                f"`W` must be a (l, m) matrix (l features, m classes; logits = W^T h + b); got "
                f"shape {tuple(weight.shape)}."
            )
        check_floating(weight, "W")
        check_finite(weight, "W")
        weight = weight.detach()
        bias = None
        if b is not None:
            bias = check_tensor(b, "b")
            check_floating(bias, "b")
            check_finite(bias, "b")
            bias = bias.detach()
    l, m = weight.shape
    if m < 2:
        raise ValueError(f"`W` must have at least 2 classes (columns); got shape ({l}, {m}).")
    if l < 1:
        raise ValueError(f"`W` must have at least 1 feature (row); got shape ({l}, {m}).")
    if bias is not None and tuple(bias.shape) != (m,):
        raise ValueError(
            f"`b` must have shape ({m},), one entry per class; got {tuple(bias.shape)}."
        )
    return weight, bias


@dataclass(frozen=True, eq=False)
class SoftmaxNullSpace(Result):
    """The adversarial directions of a softmax layer ``S(W^T h + b)`` (003, Definition 1).

    Attributes:
        basis: ``(k, l)`` orthonormal rows spanning ``{d : (I - 11^T/m) W^T d = 0}``.
        l: number of features (rows of ``W``).
        m: number of classes (columns of ``W``).
        rank: numerical rank of ``(I - 11^T/m) W^T`` (at most ``min(l, m - 1)``).
        dimension: ``k = l - rank``.
        lower_bound: ``l - m``, the bound of 003 Theorem 1.
        theorem1: ``dimension >= l - m`` (always true; a check, not an assumption).
        singular_values: ``(min(l, m),)`` singular values of ``(I - 11^T/m) W^T``, descending.
        tol: singular values ``<= tol`` count as zero.
        weight: ``(l, m)`` the ``W`` it was computed from.
        bias: ``(m,)`` the ``b`` (``None`` when not given).
    """

    basis: Tensor
    l: int
    m: int
    rank: int
    dimension: int
    lower_bound: int
    theorem1: bool
    singular_values: Tensor
    tol: float
    weight: Tensor
    bias: Tensor | None

    def logits(self, h: Tensor) -> Tensor:
        """``W^T h + b`` for feature rows ``h`` ``(n, l)``, in the dtype of ``h``."""
        W = self.weight.to(device=h.device, dtype=h.dtype)
        z = h @ W
        return z if self.bias is None else z + self.bias.to(device=h.device, dtype=h.dtype)

    def project(self, v: Tensor) -> Tensor:
        """The orthogonal projection ``B^T B v`` of rows ``v`` ``(n, l)`` on the null space."""
        B = self.basis.to(device=v.device, dtype=v.dtype)
        return (v @ B.T) @ B


def softmax_null_space(
    W: Tensor | nn.Linear, b: Tensor | None = None, *, rtol: float | None = None
) -> SoftmaxNullSpace:
    r"""Orthonormal basis of the adversarial directions of a softmax layer (003, Theorem 1).

    ``d`` is an adversarial direction of ``S(W^T h + b)`` -- the probabilities stay the same
    along ``h + theta d`` for every ``theta`` (003, Definition 1) -- iff ``W^T d`` is a multiple
    of ``1_m``, i.e. ``d`` is in the null space of ``C W^T`` with ``C = I - 11^T/m``:

    .. math::

        \dim = l - \operatorname{rank}(C W^\top) \ge l - (m - 1) \ge l - m
        \quad \text{(003, Theorem 1)} .

    The basis is the last ``l - rank`` right singular vectors of ``C W^T`` (SVD in float64;
    returned in the dtype of ``W``). ``b`` does not change the null space; it is kept for
    :meth:`SoftmaxNullSpace.logits`.

    Args:
        W: ``(l, m)`` weights with logits ``W^T h + b``, or an ``nn.Linear`` (whose ``weight``
            ``(m, l)`` is ``W^T`` and whose bias is ``b``).
        b: ``(m,)`` bias, or ``None``; must be ``None`` for an ``nn.Linear``.
        rtol: singular values ``<= rtol * s_max`` count as zero (``None``: ``max(l, m)`` times
            the machine epsilon of ``W``'s dtype, as ``scipy.linalg.null_space``).

    Returns:
        A :class:`SoftmaxNullSpace`.

    Raises:
        TypeError: if ``W`` is neither a floating tensor nor an ``nn.Linear``.
        ValueError: if ``W`` is not 2-D with ``m >= 2`` columns, ``b`` is not ``(m,)``,
            values are not finite or ``rtol`` is not in ``(0, 1)``.

    Example:
        >>> layer = torch.nn.Linear(5, 3)
        >>> ns = softmax_null_space(layer)
        >>> ns.l, ns.m, ns.dimension, ns.theorem1
        (5, 3, 3, True)
        >>> h = torch.randn(4, 5)
        >>> p = torch.softmax(layer(h), 1)
        >>> q = torch.softmax(layer(h + 100 * ns.basis[0]), 1)
        >>> bool((p - q).abs().max() < 1e-4)
        True
    """
    weight, bias = _check_layer(W, b)
    l, m = weight.shape
    eps = torch.finfo(weight.dtype).eps
    if rtol is None:
        rtol = max(l, m) * eps
    else:
        rtol = check_real(
            rtol, "rtol", low=0.0, high=1.0, low_inclusive=False, high_inclusive=False
        )
    W64 = weight.to(torch.float64)
    A = (W64 - W64.mean(1, keepdim=True)).T  # (I - 11^T/m) W^T, (m, l)
    _, S, Vh = torch.linalg.svd(A, full_matrices=True)
    tol = float(S[0]) * rtol if S.numel() else 0.0
    rank = int((tol < S).sum())
    basis = Vh[rank:].to(weight.dtype)
    dimension = l - rank
    return SoftmaxNullSpace(
        basis=basis,
        l=l,
        m=m,
        rank=rank,
        dimension=dimension,
        lower_bound=l - m,
        theorem1=dimension >= l - m,
        singular_values=S.to(weight.dtype),
        tol=tol,
        weight=weight,
        bias=bias,
    )


# ---------------------------------------------------------------------------------------------
# invariance along directions (Theorems 1 and 2)


@dataclass(frozen=True, eq=False)
class DirectionInvariance(Result):
    """How the softmax output changes along ``h_i + theta d_j`` (003, Theorems 1 and 2).

    Attributes:
        thetas: ``(T,)`` the step lengths.
        max_change: ``(T,)`` ``max_{i, j, c} |p_c(h_i + theta d_j) - p_c(h_i)|``.
        label_kept: ``(T,)`` fraction of pairs ``(i, j)`` whose predicted label is unchanged.
        logit_spread: ``(k,)`` per direction, ``max_c (W^T d)_c - min_c (W^T d)_c`` (zero for a
            null direction: ``W^T d`` is then a multiple of ``1_m``).
        n: number of feature rows.
        k: number of directions.
    """

    thetas: Tensor
    max_change: Tensor
    label_kept: Tensor
    logit_spread: Tensor
    n: int
    k: int


def direction_invariance(
    W: Tensor | nn.Linear,
    h: Tensor,
    directions: Tensor,
    *,
    b: Tensor | None = None,
    thetas: Sequence[float] = DEFAULT_THETAS,
) -> DirectionInvariance:
    r"""Change of ``S(W^T (h + theta d) + b)`` from ``S(W^T h + b)`` along unit directions.

    For a null direction (:func:`softmax_null_space`) the change is zero in exact arithmetic and
    the label never changes, however large ``theta``: every decision region extends to infinity
    (003, Theorems 1 and 2). In floating point the change is rounding, about
    ``theta ||W|| eps``: compute in float64 for ``theta`` of ``1e3`` and more. For a generic
    direction the label tends to ``argmax_c (W^T d)_c`` as ``theta -> inf``.

    Args:
        W: ``(l, m)`` weights or an ``nn.Linear`` (see :func:`softmax_null_space`).
        h: ``(n, l)`` feature rows; the computation runs in its dtype.
        directions: ``(k, l)`` nonzero rows, normalised to unit length here.
        b: ``(m,)`` bias (``None`` for an ``nn.Linear``, which brings its own).
        thetas: step lengths (finite reals).

    Returns:
        A :class:`DirectionInvariance`.

    Raises:
        TypeError: for non-floating tensors.
        ValueError: for shapes that do not match ``W``, zero or non-finite directions, or an
            empty ``thetas``.

    Example:
        >>> layer = torch.nn.Linear(6, 3).double()
        >>> ns = softmax_null_space(layer)
        >>> inv = direction_invariance(layer, torch.randn(5, 6, dtype=torch.float64), ns.basis)
        >>> bool(inv.max_change.max() < 1e-10), inv.label_kept.tolist()
        (True, [1.0, 1.0, 1.0, 1.0])
    """
    weight, bias = _check_layer(W, b)
    l, m = weight.shape
    h = check_batch(h, "h")
    if h.ndim != 2 or h.shape[1] != l:
        raise ValueError(f"`h` must have shape (n, {l}) (features of W); got {tuple(h.shape)}.")
    D = check_batch(directions, "directions")
    if D.ndim != 2 or D.shape[1] != l:
        raise ValueError(
            f"`directions` must have shape (k, {l}) (rows are directions); got {tuple(D.shape)}."
        )
    norms = D.norm(dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError("`directions` has a zero row; every direction must be nonzero.")
    thetas = [check_real(t, f"thetas[{i}]") for i, t in enumerate(thetas)]
    if not thetas:
        raise ValueError("`thetas` must hold at least one step length; got none.")
    dtype, device = h.dtype, h.device
    Wd = weight.to(device=device, dtype=dtype)
    bd = None if bias is None else bias.to(device=device, dtype=dtype)
    D = (D / norms).to(device=device, dtype=dtype)

    def probs(z: Tensor) -> Tensor:
        logits = z @ Wd
        return torch.softmax(logits if bd is None else logits + bd, dim=-1)

    p0 = probs(h)  # (n, m)
    k0 = p0.argmax(1)
    max_change, kept = [], []
    for theta in thetas:
        moved = h[:, None, :] + theta * D[None, :, :]  # (n, k, l)
        p = probs(moved)
        max_change.append((p - p0[:, None, :]).abs().amax())
        kept.append((p.argmax(2) == k0[:, None]).to(dtype).mean())
    spread = D @ Wd
    return DirectionInvariance(
        thetas=torch.tensor(thetas, dtype=dtype),
        max_change=torch.stack(max_change).cpu(),
        label_kept=torch.stack(kept).cpu(),
        logit_spread=(spread.amax(1) - spread.amin(1)).cpu(),
        n=h.shape[0],
        k=D.shape[0],
    )


# ---------------------------------------------------------------------------------------------
# parallel softmax layers (Definition 2)


@dataclass(frozen=True, eq=False)
class ParallelPairs(Result):
    """Parallel decision boundaries of a softmax layer (003, Definition 2).

    The boundary between classes ``i < j`` is the hyperplane ``(w_i - w_j)^T h + b_i - b_j = 0``
    (``w_c`` the columns of ``W``). Two boundaries ``(i, j) != (p, q)`` are parallel when the
    sine of the angle between their normals is ``<= tol``.

    Attributes:
        parallel: whether at least one pair of boundaries is parallel.
        pairs: ``(P, 4)`` int64 rows ``(i, j, p, q)`` of the parallel pairs (``i < j``,
            ``p < q``, ``(i, j)`` before ``(p, q)`` in lexicographic order).
        sines: ``(P,)`` their sines.
        min_sine: the smallest sine over all pairs of distinct boundaries (how close the
            layer is to being parallel; ``nan`` when there are fewer than two boundaries).
        closest: ``(i, j, p, q)`` attaining ``min_sine`` (empty when there is none).
        degenerate: ``(D, 2)`` int64 class pairs ``(i, j)`` with ``w_i = w_j`` up to ``tol``
            (relative to the largest normal): no hyperplane, left out of the comparison.
        tol: the tolerance on the sine.
    """

    parallel: bool
    pairs: Tensor
    sines: Tensor
    min_sine: float
    closest: tuple[int, ...]
    degenerate: Tensor
    tol: float


def parallel_pairs(
    W: Tensor | nn.Linear,
    b: Tensor | None = None,
    *,
    tol: float = 1e-6,
    chunk: int = 4096,
) -> ParallelPairs:
    r"""Detect a parallel softmax layer: two class pairs with parallel boundary normals.

    003 (Definition 2) calls the layer parallel when two of its pairwise decision boundaries
    are parallel hyperplanes; its conjecture on the universality of adversarial examples is
    stated for non-parallel layers. With ``n_a = w_i - w_j`` for the pair ``a = (i, j)``:

    .. math::

        \sin \angle(n_a, n_b) = \sqrt{1 - \frac{\langle n_a, n_b\rangle^2}
            {\|n_a\|^2 \|n_b\|^2}} \le \mathrm{tol} .

    The inner products come from the ``m x m`` Gram matrix of the centred class vectors in
    float64 (the normals are never formed), so the cost is ``O(m^4)`` time over the
    ``m(m-1)/2`` pairs, in chunks of ``chunk`` rows; the sine is accurate to about ``1e-8``,
    so ``tol`` should be larger. ``b`` moves the hyperplanes, not their normals, so it does
    not enter the test (two parallel boundaries with equal offsets coincide).

    Args:
        W: ``(l, m)`` weights or an ``nn.Linear`` (see :func:`softmax_null_space`).
        b: ``(m,)`` bias (checked, unused).
        tol: largest sine that counts as parallel, in ``(0, 1)``.
        chunk: boundary pairs compared per block (a memory bound).

    Returns:
        A :class:`ParallelPairs`.

    Raises:
        TypeError, ValueError: as :func:`softmax_null_space`, or for a bad ``tol`` / ``chunk``.

    Example:
        >>> W = torch.tensor([[0.0, 1.0, 2.0, 0.0], [0.0, 0.0, 0.0, 1.0]])  # w_0, w_1, w_2: a line
        >>> res = parallel_pairs(W)
        >>> res.parallel, res.pairs[0].tolist()
        (True, [0, 1, 0, 2])
        >>> parallel_pairs(torch.eye(3)).parallel
        False
    """
    weight, _ = _check_layer(W, b)
    tol = check_real(tol, "tol", low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    chunk = check_int(chunk, "chunk", low=1)
    m = weight.shape[1]
    W64 = weight.to(torch.float64)
    W64 = W64 - W64.mean(1, keepdim=True)
    K = W64.T @ W64  # (m, m) Gram of the centred class vectors
    i, j = torch.triu_indices(m, m, offset=1, device=K.device)
    sq = (K[i, i] - 2 * K[i, j] + K[j, j]).clamp_min(0)  # ||n_a||^2
    small = sq <= (tol**2) * float(sq.max())
    degenerate = torch.stack([i[small], j[small]], 1).cpu()
    keep = (~small).nonzero().flatten()
    i, j, sq = i[keep], j[keep], sq[keep]
    P = len(keep)
    found, sines = [], []
    best, closest = math.inf, ()
    for s in range(0, P, chunk):
        a = slice(s, min(P, s + chunk))
        ia, ja = i[a, None], j[a, None]
        G = K[ia, i[None]] - K[ia, j[None]] - K[ja, i[None]] + K[ja, j[None]]  # <n_a, n_b>
        cos2 = (G * G / (sq[a, None] * sq[None])).clamp(0, 1)
        sine = (1 - cos2).sqrt()
        rows = torch.arange(s, a.stop, device=K.device)[:, None]
        upper = rows < torch.arange(P, device=K.device)[None]  # each unordered pair once
        sine = torch.where(upper, sine, torch.full_like(sine, math.inf))
        hit = (sine <= tol).nonzero()
        if len(hit):
            found.append(hit + torch.tensor([s, 0], device=K.device))
            sines.append(sine[hit[:, 0], hit[:, 1]])
        if bool(torch.isfinite(sine).any()):
            flat = int(sine.argmin())
            r, c = divmod(flat, P)
            if float(sine[r, c]) < best:
                best = float(sine[r, c])
                closest = (int(i[s + r]), int(j[s + r]), int(i[c]), int(j[c]))
    if found:
        idx = torch.cat(found)
        pairs = torch.stack([i[idx[:, 0]], j[idx[:, 0]], i[idx[:, 1]], j[idx[:, 1]]], 1)
        sines_t = torch.cat(sines)
    else:
        pairs = torch.zeros(0, 4, dtype=torch.long)
        sines_t = torch.zeros(0, dtype=torch.float64)
    return ParallelPairs(
        parallel=bool(len(pairs)),
        pairs=pairs.cpu(),
        sines=sines_t.cpu(),
        min_sine=best if math.isfinite(best) else math.nan,
        closest=closest,
        degenerate=degenerate,
        tol=tol,
    )


# ---------------------------------------------------------------------------------------------
# feature extractor and final layer


@dataclass(frozen=True, eq=False)
class SplitModel:
    """A classifier cut at its final linear layer: ``model(x) == head(features(x))``.

    Attributes:
        features: the feature map ``g``: ``(n, *input_shape) -> (n, l)``; it shares the
            model's modules (and parameters), it does not copy them.
        head: the final ``nn.Linear`` (``weight = W^T``, ``(m, l)``).
        head_name: the head's qualified name in the model (``""`` for a bare ``nn.Linear``).
    """

    features: nn.Module
    head: nn.Linear
    head_name: str


class _CapturedFeatures(nn.Module):
    """``x -> the input of the model's final nn.Linear``, for models that are not Sequential."""

    def __init__(self, model: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.model = model
        self._head = [head]  # not a submodule: it is already inside ``model``

    def forward(self, x: Tensor) -> Tensor:
        """Run the model and return what entered its final linear layer."""
        seen: list[Tensor] = []
        handle = self._head[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
        try:
            self.model(x)
        finally:
            handle.remove()
        return seen[-1]


def _is_plain_sequential(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _split_sequential(seq: nn.Sequential, prefix: str) -> tuple[nn.Module, nn.Linear, str]:
    children = list(seq.named_children())
    if not children:
        raise ValueError(f"The nn.Sequential {prefix or 'model'!r} is empty: no final nn.Linear.")
    name, last = children[-1]
    path = f"{prefix}.{name}" if prefix else name
    if isinstance(last, nn.Linear):
        return nn.Sequential(OrderedDict(children[:-1])), last, path
    if _is_plain_sequential(last):
        inner, head, head_path = _split_sequential(last, path)
        return nn.Sequential(OrderedDict([*children[:-1], (name, inner)])), head, head_path
    if any(isinstance(mod, nn.Linear) for mod in seq.modules()):
        raise ValueError(
            f"The last operation of the model is {path!r} ({type(last).__name__}), not an "
            "nn.Linear: the softmax null space needs logits = W^T h + b from a final linear "
            "layer. Remove what follows the last nn.Linear (e.g. a final softmax)."
        )
    raise ValueError("The model has no nn.Linear layer: there is no final softmax layer W.")


def split_last_linear(model: nn.Module, input_shape: Sequence[int] | None = None) -> SplitModel:
    """Split a classifier into its feature map ``g`` and its final ``nn.Linear``.

    For an ``nn.Sequential`` (every zoo model) the split is structural: ``features`` is the
    Sequential without its last module (recursing into a trailing Sequential), sharing the
    model's modules. For any other module, a forward pass on zeros of ``input_shape`` finds the
    last ``nn.Linear`` that runs and checks that its output is the model's output; ``features``
    then runs the model and returns the input of that layer.

    Args:
        model: a classifier ``(n, *input_shape) -> (n, m)`` logits.
        input_shape: needed only for models that are not ``nn.Sequential``.

    Returns:
        A :class:`SplitModel` with ``model(x) == head(features(x))``.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
        ValueError: if the model has no ``nn.Linear``, if its last operation is not an
            ``nn.Linear``, or if ``input_shape`` is missing for a non-Sequential model.

    Example:
        >>> from geomrob.models import build
        >>> model = build("lenet", input_shape=(1, 8, 8), num_classes=10).eval()
        >>> split = split_last_linear(model)
        >>> split.head_name, split.features(torch.zeros(2, 1, 8, 8)).shape
        ('fc3', torch.Size([2, 84]))
    """
    model = check_model(model)
    if isinstance(model, nn.Linear):
        return SplitModel(features=nn.Identity(), head=model, head_name="")
    if _is_plain_sequential(model):
        features, head, name = _split_sequential(model, "")
        return SplitModel(features=features, head=head, head_name=name)
    if input_shape is None:
        raise ValueError(
            f"`input_shape` is needed to split a {type(model).__name__} (not an nn.Sequential): "
            "a forward pass finds its final nn.Linear. Pass e.g. input_shape=(1, 28, 28)."
        )
    shape = tuple(int(s) for s in input_shape)
    names = {mod: name for name, mod in model.named_modules()}
    calls: list[tuple[nn.Linear, Tensor]] = []
    hooks = [
        mod.register_forward_hook(lambda mod, _a, out: calls.append((mod, out)))
        for mod in model.modules()
        if isinstance(mod, nn.Linear)
    ]
    try:
        with eval_mode(model), torch.no_grad():
            p = next(iter(model.parameters()), None)
            kw = {} if p is None else {"device": p.device, "dtype": p.dtype}
            out = model(torch.zeros(1, *shape, **kw))
    finally:
        for hk in hooks:
            hk.remove()
    if not calls:
        raise ValueError("The model has no nn.Linear layer: there is no final softmax layer W.")
    head, head_out = calls[-1]
    if head_out is not out:
        raise ValueError(
            f"The last nn.Linear {names[head]!r} is not the last operation of the model (its "
            "output is not the model's output): the softmax null space needs logits = "
            "W^T h + b from a final linear layer."
        )
    return SplitModel(features=_CapturedFeatures(model, head), head=head, head_name=names[head])


# ---------------------------------------------------------------------------------------------
# the conjecture: feature collisions along null directions


@dataclass(frozen=True, eq=False)
class FeatureCollision(Result):
    """Inputs ``x*`` near ``x`` whose features reach ``g(x') + theta d'`` (003, Conjecture).

    Attributes:
        x_adv: ``(n, *input_shape)`` the inputs ``x*`` found.
        success: ``(n,)`` bool, the model labels ``x*`` as it labels ``x'``.
        label: ``(n,)`` the model's label of ``x``.
        target_label: ``(n,)`` the model's label of ``x'``.
        adv_label: ``(n,)`` the model's label of ``x*``.
        distance: ``(n,)`` ``||x* - x||_2``.
        pair_distance: ``(n,)`` ``||x' - x||_2``.
        residual: ``(n,)`` final feature residual over the initial one (``||r(x*)|| / ||r(x)||``,
            ``r`` as in :func:`feature_collision`).
        null_shift: ``(n,)`` ``||B (g(x*) - g(x'))||``, the length of the null-space
            component ``theta d'`` reached.
        outside_features: ``(n,)`` bool, the target had negative coordinates while every
            feature of ``x`` and ``x'`` is ``>= 0`` (ReLU features): it is then out of reach.
        theta: ``None`` (free null component) or the fixed ``theta``.
        steps: Adam steps.
    """

    x_adv: Tensor
    success: Tensor
    label: Tensor
    target_label: Tensor
    adv_label: Tensor
    distance: Tensor
    pair_distance: Tensor
    residual: Tensor
    null_shift: Tensor
    outside_features: Tensor
    theta: float | None
    steps: int


def feature_collision(
    model: nn.Module,
    x: Tensor,
    x_target: Tensor,
    *,
    theta: float | None = None,
    lam: float = 1e-2,
    steps: int = 300,
    lr: float = 1e-2,
    bounds: tuple[float, float] | None = None,
    generator: torch.Generator | int | None = None,
) -> FeatureCollision:
    r"""Search ``x*`` near ``x`` with ``g(x*) = g(x') + theta d'`` (003, Conjecture).

    003 conjectures that for most feature maps ``g`` and non-parallel softmax layers, for any
    pair ``(x, x')`` there is an imperceptible ``x*`` near ``x`` whose features are those of
    ``x'`` moved along an adversarial (null) direction ``d'``: then ``x*`` has the output
    probabilities of ``x'``. With ``B`` the null-space basis (:func:`softmax_null_space`) and
    ``P = I - B^T B``, Adam minimises over ``delta = x* - x``, per pair,

    .. math::

        \frac{\|r(x + \delta)\|^2}{\|r(x)\|^2} + \lambda \|\delta\|_2^2, \qquad
        r(z) = \begin{cases} P\,(g(z) - g(x')) & \theta = \text{None} \\
                             g(z) - g(x') - \theta d' & \text{else,} \end{cases}

    so that with ``theta=None`` the null component ``theta d'`` is free (any point of the
    affine set ``g(x') + null space`` will do) and with a number it is fixed, ``d'`` a random
    unit null direction per pair (``theta=0``: plain feature matching). With ``bounds`` the
    iterate is projected on the box after every step. ``success`` is judged on the model:
    ``x*`` must get the label of ``x'``.

    Args:
        model: a classifier ending in an ``nn.Linear`` (see :func:`split_last_linear`).
        x: ``(n, *input_shape)`` starting inputs.
        x_target: ``(n, *input_shape)`` the inputs ``x'`` whose label ``x*`` should get.
        theta: ``None`` (free null component) or a fixed step along ``d'``.
        lam: weight ``lambda >= 0`` of ``||x* - x||^2``.
        steps: Adam steps.
        lr: Adam learning rate (input units).
        bounds: optional box ``(lo, hi)`` for ``x*``, e.g. ``(0, 1)`` for images.
        generator: draws ``d'`` when ``theta`` is a number.

    Returns:
        A :class:`FeatureCollision`.

    Raises:
        TypeError, ValueError: for a bad model, inputs of different shapes, a final layer
            without null space (``l <= rank``, then no ``d'`` exists) or bad options.

    Example:
        >>> from geomrob.models import build
        >>> _ = torch.manual_seed(0)
        >>> model = build("fcn2", input_shape=(1, 8, 8), num_classes=3, width=16).eval()
        >>> x = torch.rand(2, 1, 8, 8)
        >>> res = feature_collision(model, x, x.flip(0), steps=5)
        >>> res.x_adv.shape, res.distance.shape
        (torch.Size([2, 1, 8, 8]), torch.Size([2]))
    """
    model = check_model(model)
    lam = check_real(lam, "lam", low=0.0)
    steps = check_int(steps, "steps", low=1)
    lr = check_positive(lr, "lr")
    if theta is not None:
        theta = check_real(theta, "theta")
    with eval_mode(model):
        out_x = check_inputs(model, x, "x")
        out_t = check_inputs(model, x_target, "x_target")
        if x_target.shape != x.shape:
            raise ValueError(
                f"`x_target` must have the shape of `x`, {tuple(x.shape)}; got "
                f"{tuple(x_target.shape)}."
            )
        box = check_bounds(bounds, x)
        if box is not None:
            check_bounds(bounds, x_target)
        split = split_last_linear(model, tuple(x.shape[1:]))
        null = softmax_null_space(split.head)
        if null.dimension == 0:
            raise ValueError(
                f"The final layer ({null.l} features, {null.m} classes) has rank {null.rank} = l: "
                "its softmax null space is {0}, there is no adversarial direction d'."
            )
        g = functional(split.features)
        B = null.basis.to(device=x.device, dtype=x.dtype)
        with torch.no_grad():
            h_x, h_t = g(x), g(x_target)
        if h_x.ndim != 2 or h_x.shape[1] != null.l:
            raise ValueError(
                f"The features before the final layer must have shape (n, {null.l}); got "
                f"{tuple(h_x.shape)}."
            )
        n = x.shape[0]
        if theta is None:
            target = h_t

            def residual(h: Tensor) -> Tensor:
                diff = h - target
                return diff - (diff @ B.T) @ B

        else:
            gen = as_generator(generator, x.device)
            coef = randn(n, null.dimension, generator=gen, device=x.device, dtype=x.dtype)
            dirs = coef @ B
            dirs = dirs / dirs.norm(dim=1, keepdim=True)
            target = h_t + theta * dirs

            def residual(h: Tensor) -> Tensor:
                return h - target

        nonneg = bool((h_x >= 0).all()) and bool((h_t >= 0).all())
        outside = (target < 0).any(1) if nonneg else torch.zeros(n, dtype=torch.bool)
        with torch.no_grad():
            r0 = residual(h_x).norm(dim=1).clamp_min(torch.finfo(x.dtype).tiny)
        delta = torch.zeros_like(x, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=lr)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            r = residual(g(x + delta))
            loss = (r.pow(2).sum(1) / r0.pow(2)).sum() + lam * delta.pow(2).sum()
            loss.backward()
            opt.step()
            if box is not None:
                with torch.no_grad():
                    delta.copy_((x + delta).clamp(*box) - x)
        x_adv = (x + delta).detach()
        with torch.no_grad():
            h_adv = g(x_adv)
            adv_label = model(x_adv).argmax(1)
            res = residual(h_adv).norm(dim=1) / r0
            shift = ((h_adv - h_t) @ B.T).norm(dim=1)
    label, target_label = out_x.argmax(1), out_t.argmax(1)
    if not bool(torch.isfinite(x_adv).all()):
        warnings.warn("feature_collision diverged (non-finite iterate); lower `lr`.", stacklevel=2)
    return FeatureCollision(
        x_adv=x_adv,
        success=adv_label == target_label,
        label=label,
        target_label=target_label,
        adv_label=adv_label,
        distance=(x_adv - x).flatten(1).norm(dim=1),
        pair_distance=(x_target - x).flatten(1).norm(dim=1),
        residual=res,
        null_shift=shift,
        outside_features=outside.cpu(),
        theta=theta,
        steps=steps,
    )
