"""Fooling rates, the 2017 universal perturbation and the random-noise reference.

Linear classifiers make the geometry exact: a binary linear classifier is fooled by ``v`` iff
``v`` crosses the hyperplane, and a uniform random direction ``u`` on the sphere fools a point
at distance ``t`` with noise norm ``rho`` iff ``rho * (u . n) > t``, whose probability is a
regularized incomplete beta function.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from scipy.optimize import brentq
from scipy.special import betainc
from torch import nn

from geomrob.attacks.universal import (
    NoiseCurve,
    UAPResult,
    fooling_rate,
    fooling_rates,
    noise_fooling_curve,
    rho_rand,
    universal_perturbation,
)

DT = torch.float64
INF = float("inf")


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------
# Problems


def binary_linear(d: int, seed: int, bias: float = 0.0) -> tuple[nn.Linear, torch.Tensor]:
    """Logits ``(0, w.x + bias)``: label 1 iff ``w.x + bias > 0``; returns the unit normal too."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g, dtype=DT)
    lin = nn.Linear(d, 2).to(DT)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[1] = w
        lin.bias.copy_(torch.tensor([0.0, bias], dtype=DT))
    return lin, w / w.norm()


def points_at_distances(normal: torch.Tensor, t: torch.Tensor, seed: int) -> torch.Tensor:
    """``x_i = -t_i n + z_i`` with ``z_i`` orthogonal to the unit normal ``n`` (bias 0)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(len(t), len(normal), generator=g, dtype=DT)
    z = z - (z @ normal)[:, None] * normal
    return -t[:, None] * normal + z


def shared_normal_linear(d: int = 20, num_classes: int = 5, seed: int = 0) -> nn.Linear:
    """Class 0 holds most Gaussian points and every other class lies roughly along one unit
    direction w (normals w + 0.5 g_c / sqrt(d)): a universal direction exists."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g, dtype=DT)
    w /= w.norm()
    W = torch.zeros(num_classes, d, dtype=DT)
    W[1:] = w + 0.5 * torch.randn(num_classes - 1, d, generator=g, dtype=DT) / math.sqrt(d)
    b = torch.zeros(num_classes, dtype=DT)
    b[1:] = -2.0
    lin = nn.Linear(d, num_classes).to(DT)
    with torch.no_grad():
        lin.weight.copy_(W)
        lin.bias.copy_(b)
    return lin


def gaussian(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=DT)


def messages_match(record, *patterns: str) -> bool:
    """The recorded warnings are, in order, one per pattern."""
    messages = [str(w.message) for w in record]
    return len(messages) == len(patterns) and all(
        p in m for p, m in zip(patterns, messages, strict=True)
    )


def quiet_uap(*args, **kwargs) -> UAPResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return universal_perturbation(*args, **kwargs)


# --------------------------------------------------------------------------------------------
# fooling_rate / fooling_rates


def test_fooling_rate_binary_linear_exact():
    lin, n = binary_linear(5, seed=0)
    t0 = torch.linspace(0.1, 1.0, 10, dtype=DT)  # class 0, distances 0.1 ... 1.0
    t1 = torch.tensor([0.15, 0.35, 0.75, 0.95], dtype=DT)  # class 1 (negative t: other side)
    x = torch.cat([points_at_distances(n, t0, 1), points_at_distances(n, -t1, 2)])
    assert lin(x).argmax(1).tolist() == [0] * 10 + [1] * 4
    # +0.55 n crosses for the class-0 points with t < 0.55 (5 of them) and drives class 1
    # deeper; -0.55 n fools the class-1 points with t < 0.55 (2 of them).
    assert fooling_rate(lin, x, 0.55 * n) == 5 / 14
    assert fooling_rate(lin, x, -0.55 * n) == 2 / 14
    assert fooling_rate(lin, x, torch.zeros(5, dtype=DT)) == 0.0
    # A component orthogonal to n changes nothing.
    ortho = torch.randn(5, generator=torch.Generator().manual_seed(3), dtype=DT)
    ortho -= (ortho @ n) * n
    assert fooling_rate(lin, x, 0.55 * n + 10 * ortho) == 5 / 14
    rates = fooling_rates(lin, x, torch.stack([0.55 * n, -0.55 * n, 2 * n]))
    assert rates.dtype == DT and rates.tolist() == [5 / 14, 2 / 14, 10 / 14]


@pytest.mark.parametrize("batch_size", [None, 1, 5, 33])
def test_fooling_rates_equal_loop(batch_size):
    model = shared_normal_linear(d=6, num_classes=4, seed=1)
    x = gaussian(11, 6, seed=2)
    V = gaussian(7, 6, seed=3) * torch.linspace(0.1, 4.0, 7, dtype=DT)[:, None]
    rates = fooling_rates(model, x, V, batch_size=batch_size)
    loop = [fooling_rate(model, x, v, batch_size=batch_size) for v in V]
    assert rates.shape == (7,)
    assert rates.tolist() == loop
    assert len(set(loop)) > 2  # a non-trivial case


def image_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 3)).to(DT)


def test_flat_and_image_shaped_perturbations():
    model = image_model()
    x = gaussian(9, 6, seed=4).view(9, 2, 3)
    v = gaussian(1, 6, seed=5)[0]
    assert fooling_rate(model, x, v) == fooling_rate(model, x, v.view(2, 3))
    V = gaussian(4, 6, seed=6)
    assert torch.equal(fooling_rates(model, x, V), fooling_rates(model, x, V.view(4, 2, 3)))


def test_fooling_rate_bounds_clip():
    # 1-D: label 1 iff x > 1.2; with the box [0, 1] no perturbation can reach it.
    lin = nn.Linear(1, 2).to(DT)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0], [1.0]], dtype=DT))
        lin.bias.copy_(torch.tensor([0.0, -1.2], dtype=DT))
    x = torch.tensor([[0.1], [0.5], [0.9]], dtype=DT)
    v = torch.tensor([0.8], dtype=DT)
    assert fooling_rate(lin, x, v) == 2 / 3
    assert fooling_rate(lin, x, v, bounds=(0.0, 1.0)) == 0.0
    assert fooling_rates(lin, x, v[None], bounds=(0.0, 1.0)).tolist() == [0.0]
    with pytest.raises(ValueError, match="`x` lies outside `bounds`"):
        fooling_rate(lin, x, v, bounds=(0.2, 1.0))


def test_fooling_rate_bad_inputs():
    model = image_model()
    x = gaussian(3, 6, seed=0).view(3, 2, 3)
    with pytest.raises(ValueError, match=r"`v` must have shape \(6,\) or \(2, 3\).*got \(5,\)"):
        fooling_rate(model, x, torch.zeros(5, dtype=DT))
    with pytest.raises(ValueError, match=r"`v` must have shape .*got \(1, 2, 3\)"):
        fooling_rate(model, x, torch.zeros(1, 2, 3, dtype=DT))
    with pytest.raises(TypeError, match="`v` must be a torch.Tensor"):
        fooling_rate(model, x, [0.0] * 6)
    with pytest.raises(TypeError, match="`v` has dtype torch.float32"):
        fooling_rate(model, x, torch.zeros(6))
    with pytest.raises(ValueError, match="`v` contains 1 NaN"):
        fooling_rate(model, x, torch.tensor([0, 0, 0, 0, 0, math.nan], dtype=DT))
    with pytest.raises(ValueError, match=r"`V` must have shape \(m, 6\) or \(m, 2, 3\)"):
        fooling_rates(model, x, torch.zeros(6, dtype=DT))
    with pytest.raises(ValueError, match=r"`V` must have shape .*got \(2, 5\)"):
        fooling_rates(model, x, torch.zeros(2, 5, dtype=DT))
    with pytest.raises(ValueError, match=r"`V` must have shape .*got \(0, 6\)"):
        fooling_rates(model, x, torch.zeros(0, 6, dtype=DT))
    with pytest.raises(ValueError, match="`batch_size` must be >= 1"):
        fooling_rate(model, x, torch.zeros(6, dtype=DT), batch_size=0)
    with pytest.raises(ValueError, match="`x` is an empty batch"):
        fooling_rate(model, x[:0], torch.zeros(6, dtype=DT))
    with pytest.raises(TypeError, match="`x` must be a floating-point tensor"):
        fooling_rate(model, torch.zeros(3, 2, 3, dtype=torch.long), torch.zeros(6, dtype=DT))


# --------------------------------------------------------------------------------------------
# universal_perturbation


def test_uap_binary_linear_exact():
    """Every DeepFool step of a binary linear classifier is along its normal n, so v = a n and
    x_i is fooled iff t_i < a. With xi = 0.6 < max t the ball caps a at 0.6: the rate is the
    fraction of t_i < 0.6, the same after every pass, and 1 - delta = 0.8 is out of reach."""
    lin, n = binary_linear(10, seed=1)
    t = torch.rand(50, generator=torch.Generator().manual_seed(2), dtype=DT) * 0.9 + 0.1
    x = points_at_distances(n, t, seed=3)
    with pytest.warns(UserWarning, match="did not reach the fooling rate 1 - delta = 0.8"):
        res = universal_perturbation(lin, x, xi=0.6, delta=0.2, max_passes=3, generator=0)
    assert (res.passes, res.converged, len(res.history)) == (3, False, 3)
    torch.testing.assert_close(res.v, 0.6 * n, rtol=1e-12, atol=1e-14)
    expected = float((t < 0.6).double().mean())
    assert res.history == [expected] * 3 and res.fooling_rate == expected
    assert abs(res.norm - 0.6) <= 1e-12
    # With a larger ball one pass fools every point: a only grows and covers each x_i visited.
    res = universal_perturbation(lin, x, xi=2.0, delta=0.2, generator=0)
    assert (res.passes, res.converged, res.fooling_rate) == (1, True, 1.0)
    assert float(res.v @ n) / res.norm >= 1 - 1e-12 and res.norm <= 2.0


@pytest.mark.parametrize("p, xi", [(2, 4.0), (INF, 1.5)], ids=["l2", "linf"])
def test_uap_reaches_target(p, xi):
    model = shared_normal_linear()
    x = gaussian(100, 20, seed=1)
    res = universal_perturbation(model, x, xi=xi, p=p, delta=0.2, generator=0)
    assert isinstance(res, UAPResult) and res.converged
    assert res.fooling_rate >= 0.8 and res.history[-1] == res.fooling_rate
    assert res.passes == len(res.history) == len(res.updates) == len(res.deepfool_failures)
    assert res.v.shape == (20,) and res.v.dtype == DT
    assert res.fooling_rate == fooling_rate(model, x, res.v)
    if p == 2:
        assert res.v.norm() <= xi + 1e-12 and res.norm == float(res.v.norm())
    else:
        assert res.v.abs().max() <= xi and res.norm == float(res.v.abs().max())
    d = res.to_dict()
    assert d["passes"] == res.passes and len(d["v"]) == 20


def test_uap_image_shape_and_bounds():
    model = image_model()
    x = gaussian(40, 6, seed=7).clamp(-2, 2).view(40, 2, 3)
    box = (-2.0, 2.0)
    res = quiet_uap(model, x, xi=2.0, bounds=box, max_passes=3, generator=1)
    assert res.v.shape == (2, 3)
    assert res.fooling_rate == fooling_rate(model, x, res.v, bounds=box)
    assert res.v.norm() <= 2.0 + 1e-12
    with pytest.raises(ValueError, match="`x` lies outside `bounds`"):
        universal_perturbation(model, x, xi=1.0, bounds=(-1.0, 1.0))


def test_uap_tiny_xi_stops_after_max_passes():
    model = shared_normal_linear()
    x = gaussian(30, 20, seed=1)
    with pytest.warns(UserWarning, match=r"max_passes=2 \(reached"):
        res = universal_perturbation(model, x, xi=1e-3, max_passes=2, generator=0)
    assert res.passes == 2 and len(res.history) == 2 and not res.converged
    assert res.norm <= 1e-3 + 1e-12


def test_uap_seed_determinism_and_batch_invariance():
    model = shared_normal_linear()
    x = gaussian(60, 20, seed=1)
    kw = {"xi": 2.0, "max_passes": 2}
    a = quiet_uap(model, x, generator=5, **kw)
    b = quiet_uap(model, x, generator=torch.Generator().manual_seed(5), **kw)
    c = quiet_uap(model, x, generator=6, **kw)
    # Look-ahead batches of one image are the plain sequential loop of Algorithm 1.
    d = quiet_uap(model, x, generator=5, batch_size=1, **kw)
    assert torch.equal(a.v, b.v) and a.history == b.history
    assert torch.equal(a.v, d.v) and a.updates == d.updates
    assert not torch.equal(a.v, c.v)


def test_uap_resume_is_bitwise(tmp_path):
    model = shared_normal_linear()
    x = gaussian(60, 20, seed=1)
    kw = {"xi": 2.0, "p": 2, "max_passes": 3, "generator": 7}
    full = quiet_uap(model, x, **kw)
    assert full.passes == 3 and not full.converged

    class Stop(Exception):
        pass

    def stop_after_first(index, rate):
        if index == 0:
            raise Stop

    state = tmp_path / "uap" / "state.pt"
    with pytest.raises(Stop):
        quiet_uap(model, x, state_path=state, callback=stop_after_first, **kw)
    assert state.exists()
    seen = []
    resumed = quiet_uap(model, x, state_path=state, callback=lambda i, r: seen.append((i, r)), **kw)
    assert resumed.resumed_passes == 1 and [i for i, _ in seen] == [1, 2]
    assert torch.equal(resumed.v, full.v)
    assert resumed.history == full.history and resumed.updates == full.updates
    assert seen[-1][1] == full.fooling_rate
    # A finished state is returned as it is; more passes continue it.
    again = quiet_uap(model, x, state_path=state, **kw)
    assert again.resumed_passes == 3 and torch.equal(again.v, full.v)
    longer = quiet_uap(model, x, state_path=state, **{**kw, "max_passes": 4})
    assert longer.passes == 4 and longer.history[:3] == full.history
    # Other options: a warning, then a fresh run (the same as without a state file).
    with pytest.warns(UserWarning) as rec:
        other = universal_perturbation(model, x, state_path=state, **{**kw, "xi": 1.0})
    assert messages_match(rec, "written for other options", "did not reach")
    assert other.resumed_passes == 0
    assert torch.equal(other.v, quiet_uap(model, x, **{**kw, "xi": 1.0}).v)
    # Another seed is another run, too.
    with pytest.warns(UserWarning) as rec:
        universal_perturbation(model, x, state_path=state, **{**kw, "generator": 8})
    assert messages_match(rec, "written for other options", "did not reach")
    # A corrupt file is ignored with a warning.
    state.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning) as rec:
        universal_perturbation(model, x, state_path=state, **kw)
    assert messages_match(rec, "cannot read the state file", "did not reach")


def test_uap_progress_bar(capsys):
    model = shared_normal_linear()
    x = gaussian(10, 20, seed=1)
    res = quiet_uap(model, x, xi=4.0, progress=True, generator=0)
    assert res.passes >= 1
    assert "UAP pass 1/10" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kw, exc, match",
    [
        ({"xi": 0.0}, ValueError, "`xi` must be > 0.0"),
        ({"xi": -1.0}, ValueError, "`xi` must be > 0.0"),
        ({"xi": math.nan}, ValueError, "`xi` must be finite"),
        ({"xi": 1.0, "p": 3}, ValueError, r"`p` must be 2 or float\('inf'\)"),
        ({"xi": 1.0, "p": 1.0}, ValueError, r"`p` must be 2 or float\('inf'\)"),
        ({"xi": 1.0, "delta": 0.0}, ValueError, "`delta` must be > 0.0"),
        ({"xi": 1.0, "delta": 1.0}, ValueError, "`delta` must be < 1.0"),
        ({"xi": 1.0, "max_passes": 0}, ValueError, "`max_passes` must be >= 1"),
        ({"xi": 1.0, "max_iter": 0}, ValueError, "`max_iter` must be >= 1"),
        ({"xi": 1.0, "overshoot": -0.1}, ValueError, "`overshoot` must be >= 0.0"),
        ({"xi": 1.0, "num_candidates": 1}, ValueError, "`num_candidates` must be >= 2"),
        ({"xi": 1.0, "generator": "seed"}, TypeError, "`generator` must be None, an int"),
        ({"xi": 1.0, "callback": 3}, TypeError, "`callback` must be callable"),
        ({"xi": 1.0, "state_path": 3}, TypeError, "`state_path` must be None, a str"),
        ({"xi": 1.0, "progress": "yes"}, TypeError, "`progress` must be a bool"),
        ({"xi": 1.0, "bounds": (1.0, 0.0)}, ValueError, "`bounds` must satisfy lo < hi"),
        ({"xi": 1.0, "batch_size": 0}, ValueError, "`batch_size` must be >= 1"),
    ],
)
def test_uap_bad_inputs(kw, exc, match):
    model = shared_normal_linear(d=4, num_classes=3)
    with pytest.raises(exc, match=match):
        universal_perturbation(model, gaussian(5, 4, seed=0), **kw)


def test_uap_bad_data():
    model = shared_normal_linear(d=4, num_classes=3)
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'xi'"):
        universal_perturbation(model, gaussian(5, 4, seed=0))
    with pytest.raises(TypeError, match="`x` has dtype torch.float32"):
        universal_perturbation(model, torch.zeros(5, 4), xi=1.0)
    with pytest.raises(ValueError, match="`x` must be batch-first"):
        universal_perturbation(model, torch.zeros(4, dtype=DT), xi=1.0)
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module"):
        universal_perturbation(lambda z: z, gaussian(5, 4, seed=0), xi=1.0)


# --------------------------------------------------------------------------------------------
# Random-noise reference against the analytic answer


def sphere_tail(s, d: int):
    """P(u . n > s) for u uniform on S^{d-1}, s >= 0: 0.5 I_{1 - s^2}((d-1)/2, 1/2)."""
    s = torch.as_tensor(s, dtype=DT).clamp(0.0, 1.0).numpy()
    return torch.from_numpy(0.5 * betainc((d - 1) / 2, 0.5, 1.0 - s**2))


def analytic_rate(rho: float, t: torch.Tensor, d: int) -> float:
    return float(sphere_tail(t / rho, d).mean()) if rho > 0 else 0.0


def analytic_sigma(rho: float, t: torch.Tensor, d: int, n_draws: int) -> float:
    """Standard error of the measured rate: n_draws Bernoulli(p_i) per point, N pairs."""
    p = sphere_tail(t / rho, d)
    return math.sqrt(float((p * (1 - p)).sum()) * n_draws) / (len(t) * n_draws)


D = 20


@pytest.fixture(scope="module")
def noise_problem():
    lin, n = binary_linear(D, seed=11)
    g = torch.Generator().manual_seed(12)
    t = torch.rand(200, generator=g, dtype=DT) * 0.9 + 0.1  # distances in [0.1, 1]
    side = torch.where(torch.rand(200, generator=g, dtype=DT) < 0.5, 1.0, -1.0).to(DT)
    x = points_at_distances(n, side * t, seed=13)  # both classes
    assert torch.allclose(lin(x)[:, 1].abs() / lin.weight[1].norm(), t, rtol=1e-12, atol=0)
    return lin, x, t


def test_noise_curve_matches_sphere_cap_probability(noise_problem):
    lin, x, t = noise_problem
    n_draws = 50  # N = 10_000 pairs: sigma <= 0.005
    norms = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 1e3]
    curve = noise_fooling_curve(lin, x, norms, n_draws=n_draws, generator=0)
    assert isinstance(curve, NoiseCurve) and curve.norms.tolist() == norms
    assert curve.fooling_rates.dtype == DT and curve.fooling_rates[0] == 0.0
    for rho, measured in zip(norms, curve.fooling_rates.tolist(), strict=True):
        expected = analytic_rate(rho, t, D)
        tol = 5 * analytic_sigma(rho, t, D, n_draws) + 1e-12
        assert abs(measured - expected) <= tol, (rho, measured, expected, tol)
    # Half-spaces are star-shaped and the directions are common to every norm: each pair is
    # fooled on an interval (t_i / (u . n_i), inf), so the curve is non-decreasing.
    assert bool((curve.fooling_rates.diff() >= 0).all())
    assert 0.45 < curve.fooling_rates[-1] <= 0.55  # -> 1/2 (one half-space of directions)


def test_noise_curve_determinism_and_chunks(noise_problem):
    lin, x, _ = noise_problem
    norms = torch.tensor([0.5, 2.0, 1.0], dtype=DT)
    a = noise_fooling_curve(lin, x, norms, n_draws=3, generator=1)
    b = noise_fooling_curve(lin, x, norms, n_draws=3, generator=1, batch_size=37)
    c = noise_fooling_curve(lin, x, norms, n_draws=3, generator=2)
    assert torch.equal(a.fooling_rates, b.fooling_rates)
    assert not torch.equal(a.fooling_rates, c.fooling_rates)
    # The same directions serve every norm whatever the others in the list.
    single = noise_fooling_curve(lin, x, [2.0], n_draws=3, generator=1)
    assert single.fooling_rates[0] == a.fooling_rates[1]


def test_rho_rand_matches_analytic_crossing(noise_problem):
    lin, x, t = noise_problem
    target, n_draws, rel_tol = 0.3, 50, 1e-3  # a binary linear classifier never reaches 1/2
    ref = rho_rand(lin, x, target=target, n_draws=n_draws, generator=0, rel_tol=rel_tol)
    assert ref.converged and ref.target == target
    rho_star = brentq(lambda r: analytic_rate(r, t, D) - target, 0.01, 100.0, xtol=1e-12)
    # The measured curve crosses the target within 5 sigma (and one pair, 1/N), and the
    # bisection stops within rel_tol above that crossing; translate both to the analytic curve.
    h = 1e-4 * rho_star
    slope = (analytic_rate(rho_star + h, t, D) - analytic_rate(rho_star - h, t, D)) / (2 * h)
    rate_tol = 5 * analytic_sigma(rho_star, t, D, n_draws) + 1 / (len(t) * n_draws)
    tol = rate_tol + 1.5 * slope * rel_tol * ref.rho
    assert abs(analytic_rate(ref.rho, t, D) - target) <= tol
    assert abs(ref.rho - rho_star) <= tol / slope
    # The curve holds the evaluated norms, sorted, and rho is the smallest one reaching target.
    norms, rates = ref.curve.norms, ref.curve.fooling_rates
    assert bool((norms.diff() > 0).all()) and ref.rho in norms.tolist()
    assert rates[norms.tolist().index(ref.rho)] >= target
    assert bool((rates[norms < ref.rho] < target).all())
    below = norms[norms < ref.rho].max()
    assert ref.rho - below <= rel_tol * ref.rho
    # rho_rand sits on the curve of noise_fooling_curve with the same draws.
    again = noise_fooling_curve(lin, x, norms, n_draws=n_draws, generator=0)
    assert torch.equal(again.fooling_rates, rates)


def test_rho_rand_unreachable_target(noise_problem):
    lin, x, _ = noise_problem
    with pytest.warns(UserWarning, match="rho_rand: random noise did not fool"):
        ref = rho_rand(lin, x[:20], target=0.9, generator=0, max_doublings=10)
    assert not ref.converged and ref.rho == INF
    assert len(ref.curve.norms) == 11 and float(ref.curve.fooling_rates.max()) < 0.9


def test_rho_rand_halves_a_large_guess():
    # Points far from the origin (large mean norm) but close to the boundary.
    lin, n = binary_linear(D, seed=3)
    t = torch.full((30,), 0.01, dtype=DT)
    x = points_at_distances(n, t, seed=4)  # mean ||x|| ~ sqrt(D), far above rho ~ 0.07
    ref = rho_rand(lin, x, target=0.25, n_draws=20, generator=0)
    assert ref.converged and ref.rho < 0.2
    assert ref.curve.norms.max() > 1.0  # it started above and halved down


def test_rho_rand_inputs_on_the_boundary():
    # x = 0 ties the logits (0, w.x): any noise with u.w > 0 flips half of the pairs, at every
    # norm, so halving runs out and the smallest evaluated norm is returned.
    lin, _ = binary_linear(D, seed=5)
    ref = rho_rand(
        lin, torch.zeros(10, D, dtype=DT), target=0.25, n_draws=20, generator=0, max_doublings=12
    )
    assert ref.converged and ref.rho == 2.0**-12 and len(ref.curve.norms) == 13


def test_float32_smoke():
    model = image_model().float()
    x = gaussian(20, 6, seed=8).float().view(20, 2, 3)
    res = quiet_uap(model, x, xi=1.0, p=INF, max_passes=2, generator=0)
    assert res.v.dtype == torch.float32 and res.v.abs().max() <= 1.0
    assert res.fooling_rate == fooling_rate(model, x, res.v)
    curve = noise_fooling_curve(model, x, [0.5, 5.0], n_draws=2, generator=0)
    assert curve.fooling_rates.dtype == DT
    curve64 = noise_fooling_curve(model.double(), x.double(), [0.5, 5.0], n_draws=2, generator=0)
    # The directions are drawn in float64 and cast: float32 and float64 runs see the same ones.
    assert (curve.fooling_rates - curve64.fooling_rates).abs().max() <= 0.1


@pytest.mark.parametrize(
    "kw, exc, match",
    [
        ({"target": 0.0}, ValueError, "`target` must be > 0.0"),
        ({"target": 1.5}, ValueError, "`target` must be <= 1.0"),
        ({"rel_tol": 0.0}, ValueError, "`rel_tol` must be > 0.0"),
        ({"rel_tol": 1.0}, ValueError, "`rel_tol` must be < 1.0"),
        ({"n_draws": 0}, ValueError, "`n_draws` must be >= 1"),
        ({"n_draws": 1.5}, TypeError, "`n_draws` must be an int"),
        ({"max_doublings": 0}, ValueError, "`max_doublings` must be >= 1"),
        ({"generator": 1.5}, TypeError, "`generator` must be None, an int"),
    ],
)
def test_rho_rand_bad_inputs(kw, exc, match):
    lin, _ = binary_linear(4, seed=0)
    with pytest.raises(exc, match=match):
        rho_rand(lin, gaussian(5, 4, seed=0), **kw)


@pytest.mark.parametrize(
    "norms, exc, match",
    [
        ([], ValueError, "`norms` is empty"),
        ([1.0, -1.0], ValueError, r"`norms\[1\]` must be >= 0.0"),
        ([1.0, math.inf], ValueError, r"`norms\[1\]` must be finite"),
        (torch.ones(2, 2), ValueError, "`norms` must be a 1-D real tensor"),
        (1.0, TypeError, "`norms` must be a 1-D tensor or a sequence"),
        ("12", TypeError, "`norms` must be a 1-D tensor or a sequence"),
    ],
)
def test_noise_curve_bad_norms(norms, exc, match):
    lin, _ = binary_linear(4, seed=0)
    with pytest.raises(exc, match=match):
        noise_fooling_curve(lin, gaussian(5, 4, seed=0), norms)
