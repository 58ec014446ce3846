"""Box-constrained L-BFGS targeted attack (Szegedy et al., "Intriguing properties of neural
networks", ICLR 2014)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import Bounds, minimize
from torch import Tensor, nn

from .._model import check_inputs, eval_mode, functional
from .._validation import check_bounds, check_int, check_positive, check_real, check_target
from ..results import Result

__all__ = ["LBFGSResult", "lbfgs"]

#: Factor by which ``c`` is multiplied (or divided) while bracketing the largest successful ``c``.
BRACKET_FACTOR = 10.0


@dataclass(frozen=True, eq=False)
class LBFGSResult(Result):
    """Targeted perturbations found by box-constrained L-BFGS, one row per input.

    Attributes:
        x_adv: ``(B, *input_shape)`` the adversarial input ``x + r`` (inside ``bounds``).
        r: ``(B, *input_shape)`` the perturbation: the smallest-norm successful one found by
            the search over ``c``; for an image where no ``c`` succeeded, the solution at the
            last ``c`` tried (the smallest one reached by the search).
        label: ``(B,)`` the original prediction ``k(x)``.
        target: ``(B,)`` the target classes.
        adv_label: ``(B,)`` the prediction at ``x_adv``.
        success: ``(B,)`` bool, ``adv_label == target``.
        c: ``(B,)`` float64, the penalty weight that produced ``r``; ``nan`` where no ``c``
            succeeded, ``inf`` where ``target == label`` (``r = 0``, no optimisation).
        norm: ``(B,)`` the l2 norm of ``r``.
    """

    x_adv: Tensor
    r: Tensor
    label: Tensor
    target: Tensor
    adv_label: Tensor
    success: Tensor
    c: Tensor
    norm: Tensor

    @property
    def success_rate(self) -> float:
        """Fraction of inputs that reached their target."""
        return float(self.success.double().mean())


def _check_c_range(c_range: object) -> tuple[float, float]:
    if not (isinstance(c_range, (tuple, list)) and len(c_range) == 2):
        raise TypeError(f"`c_range` must be a pair (c_min, c_max); got {c_range!r}.")
    lo = check_positive(c_range[0], "c_range[0]")
    hi = check_positive(c_range[1], "c_range[1]")
    if not lo <= hi:
        raise ValueError(f"`c_range` must satisfy 0 < c_min <= c_max; got {c_range!r}.")
    return lo, hi


def lbfgs(
    model: nn.Module,
    x: Tensor,
    target: int | Tensor,
    *,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    c: float | None = None,
    c_range: tuple[float, float] = (1e-4, 1e4),
    search_steps: int = 10,
    max_iter: int = 100,
    tol: float = 1e-6,
    progress: bool = False,
) -> LBFGSResult:
    r"""Szegedy et al.'s targeted attack: box-constrained L-BFGS with a search over ``c``.

    The paper wants the smallest ``r`` with :math:`k(x + r) = l` and :math:`x + r` in the box,
    and approximates it by solving, for a penalty weight ``c > 0``,

    .. math:: \min_r\; c\,\|r\|_2^2 + \mathrm{CE}(f(x + r), l)
              \quad\text{subject to}\quad x + r \in [\mathrm{lo}, \mathrm{hi}]^d

    with ``scipy.optimize.minimize(method="L-BFGS-B")``, one image at a time, started at
    ``r = 0``. The objective is evaluated in float64 numpy; the cross-entropy of the logits and
    its gradient come from torch autograd in the model's dtype.

    **Squared norm.** The paper (and the slides in ``shared/seeds/004``) write
    :math:`c\,|r|`; we use :math:`c\,\|r\|_2^2`, which is smooth at the starting point
    ``r = 0`` (where :math:`\|r\|` has no gradient and L-BFGS-B would start on a kink), as
    the reference implementations (Carlini and Wagner's, foolbox's) do. Both forms have the same
    stationary points along the search: :math:`c\, r/\|r\| = -\nabla \mathrm{CE}` and
    :math:`2c'\, r = -\nabla \mathrm{CE}` coincide for :math:`c = 2c'\|r\|`, so the family of
    solutions swept by ``c`` is the same; only the value of ``c`` attached to each differs.

    **Which c.** The slides say "line-search to find the minimum ``c > 0`` for which the
    minimizer ``r`` satisfies ``f(x + r) = l``". With ``c`` multiplying the norm, a *smaller*
    ``c`` allows a *larger* perturbation (for exact minimisers :math:`\|r(c)\|` is
    non-increasing in ``c``), so the smallest perturbation comes from the *largest* ``c``
    that still reaches the target (equivalently the smallest :math:`c'` in
    :math:`\|r\| + c'\,\mathrm{loss}`). We read the paper that way. The search, per image:
    start at the geometric mean of ``c_range``; bracket by multiplying ``c`` by
    ``BRACKET_FACTOR`` (10) while the target is reached and dividing while it is not, staying
    in ``c_range``; once a successful ``c_ok`` and a failing ``c_fail > c_ok`` are known,
    bisect geometrically, ``c = sqrt(c_ok * c_fail)``. It stops after ``search_steps``
    L-BFGS-B solves (bracketing included), when ``c_max`` succeeds, or when ``c_min`` fails.
    Since the problem is not convex, ``r`` is the *smallest-norm successful* solution over all
    solves, not necessarily the one at the largest ``c``. With a fixed ``c`` there is one solve
    per image.

    **Target equal to the prediction.** Allowed, so that a batch can take arbitrary targets:
    the minimum-norm answer is ``r = 0``; no optimisation is run, ``success`` is True and
    ``c`` is ``inf``.

    Args:
        model: classifier ``(B, *input_shape) -> (B, L)`` logits (evaluated in eval mode).
        x: ``(B, *input_shape)`` inputs, same device and dtype as the model.
        target: the class ``l`` to reach: an int (the same for all inputs) or a ``(B,)``
            integer tensor, in ``[0, L)``.
        bounds: the box ``(lo, hi)`` for ``x + r`` (``x`` must lie inside); ``None``: no box.
        c: a fixed penalty weight (> 0): one solve per image, no search.
        c_range: ``(c_min, c_max)``, the interval searched when ``c`` is None.
        search_steps: L-BFGS-B solves per image in the search, >= 1.
        max_iter: iterations per L-BFGS-B solve (scipy's ``maxiter``).
        tol: scipy's ``tol`` for L-BFGS-B (its ``ftol`` and ``gtol``).
        progress: show a tqdm bar over the images.

    Returns:
        An :class:`LBFGSResult`. Images that missed their target are kept, with
        ``success = False`` and ``c = nan``; a warning says how many.

    Raises:
        TypeError, ValueError: for a bad model, input, target or option (the message names it).

    Example:
        >>> lin = torch.nn.Linear(2, 2).double()
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        ...     _ = lin.bias.zero_()
        >>> x = torch.tensor([[0.5, 3.0]], dtype=torch.float64)
        >>> res = lbfgs(lin, x, 1, bounds=None)
        >>> res.success.tolist(), res.adv_label.tolist()
        ([True], [1])
        >>> 0.5 < res.norm.item() < 0.55  # the distance to the boundary is 0.5
        True
    """
    if c is not None:
        c = check_positive(c, "c")
    c_min, c_max = _check_c_range(c_range)
    search_steps = check_int(search_steps, "search_steps", low=1)
    max_iter = check_int(max_iter, "max_iter", low=1)
    tol = check_real(tol, "tol", low=0.0, low_inclusive=False)
    with eval_mode(model):
        logits0 = check_inputs(model, x)
        box = check_bounds(bounds, x)
        n, num_classes = logits0.shape
        tgt = check_target(target, n, num_classes, x.device)
        label = logits0.argmax(1)
        call = functional(model)
        x = x.detach()
        x_adv = x.clone()
        c_used = torch.full((n,), math.nan, dtype=torch.float64)
        indices = range(n)
        if progress:
            from tqdm.auto import tqdm

            indices = tqdm(indices, desc=f"L-BFGS attack ({x.device})", unit="image")
        for i in indices:
            if label[i] == tgt[i]:
                c_used[i] = math.inf
                continue
            solver = _Solver(call, x[i : i + 1], int(tgt[i]), box, max_iter, tol)
            if c is not None:
                xa, hit = solver.solve(c)
                x_adv[i] = xa[0]
                if hit:
                    c_used[i] = c
            else:
                xa, ci = _search(solver, c_min, c_max, search_steps)
                x_adv[i] = xa[0]
                c_used[i] = ci
        with torch.no_grad():
            adv_label = call(x_adv).argmax(1)
    r = x_adv - x
    success = adv_label == tgt
    missed = int((~success).sum())
    if missed:
        warnings.warn(
            f"L-BFGS did not reach the target for {missed} of {n} inputs; they are marked "
            "success=False" + (" (try a smaller `c`)." if c is not None else " (widen `c_range`)."),
            stacklevel=2,
        )
    return LBFGSResult(
        x_adv=x_adv,
        r=r,
        label=label,
        target=tgt,
        adv_label=adv_label,
        success=success,
        c=torch.where(success, c_used.to(x.device), math.nan),
        norm=r.flatten(1).norm(dim=1),
    )


class _Solver:
    """One image: ``solve(c)`` minimises ``c ||r||^2 + CE(f(x + r), target)`` over the box."""

    def __init__(self, call, x: Tensor, target: int, box, max_iter: int, tol: float) -> None:
        self.call, self.x, self.box = call, x, box
        self.max_iter, self.tol = max_iter, tol
        self.y = torch.tensor([target], device=x.device)
        x_np = x.flatten().double().cpu().numpy()
        # Optimise over r; the box on x + r becomes lo - x <= r <= hi - x.
        self.bounds = None if box is None else Bounds(box[0] - x_np, box[1] - x_np)

    def objective(self, r_np: np.ndarray, c: float) -> tuple[float, np.ndarray]:
        r = torch.from_numpy(r_np).to(self.x.device, self.x.dtype).view_as(self.x)
        # Plain reverse mode on the input: twice as fast as torch.func.grad for one small image
        # (this runs thousands of times per image); ``call`` has detached parameters.
        with torch.enable_grad():
            r.requires_grad_(True)
            ce = F.cross_entropy(self.call(self.x + r), self.y)
            (grad,) = torch.autograd.grad(ce, r)
        value = c * float(r_np @ r_np) + float(ce.detach())
        return value, 2.0 * c * r_np + grad.detach().double().cpu().numpy().ravel()

    def solve(self, c: float) -> tuple[Tensor, bool]:
        """The L-BFGS-B solution ``x + r`` (clipped to the box) and whether it hits the target."""
        res = minimize(
            self.objective,
            np.zeros(self.x.numel()),
            args=(c,),
            jac=True,
            method="L-BFGS-B",
            bounds=self.bounds,
            tol=self.tol,
            options={"maxiter": self.max_iter},
        )
        r = torch.from_numpy(res.x).to(self.x.device, self.x.dtype).view_as(self.x)
        xa = self.x + r
        if self.box is not None:
            xa = xa.clamp(self.box[0], self.box[1])
        with torch.no_grad():
            hit = int(self.call(xa).argmax(1)) == int(self.y)
        return xa, hit


def _search(solver: _Solver, c_min: float, c_max: float, steps: int) -> tuple[Tensor, float]:
    """Bracket, then bisect on log c, for the largest c that reaches the target.

    Returns the smallest-norm successful ``x + r`` and its ``c``, or the last solution and
    ``nan`` when no ``c`` succeeded.
    """
    c = math.sqrt(c_min * c_max)
    c_ok = c_fail = None
    best, best_norm, best_c = None, math.inf, math.nan
    last = None
    for _ in range(steps):
        xa, hit = solver.solve(c)
        last = xa
        if hit:
            norm = float((xa - solver.x).norm())
            if norm < best_norm:
                best, best_norm, best_c = xa, norm, c
            c_ok = c
            if c_fail is None:
                if c >= c_max:
                    break
                c = min(c * BRACKET_FACTOR, c_max)
                continue
        else:
            c_fail = c
            if c_ok is None:
                if c <= c_min:
                    break
                c = max(c / BRACKET_FACTOR, c_min)
                continue
        c = math.sqrt(c_ok * c_fail)
    if best is None:
        return last, math.nan
    return best, best_c
