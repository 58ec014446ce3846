"""Smooth surrogates of piecewise-linear networks: ReLU -> Softplus(beta), max-pool -> log-sum-exp.

The input Hessian of a ReLU network is zero almost everywhere, so curvature (DESIGN.md section 3,
"surrogate" mode) and second-order attacks on attributions (Ehsani Oskouie and Farnia; Wang et
al., NeurIPS 2020) differentiate a copy whose ReLUs are ``Softplus(beta)``:

.. math::

    0 \\le \\operatorname{softplus}_\\beta(t) - \\operatorname{relu}(t)
      = \\tfrac{1}{\\beta}\\log(1 + e^{-\\beta |t|}) \\le \\tfrac{\\log 2}{\\beta},

so the surrogate tends to the original as ``beta -> inf``. Only ``nn.ReLU`` modules are replaced:
``nn.ReLU6``, ``nn.LeakyReLU``, ``nn.PReLU``, ``nn.Hardtanh`` and the like are left as they are,
and a ReLU called functionally inside a ``forward`` (``torch.relu``, ``F.relu``) cannot be seen.
:func:`is_piecewise_linear` tells whether a model still has no smooth nonlinearity module.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from .._validation import check_model, check_positive

__all__ = ["SMOOTH_MODULES", "SmoothMaxPool2d", "is_piecewise_linear", "softplus_surrogate"]


class SmoothMaxPool2d(nn.Module):
    """Log-mean-exp pooling, a smooth stand-in for ``nn.MaxPool2d``.

    Over each window ``W`` (padded entries excluded, as max-pooling never picks them):

    .. math::

        y = \\frac{1}{\\beta} \\log\\Big(\\frac{1}{|W|} \\sum_{i \\in W} e^{\\beta x_i}\\Big),
        \\qquad
        \\max_W x - \\frac{\\log |W|}{\\beta} \\le y \\le \\max_W x,
        \\qquad
        \\operatorname{mean}_W x \\le y,

    so ``y`` lies between the window's mean and its maximum and tends to the maximum as
    ``beta -> inf`` (uniformly, at rate ``log(kernel area) / beta``). The log-sum-exp is computed
    stably by ``torch.logsumexp`` over windows taken with ``unfold``. ``ceil_mode`` and dilation
    are not supported. The gradient is the softmax of ``beta * x`` over the window, so the
    function is infinitely differentiable.

    Args:
        kernel_size: window size (int or pair).
        stride: step (int or pair; ``None``: ``kernel_size``).
        padding: implicit padding on each side (int or pair), at most half the kernel.
        beta: sharpness > 0.

    Example:
        >>> pool = SmoothMaxPool2d(2, beta=1e4)
        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> bool((pool(x) - F.max_pool2d(x, 2)).abs().max() < 1e-3)
        True
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        *,
        beta: float,
    ) -> None:
        super().__init__()
        self.kernel_size = _check_pair(kernel_size, "kernel_size", low=1)
        self.stride = self.kernel_size if stride is None else _check_pair(stride, "stride", low=1)
        self.padding = _check_pair(padding, "padding", low=0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size, strict=True)):
            raise ValueError(
                f"`padding` must be at most half of `kernel_size`; got padding {self.padding} "
                f"for kernel_size {self.kernel_size}."
            )
        self.beta = check_positive(beta, "beta")

    def extra_repr(self) -> str:
        """Shown by ``repr``."""
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"beta={self.beta}"
        )

    def forward(self, x: Tensor) -> Tensor:
        """Pool ``(N, C, H, W)`` or ``(C, H, W)`` to the shape ``nn.MaxPool2d`` gives."""
        unbatched = x.ndim == 3
        if unbatched:
            x = x.unsqueeze(0)
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        out_h = (h + 2 * ph - kh) // sh + 1
        out_w = (w + 2 * pw - kw) // sw + 1
        if ph or pw:
            x = F.pad(x, (pw, pw, ph, ph), value=-math.inf)
        cols = F.unfold(x.reshape(n * c, 1, *x.shape[-2:]), (kh, kw), stride=(sh, sw))
        # cols: (n * c, kh * kw, out_h * out_w); padded entries are -inf and add exp(-inf) = 0.
        lse = torch.logsumexp(self.beta * cols, dim=1)
        log_count = self._log_count(h, w, x.device, x.dtype)
        y = ((lse - log_count) / self.beta).view(n, c, out_h, out_w)
        return y.squeeze(0) if unbatched else y

    def _log_count(
        self, h: int, w: int, device: torch.device, dtype: torch.dtype
    ) -> Tensor | float:
        """``log`` of the number of real (unpadded) entries in each window, ``(out_h * out_w,)``."""
        if self.padding == (0, 0):
            return math.log(self.kernel_size[0] * self.kernel_size[1])
        ones = torch.ones(1, 1, h, w, device=device, dtype=dtype)
        counts = F.avg_pool2d(
            ones,
            self.kernel_size,
            self.stride,
            self.padding,
            count_include_pad=True,
            divisor_override=1,
        )
        return counts.flatten().log()


def _check_pair(value: object, name: str, *, low: int) -> tuple[int, int]:
    pair = _pair(value)
    if len(pair) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= low for v in pair
    ):
        raise ValueError(f"`{name}` must be an int >= {low} or a pair of them; got {value!r}.")
    return (int(pair[0]), int(pair[1]))


#: Module types whose input Hessian does not vanish almost everywhere, which
#: :func:`is_piecewise_linear` looks for: smooth nonlinearities, normalisations by a per-sample
#: statistic, attention and recurrent layers, and ``nn.Hardswish`` (piecewise quadratic).
SMOOTH_MODULES: tuple[type[nn.Module], ...] = (
    nn.Softplus,
    nn.Tanh,
    nn.GELU,
    nn.Sigmoid,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.LogSigmoid,
    nn.Softsign,
    nn.Tanhshrink,
    nn.Softmax,
    nn.LogSoftmax,
    nn.Softmin,
    nn.Softmax2d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.Bilinear,
    nn.CosineSimilarity,
    nn.PairwiseDistance,
    nn.MultiheadAttention,
    nn.RNNBase,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    SmoothMaxPool2d,
)
_SMOOTH_NAMES = frozenset(t.__name__ for t in SMOOTH_MODULES)


def is_piecewise_linear(model: nn.Module) -> bool:
    """Whether ``model`` contains no smooth nonlinearity module (see :data:`SMOOTH_MODULES`).

    Such a model (ReLU, LeakyReLU, max-pool, linear, convolution, BatchNorm in eval mode) has a
    zero exact input Hessian almost everywhere, so exact-mode curvature would silently be zero.

    Only modules are inspected: a smooth function called inside a ``forward`` (``torch.tanh``,
    ``F.softplus``) or a custom smooth module is not seen, so ``True`` means "no known smooth
    module", the usual case of a ReLU / max-pool network whose exact input Hessian vanishes
    almost everywhere. TorchScript submodules are recognised by their original class name.

    Args:
        model: any ``nn.Module``.

    Returns:
        ``False`` as soon as one submodule (or ``model`` itself) is a smooth nonlinearity.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> is_piecewise_linear(net), is_piecewise_linear(softplus_surrogate(net, beta=10.0))
        (True, False)
    """
    check_model(model)
    for module in model.modules():
        if isinstance(module, SMOOTH_MODULES):
            return False
        if isinstance(module, torch.jit.ScriptModule):
            if getattr(module, "original_name", None) in _SMOOTH_NAMES:
                return False
    return True


def softplus_surrogate(
    model: nn.Module,
    beta: float,
    *,
    smooth_pool: bool = False,
    share_weights: bool = False,
) -> nn.Module:
    """A copy of ``model`` with every ``nn.ReLU`` replaced by ``nn.Softplus(beta=beta)``.

    The original is never modified. Each ReLU of the copy is off by at most ``log(2) / beta``
    (see the module docstring), so for a fixed input the logits converge to the original's as
    ``beta`` grows. The copy keeps the training / eval mode of every submodule. The
    ``geomrob_config`` of a zoo ReLU model becomes ``activation="softplus", beta=beta`` in the
    copy (``build(**config)`` rebuilds it); with ``smooth_pool=True`` and a max-pool replaced, the
    copy has no ``geomrob_config``, since no zoo option describes it.

    Args:
        model: an eager ``nn.Module`` (TorchScript modules cannot have submodules replaced).
        beta: sharpness of the softplus, > 0 (e.g. 10 to 100 for images in ``[0, 1]``).
        smooth_pool: also replace every ``nn.MaxPool2d`` by :class:`SmoothMaxPool2d` of the same
            kernel, stride and padding and the same ``beta``; without it a max-pool network stays
            only piecewise smooth (its gradient jumps where the pool winner changes).
        share_weights: ``False`` (default): the copy holds cloned parameters and buffers.
            ``True``: the copy's parameters and buffers are the very tensors of ``model`` (same
            objects, same storage), so later training of ``model`` is seen by the surrogate; note
            that a surrogate in training mode then updates the BatchNorm statistics of ``model``.

    Returns:
        The surrogate ``nn.Module``.

    Raises:
        TypeError: if ``model`` is not an eager ``nn.Module``.
        ValueError: if ``beta <= 0``, or with ``smooth_pool=True`` a max-pool that cannot be
            replaced (``nn.MaxPool2d`` with dilation, ``ceil_mode`` or ``return_indices``, or
            another max-pool type).

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> smooth = softplus_surrogate(net, beta=50.0)
        >>> smooth[1], net[1]
        (Softplus(beta=50.0, threshold=20.0), ReLU())
        >>> torch.equal(smooth[0].weight, net[0].weight), smooth[0].weight is net[0].weight
        (True, False)
    """
    check_model(model)
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError(
            "`model` is a TorchScript module, whose submodules cannot be replaced; build or load "
            "the eager nn.Module (e.g. with geomrob.models.load_model('package.module:factory', "
            "state_dict=...)) and take its surrogate."
        )
    beta = check_positive(beta, "beta")
    if smooth_pool:
        for name, module in model.named_modules():
            _check_poolable(module, name)
    memo: dict[int, object] = {}
    if share_weights:
        for tensor in (*model.parameters(), *model.buffers()):
            memo[id(tensor)] = tensor
    surrogate = copy.deepcopy(model, memo)
    counts = {"relu": 0, "pool": 0}
    surrogate = _replace(surrogate, beta, smooth_pool, counts)
    _update_config(surrogate, beta, counts)
    return surrogate


def _update_config(surrogate: nn.Module, beta: float, counts: dict[str, int]) -> None:
    """Keep ``geomrob_config`` (zoo models) true to the surrogate, or drop it."""
    config = getattr(surrogate, "geomrob_config", None)
    if not isinstance(config, dict):
        return
    if counts["pool"]:
        # smooth pooling is not a zoo option: the config no longer describes this model
        del surrogate.geomrob_config
    elif counts["relu"] and config.get("activation") == "relu":
        surrogate.geomrob_config = {**config, "activation": "softplus", "beta": beta}


def _check_poolable(module: nn.Module, name: str) -> None:
    where = f"submodule {name!r}" if name else "the model"
    if isinstance(module, nn.MaxPool2d):
        if _pair(module.dilation) != (1, 1) or module.ceil_mode or module.return_indices:
            raise ValueError(
                f"`smooth_pool=True` cannot replace {where}, {module!r}: SmoothMaxPool2d supports "
                "neither dilation, ceil_mode nor return_indices. Use smooth_pool=False."
            )
    elif isinstance(
        module,
        (
            nn.MaxPool1d,
            nn.MaxPool3d,
            nn.AdaptiveMaxPool1d,
            nn.AdaptiveMaxPool2d,
            nn.AdaptiveMaxPool3d,
            nn.FractionalMaxPool2d,
            nn.FractionalMaxPool3d,
        ),
    ):
        raise ValueError(
            f"`smooth_pool=True` cannot replace {where}, {module!r}: only nn.MaxPool2d has a "
            "smooth counterpart. Use smooth_pool=False."
        )


def _smooth(module: nn.Module, beta: float, smooth_pool: bool) -> nn.Module | None:
    """The replacement of ``module``, or ``None`` to keep it."""
    if isinstance(module, nn.ReLU):
        new: nn.Module = nn.Softplus(beta=beta)
    elif smooth_pool and isinstance(module, nn.MaxPool2d):
        new = SmoothMaxPool2d(module.kernel_size, module.stride, module.padding, beta=beta)
    else:
        return None
    new.train(module.training)
    return new


def _replace(root: nn.Module, beta: float, smooth_pool: bool, counts: dict[str, int]) -> nn.Module:
    new_root = _smooth(root, beta, smooth_pool)
    if new_root is not None:
        counts["relu" if isinstance(root, nn.ReLU) else "pool"] += 1
        return new_root
    cache: dict[int, nn.Module] = {}  # a module used at two places is replaced by one module
    for parent in list(root.modules()):
        for child_name, child in list(parent._modules.items()):  # named_children() dedups
            if child is None:
                continue
            if id(child) not in cache:
                new = _smooth(child, beta, smooth_pool)
                if new is None:
                    continue
                cache[id(child)] = new
                counts["relu" if isinstance(child, nn.ReLU) else "pool"] += 1
            setattr(parent, child_name, cache[id(child)])
    return root
