r"""Per-point Hessian-vector products of the boundary margin (DESIGN.md section 3).

For boundary points ``z_i`` between ``k_i = label`` and ``j_i = adv_label`` the margin is
:math:`F_i = f_{j_i} - f_{k_i}` and :math:`H_i = \nabla^2 F_i(z_i)`. Four modes:

``"exact"``
    Reverse-over-reverse (double backward), batched over the points and over a block of vectors
    per point (no Python loop over points); the same products as forward-over-reverse
    (``torch.func.jvp`` of ``torch.func.grad``), about 18% faster on CPU (:func:`exact_products`).

``"finite_difference"``
    :math:`\|v\| \, (\nabla F(z + h u) - \nabla F(z - h u)) / (2h)`, :math:`u = v / \|v\|`: the
    step is ``h`` in input units whatever the scale of ``v``. This is the mode of ReLU / max-pool
    networks (curvature at scale ``h``, as CURE, Moosavi-Dezfooli et al., CVPR 2019). For a smooth
    ``F`` it equals :math:`\bar H(u) v` with the *symmetric* segment average
    :math:`\bar H(u) = \frac{1}{2h}\int_{-h}^{h} \nabla^2 F(z + t u)\,dt = H + O(h^2)`; it is
    positively homogeneous and odd in ``v`` but linear only up to :math:`O(h^2)` (exactly linear
    for a quadratic ``F``). For a ReLU network it is far from linear (and hence from symmetric):
    see :class:`~geomrob.curvature.operators.BoundaryHessian` for how the averaged operator is
    symmetrised.

``"surrogate"``
    Exact mode on ``softplus_surrogate(model, beta)`` (ReLU -> Softplus(beta)), at the same ``z``.

``"smoothed"``
    The Hessian of the Gaussian-smoothed margin :math:`F_\sigma(z) = E F(z + \sigma e)`, by
    Stein's identity :math:`\nabla^2 F_\sigma(z) = E[\nabla F(z + \sigma e) e^\top] / \sigma`,
    estimated from ``S`` antithetic samples per point:

    .. math::

        M = \frac{1}{S} \sum_s \frac{\nabla F(z + \sigma e_s) - \nabla F(z - \sigma e_s)}
        {2 \sigma} e_s^\top, \qquad \hat H = \tfrac12 (M + M^\top),

    exactly symmetric and linear, well defined for ReLU networks. Only the ``2 S`` gradients are
    network passes; products with ``M`` and ``M^T`` reuse them. Each direction ``e_s`` is exactly
    ``N(0, I)``; by default (``orthogonal=True``) the directions of a point are orthogonal within
    blocks of ``d`` (Gaussian lengths, Haar directions: :func:`stein_directions`), which keeps
    the estimator unbiased and lowers its variance. For a quadratic ``F`` (Hessian ``A``) the
    antithetic difference is exactly ``A e_s``, so ``E[\hat H] = A`` with mean squared
    Frobenius error, per point,

    .. math::

        \text{i.i.d.:}\ \frac{(d + 2)\|A\|_F^2 + \operatorname{tr}(A)^2}{2 S},
        \qquad
        \text{orthogonal, } S = m d:\
        \frac{1}{m}\Big[\frac{\|A\|_F^2}{d}
        + \frac{\operatorname{tr}(A)^2 + 2 \|A\|_F^2}{d (d + 2)}\Big],

    (both tested), about ``(d + 2) / 2`` times smaller with orthogonal blocks once ``S >= d``.
    Measured on 50 boundary points of a tanh MLP trained on the 8 x 8 digits (d = 64), projected
    and normalised operator, small sigma, against the exact operator: relative Frobenius error
    0.91 (i.i.d.) vs 0.16 (orthogonal) at S = 64, 0.44 vs 0.08 at S = 256. For a ReLU network
    the smoothed Hessian is a different object from the symmetric part of the
    finite-difference matrix (same scale, Gaussian vs coordinate probing): their top-5
    eigenspaces were nearly unrelated on the digits ReLU MLP, so choose one definition and say
    which.
Default scales: ``h = None`` and ``sigma = None`` mean ``0.1 * ||r_i||`` per point
(:data:`DEFAULT_RELATIVE_STEP`), ``r_i = z_i - x_i`` the distance to the boundary. ``||r||`` is
the length scale on which the boundary matters for ``x_i`` (a perturbation of that size reaches
it), so a tenth of it resolves the curvature the point "sees" while, for a ReLU network,
still crossing activation regions (a much smaller ``h`` returns the zero Hessian of the current
linear piece plus spikes). For a smooth ``F`` the truncation error is
:math:`O(h^2 \|\nabla^3 F\|)` and the rounding error about :math:`\epsilon \|\nabla F\| / h`,
negligible in float64 and about ``1e-6`` relative in float32. A point with ``r_i = 0`` gets the
median scale of the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._model import check_inputs, eval_mode, functional
from .._random import as_generator, randn
from .._validation import (
    check_batch,
    check_choice,
    check_int,
    check_model,
    check_positive,
    check_tensor,
)
from ..models.surrogate import is_piecewise_linear, softplus_surrogate
from .boundary import BoundaryPoints

__all__ = ["DEFAULT_RELATIVE_STEP", "DEFAULT_SAMPLES", "MODES", "hvp"]

#: The Hessian-vector product modes.
MODES = ("exact", "finite_difference", "surrogate", "smoothed")
#: ``h = None`` / ``sigma = None``: this fraction of each point's ``||r||``.
DEFAULT_RELATIVE_STEP = 0.1
#: ``n_samples = None`` in smoothed mode: antithetic pairs per point.
DEFAULT_SAMPLES = 64

Call = Callable[[Tensor], Tensor]


@dataclass
class _Setup:
    """Validated, flattened inputs shared by :func:`hvp` and ``BoundaryHessian``."""

    model: nn.Module  # the user's model
    net: nn.Module  # the network differentiated: the surrogate in surrogate mode, else model
    mode: str
    input_shape: tuple[int, ...]
    z: Tensor  # (n, d)
    coef: Tensor  # (n, L): F_i = logits . coef_i
    steps: Tensor | None  # (n,) h (finite_difference) or sigma (smoothed)
    n_samples: int | None
    generator: torch.Generator | None
    orthogonal: bool = True

    @property
    def n(self) -> int:
        return self.z.shape[0]

    @property
    def d(self) -> int:
        return self.z.shape[1]


def _check_points(points: object) -> BoundaryPoints:
    if not isinstance(points, BoundaryPoints):
        raise TypeError(
            "`points` must be a BoundaryPoints (from geomrob.boundary_points); got "
            f"{type(points).__name__}."
        )
    return points


def _check_steps(value: object, name: str, points: BoundaryPoints) -> Tensor:
    """``(n,)`` positive steps: a given float or tensor, or 0.1 ||r_i|| (see the module doc)."""
    n, z = len(points), points.z
    if value is None:
        norms = points.r.flatten(1).norm(dim=1).to(z.dtype)
        positive = norms[norms > 0]
        if positive.numel() == 0:
            raise ValueError(
                f"`{name}=None` uses {DEFAULT_RELATIVE_STEP} * ||r|| per point, but every point "
                f"has r = z - x = 0; give `{name}` explicitly (a float in input units)."
            )
        fallback = positive.median()
        return DEFAULT_RELATIVE_STEP * torch.where(norms > 0, norms, fallback)
    if isinstance(value, Tensor):
        if value.shape != (n,) or not value.is_floating_point():
            raise ValueError(
                f"`{name}` as a tensor must be floating with shape ({n},), one step per point; "
                f"got dtype {value.dtype}, shape {tuple(value.shape)}."
            )
        if not bool((torch.isfinite(value) & (value > 0)).all()):
            raise ValueError(f"`{name}` must be finite and > 0 for every point.")
        return value.to(device=z.device, dtype=z.dtype)
    return torch.full((n,), check_positive(value, name), device=z.device, dtype=z.dtype)


def _only_for(mode: str, **given: object) -> None:
    """Reject options that the chosen mode does not use (an easy mistake to miss)."""
    owners = {
        "h": "finite_difference",
        "beta": "surrogate",
        "sigma": "smoothed",
        "n_samples": "smoothed",
    }
    for name, value in given.items():
        if value is not None and owners[name] != mode:
            raise ValueError(
                f"`{name}` is an option of mode={owners[name]!r}; got {name}={value!r} with "
                f"mode={mode!r}. Drop it or change the mode."
            )


def _setup(
    model: object,
    points: object,
    *,
    mode: object,
    h: object,
    beta: object,
    sigma: object,
    n_samples: object,
    generator: object,
    orthogonal: object = True,
    allow_empty: bool = False,
) -> _Setup:
    model = check_model(model)
    points = _check_points(points)
    mode = check_choice(mode, "mode", MODES)
    _only_for(mode, h=h, beta=beta, sigma=sigma, n_samples=n_samples)
    net = model
    if mode == "surrogate":
        if beta is None:
            raise ValueError(
                "mode='surrogate' needs `beta`, the sharpness of Softplus(beta) replacing each "
                "ReLU (e.g. 10 to 100 for inputs in [0, 1]); there is no scale-free default."
            )
        net = softplus_surrogate(model, check_positive(beta, "beta"))
    z = points.z
    n = z.shape[0] if isinstance(z, Tensor) else 0
    with eval_mode(net):
        if n == 0 and allow_empty:
            num_classes = 0
        else:
            # every point is checked (finite, dtype, device); one forward pass gives the
            # number of classes: a pass over all n would cost a third of a batched gradient
            z = check_batch(z, "points.z")
            num_classes = check_inputs(net, z[:1], "points.z", warn_probs=False).shape[1]
    label, adv = points.label, points.adv_label
    for name, t in (("points.label", label), ("points.adv_label", adv)):
        if t.shape != (n,) or t.is_floating_point():
            raise ValueError(f"`{name}` must be integer labels of shape ({n},); got {t.shape}.")
    coef = torch.zeros(n, max(num_classes, 1), dtype=z.dtype, device=z.device)
    if n:
        rows = torch.arange(n, device=z.device)
        coef[rows, adv.to(z.device)] += 1
        coef[rows, label.to(z.device)] -= 1
    steps = None
    if mode == "finite_difference":
        steps = _check_steps(h, "h", points) if n else None
    elif mode == "smoothed":
        steps = _check_steps(sigma, "sigma", points) if n else None
        n_samples = (
            DEFAULT_SAMPLES if n_samples is None else check_int(n_samples, "n_samples", low=1)
        )
    if mode != "smoothed":
        n_samples = None
    gen = as_generator(generator, "cpu")
    if not isinstance(orthogonal, bool):
        raise TypeError(f"`orthogonal` must be a bool; got {type(orthogonal).__name__}.")
    return _Setup(
        model=model,
        net=net,
        mode=mode,
        input_shape=tuple(z.shape[1:]),
        z=z.detach().flatten(1),
        coef=coef,
        steps=steps,
        n_samples=n_samples,
        generator=gen,
        orthogonal=orthogonal,
    )


def zero_hessian_error(setup: _Setup) -> ValueError:
    """The error for exact products that vanish on a piecewise-linear network."""
    what = "its softplus surrogate" if setup.mode == "surrogate" else "it"
    hint = (
        " The surrogate replaces nn.ReLU modules only: a ReLU called inside forward "
        "(torch.relu, F.relu) is not replaced."
        if setup.mode == "surrogate"
        else ""
    )
    return ValueError(
        f"mode={setup.mode!r}: {type(setup.model).__name__} is piecewise linear (no smooth "
        f"nonlinearity module) and the exact input Hessian of {what} is zero at these points; it "
        "vanishes almost everywhere for ReLU / max-pool networks, so exact curvature would be "
        "silently zero. Use mode='finite_difference' (curvature at scale h, e.g. h=0.1*||r||), "
        "mode='surrogate' with beta (ReLU -> Softplus(beta)) or mode='smoothed' with sigma "
        f"(Hessian of the Gaussian-smoothed margin).{hint}"
    )


# ---------------------------------------------------------------------------------------------
# Batched kernels. Shapes: z (m, d), coef (m, L), V (m, b, d) -> (m, b, d). Call inside
# eval_mode(net) with ``call = functional(net)``.


def margin_gradients(call: Call, shape: tuple[int, ...], z: Tensor, coef: Tensor) -> Tensor:
    """``grad F`` at many points at once, ``z (N, d)``, ``coef (N, L)`` -> ``(N, d)``.

    One forward and one backward pass over the batch: rows are independent in eval mode.
    """

    def total(zz: Tensor) -> Tensor:
        return (call(zz.view(-1, *shape)) * coef).sum()

    return torch.func.grad(total)(z)


def exact_products(
    call: Call, shape: tuple[int, ...], z: Tensor, coef: Tensor, V: Tensor
) -> Tensor:
    """``H_i v`` for every point and every vector of its block: one double backward pass.

    Each (point, vector) pair is a row of one batch ``Z`` (the point repeated ``b`` times); the
    gradient of ``sum_rows F(Z_row)`` is the per-row gradient ``g`` (rows are independent in
    eval mode), and the vector-Jacobian product of ``g`` with the rows of ``V`` is the per-row
    ``H v`` (``H`` is symmetric). Reverse-over-reverse measured 2.3x the cost of one batched
    gradient against 2.7x for forward-over-reverse (``torch.func.jvp`` of ``torch.func.grad``,
    bitwise the same products), n = 100 MNIST boundary points of a softplus LeNet, 15
    interleaved rounds on 2 CPU threads; ``vmap`` over points and vectors had measured 3.0x in
    an earlier one-thread run.
    """
    m, b, d = V.shape
    # Real copies, not expanded views: kernels may write into their inputs' storage.
    Z = z[:, None].expand(m, b, d).contiguous().view(m * b, d).detach().requires_grad_(True)
    C = coef[:, None].expand(m, b, coef.shape[1]).contiguous().view(m * b, coef.shape[1])
    T = V.contiguous().view(m * b, d)
    with torch.enable_grad():
        total = (call(Z.view(-1, *shape)) * C).sum()
        (g,) = torch.autograd.grad(total, Z, create_graph=True, materialize_grads=True)
        if not g.requires_grad:  # the gradient does not depend on z: H = 0
            return torch.zeros_like(T).view(m, b, d)
        (hv,) = torch.autograd.grad(g, Z, grad_outputs=T, materialize_grads=True)
    return hv.view(m, b, d)


def fd_products(
    call: Call, shape: tuple[int, ...], z: Tensor, coef: Tensor, V: Tensor, h: Tensor
) -> Tensor:
    """``||v|| (grad F(z + h u) - grad F(z - h u)) / (2h)``, ``u = v / ||v||`` (0 for v = 0)."""
    m, b, d = V.shape
    norms = V.norm(dim=2, keepdim=True)
    U = V / torch.where(norms > 0, norms, torch.ones_like(norms))
    step = h.view(m, 1, 1) * U
    Z = torch.stack([z[:, None] + step, z[:, None] - step])  # (2, m, b, d)
    C = coef[None, :, None].expand(2, m, b, coef.shape[1])
    G = margin_gradients(call, shape, Z.reshape(-1, d), C.reshape(-1, coef.shape[1]))
    G = G.view(2, m, b, d)
    return norms * (G[0] - G[1]) / (2 * h.view(m, 1, 1))


def orthogonal_blocks(G: Tensor) -> Tensor:
    """Rows of ``G (..., S, d)`` made orthogonal within blocks of ``d``, keeping their lengths.

    For each block of ``b = min(d, rows left)`` rows ``g_j``: ``Q`` from the QR factorisation of
    ``[g_1 ... g_b]`` with signs fixed so that ``diag R > 0``, rows ``||g_j|| q_j``. All blocks
    of all leading indices go through one batched QR (plus one for a last, partial block).
    """
    *lead, S, d = G.shape
    full = (S // d) * d

    def orth(g: Tensor) -> Tensor:  # (..., b, d) -> (..., b, d)
        Q, R = torch.linalg.qr(g.transpose(-1, -2))
        signs = torch.sign(torch.diagonal(R, dim1=-2, dim2=-1))
        Q = Q * torch.where(signs == 0, torch.ones_like(signs), signs)[..., None, :]
        return Q.transpose(-1, -2) * g.norm(dim=-1, keepdim=True)

    parts = []
    if full:
        blocks = G[..., :full, :].reshape(*lead, S // d, d, d)
        parts.append(orth(blocks).reshape(*lead, full, d))
    if full < S:
        parts.append(orth(G[..., full:, :]))
    return torch.cat(parts, dim=-2)


def stein_directions(
    n_samples: int,
    d: int,
    *,
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype,
    orthogonal: bool,
    points: int | None = None,
) -> Tensor:
    """``(S, d)`` (or ``(points, S, d)``) directions, each exactly ``N(0, I_d)``.

    ``orthogonal=False``: i.i.d. standard normal rows. ``orthogonal=True`` (orthogonal Monte
    Carlo, :func:`orthogonal_blocks`): Gaussian rows ``g_j`` become ``||g_j|| q_j`` with ``Q``
    the Q factor of a block of ``min(d, S)`` of them. ``Q`` is Haar distributed and independent
    of ``R`` (hence of the lengths ``||g_j||^2 = sum_i R_ij^2``, which are chi_d), so every row
    is still exactly ``N(0, I)`` -- Stein's identity and unbiasedness hold -- while the rows of
    a block are orthogonal: for a quadratic margin the mean squared error drops by about
    ``(d + 2) / 2`` once ``S >= d`` (module doc). With ``points``, the ``(S, d)`` draws are
    made point after point (so they do not depend on how points are chunked).
    """
    count = 1 if points is None else points
    G = torch.stack(
        [randn(n_samples, d, generator=generator, device=device, dtype=dtype) for _ in range(count)]
    )
    if orthogonal:
        G = orthogonal_blocks(G)
    return G[0] if points is None else G


def stein_samples(
    call: Call,
    shape: tuple[int, ...],
    z: Tensor,
    coef: Tensor,
    sigma: Tensor,
    n_samples: int,
    generator: torch.Generator | None,
    orthogonal: bool = True,
) -> tuple[Tensor, Tensor]:
    """``(D, E)``, both ``(m, S, d)``: ``M_i = D_i^T E_i / S`` (see the module doc).

    ``E`` holds the directions (:func:`stein_directions`), drawn point by point in order from
    ``generator`` (so the draws do not depend on chunking); ``D`` the antithetic differences
    ``(grad F(z + sigma e) - grad F(z - sigma e)) / (2 sigma)``.
    """
    m, d = z.shape
    E = stein_directions(
        n_samples,
        d,
        generator=generator,
        device=z.device,
        dtype=z.dtype,
        orthogonal=orthogonal,
        points=m,
    )
    step = sigma.view(m, 1, 1) * E
    Z = torch.stack([z[:, None] + step, z[:, None] - step])  # (2, m, S, d)
    C = coef[None, :, None].expand(2, m, n_samples, coef.shape[1])
    G = margin_gradients(call, shape, Z.reshape(-1, d), C.reshape(-1, coef.shape[1]))
    G = G.view(2, m, n_samples, d)
    return (G[0] - G[1]) / (2 * sigma.view(m, 1, 1)), E


def stein_products(D: Tensor, E: Tensor, V: Tensor) -> Tensor:
    """``((M_i + M_i^T) / 2) v`` with ``M_i = D_i^T E_i / S``, for every vector of each block."""
    S = D.shape[1]
    Mv = torch.einsum("msd,mbs->mbd", D, torch.einsum("msd,mbd->mbs", E, V))
    Mtv = torch.einsum("msd,mbs->mbd", E, torch.einsum("msd,mbd->mbs", D, V))
    return (Mv + Mtv) / (2 * S)


def products(setup: _Setup, call: Call, index: slice, V: Tensor) -> Tensor:
    """Per-point products ``(m, b, d)`` for the points ``index`` (exact, FD or smoothed)."""
    z, coef = setup.z[index], setup.coef[index]
    if setup.mode in ("exact", "surrogate"):
        return exact_products(call, setup.input_shape, z, coef, V)
    if setup.mode == "finite_difference":
        return fd_products(call, setup.input_shape, z, coef, V, setup.steps[index])
    D, E = stein_samples(
        call,
        setup.input_shape,
        z,
        coef,
        setup.steps[index],
        setup.n_samples,
        setup.generator,
        setup.orthogonal,
    )
    return stein_products(D, E, V)


# ---------------------------------------------------------------------------------------------


def hvp(
    model: nn.Module,
    points: BoundaryPoints,
    v: Tensor,
    *,
    mode: str = "exact",
    h: float | Tensor | None = None,
    beta: float | None = None,
    sigma: float | Tensor | None = None,
    n_samples: int | None = None,
    generator: torch.Generator | int | None = None,
    orthogonal: bool = True,
    chunk: int | None = None,
) -> Tensor:
    r"""Per-point Hessian-vector products :math:`H_i v_i` of the boundary margin.

    :math:`H_i = \nabla^2 F_i(z_i)` with :math:`F_i = f_{\text{adv}_i} - f_{\text{label}_i}`
    (DESIGN.md section 3; modes and default scales in the module docstring).

    Args:
        model: classifier returning logits (used in eval mode, restored afterwards).
        points: :class:`BoundaryPoints` of ``model`` (``n`` points in ``R^d``).
        v: ``(n, d)`` one vector per point, ``(n, b, d)`` a block per point, or ``(d,)``
            the same vector for every point.
        mode: ``"exact"``, ``"finite_difference"``, ``"surrogate"`` or ``"smoothed"``.
        h: finite-difference step in input units, a float or ``(n,)`` tensor;
            ``None``: ``0.1 * ||r_i||``. Only with ``mode="finite_difference"``.
        beta: Softplus sharpness, required with (and only with) ``mode="surrogate"``.
        sigma: smoothing scale (float or ``(n,)``); ``None``: ``0.1 * ||r_i||``. Smoothed only.
        n_samples: antithetic pairs per point in smoothed mode (default 64).
        generator: source of the smoothed mode's directions (an int seeds a new one);
            ignored by the deterministic modes.
        orthogonal: smoothed mode: orthogonal directions within blocks of ``d`` (default,
            same expectation, lower variance) or i.i.d. Gaussian ones (``False``).
        chunk: points per batched pass (``None``: all at once); bounds memory.

    Returns:
        ``(n, d)`` for ``v`` of shape ``(n, d)`` or ``(d,)``; ``(n, b, d)`` for ``(n, b, d)``.

    Raises:
        TypeError: if ``model``, ``points`` or ``v`` has the wrong type or ``v`` the wrong dtype.
        ValueError: for a bad option or shape, and for ``mode="exact"`` (or a surrogate) on a
            piecewise-linear network whose exact products all vanish, naming the alternatives.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 3)).double()
        >>> from geomrob.curvature import boundary_points
        >>> x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> pts = boundary_points(net, x)
        >>> hv = hvp(net, pts, torch.eye(2, dtype=torch.float64).expand(4, 2, 2))
        >>> hv.shape  # (n, b, d): the 2 x 2 Hessian of each point
        torch.Size([4, 2, 2])
        >>> bool(torch.allclose(hv, hv.transpose(1, 2)))
        True
    """
    setup = _setup(
        model,
        points,
        mode=mode,
        h=h,
        beta=beta,
        sigma=sigma,
        n_samples=n_samples,
        generator=generator,
        orthogonal=orthogonal,
    )
    n, d = setup.n, setup.d
    v = check_tensor(v, "v")
    if v.dtype != setup.z.dtype:
        raise TypeError(f"`v` has dtype {v.dtype} but the points are {setup.z.dtype}.")
    if v.device != setup.z.device:
        raise ValueError(f"`v` is on {v.device} but the points are on {setup.z.device}.")
    if v.shape == (d,):
        V, squeeze = v.expand(n, 1, d), True
    elif v.ndim == 2 and v.shape == (n, d):
        V, squeeze = v[:, None], True
    elif v.ndim == 3 and v.shape[0] == n and v.shape[2] == d:
        V, squeeze = v, False
    else:
        raise ValueError(
            f"`v` must have shape (n, d) = ({n}, {d}), (n, b, d) or (d,) = ({d},); got "
            f"{tuple(v.shape)}. Flatten input-shaped vectors with `v.flatten(1)`."
        )
    size = n if chunk is None else check_int(chunk, "chunk", low=1)
    with eval_mode(setup.net), torch.no_grad():
        call = functional(setup.net)
        out = torch.cat(
            [
                products(setup, call, slice(i, i + size), V[i : i + size].detach())
                for i in range(0, n, size)
            ]
        )
    if (
        setup.mode in ("exact", "surrogate")
        and is_piecewise_linear(setup.net)
        and bool(V.any())
        and not bool(out.any())
    ):
        raise zero_hessian_error(setup)
    return out[:, 0] if squeeze else out
