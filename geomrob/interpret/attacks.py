r"""Attacks on attribution maps: one perturbation per image that changes the map, not the label.

After Ghorbani, Abid and Zou, "Interpretation of neural networks is fragile" (AAAI 2019; the
iterative feature-importance attack), Dombrowski et al., "Explanations can be manipulated and
geometry is to blame" (NeurIPS 2019), as used by Wang et al. (``002`` in ``shared/seeds``, Def. 4,
Sec. 5 and Supp. C1) and as the per-image baselines of Ehsani Oskouie and Farnia (``000``, the
"Per image-FGM / -PGD" rows of Tables 1-2). Every attack solves 002 Def. 4,

.. math::

    \max_{\|\delta\|_p \le \epsilon} \; J(x, x + \delta)
    \quad \text{s.t.} \quad k(x + \delta) = k(x),

by steepest-ascent steps in the norm of the ball (``p = 2``: :math:`g / \|g\|_2`; ``p = inf``:
:math:`\mathrm{sign}(g)`), each followed by the projection onto the ball and the optional pixel
box ``bounds`` (clipping ``x + delta`` only shrinks coordinates of ``delta``, so it stays in the
ball). The objectives :math:`J` (all maximised; ``h`` is a map, ``h_0`` the map at ``x``):

- :func:`pgd_attack`, :func:`fgm_attack`: the squared dissimilarity of 000,
  :math:`J = \|I(x) - I(x + \delta)\|_2^2`, with ``I`` the map normalised as ``normalize`` says
  (000 uses l1, Eqs. 1-2). Its gradient vanishes at :math:`\delta = 0`, so the attacks start at
  a small Gaussian :math:`z \sim N(0, \sigma^2 I)` (000 Sec. 3): PGD iterates from ``x + z``;
  FGM takes one step of length ``eps`` from ``x`` along the gradient at ``x + z``.
- :func:`topk_attack` (Ghorbani et al.): :math:`J = -\sum_{i \in K} m_i(x + \delta)`, the mass of
  the ``k`` features ``K`` of largest :math:`m_i(x)` in the *mass map*
  :math:`m = |h| / \|h\|_1` (absolute values summed over channels for ``(B, C, H, W)`` maps).
- :func:`mass_center_attack` (Ghorbani et al.): :math:`J = \|C(m(x + \delta)) - C(m(x))\|_2`,
  the displacement of the center of mass in pixels (:func:`~geomrob.interpret.metrics.mass_center`).
- :func:`manipulate_attack` (Dombrowski et al.): :math:`J = -\big(\mathrm{mse}(m(x + \delta), m_t)
  + \gamma\, \mathrm{mse}(\sigma(f(x + \delta)), \sigma(f(x)))\big)`, towards a target mass map
  :math:`m_t` while the softmax output :math:`\sigma(f)` stays close; ``mse`` is the mean of the
  squared entries, as in the authors' code, and the default :math:`\gamma = 10^{-5}` is the ratio
  of their prefactors ``1e6 / 1e11`` that 002 (Supp. C1) keeps.

**Two models.** The second derivatives of a ReLU network vanish almost everywhere (002 Sec. 2),
so the gradient of :math:`J` is taken on a smooth ``surrogate`` (a softplus ``beta`` or a module,
see :func:`~geomrob.interpret.attributions.attribute`), with the map differentiated through
(``create_graph=True``) and every quantity of :math:`J` (the reference map, the top-k set, the
center, the output) computed on that surrogate. Everything reported, and every decision, uses
the real ``model``: the labels, the objective and metric before and after, the choice of the
returned iterate.

**Keeping the label.** Every proposed iterate is classified by the real model. A step that
changes the prediction of an image is rejected for that image: the previous iterate is kept and
that image's step length is halved, then the step is retried along the same gradient, up to
``max_halvings`` times within the iteration; the halved step length is kept for the remaining
iterations. So every iterate keeps the label. "Keeps" means by a margin
(:func:`keeps_label`): the top logit must lead the runner-up by more than float rounding, since a
point the attack leaves *on* the boundary (top-two gap 5e-7 in float32, measured at 000's budgets)
can flip when the same model evaluates it in a batch of another size. As Ghorbani et al. do,
the result is, per image,
the iterate with the largest objective (on the real model) among the clean input and all
accepted iterates, so ``objective_after >= objective_before``.

**Random maps.** SmoothGrad / UniGrad maps are Monte Carlo estimates. Every map of one attack
uses the same noise (common random numbers, a seed drawn once from ``generator``), so the
objective is a deterministic function of ``delta`` and comparisons between iterates are fair.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._model import check_inputs, eval_mode, functional
from .._random import as_generator, randn
from .._validation import (
    check_bounds,
    check_finite,
    check_floating,
    check_int,
    check_positive,
    check_real,
    check_tensor,
)
from ..attacks.gradient import LpNorm, lp_norm
from ..models.surrogate import is_piecewise_linear
from ..results import Result
from .attributions import (
    NORMALIZATIONS,
    AttributionMethod,
    _as_method,
    _check_bool,
    _gradient_model,
    attribute,
)

__all__ = [
    "DEFAULT_GAMMA",
    "START_FRACTION",
    "AttributionAttackResult",
    "fgm_attack",
    "manipulate_attack",
    "mass_center_attack",
    "mass_map",
    "pgd_attack",
    "topk_attack",
]

#: Default random start of the attacks whose objective is flat at ``delta = 0``: a Gaussian
#: whose expected l2 norm (``p = 2``) or per-coordinate standard deviation (``p = inf``) is
#: this fraction of ``eps``.
START_FRACTION = 0.05
#: Default weight of the output term of :func:`manipulate_attack`: ``1e6 / 1e11``, the ratio of
#: Dombrowski et al.'s prefactors (kept by 002, Supp. C1).
DEFAULT_GAMMA = 1e-5

_PIECEWISE_MESSAGE = "create_graph=True on a piecewise-linear model"


# ---------------------------------------------------------------------------------------------
# the result


@dataclass(frozen=True, eq=False)
class AttributionAttackResult(Result):
    """Per-image attacks on attribution maps, one row per image.

    Attributes:
        x_adv: ``(B, *input_shape)`` the returned iterate (the best one, see the module docs).
        delta: ``(B, *input_shape)`` ``x_adv - x``, inside the ball (up to rounding) and
            ``x_adv`` inside ``bounds``.
        label: ``(B,)`` the real model's prediction at ``x`` (the class whose map is attacked).
        adv_label: ``(B,)`` the real model's prediction at ``x_adv``.
        label_kept: ``(B,)`` bool, ``adv_label == label`` (True by construction; checked).
        objective_before: ``(B,)`` the attack's objective ``J`` (maximised) on the real model at
            ``x``.
        objective_after: ``(B,)`` ``J`` at ``x_adv``; ``>= objective_before``.
        metric: name of the metric of the attack (``"dissimilarity"``: 000 Eq. 9;
            ``"topk_intersection"``; ``"mass_center_dislocation"``; ``"target_mse"``).
        metric_before: ``(B,)`` the metric at ``x`` (0, 1, 0 and the distance to the target).
        metric_after: ``(B,)`` the metric at ``x_adv``.
        steps: ``(B,)`` accepted steps that moved the image.
        rejected: ``(B,)`` proposals rejected because they changed the label.
        norm: ``(B,)`` ``||delta||_p``.
        eps: radius of the ball.
        p: 2.0 or ``inf``.
        attack: ``"fgm"``, ``"pgd"``, ``"topk"``, ``"mass_center"`` or ``"manipulate"``.
    """

    x_adv: Tensor
    delta: Tensor
    label: Tensor
    adv_label: Tensor
    label_kept: Tensor
    objective_before: Tensor
    objective_after: Tensor
    metric: str
    metric_before: Tensor
    metric_after: Tensor
    steps: Tensor
    rejected: Tensor
    norm: Tensor
    eps: float
    p: float
    attack: str

    def __len__(self) -> int:
        return self.x_adv.shape[0]


# ---------------------------------------------------------------------------------------------
# maps and objectives


def mass_map(a: Tensor) -> Tensor:
    r"""The normalised mass map :math:`m = |a| / \|a\|_1` of each image (Ghorbani et al.).

    For ``(B, C, H, W)`` maps the absolute values are summed over channels first (the pixel map
    of :func:`~geomrob.interpret.metrics.pixel_map`); other shapes keep every feature. Each map
    sums to 1 (an all-zero map stays zero). Differentiable.

    Args:
        a: ``(B, *shape)`` attribution maps.

    Returns:
        ``(B, H, W)`` for 4-D input, else ``(B, *shape)``; non-negative, summing to 1 per image.

    Example:
        >>> mass_map(torch.tensor([[[[1.0, -3.0]], [[0.0, 4.0]]]])).tolist()
        [[[0.125, 0.875]]]
    """
    m = a.abs().sum(1) if a.ndim == 4 else a.abs()
    total = m.flatten(1).sum(1).clamp_min(torch.finfo(m.dtype).tiny)
    return m / total.view(-1, *([1] * (m.ndim - 1)))


def _center(m: Tensor) -> Tensor:
    """``(B, 2)`` center of mass (row, column) of ``(B, H, W)`` non-negative maps."""
    total = m.sum((1, 2)).clamp_min(torch.finfo(m.dtype).tiny)
    rows = torch.arange(m.shape[1], device=m.device, dtype=m.dtype)
    cols = torch.arange(m.shape[2], device=m.device, dtype=m.dtype)
    return torch.stack([(m.sum(2) * rows).sum(1), (m.sum(1) * cols).sum(1)], 1) / total[:, None]


class _Objective:
    """What an attack maximises: the map it looks at, its reference at ``x``, ``J`` and a metric.

    ``reference`` receives the map and softmax output at the clean input, computed by the same
    model that then evaluates ``value`` (the surrogate for gradients, the real model for reports).
    """

    name = ""
    metric = ""
    normalize: str | None = None
    needs_output = False
    random_start = False

    def transform(self, attribution: Tensor) -> Tensor:
        return mass_map(attribution)

    def reference(self, h0: Tensor, out0: Tensor | None) -> object:
        raise NotImplementedError

    def value(self, h: Tensor, out: Tensor | None, ref) -> Tensor:
        raise NotImplementedError

    def measure(self, h: Tensor, out: Tensor | None, ref) -> Tensor:
        raise NotImplementedError


class _Dissimilarity(_Objective):
    """``J = ||I(x) - I(x')||^2``; metric 000 Eq. 9, ``||I(x) - I(x')|| / ||I(x)||``."""

    metric = "dissimilarity"
    random_start = True

    def __init__(self, name: str, normalize: str | None) -> None:
        self.name = name
        self.normalize = normalize

    def transform(self, attribution):
        return attribution

    def reference(self, h0, out0):
        return h0.detach()

    def value(self, h, out, ref):
        return (h - ref).flatten(1).pow(2).sum(1)

    def measure(self, h, out, ref):
        den = ref.flatten(1).norm(dim=1)
        num = (h - ref).flatten(1).norm(dim=1)
        return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), math.nan)


class _TopK(_Objective):
    """``J = -(mass of the original top-k features)``; metric: top-k intersection."""

    name = "topk"
    metric = "topk_intersection"

    def __init__(self, k: int) -> None:
        self.k = k

    def _mask(self, m: Tensor) -> Tensor:
        flat = m.detach().flatten(1)
        idx = flat.topk(self.k, dim=1).indices
        return torch.zeros_like(flat, dtype=torch.bool).scatter_(1, idx, True)

    def reference(self, h0, out0):
        return self._mask(h0)

    def value(self, h, out, ref):
        return -(h.flatten(1) * ref).sum(1)

    def measure(self, h, out, ref):
        return (self._mask(h) & ref).sum(1).to(h.dtype) / self.k


class _MassCenter(_Objective):
    """``J = ||C(m(x')) - C(m(x))||_2`` in pixels; the metric is ``J`` itself."""

    name = "mass_center"
    metric = "mass_center_dislocation"
    random_start = True

    def reference(self, h0, out0):
        return _center(h0.detach())

    def value(self, h, out, ref):
        return torch.linalg.vector_norm(_center(h) - ref, dim=1)

    def measure(self, h, out, ref):
        return self.value(h, out, ref).detach()


class _Manipulate(_Objective):
    """``J = -(mse(m(x'), m_t) + gamma mse(softmax f(x'), softmax f(x)))``; metric: 1st mse."""

    name = "manipulate"
    metric = "target_mse"
    needs_output = True

    def __init__(self, target: Tensor, gamma: float) -> None:
        self.target = target
        self.gamma = gamma

    def reference(self, h0, out0):
        return out0.detach()

    def value(self, h, out, ref):
        expl = (h - self.target).flatten(1).pow(2).mean(1)
        return -(expl + self.gamma * (out - ref).pow(2).mean(1))

    def measure(self, h, out, ref):
        return (h - self.target).flatten(1).pow(2).mean(1).detach()


# ---------------------------------------------------------------------------------------------
# the driver


def _expand(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


def _box(z: Tensor, box: tuple[float, float] | None) -> Tensor:
    return z if box is None else z.clamp(box[0], box[1])


@contextmanager
def _quiet_piecewise():
    """Silence :func:`attribute`'s per-call warning; the attacks warn once, at entry."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_PIECEWISE_MESSAGE)
        yield


#: Piecewise-linear modules: a gradient model made of these (and affine layers only) has
#: vanishing second derivatives almost everywhere.
_PIECEWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.Hardtanh,
    nn.Threshold,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
)


def _warn_if_piecewise(grad_model: nn.Module, stacklevel: int) -> None:
    """Warn for a model with a ReLU-like module and no smooth nonlinearity module.

    A custom module whose ``forward`` is smooth (no nonlinearity modules at all) is not flagged;
    the attacks' zero-gradient check catches the remaining cases at run time.
    """
    if is_piecewise_linear(grad_model) and any(
        isinstance(m, _PIECEWISE_MODULES) for m in grad_model.modules()
    ):
        warnings.warn(
            "The gradient model is piecewise linear (e.g. a ReLU network without `surrogate`): "
            "the second derivatives that the attack follows vanish almost everywhere, so the "
            "map barely moves. Pass `surrogate=beta` (a softplus copy, e.g. 10.0) or a smooth "
            "surrogate module.",
            UserWarning,
            stacklevel=stacklevel,
        )


def _default_sigma(eps: float, norm: LpNorm, shape: tuple[int, ...]) -> float:
    scale = math.sqrt(math.prod(shape)) if norm.p == 2.0 else 1.0
    return START_FRACTION * eps / scale


def _check_sigma(sigma: object, default: float) -> float:
    if sigma is None:
        return default
    return check_real(sigma, "sigma", low=0.0)


def _check_progress(progress: object) -> bool:
    return _check_bool(progress, "progress")


class _Maps:
    """Maps (and softmax outputs) of one model for a fixed target class and fixed noise."""

    def __init__(self, model, method, label, objective, chunk, seed) -> None:
        self.model = model
        self.call = functional(model)
        self.method = method
        self.label = label
        self.objective = objective
        self.chunk = chunk
        self.seed = seed

    def __call__(self, z: Tensor, create_graph: bool = False) -> tuple[Tensor, Tensor | None]:
        res = attribute(
            self.model,
            z,
            self.method,
            target=self.label,
            normalize=self.objective.normalize,
            create_graph=create_graph,
            chunk=self.chunk,
            generator=torch.Generator().manual_seed(self.seed),
        )
        h = self.objective.transform(res.attribution)
        out = None
        if self.objective.needs_output:
            with torch.set_grad_enabled(create_graph):
                out = F.softmax(self.call(z), dim=1)
        if not create_graph:
            h = h.detach()
        return h, out


def _run(
    objective: _Objective,
    model: nn.Module,
    x: Tensor,
    method: object,
    *,
    eps: object,
    p: object,
    steps: int,
    step_size: object,
    sigma: object,
    one_step: bool,
    bounds: object,
    surrogate: object,
    chunk: object,
    generator: object,
    max_halvings: object,
    progress: object,
    prepare=None,
) -> AttributionAttackResult:
    norm = lp_norm(p)
    eps = check_positive(eps, "eps")
    steps = check_int(steps, "steps", low=1)
    alpha0 = (
        (eps if one_step else 2.5 * eps / steps)
        if step_size is None
        else check_positive(step_size, "step_size")
    )
    max_halvings = check_int(max_halvings, "max_halvings", low=0)
    progress = _check_progress(progress)
    method = _as_method(method)
    if chunk is not None:
        check_int(chunk, "chunk", low=1)
    gen = as_generator(generator, "cpu")
    with eval_mode(model):
        logits0 = check_inputs(model, x)
        box = check_bounds(bounds, x)
        x = x.detach()
        if prepare is not None:
            prepare(x)
        sigma = _check_sigma(
            sigma, _default_sigma(eps, norm, tuple(x.shape[1:])) if objective.random_start else 0.0
        )
        label = logits0.argmax(1)
        grad_model = _gradient_model(model, surrogate)
        _warn_if_piecewise(grad_model, stacklevel=4)
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        call = functional(model)

        def predict(z: Tensor) -> Tensor:
            with torch.no_grad():
                return call(z).argmax(1)

        def keeps(z: Tensor, lab: Tensor) -> Tensor:
            with torch.no_grad():
                return keeps_label(call(z), lab)

        with eval_mode(grad_model), _quiet_piecewise():
            real = _Maps(model, method, label, objective, chunk, seed)
            smooth = _Maps(grad_model, method, label, objective, chunk, seed)
            h0, out0 = real(x)
            ref = objective.reference(h0, out0)
            ref_s = objective.reference(*smooth(x)) if grad_model is not model else ref
            before = objective.value(h0, out0, ref).detach()
            metric_before = objective.measure(h0, out0, ref)

            best_x, best_val = x.clone(), before.clone()
            current = x
            if sigma > 0:
                z = norm.project(
                    sigma * randn(*x.shape, generator=gen, device=x.device, dtype=x.dtype), eps
                )
                cand = _box(x + z, box)
                current = torch.where(_expand(keeps(cand, label), x), cand, x)
                if not one_step:
                    best_x, best_val = _keep_best(objective, real, ref, current, best_x, best_val)

            n = x.shape[0]
            alpha = torch.full((n,), alpha0, device=x.device, dtype=x.dtype)
            moved = torch.zeros(n, dtype=torch.long, device=x.device)
            rejected = torch.zeros(n, dtype=torch.long, device=x.device)
            iterations = range(1 if one_step else steps)
            if progress:
                from tqdm.auto import tqdm

                iterations = tqdm(
                    iterations, desc=f"{objective.name} attack ({x.device})", leave=False
                )
            for it in iterations:
                grad = _objective_gradient(objective, smooth, current, ref_s)
                if it == 0 and not bool((grad != 0).any()):
                    warnings.warn(
                        "The gradient of the attack's objective is zero at every image: the map "
                        "does not change to first order (a piecewise-linear model without "
                        "`surrogate`, or a start where the objective is flat: give `sigma` > 0).",
                        UserWarning,
                        stacklevel=3,
                    )
                direction = norm.step(grad)
                base = x if one_step else current
                new = current.clone()
                pending = torch.ones(n, dtype=torch.bool, device=x.device)
                for _ in range(max_halvings + 1):
                    idx = pending.nonzero().flatten()
                    r = norm.project(
                        base[idx] - x[idx] + _expand(alpha[idx], x) * direction[idx], eps
                    )
                    cand = _box(x[idx] + r, box)
                    ok = keeps(cand, label[idx])
                    new[idx[ok]] = cand[ok]
                    rejected[idx[~ok]] += 1
                    alpha[idx[~ok]] /= 2
                    pending[idx[ok]] = False
                    if not bool(pending.any()):
                        break
                moved += (new != current).flatten(1).any(1).long()
                current = new
                best_x, best_val = _keep_best(objective, real, ref, current, best_x, best_val)

            h1, out1 = real(best_x)
            after = objective.value(h1, out1, ref).detach()
            metric_after = objective.measure(h1, out1, ref)
        adv_label = predict(best_x)
    delta = best_x - x
    return AttributionAttackResult(
        x_adv=best_x,
        delta=delta,
        label=label,
        adv_label=adv_label,
        label_kept=adv_label == label,
        objective_before=before,
        objective_after=after,
        metric=objective.metric,
        metric_before=metric_before,
        metric_after=metric_after,
        steps=moved,
        rejected=rejected,
        norm=norm.norm(delta),
        eps=eps,
        p=norm.p,
        attack=objective.name,
    )


#: Ulps of the largest logit by which the label must lead: batched GEMMs of another size sum in
#: another order, which moves a logit by a few ulps of the terms summed.
_MARGIN_ULPS = 64


def keeps_label(logits: Tensor, label: Tensor) -> Tensor:
    """``(B,)`` bool: ``label`` is the top class of ``logits (B, L)`` by more than rounding.

    The margin ``f_label - max_{c != label} f_c`` must exceed ``64 eps max(1, max_c |f_c|)``
    (``eps`` of the dtype): about 8e-6 for float32 logits of size 1, far below any margin a
    classifier's decisions rest on, and far above the differences between evaluations of the
    same point in batches of different sizes.
    """
    top = logits.gather(1, label[:, None]).squeeze(1)
    others = logits.scatter(1, label[:, None], -math.inf).amax(1)
    scale = logits.abs().amax(1).clamp_min(1.0)
    return top - others > _MARGIN_ULPS * torch.finfo(logits.dtype).eps * scale


def _keep_best(objective, real, ref, current, best_x, best_val) -> tuple[Tensor, Tensor]:
    h, out = real(current)
    val = objective.value(h, out, ref).detach()
    better = val > best_val
    return (
        torch.where(_expand(better, current), current, best_x),
        torch.where(better, val, best_val),
    )


def _objective_gradient(objective: _Objective, smooth: _Maps, z: Tensor, ref) -> Tensor:
    """``(B, *input_shape)`` gradient of ``J`` on the surrogate, through the map."""
    zg = z.detach().requires_grad_(True)
    with torch.enable_grad():
        h, out = smooth(zg, create_graph=True)
        total = objective.value(h, out, ref).sum()
        if not total.requires_grad:
            return torch.zeros_like(z)
        (grad,) = torch.autograd.grad(total, zg)
    return torch.nan_to_num(grad.detach(), nan=0.0)


# ---------------------------------------------------------------------------------------------
# the public attacks


def pgd_attack(
    model: nn.Module,
    x: Tensor,
    method: str | AttributionMethod = "simple",
    *,
    eps: float,
    p: float = 2.0,
    steps: int = 20,
    step_size: float | None = None,
    sigma: float | None = None,
    normalize: str | None = "l1",
    bounds: tuple[float, float] | None = None,
    surrogate: nn.Module | float | None = None,
    max_halvings: int = 5,
    chunk: int | None = None,
    generator: torch.Generator | int | None = None,
    progress: bool = False,
) -> AttributionAttackResult:
    r"""Per-image PGD on the dissimilarity of the maps, :math:`\|I(x) - I(x + \delta)\|_2^2`.

    000's "Per image-PGD" baseline (Ghorbani et al.'s iterative attack with 000's distance):
    from ``x + z``, :math:`z \sim N(0, \sigma^2 I)` projected on the ball (kept only if it keeps
    the label), ``steps`` steps
    :math:`\delta \leftarrow \Pi(\delta + \alpha\, s_p(\nabla_\delta J))`; rejected steps halve
    :math:`\alpha` (module docs). The map ``I`` is the attribution normalised by ``normalize``
    (000: ``"l1"``) for the class the real model predicts at ``x``.

    Args:
        model: classifier ``(B, *input_shape) -> (B, L)`` logits (labels, reports).
        x: ``(B, *input_shape)`` inputs on the model's device and dtype.
        method: a name (``"simple"``/``"saliency"``, ``"ig"``) or an
            :class:`~geomrob.interpret.AttributionMethod`.
        eps: radius of the l_p ball, > 0.
        p: 2 or ``float("inf")``.
        steps: iterations, >= 1.
        step_size: initial step length ``alpha`` (``None``: ``2.5 * eps / steps``, Madry et al.).
        sigma: standard deviation of the random start (``None``: :data:`START_FRACTION` of
            ``eps``, i.e. :math:`E\|z\|_2 \approx 0.05\,\epsilon` for ``p = 2``; 0: start at
            ``x``, where the gradient of ``J`` vanishes).
        normalize: normalisation of the maps, ``"l1"`` (000), ``"l2"`` or ``None``.
        bounds: optional pixel box ``(lo, hi)`` for ``x + delta`` (``x`` must lie inside).
        surrogate: smooth model for the gradients: ``None`` (``model`` itself), a module or a
            softplus ``beta``.
        max_halvings: retries with a halved step per iteration after a rejected step, >= 0.
        chunk: (image, sample) points per backward pass of the maps (see ``attribute``).
        generator: seed or generator of the random start and the maps' noise.
        progress: show a tqdm bar over the iterations.

    Returns:
        An :class:`AttributionAttackResult` (metric: 000 Eq. 9 dissimilarity).

    Raises:
        TypeError, ValueError: for a bad model, input or option (the message names it).

    Warns:
        UserWarning: when the gradient model is piecewise linear (no ``surrogate`` for a ReLU
            network), or when the objective's gradient is zero at every image.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
        >>> x = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        >>> res = pgd_attack(net, x, eps=0.5, steps=10, generator=0)
        >>> bool((res.norm <= 0.5 + 1e-12).all()), bool(res.label_kept.all())
        (True, True)
        >>> bool((res.metric_after > res.metric_before).all())
        True
    """
    normalize = _check_normalize(normalize)
    return _run(
        _Dissimilarity("pgd", normalize),
        model,
        x,
        method,
        eps=eps,
        p=p,
        steps=steps,
        step_size=step_size,
        sigma=sigma,
        one_step=False,
        bounds=bounds,
        surrogate=surrogate,
        chunk=chunk,
        generator=generator,
        max_halvings=max_halvings,
        progress=progress,
    )


def fgm_attack(
    model: nn.Module,
    x: Tensor,
    method: str | AttributionMethod = "simple",
    *,
    eps: float,
    p: float = 2.0,
    sigma: float | None = None,
    normalize: str | None = "l1",
    bounds: tuple[float, float] | None = None,
    surrogate: nn.Module | float | None = None,
    max_halvings: int = 5,
    chunk: int | None = None,
    generator: torch.Generator | int | None = None,
) -> AttributionAttackResult:
    r"""Per-image fast gradient method on the dissimilarity of the maps (000's "Per image-FGM").

    One step of length ``eps`` from ``x``, :math:`\delta = \epsilon\, s_p(\nabla J(x + z))`,
    along the gradient of :math:`J = \|I(x) - I(\cdot)\|_2^2` at a random
    :math:`x + z`, :math:`z \sim N(0, \sigma^2 I)` (the gradient vanishes at ``x`` itself; 000
    Sec. 3), then clipped to ``bounds``. If the step changes the label it is halved, up to
    ``max_halvings`` times; an image whose every try changes the label keeps ``delta = 0``.
    These are also the rows of UPI-PCA-FGM (:func:`geomrob.interpret.upi_pca`).

    Args:
        model: classifier ``(B, *input_shape) -> (B, L)`` logits (labels, reports).
        x: ``(B, *input_shape)`` inputs on the model's device and dtype.
        method: a name (``"simple"``/``"saliency"``, ``"ig"``) or an
            :class:`~geomrob.interpret.AttributionMethod`.
        eps: the step length (radius of the l_p ball), > 0.
        p: 2 or ``float("inf")``.
        sigma: standard deviation of ``z`` (``None``: :data:`START_FRACTION` of ``eps``, see
            :func:`pgd_attack`); must be > 0 for a nonzero gradient.
        normalize: normalisation of the maps, ``"l1"`` (000), ``"l2"`` or ``None``.
        bounds: optional pixel box ``(lo, hi)``.
        surrogate: smooth model for the gradients (``None``, a module or a softplus ``beta``).
        max_halvings: retries with a halved step, >= 0.
        chunk: (image, sample) points per backward pass of the maps.
        generator: seed or generator of ``z`` and the maps' noise.

    Returns:
        An :class:`AttributionAttackResult` (metric: 000 Eq. 9 dissimilarity).

    Raises:
        TypeError, ValueError: for a bad model, input or option (the message names it).

    Warns:
        UserWarning: as :func:`pgd_attack`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
        >>> x = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        >>> res = fgm_attack(net, x, eps=0.1, p=float("inf"), generator=0)
        >>> bool((res.delta.abs() <= 0.1 + 1e-12).all()), res.steps.tolist()
        (True, [1, 1, 1, 1, 1])
    """
    normalize = _check_normalize(normalize)
    return _run(
        _Dissimilarity("fgm", normalize),
        model,
        x,
        method,
        eps=eps,
        p=p,
        steps=1,
        step_size=None,
        sigma=sigma,
        one_step=True,
        bounds=bounds,
        surrogate=surrogate,
        chunk=chunk,
        generator=generator,
        max_halvings=max_halvings,
        progress=False,
    )


def topk_attack(
    model: nn.Module,
    x: Tensor,
    method: str | AttributionMethod = "simple",
    *,
    k: int,
    eps: float,
    p: float = float("inf"),
    steps: int = 50,
    step_size: float | None = None,
    sigma: float | None = None,
    bounds: tuple[float, float] | None = None,
    surrogate: nn.Module | float | None = None,
    max_halvings: int = 5,
    chunk: int | None = None,
    generator: torch.Generator | int | None = None,
    progress: bool = False,
) -> AttributionAttackResult:
    r"""Ghorbani et al.'s top-k attack: remove mass from the ``k`` most important features.

    Maximises :math:`J = -\sum_{i \in K} m_i(x + \delta)`, where ``m`` is the normalised mass
    map (:func:`mass_map`; pixels for ``(B, C, H, W)`` inputs) and ``K`` the ``k`` largest
    entries of ``m(x)``. 002 (Supp. C1) runs 50 iterations in an l-inf ball with ``k`` = 20
    pixels on CIFAR-10. The metric is the top-k intersection of ``m(x)`` and ``m(x + delta)``
    (:func:`~geomrob.interpret.metrics.topk_intersection` on the pixel maps).

    Args:
        model: classifier ``(B, *input_shape) -> (B, L)`` logits (labels, reports).
        x: ``(B, *input_shape)`` inputs on the model's device and dtype.
        method: a name (``"simple"``/``"saliency"``, ``"ig"``) or an
            :class:`~geomrob.interpret.AttributionMethod`.
        k: number of features (pixels), between 1 and the size of the mass map.
        eps: radius of the l_p ball, > 0.
        p: 2 or ``float("inf")`` (default, as 002 and Ghorbani et al.).
        steps: iterations, >= 1.
        step_size: initial step length (``None``: ``2.5 * eps / steps``).
        sigma: standard deviation of an optional random start (``None`` or 0: start at ``x``).
        bounds: optional pixel box ``(lo, hi)``.
        surrogate: smooth model for the gradients (``None``, a module or a softplus ``beta``).
        max_halvings: retries with a halved step per iteration, >= 0.
        chunk: (image, sample) points per backward pass of the maps.
        generator: seed or generator (random start, the maps' noise).
        progress: show a tqdm bar over the iterations.

    Returns:
        An :class:`AttributionAttackResult` (metric: top-k intersection, 1 before).

    Raises:
        TypeError, ValueError: for a bad model, input or option (the message names it).

    Warns:
        UserWarning: as :func:`pgd_attack`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
        >>> x = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        >>> res = topk_attack(net, x, k=2, eps=0.3, steps=20)
        >>> res.metric_before.tolist()
        [1.0, 1.0, 1.0, 1.0]
        >>> bool((res.objective_after > res.objective_before).all())
        True
    """
    objective = _TopK(0)

    def prepare(x: Tensor) -> None:
        size = math.prod(x.shape[2:]) if x.ndim == 4 else math.prod(x.shape[1:])
        objective.k = check_int(k, "k", low=1, high=size)

    return _run(
        objective,
        model,
        x,
        method,
        eps=eps,
        p=p,
        steps=steps,
        step_size=step_size,
        sigma=sigma,
        one_step=False,
        bounds=bounds,
        surrogate=surrogate,
        chunk=chunk,
        generator=generator,
        max_halvings=max_halvings,
        progress=progress,
        prepare=prepare,
    )


def mass_center_attack(
    model: nn.Module,
    x: Tensor,
    method: str | AttributionMethod = "simple",
    *,
    eps: float,
    p: float = float("inf"),
    steps: int = 50,
    step_size: float | None = None,
    sigma: float | None = None,
    bounds: tuple[float, float] | None = None,
    surrogate: nn.Module | float | None = None,
    max_halvings: int = 5,
    chunk: int | None = None,
    generator: torch.Generator | int | None = None,
    progress: bool = False,
) -> AttributionAttackResult:
    r"""Ghorbani et al.'s mass-center attack: move the center of the map away from the original.

    Maximises :math:`J = \|C(m(x + \delta)) - C(m(x))\|_2`, the center of mass of the pixel mass
    map (:func:`mass_map`) in pixels; this is also the metric (002's "cdl"). Inputs must be
    images ``(B, C, H, W)`` or ``(B, H, W)``. ``J`` is flat at ``delta = 0`` (the gradient of a
    norm at 0 is 0), so the attack starts at a small random ``x + z`` as :func:`pgd_attack`.

    Args:
        model: classifier ``(B, *input_shape) -> (B, L)`` logits (labels, reports).
        x: ``(B, C, H, W)`` or ``(B, H, W)`` inputs on the model's device and dtype.
        method: a name (``"simple"``/``"saliency"``, ``"ig"``) or an
            :class:`~geomrob.interpret.AttributionMethod`.
        eps: radius of the l_p ball, > 0.
        p: 2 or ``float("inf")`` (default).
        steps: iterations, >= 1.
        step_size: initial step length (``None``: ``2.5 * eps / steps``).
        sigma: standard deviation of the random start (``None``: :data:`START_FRACTION` of
            ``eps``).
        bounds: optional pixel box ``(lo, hi)``.
        surrogate: smooth model for the gradients (``None``, a module or a softplus ``beta``).
        max_halvings: retries with a halved step per iteration, >= 0.
        chunk: (image, sample) points per backward pass of the maps.
        generator: seed or generator (random start, the maps' noise).
        progress: show a tqdm bar over the iterations.

    Returns:
        An :class:`AttributionAttackResult` (metric: mass-center dislocation, 0 before).

    Raises:
        TypeError, ValueError: for a bad model, input or option (the message names it).

    Warns:
        UserWarning: as :func:`pgd_attack`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
        >>> res = mass_center_attack(net.double(), x.double(), eps=0.1, steps=10, generator=0)
        >>> bool((res.metric_after > 0).all()), bool((res.delta.abs() <= 0.1 + 1e-12).all())
        (True, True)
    """

    def prepare(x: Tensor) -> None:
        if x.ndim not in (3, 4):
            raise ValueError(
                "`x` must be images (B, C, H, W) or (B, H, W) for the mass-center attack; got "
                f"shape {tuple(x.shape)}."
            )

    return _run(
        _MassCenter(),
        model,
        x,
        method,
        eps=eps,
        p=p,
        steps=steps,
        step_size=step_size,
        sigma=sigma,
        one_step=False,
        bounds=bounds,
        surrogate=surrogate,
        chunk=chunk,
        generator=generator,
        max_halvings=max_halvings,
        progress=progress,
        prepare=prepare,
    )


def manipulate_attack(
    model: nn.Module,
    x: Tensor,
    target_map: Tensor,
    method: str | AttributionMethod = "simple",
    *,
    eps: float,
    gamma: float = DEFAULT_GAMMA,
    p: float = float("inf"),
    steps: int = 50,
    step_size: float | None = None,
    sigma: float | None = None,
    bounds: tuple[float, float] | None = None,
    surrogate: nn.Module | float | None = None,
    max_halvings: int = 5,
    chunk: int | None = None,
    generator: torch.Generator | int | None = None,
    progress: bool = False,
) -> AttributionAttackResult:
    r"""Dombrowski et al.'s manipulate attack: bring the map close to a target, keep the output.

    Maximises :math:`J = -\big(\mathrm{mse}(m(x + \delta), m_t) + \gamma\,
    \mathrm{mse}(\sigma(f(x + \delta)), \sigma(f(x)))\big)` (module docs), with ``m`` the
    normalised mass map (:func:`mass_map`), :math:`m_t` that of ``target_map`` and
    :math:`\sigma(f)` the softmax output. Dombrowski et al. take the gradients on a softplus
    network ("beta-smoothing"): pass ``surrogate=beta``. The metric is the distance to the
    target, :math:`\mathrm{mse}(m(x + \delta), m_t)`.

    Args:
        model: classifier ``(B, *input_shape) -> (B, L)`` logits (labels, reports).
        x: ``(B, *input_shape)`` inputs on the model's device and dtype.
        target_map: target attributions, e.g. the map of another image: ``(B, *input_shape)``,
            the mass-map shape ``(B, H, W)`` for ``(B, C, H, W)`` inputs, or either without
            the batch axis (one target for every image). Turned into a mass map.
        method: a name (``"simple"``/``"saliency"``, ``"ig"``) or an
            :class:`~geomrob.interpret.AttributionMethod`.
        eps: radius of the l_p ball, > 0.
        gamma: weight of the output term, >= 0 (default ``1e-5``: Dombrowski et al.'s ratio).
        p: 2 or ``float("inf")`` (default).
        steps: iterations, >= 1.
        step_size: initial step length (``None``: ``2.5 * eps / steps``).
        sigma: standard deviation of an optional random start (``None`` or 0: start at ``x``).
        bounds: optional pixel box ``(lo, hi)``.
        surrogate: smooth model for the gradients (``None``, a module or a softplus ``beta``).
        max_halvings: retries with a halved step per iteration, >= 0.
        chunk: (image, sample) points per backward pass of the maps.
        generator: seed or generator (random start, the maps' noise).
        progress: show a tqdm bar over the iterations.

    Returns:
        An :class:`AttributionAttackResult` (metric: ``"target_mse"``).

    Raises:
        TypeError, ValueError: for a bad model, input, target map or option.

    Warns:
        UserWarning: as :func:`pgd_attack`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
        >>> x = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        >>> target = torch.tensor([1.0, 0, 0, 0, 0, 0], dtype=torch.float64)
        >>> res = manipulate_attack(net, x, target, eps=0.3, steps=20)
        >>> bool((res.metric_after < res.metric_before).all())
        True
    """
    gamma = check_real(gamma, "gamma", low=0.0)
    objective = _Manipulate(torch.empty(0), gamma)

    def prepare(x: Tensor) -> None:
        t = check_tensor(target_map, "target_map")
        check_floating(t, "target_map")
        check_finite(t, "target_map")
        shapes = [tuple(x.shape)]
        if x.ndim == 4:
            shapes.append((x.shape[0], *x.shape[2:]))
        shapes += [s[1:] for s in shapes]
        if tuple(t.shape) not in shapes:
            raise ValueError(
                f"`target_map` must have one of the shapes {shapes} (maps of the input shape or "
                f"of the mass map, with or without the batch axis); got {tuple(t.shape)}."
            )
        if t.device != x.device:
            raise ValueError(f"`target_map` is on {t.device} but `x` is on {x.device}.")
        if tuple(t.shape) in shapes[len(shapes) // 2 :]:
            t = t.unsqueeze(0).expand(x.shape[0], *t.shape)
        if x.ndim == 4 and t.ndim == 3:
            t = t.unsqueeze(1)  # a mass-map-shaped target: one channel
        m = mass_map(t.to(x.dtype))
        if bool((m.flatten(1).sum(1) == 0).any()):
            raise ValueError("`target_map` has an all-zero map; give a map with some mass.")
        objective.target = m.detach()

    return _run(
        objective,
        model,
        x,
        method,
        eps=eps,
        p=p,
        steps=steps,
        step_size=step_size,
        sigma=sigma,
        one_step=False,
        bounds=bounds,
        surrogate=surrogate,
        chunk=chunk,
        generator=generator,
        max_halvings=max_halvings,
        progress=progress,
        prepare=prepare,
    )


def _check_normalize(normalize: object) -> str | None:
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"`normalize` must be one of {list(NORMALIZATIONS)}; got {normalize!r}.")
    return normalize
