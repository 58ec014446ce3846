"""Metrics between attribution maps (000 Eq. 9; 002 Supp. C1, Fig. 2a).

References: hand-made maps with known answers (top-k overlaps, centers of mass, I vs 2I),
``scipy.stats.spearmanr``, and brute-force per-image loops in numpy. Exact arithmetic on small
integers is compared exactly; float64 formulas within 1e-12 (rounding of a few sums).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from reference import assert_close

from geomrob.interpret.metrics import (
    auc_log_eps,
    cosine_distance,
    dissimilarity,
    mass_center,
    mass_center_dislocation,
    pixel_map,
    spearman,
    topk_intersection,
)

DT = torch.float64


def maps(n: int, *shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=DT)


# ---------------------------------------------------------------------------------------------
# dissimilarity and cosine distance


def test_dissimilarity_known_values_and_reference():
    a = maps(4, 3, 5, 5)
    assert_close(dissimilarity(a, 2 * a), torch.ones(4, dtype=DT), rtol=1e-14)  # ||I|| / ||I||
    assert_close(dissimilarity(a, -a), torch.full((4,), 2.0, dtype=DT), rtol=1e-14)
    assert torch.equal(dissimilarity(a, a), torch.zeros(4, dtype=DT))
    b = maps(4, 3, 5, 5, seed=1)
    ref = [
        np.linalg.norm(ai - bi) / np.linalg.norm(ai)
        for ai, bi in zip(a.numpy(), b.numpy(), strict=True)
    ]
    assert_close(dissimilarity(a, b), torch.tensor(ref), rtol=1e-12)
    # not symmetric: normalised by the original map (000 Eq. 9)
    assert_close(dissimilarity(a, 3 * a), torch.full((4,), 2.0, dtype=DT), rtol=1e-14)
    assert_close(dissimilarity(3 * a, a), torch.full((4,), 2 / 3, dtype=DT), rtol=1e-14)


def test_cosine_distance_known_values_and_reference():
    e = torch.eye(3, dtype=DT)
    a = torch.stack([e[0], e[0], e[0], e[1]])
    b = torch.stack([e[0] * 5, e[1], -e[0], e[1] + e[2]])
    expected = torch.tensor([0.0, 1.0, 2.0, 1 - 1 / math.sqrt(2)], dtype=DT)
    assert_close(cosine_distance(a, b), expected, rtol=1e-14, atol=1e-15)
    a, b = maps(5, 2, 4, 4), maps(5, 2, 4, 4, seed=3)
    ref = [
        1 - np.dot(ai.ravel(), bi.ravel()) / np.linalg.norm(ai) / np.linalg.norm(bi)
        for ai, bi in zip(a.numpy(), b.numpy(), strict=True)
    ]
    assert_close(cosine_distance(a, b), torch.tensor(ref), rtol=1e-12)
    assert_close(cosine_distance(a, 7 * a), torch.zeros(5, dtype=DT), rtol=0, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# top-k intersection


def test_topk_intersection_hand_made():
    a = torch.tensor([[9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.5]], dtype=DT)
    # top-3 of a: {0, 1, 2}; top-3 of b: {1, 2, 9} -> 2 of 3
    b = torch.tensor([[0.0, 8.0, 7.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 9.0]], dtype=DT)
    assert_close(topk_intersection(a, b, 3), torch.tensor([2 / 3], dtype=DT), rtol=1e-15)
    assert torch.equal(topk_intersection(a, b, 1), torch.tensor([0.0], dtype=DT))
    assert torch.equal(topk_intersection(a, a, 4), torch.tensor([1.0], dtype=DT))
    assert torch.equal(topk_intersection(a, b, 10), torch.tensor([1.0], dtype=DT))
    # absolute values (002 ranks |z| / ||z||_1): a large negative entry is in the top-k
    c = torch.tensor([[-10.0, 1.0, 2.0, 3.0]], dtype=DT)
    d = torch.tensor([[10.0, 1.0, 2.0, 3.0]], dtype=DT)
    assert torch.equal(topk_intersection(c, d, 1), torch.tensor([1.0], dtype=DT))
    assert torch.equal(topk_intersection(c, d, 1, absolute=False), torch.tensor([0.0], dtype=DT))
    assert torch.equal(topk_intersection(c, d, 2, absolute=False), torch.tensor([0.5], dtype=DT))


def test_topk_intersection_against_sets():
    a, b = maps(6, 3, 4, 4), maps(6, 3, 4, 4, seed=2)  # continuous: no ties
    b[:3] = a[:3] + 0.3 * b[:3]  # some overlap
    for k in (1, 5, 20, 48):
        got = topk_intersection(a, b, k)
        for i in range(6):
            fa, fb = a[i].abs().flatten().numpy(), b[i].abs().flatten().numpy()
            sa = set(np.argsort(-fa)[:k].tolist())
            sb = set(np.argsort(-fb)[:k].tolist())
            assert float(got[i]) == len(sa & sb) / k


# ---------------------------------------------------------------------------------------------
# Spearman


def test_spearman_matches_scipy_with_ties():
    g = torch.Generator().manual_seed(0)
    # rounded to a few levels: many ties, averaged as scipy does
    a = torch.randint(0, 5, (8, 2, 3, 4), generator=g).to(DT)
    b = (a + torch.randint(-2, 3, a.shape, generator=g)).to(DT)
    b[0] = maps(1, 2, 3, 4, seed=9)[0]  # one image without ties in b
    got = spearman(a, b)
    ref = [
        scipy.stats.spearmanr(ai.ravel(), bi.ravel()).statistic for ai, bi in zip(a, b, strict=True)
    ]
    assert_close(got, torch.tensor(ref), rtol=1e-12)
    assert_close(spearman(a, a), torch.ones(8, dtype=DT), rtol=1e-14)
    assert_close(spearman(a, -a), -torch.ones(8, dtype=DT), rtol=1e-14)
    # monotone transforms do not change ranks
    c = maps(3, 50, seed=4)
    assert_close(spearman(c, torch.exp(c) ** 3), torch.ones(3, dtype=DT), rtol=1e-14)
    assert spearman(c.float(), c.float()).dtype == torch.float32


def test_spearman_constant_map_is_nan_with_a_warning():
    a = maps(2, 6)
    b = a.clone()
    b[1] = 1.0
    with pytest.warns(UserWarning, match="1 of 2 images have a constant map"):
        rho = spearman(a, b)
    assert float(rho[0]) == pytest.approx(1.0, abs=1e-14) and math.isnan(float(rho[1]))


# ---------------------------------------------------------------------------------------------
# centers of mass


def test_pixel_map_sums_absolute_values_over_channels():
    a = maps(2, 3, 4, 5)
    assert_close(pixel_map(a), a.abs().sum(1), rtol=1e-15)
    assert_close(pixel_map(a[:, 0]), a[:, 0].abs(), rtol=0)


def test_mass_center_hand_made():
    m = torch.zeros(2, 2, 5, 7, dtype=DT)
    m[0, 0, 1, 2] = 1.0  # one pixel at (row 1, col 2)
    m[1, 0, 0, 0] = -1.0  # mass 1 at (0, 0) (absolute value)
    m[1, 1, 4, 6] = 3.0  # mass 3 at (4, 6): center (3, 4.5)
    assert_close(mass_center(m), torch.tensor([[1.0, 2.0], [3.0, 4.5]], dtype=DT), rtol=1e-15)
    # rows are the H axis: a mass that moves down 3 rows and right 4 columns moved 5 pixels
    a = torch.zeros(1, 8, 9, dtype=DT)
    b = torch.zeros(1, 8, 9, dtype=DT)
    a[0, 2, 1], b[0, 5, 5] = 2.0, -0.5
    assert_close(mass_center_dislocation(a, b), torch.tensor([5.0], dtype=DT), rtol=1e-15)
    # channel mass at opposite ends of a row: the center is in the middle
    c = torch.zeros(1, 2, 3, 3, dtype=DT)
    c[0, 0, 1, 0], c[0, 1, 1, 2] = 1.0, -1.0
    assert_close(mass_center(c), torch.tensor([[1.0, 1.0]], dtype=DT), rtol=1e-15)


def test_mass_center_dislocation_against_a_loop():
    a, b = maps(4, 3, 6, 5), maps(4, 3, 6, 5, seed=5)
    ref = []
    for ai, bi in zip(a.numpy(), b.numpy(), strict=True):
        centers = []
        for m in (np.abs(ai).sum(0), np.abs(bi).sum(0)):
            ii, jj = np.meshgrid(np.arange(6), np.arange(5), indexing="ij")
            centers.append(np.array([(m * ii).sum(), (m * jj).sum()]) / m.sum())
        ref.append(np.linalg.norm(centers[0] - centers[1]))
    assert_close(mass_center_dislocation(a, b), torch.tensor(ref), rtol=1e-12)
    assert torch.equal(mass_center_dislocation(a, a), torch.zeros(4, dtype=DT))
    # a sign flip does not move the center of the absolute map
    assert torch.equal(mass_center_dislocation(a, -a), torch.zeros(4, dtype=DT))


# ---------------------------------------------------------------------------------------------
# AUC over log eps (002 Fig. 2a)


def test_auc_log_eps_002_normalisation():
    eps = [2, 4, 8, 16]  # 002: log2 eps = 1, 2, 3, 4, a width of 3
    assert float(auc_log_eps(eps, [1.0, 1.0, 1.0, 1.0])) == 3.0
    # the trapezoid rule is exact for a metric linear in log2 eps: int_1^4 t dt = 7.5
    assert float(auc_log_eps(eps, [1.0, 2.0, 3.0, 4.0])) == 7.5
    assert float(auc_log_eps(eps, [0.9, 0.8, 0.6, 0.2])) == pytest.approx(1.95, abs=1e-14)
    # unequal spacing in log eps: trapezoids of widths 1 and 2
    assert float(auc_log_eps([1, 2, 8], [0.0, 1.0, 1.0])) == pytest.approx(2.5, abs=1e-14)
    # natural log: the width is 3 ln 2
    assert float(auc_log_eps(eps, [1.0] * 4, base=math.e)) == pytest.approx(3 * math.log(2))
    # per image: values (m, B)
    v = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0], [1.0, 3.0]], dtype=DT)
    assert_close(auc_log_eps(torch.tensor(eps), v), torch.tensor([3.0, 4.5], dtype=DT), rtol=0)


# ---------------------------------------------------------------------------------------------
# bad input


def test_bad_input_errors():
    a = maps(2, 3, 4)
    with pytest.raises(ValueError, match="`a` and `b` must have the same shape"):
        dissimilarity(a, maps(2, 4, 3))
    with pytest.raises(TypeError, match="`b` must be a torch.Tensor"):
        cosine_distance(a, a.numpy())
    with pytest.raises(TypeError, match="`a` must be a floating-point tensor"):
        spearman(torch.ones(2, 3, dtype=torch.long), a[:, 0])
    bad = a.clone()
    bad[0, 0, 0] = math.inf
    with pytest.raises(ValueError, match="`b` contains 1 NaN or infinite"):
        topk_intersection(a, bad, 2)
    with pytest.raises(ValueError, match="`a` is an empty batch"):
        dissimilarity(a[:0], a[:0])
    zero = a.clone()
    zero[1] = 0
    with pytest.raises(ValueError, match=r"`a` has l2 norm zero for images \[1\]"):
        dissimilarity(zero, a)
    with pytest.raises(ValueError, match=r"`b` has l2 norm zero for images \[1\]"):
        cosine_distance(a, zero)
    with pytest.raises(ValueError, match=r"`a` has total absolute mass zero for images \[1\]"):
        mass_center_dislocation(zero, a)
    with pytest.raises(ValueError, match="`k` must be <= 12"):
        topk_intersection(a, a, 13)
    with pytest.raises(ValueError, match="`k` must be >= 1"):
        topk_intersection(a, a, 0)
    with pytest.raises(TypeError, match="`absolute` must be True or False"):
        topk_intersection(a, a, 1, absolute=1)
    with pytest.raises(ValueError, match="at least 2 features"):
        spearman(a[:, :1, :1], a[:, :1, :1])
    with pytest.raises(ValueError, match=r"`a` must be \(B, C, H, W\) or \(B, H, W\)"):
        mass_center(maps(2, 1, 3, 4, 4))
    with pytest.raises(ValueError, match="at least 3 dims"):
        pixel_map(maps(2, 5))
    with pytest.raises(ValueError, match="`eps` must be strictly increasing"):
        auc_log_eps([2, 8, 4], [1, 1, 1])
    with pytest.raises(ValueError, match="`eps` must be finite and > 0"):
        auc_log_eps([0, 2, 4], [1, 1, 1])
    with pytest.raises(ValueError, match="`eps` must be 1-D with at least 2 budgets"):
        auc_log_eps([2], [1])
    with pytest.raises(ValueError, match=r"`values` must have shape \(4, ...\)"):
        auc_log_eps([2, 4, 8, 16], [1, 1, 1])
    with pytest.raises(ValueError, match="`values` contains NaN"):
        auc_log_eps([2, 4], [1, math.nan])
    with pytest.raises(ValueError, match="`base` must not be 1"):
        auc_log_eps([2, 4], [1, 1], base=1)
