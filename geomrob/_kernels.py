"""Faster CPU kernels for the convolutions of grayscale inputs, in first-order loops.

PyTorch sends every CPU convolution to oneDNN, which is fast for the usual layers but slow for a
layer with a *single* input channel (the first layer of every MNIST/Fashion-MNIST network):
measured on this project's 2-core CPU with torch 2.13, 243 images of 28 x 28, 5 x 5 kernel,
1 -> 32 channels, the forward pass took 25.7 ms under oneDNN and 4.9 ms with ATen's direct
(im2col + GEMM) kernel, and the gradient with respect to the input 26.1 ms against 7.9 ms with
ATen's direct transposed convolution. With 3 input channels oneDNN wins again (30.8 vs 42.5 ms),
so only single-channel inputs are rerouted.

:func:`gray_conv_kernels` is a :class:`~torch.overrides.TorchFunctionMode` that, while active,
evaluates such convolutions (CPU, one input channel, groups 1, no dilation, weights that do not
require gradients) with those direct kernels. The results are the same convolution up to
floating-point summation order; gradients flow to the input only, which is all that DeepFool's
Jacobians need (the models there are called through :func:`geomrob._model.functional`, whose
parameters are detached). Any other call, and every call when the kernels are missing from the
installed torch, goes to the standard path unchanged. Reverse mode of any order works (the
backward is made of differentiable ops); ``torch.func`` transforms refuse the custom function with
torch's own error, so the mode is for plain autograd loops only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

_AVAILABLE = hasattr(torch.ops.aten, "_slow_conv2d_forward") and hasattr(
    torch.ops.aten, "slow_conv_transpose2d"
)
_CONV2D = (F.conv2d, torch.conv2d)


def _pair(v) -> tuple[int, int] | None:
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(i, int) for i in v):
        return (int(v[0]), int(v[1]))
    return None  # e.g. padding="same": left to the standard path


class _GrayConv2d(torch.autograd.Function):
    """``conv2d(x, w, b)`` for one input channel; the backward returns the input gradient only."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b: Tensor | None, stride, padding) -> Tensor:
        kernel = list(w.shape[-2:])
        out = torch.ops.aten._slow_conv2d_forward(x, w, kernel, b, list(stride), list(padding))
        ctx.save_for_backward(w)
        ctx.stride, ctx.padding = stride, padding
        ctx.in_size, ctx.out_size = x.shape[-2:], out.shape[-2:]
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (w,) = ctx.saved_tensors
        kernel = w.shape[-2:]
        # The transposed convolution maps out_size back to (out - 1) * s - 2p + k; the
        # remainder the strided forward dropped is output_padding.
        extra = [
            ctx.in_size[i]
            - ((ctx.out_size[i] - 1) * ctx.stride[i] - 2 * ctx.padding[i] + kernel[i])
            for i in range(2)
        ]
        grad_x = torch.ops.aten.slow_conv_transpose2d(
            grad_out.contiguous(),
            w,
            list(kernel),
            None,
            list(ctx.stride),
            list(ctx.padding),
            extra,
        )
        return grad_x, None, None, None, None


def _fast_args(args: tuple, kwargs: dict):
    """The ``(x, w, b, stride, padding)`` of a ``conv2d`` call the direct kernels can take, or
    ``None``."""
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    defaults = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
    if len(args) > len(names) or set(kwargs) - set(names):
        return None
    bound = {**defaults, **dict(zip(names, args, strict=False)), **kwargs}
    x, w, b = bound.get("input"), bound.get("weight"), bound["bias"]
    if not (isinstance(x, Tensor) and isinstance(w, Tensor)):
        return None
    stride, padding, dilation = (_pair(bound[k]) for k in ("stride", "padding", "dilation"))
    if (
        x.device.type != "cpu"
        or x.dim() != 4
        or x.shape[1] != 1
        or w.dim() != 4
        or bound["groups"] != 1
        or dilation != (1, 1)
        or stride is None
        or padding is None
        or w.requires_grad
        or (b is not None and b.requires_grad)
        or x.dtype not in (torch.float32, torch.float64)
        or w.dtype != x.dtype
    ):
        return None
    return x, w, b, stride, padding


class gray_conv_kernels(TorchFunctionMode):  # noqa: N801 (used like a function: `with ...():`)
    """While active, single-input-channel CPU convolutions use ATen's direct kernels (see the
    module docstring); everything else is untouched."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _AVAILABLE and func in _CONV2D:
            fast = _fast_args(args, kwargs)
            if fast is not None:
                return _GrayConv2d.apply(*fast)
        return func(*args, **kwargs)
