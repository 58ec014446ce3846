"""Smooth Surface Regularization (002 Def. 7) as a loss and as a training option.

References: the top eigenvalue of the dense ``torch.autograd.functional.hessian`` of each
image's cross-entropy (float64, ``rtol=1e-9``: the same quantity by another route, rounding
only); central finite differences of the penalty along a random parameter direction for its
gradient (float64, step 1e-6: the penalty is smooth in the weights while no ReLU changes
sign, truncation O(h^2) ~ 1e-12 and rounding ~1e-10 / h, so ``rtol=1e-5``); the config hash of
configs written before SSR existed; the CLI parser.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from reference import assert_close
from torch import nn

from geomrob._io import config_hash
from geomrob.cli import _train_config, build_parser, main
from geomrob.interpret import SSRLoss, input_hessian_ce, ssr_loss
from geomrob.models import TrainConfig, train

DT = torch.float64
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")


def _net(seed: int = 0, *, bn: bool = False) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers = [nn.Linear(6, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 4)]
        if bn:
            layers.insert(1, nn.BatchNorm1d(24))
        net = nn.Sequential(*layers).to(DT)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(2.0)
    return net


def _data(seed: int = 0, n: int = 5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g, dtype=DT), torch.randint(0, 4, (n,), generator=g)


def _dense_top_eigenvalues(model, x, y) -> torch.Tensor:
    out = []
    for i in range(len(x)):

        def loss(z, i=i):
            return F.cross_entropy(model(z[None]), y[i : i + 1])

        H = torch.autograd.functional.hessian(loss, x[i])
        out.append(torch.linalg.eigvalsh(H)[-1])
    return torch.stack(out).detach()


# ---------------------------------------------------------------------------------------------
# the loss


def test_penalty_and_loss_against_the_dense_hessian():
    model, (x, y) = _net(), _data()
    res = ssr_loss(model, x, y, beta=0.3, scale=7.0)
    assert isinstance(res, SSRLoss)
    expected = _dense_top_eigenvalues(model, x, y)
    assert float(expected.min()) > 1e-3
    assert_close(res.penalty, expected, rtol=1e-9)
    ce = F.cross_entropy(model(x), y)
    assert_close(res.cross_entropy, ce, rtol=1e-12)
    assert_close(res.loss, ce + 0.3 * 7.0 * expected.mean(), rtol=1e-12)
    assert_close(res.logits, model(x), rtol=1e-12)
    # the same eigenvalue as the c x c route of input_hessian_ce
    assert_close(input_hessian_ce(model, x, y).top_eigenvalue(), res.penalty, rtol=1e-9)
    # beta = 0 is the plain cross-entropy
    assert_close(ssr_loss(model, x, y, beta=0.0).loss, ce, rtol=1e-12)


def test_penalty_gradient_is_finite_nonzero_and_matches_finite_differences():
    model, (x, y) = _net(1), _data(1)
    res = ssr_loss(model, x, y, beta=1.0)
    params = [p for p in model.parameters()]
    grads = torch.autograd.grad(res.penalty.mean(), params)
    flat = torch.cat([g.flatten() for g in grads])
    assert bool(torch.isfinite(flat).all())
    assert float(flat.abs().max()) > 1e-6
    assert all(float(g.abs().max()) > 0 for g in grads)  # every layer gets a gradient
    # directional derivative along a random direction v vs central differences
    g = torch.Generator().manual_seed(2)
    v = [torch.randn(p.shape, generator=g, dtype=DT) for p in params]
    h = 1e-6

    def penalty_at(t: float) -> float:
        with torch.no_grad():
            for p, vi in zip(params, v, strict=True):
                p.add_(t * vi)
        try:
            return float(ssr_loss(model, x, y, beta=1.0).penalty.detach().mean())
        finally:
            with torch.no_grad():
                for p, vi in zip(params, v, strict=True):
                    p.sub_(t * vi)

    fd = (penalty_at(h) - penalty_at(-h)) / (2 * h)
    analytic = float(sum((gi * vi).sum() for gi, vi in zip(grads, v, strict=True)))
    assert abs(analytic) > 1e-4
    assert analytic == pytest.approx(fd, rel=1e-5)


def test_minimising_the_penalty_lowers_it():
    """A few plain gradient steps on beta * penalty reduce the top eigenvalue (sign check)."""
    model, (x, y) = _net(3), _data(3)
    before = float(ssr_loss(model, x, y, beta=1.0).penalty.detach().mean())
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(5):
        opt.zero_grad()
        ssr_loss(model, x, y, beta=1.0).penalty.mean().backward()
        opt.step()
    assert float(ssr_loss(model, x, y, beta=1.0).penalty.detach().mean()) < 0.9 * before


def test_batchnorm_in_training_mode_runs_and_keeps_the_mode():
    model, (x, y) = _net(4, bn=True), _data(4, n=8)
    model.train()
    res = ssr_loss(model, x, y, beta=0.5)
    res.loss.backward()
    assert model.training
    assert bool(torch.isfinite(res.penalty).all()) and bool((res.penalty >= 0).all())
    assert all(
        p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in model.parameters()
    )


def test_bad_arguments():
    model, (x, y) = _net(), _data()
    with pytest.raises(ValueError, match="`beta` must be >= 0.0"):
        ssr_loss(model, x, y, beta=-1.0)
    with pytest.raises(ValueError, match="`scale` must be > 0.0"):
        ssr_loss(model, x, y, beta=1.0, scale=0.0)
    with pytest.raises(ValueError, match="`y` must have shape"):
        ssr_loss(model, x, y[:2], beta=1.0)
    with pytest.raises(TypeError, match="`x` must be a floating-point tensor"):
        ssr_loss(model, x.long(), y, beta=1.0)
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module"):
        ssr_loss(lambda t: t, x, y, beta=1.0)


# ---------------------------------------------------------------------------------------------
# the training option

CFG = TrainConfig(arch="fcn2", dataset="digits", epochs=3, train_size=300, ssr_beta=1.0)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class Interrupt(Exception):
    pass


def test_ssr_training_is_reproducible_cached_and_resumable(tmp_path):
    a = train(CFG, run_dir=tmp_path / "a")
    b = train(CFG, run_dir=tmp_path / "b")
    assert not a.cached and _same_weights(a.model, b.model)
    assert all("ssr_penalty" in row for row in a.history)
    assert train(CFG, run_dir=tmp_path / "a").cached

    def stop_after_first(row):
        if row["epoch"] == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(CFG, run_dir=tmp_path / "cut", callback=stop_after_first)
    seen = []
    resumed = train(CFG, run_dir=tmp_path / "cut", callback=lambda row: seen.append(row["epoch"]))
    assert seen == [2, 3] and _same_weights(resumed.model, a.model)


def test_ssr_training_lowers_the_top_eigenvalue(tmp_path):
    from geomrob import data

    natural_cfg = TrainConfig(**{**CFG.to_dict(), "ssr_beta": None, "ssr_scale": None})
    natural = train(natural_cfg, run_dir=tmp_path)
    ssr = train(TrainConfig(**{**CFG.to_dict(), "ssr_scale": 5.0}), run_dir=tmp_path)
    assert natural.path != ssr.path
    assert "ssr_penalty" not in natural.history[-1]
    x = data.load("digits", split="test").x[:200]
    lam_nat = float(input_hessian_ce(natural.model, x).top_eigenvalue().mean())
    lam_ssr = float(input_hessian_ce(ssr.model, x).top_eigenvalue().mean())
    assert lam_ssr < 0.6 * lam_nat  # measured: 0.024 vs 0.070 (test accuracy 0.76 vs 0.72)
    assert ssr.test_accuracy > 0.6


# ---------------------------------------------------------------------------------------------
# config and its hash

OLD_FIELDS = (
    "arch dataset size activation beta optimizer lr momentum weight_decay epochs batch_size "
    "seed train_size"
).split()


@pytest.mark.parametrize(
    ("config", "key"),
    [
        (TrainConfig(), "lenet-digits-f6f2002050401984"),
        (TrainConfig.for_dataset("mnist", arch="cnn2"), "cnn2-mnist-4144b63673591757"),
        (TrainConfig(arch="fcn2", dataset="digits", epochs=20), "fcn2-digits-6c29abaca0c244e6"),
    ],
)
def test_config_hash_of_natural_training_is_unchanged(config, key):
    """Keys measured before the SSR fields existed: the cached models stay valid."""
    assert config.key() == key
    assert set(config.to_dict()) == set(OLD_FIELDS)
    old = {k: getattr(config, k) for k in OLD_FIELDS}
    assert config.key().endswith(config_hash(old))


def test_ssr_config_fields():
    a = TrainConfig(ssr_beta=1)
    assert a.ssr_beta == 1.0 and isinstance(a.ssr_beta, float) and a.ssr_scale == 1.0
    assert a.key() == TrainConfig(ssr_beta=1.0, ssr_scale=1.0).key()  # 1 and 1.0 alike
    assert a.key() != TrainConfig().key() != TrainConfig(ssr_beta=1.0, ssr_scale=2.0).key()
    assert TrainConfig(**a.to_dict()) == a  # round trip
    assert math.isclose(TrainConfig(ssr_beta=0.3, ssr_scale=15).ssr_scale, 15.0)
    with pytest.raises(ValueError, match="`ssr_scale` .* applies only with `ssr_beta`"):
        TrainConfig(ssr_scale=2.0)
    with pytest.raises(ValueError, match="`ssr_beta` must be > 0.0"):
        TrainConfig(ssr_beta=0.0)
    with pytest.raises(ValueError, match="`ssr_scale` must be > 0.0"):
        TrainConfig(ssr_beta=1.0, ssr_scale=-1.0)
    with pytest.raises(TypeError, match="`ssr_beta` must be a real number"):
        TrainConfig(ssr_beta="0.3")


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_flags_parse():
    parser = build_parser()
    args = parser.parse_args(
        ["train", "--dataset", "digits", "--ssr-beta", "0.3", "--ssr-scale", "15"]
    )
    cfg = _train_config(args)
    assert (cfg.ssr_beta, cfg.ssr_scale) == (0.3, 15.0)
    plain = _train_config(parser.parse_args(["train", "--dataset", "digits"]))
    assert plain.ssr_beta is None and plain.ssr_scale is None
    assert plain == TrainConfig.for_dataset("digits", seed=0)
    only_beta = _train_config(parser.parse_args(["train", "--ssr-beta", "0.5"]))
    assert only_beta.ssr_scale == 1.0
    # the other subcommands that train a model take the flags too
    cfg = _train_config(parser.parse_args(["curvature", "--ssr-beta", "0.3"]))
    assert cfg.ssr_beta == 0.3


def test_cli_scale_without_beta_is_a_one_line_error(tmp_path, capsys):
    code = main(
        ["train", "--dataset", "digits", "--ssr-scale", "2", "--quiet", "--out", str(tmp_path)]
    )
    assert code == 2
    assert "applies only with `ssr_beta`" in capsys.readouterr().err


def test_cli_trains_with_ssr(tmp_path, capsys):
    import json

    args = ["train", "--dataset", "digits", "--arch", "fcn2", "--epochs", "1"]
    args += ["--train-size", "100", "--ssr-beta", "0.3", "--ssr-scale", "10"]
    assert main([*args, "--quiet", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "train.json").read_text())
    assert record["train"]["config"]["ssr_beta"] == 0.3
    assert record["train"]["config"]["ssr_scale"] == 10.0
    assert "ssr_penalty" in record["train"]["history"][0]
