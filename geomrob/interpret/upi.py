r"""Universal perturbations for interpretation (UPI) and baselines (Ehsani Oskouie and Farnia).

One perturbation :math:`\delta`, :math:`\|\delta\|_p \le \epsilon`, that changes the attribution
maps of most inputs (``000`` in ``shared/seeds``). With the squared distance of 000's algorithms,
:math:`D(x, x') = \|I(x) - I(x')\|_2^2`, ``I`` the attribution normalised as ``normalize`` says
(000 Eqs. 1-2: l1) for the class the real model predicts at the clean ``x``:

- :func:`upi_grad`, 000 Alg. 1: projected stochastic gradient ascent on 000 Eq. 6. Start at
  :math:`\delta = z_0 \sim N(0, \sigma^2 I)`; per minibatch ``B`` draw one
  :math:`z \sim N(0, \sigma^2 I)` and update
  :math:`\delta \leftarrow \Pi_\epsilon\big(\delta + \tfrac{\alpha}{|B|} \sum_{x \in B}
  \nabla_z D(x, x + z + \delta)\big)` (the gradient in ``z`` at ``z + delta`` is the gradient
  in :math:`\delta`).
- :func:`upi_pca`, 000 Alg. 2: the rows :math:`G_i = \nabla_z D(x_i, x_i + z)` at random
  :math:`z \sim N(0, \sigma^2 I)` (:func:`interpretation_gradients`), or per-image FGM / PGD
  interpretation perturbations (the UPI-PCA-FGM / -PGD rows of 000 Table 1; see
  :func:`~geomrob.interpret.attacks.fgm_attack`), then the stochastic power method
  :math:`\delta \leftarrow \Pi_\epsilon\big(\delta + \tfrac{\alpha}{|B|} \sum_{i \in B}
  (\delta^\top G_i) G_i\big)` (:func:`stochastic_power_method`). By 000 Prop. 2 the solution of
  the first-order problem 000 Eq. 8 (l2) is the top right singular vector of ``G``: the power
  method on :math:`I + \alpha M`, :math:`M = G^\top G / n`, converges to it at the rate
  :math:`(1 + \alpha \lambda_2) / (1 + \alpha \lambda_1)`.
- Baselines of 000 Table 1: :func:`classification_uap` (the universal adversarial perturbation of
  "universal adversarial training", 000 ref. 25: projected stochastic gradient ascent with
  momentum on the clipped cross-entropy of 000 Eq. 5), :func:`random_noise` (Gaussian noise
  scaled to norm ``eps``, universal or per image) and the per-image attacks of
  :mod:`geomrob.interpret.attacks`.
- :func:`universal_dissimilarity`: 000 Eq. 9, :math:`\|I(x) - I(x')\|_2 / \|I(x)\|_2`, per
  image, with its mean and median and the label-change rate (000 Table 2): one call per row of
  000's tables, for a universal or a per-image perturbation.

**Smooth surrogate.** ``D`` is differentiated through the map (second derivatives of the
network), which vanish almost everywhere for ReLU networks: the gradients are taken on
``surrogate`` (a softplus ``beta`` or a module) while the labels come from ``model``; evaluate
with :func:`universal_dissimilarity` on the real model.

**Projection.** ``p = 2``: :math:`\delta / \max(1, \|\delta\|_2 / \epsilon)` (000's formula);
``p = inf``: clipping to :math:`[-\epsilon, \epsilon]`, the Euclidean projection onto the
l-inf ball (000 writes the radial formula for every norm; 000 Prop. 2 is for l2 only).

**Step sizes.** ``alpha`` as a float is the literal step of the algorithms, in the units of
:math:`\nabla D` (tiny for l1-normalised maps, whose entries are about ``1/d``).
``alpha=None`` picks a scale-free step: for :func:`upi_grad` and :func:`classification_uap` a
steepest-ascent step of length :data:`DEFAULT_STEP_FRACTION` times ``eps`` in the norm of the
ball; for the power method :math:`\alpha = n / \|G\|_F^2 = 1 / \mathrm{tr}(M)`, so that
:math:`\alpha \lambda_1 \le 1`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._model import check_inputs, eval_mode, functional
from .._random import as_generator, randn
from .._validation import (
    check_batch,
    check_bounds,
    check_choice,
    check_finite,
    check_floating,
    check_int,
    check_labels,
    check_positive,
    check_real,
    check_tensor,
)
from ..attacks.gradient import LpNorm, lp_norm
from ..results import Result
from .attacks import (
    _check_normalize,
    _default_sigma,
    _quiet_piecewise,
    _warn_if_piecewise,
    fgm_attack,
    pgd_attack,
)
from .attributions import AttributionMethod, _as_method, _check_bool, _gradient_model, attribute

__all__ = [
    "DEFAULT_STEP_FRACTION",
    "UPI_VARIANTS",
    "PowerIteration",
    "UPIResult",
    "UniversalDissimilarity",
    "classification_uap",
    "interpretation_gradients",
    "random_noise",
    "stochastic_power_method",
    "universal_dissimilarity",
    "upi_grad",
    "upi_pca",
]

#: Rows of UPI-PCA: gradients at random points (000 Alg. 2), per-image FGM or PGD perturbations.
UPI_VARIANTS = ("grad", "fgm", "pgd")
#: ``alpha=None`` in :func:`upi_grad` / :func:`classification_uap`: steepest-ascent steps of this
#: fraction of ``eps``.
DEFAULT_STEP_FRACTION = 0.1
#: Images per pass when ``batch_size=None`` in the evaluation helpers.
DEFAULT_BATCH_SIZE = 256


# ---------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True, eq=False)
class UPIResult(Result):
    """A universal perturbation for interpretation (or a baseline) and how it was found.

    Attributes:
        delta: ``(*input_shape)`` the perturbation, ``||delta||_p <= eps`` (up to rounding).
        norm: ``||delta||_p``.
        eps: radius of the ball.
        p: 2.0 or ``inf``.
        algorithm: ``"upi_grad"``, ``"upi_pca"`` or ``"classification_uap"``.
        variant: the rows of UPI-PCA (``"grad"``, ``"fgm"``, ``"pgd"``), else ``None``.
        history: ``(epochs,)`` per epoch: UPI-Grad, the mean of ``D(x, x + z + delta)`` over the
            minibatches (on the gradient model, before each update); UPI-PCA, the Rayleigh
            quotient :math:`\\delta^\\top M \\delta / \\|\\delta\\|_2^2` of 000 Eq. 8 after the
            epoch; the classification UAP, the mean (clipped) cross-entropy.
        updates: number of updates of ``delta``.
        optimality: UPI-PCA: the final Rayleigh quotient over the exact top eigenvalue of
            :math:`M = G^\\top G / n` (:attr:`PowerIteration.optimality`; 1 when the power
            method reached the top right singular vector of 000 Prop. 2); ``None`` otherwise.
    """

    delta: Tensor
    norm: float
    eps: float
    p: float
    algorithm: str
    variant: str | None
    history: Tensor
    updates: int
    optimality: float | None = None


@dataclass(frozen=True, eq=False)
class PowerIteration(Result):
    """The stochastic power method of 000 Alg. 2 on fixed rows ``G``.

    Attributes:
        vector: ``(d,)`` the final ``delta`` (norm ``eps`` in the p-norm once it reached the
            sphere; with ``project=False`` rescaled to norm ``eps``).
        history: ``(epochs,)`` Rayleigh quotient :math:`\\delta^\\top M \\delta / \\|\\delta\\|^2`,
            :math:`M = G^\\top G / n`, after each epoch (it tends to :math:`\\sigma_1(G)^2 / n`).
        alpha: the step used.
        updates: number of updates.
        top_value: :math:`\\sigma_1(G)^2 / n`, the largest eigenvalue of :math:`M`, computed
            exactly (the optimum of 000 Eq. 8 per unit norm).
    """

    vector: Tensor
    history: Tensor
    alpha: float
    updates: int
    top_value: float

    @property
    def optimality(self) -> float:
        """Final Rayleigh quotient over ``top_value``: 1 at the top right singular vector.

        How far the iteration got: the direction's cosine with the top singular vector ``u_1``
        is at least ``sqrt((q - r) / (1 - r))`` for this ratio ``q`` and ``r = lambda_2 /
        lambda_1``, so ``q`` near 1 means converged.
        """
        return float(self.history[-1]) / self.top_value if self.top_value > 0 else float("nan")


@dataclass(frozen=True, eq=False)
class UniversalDissimilarity(Result):
    """000 Eq. 9 over a set of images for one perturbation (a row of 000 Tables 1-2).

    Attributes:
        dissimilarity: ``(n,)`` :math:`\\|I(x) - I(x')\\|_2 / \\|I(x)\\|_2` (``nan`` where the
            clean map is zero).
        mean: mean of the defined values (000 Table 1 reports the mean).
        median: median of the defined values.
        label: ``(n,)`` prediction at ``x``.
        adv_label: ``(n,)`` prediction at ``x' = x + delta`` (clipped to ``bounds`` if given).
        label_changed: ``(n,)`` bool.
        label_change_rate: fraction of images whose label changed (000 Table 2, "fooling rate").
        norm: ``(n,)`` ``||x' - x||_p``.
    """

    dissimilarity: Tensor
    mean: float
    median: float
    label: Tensor
    adv_label: Tensor
    label_changed: Tensor
    label_change_rate: float
    norm: Tensor


# ---------------------------------------------------------------------------------------------
# helpers


def _project(delta: Tensor, norm: LpNorm, eps: float) -> Tensor:
    return norm.project(delta.unsqueeze(0), eps).squeeze(0)


def _ascent_step(g: Tensor, norm: LpNorm, eps: float, alpha: float | None) -> Tensor:
    """The update of ``delta`` from the mean gradient ``g`` (see the module docs)."""
    if alpha is None:
        return DEFAULT_STEP_FRACTION * eps * norm.step(g.unsqueeze(0)).squeeze(0)
    return alpha * g


def _batches(n: int, batch_size: int, perm: Tensor | None = None):
    for i in range(0, n, batch_size):
        yield perm[i : i + batch_size] if perm is not None else slice(i, min(n, i + batch_size))


def _bar(progress: bool, total: int, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


def _predict(call, x: Tensor, batch_size: int) -> Tensor:
    with torch.no_grad():
        return torch.cat([call(x[s]).argmax(1) for s in _batches(len(x), batch_size)])


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _draw_seed(gen: torch.Generator | None) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=gen))


def _check_common(model, x, batch_size, chunk, progress) -> tuple[Tensor, int, bool]:
    """Validate the batch on the model (first ``batch_size`` images) and the shared options."""
    x = check_batch(x, "x")
    batch_size = check_int(batch_size, "batch_size", low=1)
    if chunk is not None:
        check_int(chunk, "chunk", low=1)
    progress = _check_bool(progress, "progress")
    check_inputs(model, x[:batch_size])
    return x.detach(), batch_size, progress


def _map(model, z, method, target, normalize, chunk, seed, create_graph=False) -> Tensor:
    return attribute(
        model,
        z,
        method,
        target=target,
        normalize=normalize,
        create_graph=create_graph,
        chunk=chunk,
        generator=_seeded(seed),
    ).attribution


# ---------------------------------------------------------------------------------------------
# UPI-Grad


def upi_grad(
    model: nn.Module,
    x: Tensor,
    *,
    eps: float,
    method: str | AttributionMethod = "simple",
    p: float = 2.0,
    alpha: float | None = None,
    epochs: int = 10,
    batch_size: int = 32,
    sigma: float | None = None,
    normalize: str | None = "l1",
    surrogate: nn.Module | float | None = None,
    chunk: int | None = None,
    generator: torch.Generator | int | None = None,
    progress: bool = False,
) -> UPIResult:
    r"""UPI-Grad (000 Alg. 1): projected stochastic gradient ascent on the mean dissimilarity.

    Maximises 000 Eq. 6, :math:`E_z \frac1n \sum_i D(x_i, x_i + \delta + z)` with
    :math:`D = \|I(x) - I(\cdot)\|_2^2`, over :math:`\|\delta\|_p \le \epsilon`: start at
    :math:`\delta \sim N(0, \sigma^2 I)`; each epoch visits the images in a random order in
    minibatches ``B``; per minibatch one :math:`z \sim N(0, \sigma^2 I)` is drawn and
    :math:`\delta \leftarrow \Pi_\epsilon(\delta + \alpha\, \bar g)`,
    :math:`\bar g = \frac1{|B|}\sum_{x \in B} \nabla_\delta D(x, x + z + \delta)` (``alpha=None``:
    :math:`\delta + 0.1\,\epsilon\, s_p(\bar g)` with :math:`s_2(g) = g / \|g\|_2`,
    :math:`s_\infty = \mathrm{sign}`; see the module docs).

    Args:
        model: classifier ``(n, *input_shape) -> (n, L)`` logits (gives the explained class).
        x: ``(n, *input_shape)`` the fitting images.
        eps: radius of the ball, > 0.
        method: attribution method: ``"simple"`` (000's simple gradient), ``"ig"`` or any
            :class:`~geomrob.interpret.AttributionMethod`.
        p: 2 or ``float("inf")``.
        alpha: step size of Alg. 1 (``None``: scale-free steps of ``0.1 * eps``).
        epochs: passes over the images, >= 1.
        batch_size: minibatch size ``|B|``, >= 1.
        sigma: standard deviation of ``z`` and of the start (``None``: ``0.05 * eps / sqrt(d)``
            for ``p = 2``, ``0.05 * eps`` for ``p = inf``; 000 takes :math:`\sigma \ll \epsilon`).
        normalize: normalisation of the maps: ``"l1"`` (000), ``"l2"`` or ``None``.
        surrogate: smooth model for the gradients (``None``, a module or a softplus ``beta``).
        chunk: (image, sample) points per backward pass of the maps.
        generator: seed or generator (start, ``z``, the order of the images, the maps' noise).
        progress: show a tqdm bar over the updates.

    Returns:
        A :class:`UPIResult` (``history``: mean ``D`` per epoch on the gradient model).

    Raises:
        TypeError, ValueError: for a bad model, input or option (the message names it).

    Warns:
        UserWarning: when the gradient model is piecewise linear (pass ``surrogate``).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3)).double()
        >>> x = torch.randn(40, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        >>> res = upi_grad(net, x, eps=0.5, epochs=4, batch_size=10, generator=0)
        >>> res.delta.shape, round(res.norm, 6), res.updates
        (torch.Size([5]), 0.5, 16)
        >>> bool(res.history[-1] > res.history[0])
        True
    """
    norm = lp_norm(p)
    eps = check_positive(eps, "eps")
    epochs = check_int(epochs, "epochs", low=1)
    alpha = None if alpha is None else check_positive(alpha, "alpha")
    normalize = _check_normalize(normalize)
    method = _as_method(method)
    gen = as_generator(generator, "cpu")
    with eval_mode(model):
        x, batch_size, progress = _check_common(model, x, batch_size, chunk, progress)
        n, shape = x.shape[0], tuple(x.shape[1:])
        sigma = _check_sigma_positive(sigma, _default_sigma(eps, norm, shape))
        label = _predict(functional(model), x, batch_size)
        grad_model = _gradient_model(model, surrogate)
        _warn_if_piecewise(grad_model, stacklevel=3)
        seed = _draw_seed(gen)
        delta = sigma * randn(*shape, generator=gen, device=x.device, dtype=x.dtype)
        history = []
        updates = 0
        bar = _bar(progress, epochs * math.ceil(n / batch_size), f"UPI-Grad ({x.device})")
        with eval_mode(grad_model), _quiet_piecewise():
            for _ in range(epochs):
                perm = torch.randperm(n, generator=gen).to(x.device)
                total = torch.zeros((), dtype=x.dtype, device=x.device)
                for idx in _batches(n, batch_size, perm):
                    z = sigma * randn(*shape, generator=gen, device=x.device, dtype=x.dtype)
                    xb, tb = x[idx], label[idx]
                    ref = _map(grad_model, xb, method, tb, normalize, chunk, seed).detach()
                    v = (z + delta).requires_grad_(True)
                    with torch.enable_grad():
                        h = _map(grad_model, xb + v, method, tb, normalize, chunk, seed, True)
                        dist = (h - ref).flatten(1).pow(2).sum(1)
                        (g,) = torch.autograd.grad(dist.sum(), v)
                    delta = _project(
                        delta + _ascent_step(g / len(idx), norm, eps, alpha), norm, eps
                    )
                    _check_finite_state(delta, "delta")
                    total = total + dist.detach().sum()
                    updates += 1
                    if bar is not None:
                        bar.update(1)
                history.append(total / n)
        if bar is not None:
            bar.close()
    return UPIResult(
        delta=delta.detach(),
        norm=float(norm.norm(delta.unsqueeze(0))),
        eps=eps,
        p=norm.p,
        algorithm="upi_grad",
        variant=None,
        history=torch.stack(history),
        updates=updates,
    )


def _check_sigma_positive(sigma: object, default: float) -> float:
    return default if sigma is None else check_positive(sigma, "sigma")


def _check_finite_state(v: Tensor, name: str) -> None:
    if not bool(torch.isfinite(v).all()):
        raise RuntimeError(
            f"`{name}` became NaN or infinite: the step `alpha` is too large for the scale of the "
            "gradients; lower it or use alpha=None (scale-free steps)."
        )


# ---------------------------------------------------------------------------------------------
# UPI-PCA


def interpretation_gradients(
    model: nn.Module,
    x: Tensor,
    *,
    sigma: float,
    method: str | AttributionMethod = "simple",
    n_samples: int = 1,
    normalize: str | None = "l1",
    surrogate: nn.Module | float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    chunk: int | None = None,
    generator: torch.Generator | int | None = None,
    progress: bool = False,
) -> Tensor:
    r"""The matrix ``G`` of 000 Prop. 2: rows :math:`G_i = \nabla_z D(x_i, x_i + z)`.

    :math:`D(x, x') = \|I(x) - I(x')\|_2^2` and ``z ~ N(0, sigma^2 I)``; each row is the mean
    over ``n_samples`` draws, an estimate of :math:`E_Z \nabla_z D(x_i, x_i + Z)` (000 Prop. 2;
    000 Alg. 2 uses one draw). ``z`` is drawn per image: for each sample ``s = 0, 1, ...`` the
    ``(n, *input_shape)`` draws of all images at once, then one seed for the maps' noise, before
    any map, so ``batch_size`` does not change the draws (only the rounding). Near
    :math:`z = 0`, :math:`G_i \approx 2 J_i^\top J_i z` with :math:`J_i` the Jacobian of the map.

    Args:
        model: classifier ``(n, *input_shape) -> (n, L)`` logits (gives the explained class).
        x: ``(n, *input_shape)`` images.
        sigma: standard deviation of ``z``, > 0.
        method: attribution method (``"simple"``, ``"ig"`` or an ``AttributionMethod``).
        n_samples: draws of ``z`` per image, >= 1.
        normalize: normalisation of the maps: ``"l1"`` (000), ``"l2"`` or ``None``.
        surrogate: smooth model for the gradients (``None``, a module or a softplus ``beta``).
        batch_size: images per pass, >= 1.
        chunk: (image, sample) points per backward pass of the maps.
        generator: seed or generator of ``z`` (and of the maps' noise).
        progress: show a tqdm bar over the passes.

    Returns:
        ``(n, d)`` the rows ``G_i``, ``d = prod(input_shape)``.

    Raises:
        TypeError, ValueError: for a bad model, input or option (the message names it).

    Warns:
        UserWarning: when the gradient model is piecewise linear (pass ``surrogate``).

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
        >>> x = torch.zeros(6, 3, dtype=torch.float64)
        >>> G = interpretation_gradients(net, x, sigma=0.01, generator=0)
        >>> G4 = interpretation_gradients(net, x, sigma=0.01, generator=0, batch_size=4)
        >>> G.shape, torch.allclose(G, G4, rtol=1e-12, atol=0.0)
        (torch.Size([6, 3]), True)
    """
    sigma = check_positive(sigma, "sigma")
    n_samples = check_int(n_samples, "n_samples", low=1)
    normalize = _check_normalize(normalize)
    method = _as_method(method)
    gen = as_generator(generator, "cpu")
    with eval_mode(model):
        x, batch_size, progress = _check_common(model, x, batch_size, chunk, progress)
        n = x.shape[0]
        label = _predict(functional(model), x, batch_size)
        grad_model = _gradient_model(model, surrogate)
        _warn_if_piecewise(grad_model, stacklevel=3)
        rows = torch.zeros_like(x)
        bar = _bar(progress, n_samples * math.ceil(n / batch_size), f"UPI rows ({x.device})")
        with eval_mode(grad_model), _quiet_piecewise():
            for _ in range(n_samples):
                zs = sigma * randn(*x.shape, generator=gen, device=x.device, dtype=x.dtype)
                seed = _draw_seed(gen)
                for sl in _batches(n, batch_size):
                    xb, tb = x[sl], label[sl]
                    ref = _map(grad_model, xb, method, tb, normalize, chunk, seed).detach()
                    z = zs[sl].clone().requires_grad_(True)
                    with torch.enable_grad():
                        h = _map(grad_model, xb + z, method, tb, normalize, chunk, seed, True)
                        dist = (h - ref).flatten(1).pow(2).sum(1)
                        (g,) = torch.autograd.grad(dist.sum(), z)
                    rows[sl] += g.detach()
                    if bar is not None:
                        bar.update(1)
        if bar is not None:
            bar.close()
    return (rows / n_samples).flatten(1)


def stochastic_power_method(
    rows: Tensor,
    *,
    eps: float,
    p: float = 2.0,
    alpha: float | None = None,
    epochs: int = 10,
    batch_size: int = 32,
    sigma: float | None = None,
    project: bool = True,
    generator: torch.Generator | int | None = None,
    progress: bool = False,
) -> PowerIteration:
    r"""The stochastic power method of 000 Alg. 2 on the rows ``G`` ``(n, d)``.

    Start at :math:`\delta \sim N(0, \sigma^2 I_d)`; each epoch visits the rows in a random
    order in minibatches ``B``:
    :math:`\delta \leftarrow \Pi_\epsilon\big(\delta + \tfrac{\alpha}{|B|} G_B^\top G_B
    \delta\big)`. With full batches and ``project=False`` this is the power method on
    :math:`I + \alpha M`, :math:`M = G^\top G / n`, whose dominant eigenvector is the top right
    singular vector of ``G`` (000 Prop. 2), at the rate
    :math:`(1 + \alpha\lambda_2) / (1 + \alpha\lambda_1)`; with the l2 projection it is the same
    iteration, normalised once :math:`\delta` reaches the sphere. ``project=False`` runs the
    linear iteration without projection, rescaling :math:`\delta` to unit length after every
    update (which does not change its direction, the map being linear, and avoids overflow),
    and returns the direction scaled to norm ``eps``. Minibatches make the iteration stochastic
    (an Oja-type iteration): smaller ``alpha`` averages more minibatches.

    Args:
        rows: ``(n, d)`` the matrix ``G``.
        eps: radius of the ball, > 0.
        p: 2 or ``float("inf")`` (projection by clipping; Prop. 2 holds for l2).
        alpha: step (``None``: :math:`n / \|G\|_F^2 = 1 / \mathrm{tr}(M)`).
        epochs: passes over the rows, >= 1.
        batch_size: rows per update, >= 1.
        sigma: standard deviation of the start (``None``: ``0.05 * eps / sqrt(d)`` for
            ``p = 2``, ``0.05 * eps`` for ``p = inf``).
        project: project on the ball after each update (000 Alg. 2), or run the unconstrained
            linear iteration (see above).
        generator: seed or generator of the start and the order of the rows.
        progress: show a tqdm bar over the updates.

    Returns:
        A :class:`PowerIteration`. The sign of the vector is arbitrary, as for any singular
        vector.

    Raises:
        TypeError, ValueError: for bad rows or options; ``ValueError`` for all-zero rows.
        RuntimeError: if ``delta`` becomes non-finite (too large an ``alpha``).

    Example:
        >>> G = torch.tensor([[3.0, 0.0], [0.0, 1.0], [3.0, 0.0]], dtype=torch.float64)
        >>> res = stochastic_power_method(G, eps=2.0, epochs=50, batch_size=3, generator=0)
        >>> [round(abs(v), 6) for v in res.vector.tolist()], round(float(res.history[-1]), 6)
        ([2.0, 0.0], 6.0)
    """
    rows = check_tensor(rows, "rows")
    if rows.ndim != 2:
        raise ValueError(f"`rows` must be a matrix (n, d); got shape {tuple(rows.shape)}.")
    check_batch(rows, "rows")
    norm = lp_norm(p)
    eps = check_positive(eps, "eps")
    epochs = check_int(epochs, "epochs", low=1)
    batch_size = check_int(batch_size, "batch_size", low=1)
    project = _check_bool(project, "project")
    progress = _check_bool(progress, "progress")
    n, d = rows.shape
    sigma = _check_sigma_positive(sigma, _default_sigma(eps, norm, (d,)))
    frob = float(rows.pow(2).sum())
    if frob == 0:
        raise ValueError("`rows` are all zero: the power method has no direction to find.")
    alpha = n / frob if alpha is None else check_positive(alpha, "alpha")
    gen = as_generator(generator, "cpu")
    delta = sigma * randn(d, generator=gen, device=rows.device, dtype=rows.dtype)
    history, updates = [], 0
    bar = _bar(progress, epochs * math.ceil(n / batch_size), f"power method ({rows.device})")
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen).to(rows.device)
        for idx in _batches(n, batch_size, perm):
            gb = rows[idx]
            delta = delta + (alpha / len(idx)) * (gb.T @ (gb @ delta))
            if project:
                delta = _project(delta, norm, eps)
            else:
                delta = delta / delta.norm().clamp_min(torch.finfo(delta.dtype).tiny)
            _check_finite_state(delta, "delta")
            updates += 1
            if bar is not None:
                bar.update(1)
        sq = delta.pow(2).sum().clamp_min(torch.finfo(delta.dtype).tiny)
        history.append((rows @ delta).pow(2).sum() / n / sq)
    if bar is not None:
        bar.close()
    if not project:
        length = norm.norm(delta.unsqueeze(0)).clamp_min(torch.finfo(delta.dtype).tiny)
        delta = delta * (eps / length)
    return PowerIteration(
        vector=delta,
        history=torch.stack(history),
        alpha=float(alpha),
        updates=updates,
        top_value=_top_eigenvalue(rows),
    )


def _top_eigenvalue(rows: Tensor) -> float:
    """``sigma_1(G)^2 / n`` exactly, through the smaller Gram matrix (float64)."""
    n, d = rows.shape
    g = rows.double()
    gram = g @ g.T if n <= d else g.T @ g
    return float(torch.linalg.eigvalsh(gram)[-1]) / n


def upi_pca(
    model: nn.Module,
    x: Tensor,
    *,
    eps: float,
    method: str | AttributionMethod = "simple",
    variant: str = "grad",
    p: float = 2.0,
    alpha: float | None = None,
    epochs: int = 100,
    batch_size: int = 32,
    sigma: float | None = None,
    n_samples: int = 1,
    steps: int = 20,
    project: bool = True,
    normalize: str | None = "l1",
    surrogate: nn.Module | float | None = None,
    chunk: int | None = None,
    generator: torch.Generator | int | None = None,
    progress: bool = False,
) -> UPIResult:
    r"""UPI-PCA (000 Alg. 2): the top right singular vector of interpretation gradients.

    First the rows ``G`` ``(n, d)``: ``variant="grad"``, :math:`G_i = \nabla_z D(x_i, x_i + z)`
    at random ``z ~ N(0, sigma^2 I)`` (exactly :func:`interpretation_gradients` with the same
    ``generator``, which is drawn from first); ``"fgm"`` / ``"pgd"``, the per-image
    interpretation perturbations of :func:`~geomrob.interpret.attacks.fgm_attack` /
    :func:`~geomrob.interpret.attacks.pgd_attack` (``steps`` iterations) in the same ball
    (000's UPI-PCA-FGM / -PGD). Then :func:`stochastic_power_method` on ``G`` (000 Prop. 2).

    Args:
        model: classifier ``(n, *input_shape) -> (n, L)`` logits.
        x: ``(n, *input_shape)`` the fitting images.
        eps: radius of the ball, > 0.
        method: attribution method (``"simple"``, ``"ig"`` or an ``AttributionMethod``).
        variant: ``"grad"``, ``"fgm"`` or ``"pgd"``.
        p: 2 or ``float("inf")``.
        alpha: power-method step (``None``: :math:`1 / \mathrm{tr}(G^\top G / n)`).
        epochs: power-method passes over the rows, >= 1. The rows are computed once, so the
            passes cost no gradients (000 Alg. 2 redraws ``z`` every minibatch; here the draws
            are ``n_samples`` per row): the default 100 lets the iteration converge where 10
            did not (MNIST ``cnn2``, 200 rows: optimality 0.11 after 5 passes, 0.99 after 50).
        batch_size: rows per power-method update and images per pass for the rows, >= 1.
        sigma: standard deviation of ``z`` and of the start (``None``: ``0.05 * eps / sqrt(d)``
            for ``p = 2``, ``0.05 * eps`` for ``p = inf``).
        n_samples: draws of ``z`` per row for ``variant="grad"``, >= 1.
        steps: PGD iterations for ``variant="pgd"``, >= 1.
        project: project on the ball in the power method (see :func:`stochastic_power_method`).
        normalize: normalisation of the maps: ``"l1"`` (000), ``"l2"`` or ``None``.
        surrogate: smooth model for the gradients (``None``, a module or a softplus ``beta``).
        chunk: (image, sample) points per backward pass of the maps.
        generator: seed or generator (rows first, then the power method).
        progress: show tqdm bars.

    Returns:
        A :class:`UPIResult` (``history``: Rayleigh quotient of 000 Eq. 8 per epoch).

    Raises:
        TypeError, ValueError: for a bad model, input or option (the message names it).

    Warns:
        UserWarning: when the gradient model is piecewise linear (pass ``surrogate``).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3)).double()
        >>> x = torch.randn(30, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        >>> res = upi_pca(net, x, eps=0.5, sigma=0.01, epochs=30, batch_size=30, generator=0)
        >>> G = interpretation_gradients(net, x, sigma=0.01, generator=0)
        >>> top = torch.linalg.svd(G, full_matrices=False).Vh[0]
        >>> bool(abs(torch.dot(top, res.delta) / res.norm) > 0.99), round(res.norm, 6)
        (True, 0.5)
    """
    variant = check_choice(variant, "variant", UPI_VARIANTS)
    norm = lp_norm(p)
    eps = check_positive(eps, "eps")
    steps = check_int(steps, "steps", low=1)
    batch_size = check_int(batch_size, "batch_size", low=1)
    method = _as_method(method)
    x = check_batch(x, "x")
    sigma = _check_sigma_positive(sigma, _default_sigma(eps, norm, tuple(x.shape[1:])))
    gen = as_generator(generator, "cpu")
    if variant == "grad":
        rows = interpretation_gradients(
            model,
            x,
            sigma=sigma,
            method=method,
            n_samples=n_samples,
            normalize=normalize,
            surrogate=surrogate,
            batch_size=batch_size,
            chunk=chunk,
            generator=gen,
            progress=progress,
        )
    else:
        attack = fgm_attack if variant == "fgm" else pgd_attack
        extra = {} if variant == "fgm" else {"steps": steps, "progress": progress}
        parts = []
        for sl in _batches(x.shape[0], batch_size):
            res = attack(
                model,
                x[sl],
                method,
                eps=eps,
                p=norm.p,
                sigma=sigma,
                normalize=normalize,
                surrogate=surrogate,
                chunk=chunk,
                generator=gen,
                **extra,
            )
            parts.append(res.delta.flatten(1))
        rows = torch.cat(parts)
        if not bool(rows.any()):
            raise ValueError(
                f"Every per-image {variant.upper()} perturbation is zero (no step kept the label "
                "or the gradients vanish); UPI-PCA has no direction to find."
            )
    pm = stochastic_power_method(
        rows,
        eps=eps,
        p=norm.p,
        alpha=alpha,
        epochs=epochs,
        batch_size=batch_size,
        sigma=sigma,
        project=project,
        generator=gen,
        progress=progress,
    )
    delta = pm.vector.view(x.shape[1:])
    return UPIResult(
        delta=delta,
        norm=float(norm.norm(delta.unsqueeze(0))),
        eps=eps,
        p=norm.p,
        algorithm="upi_pca",
        variant=variant,
        history=pm.history,
        updates=pm.updates,
        optimality=pm.optimality,
    )


# ---------------------------------------------------------------------------------------------
# baselines


def classification_uap(
    model: nn.Module,
    x: Tensor,
    *,
    eps: float,
    p: float = 2.0,
    epochs: int = 10,
    batch_size: int = 32,
    alpha: float | None = None,
    momentum: float = 0.9,
    max_loss: float | None = None,
    labels: Tensor | None = None,
    generator: torch.Generator | int | None = None,
    progress: bool = False,
) -> UPIResult:
    r"""Classification UAP baseline of 000 Table 1 (000 Eq. 5; 000 ref. 25's SGD algorithm).

    Projected stochastic gradient ascent with momentum on the mean cross-entropy of
    :math:`f(x_i + \delta)` against ``labels`` (default: the predictions at the clean ``x``),
    each term clipped at ``max_loss`` as in universal adversarial training (000 ref. 25; so that
    fooled images stop dominating): from :math:`\delta = 0`, per minibatch
    :math:`m \leftarrow \mu m + \bar g`, :math:`\delta \leftarrow \Pi_\epsilon(\delta + \alpha m)`
    (``alpha=None``: :math:`\delta + 0.1\,\epsilon\, s_p(m)`, see the module docs). This is the
    SGD formulation, not the DeepFool-based algorithm of :func:`geomrob.universal_perturbation`.

    Args:
        model: classifier ``(n, *input_shape) -> (n, L)`` logits.
        x: ``(n, *input_shape)`` the fitting images.
        eps: radius of the ball, > 0.
        p: 2 or ``float("inf")``.
        epochs: passes over the images, >= 1.
        batch_size: minibatch size, >= 1.
        alpha: step size (``None``: scale-free steps of ``0.1 * eps``).
        momentum: :math:`\mu \in [0, 1)`.
        max_loss: clip each cross-entropy term at this value (``None``: no clipping).
        labels: ``(n,)`` classes to move away from (``None``: the model's predictions).
        generator: seed or generator of the order of the images.
        progress: show a tqdm bar over the updates.

    Returns:
        A :class:`UPIResult` (``history``: mean clipped cross-entropy per epoch).

    Raises:
        TypeError, ValueError: for a bad model, input or option (the message names it).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3)).double()
        >>> x = torch.randn(40, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        >>> res = classification_uap(net, x, eps=1.0, epochs=5, batch_size=10, generator=0)
        >>> bool(res.history[-1] > res.history[0]), res.norm <= 1.0 + 1e-12
        (True, True)
    """
    norm = lp_norm(p)
    eps = check_positive(eps, "eps")
    epochs = check_int(epochs, "epochs", low=1)
    alpha = None if alpha is None else check_positive(alpha, "alpha")
    momentum = check_real(momentum, "momentum", low=0.0, high=1.0, high_inclusive=False)
    max_loss = None if max_loss is None else check_positive(max_loss, "max_loss")
    gen = as_generator(generator, "cpu")
    with eval_mode(model):
        x, batch_size, progress = _check_common(model, x, batch_size, None, progress)
        n, shape = x.shape[0], tuple(x.shape[1:])
        call = functional(model)
        if labels is None:
            y = _predict(call, x, batch_size)
        else:
            num_classes = call(x[:1]).shape[1]
            y = check_labels(labels, n, "labels", num_classes=num_classes).to(x.device, torch.long)
        delta = torch.zeros(shape, device=x.device, dtype=x.dtype)
        buf = torch.zeros_like(delta)
        history, updates = [], 0
        bar = _bar(progress, epochs * math.ceil(n / batch_size), f"UAP-SGD ({x.device})")
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen).to(x.device)
            total = torch.zeros((), dtype=x.dtype, device=x.device)
            for idx in _batches(n, batch_size, perm):
                v = delta.clone().requires_grad_(True)
                with torch.enable_grad():
                    loss = F.cross_entropy(call(x[idx] + v), y[idx], reduction="none")
                    if max_loss is not None:
                        loss = loss.clamp(max=max_loss)
                    (g,) = torch.autograd.grad(loss.mean(), v)
                buf = momentum * buf + g
                delta = _project(delta + _ascent_step(buf, norm, eps, alpha), norm, eps).detach()
                _check_finite_state(delta, "delta")
                total = total + loss.detach().sum()
                updates += 1
                if bar is not None:
                    bar.update(1)
            history.append(total / n)
        if bar is not None:
            bar.close()
    return UPIResult(
        delta=delta,
        norm=float(norm.norm(delta.unsqueeze(0))),
        eps=eps,
        p=norm.p,
        algorithm="classification_uap",
        variant=None,
        history=torch.stack(history),
        updates=updates,
    )


def random_noise(
    x: Tensor,
    *,
    eps: float,
    p: float = 2.0,
    universal: bool = True,
    generator: torch.Generator | int | None = None,
) -> Tensor:
    r"""Gaussian noise scaled to norm exactly ``eps``: the "Random" rows of 000 Tables 1-2.

    :math:`\epsilon\, g / \|g\|_p`, :math:`g \sim N(0, I)`: one perturbation for every image
    (``universal=True``) or one per image. Drawn on the generator's device.

    Args:
        x: ``(n, *input_shape)`` images (for the shape, device and dtype).
        eps: the norm, > 0.
        p: 2 or ``float("inf")``.
        universal: one ``(*input_shape)`` perturbation, or ``(n, *input_shape)``.
        generator: seed or generator.

    Returns:
        ``(*input_shape)`` or ``(n, *input_shape)`` noise of p-norm ``eps``.

    Raises:
        TypeError, ValueError: for bad input or options.

    Example:
        >>> x = torch.zeros(3, 2, 2)
        >>> v = random_noise(x, eps=0.5, generator=0)
        >>> v.shape, round(float(v.norm()), 6)
        (torch.Size([2, 2]), 0.5)
        >>> w = random_noise(x, eps=0.5, p=float("inf"), universal=False, generator=0)
        >>> w.shape, [round(m, 6) for m in w.abs().amax((1, 2)).tolist()]
        (torch.Size([3, 2, 2]), [0.5, 0.5, 0.5])
    """
    x = check_batch(x, "x")
    norm = lp_norm(p)
    eps = check_positive(eps, "eps")
    universal = _check_bool(universal, "universal")
    gen = as_generator(generator, "cpu")
    shape = (1, *x.shape[1:]) if universal else tuple(x.shape)
    g = randn(*shape, generator=gen, device=x.device, dtype=x.dtype)
    scale = eps / norm.norm(g).clamp_min(torch.finfo(g.dtype).tiny)
    g = g * scale.view(-1, *([1] * (g.ndim - 1)))
    return g.squeeze(0) if universal else g


def universal_dissimilarity(
    model: nn.Module,
    x: Tensor,
    delta: Tensor,
    method: str | AttributionMethod = "simple",
    *,
    normalize: str | None = "l1",
    same_class: bool = False,
    p: float = 2.0,
    bounds: tuple[float, float] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    chunk: int | None = None,
    generator: torch.Generator | int | None = None,
) -> UniversalDissimilarity:
    r"""000 Eq. 9 for a perturbation over a set of images, with the label-change rate.

    :math:`D(x, x') = \|I(x) - I(x')\|_2 / \|I(x)\|_2` with :math:`x' = x + \delta` (clipped to
    ``bounds`` when given; nothing is clipped otherwise), ``I`` the map of the real ``model``
    normalised as ``normalize`` says (000: l1) for the class it predicts at each input (000
    Sec. 2.1; ``same_class=True`` explains the clean class at ``x'`` too). The mean over images
    is what 000 Table 1 reports; the label-change rate is 000 Table 2. Random maps (SmoothGrad,
    UniGrad) use the same noise at ``x`` and ``x'``.

    Args:
        model: classifier ``(n, *input_shape) -> (n, L)`` logits.
        x: ``(n, *input_shape)`` evaluation images.
        delta: a universal perturbation ``(*input_shape)`` or ``(d,)``, or per-image
            perturbations ``(n, *input_shape)`` (e.g. ``pgd_attack(...).delta``).
        method: attribution method (``"simple"``, ``"ig"`` or an ``AttributionMethod``).
        normalize: ``"l1"`` (000), ``"l2"`` or ``None``; Eq. 9 is invariant to a common scale,
            not to per-map normalisation.
        same_class: explain the class predicted at ``x`` at both points.
        p: the norm reported in ``norm``.
        bounds: optional pixel box for ``x'``.
        batch_size: images per pass, >= 1.
        chunk: (image, sample) points per backward pass of the maps.
        generator: seed or generator of the maps' noise.

    Returns:
        A :class:`UniversalDissimilarity`.

    Raises:
        TypeError, ValueError: for a bad model, input, perturbation or option.

    Warns:
        UserWarning: when some clean maps are zero (their dissimilarity is ``nan`` and left out
            of the mean and median).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2)).double()
        >>> x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> res = universal_dissimilarity(net, x, torch.tensor([0.1, 0.0], dtype=torch.float64))
        >>> res.mean  # a linear model has the same gradient everywhere
        0.0
    """
    normalize = _check_normalize(normalize)
    same_class = _check_bool(same_class, "same_class")
    norm = lp_norm(p)
    method = _as_method(method)
    gen = as_generator(generator, "cpu")
    with eval_mode(model):
        x, batch_size, _ = _check_common(model, x, batch_size, chunk, False)
        box = check_bounds(bounds, x)
        delta = _check_delta(delta, x)
        x_adv = x + delta
        if box is not None:
            x_adv = x_adv.clamp(box[0], box[1])
        call = functional(model)
        label = _predict(call, x, batch_size)
        adv_label = _predict(call, x_adv, batch_size)
        parts = []
        for sl in _batches(x.shape[0], batch_size):
            seed = _draw_seed(gen)
            a = _map(model, x[sl], method, label[sl], normalize, chunk, seed)
            tgt = label[sl] if same_class else adv_label[sl]
            b = _map(model, x_adv[sl], method, tgt, normalize, chunk, seed)
            den = a.flatten(1).norm(dim=1)
            num = (a - b).flatten(1).norm(dim=1)
            parts.append(
                torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), math.nan)
            )
    dis = torch.cat(parts)
    defined = ~torch.isnan(dis)
    if not bool(defined.all()):
        warnings.warn(
            f"{int((~defined).sum())} of {len(dis)} clean maps are zero: their dissimilarity "
            "(000 Eq. 9) is undefined (nan) and left out of the mean and median.",
            UserWarning,
            stacklevel=2,
        )
    vals = dis[defined].double()
    changed = adv_label != label
    return UniversalDissimilarity(
        dissimilarity=dis,
        mean=float(vals.mean()) if vals.numel() else math.nan,
        median=float(vals.quantile(0.5)) if vals.numel() else math.nan,
        label=label,
        adv_label=adv_label,
        label_changed=changed,
        label_change_rate=float(changed.double().mean()),
        norm=norm.norm(x_adv - x),
    )


def _check_delta(delta: object, x: Tensor) -> Tensor:
    delta = check_tensor(delta, "delta")
    check_floating(delta, "delta")
    check_finite(delta, "delta")
    shape = tuple(x.shape[1:])
    d = math.prod(shape)
    if tuple(delta.shape) == (d,):
        delta = delta.view(shape)
    if tuple(delta.shape) not in (shape, tuple(x.shape)):
        raise ValueError(
            f"`delta` must have the input shape {shape}, the flat shape ({d},) or the batch's "
            f"shape {tuple(x.shape)}; got {tuple(delta.shape)}."
        )
    if delta.device != x.device or delta.dtype != x.dtype:
        raise ValueError(
            f"`delta` must be on {x.device} with dtype {x.dtype} like `x`; got {delta.device}, "
            f"{delta.dtype}."
        )
    return delta
