"""Cross-sections of decision regions (geomrob.sections) and their figure.

References: closed forms on affine classifiers (the boundary is a known line in the (a, b) plane)
and on the quadratic classifier of DESIGN.md section 3 (the normal section of
F(z) = z_0 - 1 + (k/2) z_1^2 is the parabola a = 1 - (k/2) b^2), point-by-point evaluation of a
tanh MLP, and geomrob's curvature machinery. float64 throughout: the margin of an affine or
quadratic classifier is computed by the library and by the closed form with different rounding
only, so they agree to rtol 1e-12, and the boundary read off the grid by linear interpolation is
exact (up to rounding) wherever the margin is affine in a.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from reference import Quadratic, assert_close
from torch import nn

from geomrob import boundary_points
from geomrob.plotting import cross_section_figure, save_figure
from geomrob.sections import CrossSection, cross_section, normal_section
from geomrob.theory import normal_section_curvature

DT = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def linear(d: int, L: int, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(d, L).to(DT)


def tanh_mlp(d: int, L: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, L)).to(DT)


# ---------------------------------------------------------------------------------------------
# affine classifiers: the boundary is a line


def test_binary_linear_labels_margin_and_boundary_line():
    d = 6
    model = linear(d, 2, seed=0)
    x = torch.randn(1, d, generator=gen(1), dtype=DT)
    W, c = model.weight.detach(), model.bias.detach()
    k0 = int(model(x).argmax())
    other = 1 - k0
    w = W[other] - W[k0]  # F = f_other - f_k0 < 0 at x
    u = w + 0.3 * torch.randn(d, generator=gen(2), dtype=DT)  # towards the boundary, not normal
    v = torch.randn(d, generator=gen(3), dtype=DT)
    s = cross_section(model, x, u, v, extent=(3.0, 2.0), resolution=(41, 31))

    uh, vh = u / u.norm(), v / v.norm()
    c0 = float(w @ x[0] + c[other] - c[k0])
    c1, c2 = float(w @ uh), float(w @ vh)
    assert c0 < 0 < c1
    A, B = torch.meshgrid(s.a, s.b, indexing="ij")
    F = c0 + c1 * A + c2 * B  # closed form, every grid point
    assert s.labels.shape == (41, 31) and s.margin.shape == (41, 31)
    assert_close(s.margin, -F, rtol=1e-12)
    clear = F.abs() > 1e-9
    expected = torch.where(F > 0, other, k0)
    assert torch.equal(s.labels[clear], expected[clear])
    assert s.origin_label == k0
    assert s.origin_margin == pytest.approx(-c0, rel=1e-12)
    assert torch.allclose(s.u, uh, rtol=0, atol=1e-15) and torch.allclose(s.v, vh, atol=1e-15)
    assert s.cosine == pytest.approx(float(uh @ vh), abs=1e-14)
    assert s.extent == (3.0, 2.0)

    # the zero set of the margin is the line c0 + c1 a + c2 b = 0, read off along a >= 0
    a_star = -(c0 + c2 * s.b) / c1
    found = s.boundary_distance()
    inside = (a_star >= 0) & (a_star <= 3.0)
    assert bool(inside.sum() >= 10)
    assert_close(found[inside], a_star[inside], rtol=1e-10)
    assert bool(torch.isnan(found[~inside]).all())


def test_multiclass_linear_labels_against_closed_form_logits():
    d, L = 5, 4
    model = linear(d, L, seed=3)
    x = torch.randn(1, d, generator=gen(4), dtype=DT)
    u = torch.randn(d, generator=gen(5), dtype=DT)
    v = torch.randn(d, generator=gen(6), dtype=DT)
    s = cross_section(model, x, u, v, extent=4.0, resolution=(23, 19), keep_logits=True)
    W, c = model.weight.detach(), model.bias.detach()
    uh, vh = u / u.norm(), v / v.norm()
    # logits(a, b) = W x + c + a W u + b W v, as outer products
    logits = (W @ x[0] + c) + s.a[:, None, None] * (W @ uh) + s.b[None, :, None] * (W @ vh)
    assert_close(s.logits, logits, rtol=1e-12)
    top2 = logits.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > 1e-9
    assert torch.equal(s.labels[clear], logits.argmax(-1)[clear])
    assert len(torch.unique(s.labels)) >= 2  # the plane crosses at least one boundary
    k0 = s.origin_label
    rest = torch.cat([logits[..., :k0], logits[..., k0 + 1 :]], dim=-1).max(-1).values
    assert_close(s.margin, logits[..., k0] - rest, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# the quadratic of DESIGN.md section 3: the normal section is a parabola


def quadratic(d: int, k: float) -> Quadratic:
    w = torch.zeros(d, dtype=DT)
    w[0] = 1.0
    A = torch.zeros(d, d, dtype=DT)
    A[1, 1] = k
    return Quadratic(w, 1.0, A)


@pytest.mark.parametrize("k", [0.8, -0.8])
def test_quadratic_normal_section_is_the_parabola_with_the_design_sign(k):
    d = 4
    model = quadratic(d, k)
    x = torch.zeros(1, d, dtype=DT)
    e = torch.eye(d, dtype=DT)
    s = cross_section(model, x, e[0], e[1], extent=(2.0, 1.0), resolution=(81, 41))
    A, B = torch.meshgrid(s.a, s.b, indexing="ij")
    F = A - 1.0 + 0.5 * k * B**2
    assert s.origin_label == 0
    assert_close(s.margin, -F, rtol=1e-12)  # k0 = 0, margin = f_0 - f_1 = -F
    curve = s.boundary_distance()
    expected = 1.0 - 0.5 * k * s.b**2  # the margin is affine in a: interpolation is exact
    assert_close(curve, expected, rtol=1e-12)
    # sign (DESIGN.md): positive curvature bends the boundary towards x
    off = s.b.abs() > 0.4
    if k > 0:
        assert bool((curve[off] < 1.0).all())
    else:
        assert bool((curve[off] > 1.0).all())
    # a parabola fitted to the section gives the curvature that the hvp machinery measures
    fit = np.polyfit(s.b.numpy(), curve.numpy(), 2)
    pts = boundary_points(model, x)
    sc = normal_section_curvature(model, pts, e[1:2])
    assert float(sc.tangent[0, 0]) == pytest.approx(k, rel=1e-10)
    assert -2 * fit[0] == pytest.approx(float(sc.tangent[0, 0]), rel=1e-9)


def test_normal_section_puts_the_boundary_point_at_distance_r():
    d = 4
    model = quadratic(d, 0.6)
    x = torch.tensor([[-0.5, 0.0, 0.3, -0.2]], dtype=DT)  # F(x) = -1.5, normal e_0
    v = torch.tensor([0.7, 1.0, 0.0, 0.0], dtype=DT)  # not orthogonal to the normal
    s = normal_section(model, x, v, resolution=(61, 31))
    assert s.distance == pytest.approx(1.5, rel=1e-9)
    assert s.adv_label == 1 and s.origin_label == 0
    assert s.orthogonalized and s.normalized
    assert_close(s.u, torch.eye(d, dtype=DT)[0], rtol=1e-9)
    assert_close(s.v, torch.eye(d, dtype=DT)[1], rtol=1e-9)  # v made orthogonal to u
    assert s.cosine == pytest.approx(0.7 / math.hypot(0.7, 1.0), rel=1e-9)
    assert s.extent == pytest.approx((4.5, 4.5))  # DEFAULT_EXTENT_FACTOR * ||r||
    curve = s.boundary_distance()
    assert_close(curve, 1.5 - 0.3 * s.b**2, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# grid layout and batching


def test_grid_indexing_and_batching_give_identical_results():
    d, L = 7, 3
    model = tanh_mlp(d, L, seed=7)
    x = torch.randn(1, 1, d, generator=gen(8), dtype=DT).view(1, d)
    u = torch.randn(d, generator=gen(9), dtype=DT)
    v = torch.randn(d, generator=gen(10), dtype=DT)
    kw = {"extent": (5.0, 3.0), "resolution": (9, 13)}
    full = cross_section(model, x, u, v, **kw)
    for bs in (1, 7, 50):
        part = cross_section(model, x, u, v, batch_size=bs, **kw)
        assert torch.equal(part.labels, full.labels)
        assert_close(part.margin, full.margin, rtol=1e-13)
    # labels[i, j] is the point x + a_i u + b_j v, evaluated one at a time
    uh, vh = u / u.norm(), v / v.norm()
    with torch.no_grad():
        for i, j in [(0, 0), (8, 0), (0, 12), (3, 11), (6, 2)]:
            out = model(x + full.a[i] * uh + full.b[j] * vh)
            assert int(out.argmax()) == int(full.labels[i, j])
            k0 = full.origin_label
            rest = torch.cat([out[0, :k0], out[0, k0 + 1 :]]).max()
            assert float(full.margin[i, j]) == pytest.approx(float(out[0, k0] - rest), rel=1e-12)


def test_unnormalised_and_orthogonalised_directions():
    d = 3
    model = quadratic(d, 0.5)
    x = torch.zeros(1, d, dtype=DT)
    u = torch.tensor([2.0, 0.0, 0.0], dtype=DT)
    v = torch.tensor([1.0, 0.5, 0.0], dtype=DT)
    raw = cross_section(model, x, u, v, extent=1.0, resolution=5, normalize=False)
    assert torch.equal(raw.u, u) and torch.equal(raw.v, v)
    A, B = torch.meshgrid(raw.a, raw.b, indexing="ij")
    # point = a u + b v = (2a + b, b / 2, 0); F = z_0 - 1 + 0.25 z_1^2
    F = 2 * A + B - 1.0 + 0.25 * (B / 2) ** 2
    assert_close(raw.margin, -F, rtol=1e-12)
    orth = cross_section(
        model, x, u, v, extent=1.0, resolution=5, normalize=False, orthogonalize=True
    )
    assert_close(orth.v, torch.tensor([0.0, 0.5, 0.0], dtype=DT), rtol=1e-15)
    assert orth.orthogonalized and not orth.normalized
    # input-shaped directions and a batch-shaped x are accepted
    img = nn.Sequential(nn.Flatten(), quadratic(4, 0.5))
    xi = torch.zeros(1, 1, 2, 2, dtype=DT)
    s = cross_section(
        img,
        xi,
        torch.eye(4, dtype=DT)[0].view(1, 2, 2),
        torch.eye(4, dtype=DT)[1],
        extent=2.0,
        resolution=3,
    )
    assert s.labels.tolist() == [[0, 0, 0], [0, 0, 0], [1, 1, 1]]
    json.dumps(s.to_dict())


# ---------------------------------------------------------------------------------------------
# bad inputs


def test_bad_inputs_raise_naming_the_argument():
    d = 4
    model = quadratic(d, 0.5)
    x = torch.zeros(1, d, dtype=DT)
    e = torch.eye(d, dtype=DT)
    ok = {"extent": 1.0}
    with pytest.raises(ValueError, match="parallel"):
        cross_section(model, x, e[0], -2.5 * e[0], **ok)
    with pytest.raises(ValueError, match="parallel"):
        cross_section(model, x, e[0], 3 * e[0], orthogonalize=True, **ok)
    with pytest.raises(ValueError, match="`u` is the zero vector"):
        cross_section(model, x, torch.zeros(d, dtype=DT), e[1], **ok)
    with pytest.raises(ValueError, match="`v` is the zero vector"):
        cross_section(model, x, e[0], torch.zeros(d, dtype=DT), **ok)
    with pytest.raises(ValueError, match=r"`v` must have shape \(4,\)"):
        cross_section(model, x, e[0], torch.ones(d + 1, dtype=DT), **ok)
    with pytest.raises(ValueError, match="`extent` must be > 0"):
        cross_section(model, x, e[0], e[1], extent=0.0)
    with pytest.raises(ValueError, match="`extent` must be > 0"):
        cross_section(model, x, e[0], e[1], extent=-1.0)
    with pytest.raises(ValueError, match=r"`extent\[1\]` must be > 0"):
        cross_section(model, x, e[0], e[1], extent=(1.0, 0.0))
    with pytest.raises(ValueError, match="`extent` must be a number or a pair"):
        cross_section(model, x, e[0], e[1], extent=(1.0, 1.0, 1.0))
    with pytest.raises(TypeError, match="`extent`"):
        cross_section(model, x, e[0], e[1], extent="wide")
    with pytest.raises(ValueError, match="`resolution` must be >= 2"):
        cross_section(model, x, e[0], e[1], resolution=1, **ok)
    with pytest.raises(ValueError, match=r"`resolution\[0\]` must be >= 2"):
        cross_section(model, x, e[0], e[1], resolution=(1, 5), **ok)
    with pytest.raises(TypeError, match="`resolution` must be an int"):
        cross_section(model, x, e[0], e[1], resolution=10.5, **ok)
    with pytest.raises(ValueError, match="`batch_size` must be >= 1"):
        cross_section(model, x, e[0], e[1], batch_size=0, **ok)
    with pytest.raises(TypeError, match="`orthogonalize` must be a bool"):
        cross_section(model, x, e[0], e[1], orthogonalize=1, **ok)
    with pytest.raises(ValueError, match="batch of one"):
        cross_section(model, torch.zeros(2, d, dtype=DT), e[0], e[1], **ok)
    with pytest.raises(TypeError, match="`u` must be floating"):
        cross_section(model, x, torch.tensor([1, 0, 0, 0]), e[1], **ok)
    with pytest.raises(TypeError, match="`u` has dtype torch.float32"):
        cross_section(model, x, e[0].float(), e[1], **ok)
    with pytest.raises(ValueError, match="`v` contains 1 NaN"):
        cross_section(model, x, e[0], torch.tensor([0.0, 1.0, math.nan, 0.0], dtype=DT), **ok)
    with pytest.raises(TypeError, match="`u` must be a torch.Tensor"):
        cross_section(model, x, [1.0, 0.0, 0.0, 0.0], e[1], **ok)
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module"):
        cross_section(lambda t: t, x, e[0], e[1], **ok)


def test_normal_section_errors():
    d = 3
    flat = nn.Linear(d, 2).to(DT)
    with torch.no_grad():
        flat.weight.zero_()
        flat.bias.copy_(torch.tensor([1.0, 0.0]))
    x = torch.zeros(1, d, dtype=DT)
    e = torch.eye(d, dtype=DT)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="did not converge"):
        normal_section(flat, x, e[1])  # a constant classifier has no boundary
    model = quadratic(d, 0.5)
    pts = boundary_points(model, x)
    with pytest.raises(ValueError, match="boundary points of `x` itself"):
        normal_section(model, x + 0.1, e[1], points=pts)
    with pytest.raises(TypeError, match="`points` must be a BoundaryPoints"):
        normal_section(model, x, e[1], points="pts")
    with pytest.raises(ValueError, match="parallel"):
        normal_section(model, x, e[0], points=pts)  # v along the normal


# ---------------------------------------------------------------------------------------------
# the figure


def test_cross_section_figure_renders_png(tmp_path):
    import matplotlib.image as mpimg

    d, L = 16, 4
    model = tanh_mlp(d, L, seed=11)
    x = torch.randn(1, d, generator=gen(12), dtype=DT)
    vs = torch.randn(3, d, generator=gen(13), dtype=DT)
    sections = [normal_section(model, x, vs[i], resolution=41) for i in range(2)]
    sections.append(cross_section(model, x, vs[2], vs[0], extent=(2.0, 1.0), resolution=(31, 21)))
    fig = cross_section_figure(
        sections,
        titles=["v random", "v in S", "plane (v2, v0)"],
        class_names=[f"digit {k}" for k in range(L)],
        title="normal sections",
    )
    path = save_figure(fig, tmp_path / "sections.png")
    assert path.exists() and path.stat().st_size > 0
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4) and img.shape[1] > img.shape[0] > 100
    # two rows, a single section
    fig2 = cross_section_figure(sections, ncols=2)
    assert len([a for a in fig2.axes if a.get_visible() and a.axison]) == 3
    cross_section_figure(sections[0])
    with pytest.raises(ValueError, match="`sections` is empty"):
        cross_section_figure([])
    with pytest.raises(TypeError, match=r"`sections\[1\]` must be a CrossSection"):
        cross_section_figure([sections[0], "s"])
    with pytest.raises(ValueError, match="`titles` must give one title per section"):
        cross_section_figure(sections, titles=["a"])
    with pytest.raises(ValueError, match="`ncols` must be >= 1"):
        cross_section_figure(sections, ncols=0)
    assert isinstance(sections[0], CrossSection)
