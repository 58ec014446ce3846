"""Hessian-vector products, averaged boundary operators and Lanczos against dense references.

Problems: a quadratic classifier (its boundary Hessian is a known matrix ``A`` everywhere), the
curvature-sign example of DESIGN.md section 3, and small tanh / softplus / ReLU / BatchNorm MLPs at
real boundary points. Everything is float64 with tight tolerances unless said otherwise.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from reference import (
    Quadratic,
    assert_close,
    dense_boundary_hessians,
    dense_gradients,
    dense_operator,
    fd_matrix,
    principal_cosines,
    top_eigh,
)
from torch import nn

from geomrob.curvature import BoundaryPoints, boundary_points
from geomrob.curvature.hvp import hvp
from geomrob.curvature.lanczos import EigResult, lanczos
from geomrob.curvature.operators import (
    BoundaryHessian,
    DenseOperator,
    FunctionOperator,
    LinearOperator,
    ProjectionOperator,
)
from geomrob.models import softplus_surrogate

DT = torch.float64
# torch's forward-mode AD scripts its decompositions on the first jvp (a torch-internal warning)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")


# ---------------------------------------------------------------------------------------------
# problems


def random_symmetric(d: int, seed: int, scale: float = 0.3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(d, d, generator=g, dtype=DT)
    return scale * (B + B.T) / math.sqrt(2 * d)


def quadratic_problem(d: int = 8, n: int = 5, seed: int = 0):
    """A quadratic classifier and converged boundary points of inputs labelled 0."""
    g = torch.Generator().manual_seed(seed + 100)
    w = torch.randn(d, generator=g, dtype=DT)
    w = w / w.norm()
    A = random_symmetric(d, seed)
    model = Quadratic(w, 1.0, A)
    x = 0.3 * torch.randn(4 * n, d, generator=g, dtype=DT)
    with torch.no_grad():
        x = x[model(x).argmax(1) == 0][:n]
    assert len(x) == n
    pts = boundary_points(model, x)
    assert bool(pts.converged.all()) and bool((pts.label == 0).all())
    return model, pts, A


def mlp(
    d: int,
    act: type[nn.Module] = nn.Tanh,
    *,
    seed: int = 0,
    classes: int = 4,
    width: int = 16,
    batchnorm: bool = False,
    dtype: torch.dtype = DT,
) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(d, width)]
    if batchnorm:
        layers.append(nn.BatchNorm1d(width))
    layers += [act(), nn.Linear(width, classes)]
    model = nn.Sequential(*layers).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype))
        if batchnorm:
            model[1].running_mean.copy_(0.5 * torch.randn(width, generator=g, dtype=dtype))
            model[1].running_var.copy_(0.5 + torch.rand(width, generator=g, dtype=dtype))
    return model


def mlp_problem(d: int = 10, n: int = 6, seed: int = 0, **kw):
    model = mlp(d, seed=seed, **kw)
    x = torch.randn(
        n, d, generator=torch.Generator().manual_seed(seed + 1), dtype=kw.get("dtype", DT)
    )
    pts = boundary_points(model, x)
    assert bool(pts.converged.all())
    return model, pts


@pytest.fixture(scope="module")
def tanh_problem():
    return mlp_problem(10, 6, seed=0)


@pytest.fixture(scope="module")
def relu_problem():
    model = mlp(10, nn.ReLU, seed=3)
    x = torch.randn(6, 10, generator=torch.Generator().manual_seed(4), dtype=DT)
    pts = boundary_points(model, x)
    assert bool(pts.converged.all())
    return model, pts


def manual_points(z: torch.Tensor, x: torch.Tensor, label, adv, grad) -> BoundaryPoints:
    n = z.shape[0]
    return BoundaryPoints(
        x=x,
        z=z,
        r=z - x,
        label=torch.as_tensor(label),
        adv_label=torch.as_tensor(adv),
        grad=grad,
        residual=torch.zeros(n, dtype=z.dtype),
        converged=torch.ones(n, dtype=torch.bool),
        t=torch.ones(n, dtype=z.dtype),
    )


# ---------------------------------------------------------------------------------------------
# hvp


def test_hvp_quadratic_all_shapes():
    model, pts, A = quadratic_problem()
    n, d = pts.z.shape
    g = torch.Generator().manual_seed(5)
    V = torch.randn(n, d, generator=g, dtype=DT)
    B = torch.randn(n, 3, d, generator=g, dtype=DT)
    v = torch.randn(d, generator=g, dtype=DT)
    for mode, kw, rtol in [("exact", {}, 1e-12), ("finite_difference", {}, 1e-9)]:
        assert_close(hvp(model, pts, V, mode=mode, **kw), V @ A, rtol=rtol)
        assert_close(hvp(model, pts, B, mode=mode, **kw), B @ A, rtol=rtol)
        assert_close(hvp(model, pts, v, mode=mode, **kw), (A @ v).expand(n, d), rtol=rtol)


def test_hvp_exact_matches_dense_hessians(tanh_problem):
    model, pts = tanh_problem
    H = dense_boundary_hessians(model, pts)
    n, d = pts.z.shape
    eye = torch.eye(d, dtype=DT).expand(n, d, d)
    assert_close(hvp(model, pts, eye), H, rtol=1e-12)
    # finite differences with a small step agree to O(h^2) (plus rounding eps/h)
    assert_close(hvp(model, pts, eye, mode="finite_difference", h=1e-4), H, rtol=1e-6)
    # chunking does not change anything
    assert_close(hvp(model, pts, eye, chunk=4), H, rtol=1e-12)


def test_hvp_surrogate_is_exact_mode_on_the_softplus_copy(relu_problem):
    model, pts = relu_problem
    n, d = pts.z.shape
    V = torch.randn(n, 2, d, generator=torch.Generator().manual_seed(0), dtype=DT)
    ref = hvp(softplus_surrogate(model, 7.0), pts, V)
    assert_close(hvp(model, pts, V, mode="surrogate", beta=7.0), ref, rtol=1e-14)
    assert ref.abs().max() > 0


def test_hvp_finite_difference_zero_vector_and_homogeneity(relu_problem):
    model, pts = relu_problem
    n, d = pts.z.shape
    V = torch.randn(n, d, generator=torch.Generator().manual_seed(1), dtype=DT)
    V[0] = 0
    out = hvp(model, pts, V, mode="finite_difference", h=0.05)
    assert bool((out[0] == 0).all())
    # the step is h in input units whatever the scale of v: positively homogeneous, odd
    assert_close(hvp(model, pts, 3 * V, mode="finite_difference", h=0.05), 3 * out, rtol=1e-12)
    assert_close(hvp(model, pts, -V, mode="finite_difference", h=0.05), -out, rtol=1e-12)


def test_hvp_default_steps_are_relative_to_r(relu_problem):
    model, pts = relu_problem
    n, d = pts.z.shape
    V = torch.randn(n, d, generator=torch.Generator().manual_seed(2), dtype=DT)
    h = 0.1 * pts.r.flatten(1).norm(dim=1)
    assert_close(
        hvp(model, pts, V, mode="finite_difference"),
        hvp(model, pts, V, mode="finite_difference", h=h),
        rtol=0,
    )


def test_hvp_smoothed_symmetric_and_reproducible(tanh_problem):
    model, pts = tanh_problem
    n, d = pts.z.shape
    eye = torch.eye(d, dtype=DT).expand(n, d, d)
    M = hvp(model, pts, eye, mode="smoothed", n_samples=16, generator=0)
    assert_close(M, M.transpose(1, 2), rtol=1e-15)
    again = hvp(model, pts, eye, mode="smoothed", n_samples=16, generator=0, chunk=2)
    assert_close(again, M, rtol=0)
    other = hvp(model, pts, eye, mode="smoothed", n_samples=16, generator=1)
    assert (other - M).abs().max() > 0


def test_hvp_exact_on_relu_raises_with_alternatives(relu_problem):
    model, pts = relu_problem
    v = torch.ones(pts.z.shape[1], dtype=DT)
    with pytest.raises(ValueError, match="finite_difference.*surrogate.*smoothed"):
        hvp(model, pts, v)


class FunctionalRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(10, 16).double()
        self.b = nn.Linear(16, 3).double()

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def test_surrogate_of_functional_relu_raises():
    model = FunctionalRelu()
    z = torch.randn(3, 10, dtype=DT)
    pts = manual_points(z, z - 0.1, [0, 0, 0], [1, 1, 1], torch.ones(3, 10, dtype=DT))
    with pytest.raises(ValueError, match="ReLU called inside forward"):
        hvp(model, pts, torch.ones(10, dtype=DT), mode="surrogate", beta=5.0)
    with pytest.raises(ValueError, match="ReLU called inside forward"):
        BoundaryHessian(model, pts, mode="surrogate", beta=5.0)


def test_hvp_errors(tanh_problem):
    model, pts = tanh_problem
    n, d = pts.z.shape
    v = torch.ones(d, dtype=DT)
    with pytest.raises(TypeError, match="BoundaryPoints"):
        hvp(model, pts.z, v)
    with pytest.raises(ValueError, match="`mode` must be one of"):
        hvp(model, pts, v, mode="bogus")
    with pytest.raises(ValueError, match="`h` is an option of mode='finite_difference'"):
        hvp(model, pts, v, h=0.1)
    with pytest.raises(ValueError, match="`sigma` is an option of mode='smoothed'"):
        hvp(model, pts, v, mode="finite_difference", sigma=0.1)
    with pytest.raises(ValueError, match="needs `beta`"):
        hvp(model, pts, v, mode="surrogate")
    with pytest.raises(ValueError, match="`h` must be > 0"):
        hvp(model, pts, v, mode="finite_difference", h=-1.0)
    with pytest.raises(ValueError, match=r"one step per point"):
        hvp(model, pts, v, mode="finite_difference", h=torch.ones(n + 1, dtype=DT))
    with pytest.raises(ValueError, match="finite and > 0"):
        hvp(model, pts, v, mode="smoothed", sigma=torch.zeros(n, dtype=DT))
    with pytest.raises(TypeError, match="`orthogonal` must be a bool"):
        hvp(model, pts, v, mode="smoothed", orthogonal=1)
    with pytest.raises(TypeError, match="`n_samples` must be an int"):
        hvp(model, pts, v, mode="smoothed", n_samples=2.5)
    with pytest.raises(TypeError, match="`v` has dtype"):
        hvp(model, pts, v.float())
    with pytest.raises(ValueError, match="`v` is on meta"):
        hvp(model, pts, torch.ones(d, dtype=DT, device="meta"))
    with pytest.raises(ValueError, match=r"`v` must have shape \(n, d\)"):
        hvp(model, pts, torch.ones(n, d + 1, dtype=DT))
    with pytest.raises(TypeError, match="`v` must be a torch.Tensor"):
        hvp(model, pts, [1.0] * d)
    on_x = BoundaryPoints(**{**pts.__dict__, "r": torch.zeros_like(pts.r)})
    with pytest.raises(ValueError, match="every point has r = z - x = 0"):
        hvp(model, on_x, v, mode="finite_difference")
    bad_labels = BoundaryPoints(**{**pts.__dict__, "label": pts.label[:-1]})
    with pytest.raises(ValueError, match="`points.label` must be integer labels"):
        hvp(model, bad_labels, v)


def test_default_step_falls_back_to_median_when_r_is_zero(tanh_problem):
    model, pts = tanh_problem
    n, d = pts.z.shape
    r = pts.r.clone()
    r[0] = 0
    some = BoundaryPoints(**{**pts.__dict__, "r": r})
    V = torch.randn(n, d, generator=torch.Generator().manual_seed(3), dtype=DT)
    norms = r.norm(dim=1)
    h = 0.1 * torch.where(norms > 0, norms, norms[1:].median())
    assert_close(
        hvp(model, some, V, mode="finite_difference"),
        hvp(model, some, V, mode="finite_difference", h=h),
        rtol=0,
    )


# ---------------------------------------------------------------------------------------------
# the averaged operator


def test_operator_on_quadratic_is_A():
    model, pts, A = quadratic_problem()
    assert_close(BoundaryHessian(model, pts).dense(), A, rtol=1e-12)
    fd = BoundaryHessian(model, pts, mode="finite_difference").dense()
    assert_close(fd, A, rtol=1e-9)  # FD of an affine gradient: exact up to rounding
    op = BoundaryHessian(model, pts)
    values, vectors = top_eigh(A, 3)
    res = lanczos(op, 3, tol=1e-12, generator=0)
    assert_close(res.values, values, rtol=1e-10)
    assert principal_cosines(res.vectors, vectors).min() > 1 - 1e-10


def _stein_mse(model, pts, A, S, replicates, generator, orthogonal):
    errs = [
        (
            BoundaryHessian(
                model,
                pts,
                mode="smoothed",
                n_samples=S,
                generator=generator,
                orthogonal=orthogonal,
            ).dense()
            - A
        )
        .square()
        .sum()
        for _ in range(replicates)
    ]
    return float(torch.stack(errs).mean())


@pytest.mark.parametrize("seed", [0])  # deterministic; other seeds pass too (cost)
def test_smoothed_quadratic_stein_error_law_iid(seed):
    """i.i.d. directions: E||H_hat - A||_F^2 = ((d + 2) ||A||_F^2 + tr(A)^2) / (2 n S).

    For a quadratic the antithetic difference is exactly A e, so the estimate is unbiased and
    its mean squared error is known (hvp module doc); 40 replicates estimate it to about 10%
    (one standard error): the stated tolerance is 35%, and 16 times the samples must cut it
    about 16-fold (the 1/sqrt(S) rate of the error).
    """
    model, pts, A = quadratic_problem(d=6, n=2, seed=seed)
    n, d = pts.z.shape
    g = torch.Generator().manual_seed(seed)
    law = float(((d + 2) * A.square().sum() + A.trace() ** 2) / (2 * n))
    mse = {S: _stein_mse(model, pts, A, S, 40, g, orthogonal=False) for S in (50, 800)}
    for S, value in mse.items():
        assert value == pytest.approx(law / S, rel=0.35)
    assert 10 < mse[50] / mse[800] < 25


@pytest.mark.parametrize("seed", [0])
def test_smoothed_quadratic_stein_error_law_orthogonal(seed):
    """Orthogonal blocks of d directions with chi_d lengths, S = m d, n points:

    E||H_hat - A||_F^2 = [tr(A^2) / d + (tr(A)^2 + 2 tr(A^2)) / (d (d + 2))] / (n m),
    about (d + 2) / 2 times below the i.i.d. law. Tolerance as in the i.i.d. test (100
    replicates for the smaller budget, whose squared errors are more skewed).
    """
    model, pts, A = quadratic_problem(d=6, n=2, seed=seed)
    n, d = pts.z.shape
    g = torch.Generator().manual_seed(seed)
    tr2, tr = float(A.square().sum()), float(A.trace())
    per_block = tr2 / d + (tr**2 + 2 * tr2) / (d * (d + 2))
    iid = ((d + 2) * tr2 + tr**2) / 2
    for m, replicates in ((1, 100), (16, 40)):
        S = m * d
        mse = _stein_mse(model, pts, A, S, replicates, g, orthogonal=True)
        assert mse == pytest.approx(per_block / (n * m), rel=0.35)
        assert mse < iid / (n * S) / 2.5


def test_stein_directions_orthogonal_blocks_and_reproducible():
    from geomrob.curvature.hvp import stein_directions

    kw = {"device": torch.device("cpu"), "dtype": DT}
    E = stein_directions(11, 4, generator=torch.Generator().manual_seed(0), orthogonal=True, **kw)
    again = stein_directions(
        11, 4, generator=torch.Generator().manual_seed(0), orthogonal=True, **kw
    )
    assert E.shape == (11, 4) and torch.equal(E, again)
    for start in (0, 4, 8):
        block = E[start : start + 4]
        gram = block @ block.T
        assert_close(gram - torch.diag(gram.diagonal()), torch.zeros_like(gram), rtol=0, atol=1e-12)
    # the lengths are those of the Gaussian draws (chi_d), the directions rotate
    G = torch.randn(11, 4, generator=torch.Generator().manual_seed(0), dtype=DT)
    assert_close(E.norm(dim=1), G.norm(dim=1), rtol=1e-13)
    iid = stein_directions(
        11, 4, generator=torch.Generator().manual_seed(0), orthogonal=False, **kw
    )
    assert torch.equal(iid, G)


def test_curvature_sign_design_example():
    """F(z) = z_1 - 1 + (a/2) z_2^2 at z = (1, 0) seen from x = 0: kappa(e_2) = a."""
    for a in (0.7, -1.3):
        model = Quadratic(
            torch.tensor([1.0, 0.0], dtype=DT), 1.0, torch.diag(torch.tensor([0.0, a], dtype=DT))
        )
        pts = boundary_points(model, torch.zeros(1, 2, dtype=DT))
        assert_close(pts.z, torch.tensor([[1.0, 0.0]], dtype=DT), rtol=0, atol=1e-12)
        op = BoundaryHessian(model, pts, project=True, normalize=True)
        e2 = torch.tensor([0.0, 1.0], dtype=DT)
        kappa = float(e2 @ (op @ e2))
        assert kappa == pytest.approx(a, abs=1e-12)
        # positive curvature: the boundary z_1 = 1 - (a/2) z_2^2 bends towards x = 0
        t = 0.5
        on_boundary = torch.tensor([[1.0 - a / 2 * t**2, t]], dtype=DT)
        assert abs(float(model(on_boundary)[0, 1].detach())) < 1e-12
        assert (float(on_boundary[0, 0]) < 1.0) == (a > 0)
        # the normal direction is projected out
        assert float((op @ torch.tensor([1.0, 0.0], dtype=DT)).abs().max()) < 1e-14


@pytest.mark.parametrize(
    "project,normalize", [(False, False), (True, False), (False, True), (True, True)]
)
def test_operator_matches_dense_reference(tanh_problem, project, normalize):
    model, pts = tanh_problem
    ref = dense_operator(model, pts, project=project, normalize=normalize)
    for chunk in (None, 1, 4):
        op = BoundaryHessian(model, pts, project=project, normalize=normalize, chunk=chunk)
        assert_close(op.dense(), ref, rtol=1e-10)


def test_operator_softplus_model():
    model, pts = mlp_problem(12, 5, seed=7, act=nn.Softplus)
    ref = dense_operator(model, pts, project=True, normalize=True)
    assert_close(BoundaryHessian(model, pts, project=True, normalize=True).dense(), ref, rtol=1e-10)


@pytest.mark.parametrize("mode", ["exact", "smoothed", "finite_difference"])
def test_matvec_block_and_scipy_agree_with_dense(tanh_problem, mode):
    model, pts = tanh_problem
    kw = {"smoothed": {"generator": 0, "n_samples": 8}}.get(mode, {})
    op = BoundaryHessian(model, pts, mode=mode, project=True, normalize=True, **kw)
    M = op.dense()
    if mode == "exact":
        assert_close(M, dense_operator(model, pts, project=True, normalize=True), rtol=1e-10)
    d = op.shape[0]
    g = torch.Generator().manual_seed(1)
    v = torch.randn(d, generator=g, dtype=DT)
    V = torch.randn(3, d, generator=g, dtype=DT)
    if mode == "finite_difference":
        # directional differences: linear only up to O(h^2), so compare with single products
        rows = torch.stack([op @ V[i] for i in range(3)])
        assert_close(op @ V, rows, rtol=1e-12)
        sop = op.to_scipy()
        assert_close(torch.from_numpy(sop.matvec(v.numpy())), op @ v, rtol=1e-14)
        assert_close(torch.from_numpy(sop.matmat(V.T.numpy())).T, rows, rtol=1e-12)
        return
    assert_close(op @ v, M @ v, rtol=1e-12)
    assert_close(op @ V, V @ M.T, rtol=1e-12)
    sop = op.to_scipy()
    assert_close(torch.from_numpy(sop.matvec(v.numpy())), M @ v, rtol=1e-12)
    assert_close(torch.from_numpy(sop.matmat(V.T.numpy())), M @ V.T, rtol=1e-12)
    assert_close(torch.from_numpy(sop.rmatvec(v.numpy())), M @ v, rtol=1e-12)


@pytest.mark.parametrize("mode", ["exact", "smoothed"])
def test_symmetry(tanh_problem, mode):
    model, pts = tanh_problem
    kw = {"generator": 0, "n_samples": 8} if mode == "smoothed" else {}
    for project in (False, True):
        op = BoundaryHessian(model, pts, mode=mode, project=project, normalize=True, **kw)
        assert op.symmetric
        g = torch.Generator().manual_seed(2)
        u, v = torch.randn(2, op.shape[0], generator=g, dtype=DT)
        lhs, rhs = float(u @ (op @ v)), float(v @ (op @ u))
        assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("mode", ["exact", "smoothed", "finite_difference", "surrogate"])
def test_chunk_invariance(relu_problem, tanh_problem, mode):
    model, pts = relu_problem if mode in ("finite_difference", "surrogate") else tanh_problem
    kw = {
        "smoothed": {"generator": 3, "n_samples": 4},
        "surrogate": {"beta": 5.0},
    }.get(mode, {})
    whole = BoundaryHessian(model, pts, mode=mode, project=True, normalize=True, **kw)
    one = BoundaryHessian(model, pts, mode=mode, project=True, normalize=True, chunk=1, **kw)
    V = torch.randn(2, whole.shape[0], generator=torch.Generator().manual_seed(0), dtype=DT)
    assert_close(one @ V, whole @ V, rtol=1e-12)


def test_smoothed_matches_explicit_stein_formula(tanh_problem):
    """Both storages (factors when d > 2 n S, else dense) equal the Stein formula by hand."""
    model, pts = tanh_problem
    sub = pts.select(torch.tensor([0, 1]))
    normals = dense_gradients(model, sub)
    d = sub.z.shape[1]
    for S in (2, 3):  # d = 10 > 2 n S = 8: factors; 10 <= 12: dense
        op = BoundaryHessian(
            model, sub, mode="smoothed", n_samples=S, generator=0, project=True, orthogonal=False
        )
        assert (op._stein_factors is not None) == (S == 2)
        g = torch.Generator().manual_seed(0)
        ref = torch.zeros(d, d, dtype=DT)
        for i in range(2):
            E = torch.randn(S, d, generator=g, dtype=DT)  # drawn point by point, in order
            sig = 0.1 * sub.r[i].norm()
            grads = []
            for sign in (1, -1):
                z = sub.z[i] + sign * sig * E
                moved = manual_points(z, z, [int(sub.label[i])] * S, [int(sub.adv_label[i])] * S, z)
                grads.append(dense_gradients(model, moved))
            D = (grads[0] - grads[1]) / (2 * sig)
            n_i = normals[i] / normals[i].norm()
            P = torch.eye(d, dtype=DT) - torch.outer(n_i, n_i)
            M = P @ (D.T @ E) @ P / S
            ref += (M + M.T) / 2
        assert_close(op.dense(), ref / 2, rtol=1e-10)


def test_batchnorm_eval_model_and_mode_restored():
    model, pts = mlp_problem(8, 4, seed=2, batchnorm=True)
    model.train()
    op = BoundaryHessian(model, pts, project=True, normalize=True)
    M = op.dense()
    assert model.training and model[1].training
    model.eval()
    assert_close(M, dense_operator(model, pts, project=True, normalize=True), rtol=1e-10)


def test_float32_smoke():
    model64, pts64 = mlp_problem(10, 4, seed=5)
    model32 = copy.deepcopy(model64).float()
    pts32 = BoundaryPoints(
        **{k: (v.float() if v.is_floating_point() else v) for k, v in pts64.__dict__.items()}
    )
    op = BoundaryHessian(model32, pts32, project=True, normalize=True)
    assert op.dtype == torch.float32
    ref = dense_operator(model64, pts64, project=True, normalize=True)
    assert_close(op.dense(), ref, rtol=1e-4)
    res = lanczos(op, 2, tol=1e-4, generator=0)
    assert res.vectors.dtype == torch.float32
    assert_close(res.values, top_eigh(ref, 2)[0], rtol=1e-4)


def test_finite_difference_asymmetry_is_second_order(tanh_problem):
    """On a smooth model ||B_h - B_h^T|| and ||B_h - H|| are O(h^2) (B_h: FD columns A e_j)."""
    model, pts = tanh_problem
    H = dense_operator(model, pts)
    asym, err = [], []
    for h in (0.04, 0.02, 0.01):
        B = BoundaryHessian(model, pts, mode="finite_difference", h=h).dense()
        assert_close(B, fd_matrix(model, pts, h), rtol=1e-12)
        asym.append(float((B - B.T).norm() / H.norm()))
        err.append(float((B - H).norm() / H.norm()))
    for series in (asym, err):
        for coarse, fine in zip(series, series[1:], strict=False):
            assert 3.5 < coarse / fine < 4.5
    assert asym[-1] < 1e-3


def test_finite_difference_is_refused_by_lanczos_then_symmetrized(relu_problem):
    model, pts = relu_problem
    op = BoundaryHessian(model, pts, mode="finite_difference", project=True, normalize=True)
    assert not op.symmetric
    with pytest.raises(ValueError, match=r"symmetrized\(\).*smoothed"):
        lanczos(op, 2)
    B = op.dense()
    assert float((B - B.T).norm() / B.norm()) > 0.1  # ReLU: far from symmetric
    sym = op.symmetrized()
    assert sym.symmetric
    assert_close(sym.dense(), (B + B.T) / 2, rtol=1e-15)
    res = lanczos(sym, 3, tol=1e-10, generator=0)
    values, vectors = top_eigh((B + B.T) / 2, 3)
    assert_close(res.values, values, rtol=1e-9)
    assert principal_cosines(res.vectors, vectors).min() > 1 - 1e-9


def test_exact_operator_on_relu_raises(relu_problem):
    model, pts = relu_problem
    with pytest.raises(ValueError, match="mode='finite_difference'.*mode='surrogate'.*smoothed"):
        BoundaryHessian(model, pts)
    BoundaryHessian(model, pts, mode="smoothed", n_samples=2, generator=0)  # fine


def test_operator_errors(tanh_problem):
    model, pts = tanh_problem
    with pytest.raises(TypeError, match="`project` must be a bool"):
        BoundaryHessian(model, pts, project=1)
    with pytest.raises(ValueError, match="`chunk` must be >= 1"):
        BoundaryHessian(model, pts, chunk=0)
    with pytest.raises(ValueError, match="needs an initialised torch.distributed"):
        BoundaryHessian(model, pts, distributed=True)
    flat = Quadratic(torch.zeros(3, dtype=DT), 1.0, torch.eye(3, dtype=DT))
    z = torch.zeros(1, 3, dtype=DT)
    zero_grad = manual_points(z, z - 1, [0], [1], torch.zeros(1, 3, dtype=DT))
    with pytest.raises(ValueError, match="grad F is zero at points"):
        BoundaryHessian(flat, zero_grad, normalize=True)
    op = BoundaryHessian(model, pts)
    d = op.shape[0]
    with pytest.raises(TypeError, match="`v` must be a torch.Tensor"):
        op.matvec([0.0] * d)
    with pytest.raises(ValueError, match=r"`v` must have shape \(10,\) or \(b, 10\)"):
        op.matvec(torch.ones(d + 1, dtype=DT))
    with pytest.raises(TypeError, match="`v` has dtype torch.float32"):
        op.matvec(torch.ones(d))
    with pytest.raises(ValueError, match="`v` is on meta"):
        op.matvec(torch.ones(d, dtype=DT, device="meta"))
    with pytest.raises(ValueError, match="exceeds max_dim=5"):
        op.dense(max_dim=5)


def test_not_converged_points_warn(tanh_problem):
    model, pts = tanh_problem
    conv = pts.converged.clone()
    conv[0] = False
    with pytest.warns(UserWarning, match="1 of 6 points are marked not converged"):
        BoundaryHessian(model, BoundaryPoints(**{**pts.__dict__, "converged": conv}))


def test_distributed_single_process_group(tanh_problem, tmp_path):
    """The all-reduce hook with a one-process gloo group: same result; an empty shard is fine."""
    dist = torch.distributed
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    model, pts = tanh_problem
    local = BoundaryHessian(model, pts, project=True, normalize=True)
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        op = BoundaryHessian(model, pts, project=True, normalize=True)
        assert op.distributed
        assert_close(op.dense(), local.dense(), rtol=1e-14)
        empty = pts.select(torch.zeros(len(pts), dtype=torch.bool))
        with pytest.raises(ValueError, match="`points` is empty"):
            BoundaryHessian(model, empty, project=True)
        off = BoundaryHessian(model, pts, distributed=False)
        assert not off.distributed
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# lazy algebra and generic operators


def test_lazy_algebra_and_projection():
    g = torch.Generator().manual_seed(0)
    d = 7
    A = random_symmetric(d, 1)
    B = torch.randn(d, d, generator=g, dtype=DT)
    a, b = DenseOperator(A), DenseOperator(B)
    assert a.symmetric and not b.symmetric
    u = torch.linalg.qr(torch.randn(d, 2, generator=g, dtype=DT)).Q.T
    P = ProjectionOperator(u, complement=True)
    Pm = torch.eye(d, dtype=DT) - u.T @ u
    PAP = P @ a @ P
    assert PAP.symmetric and not (P @ b @ P).symmetric and not (a @ P).symmetric
    assert_close(PAP.dense(), Pm @ A @ Pm, rtol=1e-14)
    assert_close((2 * a - b / 4 + (-a)).dense(), A - B / 4, rtol=1e-14)
    assert_close((a + b).dense(), A + B, rtol=1e-14)
    assert_close(ProjectionOperator(u).dense(), u.T @ u, rtol=1e-14)
    f = FunctionOperator(lambda v: A @ v, d, like=A, symmetric=True)
    assert_close(f.dense(), A, rtol=1e-14)
    fb = FunctionOperator(lambda v: A @ v, d, like=A, matmat=lambda V: V @ A.T)
    assert_close(fb @ B, B @ A.T, rtol=1e-14)
    assert "DenseOperator(shape=(7, 7)" in repr(a)
    assert a.__add__(3) is NotImplemented and a.__mul__("x") is NotImplemented
    assert a.__matmul__(3) is NotImplemented and a.__sub__(1) is NotImplemented
    assert a.__truediv__(None) is NotImplemented


def test_operator_class_errors():
    A = torch.eye(3, dtype=DT)
    with pytest.raises(ValueError, match="must be square"):
        DenseOperator(torch.ones(2, 3, dtype=DT))
    with pytest.raises(TypeError, match="must be floating"):
        DenseOperator(torch.eye(3, dtype=torch.long))
    with pytest.raises(ValueError, match="is not symmetric"):
        DenseOperator(torch.triu(torch.ones(3, 3, dtype=DT)), symmetric=True)
    with pytest.raises(TypeError, match="`matvec` must be callable"):
        FunctionOperator(None, 3, like=A)
    with pytest.raises(ValueError, match="m <= d"):
        ProjectionOperator(torch.ones(4, 3, dtype=DT))
    with pytest.raises(ValueError, match="must be orthonormal"):
        ProjectionOperator(torch.ones(1, 3, dtype=DT))
    a = DenseOperator(A)
    with pytest.raises(ValueError, match="shapes differ"):
        a + DenseOperator(torch.eye(4, dtype=DT))
    with pytest.raises(TypeError, match="dtypes differ"):
        a + DenseOperator(torch.eye(3))
    with pytest.raises(ValueError, match="devices differ"):
        a + DenseOperator(torch.eye(3, dtype=DT, device="meta"), symmetric=False)
    with pytest.raises(TypeError, match="Expected LinearOperators"):
        from geomrob.curvature.operators import SumOperator

        SumOperator([a, A])
    with pytest.raises(NotImplementedError):
        LinearOperator(3, dtype=DT, device="cpu", symmetric=True).matvec(torch.ones(3, dtype=DT))


# ---------------------------------------------------------------------------------------------
# lanczos


def separated_matrix(d: int, seed: int) -> torch.Tensor:
    """Symmetric, eigenvalues spread over [-3, 5] with gaps >= 0.5 * 8 / d."""
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=DT)).Q
    lam = torch.linspace(-3, 5, d, dtype=DT) + (4 / d) * (
        torch.rand(d, generator=g, dtype=DT) - 0.5
    )
    return (Q * lam) @ Q.T


@pytest.mark.parametrize("backend", ["torch", "scipy"])
@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
@pytest.mark.parametrize("k", [1, 5, 40])
def test_lanczos_matches_eigh(backend, which, k):
    d = 64
    A = separated_matrix(d, seed=k)
    A = (A + A.T) / 2
    res = lanczos(DenseOperator(A), k, which=which, tol=1e-10, backend=backend, generator=0)
    values, vectors = top_eigh(A, k, which)
    assert isinstance(res, EigResult) and res.vectors.shape == (k, d)
    assert_close(res.values, values, rtol=1e-8)
    dots = (res.vectors * vectors).sum(1).abs()
    assert float(dots.min()) >= 1 - 1e-8
    gram = res.vectors @ res.vectors.T
    assert_close(gram, torch.eye(k, dtype=DT), rtol=0, atol=1e-12)
    scale = float(A.abs().max())
    assert float(res.residuals.max()) <= 1e-10 * float(torch.linalg.eigvalsh(A).abs().max())
    assert bool(res.converged.all()) and res.matvecs > k and scale > 0


def test_lanczos_thick_restart_large_k():
    d = 150
    A = separated_matrix(d, seed=11)
    A = (A + A.T) / 2
    res = lanczos(DenseOperator(A), 40, which="SA", tol=1e-10, ncv=55, generator=0)
    assert res.restarts > 0
    values, vectors = top_eigh(A, 40, "SA")
    assert_close(res.values, values, rtol=1e-8)
    assert float((res.vectors * vectors).sum(1).abs().min()) >= 1 - 1e-8
    small = lanczos(DenseOperator(A), 3, tol=1e-10, ncv=8, max_iter=1000, generator=0)
    assert small.restarts > 3
    assert_close(small.values, top_eigh(A, 3)[0], rtol=1e-8)


def test_lanczos_on_boundary_hessian(tanh_problem):
    model, pts = tanh_problem
    op = BoundaryHessian(model, pts, project=True, normalize=True)
    ref = dense_operator(model, pts, project=True, normalize=True)
    for which in ("LA", "SA"):
        values, vectors = top_eigh(ref, 3, which)
        for backend in ("torch", "scipy"):
            res = lanczos(op, 3, which=which, tol=1e-10, backend=backend, generator=0)
            assert_close(res.values, values, rtol=1e-8)
            assert principal_cosines(res.vectors, vectors).min() > 1 - 1e-8
    # the normal-free shape operator of one point has the normal in its kernel
    one = BoundaryHessian(model, pts.select(torch.tensor([0])), project=True, normalize=True)
    n0 = dense_gradients(model, pts.select(torch.tensor([0])))[0]
    assert float((one @ (n0 / n0.norm())).abs().max()) < 1e-13


def test_lanczos_reproducible_and_generator_dependent():
    A = separated_matrix(50, seed=0)
    op = DenseOperator((A + A.T) / 2)
    first = lanczos(op, 4, ncv=8, generator=torch.Generator().manual_seed(3))
    again = lanczos(op, 4, ncv=8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first.values, again.values) and torch.equal(first.vectors, again.vectors)
    assert first.matvecs == again.matvecs
    other = lanczos(op, 4, ncv=8, generator=4)
    assert not torch.equal(first.vectors, other.vectors)
    d = first.to_dict()
    assert set(d) == {"values", "vectors", "residuals", "matvecs", "converged", "restarts"}


def test_lanczos_breakdown_and_repeated_eigenvalues():
    """Few distinct eigenvalues: the Krylov space is invariant after 2 steps; restarts fill in."""
    d = 12
    Q = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0), dtype=DT)).Q
    lam = torch.tensor([5.0] * 3 + [1.0] * 9, dtype=DT)
    op = DenseOperator(((Q * lam) @ Q.T + ((Q * lam) @ Q.T).T) / 2)
    res = lanczos(op, 3, tol=1e-10, generator=0)
    assert_close(res.values, torch.full((3,), 5.0, dtype=DT), rtol=1e-12)
    top = Q[:, :3].T
    assert principal_cosines(res.vectors, top).min() > 1 - 1e-10
    ident = DenseOperator(torch.eye(d, dtype=DT))
    res = lanczos(ident, 4, generator=0)
    assert_close(res.values, torch.ones(4, dtype=DT), rtol=1e-14)
    assert_close(res.vectors @ res.vectors.T, torch.eye(4, dtype=DT), rtol=0, atol=1e-14)


def test_lanczos_k_equals_d_and_zero_operator():
    A = separated_matrix(6, seed=2)
    A = (A + A.T) / 2
    res = lanczos(DenseOperator(A), 6, which="SA", generator=0)
    assert_close(res.values, torch.linalg.eigvalsh(A), rtol=1e-12)
    zero = lanczos(DenseOperator(torch.zeros(5, 5, dtype=DT)), 2, generator=0)
    assert bool((zero.values == 0).all()) and bool(zero.converged.all())


def test_lanczos_budget_warns():
    A = separated_matrix(100, seed=5)
    op = DenseOperator((A + A.T) / 2)
    with pytest.warns(RuntimeWarning, match="did not reach"):
        res = lanczos(op, 4, ncv=6, max_iter=10, tol=1e-12, generator=0)
    assert not bool(res.converged.all())
    assert res.matvecs == 10 + 4


def test_lanczos_errors():
    A = separated_matrix(8, seed=0)
    op = DenseOperator((A + A.T) / 2)
    with pytest.raises(TypeError, match="must be a geomrob LinearOperator"):
        lanczos(A, 2)
    with pytest.raises(ValueError, match="needs a symmetric operator"):
        lanczos(DenseOperator(torch.triu(A)), 2)
    with pytest.raises(ValueError, match="`k` must be <= 8"):
        lanczos(op, 9)
    with pytest.raises(ValueError, match="eigsh needs k < d"):
        lanczos(op, 8, backend="scipy")
    with pytest.raises(ValueError, match="`k` must be >= 1"):
        lanczos(op, 0)
    with pytest.raises(ValueError, match="`which` must be one of"):
        lanczos(op, 2, which="BE")
    with pytest.raises(ValueError, match="`backend` must be one of"):
        lanczos(op, 2, backend="arpack")
    with pytest.raises(ValueError, match="`tol` must be > 0"):
        lanczos(op, 2, tol=0.0)
    with pytest.raises(ValueError, match=r"`ncv` must be >= min\(k \+ 2, d\) = 4"):
        lanczos(op, 2, ncv=3)
    with pytest.raises(ValueError, match="`ncv` must be <= 8"):
        lanczos(op, 2, ncv=9)
    with pytest.raises(ValueError, match="`max_iter` must be >= 2"):
        lanczos(op, 2, max_iter=1)
    big = separated_matrix(120, seed=1)
    with (
        pytest.raises(RuntimeError, match="scipy eigsh did not converge"),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        lanczos(
            DenseOperator((big + big.T) / 2),
            2,
            backend="scipy",
            ncv=4,
            max_iter=2,
            tol=1e-14,
            generator=0,
        )
