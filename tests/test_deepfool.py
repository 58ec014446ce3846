"""DeepFool and boundary points against linear classifiers, whose geometry is exact."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import scipy.optimize
import torch
from torch import nn

from geomrob.attacks import deepfool
from geomrob.curvature import boundary_points

DT = torch.float64


def linear(d: int, num_classes: int, seed: int) -> nn.Linear:
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(d, num_classes).to(DT)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(num_classes, d, generator=g, dtype=DT))
        lin.bias.copy_(torch.randn(num_classes, generator=g, dtype=DT))
    return lin


def mlp(d: int = 6, num_classes: int = 4, seed: int = 0, dtype=DT) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, num_classes)).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype))
    return model


def exact_distance(lin: nn.Linear, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance to the complement of the linear cell of x, min_j (f_k - f_j)/||w_k - w_j||."""
    f = lin(x)
    k = f.argmax(1)
    W = lin.weight
    dist = torch.empty(len(x), dtype=DT)
    arg = torch.empty(len(x), dtype=torch.long)
    for i in range(len(x)):
        ratios = torch.stack(
            [
                (f[i, k[i]] - f[i, j]) / (W[k[i]] - W[j]).norm()
                if j != k[i]
                else torch.tensor(float("inf"), dtype=DT)
                for j in range(W.shape[0])
            ]
        )
        dist[i], arg[i] = ratios.min(), ratios.argmin()
    return dist, arg


def test_binary_linear_exact():
    lin = linear(7, 2, seed=0)
    x = torch.randn(9, 7, generator=torch.Generator().manual_seed(1), dtype=DT)
    res = deepfool(lin, x, overshoot=0.0)
    dist, _ = exact_distance(lin, x)
    w = (lin.weight[1] - lin.weight[0]).norm()
    # One step reaches the hyperplane plus DeepFool's 1e-4 margin on |g|.
    torch.testing.assert_close(res.norms, dist + 1e-4 / w, rtol=1e-12, atol=0)
    assert res.converged.all() and (res.iterations == 1).all()
    bp = boundary_points(lin, x, deepfool_result=res)
    torch.testing.assert_close(bp.r.norm(dim=1), dist, rtol=1e-6, atol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multiclass_linear_exact(seed):
    lin = linear(20, 6, seed=seed)
    x = torch.randn(32, 20, generator=torch.Generator().manual_seed(seed + 10), dtype=DT)
    dist, nearest = exact_distance(lin, x)
    res = deepfool(lin, x, overshoot=0.02)
    assert res.converged.all() and (res.iterations == 1).all()
    assert torch.equal(res.adv_label, nearest)
    W = lin.weight
    wl = (W[nearest] - W[res.label]).norm(dim=1)
    torch.testing.assert_close(res.norms, 1.02 * (dist + 1e-4 / wl), rtol=1e-12, atol=0)
    bp = boundary_points(lin, x, deepfool_result=res)
    assert bp.converged.all()
    torch.testing.assert_close(bp.r.norm(dim=1), dist, rtol=1e-6, atol=0)
    # The boundary point of a linear cell is the foot of the perpendicular: r is parallel to w.
    cos = torch.nn.functional.cosine_similarity(bp.r, W[nearest] - W[res.label], dim=1)
    torch.testing.assert_close(cos, torch.ones_like(cos), rtol=0, atol=1e-12)


def test_candidates_restrict_the_search():
    lin = linear(20, 6, seed=3)
    x = torch.randn(16, 20, generator=torch.Generator().manual_seed(4), dtype=DT)
    top2 = lin(x).topk(2, dim=1).indices[:, 1]
    res = deepfool(lin, x, num_candidates=2, overshoot=0.0, max_iter=1)
    # With two candidates the first step goes towards the runner-up class.
    w = lin.weight[top2] - lin.weight[res.label]
    cos = torch.nn.functional.cosine_similarity(res.r, w, dim=1)
    torch.testing.assert_close(cos, torch.ones_like(cos), rtol=0, atol=1e-12)


def test_batched_equals_one_at_a_time():
    model = mlp()
    x = torch.randn(10, 6, generator=torch.Generator().manual_seed(5), dtype=DT)
    batched = deepfool(model, x)
    for i in range(len(x)):
        single = deepfool(model, x[i : i + 1])
        torch.testing.assert_close(single.r[0], batched.r[i], rtol=1e-10, atol=1e-12)
        assert single.iterations[0] == batched.iterations[i]
    chunked = deepfool(model, x, batch_size=3)
    torch.testing.assert_close(chunked.r, batched.r, rtol=1e-10, atol=1e-12)


def test_nonlinear_converges_and_boundary_residual():
    model = mlp(seed=1)
    x = torch.randn(25, 6, generator=torch.Generator().manual_seed(6), dtype=DT)
    res = deepfool(model, x)
    assert res.converged.all()
    assert (model(res.x_adv).argmax(1) == res.adv_label).all()
    assert (res.adv_label != res.label).all()
    bp = boundary_points(model, x, deepfool_result=res, tol=1e-8)
    assert bp.converged.all()
    f = model(x)
    fx = f.gather(1, bp.adv_label[:, None]) - f.gather(1, bp.label[:, None])
    fz = model(bp.z)
    Fz = (fz.gather(1, bp.adv_label[:, None]) - fz.gather(1, bp.label[:, None])).squeeze(1)
    assert (fx < 0).all()
    assert (Fz.abs() <= 1e-8 * fx.squeeze(1).abs()).all()
    torch.testing.assert_close(Fz, bp.residual)
    assert ((bp.t > 0) & (bp.t <= 1)).all()
    torch.testing.assert_close(bp.z, x + bp.t[:, None] * res.r)
    # grad F(z) against autograd, and the normal points away from x.
    for i in range(3):
        zi = bp.z[i : i + 1].clone().requires_grad_(True)
        out = model(zi)
        (gi,) = torch.autograd.grad(out[0, bp.adv_label[i]] - out[0, bp.label[i]], zi)
        torch.testing.assert_close(gi[0], bp.grad[i], rtol=1e-10, atol=1e-12)
    assert ((bp.r * bp.grad).sum(1) > 0).all()


def test_float32_smoke():
    model = mlp(dtype=torch.float32)
    x = torch.randn(8, 6, generator=torch.Generator().manual_seed(7))
    res = deepfool(model, x)
    assert res.r.dtype == torch.float32 and res.converged.all()
    bp = boundary_points(model, x, deepfool_result=res, tol=1e-4)
    assert bp.converged.all()


def test_box_bounds_respected():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).to(DT)
    x = torch.rand(20, 1, 4, 4, generator=torch.Generator().manual_seed(8), dtype=DT)
    res = deepfool(model, x, bounds=(0.0, 1.0), max_iter=100)
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    torch.testing.assert_close(res.x_adv, x + res.r)
    unbounded = deepfool(model, x, max_iter=100)
    if (unbounded.x_adv < 0).any() or (unbounded.x_adv > 1).any():
        assert not torch.equal(res.r, unbounded.r)


def _box_qp(w: np.ndarray, target: float, x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """min ||s|| s.t. w.s >= target, lo <= x + s <= hi, by scipy's SLSQP (the reference)."""
    res = scipy.optimize.minimize(
        lambda s: 0.5 * s @ s,
        np.zeros_like(x),
        jac=lambda s: s,
        bounds=list(zip(lo - x, hi - x, strict=True)),
        constraints=[{"type": "ineq", "fun": lambda s: w @ s - target, "jac": lambda s: w}],
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 500},
    )
    assert res.success, res.message
    return res.x


def test_box_linear_step_solves_the_box_constrained_qp():
    # Each candidate's step is the exact minimiser of ||s|| on the box (reference: SLSQP to
    # ~1e-8; the closed form is exact up to rounding), and the candidate with the smallest
    # norm wins. Half the pixels start on a bound, as on MNIST.
    from geomrob.attacks.deepfool import box_linear_step

    g = torch.Generator().manual_seed(3)
    b, c, d = 6, 4, 12
    x = torch.rand(b, d, generator=g, dtype=DT)
    x[:, ::2] = (x[:, ::2] > 0.5).to(DT)
    w = torch.randn(b, c, d, generator=g, dtype=DT)
    margin = -0.3 * torch.rand(b, c, generator=g, dtype=DT)
    steps = box_linear_step(margin, w, x, (0.0, 1.0))
    assert (x + steps).min() >= 0 and (x + steps).max() <= 1
    for i in range(b):
        refs = []
        for j in range(c):
            wj, xi = w[i, j].numpy(), x[i].numpy()
            target = abs(float(margin[i, j])) + 1e-4
            reach = np.where(wj > 0, wj * (1 - xi), wj * (0 - xi)).sum()
            if reach >= target:
                refs.append(_box_qp(wj, target, xi, 0.0, 1.0))
        best = min(refs, key=np.linalg.norm)
        np.testing.assert_allclose(steps[i].numpy(), best, atol=1e-6)


def test_exact_box_step_is_exact_on_a_linear_classifier():
    # For a linear classifier the linearisation is the classifier: one exact box step lands on
    # the nearest boundary point inside the box (overshoot 0), where the clipped iteration
    # needs several steps.
    lin = linear(10, 3, seed=4)
    x = torch.rand(16, 10, generator=torch.Generator().manual_seed(5), dtype=DT)
    exact = deepfool(lin, x, bounds=(0.0, 1.0), box_step="exact", overshoot=0.0, max_iter=100)
    clip = deepfool(lin, x, bounds=(0.0, 1.0), overshoot=0.0, max_iter=100)
    ok = exact.converged & clip.converged
    assert ok.sum() >= 8
    assert exact.x_adv.min() >= 0 and exact.x_adv.max() <= 1
    assert (exact.iterations[ok] == 1).all()
    assert (clip.iterations[ok] > 1).any()
    f = lin(x)
    k = f.argmax(1)
    W = lin.weight.detach()
    for i in ok.nonzero().flatten().tolist():
        dists = []
        for j in range(3):
            if j == k[i]:
                continue
            wj = (W[j] - W[k[i]]).numpy()
            target = float(f[i, k[i]] - f[i, j]) + 1e-4
            if np.where(wj > 0, wj * (1 - x[i].numpy()), -wj * x[i].numpy()).sum() >= target:
                dists.append(np.linalg.norm(_box_qp(wj, target, x[i].numpy(), 0.0, 1.0)))
        assert float(exact.norms[i]) == pytest.approx(min(dists), rel=1e-6)


def test_non_convergence_is_reported_not_dropped():
    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(3, dtype=DT))

        def forward(self, x):
            return self.w.expand(x.shape[0], 3) + torch.tensor([2.0, -1.0, 0.0], dtype=DT)

    x = torch.randn(4, 5, dtype=DT)
    with pytest.warns(UserWarning, match="did not change the label of 4 of 4"):
        res = deepfool(Constant(), x, max_iter=3)
    assert res.r.shape == x.shape and not res.converged.any()
    with pytest.warns(UserWarning, match="did not converge"):
        bp = boundary_points(Constant(), x, deepfool_result=res)
    assert len(bp) == 4 and not bp.converged.any()


def test_probabilities_warn():
    model = nn.Sequential(linear(5, 3, seed=0), nn.Softmax(dim=1))
    with pytest.warns(UserWarning, match="look like probabilities"):
        deepfool(model, torch.randn(4, 5, dtype=DT))


def test_model_untouched():
    model = mlp()
    model.train()
    deepfool(model, torch.randn(3, 6, dtype=DT))
    assert model.training
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(
    ("x", "kw", "err", "match"),
    [
        (torch.zeros(3, 6, dtype=torch.long), {}, TypeError, "floating-point"),
        (torch.zeros(6, dtype=DT), {}, ValueError, "batch-first"),
        (torch.zeros(0, 6, dtype=DT), {}, ValueError, "empty batch"),
        (torch.full((2, 6), float("nan"), dtype=DT), {}, ValueError, "NaN"),
        (torch.zeros(2, 6, dtype=torch.float32), {}, TypeError, "dtype"),
        (torch.zeros(2, 5, dtype=DT), {}, ValueError, "input shape"),
        (torch.zeros(2, 6, dtype=DT), {"num_candidates": 1}, ValueError, "num_candidates"),
        (torch.zeros(2, 6, dtype=DT), {"overshoot": -0.1}, ValueError, "overshoot"),
        (torch.zeros(2, 6, dtype=DT), {"max_iter": 0}, ValueError, "max_iter"),
        (torch.zeros(2, 6, dtype=DT), {"bounds": (1.0, 0.0)}, ValueError, "lo < hi"),
        (torch.zeros(2, 6, dtype=DT), {"bounds": 1.0}, TypeError, "pair"),
        (torch.full((2, 6), 2.0, dtype=DT), {"bounds": (0.0, 1.0)}, ValueError, "outside"),
    ],
)
def test_bad_inputs(x, kw, err, match):
    with pytest.raises(err, match=match):
        deepfool(mlp(), x, **kw)


def test_bad_model_output():
    class Flat(nn.Module):
        def forward(self, x):
            return x.sum(1)

    with pytest.raises(ValueError, match=r"shape \(n, L\)"):
        deepfool(Flat(), torch.zeros(2, 6, dtype=DT))
    with pytest.raises(TypeError, match="nn.Module"):
        deepfool(lambda x: x, torch.zeros(2, 6, dtype=DT))


def test_boundary_points_bad_args():
    model = mlp()
    x = torch.randn(3, 6, dtype=DT)
    res = deepfool(model, x)
    with pytest.raises(TypeError, match="only when `deepfool_result` is None"):
        boundary_points(model, x, deepfool_result=res, overshoot=0.1)
    with pytest.raises(ValueError, match="is for inputs of shape"):
        boundary_points(model, x[:2], deepfool_result=res)
    with pytest.raises(ValueError, match="`tol` must be >"):
        boundary_points(model, x, tol=0.0)


def test_statistics_match_hand_computation():
    lin = linear(20, 6, seed=5)
    x = torch.randn(16, 20, generator=torch.Generator().manual_seed(9), dtype=DT)
    res = deepfool(lin, x)
    y = res.label.clone()
    y[0] = (y[0] + 1) % 6
    stats = res.statistics(x, y)
    norms = res.r.norm(dim=1)
    assert stats["n"] == 16 and stats["success_rate"] == 1.0
    assert stats["median_norm"] == pytest.approx(float(norms.median()))
    assert stats["mean_relative_norm"] == pytest.approx(float((norms / x.norm(dim=1)).mean()))
    assert stats["mean_linf"] == pytest.approx(float(res.r.abs().amax(1).mean()))
    assert stats["mean_iterations"] == 1.0
    assert stats["clean_accuracy"] == pytest.approx(15 / 16)
    with pytest.raises(ValueError, match="must have the shape of the result"):
        res.statistics(x[:3])


def test_reused_label_check_graphs_give_the_one_at_a_time_answer(monkeypatch):
    """An iteration may differentiate the graph of the previous label check, finished rows
    included (then dropped); the answer must be that of images attacked alone."""
    df = importlib.import_module("geomrob.attacks.deepfool")  # the module, not the function
    rows = []
    differences = df._differences
    monkeypatch.setattr(
        df, "_differences", lambda xg, *a: rows.append(len(xg)) or differences(xg, *a)
    )
    # a box makes the iteration slow (clipped steps), so few images finish at a time
    model = mlp(seed=1)
    x = torch.rand(60, 6, generator=torch.Generator().manual_seed(11), dtype=DT)
    res = deepfool(model, x, bounds=(0.0, 1.0))
    assert res.converged.all()
    unfinished = [int((res.iterations >= t + 1).sum()) for t in range(len(rows))]
    # one call per iteration; some carried rows that had already finished
    assert len(rows) == int(res.iterations.max())
    assert any(r > u for r, u in zip(rows, unfinished, strict=True))
    for i in range(0, len(x), 7):
        single = deepfool(model, x[i : i + 1], bounds=(0.0, 1.0))
        torch.testing.assert_close(single.r[0], res.r[i], rtol=1e-10, atol=1e-12)
        assert single.iterations[0] == res.iterations[i]
