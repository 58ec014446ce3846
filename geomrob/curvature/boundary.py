"""Boundary points z = x + t r on the DeepFool segment, where F(z) = f_j(z) - f_k(z) = 0."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._model import check_inputs, eval_mode, functional
from .._validation import check_int, check_positive
from ..attacks.deepfool import DeepFoolResult, deepfool
from ..results import Result


@dataclass(frozen=True, eq=False)
class BoundaryPoints(Result):
    """Points on the decision boundary between ``label`` and ``adv_label``, one per input.

    With ``F = f_{adv_label} - f_{label}`` (negative at ``x``, positive across the boundary):

    Attributes:
        x: ``(B, *input_shape)`` the inputs.
        z: ``(B, *input_shape)`` boundary points, ``F(z) ~ 0``, on the segment ``[x, x + r_df]``.
        r: ``(B, *input_shape)`` ``z - x``, the minimal perturbation to the boundary.
        label: ``(B,)`` ``k(x)``.
        adv_label: ``(B,)`` the class across the boundary.
        grad: ``(B, *input_shape)`` ``grad F(z)``; the unit normal ``grad / ||grad||`` points
            away from ``x``.
        residual: ``(B,)`` ``F(z)``.
        converged: ``(B,)`` bool: DeepFool crossed the boundary and ``|F(z)| <= tol |F(x)|``.
        t: ``(B,)`` ``z = x + t r_df`` with ``r_df`` DeepFool's total perturbation.
    """

    x: Tensor
    z: Tensor
    r: Tensor
    label: Tensor
    adv_label: Tensor
    grad: Tensor
    residual: Tensor
    converged: Tensor
    t: Tensor

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def normals(self) -> Tensor:
        """``(B, d)`` unit normals ``grad F(z) / ||grad F(z)||`` (pointing away from x)."""
        g = self.grad.flatten(1)
        return g / g.norm(dim=1, keepdim=True)

    def select(self, index: Tensor) -> BoundaryPoints:
        """The points at ``index`` (a bool mask or integer indices)."""
        return BoundaryPoints(**{f: getattr(self, f)[index] for f in self.__dataclass_fields__})


def margin(call, z: Tensor, label: Tensor, adv_label: Tensor) -> Tensor:
    """``F(z) = f_adv(z) - f_label(z)`` per row."""
    out = call(z)
    return out.gather(1, adv_label[:, None]).squeeze(1) - out.gather(1, label[:, None]).squeeze(1)


def margin_grad(call, z: Tensor, label: Tensor, adv_label: Tensor) -> tuple[Tensor, Tensor]:
    """``(F(z), grad F(z))`` per row, batched (rows are independent in eval mode)."""

    def total(zz: Tensor) -> tuple[Tensor, Tensor]:
        values = margin(call, zz, label, adv_label)
        return values.sum(), values

    grad, values = torch.func.grad(total, has_aux=True)(z)
    return values, grad


def boundary_points(
    model: nn.Module,
    x: Tensor,
    *,
    deepfool_result: DeepFoolResult | None = None,
    tol: float = 1e-6,
    max_iter: int = 100,
    **deepfool_kw: object,
) -> BoundaryPoints:
    r"""Points of the decision boundary closest to ``x`` along DeepFool's perturbation.

    With :math:`k = k(x)`, :math:`j` the class DeepFool reached and
    :math:`F = f_j - f_k`, ``z`` is the root of :math:`t \mapsto F(x + t r)` on ``[0, 1]``
    (``F(x) < 0 < F(x + r)``), found by the Illinois variant of regula falsi (a bracketing
    method, superlinear and never leaving the segment) until
    :math:`|F(z)| \le \text{tol} \cdot |F(x)|`.

    Args:
        model: classifier returning logits.
        x: ``(B, *input_shape)`` inputs.
        deepfool_result: a :func:`deepfool` result for ``x`` (computed when not given).
        tol: relative tolerance on ``|F(z)|``.
        max_iter: root-finding iterations.
        **deepfool_kw: options of :func:`deepfool` (only when ``deepfool_result`` is None).

    Returns:
        :class:`BoundaryPoints`. Inputs DeepFool did not move across a boundary keep
        ``z = x + r``, ``t = 1`` and ``converged = False`` (they are not dropped).

    Example:
        >>> lin = torch.nn.Linear(2, 2).double()
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        ...     _ = lin.bias.zero_()
        >>> bp = boundary_points(lin, torch.tensor([[0.5, 3.0]], dtype=torch.float64))
        >>> bp.z.tolist(), bp.converged.tolist()
        ([[0.0, 3.0]], [True])
    """
    tol = check_positive(tol, "tol")
    max_iter = check_int(max_iter, "max_iter", low=1)
    if deepfool_result is None:
        deepfool_result = deepfool(model, x, **deepfool_kw)
    elif deepfool_kw:
        raise TypeError(
            f"Give DeepFool options only when `deepfool_result` is None; got {sorted(deepfool_kw)}."
        )
    elif not isinstance(deepfool_result, DeepFoolResult):
        raise TypeError(
            f"`deepfool_result` must be a DeepFoolResult; got {type(deepfool_result).__name__}."
        )
    elif deepfool_result.r.shape != x.shape:
        raise ValueError(
            f"`deepfool_result` is for inputs of shape {tuple(deepfool_result.r.shape)}, "
            f"`x` has shape {tuple(x.shape)}."
        )
    res = deepfool_result
    with eval_mode(model):
        check_inputs(model, x)
        call = functional(model)
        label, adv = res.label, res.adv_label
        n = x.shape[0]
        view = (n,) + (1,) * (x.ndim - 1)
        with torch.no_grad():
            f_lo = margin(call, x, label, adv)  # F(x) < 0 for crossed points
            f_hi = margin(call, x + res.r, label, adv)
        crossed = res.converged & (f_lo < 0) & (f_hi > 0)
        lo = torch.zeros(n, dtype=x.dtype, device=x.device)
        hi = torch.ones(n, dtype=x.dtype, device=x.device)
        t = torch.ones(n, dtype=x.dtype, device=x.device)
        f_t = f_hi.clone()
        target = tol * f_lo.abs()
        done = ~crossed | (f_hi.abs() <= target)
        side = torch.zeros(n, dtype=torch.long, device=x.device)  # Illinois: last end kept
        with torch.no_grad():
            for _ in range(max_iter):
                if bool(done.all()):
                    break
                # Regula falsi point of the bracket [lo, hi] with values f_lo < 0 < f_hi.
                t_new = lo - f_lo * (hi - lo) / (f_hi - f_lo)
                t_new = torch.where(done, t, t_new)
                f_new = margin(call, x + t_new.view(view) * res.r, label, adv)
                go_hi = (f_new > 0) & ~done  # the root is in [lo, t_new]
                go_lo = (f_new <= 0) & ~done
                # Illinois: halve the value at the end that stayed twice in a row.
                f_lo = torch.where(go_hi & (side == 1), f_lo / 2, f_lo)
                f_hi = torch.where(go_lo & (side == -1), f_hi / 2, f_hi)
                hi = torch.where(go_hi, t_new, hi)
                f_hi = torch.where(go_hi, f_new, f_hi)
                lo = torch.where(go_lo, t_new, lo)
                f_lo = torch.where(go_lo, f_new, f_lo)
                side = torch.where(go_hi, 1, torch.where(go_lo, -1, side))
                t = torch.where(done, t, t_new)
                f_t = torch.where(done, f_t, f_new)
                done = done | (f_new.abs() <= target)
        z = (x + t.view(view) * res.r).detach()
        residual, grad = margin_grad(call, z, label, adv)
    converged = crossed & (residual.abs() <= target)
    bad = int((~converged).sum())
    if bad:
        warnings.warn(
            f"{bad} of {n} boundary points did not converge (DeepFool did not cross, or "
            f"|F(z)| > tol |F(x)| after {max_iter} iterations); they are marked converged=False.",
            stacklevel=2,
        )
    return BoundaryPoints(
        x=x.detach(),
        z=z,
        r=z - x.detach(),
        label=label,
        adv_label=adv,
        grad=grad.detach(),
        residual=residual.detach(),
        converged=converged,
        t=t,
    )
