"""Attribution maps: Saliency, Integrated Gradients, SmoothGrad, Uniform Gradient (000, 002).

References: ``torch.autograd.grad`` of one logit at a time; closed forms on analytic classifiers
(a quadratic ``S(x) = w.x + x^T A x / 2``, whose IG Riemann sums and Gaussian / ball smoothings
are exact, and ``S(x) = sum_i sin(x_i)``, whose smoothed gradients are ``cos(x) E cos(e_i)``:
``exp(-sigma^2 / 2)`` for a Gaussian, ``Gamma(d/2 + 1) (2/r)^(d/2) J_(d/2)(r)`` for the uniform
ball of R^d); ``torch.func.hessian`` for the derivatives of the maps (``create_graph``); and
captum when it is installed. float64 throughout (float32 as a smoke test). Monte Carlo estimates
are compared within 5 standard errors computed from the closed-form variance.
"""

from __future__ import annotations

import math

import pytest
import scipy.special
import scipy.stats
import torch
from reference import Quadratic, assert_close
from torch import nn

import geomrob
from geomrob.interpret import (
    Attribution,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
    UniGrad,
    attribute,
    integrated_gradients,
    saliency,
    smoothgrad,
    unigrad,
)

DT = torch.float64
# torch.func.hessian registers jvp decompositions with the deprecated torch.jit.script
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")


# ---------------------------------------------------------------------------------------------
# problems


class SinSum(nn.Module):
    """Logits ``(S, -S, 0)`` with ``S(x) = sum_i sin(x_i)``: grad S = cos(x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sin(x.flatten(1)).sum(1)
        return torch.stack([s, -s, torch.zeros_like(s)], dim=1)


def quadratic(d: int = 5, seed: int = 0):
    """``Quadratic`` of tests/reference.py: logit 1 is ``w.x - 1 + x^T A x / 2``, A symmetric."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g, dtype=DT)
    B = torch.randn(d, d, generator=g, dtype=DT)
    A = (B + B.T) / 4
    return Quadratic(w, 1.0, A), w, A


def mlp(d: int = 6, L: int = 4, act: nn.Module | None = None, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = nn.Sequential(
            nn.Linear(d, 16), act if act is not None else nn.Softplus(beta=2.0), nn.Linear(16, L)
        )
    return net.double()


def cnn(act: str = "relu", seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = geomrob.models.build(
            "cnn2", input_shape=(1, 8, 8), num_classes=5, width=4, activation=act
        )
    return net.double()


def inputs(n: int, *shape: int, seed: int = 1, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, *shape, generator=g, dtype=DT)


def logit_gradients(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Reference: one ``torch.autograd.grad`` of one logit per image."""
    model.eval()
    rows = []
    for i in range(x.shape[0]):
        xi = x[i : i + 1].detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xi)[0, int(target[i])], xi)
        rows.append(g[0])
    return torch.stack(rows)


def score_fn(model: nn.Module, c: int, shape: tuple[int, ...]):
    def S(z: torch.Tensor) -> torch.Tensor:
        return model(z.view(1, *shape))[0, c]

    return S


# ---------------------------------------------------------------------------------------------
# Saliency


@pytest.mark.parametrize("act", ["relu", "softplus"])
def test_saliency_equals_autograd_of_the_predicted_logit(act):
    model = cnn(act)
    x = inputs(5, 1, 8, 8)
    res = saliency(model, x)
    assert isinstance(res, Attribution) and len(res) == 5
    with torch.no_grad():
        logits = model.eval()(x)
    assert torch.equal(res.target, logits.argmax(1))
    assert_close(res.logits, logits, rtol=1e-14)
    # Same arithmetic, batched vs one image at a time: rounding only.
    assert_close(res.attribution, logit_gradients(model, x, res.target), rtol=1e-12)
    assert torch.equal(res.scale, torch.ones(5, dtype=DT))
    assert res.completeness_gap is None and res.score_change is None


def test_saliency_targets_int_and_tensor():
    model = mlp()
    x = inputs(4, 6)
    for target in (2, torch.tensor([0, 3, 1, 1])):
        res = saliency(model, x, target=target)
        t = torch.full((4,), target) if isinstance(target, int) else target
        assert torch.equal(res.target, t)
        assert_close(res.attribution, logit_gradients(model, x, t), rtol=1e-12)
    # another target gives another map (the target is really used)
    a0 = saliency(model, x, target=0).attribution
    a1 = saliency(model, x, target=1).attribution
    assert float((a0 - a1).abs().max()) > 1e-3


def test_saliency_normalisations_and_gradient_times_input():
    model = mlp()
    x = inputs(4, 6)
    raw = saliency(model, x).attribution
    l1 = saliency(model, x, normalize="l1")
    l2 = saliency(model, x, normalize="l2")
    assert_close(l1.scale, raw.abs().sum(1), rtol=1e-14)
    assert_close(l1.attribution, raw / raw.abs().sum(1, keepdim=True), rtol=1e-14)  # 000 Eq. 1
    assert_close(l1.attribution.abs().sum(1), torch.ones(4, dtype=DT), rtol=1e-14)
    assert_close(l2.attribution.norm(dim=1), torch.ones(4, dtype=DT), rtol=1e-14)
    assert_close(l1.raw, raw, rtol=1e-14)
    gxi = saliency(model, x, multiply_by_inputs=True).attribution
    assert_close(gxi, x * raw, rtol=1e-14)


def test_zero_map_is_not_normalised_silently():
    model = mlp(L=3)
    with torch.no_grad():
        model[2].weight[1].zero_()  # logit 1 is a constant
    x = inputs(3, 6)
    with pytest.warns(UserWarning, match="3 of 3 attribution maps are zero"):
        res = saliency(model, x, target=1, normalize="l1")
    assert torch.equal(res.attribution, torch.zeros_like(x))
    assert torch.equal(res.scale, torch.ones(3, dtype=DT))


# ---------------------------------------------------------------------------------------------
# Integrated Gradients


@pytest.mark.parametrize("rule", ["right", "trapezoid"])
def test_integrated_gradients_closed_form_on_a_quadratic(rule):
    """grad S(x0 + t D) = w + A x0 + t A D with D = x - x0, so IG = D * (w + A x0 + tbar A D).

    The mean of t over the nodes is tbar = (M + 1) / (2M) for the right sum (000 Eq. 2) and 1/2
    for the trapezoid rule, both exactly; the gap sum(IG) - (S(x) - S(x0)) is then D^T A D / (2M)
    and 0. Exact arithmetic up to rounding: rtol 1e-12.
    """
    model, w, A = quadratic()
    x, x0 = inputs(3, 5), inputs(3, 5, seed=7, scale=0.5)
    M = 7
    res = integrated_gradients(model, x, baseline=x0, steps=M, rule=rule, target=1)
    D = x - x0
    tbar = (M + 1) / (2 * M) if rule == "right" else 0.5
    expected = D * (w + x0 @ A + tbar * D @ A)
    assert_close(res.attribution, expected, rtol=1e-12)
    S = lambda z: z @ w - 1.0 + 0.5 * ((z @ A) * z).sum(1)  # noqa: E731
    assert_close(res.score_change, S(x) - S(x0), rtol=1e-12)
    gap = ((D @ A) * D).sum(1) / (2 * M) if rule == "right" else torch.zeros(3, dtype=DT)
    assert_close(res.completeness_gap, gap, rtol=1e-12, atol=1e-12)
    # zero baseline by default; one baseline of the input shape is broadcast
    res0 = integrated_gradients(model, x, steps=M, rule=rule, target=1)
    assert_close(res0.attribution, x * (w + tbar * x @ A), rtol=1e-12)
    res1 = integrated_gradients(model, x, baseline=x0[0], steps=M, rule=rule, target=1)
    ref1 = integrated_gradients(model, x, baseline=x0[0].expand(3, 5), steps=M, rule=rule, target=1)
    assert torch.equal(res1.attribution, ref1.attribution)


@pytest.mark.parametrize("act", [nn.Softplus(beta=2.0), nn.Tanh()], ids=["softplus", "tanh"])
def test_integrated_gradients_completeness_within_one_percent(act):
    """sum(IG) = S_c(x) - S_c(x0) up to the quadrature error, within 1% at M = 300 (right sum,
    error ~ |S''| / (2M)). The target is the class whose logit changes most from the baseline, so
    that the 1% is relative to a change of order 1."""
    model = mlp(act=act)
    x = inputs(6, 6, scale=3.0)
    with torch.no_grad():
        change = model(x) - model(torch.zeros_like(x))
    target = change.abs().argmax(1)
    res = integrated_gradients(model, x, steps=300, target=target)
    expected = change.gather(1, target[:, None])[:, 0]
    assert_close(res.score_change, expected, rtol=1e-12)
    assert_close(res.completeness_gap, res.attribution.sum(1) - expected, rtol=1e-10)
    assert bool((expected.abs() > 0.2).all())
    assert bool((res.completeness_gap.abs() <= 0.01 * expected.abs()).all())


def test_integrated_gradients_quadrature_orders():
    """Right sum: gap ~ c / M (halves when M doubles); trapezoid: gap ~ c / M^2 (quarter)."""
    model = mlp(act=nn.Tanh())
    x = inputs(4, 6, scale=2.0)
    for rule, ratio in (("right", 0.5), ("trapezoid", 0.25)):
        g1 = integrated_gradients(model, x, steps=40, rule=rule).completeness_gap
        g2 = integrated_gradients(model, x, steps=80, rule=rule).completeness_gap
        assert_close(g2 / g1, torch.full((4,), ratio, dtype=DT), rtol=0.1)


def test_integrated_gradients_l1_normalisation_keeps_the_gap_of_the_raw_map():
    model = mlp()
    x = inputs(3, 6)
    raw = integrated_gradients(model, x, steps=20)
    l1 = integrated_gradients(model, x, steps=20, normalize="l1")  # 000 Eq. 2
    assert_close(
        l1.attribution, raw.attribution / raw.attribution.abs().sum(1, keepdim=True), rtol=1e-13
    )
    assert_close(l1.completeness_gap, raw.completeness_gap, rtol=1e-13)


# ---------------------------------------------------------------------------------------------
# SmoothGrad and Uniform Gradient against closed forms


def _ball_cf(d: int, r: float) -> float:
    """E cos(u_1) for u uniform in the ball of radius r of R^d (its characteristic function)."""
    return float(scipy.special.gamma(d / 2 + 1) * (2 / r) ** (d / 2) * scipy.special.jv(d / 2, r))


def test_ball_characteristic_function_reference():
    # d = 1: uniform on [-r, r], E cos u = sin(r) / r; d = 3: 3 (sin r - r cos r) / r^3.
    r = 0.9
    assert math.isclose(_ball_cf(1, r), math.sin(r) / r, rel_tol=1e-12)
    assert math.isclose(_ball_cf(3, r), 3 * (math.sin(r) - r * math.cos(r)) / r**3, rel_tol=1e-12)


def _check_mc(estimate, mean, sd, n):
    """|estimate - mean| <= 5 standard errors, entrywise."""
    se = sd / math.sqrt(n)
    z = ((estimate - mean).abs() / se).max()
    assert float(z) <= 5.0, f"max {float(z):.2f} standard errors"


def test_smoothgrad_on_sum_sin():
    """E cos(x + e) = cos(x) exp(-s^2/2); Var = (1 + cos 2x exp(-2 s^2)) / 2 - cos^2 x exp(-s^2)."""
    sigma, n = 0.7, 4000
    x = inputs(3, 5)
    res = smoothgrad(SinSum().double(), x, sigma=sigma, n_samples=n, target=0, generator=0)
    mean = torch.cos(x) * math.exp(-(sigma**2) / 2)
    var = (1 + torch.cos(2 * x) * math.exp(-2 * sigma**2)) / 2 - torch.cos(x) ** 2 * math.exp(
        -(sigma**2)
    )
    _check_mc(res.attribution, mean, var.sqrt(), n)
    # and it is not the unsmoothed gradient (the factor exp(-0.245) = 0.78 is resolved)
    assert float((res.attribution - torch.cos(x)).abs().max()) > 0.1


@pytest.mark.parametrize("method", ["smoothgrad", "unigrad"])
def test_noise_methods_on_a_quadratic(method):
    """E grad S(x + e) = w + A x for any zero-mean noise; the error A e_bar has per-coordinate
    sd sigma ||A_i|| (Gaussian) or r ||A_i|| / sqrt(d + 2) (uniform ball: Cov u = r^2/(d+2) I)."""
    model, w, A = quadratic(d=5)
    x = inputs(3, 5)
    n, s = 2000, 0.8
    if method == "smoothgrad":
        res = smoothgrad(model, x, sigma=s, n_samples=n, target=1, generator=3)
        sd = s * A.norm(dim=1)
    else:
        res = unigrad(model, x, radius=s, n_samples=n, target=1, generator=3)
        sd = s * A.norm(dim=1) / math.sqrt(5 + 2)
    _check_mc(res.attribution, w + x @ A, sd.expand(3, 5), n)


@pytest.mark.parametrize("d", [1, 3, 7])
def test_unigrad_on_sum_sin(d):
    """E cos(x_i + u_i) = cos(x_i) phi(r), phi the ball's characteristic function at |k| = 1;
    Var = (1 + cos(2 x_i) phi(2r)) / 2 - cos^2(x_i) phi(r)^2."""
    r, n = 1.5, 4000
    x = inputs(2, d)
    res = unigrad(SinSum().double(), x, radius=r, n_samples=n, target=0, generator=1)
    phi1, phi2 = _ball_cf(d, r), _ball_cf(d, 2 * r)
    mean = torch.cos(x) * phi1
    var = (1 + torch.cos(2 * x) * phi2) / 2 - torch.cos(x) ** 2 * phi1**2
    _check_mc(res.attribution, mean, var.sqrt(), n)


def test_ball_samples_are_uniform_in_the_ball():
    """||u|| <= r, P(||u|| <= rho) = (rho / r)^d (KS test), isotropic (mean 0, Cov r^2/(d+2) I)."""
    d, r, n = 6, 0.5, 4000
    method = UniGrad(radius=r, n_samples=1)
    g = torch.Generator().manual_seed(0)
    u = method._noise((n, 2, 3), g, torch.device("cpu"), DT).reshape(n, d)
    norms = u.norm(dim=1)
    assert float(norms.max()) <= r * (1 + 1e-12)
    p = scipy.stats.kstest(((norms / r) ** d).numpy(), "uniform").pvalue
    assert p > 1e-3
    # a wrong exponent (U^(1/2) or U) is rejected by the same test
    assert scipy.stats.kstest(((norms / r) ** 2).numpy(), "uniform").pvalue < 1e-6
    cov = (u.T @ u) / n
    var = r**2 / (d + 2)
    # Monte Carlo: entries of the sample covariance have sd <= ~ var * sqrt(2 / n) * 1.5
    assert_close(cov, var * torch.eye(d, dtype=DT), rtol=0, atol=5 * var * math.sqrt(2 / n) * 1.5)
    _check_mc(u.mean(0), torch.zeros(d, dtype=DT), torch.full((d,), math.sqrt(var)), n)


# ---------------------------------------------------------------------------------------------
# create_graph and surrogates


def test_create_graph_gives_the_hessian_vector_product():
    """d/dx <saliency(x), v> = Hess S_c(x) v, against torch.func.hessian, per image."""
    model = mlp()
    x = inputs(3, 6).requires_grad_(True)
    v = inputs(3, 6, seed=5)
    res = saliency(model, x, create_graph=True)
    assert res.attribution.requires_grad
    (hv,) = torch.autograd.grad((res.attribution * v).sum(), x)
    ref = torch.stack(
        [
            torch.func.hessian(score_fn(model, int(res.target[i]), (6,)))(x[i].detach()) @ v[i]
            for i in range(3)
        ]
    )
    ref = ref.detach()
    assert float(ref.abs().max()) > 1e-2  # a softplus net: the product does not vanish
    assert_close(hv, ref, rtol=1e-10)
    # without create_graph the map is a constant
    assert not saliency(model, x).attribution.requires_grad
    # no parameter gradients are accumulated, the model's mode is restored
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(
    "method",
    [
        Saliency(),
        IntegratedGradients(steps=6),
        IntegratedGradients(steps=5, rule="trapezoid"),
        SmoothGrad(sigma=0.3, n_samples=5),
        UniGrad(radius=0.4, n_samples=5, multiply_by_inputs=True),
    ],
    ids=["saliency", "ig-right", "ig-trapezoid", "smoothgrad", "unigrad-x-input"],
)
@pytest.mark.parametrize("normalize", [None, "l1", "l2"])
def test_create_graph_matches_finite_differences(method, normalize):
    """The vector-Jacobian product of the map (normalisation included) against central
    differences of the map with common random numbers (the same seed): h = 1e-5 in float64
    leaves an error of about h^2 + eps / h = 1e-10 relative; tolerance 1e-6."""
    model = mlp()
    x = inputs(2, 6)
    w, v = inputs(2, 6, seed=11), inputs(2, 6, seed=12)

    def amap(z, create_graph=False):
        return attribute(
            model, z, method, normalize=normalize, create_graph=create_graph, generator=4
        ).attribution

    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad((amap(xr, True) * w).sum(), xr)
    h = 1e-5
    fd = ((amap(x + h * v) - amap(x - h * v)) * w).sum() / (2 * h)
    assert math.isclose(float((g * v).sum()), float(fd), rel_tol=1e-6)


def test_relu_net_warns_and_surrogate_gives_second_derivatives():
    model = mlp(act=nn.ReLU())
    x = inputs(3, 6).requires_grad_(True)
    v = inputs(3, 6, seed=5)
    with pytest.warns(UserWarning, match="piecewise-linear"):
        res = saliency(model, x, create_graph=True)
    (hv,) = torch.autograd.grad((res.attribution * v).sum(), x, allow_unused=True)
    assert hv is None or float(hv.abs().max()) == 0.0  # the Hessian of a ReLU net vanishes
    beta = 5.0
    res = saliency(model, x, create_graph=True, surrogate=beta)
    smooth = geomrob.softplus_surrogate(model, beta)
    assert_close(res.attribution, logit_gradients(smooth, x, res.target), rtol=1e-12)
    with torch.no_grad():
        assert torch.equal(res.target, model(x).argmax(1))  # the class comes from the ReLU net
    (hv,) = torch.autograd.grad((res.attribution * v).sum(), x)
    ref = torch.stack(
        [
            torch.func.hessian(score_fn(smooth, int(res.target[i]), (6,)))(x[i].detach()) @ v[i]
            for i in range(3)
        ]
    )
    ref = ref.detach()
    assert float(ref.abs().max()) > 1e-3
    assert_close(hv, ref, rtol=1e-10)
    # a module as surrogate gives the same maps; the original model is untouched
    res2 = saliency(model, x, surrogate=smooth)
    assert_close(res2.attribution, res.attribution, rtol=1e-14)
    assert isinstance(model[1], nn.ReLU)


def test_target_comes_from_the_model_and_gradients_from_the_surrogate():
    model, other = mlp(seed=0), mlp(seed=1)
    x = inputs(40, 6, scale=2.0)
    with torch.no_grad():
        pm, po = model(x).argmax(1), other(x).argmax(1)
    assert bool((pm != po).any())  # some inputs where the two disagree
    res = integrated_gradients(model, x, steps=10, surrogate=other)
    assert torch.equal(res.target, pm)
    ref = integrated_gradients(other, x, steps=10, target=pm)
    assert_close(res.attribution, ref.attribution, rtol=1e-13)
    assert_close(res.completeness_gap, ref.completeness_gap, rtol=1e-12, atol=1e-14)
    with torch.no_grad():
        assert_close(res.logits, model(x), rtol=1e-14)


# ---------------------------------------------------------------------------------------------
# chunking, seeds, modes, dtypes


@pytest.mark.parametrize(
    "method",
    [
        Saliency(),
        IntegratedGradients(steps=9, rule="trapezoid"),
        SmoothGrad(sigma=0.2, n_samples=7),
        UniGrad(radius=0.3, n_samples=7),
    ],
    ids=["saliency", "ig", "smoothgrad", "unigrad"],
)
def test_chunking_does_not_change_the_maps(method):
    model = cnn("softplus")
    x = inputs(3, 1, 8, 8)
    ref = attribute(model, x, method, generator=2).attribution
    for chunk in (1, 2, 4, 7, 1000):  # images split (1, 2), samples in blocks (4 -> 1, 7 -> 2)
        got = attribute(model, x, method, chunk=chunk, generator=2).attribution
        assert_close(got, ref, rtol=1e-12)


@pytest.mark.parametrize("fn,kw", [(smoothgrad, {"sigma": 0.3}), (unigrad, {"radius": 0.3})])
def test_seeded_reproducibility(fn, kw):
    model = mlp()
    x = inputs(3, 6)
    a = fn(model, x, n_samples=6, generator=0, **kw).attribution
    b = fn(model, x, n_samples=6, generator=torch.Generator().manual_seed(0), **kw).attribution
    c = fn(model, x, n_samples=6, generator=1, **kw).attribution
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # a generator is consumed: two calls with one generator differ
    g = torch.Generator().manual_seed(0)
    assert not torch.equal(
        fn(model, x, n_samples=6, generator=g, **kw).attribution,
        fn(model, x, n_samples=6, generator=g, **kw).attribution,
    )


def test_eval_mode_no_parameter_grads_and_float32():
    model = cnn("softplus").float().train()
    x = inputs(2, 1, 8, 8).float().requires_grad_(True)
    res = smoothgrad(model, x, sigma=0.1, n_samples=4, generator=0, create_graph=True)
    assert res.attribution.dtype == torch.float32 and res.scale.dtype == torch.float32
    res.attribution.sum().backward()
    assert x.grad is not None
    assert all(p.grad is None for p in model.parameters())
    assert all(m.training for m in model.modules())  # mode restored


# ---------------------------------------------------------------------------------------------
# bad input


def test_bad_input_errors():
    model = mlp()
    x = inputs(3, 6)
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module"):
        saliency(lambda z: z, x)
    with pytest.raises(TypeError, match="`x` must be a floating-point tensor"):
        saliency(model, torch.ones(3, 6, dtype=torch.long))
    xn = x.clone()
    xn[0, 0] = math.nan
    with pytest.raises(ValueError, match="`x` contains 1 NaN"):
        saliency(model, xn)
    with pytest.raises(ValueError, match="empty batch"):
        saliency(model, x[:0])
    with pytest.raises(ValueError, match="`normalize` must be one of"):
        saliency(model, x, normalize="l3")
    with pytest.raises(ValueError, match="`target` labels must lie in"):
        saliency(model, x, target=torch.tensor([0, 1, 9]))
    with pytest.raises(ValueError, match="`target` must be <= 3"):
        saliency(model, x, target=4)
    with pytest.raises(TypeError, match="`target` must hold integer"):
        saliency(model, x, target=torch.zeros(3))
    with pytest.raises(TypeError, match="`create_graph` must be True or False"):
        saliency(model, x, create_graph=1)
    with pytest.raises(TypeError, match="`multiply_by_inputs` must be True or False"):
        saliency(model, x, multiply_by_inputs="yes")
    with pytest.raises(ValueError, match="`chunk` must be >= 1"):
        saliency(model, x, chunk=0)
    with pytest.raises(ValueError, match="`steps` must be >= 1"):
        integrated_gradients(model, x, steps=0)
    with pytest.raises(ValueError, match="`rule` must be one of"):
        integrated_gradients(model, x, rule="left")
    with pytest.raises(ValueError, match="`baseline` must have the input shape"):
        integrated_gradients(model, x, baseline=torch.zeros(2, 6, dtype=DT))
    with pytest.raises(ValueError, match="`baseline` must be on cpu with dtype torch.float64"):
        integrated_gradients(model, x, baseline=torch.zeros(6))
    with pytest.raises(ValueError, match="`baseline` contains 1 NaN"):
        integrated_gradients(model, x, baseline=torch.tensor([math.nan, 0, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="`sigma` must be > 0"):
        smoothgrad(model, x, sigma=0.0)
    with pytest.raises(ValueError, match="`radius` must be > 0"):
        unigrad(model, x, radius=-1.0)
    with pytest.raises(ValueError, match="`n_samples` must be >= 1"):
        unigrad(model, x, radius=1.0, n_samples=0)
    with pytest.raises(TypeError, match="`seed` must be None, an int or a torch.Generator"):
        smoothgrad(model, x, sigma=0.1, generator="0")
    with pytest.raises(TypeError, match="`surrogate` must be None, an nn.Module"):
        saliency(model, x, surrogate="softplus")
    with pytest.raises(ValueError, match="`surrogate` must be > 0"):
        saliency(model, x, surrogate=0.0)
    with pytest.raises(TypeError, match="`surrogate` has dtype torch.float32"):
        saliency(model, x, surrogate=mlp().float())
    with pytest.raises(ValueError, match="`surrogate` returns 3 logits but `model` returns 4"):
        saliency(model, x, surrogate=mlp(L=3))
    with pytest.raises(ValueError, match="`method` 'smoothgrad' needs a noise scale"):
        attribute(model, x, "smoothgrad")
    with pytest.raises(ValueError, match="`method` must be one of"):
        attribute(model, x, "gradcam")
    with pytest.raises(TypeError, match="`method` must be a string or an AttributionMethod"):
        attribute(model, x, 3)


def test_method_names():
    model = mlp()
    x = inputs(2, 6)
    assert torch.equal(attribute(model, x, "simple").attribution, saliency(model, x).attribution)
    assert torch.equal(
        attribute(model, x, "ig").attribution, integrated_gradients(model, x).attribution
    )
    assert attribute(model, x, "ig").method.steps == 50
    d = saliency(model, x, normalize="l1").to_dict()
    assert d["normalize"] == "l1" and len(d["attribution"]) == 2


# ---------------------------------------------------------------------------------------------
# captum (not installed here; the test is kept correct for machines that have it)


def test_against_captum():
    captum_attr = pytest.importorskip("captum.attr")
    model = mlp().eval()
    x = inputs(4, 6)
    t = saliency(model, x).target
    ref = captum_attr.Saliency(model).attribute(x, target=t, abs=False)
    assert_close(saliency(model, x).attribution, ref, rtol=1e-12)
    M = 20
    ig = captum_attr.IntegratedGradients(model, multiply_by_inputs=True)
    ref = ig.attribute(
        x, baselines=torch.zeros_like(x), target=t, n_steps=M, method="riemann_right"
    )
    assert_close(integrated_gradients(model, x, steps=M).attribution, ref, rtol=1e-10)
    # (captum's "riemann_trapezoid" weights its n nodes 1/n with halved ends, which sum to
    # (n - 1)/n: not a quadrature rule of the same integral, so it is not compared.)
    # NoiseTunnel draws from the global RNG: compare the two estimates of the same mean within
    # 5 standard errors of their difference (per-sample sd estimated from our own draws).
    sigma, n = 0.3, 2000
    with torch.random.fork_rng():
        torch.manual_seed(0)
        nt = captum_attr.NoiseTunnel(captum_attr.Saliency(model))
        ref = nt.attribute(
            x,
            nt_type="smoothgrad",
            nt_samples=n,
            stdevs=sigma,
            target=t,
            abs=False,
            nt_samples_batch_size=500,
        )
    got = smoothgrad(model, x, sigma=sigma, n_samples=n, generator=0).attribution
    per_sample = torch.stack(
        [
            smoothgrad(model, x, sigma=sigma, n_samples=1, generator=s).attribution
            for s in range(200)
        ]
    )
    sd = per_sample.std(0) * math.sqrt(2)
    assert float(((got - ref).abs() / (sd / math.sqrt(n))).max()) <= 5.0
