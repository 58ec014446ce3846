"""Layerwise Lipschitz bounds (004, Table 5) and the empirical lower bound max ||J(x)||_2.

References: the explicit matrix of every linear layer (built by pushing the identity basis
through it, then ``torch.linalg.matrix_norm(ord=2)``), closed forms (BatchNorm, average pooling,
activation derivatives on a fine grid), brute-force window counts for max-pooling, and the dense
Jacobian (``torch.func.jacrev``). float64 throughout.

Tolerances: conv / pooling norms by power iteration to a relative residual of 1e-6 are compared
at 1e-4 relative (the Ritz value's error is below the residual; 1e-4 is the documented bar) and
must never exceed the exact norm by more than rounding (a Ritz value is a lower estimate);
closed forms at 1e-12; the Jacobian power iteration with ``tol=1e-9`` at 1e-7 relative.
"""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from torch import nn

from geomrob import empirical_lipschitz, lipschitz_bounds
from geomrob.cli import main
from geomrob.lipschitz import activation_constant, operator_norm
from geomrob.models import ARCHITECTURES, build
from geomrob.models.zoo import BasicBlock

DT = torch.float64
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny dense references (jacrev, explicit matrices) on one thread: two threads on shared,
    busy cores spin-wait and run these tests 10-100 times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def explicit_matrix(fn, shape) -> torch.Tensor:
    """``(out_dim, d)``: the matrix of the linear part of ``fn`` on inputs of ``shape``."""
    d = math.prod(shape)
    with torch.no_grad():
        E = torch.eye(d, dtype=DT).view(d, *shape)
        out = fn(E) - fn(torch.zeros(1, *shape, dtype=DT))
    return out.reshape(d, -1).T


def exact_norm(fn, shape) -> float:
    return float(torch.linalg.matrix_norm(explicit_matrix(fn, shape), ord=2))


def single_row(layer: nn.Module, shape):
    report = lipschitz_bounds(nn.Sequential(layer), shape)
    (row,) = report.rows
    assert report.product == row.bound
    return row


def jacobian_norms(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = []
    for xi in x:
        J = torch.func.jacrev(lambda z: model(z[None])[0])(xi)
        out.append(torch.linalg.matrix_norm(J.detach().reshape(J.shape[0], -1), ord=2))
    return torch.stack(out)


def randomize_batchnorm(model: nn.Module, seed: int) -> nn.Module:
    """Nontrivial BatchNorm statistics and scales (some negative, some variances small)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_var.copy_(0.2 + 2 * torch.rand(c, generator=g, dtype=DT))
            m.running_mean.copy_(torch.randn(c, generator=g, dtype=DT))
            m.weight.data.copy_(1.5 * torch.randn(c, generator=g, dtype=DT))
            m.bias.data.copy_(torch.randn(c, generator=g, dtype=DT))
    return model


# ---------------------------------------------------------------------------------------------
# convolutions against their explicit matrices

CONVS = {
    # every (kernel, stride, padding, groups) the zoo uses
    "3x3-p1 (cnn2, vgg, resnet)": (lambda: nn.Conv2d(2, 3, 3, padding=1), (2, 6, 6)),
    "5x5-p2 (lenet)": (lambda: nn.Conv2d(2, 3, 5, padding=2), (2, 6, 6)),
    "3x3-s2-p1 (resnet)": (lambda: nn.Conv2d(2, 4, 3, stride=2, padding=1, bias=False), (2, 7, 7)),
    "1x1-s2 (resnet shortcut)": (lambda: nn.Conv2d(2, 4, 1, stride=2, bias=False), (2, 6, 6)),
    "dw3x3-p1 (mobilenet)": (lambda: nn.Conv2d(4, 4, 3, padding=1, groups=4), (4, 5, 5)),
    "dw3x3-s2-p1 (mobilenet)": (
        lambda: nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4, bias=False),
        (4, 6, 6),
    ),
    "pw1x1 (mobilenet)": (lambda: nn.Conv2d(4, 6, 1, bias=False), (4, 4, 4)),
    # beyond the zoo
    "dilation 2": (lambda: nn.Conv2d(2, 3, 3, padding=2, dilation=2), (2, 6, 6)),
    "groups 2, stride (1, 2)": (
        lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2, stride=(1, 2)),
        (4, 5, 6),
    ),
    "rectangular kernel": (lambda: nn.Conv2d(2, 3, (3, 2), padding=(1, 0)), (2, 5, 4)),
    "circular padding": (lambda: nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular"), (2, 5, 5)),
    "conv1d": (lambda: nn.Conv1d(2, 3, 4, stride=2, padding=1), (2, 11)),
    "conv-transpose": (
        lambda: nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1),
        (2, 4, 4),
    ),
}


@pytest.mark.parametrize("case", list(CONVS))
def test_conv_bound_matches_explicit_matrix(case):
    torch.manual_seed(0)
    make, shape = CONVS[case]
    conv = make().double()
    row = single_row(conv, shape)
    exact = exact_norm(conv, shape)
    assert row.bound == pytest.approx(exact, rel=1e-4)
    assert row.bound <= exact * (1 + 1e-12)  # Ritz values never exceed sigma_max
    assert row.converged and row.residual <= 1e-6 and row.iterations >= 1
    assert row.input_shape == shape
    assert f"groups {conv.groups}" in row.method


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_zoo_conv_matches_explicit_matrix(arch):
    # every convolution of every zoo model, on the input shape it sees in the model
    torch.manual_seed(1)
    model = build(arch, input_shape=(3, 8, 8), num_classes=5, width=4).double().eval()
    modules = dict(model.named_modules())
    report = lipschitz_bounds(model, (3, 8, 8))
    convs = [r for r in report.rows if r.kind == "Conv2d"]
    assert len(convs) == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    for r in convs:
        conv = modules[r.name]
        exact = exact_norm(lambda v, conv=conv: conv(v), r.input_shape)
        assert r.bound == pytest.approx(exact, rel=1e-4), r.name
        assert r.bound <= exact * (1 + 1e-12)


def test_operator_norm_of_a_matrix_and_zero_map():
    g = torch.Generator().manual_seed(2)
    A = torch.randn(7, 12, generator=g, dtype=DT)
    sigma, it, res = operator_norm(lambda v: v @ A.T, (12,), tol=1e-10)
    assert sigma == pytest.approx(float(torch.linalg.matrix_norm(A, ord=2)), rel=1e-12)
    assert res <= 1e-10 and it >= 1
    assert operator_norm(lambda v: 0 * v, (5,)) == (0.0, 1, 0.0)
    # the same generator gives the same iterations
    assert operator_norm(lambda v: v @ A.T, (12,), generator=3) == operator_norm(
        lambda v: v @ A.T, (12,), generator=3
    )


# ---------------------------------------------------------------------------------------------
# the other layers


def test_linear_is_exact():
    torch.manual_seed(3)
    lin = nn.Linear(9, 4).double()
    row = single_row(lin, (9,))
    assert row.bound == pytest.approx(exact_norm(lin, (9,)), rel=1e-12)
    assert row.iterations is None and "exact" in row.method
    # a purely linear model: the bound is attained by the Jacobian everywhere
    model = nn.Sequential(nn.Flatten(), lin).double()
    report = lipschitz_bounds(model, (1, 3, 3))
    emp = empirical_lipschitz(model, torch.randn(3, 1, 3, 3, dtype=DT), tol=1e-10)
    assert emp.max == pytest.approx(report.product, rel=1e-10)


@pytest.mark.parametrize(("cls", "shape"), [(nn.BatchNorm2d, (5, 3, 3)), (nn.BatchNorm1d, (5,))])
def test_batchnorm_formula(cls, shape):
    bn = randomize_batchnorm(cls(5).double(), seed=4)
    bn.eps = 1e-3
    row = single_row(bn, shape)
    assert bn.training  # the caller's mode is restored
    expected = float((bn.weight.detach().abs() / (bn.running_var + bn.eps).sqrt()).max())
    assert row.bound == pytest.approx(expected, rel=1e-12)
    assert row.bound == pytest.approx(exact_norm(bn.eval(), shape), rel=1e-12)
    no_affine = cls(5, affine=False).double()
    no_affine.running_var.fill_(0.25)
    assert single_row(no_affine, shape).bound == pytest.approx(1 / math.sqrt(0.25 + 1e-5))
    with pytest.raises(ValueError, match=r"Layer '0' \(BatchNorm.d\).*track_running_stats=False"):
        lipschitz_bounds(nn.Sequential(cls(5, track_running_stats=False)), shape)


@pytest.mark.parametrize(
    ("pool", "shape", "closed"),
    [
        (nn.AvgPool2d(2), (2, 6, 6), 0.5),  # non-overlapping k x k: 1/k
        (nn.AvgPool2d(3), (1, 9, 6), 1 / 3),
        (nn.AdaptiveAvgPool2d(1), (2, 5, 7), 1 / math.sqrt(35)),  # global mean: 1/sqrt(HW)
        (nn.AvgPool2d(3, stride=1, padding=1), (1, 6, 6), None),
        (nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), (1, 6, 6), None),
        (nn.AdaptiveAvgPool2d((3, 3)), (1, 8, 8), None),  # overlapping windows
        (nn.AvgPool1d(3, stride=2), (2, 9), None),
    ],
)
def test_average_pooling(pool, shape, closed):
    row = single_row(pool, shape)
    exact = exact_norm(pool, shape)
    assert row.bound == pytest.approx(exact, rel=1e-4)
    if closed is not None:
        assert exact == pytest.approx(closed, rel=1e-12)
        assert row.bound == pytest.approx(closed, rel=1e-4)


def brute_force_coverage(pool: nn.Module, shape) -> int:
    """Most windows containing one input element: put 0 at it, -1e9 elsewhere, count zeros."""
    d = math.prod(shape)
    x = torch.full((d, d), -1e9, dtype=DT)
    x.fill_diagonal_(0.0)
    with torch.no_grad():
        out = pool(x.view(d, *shape))
    return int((out.reshape(d, -1) == 0).sum(1).max())


@pytest.mark.parametrize(
    ("pool", "shape"),
    [
        (nn.MaxPool2d(2), (1, 6, 6)),
        (nn.MaxPool2d(2), (1, 7, 5)),
        (nn.MaxPool2d(3, stride=1, padding=1), (1, 6, 6)),
        (nn.MaxPool2d(3, stride=2), (1, 7, 7)),
        (nn.MaxPool2d(3, stride=2, ceil_mode=True), (1, 8, 8)),
        (nn.MaxPool2d(2, stride=2, dilation=2), (1, 8, 8)),
        (nn.MaxPool2d(2, stride=1, dilation=2, padding=1), (1, 6, 6)),
        (nn.AdaptiveMaxPool2d((3, 3)), (1, 8, 8)),
        (nn.MaxPool1d(3, stride=2, padding=1), (1, 9)),
    ],
)
def test_max_pool_bound_counts_windows(pool, shape):
    row = single_row(pool, shape)
    cover = brute_force_coverage(pool, shape)
    assert row.bound == pytest.approx(math.sqrt(cover), rel=1e-12)
    assert ("non-overlapping" in row.method) == (cover == 1)
    # a Lipschitz bound: ratios of output to input differences never exceed it
    g = torch.Generator().manual_seed(5)
    x = torch.randn(200, *shape, generator=g, dtype=DT)
    y = x + 0.1 * torch.randn(200, *shape, generator=g, dtype=DT)
    ratio = (pool(x) - pool(y)).flatten(1).norm(dim=1) / (x - y).flatten(1).norm(dim=1)
    assert float(ratio.max()) <= row.bound + 1e-12


def test_overlapping_max_pool_bound_is_attained():
    # a spike at one pixel wins all 9 windows of a 3x3 stride-1 pool: ratio sqrt(9) = 3
    pool = nn.MaxPool2d(3, stride=1, padding=1)
    row = single_row(pool, (1, 6, 6))
    y = torch.zeros(1, 1, 6, 6, dtype=DT)
    x = y.clone()
    x[0, 0, 2, 3] = 1.0
    assert float((pool(x) - pool(y)).norm()) == pytest.approx(3.0) == pytest.approx(row.bound)


def grid_sup(f) -> float:
    t = torch.linspace(-12, 12, 2_000_001, dtype=DT, requires_grad=True)
    (g,) = torch.autograd.grad(f(t).sum(), t)
    return float(g.abs().max())


@pytest.mark.parametrize(
    ("act", "expected"),
    [
        (nn.ReLU(), 1.0),
        (nn.LeakyReLU(0.01), 1.0),
        (nn.LeakyReLU(2.0), 2.0),
        (nn.ELU(alpha=1.5), 1.5),
        (nn.Softplus(beta=10.0), 1.0),
        (nn.Tanh(), 1.0),
        (nn.Sigmoid(), 0.25),
        (nn.GELU(), None),
        (nn.GELU(approximate="tanh"), None),
        (nn.SiLU(), None),
    ],
)
def test_activation_constants(act, expected):
    value, _ = activation_constant(act)
    sup = grid_sup(act)
    if expected is not None:
        assert value == expected
    # never below the true sup |f'| (grid spacing 1.2e-5: the grid is within 1e-9 of it)
    assert value >= sup - 1e-12
    assert value == pytest.approx(sup, rel=1e-8)


def test_gelu_constant_is_not_one():
    value, method = activation_constant(nn.GELU())
    assert value == pytest.approx(1.1289, abs=1e-4) and "sqrt 2" in method


# ---------------------------------------------------------------------------------------------
# whole models


@pytest.mark.parametrize(
    ("arch", "activation"),
    [(a, act) for a in ARCHITECTURES for act in ("relu", "gelu")]
    + [("cnn2", "softplus"), ("cnn2", "tanh")],
)
def test_product_bounds_the_jacobian_of_every_zoo_model(arch, activation):
    torch.manual_seed(6)
    shape = (3, 8, 8) if arch in ("vgg-small", "resnet18-cifar", "mobilenet-small") else (1, 8, 8)
    model = build(arch, input_shape=shape, num_classes=4, width=4, activation=activation)
    model = randomize_batchnorm(model.double(), seed=7).eval()
    report = lipschitz_bounds(model, shape)
    assert report.converged
    factors = [r for r in report.rows if r.factor]
    assert report.product == pytest.approx(math.prod(r.bound for r in factors), rel=1e-12)
    g = torch.Generator().manual_seed(8)
    x = torch.rand(4, *shape, generator=g, dtype=DT)
    jac = jacobian_norms(model, x)
    assert float(jac.max()) <= report.product
    emp = empirical_lipschitz(model, x, tol=1e-9)
    assert emp.max <= report.product
    y = x + 0.05 * torch.randn(4, *shape, generator=g, dtype=DT)
    with torch.no_grad():
        ratio = (model(x) - model(y)).norm(dim=1) / (x - y).flatten(1).norm(dim=1)
    assert float(ratio.max()) <= report.product


def test_residual_block_rows():
    torch.manual_seed(9)
    model = build("resnet18-cifar", input_shape=(3, 8, 8), num_classes=3, width=4)
    model = randomize_batchnorm(model.double(), seed=10).eval()
    report = lipschitz_bounds(model, (3, 8, 8))
    blocks = [r for r in report.rows if r.kind == "BasicBlock"]
    assert [r.name for r in blocks] == [f"layer{s}.{b}" for s in (1, 2, 3, 4) for b in (0, 1)]
    for blk in blocks:
        inner = [r for r in report.rows if r.name.startswith(blk.name + ".")]
        assert inner and not any(r.factor for r in inner)

        def prod(part, inner=inner, blk=blk):
            return math.prod(r.bound for r in inner if r.name.startswith(f"{blk.name}.{part}"))

        expected = prod("act") * (prod("branch") + prod("shortcut"))
        assert blk.bound == pytest.approx(expected, rel=1e-12)
        module = dict(model.named_modules())[blk.name]
        assert ("identity shortcut" in blk.method) == isinstance(module.shortcut, nn.Identity)


def test_residual_block_with_zero_branch():
    # zero branch: the block is act(shortcut(x)); the bound is L(act) (L(shortcut) + 0)
    block = BasicBlock(2, 2, 1, nn.ReLU).double()
    nn.init.zeros_(block.branch.conv2.weight)
    report = lipschitz_bounds(nn.Sequential(block), (2, 5, 5))
    assert report.rows[0].bound == pytest.approx(1.0 * (1.0 + 0.0))
    proj = BasicBlock(2, 3, 2, nn.ReLU).double().eval()
    nn.init.zeros_(proj.branch.conv2.weight)
    rep = lipschitz_bounds(nn.Sequential(proj), (2, 6, 6))
    shortcut = math.prod(r.bound for r in rep.rows if ".shortcut." in r.name)
    assert rep.product == pytest.approx(shortcut, rel=1e-12) and shortcut > 0


def test_report_serialises_and_prints():
    torch.manual_seed(11)
    model = build("cnn2", input_shape=(1, 8, 8), num_classes=3, width=4)
    report = lipschitz_bounds(model, [1, 8, 8])
    data = json.loads(json.dumps(report.to_dict()))
    assert data["product"] == report.product
    assert [r["name"] for r in data["rows"]][:3] == ["conv1", "act1", "pool1"]
    table = report.table()
    assert "conv1" in table and "product" in table and "power iteration" in table
    assert model.training  # restored
    # the same generator gives the same report
    assert lipschitz_bounds(model, (1, 8, 8)).to_dict() == report.to_dict()


def test_unconverged_power_iteration_warns():
    torch.manual_seed(12)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1)).double()
    with pytest.warns(UserWarning, match="did not reach tol"):
        report = lipschitz_bounds(model, (1, 6, 6), max_iter=1, tol=1e-12)
    assert not report.converged and report.rows[0].converged is False


class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x)


def test_unsupported_layers_raise():
    with pytest.raises(ValueError, match=r"Layer '1' of type LayerNorm is not supported"):
        lipschitz_bounds(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)), (4,))
    with pytest.raises(ValueError, match=r"Layer 'model' of type _Twice is not supported"):
        lipschitz_bounds(_Twice(), (4,))
    relu = nn.ReLU()
    with pytest.raises(ValueError, match=r"Layer '1' \(ReLU\) runs 2 times"):
        lipschitz_bounds(nn.Sequential(nn.Linear(4, 4), relu, nn.Linear(4, 4), relu), (4,))
    with pytest.raises(ValueError, match="TorchScript"):
        lipschitz_bounds(torch.jit.script(nn.Sequential(nn.Linear(4, 2))), (4,))
    with pytest.raises(ValueError, match="The model failed on an input of shape"):
        lipschitz_bounds(nn.Sequential(nn.Linear(4, 2)), (5,))
    with pytest.raises(ValueError, match="`input_shape` must be a sequence of positive ints"):
        lipschitz_bounds(nn.Sequential(nn.Linear(4, 2)), (0, 4))
    with pytest.raises(ValueError, match="`input_shape` must be a sequence of positive ints"):
        lipschitz_bounds(nn.Sequential(nn.Linear(4, 2)), "4")
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        lipschitz_bounds(lambda x: x, (4,))
    with pytest.raises(ValueError, match="`tol` must be > 0"):
        lipschitz_bounds(nn.Sequential(nn.Linear(4, 2)), (4,), tol=0.0)
    with pytest.raises(ValueError, match="no Lipschitz constant"):
        activation_constant(nn.Softmax(1))


# ---------------------------------------------------------------------------------------------
# empirical lower bound


@pytest.mark.parametrize(("arch", "activation"), [("cnn2", "softplus"), ("lenet", "relu")])
def test_empirical_lipschitz_matches_dense_jacobian(arch, activation):
    torch.manual_seed(13)
    model = build(arch, input_shape=(1, 8, 8), num_classes=5, width=4, activation=activation)
    model = model.double().eval()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(14), dtype=DT)
    emp = empirical_lipschitz(model, x, tol=1e-9, max_iter=5000)
    dense = jacobian_norms(model, x)
    assert bool(emp.converged.all())
    assert torch.allclose(emp.values, dense, rtol=1e-7)
    assert emp.max == pytest.approx(float(dense.max()), rel=1e-7)
    assert emp.argmax == int(dense.argmax())
    # chunking changes only the random starts, not the values
    chunked = empirical_lipschitz(model, x, tol=1e-9, max_iter=5000, batch_size=4)
    assert torch.allclose(chunked.values, emp.values, rtol=1e-7)
    # the same generator gives the same result
    again = empirical_lipschitz(model, x, tol=1e-9, max_iter=5000)
    assert torch.equal(again.values, emp.values)


def test_empirical_lipschitz_float32_and_errors():
    torch.manual_seed(15)
    model = build("fcn2", input_shape=(1, 8, 8), num_classes=3, width=8).eval()
    x = torch.rand(5, 1, 8, 8)
    emp = empirical_lipschitz(model, x)
    assert emp.values.dtype == torch.float32 and emp.tol == 1e-4
    dense = jacobian_norms(model.double(), x.double())
    assert torch.allclose(emp.values.double(), dense, rtol=1e-4)
    with pytest.warns(UserWarning, match="did not reach"):
        res = empirical_lipschitz(model.double(), x.double(), max_iter=1, tol=1e-12)
    assert not bool(res.converged.any())
    with pytest.raises(TypeError, match="dtype"):
        empirical_lipschitz(model, x)  # model is float64 now, x float32
    with pytest.raises(ValueError, match="empty batch"):
        empirical_lipschitz(model, x[:0].double())
    with pytest.raises(ValueError, match="`batch_size` must be >= 1"):
        empirical_lipschitz(model, x.double(), batch_size=0)


# ---------------------------------------------------------------------------------------------
# the command line


def test_cli_lipschitz(tmp_path, capsys):
    out = tmp_path / "lip"
    args = ["lipschitz", "--arch", "lenet", "--dataset", "digits", "--epochs", "1", "--n", "32"]
    args += ["--quiet", "--out", str(out)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert main(args) == 0
    printed = capsys.readouterr().out
    assert "conv1" in printed and "product" in printed and "ratio upper / lower" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["empirical"]["n"] == 32 and results["input_shape"] == [1, 8, 8]
    assert 0 < results["empirical"]["max"] <= results["product"]
    assert results["ratio"] == pytest.approx(results["product"] / results["empirical"]["max"])
    names = [r["name"] for r in results["bounds"]["rows"]]
    assert names == ["conv1", "act1", "pool1", "conv2", "act2", "pool2", "flatten", "fc1",
                     "act3", "fc2", "act4", "fc3"]  # fmt: skip
    # a user's model file: the trained checkpoint, loaded with --model
    (ckpt,) = out.glob("models/*/model.pt")
    out2 = tmp_path / "lip2"
    assert main(["lipschitz", "--model", str(ckpt), "--n", "8", "--quiet", "--out", str(out2)]) == 0
    again = json.loads((out2 / "results.json").read_text())
    assert again["product"] == pytest.approx(results["product"], rel=1e-12)
    capsys.readouterr()
    assert main(["lipschitz", "--n", "0", "--quiet", "--out", str(out2)]) == 2
    assert "--n must be >= 1" in capsys.readouterr().err
