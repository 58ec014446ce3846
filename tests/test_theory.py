"""Lemma 1 and Theorems 1-2 of 001 (geomrob.theory), their measured hypotheses and models.

References:
- Lemma 1: hand-computed constants, and the exact law ||P_m v||^2 ~ Beta(m/2, (d - m)/2) of a
  uniform unit vector (scipy), against which the Monte Carlo estimate must agree within 5
  standard errors (a false alarm has probability < 1e-6 per case).
- Theorem 1: on the flat model (FlatSlabClassifier) a random v of norm rho in S fools x iff
  |(P_S r)^T v| > 1, so the fooling probability is exactly P(Beta(1/2, (m-1)/2) > 1/(rho (1 -
  xi))^2); the Monte Carlo fooling rate of the classifier must match it within 5 standard errors
  (over the directions, the conservative count since the points share them), and the closed form
  at the theorem's radius must be >= 1 - delta.
- Theorem 2: the exact root solves its quadratic (rtol 1e-12); on the curved model
  (QuadraticBoundaryClassifier) x is fooled iff rho (1 - 2 kappa) t + kappa rho^2 + kappa - 1 > 0
  with t = v^T r, the inequality of 001 App. B; the Monte Carlo fooling rate must match the
  closed form within 5 standard errors, and at the theorem's radius fool >= 1 - delta.
- The measured curvature of normal sections against dense Hessians (torch.func.hessian, eigh of
  the 2 x 2 form): float64, rtol 1e-9 (jvp-of-grad vs hessian differ by rounding only).
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from reference import Quadratic, assert_close, dense_boundary_hessians, dense_gradients
from scipy.stats import beta as beta_dist
from torch import nn

from geomrob import boundary_points, fooling_rates, sample_subspace
from geomrob.theory import (
    FlatSlabClassifier,
    QuadraticBoundaryClassifier,
    SectionCurvature,
    curved_model,
    flat_model,
    lemma1_betas,
    lemma1_monte_carlo,
    lemma1_probability,
    measure_xi,
    normal_section_curvature,
    theorem1_radius,
    theorem2_constant,
    theorem2_radius,
)

DT = torch.float64


def first_coordinate_sf(c: float, m: int) -> float:
    """P(s > c) for s the first coordinate of a uniform unit vector of R^m (symmetric law)."""
    if m == 1:
        return 1.0 if c < -1 else (0.5 if c < 1 else 0.0)
    tail = 0.5 * float(beta_dist(0.5, (m - 1) / 2).sf(min(c * c, 1.0)))
    return tail if c >= 0 else 1.0 - tail


# ---------------------------------------------------------------------------------------------
# Lemma 1


def test_lemma1_betas_hand_computed():
    # m = 4, delta = 0.01: delta^(2/m) = 0.1; beta1 = max(0.1 / e, 1 - sqrt(1.8)) = 0.1 / e
    b1, b2 = lemma1_betas(4, 0.01)
    assert b1 == pytest.approx(0.1 / math.e, rel=1e-12)
    assert b1 == pytest.approx(0.0367879441, rel=1e-9)
    # beta2 = 1 + 2 sqrt(ln(100) / 4) + 2 ln(100) / 4
    assert b2 == pytest.approx(5.4485511193, rel=1e-9)
    # m = 50, delta = 0.5: the second branch wins, 1 - sqrt(2 (1 - 0.5^0.04)) = 0.76614...
    res = lemma1_betas(50, 0.5)
    assert res.beta1 == pytest.approx(1 - math.sqrt(2 * (1 - 0.5**0.04)), rel=1e-12)
    assert res.beta1 == pytest.approx(0.7661408433, rel=1e-9)
    assert res.beta2 == pytest.approx(1.2632078917, rel=1e-9)
    assert 0.25 / math.e > 1 - math.sqrt(1.5)  # m = 1, delta = 0.5: the first branch
    assert lemma1_betas(1, 0.5).beta1 == pytest.approx(0.25 / math.e, rel=1e-12)
    assert tuple(lemma1_betas(3, 1.0)) == (1.0, 1.0)
    for m in (1, 2, 10, 100):
        for delta in (0.01, 0.3, 0.9):
            lo, hi = lemma1_betas(m, delta)
            assert 0 < lo < 1 < hi
    json.dumps(res.to_dict())


def test_lemma1_bad_arguments():
    with pytest.raises(ValueError, match="`delta` must be > 0.0"):
        lemma1_betas(3, 0.0)
    with pytest.raises(ValueError, match="`delta` must be <= 1.0"):
        lemma1_betas(3, 1.5)
    with pytest.raises(ValueError, match="`m` must be >= 1"):
        lemma1_betas(0, 0.1)
    with pytest.raises(TypeError, match="`m` must be an int"):
        lemma1_betas(2.5, 0.1)
    with pytest.raises(ValueError, match="`m` must be <= d = 3"):
        lemma1_probability(3, 4, 0.1)
    with pytest.raises(ValueError, match="`n` must be >= 1"):
        lemma1_monte_carlo(5, 2, 0.1, 0)


@pytest.mark.parametrize(
    "d, m, delta",
    [(10, 1, 0.1), (100, 5, 0.05), (400, 40, 0.2), (30, 29, 0.5), (1000, 1, 0.01), (64, 8, 0.9)],
)
def test_lemma1_monte_carlo_holds_at_its_delta(d, m, delta):
    n = 20_000
    mc = lemma1_monte_carlo(d, m, delta, n, generator=d + m)
    assert mc.exact >= 1 - delta  # Lemma 1, exactly
    se = math.sqrt(mc.exact * (1 - mc.exact) / n) + 1 / n  # from the exact p (+1/n if p = 1)
    assert abs(mc.probability - mc.exact) <= 5 * se
    assert mc.probability >= 1 - delta - 5 * se
    # each tail alone is <= delta (Dasgupta-Gupta below, Laurent-Massart above)
    law = beta_dist(m / 2, (d - m) / 2)
    assert law.cdf(mc.beta1 * m / d) <= delta
    assert law.sf(min(mc.beta2 * m / d, 1.0)) <= delta
    assert mc.below + mc.above == pytest.approx(1 - mc.probability, abs=1e-12)
    assert mc.bound == 1 - delta and mc.n == n


def test_lemma1_monte_carlo_is_seeded():
    a = lemma1_monte_carlo(50, 5, 0.1, 3000, generator=1)
    b = lemma1_monte_carlo(50, 5, 0.1, 3000, generator=torch.Generator().manual_seed(1))
    assert a == b
    c = lemma1_monte_carlo(50, 5, 0.1, 3000, generator=2)
    assert (c.below, c.above) != (a.below, a.above)


# ---------------------------------------------------------------------------------------------
# Theorem 1


def test_theorem1_radius_closed_forms():
    assert theorem1_radius(4, 0.5, 0.0) == pytest.approx(math.sqrt(4 * math.e) / 0.5, rel=1e-14)
    assert theorem1_radius(9, 0.1, 0.25) == pytest.approx(
        math.sqrt(9 * math.e) / (0.1 * 0.75), rel=1e-14
    )
    # beta1(delta, 1) = delta^2 / e below delta ~ 0.856: both forms agree
    for delta in (0.05, 0.5, 0.85):
        assert theorem1_radius(7, delta, 0.1, sharp=True) == pytest.approx(
            theorem1_radius(7, delta, 0.1), rel=1e-12
        )
    # above, 1 - sqrt(2 (1 - delta^2)) wins and the sharp radius is smaller
    delta = 0.95
    b1 = 1 - math.sqrt(2 * (1 - delta**2))
    assert theorem1_radius(7, delta, 0.1, sharp=True) == pytest.approx(
        math.sqrt(7 / b1) / 0.9, rel=1e-12
    )
    assert theorem1_radius(7, delta, 0.1, sharp=True) < theorem1_radius(7, delta, 0.1)
    with pytest.raises(ValueError, match="`xi` must be < 1.0"):
        theorem1_radius(3, 0.1, 1.0)
    with pytest.raises(ValueError, match="`delta` must be > 0.0"):
        theorem1_radius(3, 0.0, 0.1)
    with pytest.raises(TypeError, match="`sharp` must be a bool"):
        theorem1_radius(3, 0.1, 0.1, sharp="yes")


@pytest.mark.parametrize("m", [2, 5, 20, 200])
@pytest.mark.parametrize("delta", [0.01, 0.2, 0.7, 0.95])
@pytest.mark.parametrize("xi", [0.0, 0.5])
def test_theorem1_holds_exactly_on_the_flat_model(m, delta, xi):
    # fooled iff |a^T v| > 1 with ||a|| = 1 - xi: P = P(Beta(1/2, (m-1)/2) > 1 / (rho (1-xi))^2)
    for sharp in (False, True):
        rho = theorem1_radius(m, delta, xi, sharp=sharp)
        p = float(beta_dist(0.5, (m - 1) / 2).sf(1 / (rho * (1 - xi)) ** 2))
        assert p >= 1 - delta


def test_flat_model_classifier_matches_the_theorem():
    d, m, n, xi = 12, 4, 40, 0.3
    sm = flat_model(d, m, n, xi, generator=0)
    assert measure_xi(sm.basis, sm.normals).xi == pytest.approx(xi, abs=1e-12)
    assert_close(sm.normals.norm(dim=1), torch.ones(n, dtype=DT), rtol=1e-12)
    pts = boundary_points(sm.model, sm.x)
    assert bool(pts.converged.all())
    assert_close(pts.r.abs(), sm.normals.abs(), rtol=1e-9)  # r(x_i) = +- r_i, unit
    json.dumps(sm.to_dict())

    n_dirs = 400
    for delta, rho in [(0.5, None), (None, 1.6 / (1 - xi))]:
        if rho is None:
            rho = theorem1_radius(m, delta, xi, sharp=True)
        assert rho < sm.radius
        V = sample_subspace(sm.basis, n_dirs, rho, generator=7)
        rate = float(fooling_rates(sm.model, sm.x, V).mean())
        rate_minus = float(fooling_rates(sm.model, sm.x, -V).mean())
        assert rate == pytest.approx(rate_minus, abs=1e-12)  # a direction, both signs
        p = float(beta_dist(0.5, (m - 1) / 2).sf(1 / (rho * (1 - xi)) ** 2))
        se = math.sqrt(p * (1 - p) / n_dirs)
        assert abs(rate - p) <= 5 * se, (rate, p, se)
        if delta is not None:
            assert rate >= 1 - delta
    # nothing is fooled below the slab: |a^T v| <= ||a|| rho <= 1
    V = sample_subspace(sm.basis, 50, 0.999 / (1 - xi), generator=8)
    assert float(fooling_rates(sm.model, sm.x, V).max()) == 0.0


# ---------------------------------------------------------------------------------------------
# Theorem 2


def test_theorem2_root_solves_its_quadratic_and_the_bound_dominates():
    for kappa in (0.05, 0.3, 0.49, 2.0):
        for m in (1, 10, 1000):
            for delta in (0.01, 0.3):
                C = theorem2_constant(kappa, delta)
                assert C == pytest.approx(
                    abs(1 - 2 * kappa) * math.sqrt(2 * math.log(2 / delta)), rel=1e-14
                )
                root = theorem2_radius(kappa, m, delta, exact=True)
                assert root > 0
                assert root**2 == pytest.approx((C * root / math.sqrt(m) + 1) / kappa, rel=1e-12)
                bound = theorem2_radius(kappa, m, delta)
                assert bound == pytest.approx(C / (kappa * math.sqrt(m)) + kappa**-0.5, rel=1e-14)
                assert root <= bound * (1 + 1e-14)
    assert theorem2_radius(0.25, 16, 0.1, C=0.0, exact=True) == pytest.approx(2.0, rel=1e-14)
    assert theorem2_constant(0.5, 0.1) == 0.0
    with pytest.raises(ValueError, match="`kappa` must be > 0.0"):
        theorem2_radius(0.0, 4, 0.1)
    with pytest.raises(ValueError, match="`C` must be >= 0.0"):
        theorem2_radius(0.3, 4, 0.1, C=-1.0)
    with pytest.raises(TypeError, match="`exact` must be a bool"):
        theorem2_radius(0.3, 4, 0.1, exact=1)


def curved_fooling_probability(rho: float, kappa: float, a_norm: float, m: int) -> float:
    """P_v(x fooled) on the curved model: t = ||a|| s > tau (001, App. B's inequality)."""
    tau = (1 - kappa - kappa * rho**2) / (rho * (1 - 2 * kappa))
    if a_norm == 0:
        return 1.0 if tau < 0 else 0.0
    return first_coordinate_sf(tau / a_norm, m)


def test_curved_model_measured_kappa_and_theorem2():
    d, m, n, kappa = 16, 3, 30, 0.3
    sm = curved_model(d, m, n, kappa, kappa_out=-0.4, generator=0)
    pts = boundary_points(sm.model, sm.x)
    assert bool(pts.converged.all())
    assert_close(pts.r, sm.normals, rtol=1e-9)  # r(x_i) = r_i, unit
    # the hypothesis of Theorem 2, measured: kappa(x, v) = kappa for every v in S
    V = sample_subspace(sm.basis, 12, 1.0, generator=1)
    sc = normal_section_curvature(sm.model, pts, V)
    assert_close(sc.kappa, torch.full((n, 12), kappa, dtype=DT), rtol=1e-9)
    assert_close(sc.tangent, torch.full((n, 12), 2 * kappa, dtype=DT), rtol=1e-9)
    assert_close(sc.theorem_kappa(0.0), torch.full((n,), kappa, dtype=DT), rtol=1e-9)
    # outside S the boundary bends away: the hypothesis fails for random directions
    R = torch.randn(12, d, generator=torch.Generator().manual_seed(2), dtype=DT)
    assert float(normal_section_curvature(sm.model, pts, R).kappa.max()) < kappa / 2

    a_norms = (sm.normals @ sm.basis.T).norm(dim=1).tolist()
    n_dirs = 300
    for rho in (1.2, 1.6):
        Vr = sample_subspace(sm.basis, n_dirs, rho, generator=3)
        rate = float(fooling_rates(sm.model, sm.x, Vr).mean())
        p = sum(curved_fooling_probability(rho, kappa, a, m) for a in a_norms) / n
        se = math.sqrt(p * (1 - p) / n_dirs)
        assert abs(rate - p) <= 5 * se + 1e-12, (rho, rate, p)
    # nothing is fooled at rho = ||r||: tau = 1 > t
    V1 = sample_subspace(sm.basis, 50, 1.0, generator=4)
    assert float(fooling_rates(sm.model, sm.x, V1).max()) == 0.0
    for delta in (0.05, 0.3):
        rho = theorem2_radius(kappa, m, delta, exact=True)
        assert rho < sm.radius
        p = sum(curved_fooling_probability(rho, kappa, a, m) for a in a_norms) / n
        assert p >= 1 - delta
        Vr = sample_subspace(sm.basis, 100, rho, generator=5)
        assert float(fooling_rates(sm.model, sm.x, Vr).mean()) >= 1 - delta


def test_synthetic_model_errors():
    with pytest.raises(ValueError, match="`kappa` must be < 1/2"):
        curved_model(8, 2, 3, 0.5)
    with pytest.raises(ValueError, match="`kappa_out` must be < 0.5"):
        curved_model(8, 2, 3, 0.2, kappa_out=0.6)
    with pytest.raises(ValueError, match="`m` must be < d = 4"):
        curved_model(4, 4, 3, 0.2)
    with pytest.raises(ValueError, match="`xi` > 0 needs m < d"):
        flat_model(4, 4, 3, 0.1)
    with pytest.raises(ValueError, match="`spacing` must be > 0.0"):
        flat_model(4, 2, 3, 0.1, spacing=0.0)
    with pytest.raises(TypeError, match="`dtype` must be a floating torch.dtype"):
        flat_model(4, 2, 3, 0.1, dtype=torch.int64)
    x = torch.zeros(2, 3, dtype=DT)
    with pytest.raises(ValueError, match="`normals` has a zero row"):
        FlatSlabClassifier(x, torch.zeros(2, 3, dtype=DT))
    with pytest.raises(ValueError, match="same shape and dtype"):
        FlatSlabClassifier(x, torch.ones(2, 4, dtype=DT))
    with pytest.raises(ValueError, match="`hessians` must be a tensor of shape"):
        QuadraticBoundaryClassifier(x, torch.ones(2, 3, dtype=DT), torch.zeros(2, 3, dtype=DT))
    H = torch.zeros(2, 3, 3, dtype=DT)
    H[:, 0, 1] = 1.0
    with pytest.raises(ValueError, match="`hessians` must be symmetric"):
        QuadraticBoundaryClassifier(x, torch.ones(2, 3, dtype=DT), H)


# ---------------------------------------------------------------------------------------------
# measured hypotheses


def test_measure_xi_on_a_constructed_basis():
    d = 5
    e = torch.eye(d, dtype=DT)
    r = torch.stack([3 * e[0], e[0] + e[2], e[1] - 2 * e[3], torch.ones(d, dtype=DT)])
    expected = torch.tensor([1.0, 1 / math.sqrt(2), 1 / math.sqrt(5), math.sqrt(2 / 5)], dtype=DT)
    res = measure_xi(e[:2], r)
    assert_close(res.projection_norms, expected, rtol=1e-14)
    assert res.worst == 2 and res.xi == pytest.approx(1 - 1 / math.sqrt(5), rel=1e-14)
    # invariant under a rotation of space applied to both; input-shaped normals accepted
    Q = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0), dtype=DT)).Q
    rot = measure_xi((e[:2] @ Q.T).contiguous(), (r @ Q.T).view(4, 1, d))
    assert_close(rot.projection_norms, expected, rtol=1e-12)
    json.dumps(res.to_dict())
    with pytest.raises(ValueError, match="`r` has zero rows"):
        measure_xi(e[:2], torch.zeros(2, d, dtype=DT))
    with pytest.raises(ValueError, match="d = 4 entries per row"):
        measure_xi(e[:2], torch.ones(2, 4, dtype=DT))
    with pytest.raises(ValueError, match="must be orthonormal"):
        measure_xi(2 * e[:2], r)
    with pytest.raises(TypeError, match="`r` must be floating"):
        measure_xi(e[:2], torch.ones(2, d, dtype=torch.int64))


def tanh_problem(n: int = 5, d: int = 4, seed: int = 0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(d, 12), nn.Tanh(), nn.Linear(12, 3)).to(DT)
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed + 1), dtype=DT)
    pts = boundary_points(net, x)
    assert bool(pts.converged.all())
    return net, pts


def test_normal_section_curvature_against_dense_hessians():
    net, pts = tanh_problem()
    n, d, k = len(pts), 4, 3
    D = torch.randn(n, k, d, generator=torch.Generator().manual_seed(5), dtype=DT)
    sc = normal_section_curvature(net, pts, D, chunk=2)
    H = dense_boundary_hessians(net, pts)
    g = dense_gradients(net, pts)
    for i in range(n):
        gn = g[i].norm()
        nh = g[i] / gn
        for j in range(k):
            e = D[i, j] - (D[i, j] @ nh) * nh
            e = e / e.norm()
            Pi = torch.stack([nh, e], dim=1)  # (d, 2)
            M = Pi.T @ H[i] @ Pi
            lam = torch.linalg.eigvalsh(M)[0]
            assert float(sc.tangent[i, j]) == pytest.approx(float(M[1, 1] / gn), rel=1e-9)
            assert float(sc.cross[i, j]) == pytest.approx(float(M[0, 1] / gn), rel=1e-9, abs=1e-12)
            assert float(sc.minimum[i, j]) == pytest.approx(float(lam / gn), rel=1e-9)
            r = float(pts.r[i].norm())
            assert float(sc.kappa[i, j]) == pytest.approx(r * float(lam / gn) / 2, rel=1e-9)
        assert float(sc.normal[i]) == pytest.approx(float(nh @ H[i] @ nh / gn), rel=1e-9)
    # the same directions for every point: (k, d)
    shared = normal_section_curvature(net, pts, D[0])
    assert_close(shared.minimum[0], sc.minimum[0], rtol=1e-12)


def test_normal_section_curvature_sign_and_the_normal_term():
    # DESIGN.md section 3: F = z_0 - 1 + (a/2) z_1^2 at z = e_0; kappa(e_1) = a, while the
    # section's 2 x 2 form is diag(0, a): Theorem 2's lambda_min is min(0, a), not a
    d = 3
    e = torch.eye(d, dtype=DT)
    for a in (0.7, -0.7):
        A = torch.zeros(d, d, dtype=DT)
        A[1, 1] = a
        model = Quadratic(e[0], 1.0, A)
        pts = boundary_points(model, torch.zeros(1, d, dtype=DT))
        sc = normal_section_curvature(model, pts, torch.stack([e[1], e[1] + e[0]]))
        assert_close(sc.tangent[0], torch.tensor([a, a], dtype=DT), rtol=1e-12)
        assert_close(sc.minimum[0], torch.tensor([min(0.0, a)] * 2, dtype=DT), rtol=1e-12)
        fd = normal_section_curvature(model, pts, e[1:2], mode="finite_difference", h=0.1)
        assert float(fd.tangent[0, 0]) == pytest.approx(a, rel=1e-9)  # exact for a quadratic


def test_normal_section_curvature_nan_warnings_and_errors():
    net, pts = tanh_problem(n=4)
    D = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=DT)
    conv = pts.converged.clone()
    conv[1] = False
    partial = dataclasses.replace(pts, converged=conv)
    with pytest.warns(UserWarning, match="1 of 4 boundary points did not converge"):
        sc = normal_section_curvature(net, partial, D)
    assert bool(torch.isnan(sc.kappa[1]).all()) and bool(torch.isfinite(sc.kappa[0]).all())
    assert torch.isnan(sc.theorem_kappa())[1] and sc.converged.tolist() == [True, False, True, True]
    # a direction along the normal has no section: NaN for it, finite for the others
    along = torch.stack([pts.normals[0], D[0]])
    sc0 = normal_section_curvature(net, pts.select(torch.tensor([0])), along)
    assert math.isnan(float(sc0.kappa[0, 0])) and math.isfinite(float(sc0.kappa[0, 1]))
    with pytest.raises(ValueError, match=r"`directions` must have shape \(k, d\)"):
        normal_section_curvature(net, pts, torch.ones(3, 5, dtype=DT))
    with pytest.raises(TypeError, match="`directions` must have the points' dtype"):
        normal_section_curvature(net, pts, D.float())
    with pytest.raises(ValueError, match="`mode` must be one of"):
        normal_section_curvature(net, pts, D, mode="magic")
    with pytest.raises(ValueError, match="`h` is an option of mode='finite_difference'"):
        normal_section_curvature(net, pts, D, h=0.1)
    relu = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).to(DT)
    rpts = boundary_points(relu, pts.x)
    with pytest.raises(ValueError, match="piecewise linear"):
        normal_section_curvature(relu, rpts, D)


def test_theorem_kappa_quantiles():
    nan = math.nan
    kappa = torch.tensor(
        [[0.4, 0.1, 0.3, 0.2], [0.5, nan, 0.1, 0.3], [nan, nan, nan, nan]], dtype=DT
    )
    z = torch.zeros(3, dtype=DT)
    sc = SectionCurvature(
        tangent=kappa,
        normal=z,
        cross=kappa,
        minimum=kappa,
        kappa=kappa,
        grad_norm=z,
        r_norm=z,
        converged=torch.ones(3, dtype=torch.bool),
        mode="exact",
    )
    q0 = sc.theorem_kappa(0.0)
    assert q0[:2].tolist() == [0.1, 0.1] and math.isnan(float(q0[2]))
    # beta = 0.25 of 4 directions: drop the smallest one; of 3 finite ones floor(0.75) = 0
    assert sc.theorem_kappa(0.25)[:2].tolist() == [0.2, 0.1]
    assert sc.theorem_kappa(0.5)[:2].tolist() == [0.3, 0.3]
    with pytest.raises(ValueError, match="`beta` must be < 1.0"):
        sc.theorem_kappa(1.0)
