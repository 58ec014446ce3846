r"""Gradient attribution maps: Saliency, Integrated Gradients, SmoothGrad, Uniform Gradient.

After Ehsani Oskouie and Farnia, "Interpretation of neural networks is susceptible to universal
adversarial perturbations" (``000`` in ``shared/seeds``, Eqs. 1-2), and Wang et al., "Smoothed
geometry for robust attribution" (NeurIPS 2020, ``002``, Defs. 1-3 and 8). With :math:`S_c` the
logit of the target class ``c`` (by default the class the model predicts at ``x``):

- Saliency (simple gradient, 000 Eq. 1; 002 Def. 1): :math:`g(x) = \nabla_x S_c(x)`.
- Integrated Gradients (000 Eq. 2; 002 Def. 2), baseline :math:`x^0`, ``M`` steps:
  :math:`g(x) = (x - x^0) \odot \frac1M \sum_{k=1}^M \nabla S_c(x^0 + \tfrac kM (x - x^0))`
  (the right Riemann sum of 000 Eq. 2), or the trapezoid rule over ``k = 0..M``.
- SmoothGrad (002 Def. 3): :math:`g(x) = E_{e \sim N(0, \sigma^2 I)} \nabla S_c(x + e)`.
- Uniform Gradient (002 Def. 8): :math:`g(x) = E_{u \sim U(B_r)} \nabla S_c(x + u)`, ``u``
  uniform in the l2 ball of radius ``r`` in :math:`R^d` (a Gaussian direction times
  :math:`r U^{1/d}`).

Expectations are Monte Carlo means over ``n_samples`` draws. ``normalize="l1"`` divides each
image's map by its l1 norm, as 000 does for both of its maps (Eqs. 1-2); ``"l2"`` gives unit
length, as in 002 Fig. 1. Neither paper defines an absolute-value map: absolute values enter only
the metrics (002's top-k intersection ranks :math:`|z| / \|z\|_1`; the mass center of Ghorbani
et al. uses the absolute map summed over channels), see :mod:`geomrob.interpret.metrics`.
``multiply_by_inputs=True`` gives the "gradient times input" maps that 002 (Supp. C1) attacks
for Saliency, SmoothGrad and Uniform Gradient.

Every method runs through one driver, :func:`attribute`, which takes a method object
(:class:`Saliency`, :class:`IntegratedGradients`, :class:`SmoothGrad`, :class:`UniGrad`):
batched over images, chunked over the (image, sample) points (``chunk`` points per forward and
backward pass), optionally differentiable with respect to ``x`` (``create_graph=True``), and with
the gradients taken on a smooth ``surrogate`` while the target class comes from ``model``.
Attacks on attributions differentiate the map through a softplus surrogate, because the second
derivatives of a ReLU network vanish almost everywhere (002 Sec. 2; Ghorbani et al.).
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .._model import check_inputs, eval_mode, functional, model_device, model_dtype
from .._random import as_generator, randn
from .._validation import (
    check_choice,
    check_finite,
    check_floating,
    check_int,
    check_logits,
    check_positive,
    check_target,
    check_tensor,
)
from ..attacks.gradient import L2Norm
from ..models.surrogate import is_piecewise_linear, softplus_surrogate
from ..results import Result

__all__ = [
    "METHOD_NAMES",
    "NORMALIZATIONS",
    "Attribution",
    "AttributionMethod",
    "IntegratedGradients",
    "Saliency",
    "SmoothGrad",
    "UniGrad",
    "attribute",
    "integrated_gradients",
    "saliency",
    "smoothgrad",
    "unigrad",
]

#: Values of ``normalize``: raw map, divided by its l1 norm (000 Eqs. 1-2) or its l2 norm.
NORMALIZATIONS = (None, "l1", "l2")
#: Rules of :class:`IntegratedGradients`.
IG_RULES = ("right", "trapezoid")
#: Points (image, sample) per forward/backward pass when ``chunk=None``.
DEFAULT_CHUNK = 1024


# ---------------------------------------------------------------------------------------------
# the methods: what points to differentiate at, with what weights, and how to finish the map


def _check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False; got {type(value).__name__} {value!r}.")
    return value


def _expand(v: Tensor, like: Tensor) -> Tensor:
    """``(n,)`` -> ``(n, 1, ..., 1)`` broadcastable against ``like``."""
    return v.view(-1, *([1] * (like.ndim - 1)))


class AttributionMethod:
    """A gradient attribution method, as the points and weights of a mean of gradients.

    The map of an image ``x`` is ``finish(x, sum_s w_s grad S_c(p_s) / sum_s w_s)`` over the
    method's ``n_points`` points ``p_s`` (sample-major; random methods draw sample ``s`` for
    every image in one call, in order, so that chunking does not change the draws).
    Subclasses are frozen dataclasses that validate their options on construction.
    """

    name: str = ""

    @property
    def n_points(self) -> int:
        """Gradient evaluations per image."""
        raise NotImplementedError

    def _prepare(self, x: Tensor) -> Tensor | None:
        """Validate against the batch; return per-call state (the baseline of IG)."""
        return None

    def _points(
        self, x: Tensor, start: int, stop: int, state, generator: torch.Generator | None
    ) -> Tensor:
        """``(stop - start, n, *input_shape)``: the points of samples ``start..stop-1``."""
        raise NotImplementedError

    def _weights(self, start: int, stop: int, like: Tensor) -> Tensor | None:
        """``(stop - start,)`` weights of those samples (``None``: all ones)."""
        return None

    @property
    def _total_weight(self) -> float:
        return float(self.n_points)

    def _finish(self, x: Tensor, mean_grad: Tensor, state) -> Tensor:
        """The unnormalised map from the (weighted) mean gradient."""
        return mean_grad * x if getattr(self, "multiply_by_inputs", False) else mean_grad


@dataclass(frozen=True)
class Saliency(AttributionMethod):
    """Saliency map / simple gradient, :math:`\\nabla_x S_c(x)` (000 Eq. 1; 002 Def. 1).

    Args:
        multiply_by_inputs: return :math:`x \\odot \\nabla_x S_c(x)` (002 Supp. C1).

    Example:
        >>> Saliency().n_points
        1
    """

    multiply_by_inputs: bool = False
    name = "saliency"

    def __post_init__(self) -> None:
        _check_bool(self.multiply_by_inputs, "multiply_by_inputs")

    @property
    def n_points(self) -> int:  # noqa: D102
        return 1

    def _points(self, x, start, stop, state, generator) -> Tensor:
        return x.unsqueeze(0)


@dataclass(frozen=True, eq=False)
class IntegratedGradients(AttributionMethod):
    r"""Integrated Gradients along the segment from ``baseline`` to ``x`` (000 Eq. 2; 002 Def. 2).

    .. math::

        g(x) = (x - x^0) \odot \sum_k w_k \nabla S_c\big(x^0 + \tfrac kM (x - x^0)\big)

    ``rule="right"``: ``k = 1..M``, :math:`w_k = 1/M` (the right Riemann sum, exactly 000 Eq. 2;
    error :math:`O(1/M)`). ``rule="trapezoid"``: ``k = 0..M``, :math:`w_0 = w_M = 1/(2M)`,
    otherwise :math:`1/M` (error :math:`O(1/M^2)` for a smooth :math:`S_c`, one more gradient).
    The completeness gap, :math:`\sum_i g_i(x) - (S_c(x) - S_c(x^0))`, measures the quadrature
    error (zero for the exact integral, by the fundamental theorem of calculus).

    Args:
        baseline: :math:`x^0`, ``None`` (zeros, as in 002 Supp. C1), a tensor of the input shape
            (one baseline for every image) or of the batch's shape.
        steps: ``M`` >= 1.
        rule: ``"right"`` (default, 000 Eq. 2) or ``"trapezoid"``.

    Example:
        >>> IntegratedGradients(steps=10).n_points, IntegratedGradients(steps=10, rule="trapezoid").n_points
        (10, 11)
    """  # noqa: E501

    baseline: Tensor | None = None
    steps: int = 50
    rule: str = "right"
    name = "integrated_gradients"

    def __post_init__(self) -> None:
        check_int(self.steps, "steps", low=1)
        check_choice(self.rule, "rule", IG_RULES)
        if self.baseline is not None:
            b = check_tensor(self.baseline, "baseline")
            check_floating(b, "baseline")
            check_finite(b, "baseline")

    @property
    def n_points(self) -> int:  # noqa: D102
        return self.steps + (self.rule == "trapezoid")

    @property
    def _total_weight(self) -> float:
        return float(self.steps)

    def _prepare(self, x: Tensor) -> Tensor:
        if self.baseline is None:
            return torch.zeros_like(x)
        b = self.baseline
        if tuple(b.shape) not in (tuple(x.shape), tuple(x.shape[1:])):
            raise ValueError(
                f"`baseline` must have the input shape {tuple(x.shape[1:])} or the batch's shape "
                f"{tuple(x.shape)}; got {tuple(b.shape)}."
            )
        if b.device != x.device or b.dtype != x.dtype:
            raise ValueError(
                f"`baseline` must be on {x.device} with dtype {x.dtype} like `x`; got "
                f"{b.device}, {b.dtype}."
            )
        return b.expand_as(x)

    def _points(self, x, start, stop, state, generator) -> Tensor:
        first = 1 if self.rule == "right" else 0
        t = torch.arange(start + first, stop + first, device=x.device, dtype=x.dtype) / self.steps
        t = t.view(-1, *([1] * x.ndim))
        return state.unsqueeze(0) + t * (x - state).unsqueeze(0)

    def _weights(self, start, stop, like) -> Tensor | None:
        if self.rule == "right":
            return None
        w = torch.ones(stop - start, device=like.device, dtype=like.dtype)
        k = torch.arange(start, stop, device=like.device)
        return torch.where((k == 0) | (k == self.steps), 0.5 * w, w)

    def _finish(self, x, mean_grad, state) -> Tensor:
        return (x - state) * mean_grad


class _Noise(AttributionMethod):
    """Mean gradient at ``x + noise``, one batch of noise ``(n, *input_shape)`` per sample."""

    n_samples: int

    @property
    def n_points(self) -> int:  # noqa: D102
        return self.n_samples

    def _noise(self, shape, generator, device, dtype) -> Tensor:
        raise NotImplementedError

    def _points(self, x, start, stop, state, generator) -> Tensor:
        noise = [
            self._noise(tuple(x.shape), generator, x.device, x.dtype) for _ in range(start, stop)
        ]
        return x.unsqueeze(0) + torch.stack(noise)


@dataclass(frozen=True)
class SmoothGrad(_Noise):
    r"""SmoothGrad, :math:`E_{e \sim N(0, \sigma^2 I)} \nabla S_c(x + e)` (002 Def. 3).

    By 002 Prop. 1 this is the gradient of the Gaussian-smoothed logit :math:`S_c * q_\sigma`.

    Args:
        sigma: noise standard deviation > 0, in input units (002 Supp. C1 uses
            ``0.1 * (x.max() - x.min())``).
        n_samples: Monte Carlo samples (002 uses 50).
        multiply_by_inputs: return :math:`x \odot g(x)` (002 Supp. C1).

    Example:
        >>> SmoothGrad(sigma=0.1, n_samples=20).n_points
        20
    """

    sigma: float
    n_samples: int = 50
    multiply_by_inputs: bool = False
    name = "smoothgrad"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigma", check_positive(self.sigma, "sigma"))
        check_int(self.n_samples, "n_samples", low=1)
        _check_bool(self.multiply_by_inputs, "multiply_by_inputs")

    def _noise(self, shape, generator, device, dtype) -> Tensor:
        return self.sigma * randn(*shape, generator=generator, device=device, dtype=dtype)


@dataclass(frozen=True)
class UniGrad(_Noise):
    r"""Uniform Gradient, :math:`E_{u \sim U(B_r)} \nabla S_c(x + u)` (002 Def. 8).

    ``u`` is uniform in the l2 ball of radius ``r`` of :math:`R^d`, ``d = prod(input_shape)``:
    a uniform direction (a normalised Gaussian) times :math:`r U^{1/d}`, ``U ~ U(0, 1)``, so that
    :math:`P(\|u\| \le \rho) = (\rho / r)^d`.

    Args:
        radius: ``r`` > 0, in input units (002 uses 4 on the 0-255 scale, i.e. 4/255 on [0, 1]).
        n_samples: Monte Carlo samples (002 uses 50).
        multiply_by_inputs: return :math:`x \odot g(x)` (002 Supp. C1).

    Example:
        >>> UniGrad(radius=0.5).n_points
        50
    """

    radius: float
    n_samples: int = 50
    multiply_by_inputs: bool = False
    name = "unigrad"

    def __post_init__(self) -> None:
        object.__setattr__(self, "radius", check_positive(self.radius, "radius"))
        check_int(self.n_samples, "n_samples", low=1)
        _check_bool(self.multiply_by_inputs, "multiply_by_inputs")

    def _noise(self, shape, generator, device, dtype) -> Tensor:
        return L2Norm().random(shape, self.radius, generator=generator, device=device, dtype=dtype)


#: Method names :func:`attribute` accepts as strings (the parameter-free methods, with their
#: defaults); SmoothGrad and UniGrad need a noise scale, so they are passed as objects.
METHOD_NAMES = {
    "saliency": Saliency,
    "simple": Saliency,  # 000's "simple gradient"
    "integrated_gradients": IntegratedGradients,
    "ig": IntegratedGradients,
}


def _as_method(method: object) -> AttributionMethod:
    if isinstance(method, AttributionMethod):
        return method
    if isinstance(method, str):
        if method in METHOD_NAMES:
            return METHOD_NAMES[method]()
        if method in ("smoothgrad", "unigrad"):
            cls = {
                "smoothgrad": "SmoothGrad(sigma=..., n_samples=...)",
                "unigrad": "UniGrad(radius=..., n_samples=...)",
            }[method]
            raise ValueError(
                f"`method` {method!r} needs a noise scale: pass geomrob.interpret.{cls}."
            )
        raise ValueError(
            f"`method` must be one of {sorted(METHOD_NAMES)} or an AttributionMethod "
            f"(Saliency, IntegratedGradients, SmoothGrad, UniGrad); got {method!r}."
        )
    raise TypeError(
        "`method` must be a string or an AttributionMethod (Saliency, IntegratedGradients, "
        f"SmoothGrad, UniGrad); got {type(method).__name__}."
    )


# ---------------------------------------------------------------------------------------------
# the result


@dataclass(frozen=True, eq=False)
class Attribution(Result):
    """Attribution maps of a batch, one row per image.

    Attributes:
        attribution: ``(B, *input_shape)`` the maps (normalised when ``normalize`` is set);
            differentiable w.r.t. ``x`` when computed with ``create_graph=True``.
        target: ``(B,)`` the class ``c`` whose logit :math:`S_c` was explained.
        logits: ``(B, L)`` the logits of ``model`` (not the surrogate) at ``x``.
        scale: ``(B,)`` what each raw map was divided by (its l1 / l2 norm; 1 when
            ``normalize=None`` or where the norm is zero), so ``raw = attribution * scale``.
        normalize: ``None``, ``"l1"`` or ``"l2"``.
        method: the :class:`AttributionMethod` that computed the maps.
        completeness_gap: ``(B,)`` Integrated Gradients only (else ``None``):
            ``sum(raw) - score_change``, the quadrature error of the path integral.
        score_change: ``(B,)`` Integrated Gradients only: :math:`S_c(x) - S_c(x^0)` of the model
            whose gradients were integrated (the surrogate when one is given).
    """

    attribution: Tensor
    target: Tensor
    logits: Tensor
    scale: Tensor
    normalize: str | None
    method: AttributionMethod
    completeness_gap: Tensor | None = field(default=None)
    score_change: Tensor | None = field(default=None)

    @property
    def raw(self) -> Tensor:
        """``(B, *input_shape)`` the unnormalised maps."""
        return self.attribution * _expand(self.scale, self.attribution)

    def __len__(self) -> int:
        return self.attribution.shape[0]


# ---------------------------------------------------------------------------------------------
# the driver


def _gradient_model(model: nn.Module, surrogate: object) -> nn.Module:
    if surrogate is None:
        return model
    if isinstance(surrogate, nn.Module):
        if model_device(surrogate) != model_device(model):
            raise ValueError(
                f"`surrogate` is on {model_device(surrogate)} but `model` is on "
                f"{model_device(model)}; move one of them."
            )
        if model_dtype(surrogate) not in (None, model_dtype(model)):
            raise TypeError(
                f"`surrogate` has dtype {model_dtype(surrogate)} but `model` has "
                f"{model_dtype(model)}; convert one of them."
            )
        return surrogate
    if isinstance(surrogate, numbers.Real) and not isinstance(surrogate, bool):
        beta = check_positive(surrogate, "surrogate")
        return softplus_surrogate(model, beta, share_weights=True)
    raise TypeError(
        "`surrogate` must be None, an nn.Module (e.g. geomrob.softplus_surrogate(model, beta)) or "
        f"a softplus beta > 0; got {type(surrogate).__name__} {surrogate!r}."
    )


def _target_gradients(
    call, points: Tensor, target: Tensor, num_classes: int, create_graph: bool
) -> Tensor:
    """``grad_p S_{target}(p)`` for each row of ``points`` ``(m, *input_shape)``."""
    if not (create_graph and points.requires_grad):
        points = points.detach().requires_grad_(True)
    with torch.enable_grad():
        out = call(points)
        check_logits(out, points.shape[0], name="gradient model's output")
        if out.shape[1] != num_classes:
            raise ValueError(
                f"`surrogate` returns {out.shape[1]} logits but `model` returns {num_classes}; "
                "they must be classifiers over the same classes."
            )
        score = out.gather(1, target.unsqueeze(1)).sum()
        if not score.requires_grad:  # the score does not depend on the input at all
            return torch.zeros_like(points)
        (grad,) = torch.autograd.grad(score, points, create_graph=create_graph)
    return grad if create_graph else grad.detach()


def _scores(call, x: Tensor, target: Tensor, per_pass: int) -> Tensor:
    with torch.no_grad():
        parts = [
            call(x[i : i + per_pass]).gather(1, target[i : i + per_pass, None]).squeeze(1)
            for i in range(0, x.shape[0], per_pass)
        ]
    return torch.cat(parts)


def attribute(
    model: nn.Module,
    x: Tensor,
    method: str | AttributionMethod,
    *,
    target: int | Tensor | None = None,
    normalize: str | None = None,
    create_graph: bool = False,
    surrogate: nn.Module | float | None = None,
    chunk: int | None = None,
    generator: torch.Generator | int | None = None,
) -> Attribution:
    r"""Attribution maps of any :class:`AttributionMethod`: the one driver behind the others.

    The map is a weighted mean of gradients :math:`\nabla_x S_c` at the method's points (see the
    module docstring for the four methods), then divided per image by its l1 norm
    (``normalize="l1"``, 000 Eqs. 1-2) or l2 norm (``"l2"``). Where the norm is zero the map is
    left at zero, ``scale`` is 1 and a warning says so.

    Args:
        model: classifier ``(B, *input_shape) -> (B, L)`` logits (evaluated in eval mode, no
            parameter gradients).
        x: ``(B, *input_shape)`` inputs on the model's device and dtype. With
            ``create_graph=True`` and ``x.requires_grad``, the map is differentiable w.r.t. ``x``.
        method: a name in :data:`METHOD_NAMES` (``"saliency"``/``"simple"``,
            ``"integrated_gradients"``/``"ig"``, with their defaults) or an
            :class:`AttributionMethod`.
        target: ``None`` (the class ``model`` predicts at each ``x``), an int, or a ``(B,)``
            tensor of classes.
        normalize: ``None`` (raw map), ``"l1"`` or ``"l2"``.
        create_graph: keep the graph of the gradients so that the map can be differentiated
            (second derivatives: use a smooth model or ``surrogate``).
        surrogate: ``None``, an ``nn.Module`` over the same classes, or a softplus ``beta``
            (:func:`geomrob.softplus_surrogate` of ``model`` with shared weights). The gradients
            come from it; the target class and ``logits`` from ``model``.
        chunk: at most this many (image, sample) points per forward/backward pass (``None``:
            1024). Chunking changes nothing but rounding.
        generator: source of the noise of SmoothGrad / UniGrad (an int seeds a new CPU
            generator; draws are made on the generator's device, so a CPU generator gives the
            same maps on any device).

    Returns:
        An :class:`Attribution`; for Integrated Gradients also the completeness gap.

    Raises:
        TypeError, ValueError: for a bad model, input or option (the message names it).

    Warns:
        UserWarning: with ``create_graph=True`` on a piecewise-linear gradient model (its second
            derivatives vanish almost everywhere), or when a map to normalise is zero.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 2)).double()
        >>> x = torch.ones(4, 3, dtype=torch.float64)
        >>> res = attribute(net, x, "saliency", target=1)
        >>> torch.equal(res.attribution, net[0].weight[1].detach().expand(4, 3))
        True
    """
    method = _as_method(method)
    normalize = check_choice(normalize, "normalize", NORMALIZATIONS)
    create_graph = _check_bool(create_graph, "create_graph")
    per_pass = DEFAULT_CHUNK if chunk is None else check_int(chunk, "chunk", low=1)
    gen = as_generator(generator, "cpu")
    with eval_mode(model):
        logits = check_inputs(model, x)
        n, num_classes = logits.shape
        if target is None:
            tgt = logits.argmax(1)
        else:
            tgt = check_target(target, n, num_classes, x.device)
        state = method._prepare(x)
        grad_model = _gradient_model(model, surrogate)
        if create_graph and is_piecewise_linear(grad_model):
            warnings.warn(
                "create_graph=True on a piecewise-linear model: its input gradients are piecewise "
                "constant, so derivatives of the map through them vanish almost everywhere. Pass "
                "`surrogate=beta` (a softplus copy) or use a smooth model.",
                UserWarning,
                stacklevel=3,
            )
        with eval_mode(grad_model):
            call = functional(grad_model)
            xg = x if create_graph else x.detach()
            raw = _mean_gradient(
                call, xg, method, state, tgt, num_classes, create_graph, per_pass, gen
            )
            gap = change = None
            if isinstance(method, IntegratedGradients):
                change = _scores(call, x.detach(), tgt, per_pass) - _scores(
                    call, state.detach(), tgt, per_pass
                )
                gap = raw.detach().flatten(1).sum(1) - change
    scale = torch.ones(n, device=x.device, dtype=x.dtype)
    attribution = raw
    if normalize is not None:
        flat = raw.flatten(1)
        norm = flat.abs().sum(1) if normalize == "l1" else flat.norm(dim=1)
        zero = norm == 0
        if bool(zero.any()):
            warnings.warn(
                f"{int(zero.sum())} of {n} attribution maps are zero and cannot be "
                f"{normalize}-normalised; they are left at zero (scale 1).",
                UserWarning,
                stacklevel=3,
            )
        scale = torch.where(zero, torch.ones_like(norm), norm)
        attribution = raw / _expand(scale, raw)
    return Attribution(
        attribution=attribution,
        target=tgt,
        logits=logits.detach(),
        scale=scale.detach(),
        normalize=normalize,
        method=method,
        completeness_gap=gap,
        score_change=change,
    )


def _mean_gradient(
    call,
    x: Tensor,
    method: AttributionMethod,
    state,
    target: Tensor,
    num_classes: int,
    create_graph: bool,
    per_pass: int,
    generator: torch.Generator | None,
) -> Tensor:
    """The unnormalised map: sample blocks of ``per_pass // n`` samples, image blocks below."""
    n, shape = x.shape[0], tuple(x.shape[1:])
    total_points = method.n_points
    samples_per_block = max(1, per_pass // n)
    images_per_block = min(n, per_pass)
    total: Tensor | None = None
    for s0 in range(0, total_points, samples_per_block):
        s1 = min(total_points, s0 + samples_per_block)
        points = method._points(x, s0, s1, state, generator)  # (b, n, *shape)
        weights = method._weights(s0, s1, x)
        parts = []
        for i0 in range(0, n, images_per_block):
            i1 = min(n, i0 + images_per_block)
            p = points[:, i0:i1]
            b, m = p.shape[0], p.shape[1]
            g = _target_gradients(
                call, p.reshape(b * m, *shape), target[i0:i1].repeat(b), num_classes, create_graph
            ).view(b, m, *shape)
            if weights is not None:
                g = g * weights.view(-1, *([1] * (g.ndim - 1)))
            parts.append(g.sum(0))
        block = torch.cat(parts) if len(parts) > 1 else parts[0]
        total = block if total is None else total + block
    mean = total / method._total_weight
    return method._finish(x, mean, state)


# ---------------------------------------------------------------------------------------------
# the four public methods


def saliency(
    model: nn.Module,
    x: Tensor,
    *,
    target: int | Tensor | None = None,
    normalize: str | None = None,
    multiply_by_inputs: bool = False,
    create_graph: bool = False,
    surrogate: nn.Module | float | None = None,
    chunk: int | None = None,
) -> Attribution:
    r"""Saliency map (simple gradient), :math:`\nabla_x S_c(x)` (000 Eq. 1; 002 Def. 1).

    000's :math:`I_{SG}` is ``normalize="l1"``: :math:`\nabla S_c / \|\nabla S_c\|_1`.
    Options as in :func:`attribute`; ``multiply_by_inputs`` gives :math:`x \odot \nabla S_c`.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2)).double()
        >>> with torch.no_grad():
        ...     _ = net[0].weight.copy_(torch.tensor([[1.0, -3.0], [0.0, 1.0]]))
        >>> x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
        >>> res = saliency(net, x, normalize="l1")
        >>> res.target.tolist(), res.attribution.tolist(), res.scale.tolist()
        ([0], [[0.25, -0.75]], [4.0])
    """
    return attribute(
        model,
        x,
        Saliency(multiply_by_inputs=multiply_by_inputs),
        target=target,
        normalize=normalize,
        create_graph=create_graph,
        surrogate=surrogate,
        chunk=chunk,
    )


def integrated_gradients(
    model: nn.Module,
    x: Tensor,
    *,
    baseline: Tensor | None = None,
    steps: int = 50,
    rule: str = "right",
    target: int | Tensor | None = None,
    normalize: str | None = None,
    create_graph: bool = False,
    surrogate: nn.Module | float | None = None,
    chunk: int | None = None,
) -> Attribution:
    r"""Integrated Gradients (000 Eq. 2; 002 Def. 2), with its completeness gap.

    :math:`(x - x^0) \odot \frac1M \sum_{k=1}^M \nabla S_c(x^0 + \frac kM (x - x^0))` for
    ``rule="right"`` (000 Eq. 2, error :math:`O(1/M)`), or the trapezoid rule over ``k = 0..M``
    (:math:`O(1/M^2)`); see :class:`IntegratedGradients`. 000's :math:`I_{IG}` is
    ``normalize="l1"``. ``completeness_gap`` is computed on the unnormalised map.
    Other options as in :func:`attribute`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 2)).double()
        >>> x = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> res = integrated_gradients(net, x, steps=200, rule="trapezoid")
        >>> bool((res.completeness_gap.abs() < 1e-4).all())
        True
    """
    return attribute(
        model,
        x,
        IntegratedGradients(baseline=baseline, steps=steps, rule=rule),
        target=target,
        normalize=normalize,
        create_graph=create_graph,
        surrogate=surrogate,
        chunk=chunk,
    )


def smoothgrad(
    model: nn.Module,
    x: Tensor,
    *,
    sigma: float,
    n_samples: int = 50,
    target: int | Tensor | None = None,
    normalize: str | None = None,
    multiply_by_inputs: bool = False,
    create_graph: bool = False,
    surrogate: nn.Module | float | None = None,
    chunk: int | None = None,
    generator: torch.Generator | int | None = None,
) -> Attribution:
    r"""SmoothGrad, :math:`\frac1n \sum_s \nabla S_c(x + e_s)`, :math:`e_s \sim N(0, \sigma^2 I)`.

    A Monte Carlo estimate of 002 Def. 3, the gradient of the Gaussian-smoothed logit
    (002 Prop. 1). See :class:`SmoothGrad` and :func:`attribute` for the options.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 2)).double()
        >>> x = torch.zeros(2, 3, dtype=torch.float64)
        >>> a = smoothgrad(net, x, sigma=0.5, n_samples=8, target=0, generator=0).attribution
        >>> torch.allclose(a, net[0].weight[0].detach().expand(2, 3))  # linear: no smoothing
        True
    """
    return attribute(
        model,
        x,
        SmoothGrad(sigma=sigma, n_samples=n_samples, multiply_by_inputs=multiply_by_inputs),
        target=target,
        normalize=normalize,
        create_graph=create_graph,
        surrogate=surrogate,
        chunk=chunk,
        generator=generator,
    )


def unigrad(
    model: nn.Module,
    x: Tensor,
    *,
    radius: float,
    n_samples: int = 50,
    target: int | Tensor | None = None,
    normalize: str | None = None,
    multiply_by_inputs: bool = False,
    create_graph: bool = False,
    surrogate: nn.Module | float | None = None,
    chunk: int | None = None,
    generator: torch.Generator | int | None = None,
) -> Attribution:
    r"""Uniform Gradient, :math:`\frac1n \sum_s \nabla S_c(x + u_s)`, :math:`u_s \sim U(B_r)`.

    A Monte Carlo estimate of 002 Def. 8, with ``u`` uniform in the l2 ball of radius ``r``
    (:class:`UniGrad`). Options as in :func:`attribute`.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 2)).double()
        >>> x = torch.zeros(2, 3, dtype=torch.float64)
        >>> a = unigrad(net, x, radius=0.5, n_samples=8, target=1, generator=0).attribution
        >>> torch.allclose(a, net[0].weight[1].detach().expand(2, 3))
        True
    """
    return attribute(
        model,
        x,
        UniGrad(radius=radius, n_samples=n_samples, multiply_by_inputs=multiply_by_inputs),
        target=target,
        normalize=normalize,
        create_graph=create_graph,
        surrogate=surrogate,
        chunk=chunk,
        generator=generator,
    )
