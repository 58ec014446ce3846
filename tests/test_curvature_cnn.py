"""The averaged boundary operator of a real (small) network: a softplus CNN with BatchNorm in
eval mode and max-pooling, against dense ``torch.func.hessian`` references; exact against finite
differences; Lanczos on clustered and degenerate spectra."""

from __future__ import annotations

import pytest
import torch
from reference import dense_operator
from torch import nn

from geomrob import BoundaryHessian, boundary_points, hvp, lanczos
from geomrob.curvature import DenseOperator

DT = torch.float64


def softplus_cnn(seed: int = 0, pool: bool = True) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    layers = [
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.Softplus(beta=3.0),
    ]
    layers += [nn.MaxPool2d(2)] if pool else []
    side = 4 if pool else 8
    layers += [
        nn.Flatten(),
        nn.Linear(4 * side * side, 12),
        nn.Softplus(beta=3.0),
        nn.Linear(12, 5),
    ]
    model = nn.Sequential(*layers).to(DT)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=DT))
        bn = model[1]
        # Non-trivial running statistics: eval-mode BatchNorm is an affine map that must be
        # differentiated as such (a transform that used batch statistics would differ).
        bn.running_mean.copy_(0.3 * torch.randn(4, generator=g, dtype=DT))
        bn.running_var.copy_(0.5 + torch.rand(4, generator=g, dtype=DT))
    return model.eval()


@pytest.fixture(scope="module")
def cnn_points():
    model = softplus_cnn()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=DT)
    points = boundary_points(model, x, tol=1e-10)
    assert points.converged.all()
    return model, points


@pytest.mark.parametrize(("project", "normalize"), [(False, False), (True, True)])
def test_cnn_operator_matches_summed_dense_hessians(cnn_points, project, normalize):
    model, points = cnn_points
    op = BoundaryHessian(model, points, mode="exact", project=project, normalize=normalize)
    ref = dense_operator(model, points, project=project, normalize=normalize)
    dense = op.dense()
    err = (dense - ref).norm() / ref.norm()
    assert err < 1e-8, f"relative error {err:.2e}"
    # A batch-statistics BatchNorm would change the logits: the model stayed in eval mode.
    assert not model.training


def test_cnn_batchnorm_in_train_mode_is_evaluated_in_eval_mode(cnn_points):
    model, points = cnn_points
    model.train()
    try:
        v = torch.randn(64, generator=torch.Generator().manual_seed(2), dtype=DT)
        hv_train_flag = BoundaryHessian(model, points).matvec(v)
        assert model.training  # restored
    finally:
        model.eval()
    torch.testing.assert_close(hv_train_flag, BoundaryHessian(model, points).matvec(v))


def test_exact_against_finite_differences_on_softplus_cnn():
    """Central differences agree with exact HVPs to O(h^2), except at max-pool ties.

    DESIGN section 3: the autograd Hessian is one-sided where the pool winner changes within the
    finite-difference step, so a few points may disagree; without pooling all must agree.
    """
    for pool in (False, True):
        model = softplus_cnn(seed=3, pool=pool)
        x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(4), dtype=DT)
        points = boundary_points(model, x, tol=1e-10)
        v = torch.randn(12, 64, generator=torch.Generator().manual_seed(5), dtype=DT)
        exact = hvp(model, points, v, mode="exact")
        fd = hvp(model, points, v, mode="finite_difference", h=1e-5)
        rel = (exact - fd).norm(dim=1) / exact.norm(dim=1)
        if pool:
            assert (rel < 1e-5).float().mean() >= 0.75, rel
        else:
            assert (rel < 1e-5).all(), rel


def _operator_with_spectrum(values: torch.Tensor, seed: int) -> DenseOperator:
    d = values.numel()
    q, _ = torch.linalg.qr(
        torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=DT)
    )
    return DenseOperator((q * values) @ q.T, symmetric=True)


@pytest.mark.parametrize("which", ["LA", "SA"])
def test_lanczos_clustered_spectrum(which):
    # Ten eigenvalues within 1e-6 of each other at the top (and bottom) of the spectrum.
    d = 80
    g = torch.Generator().manual_seed(6)
    bulk = torch.linspace(-1.0, 1.0, d - 20, dtype=DT)
    top = 2.0 + 1e-6 * torch.rand(10, generator=g, dtype=DT)
    bottom = -2.0 - 1e-6 * torch.rand(10, generator=g, dtype=DT)
    values = torch.cat([bulk, top, bottom])
    op = _operator_with_spectrum(values, seed=7)
    res = lanczos(op, 10, which=which, tol=1e-10, generator=torch.Generator().manual_seed(8))
    expected = torch.linalg.eigvalsh(op.dense())
    expected = expected.flip(0)[:10] if which == "LA" else expected[:10]
    torch.testing.assert_close(res.values, expected, rtol=1e-8, atol=1e-10)
    # Within a cluster single vectors are not defined: compare the invariant subspace.
    evecs = torch.linalg.eigh(op.dense()).eigenvectors
    block = evecs[:, -10:] if which == "LA" else evecs[:, :10]
    cos = torch.linalg.svdvals(res.vectors @ block)
    assert cos.min() > 1 - 1e-6


def test_lanczos_degenerate_spectrum_finds_the_whole_eigenspace():
    # An eigenvalue of multiplicity 4 at the top: single-vector Lanczos sees one copy per start
    # vector; restarts with fresh random vectors must recover all four.
    values = torch.cat([torch.full((4,), 3.0, dtype=DT), torch.linspace(-1, 1, 46, dtype=DT)])
    op = _operator_with_spectrum(values, seed=9)
    res = lanczos(op, 4, which="LA", tol=1e-10, generator=torch.Generator().manual_seed(10))
    torch.testing.assert_close(res.values, torch.full((4,), 3.0, dtype=DT), rtol=1e-8, atol=0)
    assert (res.residuals <= 1e-8).all()


@pytest.mark.parametrize("which", ["LA", "SA"])
@pytest.mark.parametrize("mult", [2, 4])
@pytest.mark.parametrize("extra", [-1, 0, 2])
def test_lanczos_repeated_eigenvalue_against_eigh(which, mult, extra):
    # k below, equal to and above the multiplicity of the wanted-end eigenvalue (+-1.2, bulk in
    # [-1, 1]): the multiplicity check must recover every copy (a tie is not a miss for k < mult).
    # Without the check, 8 of these 12 cases return bulk values in place of missed copies.
    d, k, sign = 50, mult + extra, 1.0 if which == "LA" else -1.0
    values = torch.cat(
        [torch.full((mult,), 1.2 * sign, dtype=DT), torch.linspace(-1, 1, d - mult, dtype=DT)]
    )
    op = _operator_with_spectrum(values, seed=40 + mult)
    tol = 1e-10
    res = lanczos(op, k, which=which, tol=tol, generator=torch.Generator().manual_seed(mult))
    evals, evecs = torch.linalg.eigh(op.dense())
    expected = evals.flip(0)[:k] if which == "LA" else evals[:k]
    torch.testing.assert_close(res.values, expected, rtol=1e-8, atol=1e-10)
    assert bool(res.converged.all()) and float(res.residuals.max()) <= tol * 1.2
    torch.testing.assert_close(
        res.vectors @ res.vectors.T, torch.eye(k, dtype=DT), rtol=0, atol=1e-12
    )
    space = evecs[:, -mult:] if which == "LA" else evecs[:, :mult]
    cos = torch.linalg.svdvals(res.vectors @ space)  # min(k, mult) principal cosines
    assert cos.min() > 1 - 1e-8


def test_lanczos_multiplicity_check_cost_on_simple_spectrum():
    # Nothing to find: the check costs min(10, d - k) products and changes nothing else.
    d = 120
    g = torch.Generator().manual_seed(3)
    values = torch.linspace(-2, 3, d, dtype=DT) + 0.01 * torch.rand(d, generator=g, dtype=DT)
    op = _operator_with_spectrum(values, seed=4)
    for which, k in (("LA", 5), ("SA", 20), ("LM", 1)):
        on = lanczos(op, k, which=which, tol=1e-8, generator=0)
        off = lanczos(op, k, which=which, tol=1e-8, generator=0, check_multiplicity=False)
        assert on.matvecs - off.matvecs == 10 and on.restarts == off.restarts + 1
        assert torch.equal(on.values, off.values) and torch.equal(on.vectors, off.vectors)
    # a basis that reaches d (ncv = d) needs no check
    small = _operator_with_spectrum(values[:12], seed=5)
    on = lanczos(small, 3, tol=1e-10, ncv=12, generator=0)
    off = lanczos(small, 3, tol=1e-10, ncv=12, generator=0, check_multiplicity=False)
    assert on.matvecs - off.matvecs <= 12 - 3
