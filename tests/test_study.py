"""The cached subspace study of 001 Sec. 5: every stage equals the library call it wraps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from geomrob.attacks import deepfool, fooling_rate, rho_rand
from geomrob.study import StudyConfig, subspace_study
from geomrob.subspaces import curved_subspace, normal_subspace, subspace_fooling

DT = torch.float64

# The tiny UAP runs stop at max_passes below 1 - delta; the study reports it, the tests check it.
pytestmark = pytest.mark.filterwarnings("ignore:universal_perturbation did not reach")


def smooth_net(seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 24), nn.Tanh(), nn.Linear(24, 3)).to(DT)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=DT))
    return net.eval()


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(16, 6, generator=g, dtype=DT),
        torch.randn(40, 6, generator=g, dtype=DT),
        torch.randn(60, 6, generator=g, dtype=DT),
    )


CONFIG = StudyConfig(ms=(1, 2, 4), n_vectors=3, n_curvature=12, n_dirs=4, n_random=2, seed=5)


def test_every_stage_is_the_library_call(data):
    net = smooth_net()
    x_fit, x_uap, x_eval = data
    res = subspace_study(net, x_fit, x_uap, x_eval, CONFIG)
    assert res.mode == "exact"  # a tanh network is smooth
    ref_sc = curved_subspace(net, x_fit, 4, mode="exact", generator=5)
    torch.testing.assert_close(res.curved.basis, ref_sc.basis)
    torch.testing.assert_close(res.curved.values, ref_sc.values)
    df = deepfool(net, x_uap)
    ref_sf = normal_subspace(df.r[df.converged], 4)
    torch.testing.assert_close(res.normal.basis, ref_sf.basis)
    rho = rho_rand(net, x_eval, generator=5).rho
    assert res.rho_rand == rho and res.norm == pytest.approx(0.2 * rho, rel=1e-15)
    ref_rates = subspace_fooling(net, x_eval, ref_sc, [1, 2, 4], res.norm, n_vectors=3, generator=5)
    torch.testing.assert_close(res.curved_fooling.rates, ref_rates.rates)
    assert res.uap_rate == fooling_rate(net, x_eval, res.uap)
    assert float(res.uap.norm()) <= res.norm * (1 + 1e-9)
    assert res.profile.mean.shape == (3,) and res.profile.random_mean is not None
    assert res.n_fit == 16 and res.n_uap == 40 and res.n_eval == 60
    summary = res.summary()
    assert summary["ms"] == [1, 2, 4] and len(summary["curved_best"]) == 3
    assert all(0.0 <= r <= 1.0 for r in summary["normal_mean"] + summary["random_best"])


def test_cache_resumes_stage_by_stage(data, tmp_path):
    net = smooth_net()
    first = subspace_study(net, *data, CONFIG, cache_dir=tmp_path)
    files = sorted(p.name.split("-")[0] for p in tmp_path.glob("*.pt"))
    # + UAP state
    assert files == ["curved", "fooling", "normals", "profile", "rho_rand", "uap", "uap"]
    (next(tmp_path.glob("profile-*.pt"))).unlink()
    second = subspace_study(net, *data, CONFIG, cache_dir=tmp_path)
    assert second.seconds["curved"] == 0.0 and second.seconds["uap"] == 0.0
    assert second.seconds["fooling"] == 0.0
    assert second.seconds["profile"] > 0.0
    torch.testing.assert_close(second.curved.basis, first.curved.basis)
    torch.testing.assert_close(second.profile.per_point, first.profile.per_point)
    for name in ("curved_fooling", "normal_fooling", "random_fooling"):
        a, b = getattr(second, name), getattr(first, name)
        torch.testing.assert_close(a.rates, b.rates)
        torch.testing.assert_close(a.ms, b.ms)
        assert (a.norm, a.n_points) == (b.norm, b.n_points)
    # another number of random vectors is another fooling stage, the rest is reused
    more = subspace_study(
        net, *data, StudyConfig(**{**CONFIG.to_dict(), "n_vectors": 4}), cache_dir=tmp_path
    )
    assert more.seconds["fooling"] > 0.0 and more.seconds["curved"] == 0.0
    assert more.curved_fooling.rates.shape[1] == 4
    assert second.uap_history == first.uap_history
    # Another model misses the cache instead of reading the first one's results.
    other = subspace_study(smooth_net(seed=9), *data, CONFIG, cache_dir=tmp_path)
    assert other.seconds["curved"] > 0.0
    assert not torch.allclose(other.curved.basis.abs(), first.curved.basis.abs())


def test_most_negative_control_and_mode_choice(data):
    net = smooth_net()
    # d = 6: the 3 largest and the 3 most negative eigenvalues split the spectrum.
    half = {**CONFIG.to_dict(), "ms": (1, 3)}
    la = subspace_study(net, *data, StudyConfig(**half))
    sa = subspace_study(net, *data, StudyConfig(**{**half, "which": "SA"}))
    assert float(sa.curved.values.max()) <= float(la.curved.values.min())
    relu = nn.Sequential(nn.Linear(6, 24), nn.ReLU(), nn.Linear(24, 3)).to(DT)
    assert CONFIG.resolved_mode(relu) == "finite_difference"
    assert CONFIG.resolved_mode(net) == "exact"


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"ms": (2, 1)}, "ms"),
        ({"ms": ()}, "ms"),
        ({"norm_fraction": 0.0}, "norm_fraction"),
        ({"mode": "magic"}, "mode"),
        ({"which": "LM"}, "which"),
        ({"uap_delta": 1.5}, "uap_delta"),
    ],
)
def test_bad_config(changes, match):
    with pytest.raises(ValueError, match=match):
        StudyConfig(**{**CONFIG.to_dict(), **changes})


def test_bad_inputs(data):
    net = smooth_net()
    x_fit, x_uap, x_eval = data
    with pytest.raises(ValueError, match="input dimension"):
        subspace_study(net, x_fit, x_uap, x_eval, StudyConfig(ms=(1, 7)))
    with pytest.raises(ValueError, match="x_eval"):
        subspace_study(net, x_fit, x_uap, x_eval[:0], CONFIG)
    with pytest.raises(TypeError, match="config"):
        subspace_study(net, x_fit, x_uap, x_eval, {"ms": (1,)})


def test_relative_steps_match_the_default_step(data):
    # h_scale = 0.1 is 0.1 ||r_i|| per point: the documented default of finite differences.
    g = torch.Generator().manual_seed(2)
    relu = nn.Sequential(nn.Linear(6, 24), nn.ReLU(), nn.Linear(24, 3)).to(DT)
    with torch.no_grad():
        for p in relu.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=DT))
    base = {**CONFIG.to_dict(), "ms": (1, 3)}
    default = subspace_study(relu, *data, StudyConfig(**base))
    scaled = subspace_study(relu, *data, StudyConfig(**{**base, "h_scale": 0.1}))
    assert default.mode == scaled.mode == "finite_difference"
    torch.testing.assert_close(scaled.curved.values, default.curved.values)
    torch.testing.assert_close(scaled.profile.per_point, default.profile.per_point)
    coarse = subspace_study(relu, *data, StudyConfig(**{**base, "h_scale": 0.5}))
    assert not torch.allclose(coarse.curved.values, default.curved.values)
    with pytest.raises(ValueError, match="not both"):
        StudyConfig(**{**base, "h": 0.1, "h_scale": 0.1})
