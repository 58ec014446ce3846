"""The model zoo: small image classifiers whose decision boundaries geomrob studies.

Every architecture accepts any input shape ``(C, H, W)`` with ``H, W >= 8`` and any number of
classes ``L >= 2``, and maps a batch ``(n, C, H, W)`` to logits ``(n, L)``. The models are built
from ``nn.Module`` layers only: every nonlinearity is a module (``nn.ReLU``, ``nn.Softplus``,
``nn.Tanh``, ``nn.GELU``) and every pooling is a module (``nn.MaxPool2d``,
``nn.AdaptiveAvgPool2d``), so that :func:`geomrob.models.softplus_surrogate` can swap them and the
Lipschitz code can read the layers in order. No ``forward`` calls a functional nonlinearity.

Architectures (``w`` is the ``width`` argument, default in brackets; ``act`` the activation):

- ``fcn2`` [256]: flatten, linear(w), act, linear(L).
- ``cnn2`` [32]: conv3x3(w)-act-maxpool2, conv3x3(2w)-act-maxpool2, flatten, linear(4w), act,
  linear(L).
- ``lenet`` [32]: conv5x5(w)-act-maxpool2, conv5x5(2w)-act-maxpool2, flatten, linear(120), act,
  linear(84), act, linear(L): two 5x5 convolutions and three fully connected layers, as in the
  footnote of Moosavi-Dezfooli et al. (ICLR 2018), with 32/64 channels instead of LeNet-5's 6/16.
- ``vgg-small`` [32]: conv3x3-BN-act blocks of widths (w, w), maxpool2, (2w, 2w), maxpool2, (4w),
  maxpool2, then adaptive average pooling to 1x1, flatten, linear(L).
- ``resnet18-cifar`` [64]: the CIFAR ResNet-18 of He et al. (2016): conv3x3(w)-BN-act (no 7x7
  stem, no max-pool), two :class:`BasicBlock` per stage with (w, 2w, 4w, 8w) channels and
  strides (1, 2, 2, 2), adaptive average pooling, flatten, linear(L).
- ``mobilenet-small`` [32]: conv3x3(w)-BN-act, then five MobileNetV1 :class:`DepthwiseSeparable`
  blocks (dw3x3-BN-act-pw1x1-BN-act) with (channels, stride) (2w, 1), (4w, 2), (4w, 1), (8w, 2),
  (8w, 1), adaptive average pooling, flatten, linear(L).

All 3x3 convolutions have padding 1 and the 5x5 ones padding 2, so an 8x8 input survives every
stage; ``vgg-small`` skips a max-pool that would reduce a side below 1. Convolutions followed by
BatchNorm have no bias.

Initialisation is PyTorch's default and draws from the global RNG: seed it with
``torch.manual_seed`` (or inside ``torch.random.fork_rng()``) before :func:`build` for a
reproducible model. The model is returned in training mode, like any freshly built
``nn.Module``; call ``.eval()`` before measuring geometry (BatchNorm).
"""

from __future__ import annotations

import math
import numbers
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from .._validation import check_choice, check_int, check_positive

__all__ = [
    "ACTIVATIONS",
    "ARCHITECTURES",
    "DEFAULT_BETA",
    "DEFAULT_WIDTHS",
    "MIN_SIDE",
    "BasicBlock",
    "DepthwiseSeparable",
    "build",
    "make_activation",
]

ARCHITECTURES = ("fcn2", "cnn2", "lenet", "vgg-small", "resnet18-cifar", "mobilenet-small")
ACTIVATIONS = ("relu", "softplus", "tanh", "gelu")

#: Default ``width`` per architecture (see the module docstring for its meaning).
DEFAULT_WIDTHS = {
    "fcn2": 256,
    "cnn2": 32,
    "lenet": 32,
    "vgg-small": 32,
    "resnet18-cifar": 64,
    "mobilenet-small": 32,
}
#: Default sharpness of ``nn.Softplus`` when ``activation="softplus"``.
DEFAULT_BETA = 10.0
#: Smallest image side every architecture accepts.
MIN_SIDE = 8

_SOFTPLUS_PATTERN = re.compile(r"^softplus\((.*)\)$")

ActFactory = Callable[[], nn.Module]


def make_activation(activation: str, beta: float | None = None) -> tuple[str, float | None]:
    """Resolve an activation spec to ``(name, beta)``; ``beta`` is ``None`` unless softplus.

    ``activation`` is one of :data:`ACTIVATIONS` or ``"softplus(<beta>)"``. For softplus the
    sharpness is the one written in the string if any, else ``beta``, else :data:`DEFAULT_BETA`
    (the string wins, so that a config holding both ``"softplus(5)"`` and a default ``beta``
    means beta 5). ``beta`` is ignored for the other activations.

    Example:
        >>> make_activation("softplus(5)", beta=10.0)
        ('softplus', 5.0)
        >>> make_activation("relu", beta=3.0)
        ('relu', None)
    """
    if not isinstance(activation, str):
        raise TypeError(
            f"`activation` must be a string, one of {list(ACTIVATIONS)} or 'softplus(<beta>)'; "
            f"got {type(activation).__name__} {activation!r}."
        )
    if beta is not None:
        beta = check_positive(beta, "beta")
    match = _SOFTPLUS_PATTERN.match(activation.strip())
    if match is not None:
        try:
            inline = float(match.group(1))
        except ValueError:
            raise ValueError(
                f"`activation` {activation!r} must give a number in 'softplus(<beta>)', "
                "e.g. 'softplus(5)'."
            ) from None
        if not (math.isfinite(inline) and inline > 0):
            raise ValueError(
                f"`activation` {activation!r}: the softplus beta must be finite and > 0."
            )
        return "softplus", inline
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"`activation` must be one of {list(ACTIVATIONS)} or 'softplus(<beta>)'; "
            f"got {activation!r}."
        )
    if activation == "softplus":
        return "softplus", DEFAULT_BETA if beta is None else beta
    return activation, None


def _act_factory(name: str, beta: float | None) -> ActFactory:
    if name == "relu":
        return nn.ReLU
    if name == "softplus":
        return lambda: nn.Softplus(beta=beta)
    if name == "tanh":
        return nn.Tanh
    return nn.GELU


def _check_input_shape(input_shape: object) -> tuple[int, int, int]:
    expected = (
        f"`input_shape` must be (C, H, W): three positive ints with H, W >= {MIN_SIDE}, "
        "e.g. (1, 28, 28) or (3, 32, 32)"
    )
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise ValueError(f"{expected}; got {input_shape!r}.")
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in shape
    ):
        raise ValueError(f"{expected}; got {input_shape!r}.")
    shape = tuple(int(s) for s in shape)
    if shape[1] < MIN_SIDE or shape[2] < MIN_SIDE:
        raise ValueError(f"{expected}; got {shape}, whose image is too small.")
    return shape  # type: ignore[return-value]


class BasicBlock(nn.Module):
    """The residual block of ResNet-18: ``act(branch(x) + shortcut(x))``.

    ``branch`` is ``conv3x3(stride)-BN-act-conv3x3-BN`` and ``shortcut`` is ``nn.Identity()`` or,
    when the stride or the channel count changes, ``conv1x1(stride)-BN``. The Lipschitz constant
    of the block before ``act`` is at most ``L(branch) + L(shortcut)``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, act: ActFactory):
        super().__init__()
        self.branch = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
                bn1=nn.BatchNorm2d(out_channels),
                act1=act(),
                conv2=nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False),
                bn2=nn.BatchNorm2d(out_channels),
            )
        )
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                    bn=nn.BatchNorm2d(out_channels),
                )
            )
        else:
            self.shortcut = nn.Identity()
        self.act = act()

    def forward(self, x: Tensor) -> Tensor:
        """``act(branch(x) + shortcut(x))``."""
        return self.act(self.branch(x) + self.shortcut(x))


class DepthwiseSeparable(nn.Sequential):
    """MobileNetV1 block: depthwise conv3x3 (groups = C) - BN - act - pointwise 1x1 - BN - act."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, act: ActFactory):
        super().__init__(
            OrderedDict(
                dw=nn.Conv2d(
                    in_channels,
                    in_channels,
                    3,
                    stride=stride,
                    padding=1,
                    groups=in_channels,
                    bias=False,
                ),
                bn1=nn.BatchNorm2d(in_channels),
                act1=act(),
                pw=nn.Conv2d(in_channels, out_channels, 1, bias=False),
                bn2=nn.BatchNorm2d(out_channels),
                act2=act(),
            )
        )


def _fcn2(shape: tuple[int, int, int], n_out: int, w: int, act: ActFactory) -> nn.Sequential:
    d = math.prod(shape)
    return nn.Sequential(
        OrderedDict(
            flatten=nn.Flatten(),
            fc1=nn.Linear(d, w),
            act1=act(),
            fc2=nn.Linear(w, n_out),
        )
    )


def _cnn2(shape: tuple[int, int, int], n_out: int, w: int, act: ActFactory) -> nn.Sequential:
    c, h, wd = shape
    flat = 2 * w * (h // 2 // 2) * (wd // 2 // 2)
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(c, w, 3, padding=1),
            act1=act(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(w, 2 * w, 3, padding=1),
            act2=act(),
            pool2=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            fc1=nn.Linear(flat, 4 * w),
            act3=act(),
            fc2=nn.Linear(4 * w, n_out),
        )
    )


def _lenet(shape: tuple[int, int, int], n_out: int, w: int, act: ActFactory) -> nn.Sequential:
    c, h, wd = shape
    flat = 2 * w * (h // 2 // 2) * (wd // 2 // 2)
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(c, w, 5, padding=2),
            act1=act(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(w, 2 * w, 5, padding=2),
            act2=act(),
            pool2=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            fc1=nn.Linear(flat, 120),
            act3=act(),
            fc2=nn.Linear(120, 84),
            act4=act(),
            fc3=nn.Linear(84, n_out),
        )
    )


def _vgg_small(shape: tuple[int, int, int], n_out: int, w: int, act: ActFactory) -> nn.Sequential:
    c, h, wd = shape
    plan: list[int | str] = [w, w, "M", 2 * w, 2 * w, "M", 4 * w, "M"]
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    block = 1
    for item in plan:
        if item == "M":
            if h >= 2 and wd >= 2:  # never pool a side below 1
                layers[f"pool{block}"] = nn.MaxPool2d(2)
                h, wd = h // 2, wd // 2
            block += 1
            continue
        n = len([k for k in layers if k.startswith(f"conv{block}_")]) + 1
        layers[f"conv{block}_{n}"] = nn.Conv2d(c, int(item), 3, padding=1, bias=False)
        layers[f"bn{block}_{n}"] = nn.BatchNorm2d(int(item))
        layers[f"act{block}_{n}"] = act()
        c = int(item)
    layers["avgpool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(c, n_out)
    return nn.Sequential(layers)


def _resnet18(shape: tuple[int, int, int], n_out: int, w: int, act: ActFactory) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        conv1=nn.Conv2d(shape[0], w, 3, padding=1, bias=False),
        bn1=nn.BatchNorm2d(w),
        act1=act(),
    )
    c = w
    for stage, (mult, stride) in enumerate(((1, 1), (2, 2), (4, 2), (8, 2)), start=1):
        blocks = [BasicBlock(c, mult * w, stride, act), BasicBlock(mult * w, mult * w, 1, act)]
        layers[f"layer{stage}"] = nn.Sequential(*blocks)
        c = mult * w
    layers["avgpool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(c, n_out)
    return nn.Sequential(layers)


def _mobilenet_small(
    shape: tuple[int, int, int], n_out: int, w: int, act: ActFactory
) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        conv1=nn.Conv2d(shape[0], w, 3, padding=1, bias=False),
        bn1=nn.BatchNorm2d(w),
        act1=act(),
    )
    c = w
    for i, (mult, stride) in enumerate(((2, 1), (4, 2), (4, 1), (8, 2), (8, 1)), start=1):
        layers[f"block{i}"] = DepthwiseSeparable(c, mult * w, stride, act)
        c = mult * w
    layers["avgpool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(c, n_out)
    return nn.Sequential(layers)


_BUILDERS = {
    "fcn2": _fcn2,
    "cnn2": _cnn2,
    "lenet": _lenet,
    "vgg-small": _vgg_small,
    "resnet18-cifar": _resnet18,
    "mobilenet-small": _mobilenet_small,
}


def build(
    arch: str,
    *,
    input_shape: Sequence[int],
    num_classes: int,
    activation: str = "relu",
    beta: float | None = None,
    width: int | None = None,
) -> nn.Module:
    """Build a zoo classifier mapping ``(n, *input_shape)`` images to ``(n, num_classes)`` logits.

    The model carries ``model.geomrob_config``, a JSON-ready dict with the keys ``arch``,
    ``input_shape`` (list), ``num_classes``, ``activation`` (``"softplus(5)"`` is stored as
    ``"softplus"`` with ``beta=5.0``), ``beta`` (``None`` unless softplus) and ``width``, such that
    ``build(**model.geomrob_config)`` rebuilds the same architecture.

    Parameters are initialised by PyTorch's defaults from the global RNG: call
    ``torch.manual_seed(seed)`` first for a reproducible model. The model is returned in training
    mode.

    Args:
        arch: one of :data:`ARCHITECTURES`.
        input_shape: ``(C, H, W)`` with ``H, W >= 8``.
        num_classes: number of logits ``L >= 2``.
        activation: one of :data:`ACTIVATIONS`, or ``"softplus(<beta>)"``.
        beta: sharpness of ``nn.Softplus`` (``None``: 10.0); overridden by the number in
            ``"softplus(<beta>)"``; ignored by the other activations.
        width: base width of the architecture (hidden units of ``fcn2``, first channel count of
            the others); ``None`` takes :data:`DEFAULT_WIDTHS`.

    Returns:
        The classifier, an ``nn.Sequential``.

    Raises:
        ValueError: for an unknown ``arch`` or ``activation``, a bad ``input_shape``,
            ``num_classes < 2``, ``width < 1`` or ``beta <= 0``.
        TypeError: for a non-string ``activation`` or non-integer ``num_classes``/``width``.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> model = build("lenet", input_shape=(1, 28, 28), num_classes=10).eval()
        >>> model(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
        >>> build("fcn2", input_shape=[1, 8, 8], num_classes=3, activation="softplus(5)").geomrob_config
        {'arch': 'fcn2', 'input_shape': [1, 8, 8], 'num_classes': 3, 'activation': 'softplus', 'beta': 5.0, 'width': 256}
    """  # noqa: E501
    check_choice(arch, "arch", ARCHITECTURES)
    shape = _check_input_shape(input_shape)
    num_classes = check_int(num_classes, "num_classes", low=2)
    width = DEFAULT_WIDTHS[arch] if width is None else check_int(width, "width", low=1)
    name, beta = make_activation(activation, beta)
    model = _BUILDERS[arch](shape, num_classes, width, _act_factory(name, beta))
    model.geomrob_config = _config(arch, shape, num_classes, name, beta, width)
    return model


def _config(
    arch: str,
    shape: tuple[int, int, int],
    num_classes: int,
    activation: str,
    beta: float | None,
    width: int,
) -> dict[str, Any]:
    return {
        "arch": arch,
        "input_shape": list(shape),
        "num_classes": num_classes,
        "activation": activation,
        "beta": beta,
        "width": width,
    }
