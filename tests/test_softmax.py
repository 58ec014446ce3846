"""Softmax null spaces (003): null space, invariance, parallel layers, split, feature collisions.

References: ``scipy.linalg.null_space`` of the centred ``W^T`` (compared as projectors, since
bases differ by a rotation), the softmax computed directly in float64, closed forms for the
feature collision of a linear feature map. Tolerances: 1e-10 for float64 linear algebra on
matrices of size <= 40 (the SVDs agree to ~1e-14), 1e-6 for the softmax invariance at
``theta <= 1e3`` (rounding is ``theta ||W|| eps`` ~ 1e-12), and 2e-3 for Adam's iterate against
a closed-form minimiser (Adam with a fixed step stops in a ball of radius ~ lr around it).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from geomrob import (
    direction_invariance,
    feature_collision,
    parallel_pairs,
    softmax_null_space,
    split_last_linear,
)
from geomrob.models import ARCHITECTURES, build

DT = torch.float64


def random_layer(l: int, m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(l, m, generator=g, dtype=DT), torch.randn(m, generator=g, dtype=DT)


def scipy_null_projector(W: torch.Tensor) -> tuple[np.ndarray, int]:
    A = W.numpy().T - W.numpy().T.mean(0, keepdims=True)  # (I - 11^T/m) W^T
    N = scipy.linalg.null_space(A)
    return N @ N.T, N.shape[1]


# ---------------------------------------------------------------------------------------------
# the null space


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("l", "m"), [(20, 5), (40, 10), (10, 10), (6, 10), (3, 2)])
def test_null_space_matches_scipy(l, m, seed):
    W, b = random_layer(l, m, seed)
    ns = softmax_null_space(W, b)
    P_ref, k_ref = scipy_null_projector(W)
    assert ns.dimension == k_ref == ns.basis.shape[0]
    assert (ns.l, ns.m) == (l, m)
    B = ns.basis
    assert torch.allclose(B @ B.T, torch.eye(k_ref, dtype=DT), atol=1e-10)
    assert np.abs(B.T.numpy() @ B.numpy() - P_ref).max() < 1e-10
    # a random W has rank(C W^T) = min(l, m - 1): dimension l - m + 1 >= l - m (Theorem 1)
    assert ns.rank == min(l, m - 1)
    assert ns.dimension == max(l - m + 1, 0)
    assert ns.lower_bound == l - m and ns.theorem1
    # every basis vector is adversarial: W^T d is a multiple of 1_m
    Wd = B @ W
    assert all((Wd - Wd.mean(1, keepdim=True)).abs().flatten() < 1e-10)  # empty when l < m


def test_rank_deficient_layer_has_larger_null_space():
    # columns w_c = u + a_c v: C W^T has rank 1, so the null space has dimension l - 1
    g = torch.Generator().manual_seed(3)
    u, v = torch.randn(12, generator=g, dtype=DT), torch.randn(12, generator=g, dtype=DT)
    a = torch.randn(5, generator=g, dtype=DT)
    W = u[:, None] + v[:, None] * a[None, :]
    ns = softmax_null_space(W)
    P_ref, k_ref = scipy_null_projector(W)
    assert ns.rank == 1 and ns.dimension == 11 == k_ref
    assert np.abs(ns.basis.T.numpy() @ ns.basis.numpy() - P_ref).max() < 1e-10
    # v is the only non-null direction: it is orthogonal to the basis
    assert (ns.basis @ v).abs().max() < 1e-10


def test_softmax_invariance_along_null_directions():
    W, b = random_layer(30, 10, 4)
    ns = softmax_null_space(W, b)
    g = torch.Generator().manual_seed(5)
    h = torch.randn(16, 30, generator=g, dtype=DT)
    p0 = torch.softmax(h @ W + b, 1)
    for theta in (1.0, 1e2, 1e3):
        for d in ns.basis:
            p = torch.softmax((h + theta * d) @ W + b, 1)
            assert (p - p0).abs().max() < 1e-6
    inv = direction_invariance(W, h, ns.basis, b=b, thetas=[1.0, 1e2, 1e3, 1e6])
    assert inv.max_change[:3].max() < 1e-6
    assert inv.label_kept.tolist() == [1.0] * 4  # Theorem 2: the region is unbounded
    assert inv.logit_spread.max() < 1e-10
    assert ns.logits(h).sub(h @ W + b).abs().max() < 1e-12


def test_random_directions_are_not_invariant():
    # the sign test: a generic direction changes the output, and for large theta the label
    # becomes argmax_c (W^T d)_c
    W, b = random_layer(30, 10, 6)
    g = torch.Generator().manual_seed(7)
    h = torch.randn(16, 30, generator=g, dtype=DT)
    D = torch.randn(8, 30, generator=g, dtype=DT)
    inv = direction_invariance(W, h, D, b=b, thetas=[10.0, 1e6])
    assert inv.max_change[0] > 0.1
    far = torch.softmax((h[:, None] + 1e6 * D / D.norm(dim=1, keepdim=True)) @ W + b, -1)
    expected = (D @ W).argmax(1)[None, :] == torch.softmax(h @ W + b, 1).argmax(1)[:, None]
    assert torch.equal(far.argmax(-1), (D @ W).argmax(1).expand(16, 8))
    assert float(inv.label_kept[1]) == pytest.approx(float(expected.double().mean()))
    assert inv.label_kept[1] < 1
    # a mix of a null direction and a small generic part is no longer invariant
    ns = softmax_null_space(W)
    mixed = ns.basis[:1] + 1e-2 * D[:1] / D[:1].norm()
    assert direction_invariance(W, h, mixed, b=b, thetas=[1e3]).max_change[0] > 1e-3


def test_linear_module_and_matrix_agree():
    torch.manual_seed(0)
    layer = nn.Linear(25, 7).double()
    a = softmax_null_space(layer)
    b = softmax_null_space(layer.weight.T, layer.bias)
    assert (a.l, a.m, a.rank) == (b.l, b.m, b.rank) == (25, 7, 6)
    assert torch.allclose(a.basis.T @ a.basis, b.basis.T @ b.basis, atol=1e-12)
    h = torch.randn(4, 25, dtype=DT)
    assert torch.allclose(a.logits(h), layer(h).detach(), atol=1e-12)
    inv_a = direction_invariance(layer, h, a.basis)
    inv_b = direction_invariance(layer.weight.T, h, a.basis, b=layer.bias)
    assert torch.equal(inv_a.max_change, inv_b.max_change)
    # float32 layers give a float32 basis, computed in float64
    small = softmax_null_space(nn.Linear(5, 3))
    assert small.basis.dtype == torch.float32 and small.dimension == 3


def test_null_space_bad_input():
    W = torch.randn(5, 3)
    with pytest.raises(ValueError, match=r"`W` must be a \(l, m\) matrix"):
        softmax_null_space(torch.randn(5))
    with pytest.raises(ValueError, match="at least 2 classes"):
        softmax_null_space(torch.randn(5, 1))
    with pytest.raises(ValueError, match=r"`b` must have shape \(3,\)"):
        softmax_null_space(W, torch.randn(5))
    with pytest.raises(ValueError, match="`b` must be None when `W` is an nn.Linear"):
        softmax_null_space(nn.Linear(5, 3), torch.randn(3))
    with pytest.raises(TypeError, match="floating-point"):
        softmax_null_space(torch.ones(5, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        softmax_null_space(np.ones((5, 3)))
    with pytest.raises(TypeError, match="split_last_linear"):
        softmax_null_space(nn.Conv2d(1, 2, 3))
    with pytest.raises(ValueError, match="NaN or infinite"):
        softmax_null_space(torch.full((5, 3), float("nan")))
    with pytest.raises(ValueError, match="`rtol` must be < 1"):
        softmax_null_space(W, rtol=2.0)
    h = torch.randn(4, 5)
    with pytest.raises(ValueError, match=r"`h` must have shape \(n, 5\)"):
        direction_invariance(W, torch.randn(4, 6), torch.randn(1, 5))
    with pytest.raises(ValueError, match=r"`directions` must have shape \(k, 5\)"):
        direction_invariance(W, h, torch.randn(1, 4))
    with pytest.raises(ValueError, match="zero row"):
        direction_invariance(W, h, torch.zeros(1, 5))
    with pytest.raises(ValueError, match="at least one step"):
        direction_invariance(W, h, torch.randn(1, 5), thetas=[])


# ---------------------------------------------------------------------------------------------
# parallel layers (Definition 2)


def test_parallel_layer_detected():
    g = torch.Generator().manual_seed(8)
    W = torch.randn(6, 5, generator=g, dtype=DT)
    W[:, 2] = W[:, 0] + 2.5 * (W[:, 1] - W[:, 0])  # w_2 - w_0 = 2.5 (w_1 - w_0)
    res = parallel_pairs(W)
    assert res.parallel
    rows = {tuple(r) for r in res.pairs.tolist()}
    # w_0, w_1, w_2 collinear: the three boundaries among them are mutually parallel
    assert rows == {(0, 1, 0, 2), (0, 1, 1, 2), (0, 2, 1, 2)}
    assert res.sines.max() < 1e-7 and res.min_sine < 1e-7
    # two disjoint pairs: w_4 - w_3 = -3 (w_1 - w_0)
    W2 = torch.randn(6, 5, generator=g, dtype=DT)
    W2[:, 4] = W2[:, 3] - 3.0 * (W2[:, 1] - W2[:, 0])
    res2 = parallel_pairs(W2)
    assert {tuple(r) for r in res2.pairs.tolist()} == {(0, 1, 3, 4)}
    assert res2.closest == (0, 1, 3, 4)
    # chunking does not change the answer
    res3 = parallel_pairs(W2, chunk=1)
    assert torch.equal(res3.pairs, res2.pairs) and res3.min_sine == pytest.approx(res2.min_sine)


def test_random_layer_is_not_parallel():
    W, b = random_layer(16, 10, 9)
    res = parallel_pairs(W, b)
    assert not res.parallel and res.pairs.shape == (0, 4)
    assert res.min_sine > 1e-3 and len(res.closest) == 4
    assert res.degenerate.shape == (0, 2)
    # brute force over the 45 explicit normals
    m = W.shape[1]
    normals = {(i, j): W[:, i] - W[:, j] for i in range(m) for j in range(i + 1, m)}
    keys = list(normals)
    best = min(
        float(
            (
                1
                - (normals[a] @ normals[c]) ** 2
                / (normals[a] @ normals[a] * (normals[c] @ normals[c]))
            )
            .clamp_min(0)
            .sqrt()
        )
        for x, a in enumerate(keys)
        for c in keys[x + 1 :]
    )
    assert res.min_sine == pytest.approx(best, rel=1e-8)


def test_near_parallel_tolerance_and_degenerate():
    W = torch.zeros(3, 4, dtype=DT)
    W[:, 1] = torch.tensor([1.0, 0.0, 0.0])
    W[:, 2] = torch.tensor([0.0, 1.0, 0.0])
    W[:, 3] = W[:, 2] + torch.tensor([1.0, 0.0, 1e-3])  # w_3 - w_2 at angle 1e-3 from w_1 - w_0
    res = parallel_pairs(W, tol=1e-6)
    assert not res.parallel
    assert res.min_sine == pytest.approx(1e-3, rel=1e-5)  # sin(atan(1e-3))
    assert {tuple(r) for r in parallel_pairs(W, tol=1e-2).pairs.tolist()} == {
        (0, 1, 2, 3),  # w_3 - w_2 = (1, 0, 1e-3) vs w_1 - w_0 = (1, 0, 0)
        (0, 2, 1, 3),  # w_3 - w_1 = (0, 1, 1e-3) vs w_2 - w_0 = (0, 1, 0)
    }
    W[:, 3] = W[:, 2]  # w_3 = w_2: no boundary between 2 and 3
    res = parallel_pairs(W)
    assert res.degenerate.tolist() == [[2, 3]]
    with pytest.raises(ValueError, match="`tol` must be > 0"):
        parallel_pairs(W, tol=0.0)
    with pytest.raises(ValueError, match="`chunk` must be >= 1"):
        parallel_pairs(W, chunk=0)


# ---------------------------------------------------------------------------------------------
# splitting a model


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_split_every_zoo_model(arch):
    torch.manual_seed(0)
    shape = (3, 8, 8)
    model = build(arch, input_shape=shape, num_classes=7, width=4).eval()
    split = split_last_linear(model)
    assert isinstance(split.head, nn.Linear) and split.head.out_features == 7
    assert split.head is dict(model.named_modules())[split.head_name]
    x = torch.rand(3, *shape)
    with torch.no_grad():
        h = split.features(x)
        assert h.shape == (3, split.head.in_features)
        assert torch.equal(split.head(h), model(x))
    # the features share the model's parameters
    assert {id(p) for p in split.features.parameters()} <= {id(p) for p in model.parameters()}


class _Custom(nn.Module):
    def __init__(self, tail: bool = False):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh())
        self.fc = nn.Linear(8, 3)
        self.tail = tail

    def forward(self, x):
        z = self.fc(self.body(x))
        return z * 2 if self.tail else z


def test_split_custom_module_and_errors():
    torch.manual_seed(0)
    model = _Custom().eval()
    split = split_last_linear(model, (1, 4, 4))
    x = torch.randn(5, 1, 4, 4)
    with torch.no_grad():
        assert torch.equal(split.head(split.features(x)), model(x))
    assert split.head_name == "fc"
    with pytest.raises(ValueError, match="`input_shape` is needed"):
        split_last_linear(model)
    with pytest.raises(ValueError, match="'fc' is not the last operation"):
        split_last_linear(_Custom(tail=True), (1, 4, 4))
    with pytest.raises(ValueError, match="last operation of the model is '1' \\(Softmax\\)"):
        split_last_linear(nn.Sequential(nn.Linear(4, 3), nn.Softmax(1)))
    with pytest.raises(ValueError, match="'1.1' \\(ReLU\\)"):
        split_last_linear(nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(4, 3), nn.ReLU())))
    with pytest.raises(ValueError, match="no nn.Linear"):
        split_last_linear(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()))
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        split_last_linear(lambda x: x)
    bare = nn.Linear(4, 3)
    assert split_last_linear(bare).head is bare


# ---------------------------------------------------------------------------------------------
# the conjecture experiment


def _linear_features(l: int = 6, m: int = 3, seed: int = 10) -> nn.Sequential:
    """g(x) = flatten(x) (identity features), head W: the collision has a closed form."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(l, m)).double().eval()


@pytest.mark.parametrize("lam", [0.0, 0.05])
def test_feature_collision_closed_form(lam):
    # with g = identity and P the projector off the null space, the minimiser of
    # ||P(x + delta - x')||^2 / c + lam ||delta||^2 (c = ||P(x - x')||^2) is
    # delta = P(x' - x) / (1 + lam c) for lam > 0; for lam = 0 every x* with P(x* - x') = 0
    # is a minimiser, and each has exactly the probabilities of x'
    model = _linear_features()
    g = torch.Generator().manual_seed(11)
    x = torch.randn(4, 6, generator=g, dtype=DT)
    xt = torch.randn(4, 6, generator=g, dtype=DT)
    res = feature_collision(model, x, xt, lam=lam, steps=1000, lr=1e-2)
    null = softmax_null_space(model[1])
    diff = xt - x
    Pd = diff - null.project(diff)
    assert torch.allclose(res.distance, (res.x_adv - x).norm(dim=1))
    assert torch.allclose(res.pair_distance, diff.norm(dim=1))
    if lam > 0:
        c = Pd.pow(2).sum(1, keepdim=True)
        assert (res.x_adv - (x + Pd / (1 + lam * c))).abs().max() < 1e-3
        # the null component stays that of x - x': ||B (x* - x')|| = ||B (x - x')||
        assert torch.allclose(res.null_shift, null.project(x - xt).norm(dim=1), atol=1e-3)
        # the penalty keeps x* short of the target: ||r(x*)|| / ||r(x)|| = lam c / (1 + lam c)
        expected = (lam * c / (1 + lam * c)).flatten()
        assert torch.allclose(res.residual, expected, atol=1e-3)
    else:
        moved = res.x_adv - xt
        assert (moved - null.project(moved)).abs().max() < 1e-6
        assert res.residual.max() < 1e-6 and bool(res.success.all())
        with torch.no_grad():
            p_adv = torch.softmax(model(res.x_adv), 1)
            p_t = torch.softmax(model(xt), 1)
        assert (p_adv - p_t).abs().max() < 1e-6
        assert torch.equal(res.adv_label, res.target_label)


def test_feature_collision_fixed_theta():
    # theta fixed: the target is x' + theta d' with d' a unit null direction; with lam = 0 the
    # minimiser is the target itself (g = identity), which has the probabilities of x'
    model = _linear_features()
    g = torch.Generator().manual_seed(12)
    x = torch.randn(3, 6, generator=g, dtype=DT)
    xt = torch.randn(3, 6, generator=g, dtype=DT)
    res = feature_collision(model, x, xt, theta=2.0, lam=0.0, steps=1000, lr=3e-2, generator=0)
    null = softmax_null_space(model[1])
    move = res.x_adv - xt
    assert torch.allclose(move.norm(dim=1), torch.full((3,), 2.0, dtype=DT), atol=1e-6)
    assert (move - null.project(move)).abs().max() < 1e-6  # the move is a null direction
    assert bool(res.success.all()) and res.theta == 2.0
    assert torch.allclose(res.null_shift, torch.full((3,), 2.0, dtype=DT), atol=1e-6)
    same = feature_collision(model, x, xt, theta=2.0, lam=0.0, steps=1000, lr=3e-2, generator=0)
    assert torch.equal(same.x_adv, res.x_adv)


def test_feature_collision_relu_features_and_errors():
    torch.manual_seed(0)
    model = build("fcn2", input_shape=(1, 8, 8), num_classes=3, width=16).double().eval()
    x = torch.rand(4, 1, 8, 8, dtype=DT)
    res = feature_collision(model, x, x.flip(0), theta=50.0, steps=3, bounds=(0.0, 1.0))
    # ReLU features are >= 0; a null direction of length 50 leaves the orthant
    assert bool(res.outside_features.all())
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    with pytest.raises(ValueError, match="`x_target` must have the shape of `x`"):
        feature_collision(model, x, x[:2])
    with pytest.raises(ValueError, match="`lam` must be >= 0"):
        feature_collision(model, x, x, lam=-1.0)
    with pytest.raises(ValueError, match="`steps` must be >= 1"):
        feature_collision(model, x, x, steps=0)
    with pytest.raises(ValueError, match="null space is"):
        wide = nn.Sequential(nn.Flatten(), nn.Linear(64, 2), nn.Linear(2, 3)).double()
        feature_collision(wide, x, x)
