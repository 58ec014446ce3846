"""Gradient attacks in an l_p ball: FGM (Goodfellow et al., ICLR 2015) and PGD (Madry et al.,
ICLR 2018).

Both attacks move along the steepest-ascent direction of the cross-entropy of the logits, measured
in the norm of the threat model. The norm is a small strategy object (:class:`LpNorm`, after
foolbox's ``LpDistance``) that knows its unit step, its projection onto the ball and how to draw
uniformly from the ball; one driver serves l2 and l-infinity alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._model import check_inputs, eval_mode, functional
from .._random import as_generator
from .._validation import (
    check_bounds,
    check_int,
    check_labels,
    check_p,
    check_positive,
    check_target,
)
from ..results import Result

__all__ = ["AttackResult", "L2Norm", "LinfNorm", "LpNorm", "fgm", "lp_norm", "pgd"]


# --------------------------------------------------------------------------------------------
# Norms
# --------------------------------------------------------------------------------------------


class LpNorm:
    """An l_p norm on flattened perturbations ``(B, *shape)``: norm, unit step, ball projection.

    Subclasses implement :meth:`norm`, :meth:`step`, :meth:`project` and :meth:`random`.
    """

    p: float

    def norm(self, r: Tensor) -> Tensor:
        """``(B,)`` norms of the rows of ``r`` ``(B, *shape)``."""
        raise NotImplementedError

    def step(self, grad: Tensor) -> Tensor:
        """The steepest-ascent direction of unit norm: ``argmax_{||u|| <= 1} <grad, u>``.

        Rows where the gradient vanishes get a zero step.
        """
        raise NotImplementedError

    def project(self, r: Tensor, eps: float) -> Tensor:
        """Euclidean projection of each row of ``r`` onto the ball ``||r|| <= eps``."""
        raise NotImplementedError

    def random(
        self,
        shape: tuple[int, ...],
        eps: float,
        *,
        generator: torch.Generator | None,
        device: torch.device,
        dtype: torch.dtype,
    ) -> Tensor:
        """``shape = (B, *input_shape)`` draws, uniform in the ball of radius ``eps``.

        Drawn on the generator's device and moved, so that a CPU generator gives the same numbers
        whatever the device of the model.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _draw(kind, shape, generator, device, dtype) -> Tensor:
    gen_device = generator.device if generator is not None else device
    return kind(*shape, generator=generator, device=gen_device, dtype=dtype).to(device)


class L2Norm(LpNorm):
    """Euclidean norm: step ``g / ||g||_2``, projection by radial rescaling.

    Example:
        >>> n, g = L2Norm(), torch.tensor([[3.0, 4.0]], dtype=torch.float64)
        >>> n.step(g).tolist(), n.project(g, 2.5).tolist(), n.project(g, 10.0).tolist()
        ([[0.6, 0.8]], [[1.5, 2.0]], [[3.0, 4.0]])
    """

    p = 2.0

    def norm(self, r: Tensor) -> Tensor:  # noqa: D102
        return r.flatten(1).norm(dim=1)

    def step(self, grad: Tensor) -> Tensor:  # noqa: D102
        n = self.norm(grad).clamp_min(torch.finfo(grad.dtype).tiny)
        return grad / n.view(-1, *([1] * (grad.ndim - 1)))

    def project(self, r: Tensor, eps: float) -> Tensor:  # noqa: D102
        n = self.norm(r)
        scale = torch.where(n > eps, eps / n.clamp_min(torch.finfo(r.dtype).tiny), 1.0)
        return r * scale.view(-1, *([1] * (r.ndim - 1)))

    def random(self, shape, eps, *, generator, device, dtype) -> Tensor:  # noqa: D102
        # Uniform in the ball: a Gaussian direction and radius eps * U^(1/d).
        d = math.prod(shape[1:])
        u = _draw(torch.randn, shape, generator, device, dtype)
        radius = eps * _draw(torch.rand, (shape[0],), generator, device, dtype).pow(1.0 / d)
        return self.step(u) * radius.view(-1, *([1] * (len(shape) - 1)))


class LinfNorm(LpNorm):
    """Max norm: step ``sign(g)``, projection by clamping to ``[-eps, eps]``.

    Example:
        >>> n, g = LinfNorm(), torch.tensor([[-0.3, 0.0, 2.0]], dtype=torch.float64)
        >>> n.step(g).tolist(), n.project(g, 0.5).tolist()
        ([[-1.0, 0.0, 1.0]], [[-0.3, 0.0, 0.5]])
    """

    p = math.inf

    def norm(self, r: Tensor) -> Tensor:  # noqa: D102
        return r.flatten(1).abs().amax(dim=1)

    def step(self, grad: Tensor) -> Tensor:  # noqa: D102
        return grad.sign()

    def project(self, r: Tensor, eps: float) -> Tensor:  # noqa: D102
        return r.clamp(-eps, eps)

    def random(self, shape, eps, *, generator, device, dtype) -> Tensor:  # noqa: D102
        return eps * (2.0 * _draw(torch.rand, shape, generator, device, dtype) - 1.0)


def lp_norm(p: float) -> LpNorm:
    """The norm strategy for ``p`` (2 or ``float("inf")``).

    Example:
        >>> lp_norm(2), lp_norm(float("inf"))
        (L2Norm(), LinfNorm())
    """
    p = check_p(p)
    return L2Norm() if p == 2.0 else LinfNorm()


# --------------------------------------------------------------------------------------------
# Result and argument checks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class AttackResult(Result):
    """Perturbations found by a gradient attack in an l_p ball, one row per input.

    Attributes:
        x_adv: ``(B, *input_shape)`` the adversarial input (inside ``bounds`` when given).
        r: ``(B, *input_shape)`` ``x_adv - x``, with ``||r||_p <= eps`` (up to rounding).
        label: ``(B,)`` the prediction ``k(x)`` at the clean input.
        adv_label: ``(B,)`` the prediction at ``x_adv``.
        success: ``(B,)`` bool; targeted: ``adv_label == target``; untargeted:
            ``adv_label != labels`` when ground-truth ``labels`` were given, else
            ``adv_label != label``.
        norm: ``(B,)`` the l_p norm of ``r`` in the attack's ``p``.
        target: ``(B,)`` target classes, or ``None`` for an untargeted attack.
        labels: ``(B,)`` the ground-truth labels given, or ``None``.
        eps: the radius of the ball.
        p: the norm, 2.0 or ``inf``.
    """

    x_adv: Tensor
    r: Tensor
    label: Tensor
    adv_label: Tensor
    success: Tensor
    norm: Tensor
    target: Tensor | None
    labels: Tensor | None
    eps: float
    p: float

    @property
    def success_rate(self) -> float:
        """Fraction of inputs where the attack succeeded."""
        return float(self.success.double().mean())


def _check_goal(
    target: object, labels: object, logits0: Tensor, device: torch.device
) -> tuple[Tensor, Tensor | None, Tensor | None, bool]:
    """Return ``(y, target, labels, targeted)``: ``y`` is the class whose loss is followed."""
    n, num_classes = logits0.shape
    if target is not None and labels is not None:
        raise ValueError(
            "Give `target` (targeted attack) or `labels` (untargeted, away from the ground "
            "truth), not both."
        )
    if target is not None:
        t = check_target(target, n, num_classes, device)
        return t, t, None, True
    if labels is not None:
        y = check_labels(labels, n, "labels", num_classes=num_classes).to(device, torch.long)
        return y, None, y, False
    return logits0.argmax(1), None, None, False


def _box(x_new: Tensor, box: tuple[float, float] | None) -> Tensor:
    return x_new if box is None else x_new.clamp(box[0], box[1])


def _ascent(call, y: Tensor, targeted: bool):
    """``z -> (grad J(z), logits(z))`` with ``J = CE(f(z), y)`` (untargeted) or ``-CE``."""
    sign = -1.0 if targeted else 1.0

    def objective(z: Tensor) -> tuple[Tensor, Tensor]:
        logits = call(z)
        return sign * F.cross_entropy(logits, y, reduction="sum"), logits

    return torch.func.grad(objective, has_aux=True)


def _succeeded(pred: Tensor, y: Tensor, targeted: bool) -> Tensor:
    return pred == y if targeted else pred != y


# --------------------------------------------------------------------------------------------
# Attacks
# --------------------------------------------------------------------------------------------


def fgm(
    model: nn.Module,
    x: Tensor,
    *,
    eps: float,
    p: float = 2.0,
    target: int | Tensor | None = None,
    labels: Tensor | None = None,
    bounds: tuple[float, float] | None = None,
) -> AttackResult:
    r"""Fast gradient method: one step of length ``eps`` in the l_p steepest-ascent direction.

    Goodfellow, Shlens and Szegedy (ICLR 2015) for ``p = inf`` (FGSM); the l2 variant is that of
    foolbox / cleverhans. With :math:`g = \nabla_x J(x)`,

    .. math:: r = \epsilon\, g / \|g\|_2 \quad (p = 2), \qquad
              r = \epsilon\, \mathrm{sign}(g) \quad (p = \infty),

    where :math:`J = \mathrm{CE}(f(x), y)` is ascended away from ``y`` (untargeted) or
    :math:`J = -\mathrm{CE}(f(x), t)` towards the target ``t``. Untargeted, ``y`` is the
    ground truth ``labels`` when given, else the model's own prediction :math:`k(x)` (no labels
    needed, and an already misclassified input is not counted as a success). The gradient is
    that of the summed loss, i.e. per image (the model is evaluated in eval mode). With
    ``bounds``, ``x + r`` is then clipped to the box (``r`` shrinks, never grows).

    Args:
        model: classifier ``(B, *input_shape) -> (B, L)`` logits.
        x: ``(B, *input_shape)`` inputs, same device and dtype as the model.
        eps: step length (the radius of the l_p ball), > 0.
        p: 2 or ``float("inf")``.
        target: targeted attack: an int (one class for all) or a ``(B,)`` integer tensor.
        labels: untargeted attack away from these ``(B,)`` ground-truth labels.
        bounds: optional box ``(lo, hi)`` for ``x + r`` (``x`` must lie inside).

    Returns:
        An :class:`AttackResult`.

    Raises:
        TypeError, ValueError: for a bad model, input or option (the message names it).

    Example:
        >>> lin = torch.nn.Linear(2, 2).double()
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        ...     _ = lin.bias.zero_()
        >>> res = fgm(lin, torch.tensor([[0.5, 3.0]], dtype=torch.float64), eps=1.0)
        >>> res.r.tolist(), res.adv_label.tolist(), res.success.tolist()
        ([[-1.0, 0.0]], [1], [True])
    """
    norm = lp_norm(p)
    eps = check_positive(eps, "eps")
    with eval_mode(model):
        logits0 = check_inputs(model, x)
        box = check_bounds(bounds, x)
        y, tgt, lab, targeted = _check_goal(target, labels, logits0, x.device)
        call = functional(model)
        grad, _ = _ascent(call, y, targeted)(x.detach())
        x_adv = _box(x + eps * norm.step(grad), box).detach()
        with torch.no_grad():
            adv_label = call(x_adv).argmax(1)
    r = x_adv - x.detach()
    return AttackResult(
        x_adv=x_adv,
        r=r,
        label=logits0.argmax(1),
        adv_label=adv_label,
        success=_succeeded(adv_label, y, targeted),
        norm=norm.norm(r),
        target=tgt,
        labels=lab,
        eps=eps,
        p=norm.p,
    )


def pgd(
    model: nn.Module,
    x: Tensor,
    *,
    eps: float,
    p: float = 2.0,
    steps: int = 40,
    step_size: float | None = None,
    target: int | Tensor | None = None,
    labels: Tensor | None = None,
    random_start: bool = True,
    bounds: tuple[float, float] | None = None,
    generator: int | torch.Generator | None = None,
) -> AttackResult:
    r"""Projected gradient descent in an l_p ball (Madry et al., ICLR 2018), batched.

    Starting from :math:`r_0` uniform in the ball (``random_start``) or 0,

    .. math:: r_{i+1} = \Pi_{\mathrm{box}}\big(\Pi_{\|r\|_p \le \epsilon}
              (r_i + \alpha\, s_p(\nabla_x J(x + r_i)))\big),

    with :math:`s_2(g) = g / \|g\|_2`, :math:`s_\infty(g) = \mathrm{sign}(g)` and ``J`` as in
    :func:`fgm` (cross-entropy ascended away from ``labels`` or the prediction :math:`k(x)`, or
    descended towards ``target``). The box projection (clipping ``x + r``) after the ball
    projection keeps ``r`` in the ball, since clipping only shrinks coordinates of ``r``; for
    l-infinity it is the exact projection onto the intersection.

    **Which iterate is returned.** Every iterate (the start and the end point included) is
    checked; per image, ``x_adv`` is the *latest successful iterate* when there is one, else the
    last iterate. So ``success`` means "some point of the ball that PGD visited is adversarial",
    which a later step cannot undo (the plain last iterate of Madry et al. can oscillate back
    across the boundary). All images run all ``steps`` (no early stop), so the result does not
    depend on the batch composition.

    Args:
        model: classifier ``(B, *input_shape) -> (B, L)`` logits.
        x: ``(B, *input_shape)`` inputs, same device and dtype as the model.
        eps: radius of the l_p ball, > 0.
        p: 2 or ``float("inf")``.
        steps: number of gradient steps, >= 1.
        step_size: step length ``alpha``; ``None``: ``2.5 * eps / steps`` (Madry et al.).
        target: targeted attack: an int (one class for all) or a ``(B,)`` integer tensor.
        labels: untargeted attack away from these ``(B,)`` ground-truth labels.
        random_start: start uniformly in the ball (then clipped to the box), else at ``x``.
        bounds: optional box ``(lo, hi)`` for ``x + r`` (``x`` must lie inside).
        generator: a ``torch.Generator`` or an int seed for the random start; ``None`` uses
            torch's global generator. Same seed, same result.

    Returns:
        An :class:`AttackResult`.

    Raises:
        TypeError, ValueError: for a bad model, input or option (the message names it).

    Example:
        >>> lin = torch.nn.Linear(2, 2).double()
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        ...     _ = lin.bias.zero_()
        >>> x = torch.tensor([[0.5, 3.0], [2.0, 0.0]], dtype=torch.float64)
        >>> res = pgd(lin, x, eps=1.0, p=float("inf"), steps=10, generator=0)
        >>> res.success.tolist(), bool((res.norm <= 1.0).all())
        ([True, False], True)
    """
    norm = lp_norm(p)
    eps = check_positive(eps, "eps")
    steps = check_int(steps, "steps", low=1)
    alpha = 2.5 * eps / steps if step_size is None else check_positive(step_size, "step_size")
    if not isinstance(random_start, bool):
        raise TypeError(f"`random_start` must be a bool; got {type(random_start).__name__}.")
    with eval_mode(model):
        logits0 = check_inputs(model, x)
        box = check_bounds(bounds, x)
        y, tgt, lab, targeted = _check_goal(target, labels, logits0, x.device)
        gen = as_generator(generator, x.device)
        call = functional(model)
        ascent = _ascent(call, y, targeted)
        x = x.detach()
        if random_start:
            r0 = norm.random(tuple(x.shape), eps, generator=gen, device=x.device, dtype=x.dtype)
        else:
            r0 = torch.zeros_like(x)
        current = _box(x + r0, box)
        best = current.clone()
        found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        expand = (-1,) + (1,) * (x.ndim - 1)
        for _ in range(steps):
            grad, logits = ascent(current)
            ok = _succeeded(logits.argmax(1), y, targeted)
            best = torch.where(ok.view(expand), current, best)
            found |= ok
            r = norm.project(current - x + alpha * norm.step(grad), eps)
            current = _box(x + r, box)
        with torch.no_grad():
            ok = _succeeded(call(current).argmax(1), y, targeted)
            best = torch.where(ok.view(expand), current, best)
            found |= ok
            x_adv = torch.where(found.view(expand), best, current)
            adv_label = call(x_adv).argmax(1)
    r = x_adv - x
    return AttackResult(
        x_adv=x_adv,
        r=r,
        label=logits0.argmax(1),
        adv_label=adv_label,
        success=_succeeded(adv_label, y, targeted),
        norm=norm.norm(r),
        target=tgt,
        labels=lab,
        eps=eps,
        p=norm.p,
    )
