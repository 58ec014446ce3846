r"""The closed-form input Hessian of the cross-entropy loss and Smooth Surface Regularization.

After Wang et al., "Smoothed geometry for robust attribution" (NeurIPS 2020, ``002`` in
``shared/seeds``: Prop. 3 with its proof in Supp. A6, Def. 7, Supp. B1), who take the closed form
from Singla et al. (2019). With logits :math:`z = f(x) \in R^c`, probabilities
:math:`p = \operatorname{softmax}(z)`, label :math:`y` and :math:`L = -\log p_y`:

.. math::

    \nabla_x L = J^\top (p - e_y), \qquad
    \nabla_x^2 L = J^\top A J + \sum_k (p_k - e_{y,k}) \nabla_x^2 f_k,
    \qquad A = \operatorname{diag}(p) - p p^\top,

with :math:`J = \partial z / \partial x` the ``(c, d)`` input Jacobian of the logits. For a
piecewise-linear (ReLU, max-pool) network :math:`\nabla_x^2 f_k = 0` almost everywhere, so
:math:`H = J^\top A J` exactly there (002 Eqs. 36-42); for a smooth network it is the
Gauss-Newton part only and :func:`input_hessian_ce` warns. ``H`` does not depend on ``y``, and
it is positive semi-definite (002 Eq. 43).

**The c x c route** (002 Supp. B1). With :math:`q = \sqrt p` (so :math:`\|q\| = 1`) and
:math:`M = (I - q q^\top) \operatorname{diag}(q)`, :math:`M^\top M = A`, hence
:math:`H = B B^\top` with :math:`B = J^\top M^\top` (``d x c``), and the nonzero spectrum of
``H`` is that of the ``c x c`` matrix :math:`C = B^\top B = M J J^\top M^\top` (similar to
:math:`A^{1/2} J J^\top A^{1/2}`). An eigenpair :math:`C u = \lambda u` with
:math:`\lambda > 0` gives the unit eigenvector :math:`v = B u / \sqrt\lambda` of ``H``. ``C``
has a zero eigenvalue (eigenvector ``q``, since :math:`A 1 = 0`), so ``H`` has rank at most
``c - 1``.

**SSR** (002 Def. 7): the training objective
:math:`E_{(x, y)}[L(x, y; \theta)] + \beta s\, E_x[\max_i |\xi_i(x)|]` with :math:`\xi_i` the
eigenvalues of ``H`` (all >= 0, so the largest is :math:`\lambda_{\max}(C)`), ``beta`` the penalty
level and ``s`` a scale that makes the term comparable to the loss (002 Supp. C2 used
:math:`s = 10^6` for CIFAR-10 in [0, 255]; a Hessian in [0, 1] units is :math:`255^2` times
larger, so the same setting reads :math:`s \approx 15` there). :func:`ssr_loss` computes it with
a graph to the parameters; ``geomrob.models.TrainConfig(ssr_beta=..., ssr_scale=...)`` trains
with it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._model import check_inputs, eval_mode, functional
from .._validation import (
    check_batch,
    check_int,
    check_labels,
    check_logits,
    check_model,
    check_positive,
    check_real,
    check_tensor,
)
from ..models.surrogate import is_piecewise_linear
from ..results import Result

__all__ = [
    "DENSE_LIMIT",
    "CEHessianEigen",
    "InputHessianCE",
    "SSRLoss",
    "ce_hessian_small_matrix",
    "input_hessian_ce",
    "ssr_loss",
]

#: Largest ``d`` for which :meth:`InputHessianCE.dense` builds the ``(B, d, d)`` matrices.
DENSE_LIMIT = 4096
#: Images per Jacobian pass of :func:`input_hessian_ce` when ``batch_size=None``.
DEFAULT_BATCH = 256


def _softmax_factor(logits: Tensor) -> Tensor:
    r"""``(B, c, c)`` factors :math:`M = (I - q q^\top) \operatorname{diag}(q)`, :math:`q=\sqrt p`.

    :math:`M^\top M = \operatorname{diag}(p) - p p^\top`. ``q`` is ``exp(log_softmax / 2)``, whose
    derivative stays finite where a probability underflows (``sqrt`` would give ``inf``).
    """
    q = torch.exp(0.5 * torch.log_softmax(logits, dim=1))
    eye = torch.eye(logits.shape[1], dtype=logits.dtype, device=logits.device)
    return (eye - q[:, :, None] * q[:, None, :]) * q[:, None, :]


def ce_hessian_small_matrix(jacobian: Tensor, logits: Tensor) -> Tensor:
    r"""The ``c x c`` matrices :math:`C = M J J^\top M^\top` whose spectra are those of ``H``.

    Differentiable (no detaching), so that :func:`ssr_loss` can back-propagate through it.

    Args:
        jacobian: ``(B, c, d)`` input Jacobians :math:`J` of the logits.
        logits: ``(B, c)`` the logits.

    Returns:
        ``(B, c, c)`` symmetric positive semi-definite matrices; their eigenvalues are the
        nonzero eigenvalues of :math:`H = J^\top (\operatorname{diag}(p) - p p^\top) J`, padded
        with zeros.

    Raises:
        TypeError: if an argument is not a floating tensor.
        ValueError: if the shapes do not match.

    Example:
        >>> J = torch.eye(3, dtype=torch.float64).expand(1, 3, 3)
        >>> C = ce_hessian_small_matrix(J, torch.zeros(1, 3, dtype=torch.float64))
        >>> [round(v, 6) for v in torch.linalg.eigvalsh(C)[0].tolist()]  # of diag(p) - pp^T
        [0.0, 0.333333, 0.333333]
    """
    check_tensor(jacobian, "jacobian")
    check_tensor(logits, "logits")
    if jacobian.ndim != 3 or logits.ndim != 2 or jacobian.shape[:2] != logits.shape:
        raise ValueError(
            "`jacobian` must have shape (B, c, d) and `logits` (B, c) with the same B and c; got "
            f"{tuple(jacobian.shape)} and {tuple(logits.shape)}."
        )
    for t, name in ((jacobian, "jacobian"), (logits, "logits")):
        if not t.is_floating_point():
            raise TypeError(f"`{name}` must be a floating-point tensor; got dtype {t.dtype}.")
    K = _softmax_factor(logits) @ jacobian  # (B, c, d): rows of B^T
    C = K @ K.transpose(1, 2)
    return (C + C.transpose(1, 2)) / 2


@dataclass(frozen=True, eq=False)
class CEHessianEigen(Result):
    """Top eigenpairs of the input Hessians of the cross-entropy, one row per image.

    Attributes:
        values: ``(B, k)`` eigenvalues, descending.
        vectors: ``(B, k, d)`` unit eigenvectors of ``H`` (rows); a row is zero where its
            eigenvalue is not positive (any unit vector of the null space of ``H`` would do).
    """

    values: Tensor
    vectors: Tensor


@dataclass(frozen=True, eq=False)
class InputHessianCE(Result):
    r"""The closed-form input Hessians :math:`H_i = J_i^\top (\operatorname{diag}(p_i) - p_i
    p_i^\top) J_i` of the cross-entropy at a batch (002 Prop. 3), held as ``J`` and ``p``.

    Attributes:
        jacobian: ``(B, c, d)`` input Jacobians of the logits (flattened inputs).
        logits: ``(B, c)`` logits.
        probs: ``(B, c)`` softmax probabilities :math:`p`.
        label: ``(B,)`` the labels of ``loss`` and ``gradient`` (the given ``y``, else the
            predicted class).
        loss: ``(B,)`` cross-entropy :math:`-\log p_y`.
        gradient: ``(B, d)`` :math:`\nabla_x L = J^\top (p - e_y)`.
        input_shape: the shape of one input.
        piecewise_linear: whether the model has no smooth module, i.e. whether
            :math:`J^\top A J` is the whole Hessian (almost everywhere) rather than its
            Gauss-Newton part.
    """

    jacobian: Tensor
    logits: Tensor
    probs: Tensor
    label: Tensor
    loss: Tensor
    gradient: Tensor
    input_shape: tuple[int, ...]
    piecewise_linear: bool

    def __len__(self) -> int:
        return self.jacobian.shape[0]

    @property
    def dim(self) -> int:
        """``d``, the number of input features."""
        return self.jacobian.shape[2]

    def small_matrix(self) -> Tensor:
        """``(B, c, c)``: the matrices :math:`C_i` of 002 Supp. B1 (see
        :func:`ce_hessian_small_matrix`)."""
        return ce_hessian_small_matrix(self.jacobian, self.logits)

    def eigenvalues(self) -> Tensor:
        """``(B, c)``: all eigenvalues of ``C_i``, descending: the nonzero spectrum of ``H_i``
        (at most ``c - 1`` of them are nonzero) padded with zeros, without forming ``H_i``."""
        return torch.linalg.eigvalsh(self.small_matrix()).flip(-1)

    def top_eigenvalue(self) -> Tensor:
        """``(B,)``: :math:`\\lambda_{\\max}(H_i)`, the quantity SSR penalises."""
        return self.eigenvalues()[:, 0]

    def top_eigen(self, k: int = 1) -> CEHessianEigen:
        r"""The ``k`` largest eigenpairs of each ``H_i`` through the ``c x c`` matrix.

        ``C u = lambda u`` gives :math:`v = B u / \sqrt\lambda` with :math:`B = J^\top M^\top`.

        Args:
            k: how many, ``1 <= k <= c``.

        Returns:
            A :class:`CEHessianEigen` with ``values (B, k)`` and ``vectors (B, k, d)``.

        Raises:
            ValueError: if ``k`` is out of range.

        Example:
            >>> net = nn.Sequential(nn.Linear(4, 3)).double()
            >>> res = input_hessian_ce(net, torch.ones(2, 4, dtype=torch.float64))
            >>> eig = res.top_eigen()
            >>> Hv = res.matvec(eig.vectors[:, 0])
            >>> torch.allclose(Hv, eig.values * eig.vectors[:, 0])
            True
        """
        c = self.logits.shape[1]
        k = check_int(k, "k", low=1, high=c)
        M = _softmax_factor(self.logits)
        K = M @ self.jacobian  # (B, c, d)
        C = K @ K.transpose(1, 2)
        values, U = torch.linalg.eigh((C + C.transpose(1, 2)) / 2)
        values, U = values.flip(-1)[:, :k], U.flip(-1)[:, :, :k]  # (B, k), (B, c, k)
        scale = values.abs().amax(1, keepdim=True)
        tiny = torch.finfo(values.dtype).eps * c * scale
        positive = (values > tiny) & (values > 0)
        root = torch.where(positive, values, torch.ones_like(values)).sqrt()
        vectors = (U.transpose(1, 2) @ K) / root[:, :, None]  # rows u^T K = (K^T u)^T
        vectors = torch.where(positive[:, :, None], vectors, torch.zeros_like(vectors))
        return CEHessianEigen(values=values, vectors=vectors)

    def matvec(self, v: Tensor) -> Tensor:
        """:math:`H_i v` without forming ``H_i``: :math:`J^\\top (p \\odot Jv - p (p^\\top Jv))`.

        Args:
            v: ``(d,)`` (the same vector for every image), ``(B, d)`` (one per image) or
                ``(B, k, d)`` (a block of ``k`` per image).

        Returns:
            ``(B, d)`` for ``(d,)`` and ``(B, d)`` inputs, ``(B, k, d)`` for blocks.

        Raises:
            TypeError: if ``v`` is not a tensor of the Hessian's dtype.
            ValueError: for a wrong shape or device.
        """
        n, d = len(self), self.dim
        check_tensor(v, "v")
        if v.dtype != self.jacobian.dtype:
            raise TypeError(
                f"`v` has dtype {v.dtype} but the Hessian is {self.jacobian.dtype}; convert with "
                f"`v.to({self.jacobian.dtype})`."
            )
        if v.device != self.jacobian.device:
            raise ValueError(f"`v` is on {v.device} but the Hessian is on {self.jacobian.device}.")
        if v.ndim == 1 and v.shape == (d,):
            V = v.expand(n, 1, d)
        elif v.ndim == 2 and v.shape == (n, d):
            V = v[:, None, :]
        elif v.ndim == 3 and v.shape[0] == n and v.shape[2] == d:
            V = v
        else:
            raise ValueError(
                f"`v` must have shape ({d},), ({n}, {d}) or ({n}, k, {d}); got {tuple(v.shape)}."
            )
        p = self.probs
        Jv = torch.einsum("bcd,bkd->bkc", self.jacobian, V)
        AJv = p[:, None, :] * Jv - p[:, None, :] * (Jv * p[:, None, :]).sum(-1, keepdim=True)
        out = torch.einsum("bcd,bkc->bkd", self.jacobian, AJv)
        return out if v.ndim == 3 else out[:, 0]

    def dense(self, *, max_dim: int = DENSE_LIMIT) -> Tensor:
        """``(B, d, d)``: the Hessians as matrices (tests and small inputs only).

        Raises:
            ValueError: if ``d > max_dim``.
        """
        if self.dim > max_dim:
            raise ValueError(
                f"dense() of {len(self)} Hessians of size {self.dim} x {self.dim} exceeds "
                f"max_dim={max_dim}: use matvec / top_eigen, or raise `max_dim` knowingly."
            )
        K = _softmax_factor(self.logits) @ self.jacobian
        H = K.transpose(1, 2) @ K
        return (H + H.transpose(1, 2)) / 2

    def operator(self, i: int):  # -> geomrob.curvature.operators.FunctionOperator
        """Image ``i``'s Hessian as a symmetric :class:`~geomrob.curvature.FunctionOperator`
        (for :func:`geomrob.lanczos` or ``to_scipy()``).

        Raises:
            ValueError: if ``i`` is out of range.
        """
        from ..curvature.operators import FunctionOperator

        i = check_int(i, "i", low=0, high=len(self) - 1)
        J, p = self.jacobian[i], self.probs[i]

        def block(V: Tensor) -> Tensor:
            U = V @ J.T  # (b, c)
            return (p * U - (U @ p)[:, None] * p) @ J

        return FunctionOperator(
            lambda v: block(v[None])[0], self.dim, like=J, symmetric=True, matmat=block
        )


def _jacobians(model: nn.Module, x: Tensor, per_pass: int) -> Tensor:
    """``(B, c, d)`` by ``vmap(jacrev)`` over images, ``per_pass`` images at a time."""
    call = functional(model)

    def single(xi: Tensor) -> Tensor:
        return call(xi.unsqueeze(0)).squeeze(0)

    jac = torch.func.vmap(torch.func.jacrev(single))
    parts = [jac(x[i : i + per_pass].detach()) for i in range(0, x.shape[0], per_pass)]
    J = torch.cat(parts)
    return J.reshape(J.shape[0], J.shape[1], -1)


def input_hessian_ce(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    batch_size: int | None = None,
) -> InputHessianCE:
    r"""The closed-form input Hessian of the cross-entropy loss (002 Prop. 3, Supp. A6 and B1).

    :math:`H = J^\top (\operatorname{diag}(p) - p p^\top) J` per image, held as the Jacobian
    ``J`` of the logits (``torch.func.vmap`` of ``jacrev``) and the probabilities ``p``; the
    result gives the dense matrix, products and the top eigenpairs through the ``c x c``
    matrix. Exact almost everywhere for a piecewise-linear network; for a smooth one it drops
    :math:`\sum_k (p_k - e_{y,k}) \nabla^2 f_k` (the Gauss-Newton part) and a warning says so.

    Args:
        model: classifier ``(B, *input_shape) -> (B, c)`` logits (evaluated in eval mode, no
            parameter gradients).
        x: ``(B, *input_shape)`` inputs on the model's device and dtype.
        y: ``(B,)`` labels of the loss and its gradient (``None``: the predicted classes).
            ``H`` itself does not depend on them.
        batch_size: images per Jacobian pass (``None``: 256); changes nothing but memory.

    Returns:
        An :class:`InputHessianCE` (detached tensors).

    Raises:
        TypeError, ValueError: for a bad model, input, label or option (the message names it).

    Warns:
        UserWarning: if the model has smooth modules (see
            :func:`geomrob.models.is_piecewise_linear`).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).double()
        >>> x = torch.randn(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> res = input_hessian_ce(net, x)
        >>> H = res.dense()
        >>> H.shape, torch.allclose(torch.linalg.eigvalsh(H)[:, -1], res.top_eigenvalue())
        (torch.Size([2, 4, 4]), True)
    """
    per_pass = DEFAULT_BATCH if batch_size is None else check_int(batch_size, "batch_size", low=1)
    with eval_mode(model):
        logits = check_inputs(model, x)
        n, c = logits.shape
        label = logits.argmax(1) if y is None else check_labels(y, n, "y", num_classes=c)
        label = label.to(device=x.device, dtype=torch.long)
        piecewise = is_piecewise_linear(model)
        if not piecewise:
            warnings.warn(
                "The model has smooth modules (not piecewise linear): J^T (diag(p) - pp^T) J is "
                "only the Gauss-Newton part of the input Hessian of the cross-entropy; it drops "
                "the second-order term sum_k (p_k - y_k) Hess f_k.",
                UserWarning,
                stacklevel=2,
            )
        J = _jacobians(model, x, per_pass).detach()
    logits = logits.detach()
    probs = torch.softmax(logits, dim=1)
    loss = F.cross_entropy(logits, label, reduction="none")
    onehot = F.one_hot(label, c).to(probs.dtype)
    gradient = torch.einsum("bcd,bc->bd", J, probs - onehot)
    return InputHessianCE(
        jacobian=J,
        logits=logits,
        probs=probs,
        label=label,
        loss=loss,
        gradient=gradient,
        input_shape=tuple(x.shape[1:]),
        piecewise_linear=piecewise,
    )


@dataclass(frozen=True, eq=False)
class SSRLoss(Result):
    r"""The Smooth Surface Regularization objective of a minibatch (002 Def. 7).

    Every tensor keeps its graph to the parameters.

    Attributes:
        loss: scalar :math:`\operatorname{mean}_i L_i + \beta s \operatorname{mean}_i
            \lambda_{\max}(H_i)`, what the optimiser minimises.
        cross_entropy: scalar, the mean cross-entropy.
        penalty: ``(B,)`` :math:`\lambda_{\max}(H_i)`, the top eigenvalue of the closed-form
            input Hessian of the loss (before ``beta`` and ``scale``).
        logits: ``(B, c)`` the logits of the forward pass.
        beta: the penalty level :math:`\beta`.
        scale: the scale :math:`s`.
    """

    loss: Tensor
    cross_entropy: Tensor
    penalty: Tensor
    logits: Tensor
    beta: float
    scale: float


def ssr_loss(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    beta: float,
    scale: float = 1.0,
) -> SSRLoss:
    r"""Cross-entropy plus the SSR penalty :math:`\beta s \operatorname{mean}_i
    \lambda_{\max}(J_i^\top A_i J_i)` (002 Def. 7 with Prop. 3 and Supp. B1), differentiable.

    One forward pass gives the logits of both terms; the ``c`` rows of each Jacobian come from
    ``c`` backward passes with ``create_graph=True``, and :math:`\lambda_{\max}` from
    ``eigvalsh`` of the ``c x c`` matrix :func:`ce_hessian_small_matrix`, so that the penalty
    back-propagates to the parameters. The model is used in its current mode: in training mode
    a batch-norm layer normalises by the batch, and the Jacobian rows are then those of the
    batch function (as in the loss they are added to), not per-image ones.

    Args:
        model: classifier ``(B, *input_shape) -> (B, c)`` logits.
        x: ``(B, *input_shape)`` inputs (not differentiated: a detached copy is used).
        y: ``(B,)`` integer labels.
        beta: penalty level :math:`\beta \ge 0` (002 used 0.3).
        scale: :math:`s > 0`, the scale of the eigenvalue (see the module docstring).

    Returns:
        An :class:`SSRLoss`.

    Raises:
        TypeError, ValueError: for a bad model, input, label or option (the message names it).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> x = torch.rand(5, 4, generator=torch.Generator().manual_seed(0))
        >>> y = torch.tensor([0, 1, 2, 0, 1])
        >>> out = ssr_loss(net, x, y, beta=0.3, scale=10.0)
        >>> out.loss.backward()
        >>> bool(out.penalty.min() >= 0) and net[0].weight.grad is not None
        True
    """
    model = check_model(model)
    x = check_batch(x, "x")
    beta = check_real(beta, "beta", low=0.0)
    scale = check_positive(scale, "scale")
    xr = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = check_logits(model(xr), x.shape[0])
        n, c = logits.shape
        y = check_labels(y, n, "y", num_classes=c).to(device=logits.device, dtype=torch.long)
        ce = F.cross_entropy(logits, y)
        rows = []
        for k in range(c):
            (g,) = torch.autograd.grad(
                logits[:, k].sum(), xr, create_graph=True, retain_graph=True, allow_unused=True
            )
            rows.append(torch.zeros_like(xr) if g is None else g)
        J = torch.stack(rows, dim=1).reshape(n, c, -1)
        penalty = torch.linalg.eigvalsh(ce_hessian_small_matrix(J, logits))[:, -1]
        loss = ce + beta * scale * penalty.mean()
    return SSRLoss(
        loss=loss, cross_entropy=ce, penalty=penalty, logits=logits, beta=beta, scale=scale
    )
