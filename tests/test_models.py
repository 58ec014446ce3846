"""The zoo, the softplus surrogate (with smooth pooling) and load_model."""

from __future__ import annotations

import json
import math
import sys
import textwrap
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from geomrob.models import (
    ACTIVATIONS,
    ARCHITECTURES,
    build,
    is_piecewise_linear,
    load_model,
    softplus_surrogate,
)
from geomrob.models.surrogate import SmoothMaxPool2d
from geomrob.models.zoo import DEFAULT_WIDTHS, BasicBlock

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
# Thin versions keep the suite fast; the default widths are exercised by the doctests and one test.
FAST_WIDTH = {"resnet18-cifar": 8, "mobilenet-small": 8, "vgg-small": 8}


def _build(arch, shape=(1, 8, 8), num_classes=10, **kw):
    torch.manual_seed(0)
    kw.setdefault("width", FAST_WIDTH.get(arch))
    return build(arch, input_shape=shape, num_classes=num_classes, **kw)


def _jit(fn, *args):
    """torch.jit.{script,trace,save}: deprecated in recent torch, still how TorchScript is made."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return fn(*args)


def _types(model):
    return [type(m) for m in model.modules()]


def _count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


# --------------------------------------------------------------------------------------- zoo


@pytest.mark.parametrize("num_classes", [10, 3])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_output_shape(arch, shape, num_classes):
    model = _build(arch, shape, num_classes).eval()
    with torch.no_grad():
        out = model(torch.rand(2, *shape))
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_trains_every_parameter_and_uses_modules_only(arch):
    model = _build(arch, (3, 9, 13))  # odd, rectangular sides
    assert model.training
    model(torch.rand(2, 3, 9, 13)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    # every nonlinearity is a module: ReLU count = the number of nonlinear stages
    assert _count(model, nn.ReLU) >= 1
    assert not any(isinstance(m, nn.ReLU) and m.inplace for m in model.modules())


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_config_is_json_and_rebuilds(arch):
    model = _build(arch, (3, 32, 32), 7, activation="softplus(5)")
    cfg = model.geomrob_config
    assert json.loads(json.dumps(cfg)) == cfg
    assert cfg == {
        "arch": arch,
        "input_shape": [3, 32, 32],
        "num_classes": 7,
        "activation": "softplus",
        "beta": 5.0,
        "width": FAST_WIDTH.get(arch, DEFAULT_WIDTHS[arch]),
    }
    torch.manual_seed(0)
    again = build(**cfg)
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_weights_other_seed_other_weights():
    a, b = _build("cnn2"), _build("cnn2")
    torch.manual_seed(1)
    c = build("cnn2", input_shape=(1, 8, 8), num_classes=10)
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


@pytest.mark.parametrize(
    ("activation", "beta", "kind", "expected_beta"),
    [
        ("relu", None, nn.ReLU, None),
        ("softplus", None, nn.Softplus, 10.0),
        ("softplus", 3.0, nn.Softplus, 3.0),
        ("softplus(5)", None, nn.Softplus, 5.0),
        ("softplus(2.5)", 10.0, nn.Softplus, 2.5),  # the string wins over a default beta
        ("tanh", None, nn.Tanh, None),
        ("gelu", None, nn.GELU, None),
    ],
)
def test_activations(activation, beta, kind, expected_beta):
    model = _build("lenet", activation=activation, beta=beta)
    acts = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.Softplus, nn.Tanh, nn.GELU))]
    assert len(acts) == 4 and all(type(m) is kind for m in acts)
    if expected_beta is not None:
        assert all(m.beta == expected_beta for m in acts)
    assert model.geomrob_config["beta"] == expected_beta
    assert model.geomrob_config["activation"] in ACTIVATIONS
    model.eval()(torch.rand(2, 1, 8, 8))


def test_activations_list():
    assert ACTIVATIONS == ("relu", "softplus", "tanh", "gelu")
    assert ARCHITECTURES == (
        "fcn2",
        "cnn2",
        "lenet",
        "vgg-small",
        "resnet18-cifar",
        "mobilenet-small",
    )


def test_resnet_blocks_expose_branch_shortcut_act():
    model = _build("resnet18-cifar", (3, 32, 32)).eval()
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 8
    assert [isinstance(b.shortcut, nn.Identity) for b in blocks] == [
        True, True, False, True, False, True, False, True,
    ]  # fmt: skip
    widths = [b.branch[0].out_channels for b in blocks]
    assert widths == [8, 8, 16, 16, 32, 32, 64, 64]
    assert [b.branch[0].stride for b in blocks][::2] == [(1, 1), (2, 2), (2, 2), (2, 2)]
    x = torch.rand(2, 16, 8, 8)
    block = blocks[2]  # first block of stage 2: conv1x1 shortcut, stride 2
    assert [type(m) for m in block.branch] == [
        nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.BatchNorm2d,
    ]  # fmt: skip
    assert [type(m) for m in block.shortcut] == [nn.Conv2d, nn.BatchNorm2d]
    x = torch.rand(2, 8, 8, 8)
    torch.testing.assert_close(block(x), block.act(block.branch(x) + block.shortcut(x)))
    assert _count(model, nn.MaxPool2d) == 0  # the CIFAR ResNet has no stem max-pool


def test_default_resnet18_is_the_11m_parameter_network():
    model = build("resnet18-cifar", input_shape=(3, 32, 32), num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == 11_173_962


def test_mobilenet_is_depthwise_separable():
    model = _build("mobilenet-small")
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 5
    assert all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    assert _count(model, nn.BatchNorm2d) == 11


def test_vgg_small_layout():
    model = _build("vgg-small")
    assert _count(model, nn.MaxPool2d) == 3
    assert _count(model, nn.BatchNorm2d) == 5
    assert _count(model, nn.AdaptiveAvgPool2d) == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"arch": "alexnet"}, ValueError, r"`arch` must be one of .*'fcn2'.*'mobilenet-small'"),
        ({"activation": "swish"}, ValueError, r"`activation` must be one of .*'gelu'"),
        ({"activation": "softplus(x)"}, ValueError, r"must give a number in 'softplus"),
        ({"activation": "softplus(-2)"}, ValueError, r"beta must be finite and > 0"),
        ({"activation": nn.ReLU}, TypeError, r"`activation` must be a string"),
        ({"beta": 0.0, "activation": "softplus"}, ValueError, r"`beta` must be > 0"),
        ({"input_shape": (28, 28)}, ValueError, r"`input_shape` must be \(C, H, W\)"),
        ({"input_shape": "1x28x28"}, ValueError, r"`input_shape` must be \(C, H, W\)"),
        ({"input_shape": (1, 28.0, 28)}, ValueError, r"`input_shape`"),
        ({"input_shape": (0, 28, 28)}, ValueError, r"`input_shape`"),
        ({"input_shape": (1, 7, 28)}, ValueError, r"`input_shape`.*too small"),
        ({"num_classes": 1}, ValueError, r"`num_classes` must be >= 2"),
        ({"num_classes": 2.0}, TypeError, r"`num_classes` must be an int"),
        ({"width": 0}, ValueError, r"`width` must be >= 1"),
    ],
)
def test_build_errors(kwargs, error, match):
    args = {"arch": "cnn2", "input_shape": (1, 28, 28), "num_classes": 10, **kwargs}
    with pytest.raises(error, match=match):
        build(args.pop("arch"), **args)


# --------------------------------------------------------------------------------- surrogate

SURROGATE_ARCHS = ["fcn2", "lenet", "vgg-small", "resnet18-cifar", "mobilenet-small"]


@pytest.mark.parametrize("share_weights", [False, True])
@pytest.mark.parametrize("arch", SURROGATE_ARCHS)
def test_surrogate_replaces_relus_and_leaves_the_original(arch, share_weights):
    model = _build(arch).eval()
    before = _types(model)
    n_relu = _count(model, nn.ReLU)
    smooth = softplus_surrogate(model, 20.0, share_weights=share_weights)
    assert _types(model) == before  # the original is untouched
    assert _count(model, nn.ReLU) == n_relu and _count(model, nn.Softplus) == 0
    assert _count(smooth, nn.ReLU) == 0 and _count(smooth, nn.Softplus) == n_relu
    assert all(m.beta == 20.0 for m in smooth.modules() if isinstance(m, nn.Softplus))
    assert all(not m.training for m in smooth.modules())  # eval mode is kept (BatchNorm)
    for (name, a), (name_b, b) in zip(
        [*model.named_parameters(), *model.named_buffers()],
        [*smooth.named_parameters(), *smooth.named_buffers()],
        strict=True,
    ):
        assert name == name_b and torch.equal(a, b)
        assert (a is b) == share_weights
        assert (a.data_ptr() == b.data_ptr()) == share_weights
    assert smooth.geomrob_config == {**model.geomrob_config, "activation": "softplus", "beta": 20.0}


def test_surrogate_config_rebuilds_the_surrogate():
    model = _build("resnet18-cifar").eval()
    smooth = softplus_surrogate(model, 7.0)
    torch.manual_seed(0)
    rebuilt = build(**smooth.geomrob_config).eval()  # same seed as _build: same weights
    assert _types(rebuilt) == _types(smooth)
    _same_output(rebuilt, smooth)
    assert model.geomrob_config["activation"] == "relu"
    assert not hasattr(softplus_surrogate(_build("lenet"), 7.0, smooth_pool=True), "geomrob_config")
    tanh = _build("cnn2", activation="tanh")
    assert softplus_surrogate(tanh, 7.0).geomrob_config == tanh.geomrob_config


def test_shared_weights_follow_the_original():
    model = _build("lenet").eval()
    smooth = softplus_surrogate(model, 5.0, share_weights=True)
    with torch.no_grad():
        model.conv1.weight.mul_(2.0)
    assert torch.equal(smooth.conv1.weight, model.conv1.weight)
    copied = softplus_surrogate(model, 5.0)
    with torch.no_grad():
        model.conv1.weight.mul_(2.0)
    assert not torch.equal(copied.conv1.weight, model.conv1.weight)


@pytest.mark.parametrize("beta", [10.0, 1000.0])
def test_fcn2_surrogate_error_within_the_softplus_bound(beta):
    # One hidden layer: each hidden unit is off by a value in [0, log(2) / beta], so logit j is
    # off by at most log(2) / beta * sum_i |W2[j, i]|; a rigorous bound, checked with no slack.
    model = _build("fcn2", width=64).eval()
    smooth = softplus_surrogate(model, beta)
    x = torch.rand(16, 1, 8, 8, dtype=torch.float64)
    model, smooth = model.double(), smooth.double()
    with torch.no_grad():
        diff = (smooth(x) - model(x)).abs()
    bound = math.log(2) / beta * model.fc2.weight.abs().sum(1)
    assert (diff <= bound + 1e-12).all()


@pytest.mark.parametrize("arch", SURROGATE_ARCHS)
def test_surrogate_converges_to_the_original(arch):
    # Each ReLU moves by at most log(2)/beta per unit; through a few layers of O(1) gain the
    # logits move by O(10 log(2)/beta). We check: at beta = 1000 the change is below 2% of the
    # logits' spread, and it shrinks by at least 5x from beta = 100 to beta = 1000 (rate 1/beta).
    model = _build(arch, (1, 28, 28)).eval()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
        err100 = (softplus_surrogate(model, 100.0)(x) - out).abs().max()
        err1000 = (softplus_surrogate(model, 1000.0)(x) - out).abs().max()
    spread = out.max() - out.min()
    assert err1000 <= 0.02 * spread
    assert err1000 <= err100 / 5


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "side"),
    [(2, 2, 0, 8), (2, 2, 0, 7), (3, 2, 1, 7), (3, 1, 1, 5), ((2, 3), (1, 2), (1, 1), 6)],
)
def test_smooth_pool_lies_between_mean_and_max(kernel, stride, padding, side):
    beta = 50.0
    torch.manual_seed(0)
    x = torch.randn(2, 3, side, side + 1, dtype=torch.float64)
    pool = SmoothMaxPool2d(kernel, stride, padding, beta=beta)
    y = pool(x)
    hard = F.max_pool2d(x, kernel, stride, padding)
    mean = F.avg_pool2d(x, kernel, stride, padding, count_include_pad=False)
    count = F.avg_pool2d(torch.ones_like(x), kernel, stride, padding, divisor_override=1)
    assert y.shape == hard.shape
    assert (y <= hard + 1e-12).all() and (y >= mean - 1e-12).all()
    assert (y >= hard - count.log() / beta - 1e-12).all()
    torch.testing.assert_close(pool(x[0]), y[0])  # unbatched input
    sharp = SmoothMaxPool2d(kernel, stride, padding, beta=1e6)(x)
    torch.testing.assert_close(sharp, hard, atol=1e-5, rtol=0)


# torch.func's forward-mode AD scripts its decompositions (with a DeprecationWarning) on first use
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_smooth_pool_hessian_is_the_softmax_covariance():
    beta = 3.0
    x = torch.tensor([0.1, -0.4, 0.7, 0.2], dtype=torch.float64)
    pool = SmoothMaxPool2d(2, beta=beta)

    def f(v):
        return pool(v.view(1, 1, 2, 2)).sum()

    p = torch.softmax(beta * x, 0)
    torch.testing.assert_close(torch.func.grad(f)(x), p)
    expected = beta * (torch.diag(p) - torch.outer(p, p))
    torch.testing.assert_close(torch.func.hessian(f)(x), expected)
    hard = torch.func.hessian(lambda v: F.max_pool2d(v.view(1, 1, 2, 2), 2).sum())(x)
    assert torch.count_nonzero(hard) == 0


def test_smooth_pool_surrogate():
    model = _build("lenet", (1, 28, 28)).eval()
    smooth = softplus_surrogate(model, 1000.0, smooth_pool=True, share_weights=True)
    assert _count(smooth, nn.MaxPool2d) == 0 and _count(smooth, SmoothMaxPool2d) == 2
    assert _count(model, nn.MaxPool2d) == 2
    assert is_piecewise_linear(model) and not is_piecewise_linear(smooth)
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
        err = (smooth(x) - out).abs().max()
    assert err <= 0.02 * (out.max() - out.min())
    # second derivatives exist and do not vanish
    hv = torch.autograd.functional.hvp(
        lambda z: smooth(z)[:, 0].sum(), x[:1], torch.ones_like(x[:1])
    )
    assert torch.isfinite(hv[1]).all() and hv[1].abs().sum() > 0


def test_surrogate_corner_cases():
    assert isinstance(softplus_surrogate(nn.ReLU(), 2.0), nn.Softplus)
    relu = nn.ReLU()
    net = nn.Sequential(nn.Linear(2, 2), relu, nn.Linear(2, 2), relu)  # one ReLU, used twice
    smooth = softplus_surrogate(net, 2.0)
    assert smooth[1] is smooth[3] and isinstance(smooth[1], nn.Softplus)
    other = nn.Sequential(nn.Linear(2, 2), nn.LeakyReLU(), nn.ReLU6())
    assert _types(softplus_surrogate(other, 2.0)) == _types(other)  # only nn.ReLU is replaced
    training = softplus_surrogate(nn.Sequential(nn.ReLU()).train(), 2.0)
    assert training.training and training[0].training


def test_is_piecewise_linear():
    for arch in ARCHITECTURES:
        assert is_piecewise_linear(_build(arch))
    for activation in ("softplus", "tanh", "gelu"):
        assert not is_piecewise_linear(_build("cnn2", activation=activation))
    assert is_piecewise_linear(nn.Linear(3, 2))
    assert not is_piecewise_linear(nn.Sequential(nn.Linear(3, 2), nn.LayerNorm(2)))
    assert is_piecewise_linear(_jit(torch.jit.script, _build("cnn2")))
    assert not is_piecewise_linear(_jit(torch.jit.script, _build("cnn2", activation="tanh")))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: softplus_surrogate(nn.ReLU(), 0.0), ValueError, r"`beta` must be > 0"),
        (lambda: softplus_surrogate(nn.ReLU(), math.nan), ValueError, r"`beta` must be finite"),
        (lambda: softplus_surrogate(nn.ReLU(), "10"), TypeError, r"`beta` must be a real"),
        (lambda: softplus_surrogate(lambda x: x, 1.0), TypeError, r"`model` must be a torch"),
        (
            lambda: softplus_surrogate(_jit(torch.jit.script, nn.ReLU()), 1.0),
            TypeError,
            r"TorchScript module",
        ),
        (
            lambda: softplus_surrogate(nn.MaxPool2d(2, dilation=2), 1.0, smooth_pool=True),
            ValueError,
            r"neither dilation, ceil_mode nor return_indices",
        ),
        (
            lambda: softplus_surrogate(
                nn.Sequential(nn.MaxPool2d(2, ceil_mode=True)), 1.0, smooth_pool=True
            ),
            ValueError,
            r"submodule '0'.*ceil_mode",
        ),
        (
            lambda: softplus_surrogate(nn.MaxPool2d(2, return_indices=True), 1.0, smooth_pool=True),
            ValueError,
            r"return_indices",
        ),
        (
            lambda: softplus_surrogate(nn.AdaptiveMaxPool2d(1), 1.0, smooth_pool=True),
            ValueError,
            r"only nn.MaxPool2d has a smooth counterpart",
        ),
        (lambda: SmoothMaxPool2d(0, beta=1.0), ValueError, r"`kernel_size` must be an int >= 1"),
        (lambda: SmoothMaxPool2d(2, 0, beta=1.0), ValueError, r"`stride` must be an int >= 1"),
        (lambda: SmoothMaxPool2d(2, 2, 2, beta=1.0), ValueError, r"at most half"),
        (lambda: SmoothMaxPool2d(2, beta=-1.0), ValueError, r"`beta` must be > 0"),
        (lambda: is_piecewise_linear("net"), TypeError, r"`model` must be a torch"),
    ],
)
def test_surrogate_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_unsupported_pools_are_fine_without_smooth_pool():
    net = nn.Sequential(nn.MaxPool2d(2, ceil_mode=True), nn.AdaptiveMaxPool2d(1), nn.ReLU())
    assert _types(softplus_surrogate(net, 1.0))[1:3] == [nn.MaxPool2d, nn.AdaptiveMaxPool2d]


# ----------------------------------------------------------------------------------- loading

NETS_MODULE = "geomrob_test_nets"
NETS_SOURCE = """
    from geomrob.models import build

    CONSTANT = 3


    def make(num_classes=10):
        return build("cnn2", input_shape=(1, 8, 8), num_classes=num_classes)


    def not_a_module():
        return 3


    class Holder:
        make = staticmethod(make)
"""


@pytest.fixture
def nets(tmp_path, monkeypatch):
    """A tiny importable module with model factories."""
    (tmp_path / f"{NETS_MODULE}.py").write_text(textwrap.dedent(NETS_SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, NETS_MODULE, raising=False)
    return NETS_MODULE


def _same_output(a, b, shape=(1, 8, 8)):
    x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("how", ["script", "trace"])
def test_load_torchscript(tmp_path, how):
    model = _build("resnet18-cifar").eval()
    if how == "script":
        scripted = _jit(torch.jit.script, model)
    else:
        scripted = _jit(torch.jit.trace, model, torch.rand(2, 1, 8, 8))
    path = tmp_path / "model.pt"
    _jit(torch.jit.save, scripted, str(path))
    loaded = load_model(str(path), map_location="cpu")
    assert not loaded.training
    _same_output(loaded, model)
    loaded = load_model(path, state_dict=model.state_dict())  # a Path spec and mapping weights
    _same_output(loaded, model)


def test_load_factory_with_state_dict(tmp_path, nets):
    reference = _build("cnn2", num_classes=4).eval()
    weights = tmp_path / "weights.pt"
    torch.save(reference.state_dict(), weights)
    torch.manual_seed(123)  # another init: the weights must come from the file
    loaded = load_model(f"{nets}:make", state_dict=weights, factory_kwargs={"num_classes": 4})
    assert not loaded.training
    _same_output(loaded, reference)
    loaded = load_model(
        f"{nets}:Holder.make", state_dict=str(weights), factory_kwargs={"num_classes": 4}
    )
    _same_output(loaded, reference)
    assert isinstance(load_model(f"{nets}:make"), nn.Module)


def _checkpoint(model, **extra):
    return {
        "format": "geomrob-checkpoint",
        "config": model.geomrob_config,
        "state_dict": model.state_dict(),
        **extra,
    }


def test_load_geomrob_checkpoint(tmp_path, nets):
    model = _build("vgg-small", (3, 8, 8), 5, activation="softplus(4)").eval()
    path = tmp_path / "model.pt"
    torch.save(_checkpoint(model, history=[{"epoch": 1, "loss": 0.5}]), path)
    loaded = load_model(str(path))
    assert loaded.geomrob_config == model.geomrob_config and not loaded.training
    _same_output(loaded, model, (3, 8, 8))
    # a checkpoint also serves as the state_dict of a factory spec
    cnn = _build("cnn2").eval()
    torch.save(_checkpoint(cnn), tmp_path / "cnn.pt")
    _same_output(load_model(f"{nets}:make", state_dict=tmp_path / "cnn.pt"), cnn)


def _write(tmp_path, name, obj):
    path = tmp_path / name
    torch.save(obj, path)
    return str(path)


@pytest.mark.parametrize(
    ("make_spec", "kwargs", "error", "match"),
    [
        (lambda p, n: 3, {}, TypeError, r"`spec` must be a path or a 'package.module:factory'"),
        (lambda p, n: "  ", {}, ValueError, r"`spec` is empty"),
        (lambda p, n: "a:b:c", {}, ValueError, r"neither an existing file nor a 'package.module"),
        (lambda p, n: "my-nets:make", {}, ValueError, r"Valid specs"),
        (lambda p, n: str(p / "missing.pt"), {}, FileNotFoundError, r"no file .*missing\.pt"),
        (lambda p, n: p / "missing.pt", {}, FileNotFoundError, r"no file .*missing\.pt"),
        (lambda p, n: str(p), {}, ValueError, r"is a directory"),
        (lambda p, n: "no_such_module_xyz:f", {}, ImportError, r"module 'no_such_module_xyz'"),
        (lambda p, n: f"{n}:missing", {}, ValueError, r"has no attribute 'missing'"),
        (lambda p, n: f"{n}:CONSTANT", {}, TypeError, r"must be callable"),
        (lambda p, n: f"{n}:not_a_module", {}, TypeError, r"must return a torch.nn.Module"),
        (
            lambda p, n: f"{n}:make",
            {"factory_kwargs": [("num_classes", 3)]},
            TypeError,
            r"`factory_kwargs` must be a dict",
        ),
        (
            lambda p, n: _write(p, "ckpt.pt", _checkpoint(_build("cnn2"))),
            {"factory_kwargs": {"num_classes": 3}},
            ValueError,
            r"`factory_kwargs` is only used with",
        ),
        (
            lambda p, n: f"{n}:make",
            {"state_dict": "nowhere.pt"},
            FileNotFoundError,
            r"`state_dict`: no file .*nowhere\.pt",
        ),
        (
            lambda p, n: f"{n}:make",
            {"state_dict": _build("cnn2", num_classes=3).state_dict()},
            ValueError,
            r"(?s)`state_dict` \(OrderedDict of 8 entries\) does not match the model.*size mis",
        ),
        (lambda p, n: f"{n}:make", {"state_dict": 5}, TypeError, r"`state_dict` must be a path"),
        (
            lambda p, n: f"{n}:make",
            {"state_dict": {"fc2.weight": [1.0]}},
            ValueError,
            r"`state_dict` .* must hold a mapping of parameter names to tensors",
        ),
        (
            lambda p, n: _write(p, "whole.pt", nn.Linear(2, 2)),
            {},
            ValueError,
            r"Whole pickled nn.Module objects are refused",
        ),
        (
            lambda p, n: _write(p, "sd.pt", _build("cnn2").state_dict()),
            {},
            ValueError,
            r"bare state_dict: load it with load_model\('package.module:factory'",
        ),
        (
            lambda p, n: _write(p, "other.pt", {"format": "other", "weights": 1}),
            {},
            ValueError,
            r"not a TorchScript file and not a geomrob checkpoint",
        ),
        (
            lambda p, n: _write(p, "noconfig.pt", {"format": "geomrob-checkpoint"}),
            {},
            ValueError,
            r"needs a 'config' dict and a 'state_dict' dict",
        ),
        (
            lambda p, n: _write(
                p, "badcfg.pt", {**_checkpoint(_build("cnn2")), "config": {"arch": "alexnet"}}
            ),
            {},
            ValueError,
            r"config .* does not build a zoo model",
        ),
        (
            lambda p, n: _write(p, "badsd.pt", {**_checkpoint(_build("cnn2")), "state_dict": {}}),
            {},
            ValueError,
            r"(?s)does not match the model: .*Missing key",
        ),
        (lambda p, n: f"{n}:make", {"map_location": 0}, TypeError, r"`map_location` must be"),
        (lambda p, n: f"{n}:make", {"map_location": "gpu7"}, ValueError, r"`map_location`"),
    ],
)
def test_load_errors(tmp_path, nets, make_spec, kwargs, error, match):
    spec = make_spec(tmp_path, nets)
    with pytest.raises(error, match=match):
        load_model(spec, **kwargs)
