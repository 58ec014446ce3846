"""The direct single-channel convolution kernels of DeepFool's loop against torch's conv2d."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from geomrob import _kernels
from geomrob._kernels import gray_conv_kernels
from geomrob.attacks import deepfool

DT = torch.float64


def _conv_and_grad(x, w, b, **kw):
    xg = x.clone().requires_grad_(True)
    out = F.conv2d(xg, w, b, **kw)
    seed = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    (gx,) = torch.autograd.grad((out * seed).sum(), xg)
    return out, gx, out.grad_fn.name()


@pytest.mark.parametrize(
    "hw, kernel, kw",
    [
        ((28, 28), 5, {"padding": 2}),
        ((13, 11), 3, {}),
        ((13, 11), 3, {"stride": 2, "padding": 1}),  # odd sizes: output_padding is needed
        ((12, 9), (3, 5), {"stride": (2, 1), "padding": (1, 2)}),
        ((10, 10), 4, {"stride": 3}),
    ],
)
@pytest.mark.parametrize("bias", [True, False])
def test_direct_kernels_equal_conv2d(hw, kernel, kw, bias):
    # In float64 torch's own forward is this direct kernel too, but its input gradient is another
    # routine (GEMM + col2im) than the transposed convolution here: another summation order,
    # ~1e-15 relative; 1e-12 still catches a flipped or shifted kernel or a wrong output_padding.
    g = torch.Generator().manual_seed(0)
    kh, kw_ = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = torch.randn(3, 1, *hw, generator=g, dtype=DT)
    w = torch.randn(4, 1, kh, kw_, generator=g, dtype=DT)
    b = torch.randn(4, generator=g, dtype=DT) if bias else None
    ref_out, ref_grad, ref_fn = _conv_and_grad(x, w, b, **kw)
    with gray_conv_kernels():
        out, grad, fn = _conv_and_grad(x, w, b, **kw)
    assert ref_fn == "ConvolutionBackward0" and fn == "_GrayConv2dBackward"
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kw", [{"padding": 2}, {"stride": 2, "padding": 1}])
def test_float32_and_module_calls(kw):
    """float32 is where the standard path is oneDNN (float64 convolutions are not), so this is
    the comparison with a different kernel in both directions."""
    g = torch.Generator().manual_seed(2)
    conv = nn.Conv2d(1, 8, 5, **kw).requires_grad_(False)
    x = torch.rand(5, 1, 27, 27, generator=g)
    ref_out, ref_grad, _ = _conv_and_grad(x, conv.weight, conv.bias, **kw)
    with gray_conv_kernels():
        xg = x.clone().requires_grad_(True)
        out = conv(xg)
        assert out.grad_fn.name() == "_GrayConv2dBackward"
        seed = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        (grad,) = torch.autograd.grad((out * seed).sum(), xg)
    # float32 sums of 25 terms in another order
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "channels, kw, weight_grad",
    [
        (3, {"padding": 1}, False),  # oneDNN is faster with several input channels
        (1, {"padding": 2, "dilation": 2}, False),  # no dilation in the direct kernels
        (1, {"padding": "same"}, False),
        (1, {"padding": 1}, True),  # the direct backward has no weight gradient
    ],
)
def test_other_convolutions_take_the_standard_path(channels, kw, weight_grad):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, channels, 9, 9, generator=g, dtype=DT)
    w = torch.randn(4, channels, 3, 3, generator=g, dtype=DT).requires_grad_(weight_grad)
    ref_out, ref_grad, _ = _conv_and_grad(x, w, None, **kw)
    with gray_conv_kernels():
        out, grad, fn = _conv_and_grad(x, w, None, **kw)
    assert fn == "ConvolutionBackward0"
    torch.testing.assert_close(out, ref_out, rtol=0, atol=0)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=0)
    if weight_grad:
        with gray_conv_kernels():
            out = F.conv2d(x, w, **kw)
            (gw,) = torch.autograd.grad(out.sum(), w)
        torch.testing.assert_close(gw, torch.autograd.grad(F.conv2d(x, w, **kw).sum(), w)[0])


def test_double_backward_through_the_direct_kernels():
    """The input gradient is itself differentiable (a Hessian-vector product through it)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 1, 7, 6, generator=g, dtype=DT)
    w = torch.randn(3, 1, 3, 3, generator=g, dtype=DT)
    v = torch.randn(x.shape, generator=g, dtype=DT)

    def hvp():
        xg = x.clone().requires_grad_(True)
        out = F.conv2d(xg, w, stride=2, padding=1).tanh().pow(2).sum()
        (gx,) = torch.autograd.grad(out, xg, create_graph=True)
        return torch.autograd.grad((gx * v).sum(), xg)[0]

    ref = hvp()
    with gray_conv_kernels():
        fast = hvp()
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)


def test_func_transforms_are_refused_loudly():
    x = torch.randn(1, 1, 6, 6, dtype=DT)
    w = torch.randn(2, 1, 3, 3, dtype=DT)
    with gray_conv_kernels(), pytest.raises(RuntimeError, match="functorch transforms"):
        torch.func.grad(lambda t: F.conv2d(t, w).sum())(x)


def gray_cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.Softplus(beta=5.0),
        nn.Flatten(),
        nn.Linear(8 * 7 * 7, 10),
    ).to(DT)


def test_deepfool_is_unchanged_by_the_kernels(monkeypatch):
    """The same iterates, labels and iteration counts as with the standard kernels."""
    model = gray_cnn(0)
    x = torch.rand(12, 1, 14, 14, generator=torch.Generator().manual_seed(4), dtype=DT)
    calls = []
    direct = _kernels._GrayConv2d.apply
    monkeypatch.setattr(
        _kernels._GrayConv2d, "apply", staticmethod(lambda *a: calls.append(1) or direct(*a))
    )
    fast = deepfool(model, x, bounds=(0.0, 1.0))
    assert calls  # the first layer did run on the direct kernels
    monkeypatch.setattr(_kernels, "_AVAILABLE", False)
    slow = deepfool(model, x, bounds=(0.0, 1.0))
    assert fast.converged.all()
    assert torch.equal(fast.iterations, slow.iterations)
    assert torch.equal(fast.adv_label, slow.adv_label)
    torch.testing.assert_close(fast.r, slow.r, rtol=1e-9, atol=1e-12)
