"""DeepFool: minimal l2 perturbations (Moosavi-Dezfooli, Fawzi and Frossard, CVPR 2016)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._model import check_inputs, eval_mode, functional
from .._validation import check_bounds, check_int, check_real
from ..results import Result


@dataclass(frozen=True, eq=False)
class DeepFoolResult(Result):
    """Minimal perturbations, one row per input (Moosavi-Dezfooli et al., 2016).

    Attributes:
        r: ``(B, *input_shape)`` total perturbation, overshoot included; ``x + r`` crosses
            the boundary when ``converged``.
        x_adv: ``(B, *input_shape)`` the point reached, ``x + r``.
        label: ``(B,)`` the original prediction ``k(x)``.
        adv_label: ``(B,)`` the prediction at ``x_adv``.
        iterations: ``(B,)`` iterations used.
        converged: ``(B,)`` bool, ``adv_label != label``.
    """

    r: Tensor
    x_adv: Tensor
    label: Tensor
    adv_label: Tensor
    iterations: Tensor
    converged: Tensor

    @property
    def norms(self) -> Tensor:
        """``(B,)`` l2 norms of ``r``."""
        return self.r.flatten(1).norm(dim=1)

    def statistics(self, x: Tensor, y: Tensor | None = None) -> dict[str, float]:
        """Summary over the batch: the robustness numbers papers report for DeepFool.

        Norm statistics are over the converged inputs only (the others have no minimal
        perturbation); ``success_rate`` says how many that is.

        Args:
            x: ``(B, *input_shape)`` the inputs the result is for.
            y: ``(B,)`` optional true labels, for the clean accuracy.

        Returns:
            ``n``, ``success_rate``, ``mean_norm``, ``median_norm``, ``mean_relative_norm``
            (mean of ``||r|| / ||x||``, the rho_adv of DeepFool's paper), ``mean_linf``,
            ``mean_iterations`` and, with ``y``, ``clean_accuracy``.
        """
        if x.shape != self.r.shape:
            raise ValueError(
                f"`x` must have the shape of the result, {tuple(self.r.shape)}; "
                f"got {tuple(x.shape)}."
            )
        ok = self.converged
        norms = self.norms[ok]
        rel = norms / x.flatten(1).norm(dim=1)[ok]
        nan = float("nan")
        stats = {
            "n": int(x.shape[0]),
            "success_rate": float(ok.double().mean()),
            "mean_norm": float(norms.mean()) if norms.numel() else nan,
            "median_norm": float(norms.median()) if norms.numel() else nan,
            "mean_relative_norm": float(rel.mean()) if norms.numel() else nan,
            "mean_linf": float(self.r.flatten(1).abs().amax(1)[ok].mean())
            if norms.numel()
            else nan,
            "mean_iterations": float(self.iterations.double().mean()),
        }
        if y is not None:
            stats["clean_accuracy"] = float((self.label == y.to(self.label.device)).double().mean())
        return stats


def candidate_jacobian(
    call, x: Tensor, classes: Tensor, *, chunk_size: int | None = None
) -> tuple[Tensor, Tensor]:
    """Logits and gradients of selected logits, batched over images in one transform.

    Args:
        call: ``(B, *input_shape) -> (B, L)``, a functional model (see ``_model.functional``).
        x: ``(B, *input_shape)`` inputs.
        classes: ``(B, K)`` class indices per input.
        chunk_size: passed to ``torch.func.vmap`` to bound memory.

    Returns:
        ``(logits (B, L), jac (B, K, *input_shape))``, where
        ``jac[i, j] = grad f_{classes[i, j]}(x_i)``.
    """

    def single(xi: Tensor, ci: Tensor) -> tuple[Tensor, Tensor]:
        out = call(xi.unsqueeze(0)).squeeze(0)
        return out[ci], out

    jac, logits = torch.func.vmap(torch.func.jacrev(single, has_aux=True), chunk_size=chunk_size)(
        x, classes
    )
    return logits, jac


def deepfool(
    model: nn.Module,
    x: Tensor,
    *,
    overshoot: float = 0.02,
    max_iter: int = 50,
    num_candidates: int = 10,
    bounds: tuple[float, float] | None = None,
    batch_size: int | None = None,
) -> DeepFoolResult:
    r"""Multi-class l2 DeepFool, batched over images.

    At the iterate :math:`x_i`, for candidate classes :math:`c \ne k_0` (the top
    ``num_candidates`` logits of :math:`x_0`),
    :math:`w_c = \nabla f_c(x_i) - \nabla f_{k_0}(x_i)`, :math:`g_c = f_c(x_i) - f_{k_0}(x_i)`;
    :math:`l = \arg\min_c |g_c| / \|w_c\|`, the step is
    :math:`r_i = (|g_l| + 10^{-4}) w_l / \|w_l\|^2`, and
    :math:`x_{i+1} = x_0 + (1 + \text{overshoot}) \sum_i r_i` until the label changes or
    ``max_iter``. The gradients of all candidates of all unfinished images come from one
    ``vmap(jacrev)`` call per iteration; finished images drop out of the batch.

    Args:
        model: classifier ``(B, *input_shape) -> (B, L)`` logits (evaluated in eval mode).
        x: ``(B, *input_shape)`` inputs, same device and dtype as the model.
        overshoot: the total perturbation is scaled by ``1 + overshoot``.
        max_iter: iteration budget per image.
        num_candidates: number of top classes considered (``k_0`` included), at most ``L``.
        bounds: optional box ``(lo, hi)``: each iterate is projected onto it (``x`` must lie
            inside). Without it nothing is clipped.
        batch_size: images per Jacobian call (``None``: all at once).

    Returns:
        A :class:`DeepFoolResult`; images that did not change label within ``max_iter`` have
        ``converged = False`` (a warning says how many), and are kept.

    Raises:
        TypeError, ValueError: for a bad model, input or option (the message names it).

    Example:
        >>> lin = torch.nn.Linear(2, 2).double()
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        ...     _ = lin.bias.zero_()
        >>> res = deepfool(lin, torch.tensor([[0.5, 3.0]], dtype=torch.float64), overshoot=0.0)
        >>> res.adv_label.tolist(), round(res.r[0, 0].item(), 4)
        ([1], -0.5)
    """
    overshoot = check_real(overshoot, "overshoot", low=0.0)
    max_iter = check_int(max_iter, "max_iter", low=1)
    num_candidates = check_int(num_candidates, "num_candidates", low=2)
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", low=1)
    with eval_mode(model):
        logits0 = check_inputs(model, x)
        box = check_bounds(bounds, x)
        call = functional(model)
        n, num_classes = logits0.shape
        k = min(num_candidates, num_classes)
        candidates = logits0.topk(k, dim=1).indices  # (n, k); column 0 is k0
        label = candidates[:, 0].clone()
        shape = x.shape[1:]
        r_tot = torch.zeros_like(x)
        x_adv = x.detach().clone()
        iterations = torch.zeros(n, dtype=torch.long, device=x.device)
        active = torch.arange(n, device=x.device)
        # The label at the current iterate; the loop runs only on images that still have k0.
        current = label.clone()
        for _ in range(max_iter):
            active = active[current[active] == label[active]]
            if active.numel() == 0:
                break
            xa, ca = x_adv[active], candidates[active]
            logits, jac = _jacobian_chunks(call, xa, ca, batch_size)
            jac = jac.flatten(2)  # (a, k, d)
            f = logits.gather(1, ca)  # (a, k)
            w = jac[:, 1:] - jac[:, :1]  # (a, k-1, d)
            g = f[:, 1:] - f[:, :1]  # (a, k-1), negative while k0 is on top
            w_norm = w.norm(dim=2)
            ratio = g.abs() / w_norm.clamp_min(torch.finfo(w.dtype).tiny)
            ratio = torch.where(w_norm > 0, ratio, torch.full_like(ratio, math.inf))
            best = ratio.argmin(dim=1)
            w_l = w[torch.arange(len(active)), best]
            g_l = g[torch.arange(len(active)), best]
            wl_norm2 = w_l.pow(2).sum(1).clamp_min(torch.finfo(w.dtype).tiny)
            step = ((g_l.abs() + 1e-4) / wl_norm2).unsqueeze(1) * w_l
            r_tot[active] += step.view(-1, *shape)
            new = x[active] + (1.0 + overshoot) * r_tot[active]
            if box is not None:
                new = new.clamp(box[0], box[1])
            x_adv[active] = new
            iterations[active] += 1
            with torch.no_grad():
                current[active] = call(new).argmax(1)
        r = x_adv - x
        converged = current != label
    not_conv = int((~converged).sum())
    if not_conv:
        warnings.warn(
            f"DeepFool did not change the label of {not_conv} of {n} inputs within "
            f"max_iter={max_iter}; they are marked converged=False.",
            stacklevel=2,
        )
    return DeepFoolResult(
        r=r.detach(),
        x_adv=x_adv.detach(),
        label=label,
        adv_label=current,
        iterations=iterations,
        converged=converged,
    )


def _jacobian_chunks(call, x: Tensor, classes: Tensor, batch_size: int | None):
    if batch_size is None or batch_size >= len(x):
        return candidate_jacobian(call, x, classes)
    parts = [
        candidate_jacobian(call, x[i : i + batch_size], classes[i : i + batch_size])
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
