"""Per-image attacks on attribution maps (Ghorbani et al.; Dombrowski et al.; 000's baselines).

References: the metrics of ``geomrob.interpret.metrics`` recomputed on the real model's maps
(``saliency`` of the returned ``x_adv``), the labels recomputed with ``model(x_adv)``, and central
finite differences of the objective, written here from the public maps, for the direction of the
first step (which catches a sign error: a wrong-signed step lowers the objective and is never
returned). The properties (ball, box, label kept, objective not lower than at ``delta = 0``) are
checked on a tiny ReLU network trained on the embedded 8x8 digits in a second, attacked through
a softplus surrogate. float64 throughout.
"""

from __future__ import annotations

import math

import pytest
import torch
from reference import assert_close, train_digits_fcn
from torch import nn

import geomrob
from geomrob.interpret import (
    AttributionAttackResult,
    SmoothGrad,
    fgm_attack,
    manipulate_attack,
    mass_center_attack,
    pgd_attack,
    saliency,
    topk_attack,
)
from geomrob.interpret.attacks import mass_map
from geomrob.interpret.metrics import (
    dissimilarity,
    mass_center_dislocation,
    pixel_map,
    topk_intersection,
)

DT = torch.float64
INF = float("inf")


# ---------------------------------------------------------------------------------------------
# problems


@pytest.fixture(scope="module")
def digits():
    net, x, y = train_digits_fcn()
    with torch.no_grad():
        assert (net(x).argmax(1) == y).double().mean() > 0.95
    return net, x[:12], x[100:112]


def tanh_mlp(d: int = 6, L: int = 3, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, L))
    return net.to(DT).eval()


def inputs(n: int, d: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=DT)


def predict(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(x).argmax(1)


def run(name: str, net, x, other, **kw) -> AttributionAttackResult:
    if name == "pgd":
        return pgd_attack(net, x, **kw)
    if name == "fgm":
        kw.pop("steps", None)
        return fgm_attack(net, x, **kw)
    if name == "topk":
        return topk_attack(net, x, k=8, **kw)
    if name == "mass_center":
        return mass_center_attack(net, x, **kw)
    target = saliency(net, other).attribution  # maps of other images
    return manipulate_attack(net, x, target, **kw)


def real_metric(name: str, net, x, res: AttributionAttackResult, other) -> torch.Tensor:
    """The attack's metric on the real model, from the public maps and metrics."""
    a0 = saliency(net, x, target=res.label).attribution
    a1 = saliency(net, res.x_adv, target=res.label).attribution
    if name in ("pgd", "fgm"):
        n0 = a0 / a0.flatten(1).abs().sum(1).view(-1, 1, 1, 1)
        n1 = a1 / a1.flatten(1).abs().sum(1).view(-1, 1, 1, 1)
        return dissimilarity(n0, n1)  # 000 Eq. 9
    if name == "topk":
        return topk_intersection(pixel_map(a0), pixel_map(a1), 8)
    if name == "mass_center":
        return mass_center_dislocation(a0, a1)
    target = mass_map(saliency(net, other).attribution)
    return (mass_map(a1) - target).flatten(1).pow(2).mean(1)


ATTACKS = ["pgd", "fgm", "topk", "mass_center", "manipulate"]


# ---------------------------------------------------------------------------------------------
# properties on a trained ReLU network, through a softplus surrogate


@pytest.mark.parametrize("p", [2.0, INF])
@pytest.mark.parametrize("name", ATTACKS)
def test_attack_keeps_ball_box_label_and_raises_its_objective(digits, name, p):
    net, x, other = digits
    eps = 1.0 if p == 2.0 else 0.1
    res = run(
        name, net, x, other, eps=eps, p=p, steps=10, bounds=(0.0, 1.0), surrogate=10.0, generator=0
    )
    # ball (up to one rounding of x + delta - x) and box
    assert bool((res.norm <= eps * (1 + 1e-12)).all()), res.norm.max()
    assert_close(res.norm, res.delta.flatten(1).norm(p=p, dim=1), rtol=1e-14)
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert_close(res.delta, res.x_adv - x, rtol=0.0, atol=0.0)
    # the real label, recomputed here, never changes
    assert torch.equal(res.label, predict(net, x))
    assert torch.equal(predict(net, res.x_adv), res.label)
    assert bool(res.label_kept.all()) and torch.equal(res.adv_label, res.label)
    # the objective (real model) is never below its value at delta = 0 and rises on average
    assert bool((res.objective_after >= res.objective_before).all())
    assert float((res.objective_after - res.objective_before).mean()) > 0
    assert int((res.objective_after > res.objective_before).sum()) >= 10  # of 12 images
    # the reported metric is the metric of the real maps, before and after
    assert_close(res.metric_after, real_metric(name, net, x, res, other), rtol=1e-9, atol=1e-12)
    before = {"pgd": 0.0, "fgm": 0.0, "topk": 1.0, "mass_center": 0.0}.get(name)
    if before is not None:
        assert_close(res.metric_before, torch.full((12,), before, dtype=DT), rtol=0, atol=1e-12)
    assert res.attack == name and res.eps == eps and res.p == p and len(res) == 12
    assert bool((res.steps >= 1).all())
    d = res.to_dict()
    assert d["metric"] == res.metric and len(d["x_adv"]) == 12


def test_topk_attack_reduces_topk_intersection(digits):
    net, x, _ = digits
    res = topk_attack(net, x, k=8, eps=0.1, steps=20, bounds=(0.0, 1.0), surrogate=10.0)
    assert float(res.metric_after.mean()) <= 0.85, res.metric_after
    assert bool((res.metric_after <= 1.0).all())


def test_manipulate_attack_approaches_the_target_map(digits):
    net, x, other = digits
    target = saliency(net, other).attribution
    res = manipulate_attack(net, x, target, eps=0.1, steps=20, surrogate=10.0, bounds=(0.0, 1.0))
    assert bool((res.metric_after <= res.metric_before).all())
    assert float(res.metric_after.mean()) < 0.9 * float(res.metric_before.mean())
    # one target for every image (no batch axis) and a mass-map-shaped target are accepted
    one = manipulate_attack(net, x, target[0], eps=0.1, steps=2, surrogate=10.0)
    both = manipulate_attack(
        net, x, target[:1].expand(12, 1, 8, 8), eps=0.1, steps=2, surrogate=10.0
    )
    assert torch.equal(one.x_adv, both.x_adv)
    pix = manipulate_attack(net, x, pixel_map(target[:1])[0], eps=0.1, steps=2, surrogate=10.0)
    assert torch.equal(pix.x_adv, one.x_adv)


def test_big_steps_are_rejected_not_taken(digits):
    """With a ball much larger than the margin, steps cross the boundary: they are rejected."""
    net, x, _ = digits
    res = pgd_attack(net, x, eps=6.0, steps=10, step_size=3.0, surrogate=10.0, generator=0)
    assert int(res.rejected.sum()) > 0
    assert torch.equal(predict(net, res.x_adv), predict(net, x))
    assert bool((res.objective_after > res.objective_before).all())
    # no halving at all: a rejected image simply keeps its iterate
    stiff = pgd_attack(
        net, x, eps=6.0, steps=3, step_size=3.0, surrogate=10.0, generator=0, max_halvings=0
    )
    assert torch.equal(predict(net, stiff.x_adv), predict(net, x))


def test_surrogate_gives_nonzero_gradients_and_relu_alone_warns(digits):
    net, x, _ = digits
    x = x[:4]
    # through a softplus surrogate the saliency map moves
    res = topk_attack(net, x, k=8, eps=0.1, steps=3, surrogate=10.0)
    assert bool((res.delta.flatten(1).abs().amax(1) > 0).all())
    # the ReLU network alone: saliency is piecewise constant, the objective's gradient is zero
    with pytest.warns(UserWarning, match="surrogate") as record:
        flat = topk_attack(net, x, k=8, eps=0.1, steps=3)
    messages = " ".join(str(w.message) for w in record)
    assert "piecewise linear" in messages
    assert "gradient of the attack's objective is zero" in messages
    assert torch.equal(flat.delta, torch.zeros_like(x))
    assert torch.equal(flat.objective_after, flat.objective_before)
    # a smooth surrogate module works as well as a beta
    module = geomrob.softplus_surrogate(net, 10.0)
    same = topk_attack(net, x, k=8, eps=0.1, steps=3, surrogate=module)
    assert_close(same.x_adv, res.x_adv, rtol=1e-12)


def test_dissimilarity_attacks_start_off_zero(digits):
    net, x, _ = digits
    with pytest.warns(UserWarning, match="give `sigma` > 0"):
        res = fgm_attack(net, x[:3], eps=1.0, sigma=0.0, surrogate=10.0)
    assert torch.equal(res.delta, torch.zeros_like(x[:3]))
    # one step of length eps, halved once per rejected try (no box: nothing else shortens it)
    res = fgm_attack(net, x, eps=1.0, surrogate=10.0, generator=0)
    assert int(res.rejected.sum()) > 0 and bool((res.steps == 1).all())
    assert_close(res.norm, 1.0 / 2.0 ** res.rejected.to(DT), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# the direction of a step against finite differences (a sign error fails here)


def fd_gradient(J, x: torch.Tensor, h: float = 1e-5) -> torch.Tensor:
    """Central differences of ``J: (m, d) -> (m,)`` at every row of ``x``, all coordinates."""
    n, d = x.shape
    eye = torch.eye(d, dtype=x.dtype)
    plus = (x[:, None, :] + h * eye).reshape(n * d, d)
    minus = (x[:, None, :] - h * eye).reshape(n * d, d)
    rep = lambda t: t.repeat_interleave(d, 0)  # noqa: E731
    return ((J(plus, rep) - J(minus, rep)) / (2 * h)).view(n, d)


@pytest.mark.parametrize("name", ["topk", "manipulate"])
def test_first_step_follows_the_finite_difference_gradient(name):
    net, x = tanh_mlp(), inputs(5, 6)
    label = predict(net, x)
    m0 = mass_map(saliency(net, x, target=label).attribution)
    target = torch.rand(5, 6, generator=torch.Generator().manual_seed(3), dtype=DT)
    mt = mass_map(target)
    k = 2
    mask = torch.zeros_like(m0, dtype=torch.bool).scatter_(1, m0.topk(k, dim=1).indices, True)
    with torch.no_grad():
        p0 = net(x).softmax(1)
    gamma = 0.5  # large enough that the output term matters

    def J(z, rep):
        m = mass_map(saliency(net, z, target=rep(label)).attribution)
        if name == "topk":
            return -(m * rep(mask)).sum(1)
        with torch.no_grad():
            p = net(z).softmax(1)
        return -((m - rep(mt)).pow(2).mean(1) + gamma * (p - rep(p0)).pow(2).mean(1))

    grad = fd_gradient(J, x)
    a = 1e-3
    if name == "topk":
        res = topk_attack(net, x, k=k, eps=1.0, p=2.0, steps=1, step_size=a)
    else:
        res = manipulate_attack(net, x, target, eps=1.0, p=2.0, steps=1, step_size=a, gamma=gamma)
    # the step is a * g / ||g||: accepted (better than delta = 0) for every image
    assert_close(res.norm, torch.full((5,), a, dtype=DT), rtol=1e-9)
    cos = (res.delta * grad).sum(1) / (res.delta.norm(dim=1) * grad.norm(dim=1))
    # finite-difference error ~ h^2 = 1e-10 relative: the directions agree to 1e-6
    assert bool((cos > 1 - 1e-6).all()), cos
    # l-inf: the step is a * sign(g)
    if name == "topk":
        res = topk_attack(net, x, k=k, eps=1.0, steps=1, step_size=a)
        assert torch.equal(res.delta.sign(), grad.sign())


def test_mass_map_matches_normalised_pixel_map():
    a = torch.randn(3, 2, 4, 5, generator=torch.Generator().manual_seed(0), dtype=DT)
    pm = pixel_map(a)
    assert_close(mass_map(a), pm / pm.sum((1, 2), keepdim=True), rtol=1e-14)
    v = torch.randn(3, 7, generator=torch.Generator().manual_seed(1), dtype=DT)
    assert_close(mass_map(v), v.abs() / v.abs().sum(1, keepdim=True), rtol=1e-14)


# ---------------------------------------------------------------------------------------------
# methods, reproducibility, bad input


def test_smoothgrad_maps_use_common_noise_and_runs_are_reproducible():
    net, x = tanh_mlp(), inputs(4, 6)
    method = SmoothGrad(sigma=0.3, n_samples=4)
    r1 = pgd_attack(net, x, method, eps=0.5, steps=4, generator=7)
    r2 = pgd_attack(net, x, method, eps=0.5, steps=4, generator=7)
    assert torch.equal(r1.x_adv, r2.x_adv) and torch.equal(r1.metric_after, r2.metric_after)
    # the same noise at x and x + delta: zero dissimilarity at delta = 0, exactly
    assert torch.equal(r1.metric_before, torch.zeros(4, dtype=DT))
    assert bool((r1.metric_after > 0).all())
    r3 = pgd_attack(net, x, "ig", eps=0.5, steps=4, generator=7, normalize="l2")
    assert bool((r3.objective_after > r3.objective_before).all())
    # chunking the maps' backward passes changes only the rounding
    r4 = pgd_attack(net, x, eps=0.5, steps=4, generator=7)
    r5 = pgd_attack(net, x, eps=0.5, steps=4, generator=7, chunk=3)
    assert_close(r5.x_adv, r4.x_adv, rtol=1e-12)


def test_attack_errors(digits):
    net, x, other = digits
    with pytest.raises(ValueError, match="`eps` must be > 0"):
        pgd_attack(net, x, eps=0.0)
    with pytest.raises(ValueError, match="`p` must be 2 or float"):
        pgd_attack(net, x, eps=1.0, p=1)
    with pytest.raises(ValueError, match="`steps` must be >= 1"):
        pgd_attack(net, x, eps=1.0, steps=0)
    with pytest.raises(ValueError, match="`step_size` must be > 0"):
        pgd_attack(net, x, eps=1.0, step_size=-1.0)
    with pytest.raises(ValueError, match="`sigma` must be >= 0"):
        pgd_attack(net, x, eps=1.0, sigma=-0.1)
    with pytest.raises(ValueError, match="`normalize` must be one of"):
        pgd_attack(net, x, eps=1.0, normalize="max")
    with pytest.raises(ValueError, match="`max_halvings` must be >= 0"):
        pgd_attack(net, x, eps=1.0, max_halvings=-1)
    with pytest.raises(TypeError, match="`progress` must be True or False"):
        pgd_attack(net, x, eps=1.0, progress=1)
    with pytest.raises(ValueError, match="`chunk` must be >= 1"):
        pgd_attack(net, x, eps=1.0, chunk=0)
    with pytest.raises(ValueError, match="`x` lies outside `bounds`"):
        pgd_attack(net, x, eps=1.0, bounds=(0.2, 1.0))
    with pytest.raises(ValueError, match="`method` must be one of"):
        pgd_attack(net, x, "lrp", eps=1.0)
    with pytest.raises(TypeError, match="`surrogate` must be None"):
        pgd_attack(net, x, eps=1.0, surrogate="softplus")
    with pytest.raises(TypeError, match="`x` must be a floating-point tensor"):
        pgd_attack(net, (x * 255).to(torch.uint8), eps=1.0)
    with pytest.raises(TypeError, match="`x` has dtype torch.float32"):
        pgd_attack(net, x.float(), eps=1.0)
    with pytest.raises(ValueError, match="`k` must be <= 64"):
        topk_attack(net, x, k=65, eps=0.1)
    with pytest.raises(ValueError, match="`k` must be >= 1"):
        topk_attack(net, x, k=0, eps=0.1)
    with pytest.raises(TypeError, match="`k` must be an int"):
        topk_attack(net, x, k=2.0, eps=0.1)
    with pytest.raises(ValueError, match="must be images"):
        mass_center_attack(tanh_mlp(), inputs(3, 6), eps=0.1)
    with pytest.raises(ValueError, match="`target_map` must have one of the shapes"):
        manipulate_attack(net, x, torch.ones(12, 64, dtype=DT), eps=0.1)
    with pytest.raises(ValueError, match="all-zero map"):
        manipulate_attack(net, x, torch.zeros(8, 8, dtype=DT), eps=0.1)
    with pytest.raises(ValueError, match="`gamma` must be >= 0"):
        manipulate_attack(net, x, other, eps=0.1, gamma=-1.0)
    with pytest.raises(TypeError, match="`target_map` must be a torch.Tensor"):
        manipulate_attack(net, x, [1.0], eps=0.1)
    with pytest.raises(ValueError, match="`target_map` contains 1 NaN"):
        bad = other.clone()
        bad[0, 0, 0, 0] = math.nan
        manipulate_attack(net, x, bad, eps=0.1)


def test_keeps_label_needs_more_than_rounding():
    """A candidate on the boundary (top-two gap of float rounding, which a batch of another size
    can flip) does not keep the label; a real margin does, whatever the logits' scale."""
    from geomrob.interpret.attacks import keeps_label

    eps32 = torch.finfo(torch.float32).eps
    logits = torch.tensor(
        [
            [10.0, 10.0 - 4 * eps32 * 10, 0.0],  # measured kind of tie: a few ulps
            [10.0, 9.99, 0.0],  # gap 1e-2
            [1e-3, 0.0, -1e-3],  # small logits: the tolerance is absolute near 0
            [0.0, 5.0, 1.0],  # the label is not on top at all
        ]
    )
    label = torch.tensor([0, 0, 0, 0])
    assert keeps_label(logits, label).tolist() == [False, True, True, False]
    # float64 rounding is much finer: the same few-ulp gap in float64 ulps is rejected too,
    # a 1e-9 gap is kept
    l64 = torch.tensor([[10.0, 10.0 - 1e-9, 0.0]], dtype=torch.float64)
    assert keeps_label(l64, torch.tensor([0])).tolist() == [True]
    assert keeps_label(torch.tensor([[3.0]]), torch.tensor([0])).tolist() == [True]  # one class
