"""Subspaces (S_c, S_f, random), sampling, principal angles and the average curvature K_S.

Problems: quadratic classifiers ``F(x) = w.x - c + x^T A x / 2`` whose boundary Hessian is ``A``
everywhere (so S_c is the top eigenspace of A and K_S has closed forms), the curvature-sign
example of DESIGN.md section 3, and small tanh / ReLU MLPs at real boundary points. float64.
Monte Carlo estimates are compared within 5 standard errors computed from the closed form.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from reference import Quadratic, assert_close, dense_operator, principal_cosines, top_eigh
from torch import nn

from geomrob.curvature import BoundaryPoints, boundary_points
from geomrob.subspaces import (
    CurvatureProfile,
    CurvatureResult,
    Subspace,
    average_curvature,
    curvature_profile,
    curved_subspace,
    normal_subspace,
    principal_angles,
    random_subspace,
    sample_subspace,
)

DT = torch.float64
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")


def separated_symmetric(d: int, seed: int) -> torch.Tensor:
    """Symmetric with eigenvalues spread over [-1, 1.5] (gaps >= 2.5 / (2 d))."""
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=DT)).Q
    lam = torch.linspace(-1.0, 1.5, d, dtype=DT)
    A = (Q * lam) @ Q.T
    return (A + A.T) / 2


def inputs_labelled_zero(model: nn.Module, n: int, d: int, seed: int, mask=None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(20 * n, d, generator=g, dtype=DT)
    if mask is not None:
        x = x * mask
    with torch.no_grad():
        x = x[model(x).argmax(1) == 0][:n]
    assert len(x) == n
    return x


def quadratic_problem(d: int = 8, n: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed + 100)
    w = torch.randn(d, generator=g, dtype=DT)
    A = 0.3 * separated_symmetric(d, seed)
    model = Quadratic(w / w.norm(), 1.0, A)
    x = inputs_labelled_zero(model, n, d, seed)
    pts = boundary_points(model, x)
    assert bool(pts.converged.all())
    return model, x, pts, A


def diagonal_problem(n: int = 4):
    """``w = e_0``, ``A = diag(0, 3, 2, 1, -1, 0.5, 0.2, -0.3) / 4``, inputs off ``e_1..e_3``.

    DeepFool steps along ``w + A x``, so the boundary points and their normals stay orthogonal to
    ``span(e_1, e_2, e_3)``, the top eigenspace of ``A``: there ``P v = v``.
    """
    d = 8
    lam = torch.tensor([0.0, 3.0, 2.0, 1.0, -1.0, 0.5, 0.2, -0.3], dtype=DT) / 4
    w = torch.zeros(d, dtype=DT)
    w[0] = 1.0
    model = Quadratic(w, 1.0, torch.diag(lam))
    mask = torch.ones(d, dtype=DT)
    mask[1:4] = 0
    x = inputs_labelled_zero(model, n, d, seed=3, mask=mask)
    pts = boundary_points(model, x)
    assert bool(pts.converged.all())
    assert float(pts.z.flatten(1)[:, 1:4].abs().max()) == 0.0
    return model, pts, lam


def with_unconverged(pts: BoundaryPoints, index: int) -> BoundaryPoints:
    conv = pts.converged.clone()
    conv[index] = False
    return BoundaryPoints(**{**pts.__dict__, "converged": conv})


@pytest.fixture(scope="module")
def tanh_problem():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 4)).to(DT)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=DT))
    x = torch.randn(6, 10, generator=torch.Generator().manual_seed(1), dtype=DT)
    pts = boundary_points(model, x)
    assert bool(pts.converged.all())
    return model, x, pts


def tangent_form_reference(A: torch.Tensor, grads: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """``(n, b)``: ``(P_i v)^T A (P_i v) / ||P_i v||^2`` with explicit projection matrices."""
    d = A.shape[0]
    out = torch.empty(grads.shape[0], V.shape[0], dtype=DT)
    for i, g in enumerate(grads):
        nrm = g / g.norm()
        P = torch.eye(d, dtype=DT) - torch.outer(nrm, nrm)
        for j, v in enumerate(V):
            u = P @ v
            out[i, j] = (u @ A @ u) / (u @ u)
    return out


def sphere_form_std(B: torch.Tensor) -> float:
    """Standard deviation of ``u^T B u`` for ``u`` uniform on the unit sphere of ``R^k``."""
    k = B.shape[0]
    return math.sqrt(
        2 / (k + 2) * (float(torch.trace(B @ B)) / k - (float(torch.trace(B)) / k) ** 2)
    )


# ---------------------------------------------------------------------------------------------
# curved subspace


@pytest.mark.parametrize("backend", ["torch", "scipy"])
@pytest.mark.parametrize("mode", ["exact", "finite_difference"])
def test_curved_subspace_quadratic_is_top_eigenspace(mode, backend):
    model, x, pts, A = quadratic_problem()
    s = curved_subspace(model, x, 3, mode=mode, tol=1e-10, backend=backend, generator=0)
    values, vectors = top_eigh(A, 3)
    assert isinstance(s, Subspace) and s.kind == "curved" and s.mode == mode
    assert s.m == 3 and s.d == 8 and s.n_points == 6 and len(s.excluded) == 0
    assert float(principal_angles(s, vectors).min()) >= 1 - 1e-8
    assert_close(s.values, values, rtol=1e-8)
    assert float(s.residuals.max()) <= 1e-9 * float(A.abs().max())
    assert s.info["symmetrized"] if mode == "finite_difference" else "symmetrized" not in s.info
    assert s.matvecs >= (8 if mode == "finite_difference" else 3)


def test_curved_subspace_shape_operator_matches_dense_reference(tanh_problem):
    model, x, pts = tanh_problem
    ref = dense_operator(model, pts, project=True, normalize=True)
    values, vectors = top_eigh(ref, 4)
    s = curved_subspace(model, x, 4, project=True, normalize=True, tol=1e-10, generator=0)
    assert float(principal_angles(s.basis, vectors).min()) >= 1 - 1e-8
    assert_close(s.values, values, rtol=1e-8)
    # the same from given points (x may be passed too when it is points.x), chunked
    again = curved_subspace(
        model, x, 4, points=pts, project=True, normalize=True, tol=1e-10, generator=0, chunk=2
    )
    assert_close(again.values, s.values, rtol=1e-12)
    assert again.info["project"] and again.info["normalize"]


def test_curved_subspace_reproducible_smoothed(tanh_problem):
    model, x, pts = tanh_problem
    a = curved_subspace(model, None, 3, points=pts, mode="smoothed", n_samples=8, generator=5)
    b = curved_subspace(model, None, 3, points=pts, mode="smoothed", n_samples=8, generator=5)
    assert torch.equal(a.basis, b.basis) and torch.equal(a.values, b.values)
    assert a.info["n_samples"] == 8


def test_curved_subspace_excludes_unconverged_points_with_warning(tanh_problem):
    model, x, pts = tanh_problem
    bad = with_unconverged(pts, 2)
    with pytest.warns(UserWarning, match="1 of 6 boundary points did not converge and are excl"):
        s = curved_subspace(model, None, 3, points=bad, tol=1e-10, generator=0)
    assert s.excluded.tolist() == [2] and s.n_points == 5
    ref = curved_subspace(model, None, 3, points=pts.select(pts.converged & bad.converged),
                          tol=1e-10, generator=0)  # fmt: skip
    assert_close(s.values, ref.values, rtol=1e-12)
    assert float(principal_angles(s, ref).min()) >= 1 - 1e-12
    none = BoundaryPoints(**{**pts.__dict__, "converged": torch.zeros(6, dtype=torch.bool)})
    with pytest.raises(ValueError, match="None of the 6 boundary points converged"):
        curved_subspace(model, None, 2, points=none)


def test_curved_subspace_errors(tanh_problem):
    model, x, pts = tanh_problem
    with pytest.raises(ValueError, match="`m` must be <= d = 10"):
        curved_subspace(model, None, 11, points=pts)
    with pytest.raises(ValueError, match="`m` must be >= 1"):
        curved_subspace(model, None, 0, points=pts)
    with pytest.raises(ValueError, match="Give the inputs `x` or their boundary points"):
        curved_subspace(model, None, 2)
    with pytest.raises(ValueError, match="`x` and `points` disagree"):
        curved_subspace(model, x + 1, 2, points=pts)
    with pytest.raises(TypeError, match="`points` must be a BoundaryPoints"):
        curved_subspace(model, None, 2, points=pts.z)
    with pytest.raises(TypeError, match="`x` must be a torch.Tensor"):
        curved_subspace(model, [[0.0] * 10], 2)
    with pytest.raises(ValueError, match="`x` must be a non-empty batch"):
        curved_subspace(model, x[:0], 2)
    with pytest.raises(ValueError, match="`mode` must be one of"):
        curved_subspace(model, None, 2, points=pts, mode="bogus")
    with pytest.raises(ValueError, match="`backend` must be one of"):
        curved_subspace(model, None, 2, points=pts, backend="arpack")
    with pytest.raises(TypeError, match="`project` must be a bool"):
        curved_subspace(model, None, 2, points=pts, project=1)
    with pytest.raises(ValueError, match="needs `beta`"):
        curved_subspace(model, None, 2, points=pts, mode="surrogate")
    with pytest.raises(ValueError, match="`points` is empty"):
        curved_subspace(model, None, 2, points=pts.select(torch.zeros(6, dtype=torch.bool)))


def test_curved_subspace_finite_difference_above_dense_limit_suggests_smoothed():
    d = 4097
    lin = nn.Linear(d, 2).to(DT)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[1, 0] = 1.0
        lin.bias.copy_(torch.tensor([0.0, -1.0], dtype=DT))
    pts = boundary_points(lin, torch.zeros(1, d, dtype=DT))
    with pytest.raises(ValueError, match=r"DENSE_LIMIT = 4096; got d = 4097.*mode='smoothed'"):
        curved_subspace(lin, None, 2, points=pts, mode="finite_difference")


# ---------------------------------------------------------------------------------------------
# average curvature


def test_average_curvature_closed_form_on_orthogonal_eigenspace():
    """S = span(e_1, e_2) is tangent at every point: forms are exactly sum_k lam_k c_k^2."""
    model, pts, lam = diagonal_problem()
    U = torch.eye(8, dtype=DT)[1:3]
    res = average_curvature(model, pts, U, n_dirs=3000, generator=0)
    assert isinstance(res, CurvatureResult) and res.per_direction.shape == (4, 3000)
    c = res.coefficients
    assert_close((c * c).sum(1), torch.ones(3000, dtype=DT), rtol=1e-14)
    exact = (c * c) @ lam[1:3]
    assert_close(res.per_direction, exact.expand(4, -1), rtol=1e-12)
    # E over the unit circle of S: tr(U A U^T) / m, within 5 standard errors
    expected = float(lam[1:3].mean())
    stderr = sphere_form_std(torch.diag(lam[1:3])) / math.sqrt(3000)
    assert float((res.raw - expected).abs().max()) < 5 * stderr
    grads = pts.grad.flatten(1)
    assert_close(res.grad_norm, grads.norm(dim=1), rtol=1e-12)
    assert_close(res.normalized, res.raw / grads.norm(dim=1), rtol=1e-14)
    assert bool(res.converged.all()) and res.mode == "exact"


@pytest.mark.parametrize("mode, rtol", [("exact", 1e-10), ("finite_difference", 1e-8)])
def test_average_curvature_matches_bruteforce_tangent_projection(mode, rtol):
    model, x, pts, A = quadratic_problem(seed=1)
    S = random_subspace(8, 3, generator=2, dtype=DT)
    res = average_curvature(model, pts, S, n_dirs=7, mode=mode, generator=0)
    grads = pts.grad.flatten(1)
    ref = tangent_form_reference(A, grads, res.coefficients @ S.basis)
    assert_close(res.per_direction, ref, rtol=rtol)
    assert_close(res.raw, ref.mean(1), rtol=rtol)
    assert_close(res.normalized, ref.mean(1) / grads.norm(dim=1), rtol=rtol)
    # chunking and a tensor basis change nothing; the same generator gives the same result
    again = average_curvature(model, pts, S.basis, n_dirs=7, mode=mode, generator=0, chunk=1)
    assert_close(again.per_direction, res.per_direction, rtol=1e-12)


@pytest.mark.parametrize("a", [0.7, -0.7])
def test_curvature_sign_convention(a):
    """DESIGN.md 3: F = z_1 - 1 + (a/2) z_2^2 at z = (1, 0), x = 0: kappa(e_2) = a."""
    model = Quadratic(
        torch.tensor([1.0, 0.0], dtype=DT), 1.0, torch.diag(torch.tensor([0.0, a], dtype=DT))
    )
    pts = boundary_points(model, torch.zeros(1, 2, dtype=DT))
    assert_close(pts.z, torch.tensor([[1.0, 0.0]], dtype=DT), rtol=0, atol=1e-12)
    res = average_curvature(model, pts, torch.tensor([[0.0, 1.0]], dtype=DT), n_dirs=3)
    assert_close(res.raw, torch.tensor([a], dtype=DT), rtol=1e-12)
    assert_close(res.normalized, torch.tensor([a], dtype=DT), rtol=1e-12)
    # a > 0: the boundary z_1 = 1 - (a/2) z_2^2 bends towards x = 0, and K is positive
    assert (float(res.normalized[0]) > 0) == (a > 0)
    s = curved_subspace(model, None, 1, points=pts, generator=0)
    if a > 0:
        assert float(principal_angles(s, torch.tensor([[0.0, 1.0]], dtype=DT))[0]) > 1 - 1e-10


def test_average_curvature_unconverged_points_are_nan_with_warning(tanh_problem):
    model, x, pts = tanh_problem
    bad = with_unconverged(pts, 0)
    with pytest.warns(UserWarning, match="1 of 6 boundary points did not converge"):
        res = average_curvature(model, bad, random_subspace(10, 2, generator=0, dtype=DT),
                                n_dirs=4, generator=0)  # fmt: skip
    assert math.isnan(float(res.raw[0])) and math.isnan(float(res.normalized[0]))
    assert bool(torch.isfinite(res.raw[1:]).all()) and res.converged.tolist()[0] is False
    S = random_subspace(10, 2, generator=0, dtype=DT)
    ref = average_curvature(model, pts.select(torch.arange(1, 6)), S, n_dirs=4, generator=0)
    assert_close(res.raw[1:], ref.raw, rtol=1e-12)


def test_average_curvature_relu_modes(tanh_problem):
    g = torch.Generator().manual_seed(3)
    relu = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 4)).to(DT)
    with torch.no_grad():
        for p in relu.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=DT))
    pts = boundary_points(relu, torch.randn(4, 10, generator=g, dtype=DT))
    S = random_subspace(10, 3, generator=0, dtype=DT)
    with pytest.raises(ValueError, match="finite_difference.*surrogate.*smoothed"):
        average_curvature(relu, pts, S, n_dirs=4)
    for kw in (
        {"mode": "surrogate", "beta": 10.0},
        {"mode": "smoothed", "n_samples": 8},
        {"mode": "finite_difference", "h": 0.05},
    ):
        res = average_curvature(relu, pts, S, n_dirs=4, generator=0, **kw)
        assert bool(torch.isfinite(res.raw).all()) and res.mode == kw["mode"]


def test_average_curvature_errors(tanh_problem):
    model, x, pts = tanh_problem
    S = random_subspace(10, 2, generator=0, dtype=DT)
    with pytest.raises(ValueError, match="`n_dirs` must be >= 1"):
        average_curvature(model, pts, S, n_dirs=0)
    with pytest.raises(ValueError, match=r"lives in R\^9 but the points in R\^10"):
        average_curvature(model, pts, random_subspace(9, 2, generator=0, dtype=DT))
    with pytest.raises(ValueError, match="rows of `subspace` must be orthonormal"):
        average_curvature(model, pts, 2 * S.basis)
    with pytest.raises(TypeError, match="must be a Subspace or a"):
        average_curvature(model, pts, [[1.0] * 10])
    with pytest.raises(ValueError, match=r"with 1 <= m <= d"):
        average_curvature(model, pts, torch.ones(10, dtype=DT))
    with pytest.raises(TypeError, match="`points` must be a BoundaryPoints"):
        average_curvature(model, x, S)
    with pytest.raises(ValueError, match="`points` is empty"):
        average_curvature(model, pts.select(torch.zeros(6, dtype=torch.bool)), S)
    none = BoundaryPoints(**{**pts.__dict__, "converged": torch.zeros(6, dtype=torch.bool)})
    with pytest.raises(ValueError, match="None of the 6 boundary points converged"):
        average_curvature(model, none, S)
    with pytest.raises(ValueError, match="`chunk` must be >= 1"):
        average_curvature(model, pts, S, chunk=0)
    with pytest.raises(ValueError, match="`mode` must be one of"):
        average_curvature(model, pts, S, mode="hessian")
    with pytest.raises(ValueError, match="`h` is an option of mode='finite_difference'"):
        average_curvature(model, pts, S, h=0.1)


# ---------------------------------------------------------------------------------------------
# curvature profile


def test_curvature_profile_on_top_eigenspaces():
    """K_{S_m} for S_m = top-m eigenvectors of A (tangent everywhere) = mean of their values."""
    model, pts, lam = diagonal_problem()
    s = curved_subspace(model, None, 3, points=pts, tol=1e-12, generator=0)
    assert float(principal_angles(s, torch.eye(8, dtype=DT)[1:4]).min()) >= 1 - 1e-10
    assert_close(s.values, lam[1:4], rtol=1e-10)
    n_dirs = 1500
    prof = curvature_profile(model, pts, s, [1, 2, 3], n_dirs=n_dirs, n_random=2, generator=0)
    assert isinstance(prof, CurvatureProfile) and prof.ms.tolist() == [1, 2, 3]
    # m = 1: every direction is +-e_1, exactly lam_1
    assert_close(prof.raw_per_point[0], lam[1].expand(4), rtol=1e-10)
    for i, m in enumerate([2, 3]):
        top = torch.diag(lam[1 : m + 1])
        stderr = sphere_form_std(top) / math.sqrt(n_dirs)
        err = (prof.raw_per_point[i + 1] - lam[1 : m + 1].mean()).abs().max()
        assert float(err) < 5 * stderr, (m, float(err), stderr)
    gnorm = pts.grad.flatten(1).norm(dim=1)
    assert_close(prof.per_point, prof.raw_per_point / gnorm, rtol=1e-14)
    assert_close(prof.mean, prof.per_point.mean(1), rtol=1e-14)
    assert_close(prof.std, prof.per_point.std(1, correction=0), rtol=1e-12)
    # the top curved directions are more curved than random ones
    assert bool((prof.mean > prof.random_mean).all())
    assert prof.n_random == 2 and prof.random_per_point.shape == (3, 4)
    d = prof.to_dict()
    assert d["ms"] == [1, 2, 3] and len(d["random_mean"]) == 3


def test_random_baseline_expectation():
    """Directions of random subspaces are uniform: E = tr(P A P) / (d - 1) at each point.

    With m = d the random subspace is R^d and the ``n_random * n_dirs`` directions are i.i.d.
    uniform on the sphere, so the i.i.d. standard error applies.
    """
    model, x, pts, A = quadratic_problem(n=3, seed=2)
    d = 8
    full = random_subspace(d, d, generator=1, dtype=DT)
    n_random, n_dirs = 4, 1000
    prof = curvature_profile(model, pts, full, [d], n_dirs=n_dirs, n_random=n_random, generator=0)
    for i, g in enumerate(pts.grad.flatten(1)):
        nrm = g / g.norm()
        P = torch.eye(d, dtype=DT) - torch.outer(nrm, nrm)
        expected = float(torch.trace(P @ A @ P)) / (d - 1)
        # u^T A u for u uniform on the unit sphere of the tangent space (dimension d - 1)
        Q = torch.linalg.svd(P).U[:, : d - 1]  # an orthonormal basis of the tangent space
        spread = sphere_form_std(Q.T @ A @ Q)
        rnd = (
            float(prof.random_raw_mean[0])
            if len(pts) == 1
            else float(prof.random_per_point[0, i] * g.norm())
        )
        own = float(prof.raw_per_point[0, i])
        assert abs(rnd - expected) < 5 * spread / math.sqrt(n_random * n_dirs), (rnd, expected)
        assert abs(own - expected) < 5 * spread / math.sqrt(n_dirs), (own, expected)


def test_curvature_profile_without_baseline_and_errors(tanh_problem):
    model, x, pts = tanh_problem
    S = random_subspace(10, 4, generator=0, dtype=DT)
    prof = curvature_profile(model, pts, S, np.array([1, 4]), n_dirs=4, random_baseline=False)
    assert prof.random_mean is None and prof.n_random == 0 and prof.mean.shape == (2,)
    bad = with_unconverged(pts, 1)
    with pytest.warns(UserWarning, match="1 of 6 boundary points did not converge"):
        prof = curvature_profile(model, bad, S, [2], n_dirs=4, n_random=1, generator=0)
    assert math.isnan(float(prof.per_point[0, 1])) and bool(torch.isfinite(prof.mean).all())
    with pytest.raises(ValueError, match="`ms` must be a non-empty sequence"):
        curvature_profile(model, pts, S, [])
    with pytest.raises(ValueError, match="`ms` must be a non-empty sequence"):
        curvature_profile(model, pts, S, 3)
    with pytest.raises(ValueError, match=r"`ms\[i\]` must be <= 4"):
        curvature_profile(model, pts, S, [1, 5])
    with pytest.raises(ValueError, match=r"`ms\[i\]` must be >= 1"):
        curvature_profile(model, pts, S, [0])
    with pytest.raises(ValueError, match="`n_random` must be >= 1"):
        curvature_profile(model, pts, S, [1], n_random=0)
    with pytest.raises(TypeError, match="`random_baseline` must be a bool"):
        curvature_profile(model, pts, S, [1], random_baseline="yes")
    with pytest.raises(ValueError, match="`n_dirs` must be >= 1"):
        curvature_profile(model, pts, S, [1], n_dirs=0)


# ---------------------------------------------------------------------------------------------
# normal subspace, sampling, random subspaces, principal angles, the Subspace type


def test_normal_subspace_recovers_the_span_of_the_rows():
    g = torch.Generator().manual_seed(0)
    U0 = random_subspace(12, 3, generator=g, dtype=DT).basis
    scales = torch.rand(40, 1, generator=g, dtype=DT) * 5 + 0.1
    r = scales * (torch.randn(40, 3, generator=g, dtype=DT) @ U0)
    s = normal_subspace(r.view(40, 3, 2, 2), 3)
    assert s.kind == "normal" and s.n_points == 40 and s.d == 12
    assert float(principal_angles(s, U0).min()) >= 1 - 1e-10
    unit = r / r.norm(dim=1, keepdim=True)
    assert_close(s.values, torch.linalg.svdvals(unit)[:3], rtol=1e-12)
    raw = normal_subspace(r, 2, unit_rows=False)
    assert_close(raw.values, torch.linalg.svdvals(r)[:2], rtol=1e-12)
    top = torch.linalg.svd(r, full_matrices=False).Vh[:2]
    assert float(principal_angles(raw, top).min()) >= 1 - 1e-10
    assert_close(raw.basis @ raw.basis.T, torch.eye(2, dtype=DT), rtol=0, atol=1e-13)


def test_normal_subspace_errors():
    r = torch.randn(5, 4, dtype=DT)
    with pytest.raises(ValueError, match=r"`m` must be <= min\(n, d\) = min\(5, 4\)"):
        normal_subspace(r, 5)
    with pytest.raises(ValueError, match="`m` must be >= 1"):
        normal_subspace(r, 0)
    zero = r.clone()
    zero[3] = 0
    with pytest.raises(ValueError, match=r"zero rows \[3\]"):
        normal_subspace(zero, 2)
    normal_subspace(zero, 2, unit_rows=False)  # fine without normalising
    with pytest.raises(TypeError, match="`r` must be a torch.Tensor"):
        normal_subspace(r.numpy(), 2)
    with pytest.raises(ValueError, match="non-empty batch"):
        normal_subspace(r[0], 2)
    with pytest.raises(TypeError, match="`r` must be floating"):
        normal_subspace(r.long(), 2)
    with pytest.raises(ValueError, match="NaN or infinite"):
        normal_subspace(torch.full((3, 4), math.nan, dtype=DT), 1)
    with pytest.raises(TypeError, match="`unit_rows` must be a bool"):
        normal_subspace(r, 1, unit_rows=1)


def test_sample_subspace_norms_membership_and_reproducibility():
    s = random_subspace(20, 4, generator=0, dtype=DT)
    v = sample_subspace(s, 500, 3.0, generator=1)
    assert v.shape == (500, 20) and v.dtype == DT
    assert_close(v.norm(dim=1), torch.full((500,), 3.0, dtype=DT), rtol=1e-13)
    assert float((v - s.project(v)).norm(dim=1).max()) <= 1e-12
    assert torch.equal(v, sample_subspace(s.basis, 500, 3.0, generator=1))
    assert not torch.equal(v, sample_subspace(s, 500, 3.0, generator=2))
    # uniform on the sphere of S: E[c c^T] = I / m for the coordinates c = U v / rho
    c = v @ s.basis.T / 3.0
    assert_close(c.T @ c / 500, torch.eye(4, dtype=DT) / 4, rtol=0, atol=0.05)
    with pytest.raises(ValueError, match="`n` must be >= 1"):
        sample_subspace(s, 0, 1.0)
    with pytest.raises(ValueError, match="`norm` must be > 0"):
        sample_subspace(s, 3, 0.0)
    with pytest.raises(ValueError, match="must be orthonormal"):
        sample_subspace(torch.ones(2, 20, dtype=DT), 3, 1.0)


def test_random_subspace_orthonormal_reproducible_haar():
    a = random_subspace(6, 3, generator=0, dtype=DT)
    assert a.kind == "random" and a.values is None and a.basis.shape == (3, 6)
    assert_close(a.basis @ a.basis.T, torch.eye(3, dtype=DT), rtol=0, atol=1e-14)
    assert torch.equal(a.basis, random_subspace(6, 3, generator=0, dtype=DT).basis)
    assert random_subspace(6, 3, generator=0).basis.dtype == torch.get_default_dtype()
    # Haar: E[U^T U] = (m / d) I
    g = torch.Generator().manual_seed(1)
    mean = (
        sum(
            (lambda U: U.T @ U)(random_subspace(6, 3, generator=g, dtype=DT).basis)
            for _ in range(400)
        )
        / 400
    )
    assert_close(mean, 0.5 * torch.eye(6, dtype=DT), rtol=0, atol=0.06)
    with pytest.raises(ValueError, match="`m` must be <= d = 6"):
        random_subspace(6, 7)
    with pytest.raises(ValueError, match="`m` must be >= 1"):
        random_subspace(6, 0)
    with pytest.raises(TypeError, match="`dtype` must be a floating"):
        random_subspace(6, 2, dtype=torch.int64)


def test_principal_angles_identical_orthogonal_random():
    g = torch.Generator().manual_seed(0)
    s = random_subspace(30, 4, generator=g, dtype=DT)
    rot = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=DT)).Q
    same = principal_angles(s, rot @ s.basis)  # another basis of the same span
    assert same.dtype == DT and same.shape == (4,)
    assert_close(same, torch.ones(4, dtype=DT), rtol=0, atol=1e-12)
    e = torch.eye(30, dtype=DT)
    assert_close(principal_angles(e[:3], e[3:8]), torch.zeros(3, dtype=DT), rtol=0, atol=1e-15)
    t = random_subspace(30, 6, generator=g, dtype=DT)
    cos = principal_angles(s, t.basis.numpy())
    assert cos.shape == (4,) and bool((cos[:-1] >= cos[1:]).all()) and float(cos.max()) < 1
    assert_close(cos, principal_cosines(s.basis, t.basis), rtol=0, atol=1e-12)
    # rows need not be orthonormal, only independent
    assert_close(principal_angles(3 * s.basis[:2] + s.basis[2:], s), torch.ones(2, dtype=DT),
                 rtol=0, atol=1e-12)  # fmt: skip
    with pytest.raises(ValueError, match="same space; got d = 30 and d = 20"):
        principal_angles(s, e[:2, :20])
    with pytest.raises(ValueError, match="linearly dependent"):
        principal_angles(torch.ones(2, 30, dtype=DT), s)
    with pytest.raises(TypeError, match="`b` must be a Subspace"):
        principal_angles(s, [[1.0] * 30])
    with pytest.raises(ValueError, match="`a` must be a floating"):
        principal_angles(torch.ones(30, dtype=DT), s)
    with pytest.raises(ValueError, match="NaN or infinite"):
        principal_angles(s, torch.full((1, 30), math.inf, dtype=DT))


def test_subspace_type():
    s = random_subspace(12, 3, generator=0, dtype=DT)
    assert s.m == 3 and s.d == 12
    v = torch.randn(5, 12, dtype=DT, generator=torch.Generator().manual_seed(0))
    p = s.project(v)
    assert_close(s.project(p), p, rtol=1e-13)  # idempotent
    assert_close(s.project(v[0]), p[0], rtol=1e-13)
    img = s.project(v.view(5, 3, 2, 2))
    assert img.shape == (5, 3, 2, 2)
    assert_close(img.flatten(1), p, rtol=1e-13)
    c = Subspace(basis=s.basis, values=torch.tensor([3.0, 2.0, 1.0], dtype=DT), kind="curved")
    two = c.first(2)
    assert two.m == 2 and two.values.tolist() == [3.0, 2.0] and two.kind == "curved"
    assert set(c.to_dict()) >= {"basis", "values", "kind", "residuals", "excluded", "info"}
    with pytest.raises(ValueError, match="`m` must be <= 3"):
        c.first(4)
    with pytest.raises(ValueError, match="`kind` must be one of"):
        Subspace(basis=s.basis, values=None, kind="flat")
    with pytest.raises(ValueError, match=r"`values` must be None or a tensor of shape \(3,\)"):
        Subspace(basis=s.basis, values=torch.ones(2, dtype=DT), kind="curved")
    with pytest.raises(ValueError, match="must be orthonormal"):
        Subspace(basis=2 * s.basis, values=None, kind="random")
    with pytest.raises(TypeError, match="`basis` must be floating"):
        Subspace(basis=torch.eye(2, dtype=torch.long), values=None, kind="random")
    with pytest.raises(ValueError, match="`v` must have shape"):
        s.project(torch.ones(11, dtype=DT))
    with pytest.raises(TypeError, match="`v` must be a floating"):
        s.project(torch.ones(12, dtype=torch.long))


# ---------------------------------------------------------------------------------------------
# subspace_fooling and diversity (001, Fig. 7b and Fig. 9)


def test_subspace_fooling_counts_the_points_each_vector_fools():
    # A binary linear classifier f = w.x + b: within span(w) every vector is +-rho w/||w||, which
    # flips exactly the points of the opposite side whose distance |f|/||w|| is below rho.
    from geomrob.attacks import fooling_rate
    from geomrob.subspaces import sample_subspace, subspace_fooling

    gen = torch.Generator().manual_seed(11)
    d = 6
    lin = torch.nn.Linear(d, 2).double()
    with torch.no_grad():
        lin.weight.copy_(torch.randn(2, d, generator=gen, dtype=torch.float64))
        lin.bias.copy_(torch.randn(2, generator=gen, dtype=torch.float64))
    x = torch.randn(400, d, generator=gen, dtype=torch.float64)
    w = (lin.weight[1] - lin.weight[0]).detach()
    f = (lin(x)[:, 1] - lin(x)[:, 0]).detach()
    others = random_subspace(d, 3, generator=1, dtype=torch.float64).basis
    basis = torch.linalg.qr(torch.cat([(w / w.norm()).unsqueeze(0), others]).T).Q.T
    rho = 0.8
    res = subspace_fooling(lin, x, basis, [1, 4], rho, n_vectors=5, generator=3)
    assert res.rates.shape == (2, 5) and res.n_points == 400 and res.norm == rho
    # The same stream draws the m = 1 vectors, then the m = 4 ones.
    g = torch.Generator().manual_seed(3)
    V = torch.cat([sample_subspace(basis[:m], 5, rho, generator=g) for m in (1, 4)])
    dist = f.abs() / w.norm()
    for j in range(5):
        towards = f < 0 if float(V[j] @ w) > 0 else f > 0  # the side this vector pushes across
        assert float(res.rates[0, j]) == float((towards & (dist < rho)).double().mean())
    expected = torch.tensor([fooling_rate(lin, x, v) for v in V], dtype=torch.float64)
    torch.testing.assert_close(res.rates.flatten(), expected, rtol=0, atol=0)
    torch.testing.assert_close(res.best, res.rates.amax(1))
    with pytest.raises(ValueError, match="ms"):
        subspace_fooling(lin, x, basis, [5], rho)
    with pytest.raises(ValueError, match="ms"):
        subspace_fooling(lin, x, basis, [], rho)
    with pytest.raises(ValueError, match="norm"):
        subspace_fooling(lin, x, basis, [1], 0.0)


def test_diversity_against_a_loop_and_the_expected_cosine():
    from geomrob.subspaces import diversity, sample_subspace

    s = random_subspace(50, 5, generator=0, dtype=torch.float64)
    V = sample_subspace(s, 300, 2.0, generator=1)
    res = diversity(V, m=5)
    unit = V / V.norm(dim=1, keepdim=True)
    loop = [float(unit[i] @ unit[j]) for i in range(300) for j in range(i + 1, 300)]
    torch.testing.assert_close(res.cosines, torch.tensor(loop, dtype=torch.float64))
    # E|cos| of independent uniform directions of R^5 is Gamma(5/2)/(sqrt(pi) Gamma(3)) =
    # 3/8 = 0.375; the 44850 pairs are dependent, so allow 5 standard errors of 300 pairs.
    assert res.expected_abs == pytest.approx(0.375, rel=1e-12)
    se = float(res.cosines.abs().std()) / math.sqrt(300)
    assert abs(res.mean_abs - 0.375) < 5 * se
    assert diversity(torch.eye(3)[:2], m=1).expected_abs == pytest.approx(1.0)
    with pytest.raises(ValueError, match="zero row"):
        diversity(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="at least 2"):
        diversity(torch.ones(1, 4))
